"""Off the happy path in pods: the perpetual phase stays healthy, a cancelled job's agent stops
at once, an interrupt holds its job, a skipped dead job lets its phase complete, a crashed pod
is restarted — on the real store, real processes and the fake Claude Code CLI."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from uuid import UUID

import anyio
import pytest

from ipa.domain import Approve, CancelJob, QueueJob, RetryJob, SkipJob, Status
from ipa.pods import AgentSettings, ClaudeRunner, PodEnvironment, PodStatus, RestartPolicy
from ipa.supervisor import PodRunning, Supervisor

from ..fakes.claude import FakeClaude, small_project
from .helpers import job, python, wait_for

pytestmark = pytest.mark.anyio

SLEEPER = python("print('go', flush=True); import time; time.sleep(60)")


@pytest.fixture
def fake(tmp_path: Path) -> FakeClaude:
    return FakeClaude(tmp_path / "fake")


@pytest.fixture
async def start(pod_env: PodEnvironment, fake: FakeClaude) -> AsyncIterator[Callable]:
    """Start a supervisor whose pods run agents through the fake CLI (settings by keyword)."""
    settings = AgentSettings(runner=lambda: ClaudeRunner(cli_path=str(fake.cli)),
                             verify_timeout=5.0)
    async with anyio.create_task_group() as tg:
        async def started(env: PodEnvironment = pod_env, **changes) -> Supervisor:
            supervisor = Supervisor(replace(env, agents=replace(settings, **changes)))
            await tg.start(supervisor.run)
            return supervisor

        yield started
        tg.cancel_scope.cancel()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def gone_within(pid: int, seconds: float) -> bool:
    """True once ``pid`` no longer exists, polled until ``seconds`` have passed."""
    with anyio.move_on_after(seconds):
        while alive(pid):
            await anyio.sleep(0.01)
        return True
    return False


async def run_pid(store, run_id: str) -> int:
    """The pid of the run's agent, once its RunStarted is recorded."""
    with anyio.fail_after(20):
        async with store.subscribe(UUID(run_id)) as events:
            async for recorded in events:
                if recorded.type == "RunStarted":
                    return recorded.data["pid"]
    raise AssertionError("unreachable")


# -- B1: the perpetual phase ---------------------------------------------------------------------


async def approve_every_gate(pod) -> None:
    """Approve a project's gates as it reaches them, up to perpetual."""
    for gate in ("discovery", "architecture", "deployment"):
        await wait_for(pod, lambda s, g=gate: s.phase == g and s.status is Status.waiting,
                       timeout=60)
        await pod.execute(Approve(), actor="user:ann")


async def test_a_project_in_perpetual_stays_healthy_through_three_maintainer_runs(
    start, create_task, fake: FakeClaude, store
) -> None:
    fake.script(small_project())
    supervisor = await start(auto_queue=True, perpetual_interval=0.0)
    pod = await supervisor.start(await create_task("Shop", workflow="project"))

    await approve_every_gate(pod)
    state = await wait_for(pod, lambda s: sum(
        1 for j in s.jobs.values() if j.agent == "maintainer" and j.status.value == "succeeded"
    ) >= 3, timeout=60)

    assert (state.phase, state.status) == ("perpetual", Status.running)
    assert pod.status is PodStatus.ready and not pod.crashes
    types = [e.type for e in await store.read(pod.task_id)]
    assert "TaskFailed" not in types and "TaskCompleted" not in types
    assert [j for j in state.jobs if j.startswith("maintainer")][:3] == [
        "maintainer-1", "maintainer-2", "maintainer-3"]


async def test_perpetual_waits_its_interval_before_the_next_maintainer_run(
    start, create_task, fake: FakeClaude
) -> None:
    fake.script(small_project())
    supervisor = await start(auto_queue=True, perpetual_interval=3600.0)
    pod = await supervisor.start(await create_task("Shop", workflow="project"))
    await approve_every_gate(pod)
    await wait_for(pod, lambda s: "maintainer-1" in s.jobs
                   and job(s, "maintainer-1").status.value == "succeeded", timeout=60)

    # The scheduler settles with one round done and the next due in an hour.
    await pod.execute(QueueJob(job_id="by-hand", agent="maintainer", spec=python("pass")))
    state = await wait_for(pod, lambda s: job(s, "by-hand").status.value == "succeeded")
    assert "maintainer-2" not in state.jobs and state.status is Status.running


# -- B3: cancelling a running job ----------------------------------------------------------------


