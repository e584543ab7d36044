"""Agent jobs in pods: the RARV cycle, usage and budget, rate limits, interrupts, questions —
on the real store, real git and a fake Claude Code CLI speaking the stream-json protocol."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from uuid import UUID

import anyio
import pytest

from ipa.domain import AnswerQuestion, Approve, QueueJob, RetryJob, SetBudget, Status
from ipa.pods import (
    AgentCatalog,
    AgentConfigError,
    AgentSettings,
    AgentType,
    ClaudeRunner,
    PodEnvironment,
)
from ipa.supervisor import Supervisor

from ..fakes.claude import FakeClaude
from ..ui.test_cli import ipa, url_of
from .helpers import job, wait_for

pytestmark = pytest.mark.anyio

AGENT_JOB = {"runner": "claude"}


@pytest.fixture
def fake(tmp_path: Path) -> FakeClaude:
    return FakeClaude(tmp_path / "fake")


@pytest.fixture
def settings(fake: FakeClaude) -> AgentSettings:
    return AgentSettings(runner=lambda: ClaudeRunner(cli_path=str(fake.cli)),
                         rate_limit_base=0.2, rate_limit_cap=1.0, verify_timeout=5.0)


@pytest.fixture
async def start(pod_env: PodEnvironment, settings: AgentSettings) -> AsyncIterator[Callable]:
    """Start a supervisor whose pods run agents with ``settings`` (changed by keywords)."""
    async with anyio.create_task_group() as tg:
        async def started(**changes) -> Supervisor:
            supervisor = Supervisor(replace(pod_env, agents=replace(settings, **changes)))
            await tg.start(supervisor.run)
            return supervisor

        yield started
        tg.cancel_scope.cancel()


def git_repo(path: Path, files: dict[str, str]) -> Path:
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    for name, content in files.items():
        (path / name).write_text(content)
    subprocess.run(["git", "-C", str(path), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "--allow-empty", "-m", "init"], check=True)
    return path


async def types_of(store, stream_id) -> list[str]:
    return [event.type for event in await store.read(stream_id)]


# -- the task workflow end to end ---------------------------------------------------------------


async def test_a_task_runs_end_to_end_through_the_rarv_cycle(
    start, create_task, fake: FakeClaude, tmp_path: Path, store, database
) -> None:
    check = "grep -q fixed feature.py"
    repo = git_repo(tmp_path / "repo", {".ipa.toml": f'[verify]\ncommands = ["{check}"]\n'})
    fake.script({
        "spec_writer": [{"text": "# Spec\nfeature.py says fixed."}],
        "planner": [{"text": "# Plan\n1. Write feature.py."}],
        "developer": [
            {"write": {"feature.py": "broken\n"}, "text": "Wrote feature.py."},
            {"write": {"feature.py": "fixed\n"}, "cost": 0.05,
             "text": "Fixed feature.py.\nLEARNED: the check greps for 'fixed'"},
        ],
        "reviewer": [{"text": "Verdict: approve."}],
    })
    supervisor = await start(auto_queue=True)
    task_id = await create_task("Add the feature", repo=str(repo))
    pod = await supervisor.start(task_id)

    for phase in ("spec_clarification", "planning"):
        await wait_for(pod, lambda s, p=phase: s.phase == p and s.status is Status.waiting)
        await pod.execute(Approve(comment="ok"), actor="user:ann")
    state = await wait_for(pod, lambda s: s.phase == "review" and s.status is Status.waiting,
                           timeout=60)
    await pod.execute(Approve(), actor="user:ann")
    state = await wait_for(pod, lambda s: s.status is Status.completed)

    assert [j for j in state.jobs] == ["spec_writer-1", "planner-1", "developer-1", "reviewer-1"]
    developer = state.jobs["developer-1"]
    assert developer.status.value == "succeeded" and developer.attempts == 2
    assert {name: a.content.splitlines()[0] for name, a in state.artifacts.items()} == {
        "spec": "# Spec", "plan": "# Plan", "summary": "Fixed feature.py.",
        "review": "Verdict: approve."}
    assert [learning.text.split("\n")[0] for learning in state.learnings] == [
        f"Attempt 1: verification failed. `{check}` failed (exit status 1)",
        "the check greps for 'fixed'"]
    assert state.usage.total.runs == 5
    assert state.usage.by_agent["developer"].cost_usd == pytest.approx(0.051)

    # Reason: the second attempt's context holds the first one's learning, the spec, the plan.
    prompts = [run["prompt"] for run in fake.runs() if run["agent"] == "developer"]
    assert "verification failed" not in prompts[0]
    assert f"`{check}` failed (exit status 1)" in prompts[1]
    assert "# Spec" in prompts[1] and "# Plan" in prompts[1]

    events = await types_of(store, task_id)
    developer_steps = events[events.index("PhaseEntered", events.index("PhaseApproved",
                                          events.index("PhaseApproved") + 1)):]
    assert developer_steps[8] == "MemoryRecorded"  # the run's episode (tests/pods/test_memory)
    developer_steps = [t for t in developer_steps if t != "MemoryRecorded"]
    assert developer_steps[:12] == [
        "PhaseEntered", "JobQueued", "JobStarted", "WorkspaceCreated", "ContextPrepared",
        "UsageRecorded", "WorkspaceCommitted", "ReflectionRecorded", "ArtifactRecorded",
        "VerificationFailed", "WorkspaceRemoved", "JobFailed"]
    assert "VerificationPassed" in developer_steps and events[-1] == "TaskCompleted"

    # The work accumulates on the task's one branch: the failed attempt's commit never lands,
    # the retry starts from the branch and its commit is the branch's head.
    last = [w for w in state.workspaces.values() if w.commits][-1]
    assert state.branch is not None and state.branch.name == f"ipa/{str(task_id)[:8]}"
    assert state.branch.head_commit == last.commits[-1]
    branch_head = subprocess.run(["git", "-C", str(repo), "rev-parse", state.branch.name],
                                 capture_output=True, text=True, check=True).stdout.strip()
    assert branch_head == last.commits[-1]
    shown = subprocess.run(["git", "-C", str(repo), "show", f"{branch_head}:feature.py"],
                           capture_output=True, text=True, check=True)
    assert shown.stdout == "fixed\n"
    assert last.base_commit == state.branch.base_commit

    # The developer's first run, offline from its own stream: prompt, messages, end.
    run_types = await types_of(store, developer.run_id)
    assert run_types[:2] == ["RunPrompted", "RunStarted"] and run_types[-1] == "RunFinished"

    # Every step is visible in `ipa events`; the run's transcript replays from events alone.
    url = url_of(database)
    shown = await ipa("events", str(task_id), "--database-url", url)
    assert shown.status == 0
    for step in ("ContextPrepared", "UsageRecorded", "ReflectionRecorded", "ArtifactRecorded",
                 "VerificationFailed", "VerificationPassed", "TaskCompleted"):
        assert step in shown.out
    shown = await ipa("audit", "transcript", developer.run_id, "--database-url", url)
    assert shown.status == 0, shown.err
    assert "prompt to developer" in shown.out
    assert f"> Attempt 1: verification failed. `{check}` failed" in shown.out
    assert "result | success: Fixed feature.py." in shown.out
    assert f"verify/command | $ {check}" in shown.out
    assert shown.lines[-1].endswith("succeeded")


# -- usage, budget -------------------------------------------------------------------------------


async def test_reaching_the_budget_pauses_the_task_until_it_is_raised(
    start, create_task, fake: FakeClaude, store
) -> None:
    fake.script({"spec_writer": [{"cost": 0.4, "text": "spec"}]})
    supervisor = await start()
    pod = await supervisor.start(await create_task())
    await pod.execute(SetBudget(limit_usd=0.5))
    await pod.execute(QueueJob(job_id="a", agent="spec_writer", spec=AGENT_JOB))
    await pod.execute(QueueJob(job_id="b", agent="spec_writer", spec=AGENT_JOB,
                               depends_on=["a"]))
    await pod.execute(QueueJob(job_id="c", agent="spec_writer", spec=AGENT_JOB,
                               depends_on=["b"]))

    state = await wait_for(pod, lambda s: s.status is Status.paused)
    assert state.budget_paused and state.usage.total.cost_usd == pytest.approx(0.8)
    events = await types_of(store, pod.task_id)
    assert events[events.index("BudgetReached") + 1] == "TaskPaused"
    assert job(state, "c").status.value == "pending"  # nothing more is spent

    await pod.execute(SetBudget(limit_usd=5.0), actor="user:ann")
    state = await wait_for(pod, lambda s: job(s, "c").status.value == "succeeded")
    assert state.status is Status.running and state.usage.total.runs == 3


async def test_reaching_the_budget_interrupts_only_the_runs_still_spending(
    start, create_task, fake: FakeClaude, store
) -> None:
    fake.script({"planner": [{"messages": ["thinking"], "sleep": 60}, {"text": "plan"}],
                 "spec_writer": [{"cost": 0.6, "text": "spec"}]})
    supervisor = await start()
    pod = await supervisor.start(await create_task())
    await pod.execute(SetBudget(limit_usd=0.5))
    await pod.execute(QueueJob(job_id="slow", agent="planner", spec=AGENT_JOB))
    await wait_for(pod, lambda s: job(s, "slow").status.value == "running")
    await pod.execute(QueueJob(job_id="costly", agent="spec_writer", spec=AGENT_JOB))

    # The run whose usage reached the budget has stopped spending: it finishes its steps.
    state = await wait_for(pod, lambda s: job(s, "costly").status.value == "succeeded"
                           and job(s, "slow").status.value != "running")
    assert state.budget_paused and state.usage.total.runs == 1
    failed = [e for e in await store.read(pod.task_id) if e.type == "JobFailed"]
    assert [(e.data["job_id"], e.data["interrupted"], e.data["reason"]) for e in failed] == [
        ("slow", True, "interrupted: the task reached its budget")]


# -- rate limits ---------------------------------------------------------------------------------


async def test_a_rate_limited_job_waits_with_backoff_and_keeps_its_attempt(
    start, create_task, fake: FakeClaude, store
) -> None:
    fake.script({"spec_writer": [{"error": "rate_limit"}, {"error": "rate_limit"},
                                 {"text": "spec"}]})
    supervisor = await start()
    pod = await supervisor.start(await create_task())
    await pod.execute(QueueJob(job_id="a", agent="spec_writer", spec=AGENT_JOB,
                               max_attempts=1))

    state = await wait_for(pod, lambda s: job(s, "a").status.value == "succeeded")

    limited = [e for e in await store.read(pod.task_id) if e.type == "JobRateLimited"]
    assert [(e.data["consecutive"], e.data["wait_seconds"]) for e in limited] == [
        (1, 0.2), (2, 0.4)]
    assert job(state, "a").attempts == 1  # one attempt allowed, and it was enough


async def test_a_rate_limit_wait_survives_a_restart(
    start, create_task, fake: FakeClaude, store
) -> None:
    fake.script({"spec_writer": [{"error": "rate_limit"}]})
    supervisor = await start(rate_limit_base=3600.0, rate_limit_cap=3600.0)
    pod = await supervisor.start(await create_task())
    await pod.execute(QueueJob(job_id="a", agent="spec_writer", spec=AGENT_JOB))
    state = await wait_for(pod, lambda s: job(s, "a").rate_limits == 1)
    waiting_until = job(state, "a").retry_at

    pod = await supervisor.restart(pod.task_id)

    assert job(pod.get_state(), "a").status.value == "pending"
    assert job(pod.get_state(), "a").retry_at == waiting_until
    assert len(fake.runs()) == 1


# -- interrupts and questions --------------------------------------------------------------------


async def test_interrupting_an_agent_holds_its_job_until_a_person_retries_it(
    start, create_task, fake: FakeClaude, store
) -> None:
    fake.script({"spec_writer": [{"messages": ["thinking"], "sleep": 60}, {"text": "spec"}]})
    supervisor = await start()
    pod = await supervisor.start(await create_task())
    await pod.execute(QueueJob(job_id="a", agent="spec_writer", spec=AGENT_JOB))
    state = await wait_for(pod, lambda s: job(s, "a").status.value == "running")
    first_run = job(state, "a").run_id
    async with store.subscribe(UUID(first_run)) as run_events:
        async for recorded in run_events:
            if recorded.type == "RunOutput":
                break

    assert supervisor.interrupt(pod.task_id, "a", actor="user:ann") == 1
    await wait_for(pod, lambda s: job(s, "a").status.value == "held")
    await pod.execute(RetryJob(job_id="a"), actor="user:ann")
    state = await wait_for(pod, lambda s: job(s, "a").status.value == "succeeded")

    held = [e for e in await store.read(pod.task_id) if e.type == "JobHeld"]
    assert [(e.data["run_id"], e.data["reason"]) for e in held] == [
        (first_run, "interrupted by user:ann")]
    assert "JobFailed" not in await types_of(store, pod.task_id)
    assert (await types_of(store, first_run))[-1] == "RunFinished"


async def test_an_agents_question_waits_for_a_person_and_the_answer_reaches_its_next_run(
    start, create_task, fake: FakeClaude, store
) -> None:
    fake.script({"spec_writer": [{"text": "I am stuck.\nQUESTION: Postgres or SQLite?"},
                                 {"text": "# Spec with Postgres"}]})
    supervisor = await start()
    pod = await supervisor.start(await create_task())
    await pod.execute(QueueJob(job_id="a", agent="spec_writer", spec=AGENT_JOB,
                               max_attempts=1))

    state = await wait_for(pod, lambda s: job(s, "a").awaiting is not None)
    [question] = state.questions.values()
    assert question.question == "Postgres or SQLite?" and job(state, "a").attempts == 0
    await pod.execute(AnswerQuestion(question_id=question.question_id, answer="Postgres"),
                      actor="user:ann")
    state = await wait_for(pod, lambda s: job(s, "a").status.value == "succeeded")

    second = fake.runs()[1]["prompt"]
    assert "Q: Postgres or SQLite?" in second and "A (user:ann): Postgres" in second
    assert state.artifacts["spec"].content == "# Spec with Postgres"


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "verify", "reason"),
    [
        ({"malformed": True}, [], "malformed output from the Claude Code CLI"),
        ({"crash": True}, [], "exited (status 3) before giving a result"),
        ({"no_result": True}, [], "exited without a result"),
        ({"error": "auth"}, [], "cannot authenticate"),
        ({"text": "ok"}, ["no-such-checker --all"], "`no-such-checker --all` (exit status 127)"),
        ({"text": "ok"}, ["sleep 30"], "`sleep 30` (timed out)"),
    ],
)
async def test_a_broken_run_fails_its_job_clearly_and_the_pod_stays_healthy(
    start, create_task, fake: FakeClaude, store, step, verify, reason
) -> None:
    fake.script({"spec_writer": [step]})
    supervisor = await start(verify_timeout=1.0)
    pod = await supervisor.start(await create_task())
    await pod.execute(QueueJob(job_id="a", agent="spec_writer", max_attempts=1,
                               spec={**AGENT_JOB, "verify": verify}))

    state = await wait_for(pod, lambda s: job(s, "a").status.value == "dead")

    assert reason in job(state, "a").last_error
    assert pod.status.value == "ready"
    finished = (await store.read(job(state, "a").run_id))[-1]
    assert finished.type == "RunFinished" and not finished.data["succeeded"]


async def test_a_prompt_template_with_an_unknown_field_fails_the_job_clearly(
    start, create_task, tmp_path: Path, store
) -> None:
    template = tmp_path / "odd.md"
    template.write_text("Agent type: odd. Do $task_title for $customer.\n")
    catalog = AgentCatalog({"odd": AgentType("odd", prompt=str(template))})
    supervisor = await start(catalog=catalog)
    pod = await supervisor.start(await create_task())
    await pod.execute(QueueJob(job_id="a", agent="odd", spec=AGENT_JOB, max_attempts=1))

    state = await wait_for(pod, lambda s: job(s, "a").status.value == "dead")

    assert "prompt template odd.md: unknown field $customer" in job(state, "a").last_error
    assert pod.status.value == "ready"


async def test_an_unknown_agent_type_fails_the_job_naming_the_known_ones(
    start, create_task
) -> None:
    supervisor = await start()
    pod = await supervisor.start(await create_task())
    await pod.execute(QueueJob(job_id="a", agent="wizard", spec=AGENT_JOB, max_attempts=1))
    state = await wait_for(pod, lambda s: job(s, "a").status.value == "dead")
    assert "no agent type 'wizard'" in job(state, "a").last_error
    assert "developer" in job(state, "a").last_error


async def test_an_agent_gets_the_variables_its_type_names_and_none_of_ipas_secrets(
    start, create_task, fake: FakeClaude, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agents_file = tmp_path / "agents.toml"
    agents_file.write_text('[spec_writer]\nenv = ["AWS_PROFILE"]\n')
    monkeypatch.setenv("AWS_PROFILE", "bedrock")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-not-named")
    monkeypatch.setenv("IPA_GITHUB_TOKEN", "ghp_secret-of-ipa")
    supervisor = await start(catalog=AgentCatalog.load(agents_file))
    pod = await supervisor.start(await create_task())
    await pod.execute(QueueJob(job_id="a", agent="spec_writer", spec=AGENT_JOB))

    await wait_for(pod, lambda s: job(s, "a").status.value == "succeeded")

    [logged] = fake.runs()
    assert logged["env"]["AWS_PROFILE"] == "bedrock"
    assert "AWS_SECRET_ACCESS_KEY" not in logged["env"]
    assert "IPA_GITHUB_TOKEN" not in logged["env"]


@pytest.mark.parametrize(("names", "message"), [
    ('["IPA_GITHUB_TOKEN"]', "is ipa's own"),
    ('["not a name"]', "is not a variable name"),
    ('"AWS_PROFILE"', "must be a list of strings"),
])
def test_the_agents_file_refuses_ipas_own_and_malformed_variable_names(
    tmp_path: Path, names: str, message: str
) -> None:
    agents_file = tmp_path / "agents.toml"
    agents_file.write_text(f"[developer]\nenv = {names}\n")

    with pytest.raises(AgentConfigError, match=message):
        AgentCatalog.load(agents_file)


async def test_a_new_task_starts_queues_its_phase_agent_and_runs_it_in_one_decision(
    start, create_task, fake: FakeClaude, store
) -> None:
    fake.script({"*": [{"text": "# Spec\nDone."}]})
    supervisor = await start(auto_queue=True)
    task_id = await create_task("One step")
    pod = await supervisor.start(task_id)

    await wait_for(pod, lambda s: s.status is Status.waiting)

    first = (await store.read(task_id))[1:4]
    assert [e.type for e in first] == ["TaskStarted", "JobQueued", "JobStarted"]
    assert first[1].data["job_id"] == first[2].data["job_id"] == "spec_writer-1"
    assert len({(e.timestamp, e.correlation_id) for e in first}) == 1  # one append
