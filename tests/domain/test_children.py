"""A project's children (issue #14): spawned within ``max_children`` once their dependencies
are done, followed to their end, and steered by a person when one fails; a child task's link
to its project; who decides at a gate."""

from __future__ import annotations

import json
from dataclasses import replace
from uuid import UUID

import pytest

from ipa.domain import (
    ApprovalPolicySet,
    Approve,
    BacklogItemStatus,
    CancelItem,
    ChildFinished,
    ChildSpawned,
    CommandRejected,
    CompletePhase,
    CreateChildTask,
    CreateTask,
    CycleProposed,
    InvalidCommand,
    ItemCancelled,
    ProposeCycle,
    QueueJob,
    RecordChildFinished,
    RequestApproval,
    RetryItem,
    SetApprovalPolicy,
    SetMaxChildren,
    SkipItem,
    SpawnChild,
    StartJob,
    StartTask,
    TaskCreated,
    TaskLinked,
    TaskState,
    approval_policy,
    decide,
    fold,
    parse_backlog,
    ready_items,
    running_children,
)

from .helpers import TASK_ID, context, run
from .test_backlog import KINDS, answer, approved, item


def child(n: int) -> str:
    return str(UUID(int=n))


def in_development() -> TaskState:
    """The approved eight-item project, moved on to development (its architecture approved,
    ``ci`` of infrastructure finished)."""
    state = run(approved(), RequestApproval("design"), Approve(), SpawnChild("ci", child(1)),
                RecordChildFinished(child(1), "completed"), CompletePhase())
    assert state.phase == "development"
    return state


def status(state: TaskState, item_id: str) -> BacklogItemStatus:
    assert state.backlog is not None
    return state.backlog.item(item_id).status  # type: ignore[union-attr]


def rejected(state: TaskState, command: object) -> str:
    with pytest.raises((CommandRejected, InvalidCommand)) as caught:
        decide(state, command, context(), TASK_ID)  # type: ignore[arg-type]
    return str(caught.value)


def test_an_item_runs_as_a_child_and_finishes_when_its_child_completes() -> None:
    state = approved()
    [spawned] = decide(state, SpawnChild("ci", child(1)), context(), TASK_ID)
    assert isinstance(spawned, ChildSpawned)
    assert (spawned.item_id, spawned.kind, spawned.phase) == ("ci", "devops_engineer",
                                                              "infrastructure")
    state = run(state, SpawnChild("ci", child(1)))
    assert status(state, "ci") is BacklogItemStatus.spawned
    assert [i.id for i in running_children(state)] == ["ci"]
    assert decide(state, SpawnChild("ci", child(1)), context(), TASK_ID) == []  # recorded

    [finished] = decide(state, RecordChildFinished(child(1), "completed"), context(), TASK_ID)
    assert isinstance(finished, ChildFinished) and finished.outcome == "completed"
    state = run(state, RecordChildFinished(child(1), "completed"))
    assert status(state, "ci") is BacklogItemStatus.finished
    assert decide(state, RecordChildFinished(child(1), "completed"), context(), TASK_ID) == []
    assert running_children(state) == ()


def test_spawning_waits_for_dependencies_and_keeps_to_max_children() -> None:
    state = in_development()
    assert [i.id for i in ready_items(state, "development")] == ["schema", "docs"]
    assert "waits for schema" in rejected(state, SpawnChild("auth", child(2)))
    state = run(state, SetMaxChildren(1), SpawnChild("schema", child(2)))
    assert "1 children run already" in rejected(state, SpawnChild("docs", child(3)))
    state = run(state, RecordChildFinished(child(2), "completed"))
    assert [i.id for i in ready_items(state, "development")] == ["api", "auth", "docs"]
    assert "is finished" in rejected(state, SpawnChild("schema", child(4)))
    assert "task id" in rejected(state, SpawnChild("auth", "not-a-uuid"))


@pytest.mark.parametrize("value", [0, -1, 201, 2.5, True, "4", None])
def test_max_children_is_a_whole_number_from_1_to_200(value: object) -> None:
    assert "max_children must be a whole number" in rejected(approved(),
                                                             SetMaxChildren(value))  # type: ignore[arg-type]


def test_only_a_project_has_children() -> None:
    task = run(None, CreateTask("t", "d"))
    assert "only a project" in rejected(task, SetMaxChildren(3))


def failed_schema() -> TaskState:
    state = run(in_development(), SpawnChild("schema", child(2)))
    return run(state, RecordChildFinished(child(2), "failed", "its review gave up"))


def test_a_failed_child_stops_its_dependants_until_a_person_retries_it() -> None:
    state = failed_schema()
    assert status(state, "schema") is BacklogItemStatus.failed
    assert [i.id for i in ready_items(state, "development")] == ["docs"]  # api, auth wait

    state = run(state, RetryItem("schema"))

    assert status(state, "schema") is BacklogItemStatus.approved
    assert state.backlog.item("schema").child_id is None  # type: ignore[union-attr]
    assert "schema" in [i.id for i in ready_items(state, "development")]
    assert "only an item whose child failed" in rejected(state, RetryItem("schema"))


