"""A project as a swarm (issue #14), on the real store, real git and the fake Claude Code CLI:
the analyst's backlog, its items run as child tasks side by side within ``max_children``,
each reviewed by an agent and merged into the project's branch, and a failed child retried by
a person."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from uuid import UUID

import anyio
import pytest

from ipa.domain import (
    Approve,
    BacklogItemStatus,
    Cancel,
    RetryItem,
    SetApprovalPolicy,
    SetMaxChildren,
    Status,
    TaskState,
    approval_policy,
)
from ipa.pods import AgentSettings, ClaudeRunner, PodEnvironment, PodStatus
from ipa.supervisor import PodNotRunning, Supervisor

from ..fakes.claude import FakeClaude, backlog_answer
from .helpers import git, wait_for

pytestmark = pytest.mark.anyio

ITEMS = (
    {"id": "api", "kind": "backend_developer", "phase": "development", "priority": 9},
    {"id": "ui", "kind": "frontend_developer", "phase": "development", "priority": 8},
    {"id": "db", "kind": "database_engineer", "phase": "development", "priority": 7},
    {"id": "e2e", "kind": "qa_engineer", "phase": "qa", "depends_on": ["api", "ui"]},
)


def work(name: str) -> list[dict]:
    return [{"text": f"built {name}", "write": {f"{name}.txt": f"{name}\n"}}]


SCRIPT = {
    "product_analyst": [backlog_answer(*ITEMS)],
    "backend_developer": work("api"),
    "frontend_developer": work("ui"),
    "database_engineer": work("db"),
    "qa_engineer": work("e2e"),
    "reviewer": [{"text": "Looks right.\nVERDICT: approve"}],
    "*": [{"text": "done"}],
}


@pytest.fixture
async def supervisor(pod_env: PodEnvironment, tmp_path: Path) -> AsyncIterator[Supervisor]:
    fake = FakeClaude(tmp_path / "fake").script(SCRIPT)
    agents = AgentSettings(runner=lambda: ClaudeRunner(cli_path=str(fake.cli)),
                           verify_timeout=5.0, auto_queue=True, perpetual_interval=3600.0)
    supervisor = Supervisor(replace(pod_env, agents=agents))
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        yield supervisor
        tg.cancel_scope.cancel()


async def pod_of(supervisor: Supervisor, task_id: UUID):
    """The task's pod, once the supervisor runs it and it has loaded its state."""
    with anyio.fail_after(10):
        while True:
            try:
                pod = supervisor.get(task_id)
            except PodNotRunning:
                pod = None
            if pod is not None and pod.status is PodStatus.ready:
                return pod
            await anyio.sleep(0.01)


async def through_gates(pod, until: Callable[[TaskState], bool]) -> TaskState:
    """Approve the project's own gates (a person's, by default) until ``until`` holds."""
    with anyio.move_on_after(90):
        async for state in pod.state.changes():
            if until(state):
                return state
            if state.status is Status.waiting and approval_policy(state, state.phase) == "person":
                await pod.execute(Approve(comment="ok"), actor="user:ann")
    state = pod.state.current
    items = state.backlog and {i.id: i.status.value for i in state.backlog.items}
    jobs = {j.job_id: j.status.value for j in state.jobs.values()}
    raise AssertionError(f"stuck in {state.phase} ({state.status.value}): items {items}, "
                         f"jobs {jobs}, pod {pod.status} {pod.last_error or ''}")


async def test_a_prd_becomes_a_backlog_whose_items_run_as_reviewed_children_merged_into_the_project(
    supervisor: Supervisor, create_task, store, repo: Path
) -> None:
    project_id = await create_task("Shop", repo=str(repo), workflow="project")
    pod = await supervisor.start(project_id)

    state = await through_gates(pod, lambda s: s.phase == "perpetual")

    assert state.backlog is not None and state.backlog.approved
    assert {i.id: i.status for i in state.backlog.items} == dict.fromkeys(
        ["api", "ui", "db", "e2e"], BacklogItemStatus.finished)
    events = await store.read(project_id)
    types = [e.type for e in events]
    # The three development items ran side by side: spawned before any of them finished.
    first_finish = types.index("ChildFinished")
    assert types[:first_finish].count("ChildSpawned") == 3
    assert types.count("ChildMerged") == 4
    # e2e waited for api and ui.
    spawned = {e.data["item_id"]: e.version for e in events if e.type == "ChildSpawned"}
    finished = {e.data["item_id"]: e.version for e in events if e.type == "ChildFinished"}
    assert spawned["e2e"] > max(finished["api"], finished["ui"])
    # Every child is an item task of its project, reviewed and approved by its reviewer agent.
    for item in state.backlog.items:
        child = await store.load(item.child_id)
        assert (child.parent_id, child.item_id, child.kind, child.workflow) == (
            project_id, item.id, item.kind, "item")
        assert child.status is Status.completed
        [approval] = child.approvals
        assert approval.actor.startswith("agent:reviewer") and "approved" in approval.comment
    # The project's branch holds every child's work, one commit each; main is untouched.
    branch = state.branch
    assert branch is not None
    tree = git(repo, "ls-tree", "--name-only", branch.name).split()
    assert {"api.txt", "ui.txt", "db.txt", "e2e.txt", "README"} <= set(tree)
    assert git(repo, "rev-parse", branch.name).strip() == branch.head_commit
    assert git(repo, "ls-tree", "--name-only", "main").split() == ["README"]


