"""A PRD edited while its project runs (issue #14 item 6): the edit is counted for a re-plan,
the analyst's answer becomes a change of the approved backlog (items to add, change and
cancel) that waits for a person, who approves it (applied whole) or rejects it; a change that
would touch finished or running work is refused, naming each item."""

from __future__ import annotations

import pytest

from ipa.domain import (
    ApproveBacklogChange,
    BacklogChangeApproved,
    BacklogChangeProposed,
    BacklogInvalid,
    BacklogItemStatus,
    CommandRejected,
    ProposeBacklogChange,
    QueueJob,
    RecordChildFinished,
    RejectBacklogChange,
    SpawnChild,
    StartJob,
    TaskState,
    UpdateSpec,
    decide,
    parse_backlog,
    phase_items_done,
    ready_items,
    replan_due,
)

from .helpers import TASK_ID, context, run, types
from .test_backlog import KINDS, PHASES, answer, backlog_items, item, proposed, with_status
from .test_children import child, in_development


def replanning(state: TaskState | None = None, n: int = 1) -> TaskState:
    """The project in development after its PRD's ``n``-th edit, its re-plan job running as
    ``run-r<n>``."""
    state = run(state or in_development(), UpdateSpec(f"PRD: a shop, edit {n}"))
    return run(state, QueueJob(f"replan-{n}", "product_analyst", spec={"replan": n}),
               StartJob(f"replan-{n}", f"run-r{n}"))


def propose(state: TaskState, items: list[dict], n: int = 1) -> list:
    parsed = parse_backlog(answer(items), kinds=KINDS, phases=PHASES)
    return decide(state, ProposeBacklogChange(parsed, f"replan-{n}", f"run-r{n}"), context(),
                  TASK_ID)


def proposal(state: TaskState, items: list[dict], n: int = 1) -> TaskState:
    parsed = parse_backlog(answer(items), kinds=KINDS, phases=PHASES)
    return run(state, ProposeBacklogChange(parsed, f"replan-{n}", f"run-r{n}"))


def replanned() -> list[dict]:
    """The eight items with ``search`` added, ``docs`` retitled and ``load`` left out."""
    items = [i for i in backlog_items() if i["id"] != "load"]
    docs = next(i for i in items if i["id"] == "docs")
    docs["title"] = "Write the user guide"
    return [*items, item("search", "backend_developer", "development", 4, "schema")]


def refused(state: TaskState, command: object) -> str:
    with pytest.raises(BacklogInvalid) as caught:
        decide(state, command, context(), TASK_ID)  # type: ignore[arg-type]
    return str(caught.value)


def invalid(state: TaskState, items: list[dict], n: int = 1) -> str:
    """Why the re-plan answer ``items`` is refused, by the contract or by the change."""
    with pytest.raises(BacklogInvalid) as caught:
        propose(state, items, n)
    return str(caught.value)


def test_an_edit_of_an_approved_backlogs_prd_is_due_for_a_re_plan_once() -> None:
    before = run(proposed(), UpdateSpec("PRD: a bigger shop"))
    assert before.backlog.prd_edits == 0 and replan_due(before) is None  # the gate decides

    state = run(in_development(), UpdateSpec("PRD: a shop with search"))
    assert replan_due(state) == 1
    state = run(state, QueueJob("replan-1", "product_analyst", spec={"replan": 1}))
    assert replan_due(state) is None
    assert replan_due(run(state, UpdateSpec("PRD: a shop with search and filters"))) == 2


def test_a_re_plan_becomes_a_change_that_waits_and_holds_the_items_it_touches() -> None:
    state = replanning()

    [event] = propose(state, replanned())

    assert isinstance(event, BacklogChangeProposed)
    assert (event.number, event.job_id, event.run_id) == (1, "replan-1", "run-r1")
    assert [i["id"] for i in event.add] == ["search"]
    assert event.add[0]["status"] == "approved"
    assert event.change == [{"item_id": "docs", "changes": {"title": "Write the user guide"}}]
    assert event.cancel == ["load"]
    state = proposal(state, replanned())
    pending = state.backlog.pending
    assert pending is not None and pending.touched() == {"docs", "load"}
    assert state.backlog.item("docs").title == "Build docs"  # nothing applied yet
    assert [i.id for i in ready_items(state, "development")] == ["schema"]  # docs waits
    assert state.backlog.to_dict()["pending"]["cancel"] == ["load"]
    assert TaskState.from_dict(state.to_dict()) == state  # snapshots keep it