def test_a_skipped_item_counts_as_done_for_its_dependants() -> None:
    state = run(failed_schema(), SkipItem("schema", "done by hand"))
    assert status(state, "schema") is BacklogItemStatus.skipped
    assert [i.id for i in ready_items(state, "development")] == ["api", "auth", "docs"]


def test_cancelling_a_failed_item_drops_every_item_waiting_on_it() -> None:
    state = failed_schema()
    [cancelled] = decide(state, CancelItem("schema", "not needed"), context(), TASK_ID)
    assert isinstance(cancelled, ItemCancelled)
    # api and auth wait on schema, ui on both, e2e and load (qa) on ui and api.
    assert sorted(cancelled.dropped) == ["api", "auth", "e2e", "load", "ui"]
    state = run(state, CancelItem("schema"))
    assert [i.id for i in state.backlog.live()] == ["ci", "docs"]  # type: ignore[union-attr]


def test_a_child_of_an_unknown_id_or_outcome_is_refused() -> None:
    state = run(in_development(), SpawnChild("schema", child(2)))
    assert "no child" in rejected(state, RecordChildFinished(child(9), "completed"))
    assert "outcome must be one of" in rejected(state, RecordChildFinished(child(2), "ok"))


def test_a_child_task_is_created_linked_to_its_item() -> None:
    command = CreateChildTask("Build api", "Make the api work.", parent_id=child(7),
                              item_id="api", kind="backend_developer", repo="/r",
                              base_branch="ipa/00000007")
    created, linked = decide(None, command, context(), UUID(int=8))
    assert isinstance(created, TaskCreated) and created.workflow == "item"
    assert isinstance(linked, TaskLinked)
    state = fold([created, linked], None)
    assert (state.parent_id, state.item_id, state.kind) == (UUID(int=7), "api",
                                                            "backend_developer")
    assert state.base_branch == "ipa/00000007"
    assert TaskState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    with pytest.raises(InvalidCommand, match="the item workflow is for a project's child"):
        decide(None, CreateTask("t", "d", workflow="item"), context(), UUID(int=9))
    with pytest.raises(InvalidCommand, match="parent_id must be a task id"):
        decide(None, CreateChildTask("t", "d", parent_id="x", item_id="a", kind="k"),
               context(), UUID(int=9))


def test_the_approval_policy_comes_from_the_workflow_until_a_person_sets_it() -> None:
    project = run(None, CreateTask("p", "PRD", workflow="project"), StartTask())
    item = fold(decide(None, CreateChildTask("t", "d", parent_id=child(1), item_id="a",
                                             kind="k"), context(), UUID(int=2)), None)
    assert approval_policy(project, "discovery") == "person"
    assert approval_policy(item, "review") == "agent"

    [chosen] = decide(project, SetApprovalPolicy("architecture", "auto"), context(), TASK_ID)
    assert isinstance(chosen, ApprovalPolicySet)
    project = run(project, SetApprovalPolicy("architecture", "auto"))
    assert approval_policy(project, "architecture") == "auto"
    assert project.to_dict()["approval_policies"] == {"architecture": "auto"}
    assert TaskState.from_dict(json.loads(json.dumps(project.to_dict()))) == project
    assert decide(project, SetApprovalPolicy("architecture", "auto"), context(), TASK_ID) == []
    assert "not a gated phase" in rejected(project, SetApprovalPolicy("qa", "auto"))
    assert "policy must be one of" in rejected(project, SetApprovalPolicy("discovery", "bot"))


def test_a_snapshot_from_before_children_loads_with_the_defaults() -> None:
    state = run(None, CreateTask("t", "d"))
    data = state.to_dict()
    for key in ("max_children", "approval_policies", "parent_id", "item_id", "kind"):
        del data[key]
    assert TaskState.from_dict(data) == state


def test_a_perpetual_cycle_adds_approved_items_under_new_ids() -> None:
    perpetual = replace(approved(), phase="perpetual")
    state = run(perpetual, QueueJob("maintainer-1", "maintainer"),
                StartJob("maintainer-1", "run-9"))
    items = parse_backlog(answer([item("c1-fix", "qa_engineer", "perpetual", 3)]),
                          kinds=KINDS, phases=("perpetual",))

    [proposed] = decide(state, ProposeCycle(items, "maintainer-1", "run-9"), context(), TASK_ID)

    assert isinstance(proposed, CycleProposed) and proposed.cycle == 1
    state = run(state, ProposeCycle(items, "maintainer-1", "run-9"))
    assert state.backlog.cycles == 1  # type: ignore[union-attr]
    assert status(state, "c1-fix") is BacklogItemStatus.approved
    assert [i.id for i in ready_items(state, "perpetual")] == ["c1-fix"]
    again = rejected(state, ProposeCycle(items, "maintainer-1", "run-9"))
    assert "has an item 'c1-fix' already" in again
    assert "open-ended last phase" in rejected(
        run(approved(), QueueJob("m", "maintainer"), StartJob("m", "r")),
        ProposeCycle(items, "m", "r"))