async def test_a_failed_child_stops_its_dependants_until_a_person_retries_it(
    pod_env: PodEnvironment, tmp_path: Path, create_task, store, repo: Path
) -> None:
    fake = FakeClaude(tmp_path / "fake").script({
        **SCRIPT,
        # The first api child's review asks for changes three times: left to a person, who
        # cancels it; the retried item's child is approved.
        "reviewer": [{"text": "No.\nVERDICT: changes needed"}] * 3
        + [{"text": "VERDICT: approve"}],
    })
    agents = AgentSettings(runner=lambda: ClaudeRunner(cli_path=str(fake.cli)),
                           verify_timeout=5.0, auto_queue=True, perpetual_interval=3600.0)
    supervisor = Supervisor(replace(pod_env, agents=agents))
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        project_id = await create_task("Shop", repo=str(repo), workflow="project")
        pod = await supervisor.start(project_id)
        await pod.execute(SetMaxChildren(1), actor="user:ann")
        state = await through_gates(pod, lambda s: s.backlog is not None and any(
            i.child_id is not None for i in s.backlog.items))
        first = next(i for i in state.backlog.items if i.child_id is not None)
        assert first.id == "api"  # the highest priority first, one at a time
        child_pod = await pod_of(supervisor, first.child_id)
        await wait_for(child_pod, lambda s: s.status is Status.waiting
                       and len([f for f in s.feedback if f.actor.startswith("agent:")]) == 3,
                       timeout=60)
        await supervisor.execute(first.child_id, Cancel(reason="stuck"), actor="user:ann")
        state = await wait_for(pod, lambda s: s.backlog.item("api").status
                               is BacklogItemStatus.failed, timeout=30)
        assert state.backlog.item("e2e").status is BacklogItemStatus.approved  # waits

        await pod.execute(RetryItem(item_id="api"), actor="user:ann")
        state = await through_gates(pod, lambda s: s.phase == "perpetual")

        api = state.backlog.item("api")
        assert api.status is BacklogItemStatus.finished and api.child_id != first.child_id
        assert isinstance(api.child_id, UUID)
        tg.cancel_scope.cancel()


async def test_an_invalid_backlog_is_a_learning_and_an_auto_gate_decides_by_itself(
    pod_env: PodEnvironment, tmp_path: Path, create_task, store
) -> None:
    fake = FakeClaude(tmp_path / "fake").script({
        **SCRIPT,
        "product_analyst": [backlog_answer({"id": "x", "kind": "wizard", "phase": "qa"}),
                            backlog_answer(*ITEMS[:1])],
    })
    agents = AgentSettings(runner=lambda: ClaudeRunner(cli_path=str(fake.cli)),
                           verify_timeout=5.0, auto_queue=True)
    supervisor = Supervisor(replace(pod_env, agents=agents))
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        project_id = await create_task("Shop", workflow="project")
        pod = await supervisor.start(project_id)
        await pod.execute(SetApprovalPolicy(phase="architecture", policy="auto"),
                          actor="user:ann")

        state = await through_gates(pod, lambda s: s.phase == "infrastructure")

        analyst = state.jobs["product_analyst-1"]
        assert analyst.attempts == 2
        [learning] = [x for x in state.learnings if x.job_id == "product_analyst-1"]
        assert "item 'x': kind 'wizard' is not a known agent type" in learning.text
        assert [i.id for i in state.backlog.items] == ["api"]
        architecture = next(a for a in state.approvals if a.phase == "architecture")
        assert architecture.actor == "ipa:policy" and "auto" in architecture.comment
        discovery = next(a for a in state.approvals if a.phase == "discovery")
        assert discovery.actor == "user:ann"  # a project's own gates are a person's
        tg.cancel_scope.cancel()