def git_repo(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "--allow-empty", "-m", "init"], check=True)
    return path


async def test_cancelling_a_running_job_stops_its_agent_at_once_and_records_nothing_after(
    start, create_task, fake: FakeClaude, store, tmp_path: Path
) -> None:
    fake.script({"planner": [{"messages": ["thinking"], "write": {"plan.md": "late"},
                              "sleep": 60, "text": "# Plan"}]})
    supervisor = await start()
    pod = await supervisor.start(await create_task(repo=str(git_repo(tmp_path / "repo"))))
    await pod.execute(QueueJob(job_id="plan", agent="planner", spec={"runner": "claude"}))
    state = await wait_for(pod, lambda s: job(s, "plan").status.value == "running")
    pid = await run_pid(store, job(state, "plan").run_id)
    assert alive(pid)

    await supervisor.execute(pod.task_id, CancelJob(job_id="plan", reason="wrong plan"),
                             actor="user:ann")

    assert await gone_within(pid, 1.0)
    await wait_for(pod, lambda s: bool(s.workspaces) and all(
        w.removed for w in s.workspaces.values()))  # the run's last step
    events = [e.type for e in await store.read(pod.task_id)]
    after = events[events.index("JobCancelled"):]
    for recorded in ("ArtifactRecorded", "WorkspaceCommitted", "JobSucceeded", "JobFailed",
                     "ReflectionRecorded", "UsageRecorded"):
        assert recorded not in after
    assert "plan" not in pod.get_state().artifacts


# -- interrupt holds the job; skip -------------------------------------------------------------


async def test_three_interrupts_hold_the_job_and_never_dead_letter_it(
    supervisor, create_task, store
) -> None:
    pod = await supervisor.start(await create_task())
    await pod.execute(QueueJob(job_id="a", agent="developer", spec=SLEEPER, max_attempts=2))
    for _ in range(3):
        state = await wait_for(pod, lambda s: job(s, "a").status.value == "running")
        pid = await run_pid(store, job(state, "a").run_id)
        assert supervisor.interrupt(pod.task_id, "a", actor="user:ann") == 1
        state = await wait_for(pod, lambda s: job(s, "a").status.value == "held")
        assert await gone_within(pid, 1.0)
        assert (job(state, "a").attempts, job(state, "a").last_error) == (
            0, "interrupted by user:ann")
        await pod.execute(RetryJob(job_id="a"), actor="user:ann")

    types = [e.type for e in await store.read(pod.task_id)]
    assert types.count("JobHeld") == 3
    assert "JobDeadLettered" not in types and "JobFailed" not in types


async def test_a_dead_job_skipped_lets_its_phase_complete(supervisor, create_task) -> None:
    pod = await supervisor.start(await create_task())
    await pod.execute(QueueJob(job_id="a", agent="spec_writer", max_attempts=1,
                               spec=python("raise SystemExit(3)")))
    await wait_for(pod, lambda s: job(s, "a").status.value == "dead")

    await pod.execute(SkipJob(job_id="a", reason="not needed"), actor="user:ann")

    state = await wait_for(pod, lambda s: s.status is Status.waiting)
    assert (state.phase, job(state, "a").status.value) == ("spec_clarification", "skipped")


# -- B2: restarting a crashed pod ----------------------------------------------------------------


class Boom(Exception):
    pass


async def test_a_crashed_pod_is_restarted_and_its_task_goes_back_to_work(
    start, pod_env: PodEnvironment, create_task
) -> None:
    crash = {"on": True}

    def runner_for(spec: dict):
        if crash["on"]:
            raise Boom("the runner blew up")
        return pod_env.runner_for(spec)

    env = replace(pod_env, runner_for=runner_for,
                  policy=RestartPolicy(max_crashes=2, backoff_initial=0.01))
    supervisor = await start(env)
    task_id = await create_task()
    pod = await supervisor.start(task_id)
    await pod.execute(QueueJob(job_id="x", agent="developer", spec=python("pass")))
    await wait_for(pod, lambda s: s.status is Status.failed)
    assert supervisor.attention(task_id).kind == "crashed"

    crash["on"] = False
    state = await supervisor.restart_task(task_id, actor="user:ann")

    assert state.status is Status.running
    assert supervisor.attention(task_id) is None
    with pytest.raises(PodRunning):
        await supervisor.restart_task(task_id)
    state = await wait_for(supervisor.get(task_id), lambda s: s.status is Status.waiting)
    assert job(state, "x").status.value == "succeeded"