def test_approving_the_change_applies_it_whole() -> None:
    state = proposal(replanning(), replanned())
    version = state.backlog.version

    events = decide(state, ApproveBacklogChange(number=1, comment="yes"), context(), TASK_ID)
    state = run(state, ApproveBacklogChange(number=1, comment="yes"))

    assert types(events) == ["BacklogChangeApproved"]
    assert isinstance(events[0], BacklogChangeApproved) and events[0].comment == "yes"
    backlog = state.backlog
    assert backlog.pending is None and backlog.version == version + 1
    assert (backlog.item("search").status, backlog.item("search").depends_on) == (
        BacklogItemStatus.approved, ("schema",))
    assert backlog.item("docs").title == "Write the user guide"
    assert backlog.item("load").status is BacklogItemStatus.dropped
    assert [i.id for i in ready_items(state, "development")] == ["schema", "docs"]


def test_rejecting_the_change_leaves_the_backlog_as_it_was() -> None:
    state = proposal(replanning(), replanned())
    before = state.backlog

    state = run(state, RejectBacklogChange(reason="not now"))

    assert state.backlog.pending is None
    assert state.backlog.items == before.items and state.backlog.version == before.version
    with pytest.raises(CommandRejected, match="no change waiting"):
        decide(state, ApproveBacklogChange(), context(), TASK_ID)


def test_a_re_plan_that_changes_nothing_records_nothing() -> None:
    assert propose(replanning(), backlog_items()) == []


def test_a_newer_change_replaces_the_one_waiting() -> None:
    state = proposal(replanning(), replanned())
    state = proposal(replanning(state, 2), backlog_items()[:-1], n=2)  # only load left out

    assert state.backlog.pending.number == 2
    assert (state.backlog.pending.add, state.backlog.pending.change) == ((), ())
    with pytest.raises(CommandRejected, match="change 2 waits for approval, not change 1"):
        decide(state, ApproveBacklogChange(number=1), context(), TASK_ID)


def test_a_change_that_would_touch_done_or_running_work_is_refused_naming_each_item() -> None:
    state = run(replanning(), SpawnChild("schema", child(2)), SpawnChild("docs", child(3)),
                RecordChildFinished(child(3), "completed"))
    items = backlog_items()
    items[0] = {**items[0], "title": "CI on every push"}  # ci finished
    items[1] = {**items[1], "priority": 1}  # schema runs

    message = invalid(state, items)

    assert "item 'ci' is finished" in message and "keep it as it is" in message
    assert "item 'schema' runs as child task" in message
    assert "leave it out to cancel that child" in message
    assert "item 'docs' is finished" in invalid(
        state, [i for i in backlog_items() if i["id"] != "docs"])


@pytest.mark.parametrize(("items", "expected"), [
    ([*backlog_items(), item("lint", "devops_engineer", "infrastructure", 1)],
     "item 'lint': its phase infrastructure is over"),
    ([i for i in backlog_items() if i["id"] != "api"],
     "depends on 'api', which is not an item of the backlog"),
    ([i if i["id"] != "schema" else {**i, "depends_on": ["ui"]} for i in backlog_items()],
     "depend on each other in a cycle"),
])  # fmt: skip
def test_a_change_that_breaks_the_backlog_is_refused_whole(items: list[dict],
                                                           expected: str) -> None:
    state = replanning()

    assert expected in invalid(state, items)
    assert state.backlog.pending is None


def test_a_dropped_items_id_is_not_reused() -> None:
    state = run(proposal(replanning(), replanned()), ApproveBacklogChange())
    state = replanning(state, 2)

    assert "item 'load' was dropped; new work needs a new id" in invalid(
        state, backlog_items(), n=2)


def test_a_running_item_may_be_cancelled_and_its_childs_end_changes_nothing() -> None:
    state = run(replanning(), SpawnChild("docs", child(5)))
    state = proposal(state, [i for i in backlog_items() if i["id"] != "docs"])
    assert state.backlog.pending.cancel == ("docs",)

    state = run(state, ApproveBacklogChange())

    docs = state.backlog.item("docs")
    assert (docs.status, str(docs.child_id)) == (BacklogItemStatus.dropped, child(5))
    assert decide(state, RecordChildFinished(child(5), "cancelled"), context(), TASK_ID) == []


def test_approval_checks_the_change_again_and_applies_nothing_when_the_backlog_moved_on() -> None:
    state = proposal(replanning(), replanned())
    state = with_status(state, "load", BacklogItemStatus.finished)

    message = refused(state, ApproveBacklogChange())

    assert "item 'load' is finished" in message and "reject it" in message
    assert state.backlog.pending is not None


def test_a_phase_waits_for_a_change_that_brings_it_work() -> None:
    state = replanning()
    for item_id in ("schema", "api", "auth", "ui", "docs"):
        state = with_status(state, item_id, BacklogItemStatus.finished)
    assert phase_items_done(state, "development")

    state = proposal(state, [*backlog_items(),
                             item("search", "backend_developer", "development", 4)])

    assert not phase_items_done(state, "development")
    assert phase_items_done(run(state, RejectBacklogChange()), "development")