async def test_a_child_whose_work_conflicts_is_merged_by_a_merge_job(
    pod_env: PodEnvironment, tmp_path: Path, create_task, store, repo: Path
) -> None:
    fake = FakeClaude(tmp_path / "fake").script({
        **SCRIPT,
        "product_analyst": [backlog_answer(*ITEMS[:2])],  # api and ui, side by side
        "backend_developer": [{"text": "api", "write": {"shared.txt": "by api\n"}}],
        "frontend_developer": [{"text": "ui", "write": {"shared.txt": "by ui\n"}}],
        "developer": [{"text": "merged", "write": {"shared.txt": "by api and ui\n"}}],
    })
    agents = AgentSettings(runner=lambda: ClaudeRunner(cli_path=str(fake.cli)),
                           verify_timeout=5.0, auto_queue=True)
    supervisor = Supervisor(replace(pod_env, agents=agents))
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        project_id = await create_task("Shop", repo=str(repo), workflow="project")
        pod = await supervisor.start(project_id)

        state = await through_gates(pod, lambda s: s.phase == "qa")

        events = await store.read(project_id)
        [conflict] = [e for e in events if e.type == "ChildConflicted"]
        assert conflict.data["files"] == ["shared.txt"]
        loser = conflict.data["item_id"]
        merge_job = state.jobs[conflict.data["merge_job"]]
        assert (merge_job.agent, merge_job.status.value) == ("developer", "succeeded")
        merged = [e.data for e in events if e.type == "ChildMerged"]
        assert [m["item_id"] for m in merged][-1] == loser
        assert {i.status for i in state.backlog.items} == {BacklogItemStatus.finished}
        # The merge commit has the project's branch and the child's work as its parents.
        head = state.branch.head_commit
        assert git(repo, "show", f"{head}:shared.txt") == "by api and ui\n"
        parents = git(repo, "rev-list", "--parents", "-1", head).split()[1:]
        assert parents[1] == conflict.data["child_commit"]
        tg.cancel_scope.cancel()


async def test_perpetual_cycles_run_the_maintainers_items_as_children_three_times(
    pod_env: PodEnvironment, tmp_path: Path, create_task, store, repo: Path
) -> None:
    fake = FakeClaude(tmp_path / "fake").script({
        **SCRIPT,
        "product_analyst": [backlog_answer(ITEMS[0])],
        "maintainer": [backlog_answer({"id": "polish", "kind": "qa_engineer",
                                       "phase": "perpetual"})],
        "qa_engineer": [{"text": f"cycle {n}", "write": {"polish.txt": f"{n}\n"}}
                        for n in range(1, 5)],
    })
    agents = AgentSettings(runner=lambda: ClaudeRunner(cli_path=str(fake.cli)),
                           verify_timeout=5.0, auto_queue=True, perpetual_interval=0.0)
    supervisor = Supervisor(replace(pod_env, agents=agents))
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        project_id = await create_task("Shop", repo=str(repo), workflow="project")
        pod = await supervisor.start(project_id)

        state = await through_gates(pod, lambda s: s.backlog is not None and all(
            s.backlog.item(f"c{n}-polish") is not None
            and s.backlog.item(f"c{n}-polish").status is BacklogItemStatus.finished
            for n in (1, 2, 3)))

        assert (state.phase, state.status) == ("perpetual", Status.running)
        maintainers = [j for j in state.jobs.values() if j.agent == "maintainer"]
        assert [j.status.value for j in maintainers[:3]] == ["succeeded"] * 3
        # Each cycle started once the previous one's items were done.
        events = await store.read(project_id)
        order = [(e.type, e.data.get("item_id") or e.data.get("job_id"))
                 for e in events if e.type == "CycleProposed"
                 or (e.type == "ChildFinished" and e.data["item_id"].startswith("c"))]
        assert order[:6] == [("CycleProposed", "maintainer-1"), ("ChildFinished", "c1-polish"),
                             ("CycleProposed", "maintainer-2"), ("ChildFinished", "c2-polish"),
                             ("CycleProposed", "maintainer-3"), ("ChildFinished", "c3-polish")]
        assert "TaskFailed" not in [e.type for e in events]
        assert git(repo, "show", f"{state.branch.name}:polish.txt") == "3\n"
        tg.cancel_scope.cancel()


async def test_a_childs_end_and_the_spawn_of_the_next_item_are_one_decision(
    supervisor: Supervisor, create_task, store, repo: Path
) -> None:
    project_id = await create_task("Shop", repo=str(repo), workflow="project")
    pod = await supervisor.start(project_id)
    await pod.execute(SetMaxChildren(1), actor="user:ann")

    await through_gates(pod, lambda s: s.phase == "qa" and s.backlog is not None and any(
        i.id == "e2e" and i.child_id is not None for i in s.backlog.items))

    events = await store.read(project_id)
    together = {}
    for e in events:
        together.setdefault((e.timestamp, e.correlation_id), []).append(e.type)
    # One child at a time: api, then ui, then db; each end spawns the next in its append.
    spawns = [types for types in together.values() if "ChildSpawned" in types]
    assert spawns[0] == ["ChildSpawned"]  # api, as development began
    assert spawns[1:3] == [["ChildMerged", "ChildFinished", "ChildSpawned"]] * 2  # ui, db
    assert spawns[3] == ["ChildSpawned"]  # e2e, as qa began
