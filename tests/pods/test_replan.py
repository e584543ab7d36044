"""A project's PRD edited while it runs (issue #14 item 6), on the real store, real git and the
fake Claude Code CLI: the product analyst re-plans the backlog, its change waits for a person,
and once approved the new item runs as a child and the cancelled item's running child is
cancelled."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from ipa.domain import (
    ApproveBacklogChange,
    BacklogItemStatus,
    Status,
    UpdateSpec,
)
from ipa.pods import AgentSettings, ClaudeRunner, PodEnvironment
from ipa.supervisor import Supervisor

from ..fakes.claude import FakeClaude, backlog_answer
from .helpers import git, wait_for
from .test_swarm import pod_of, through_gates, work

pytestmark = pytest.mark.anyio


API = {"id": "api", "kind": "backend_developer", "phase": "development", "priority": 9}
SLOW = {"id": "slow", "kind": "frontend_developer", "phase": "development", "priority": 8}
SEARCH = {"id": "search", "kind": "database_engineer", "phase": "development", "priority": 7}


async def test_an_edited_prd_is_re_planned_and_the_approved_change_runs_and_cancels_children(
    pod_env: PodEnvironment, tmp_path: Path, create_task, store, repo: Path
) -> None:
    fake = FakeClaude(tmp_path / "fake").script({
        # Discovery plans api and slow; the re-plan keeps api, leaves slow out, adds search.
        "product_analyst": [backlog_answer(API, SLOW), backlog_answer(API, SEARCH)],
        "backend_developer": work("api"),
        "frontend_developer": [{"text": "still going", "sleep": 120}],  # runs until cancelled
        "database_engineer": work("search"),
        "reviewer": [{"text": "Looks right.\nVERDICT: approve"}],
        "*": [{"text": "done"}],
    })
    agents = AgentSettings(runner=lambda: ClaudeRunner(cli_path=str(fake.cli)),
                           verify_timeout=5.0, auto_queue=True, perpetual_interval=3600.0)
    supervisor = Supervisor(replace(pod_env, agents=agents))
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        project_id = await create_task("Shop", repo=str(repo), workflow="project")
        pod = await supervisor.start(project_id)
        state = await through_gates(pod, lambda s: s.backlog is not None and s.backlog.approved
                                    and s.backlog.item("api").status is BacklogItemStatus.finished
                                    and s.backlog.item("slow").status
                                    is BacklogItemStatus.spawned)
        slow_child = state.backlog.item("slow").child_id
        child_pod = await pod_of(supervisor, slow_child)
        await wait_for(child_pod, lambda s: any(j.status.value == "running"
                                                for j in s.jobs.values()), timeout=30)

        await pod.execute(UpdateSpec("PRD: a shop with search; no slow part"), actor="user:ann")
        state = await wait_for(pod, lambda s: s.backlog.pending is not None, timeout=60)

        pending = state.backlog.pending
        assert [i.id for i in pending.add] == ["search"]
        assert (pending.change, pending.cancel) == ((), ("slow",))
        assert state.jobs["replan-1"].spec["replan"] == 1
        [replan_run] = [r for r in fake.runs() if r["agent"] == "product_analyst"][1:]
        assert "The backlog now (version 1)" in replan_run["prompt"]
        assert "`slow` (frontend_developer, development): spawned" in replan_run["prompt"]
        assert "PRD: a shop with search" in replan_run["prompt"]
        assert state.backlog.item("slow").status is BacklogItemStatus.spawned  # not yet

        await pod.execute(ApproveBacklogChange(number=1, comment="yes"), actor="user:ann")
        cancelled = await wait_for(child_pod, lambda s: s.status is Status.cancelled,
                                   timeout=30)
        state = await through_gates(pod, lambda s: s.backlog.item("search").status
                                    is BacklogItemStatus.finished)

        assert state.backlog.version == 2 and state.backlog.pending is None
        assert state.backlog.item("slow").status is BacklogItemStatus.dropped
        assert cancelled.status is Status.cancelled
        events = await store.read(slow_child)
        [end] = [e for e in events if e.type == "TaskCancelled"]
        assert end.actor == f"project:{project_id}" and "'slow'" in end.data["reason"]
        project_events = await store.read(project_id)
        finished = [e.data["item_id"] for e in project_events if e.type == "ChildFinished"]
        assert "slow" not in finished and finished.count("search") == 1
        [approved] = [e for e in project_events if e.type == "BacklogChangeApproved"]
        assert approved.actor == "user:ann"
        assert git(repo, "show", f"{state.branch.name}:search.txt") == "search\n"
        tg.cancel_scope.cancel()
