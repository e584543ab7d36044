"""A project's budget counts its children's spend (issue #14 item 7), on the real store, real
git and the fake Claude Code CLI: each child's usage is recorded on the project as it ends, and
the child that reaches the budget pauses the project, which spawns no further child until a
person raises the budget."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from ipa.domain import (
    BacklogItemStatus,
    SetBudget,
    SetMaxChildren,
    Status,
    attention,
)
from ipa.pods import AgentSettings, ClaudeRunner, PodEnvironment
from ipa.supervisor import Supervisor

from ..fakes.claude import FakeClaude, backlog_answer
from .helpers import wait_for
from .test_swarm import ITEMS, SCRIPT, through_gates

pytestmark = pytest.mark.anyio


def swarm(pod_env: PodEnvironment, tmp_path: Path, api_cost: float,
          ui_cost: float) -> Supervisor:
    """A supervisor whose project's backlog is api and ui (development, side by side), their
    developers' runs costing ``api_cost`` and ``ui_cost`` US dollars."""
    fake = FakeClaude(tmp_path / "fake").script({
        **SCRIPT,
        "product_analyst": [backlog_answer(*ITEMS[:2])],
        "backend_developer": [{"text": "built api", "write": {"api.txt": "api\n"},
                               "cost": api_cost, "usage": {"input_tokens": 3000,
                                                           "output_tokens": 300}}],
        "frontend_developer": [{"text": "built ui", "write": {"ui.txt": "ui\n"},
                                "cost": ui_cost}],
    })
    agents = AgentSettings(runner=lambda: ClaudeRunner(cli_path=str(fake.cli)),
                           verify_timeout=5.0, auto_queue=True, perpetual_interval=3600.0)
    return Supervisor(replace(pod_env, agents=agents))


async def test_the_projects_spend_includes_what_its_finished_children_used(
    pod_env: PodEnvironment, tmp_path: Path, create_task, store, repo: Path
) -> None:
    supervisor = swarm(pod_env, tmp_path, api_cost=0.25, ui_cost=0.5)
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        project_id = await create_task("Shop", repo=str(repo), workflow="project")
        pod = await supervisor.start(project_id)

        state = await through_gates(pod, lambda s: s.backlog is not None and s.backlog.approved
                                    and all(i.status is BacklogItemStatus.finished
                                            for i in s.backlog.items))

        children = [await store.load(item.child_id) for item in state.backlog.items]
        used = [child.usage.total for child in children]
        assert all(u.runs >= 2 for u in used)  # its developer's run and its reviewer's
        assert sum(u.cost_usd for u in used) == pytest.approx(0.75 + 0.002)
        assert state.children_usage.children == 2
        assert state.children_usage.cost_usd == pytest.approx(sum(u.cost_usd for u in used))
        assert state.children_usage.input_tokens == sum(u.input_tokens for u in used)
        assert state.children_usage.output_tokens == sum(u.output_tokens for u in used)
        assert state.spent_usd == pytest.approx(state.usage.total.cost_usd
                                                + state.children_usage.cost_usd)
        assert state.usage.total.cost_usd < 0.1  # the project's own agents: not the children's
        events = await store.read(project_id)
        recorded = {e.data["child_id"]: e.data["cost_usd"] for e in events
                    if e.type == "ChildFinished"}
        assert recorded == {str(child.id): pytest.approx(child.usage.total.cost_usd)
                            for child in children}
        tg.cancel_scope.cancel()


async def test_children_reaching_the_budget_pause_the_project_and_spawn_no_further_child(
    pod_env: PodEnvironment, tmp_path: Path, create_task, store, repo: Path
) -> None:
    supervisor = swarm(pod_env, tmp_path, api_cost=1.0, ui_cost=0.1)
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        project_id = await create_task("Shop", repo=str(repo), workflow="project")
        pod = await supervisor.start(project_id)
        await pod.execute(SetMaxChildren(1), actor="user:ann")  # api first, then ui
        await pod.execute(SetBudget(0.5), actor="user:ann")

        state = await through_gates(pod, lambda s: s.budget_paused)

        assert state.status is Status.paused
        assert state.backlog.item("api").status is BacklogItemStatus.finished
        ui = state.backlog.item("ui")
        assert ui.status is BacklogItemStatus.approved and ui.child_id is None
        events = await store.read(project_id)
        types = [e.type for e in events]
        assert types.count("ChildSpawned") == 1
        finished = types.index("ChildFinished")
        # The api child's end reached the budget: in the same record, the pause and no spawn.
        assert types[finished:] == ["ChildFinished", "BudgetReached", "TaskPaused"]
        reached = events[finished + 1].data
        assert reached["limit_usd"] == 0.5
        assert reached["spent_usd"] == pytest.approx(state.spent_usd)
        assert state.children_usage.cost_usd >= 1.0
        needed = attention(state)
        assert needed is not None and needed.kind == "budget"

        # Raising the budget resumes the project: the item its pause held back runs now.
        await pod.execute(SetBudget(10.0), actor="user:ann")
        state = await wait_for(pod, lambda s: s.backlog.item("ui").status
                               is BacklogItemStatus.finished, timeout=60)
        assert state.status is Status.running
        assert state.children_usage.children == 2
        tg.cancel_scope.cancel()
