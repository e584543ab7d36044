"""Deciding a task's events from commands, and folding them back into its state."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from uuid import UUID

import pytest

from ipa.domain import (
    ApprovalRequested,
    Approve,
    Cancel,
    ChangesRequested,
    Command,
    CommandRejected,
    CompletePhase,
    Context,
    CreateTask,
    Fail,
    InvalidCommand,
    MemoryRecorded,
    Pause,
    PhaseApproved,
    PhaseCompleted,
    PhaseEntered,
    RequestApproval,
    RequestChanges,
    Resume,
    Retry,
    SpecUpdated,
    StartTask,
    Status,
    TaskCompleted,
    TaskCreated,
    TaskEvent,
    TaskFailed,
    TaskNotFound,
    TaskPaused,
    TaskResumed,
    TaskRetried,
    TaskStarted,
    TaskState,
    UpdateSpec,
    allowed_commands,
    decide,
    destination,
    evolve,
    fold,
    get_workflow,
)

TASK_ID = UUID(int=1)
MakeState = Callable[[], TaskState]
START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def context(minute: int = 0, actor: str = "user:ann") -> Context:
    return Context(
        actor=actor,
        now=START + timedelta(minutes=minute),
        correlation_id=f"req-{minute}",
        causation_id=f"cmd-{minute}",
    )


def run(state: TaskState | None, *commands: Command) -> TaskState:
    """Decide and fold each command in turn, one minute apart."""
    for command in commands:
        minute = 0 if state is None else state.version
        state = fold(decide(state, command, context(minute), TASK_ID), state)
    assert state is not None
    return state


def created(workflow: str = "task") -> TaskState:
    return run(None, CreateTask("Add rate limiting", "to the login endpoint", workflow=workflow))


def running() -> TaskState:
    return run(created(), StartTask())


def waiting() -> TaskState:
    return run(running(), RequestApproval("spec written"))


def in_development() -> TaskState:
    return run(waiting(), Approve(), RequestApproval(), Approve())


def failed() -> TaskState:
    return run(running(), Fail("agent crashed"))


def paused() -> TaskState:
    return run(running(), Pause("lunch"))


def completed() -> TaskState:
    return run(in_development(), CompletePhase(), RequestApproval(), Approve())


def cancelled() -> TaskState:
    return run(running(), Cancel("not needed"))


def types(events: list[TaskEvent]) -> list[str]:
    return [type(event).__name__ for event in events]


# -- creating ------------------------------------------------------------------------------------


def test_create_task_records_task_created_in_the_first_phase() -> None:
    [event] = decide(None, CreateTask("Title", "Spec", repo="git@x:y.git"), context(), TASK_ID)
    assert isinstance(event, TaskCreated)
    assert (event.title, event.description, event.workflow, event.repo, event.phase) == (
        "Title",
        "Spec",
        "task",
        "git@x:y.git",
        "spec_clarification",
    )


def test_events_carry_identity_version_time_and_cause_from_the_context() -> None:
    [event] = decide(None, CreateTask("Title", "Spec"), context(5, actor="api-key:ci"), TASK_ID)
    assert (event.originator_id, event.originator_version, event.timestamp) == (
        TASK_ID,
        1,
        START + timedelta(minutes=5),
    )
    assert (event.actor, event.correlation_id, event.causation_id) == (
        "api-key:ci",
        "req-5",
        "cmd-5",
    )


def test_a_created_task_is_pending_in_its_first_phase() -> None:
    state = created()
    assert (state.id, state.version, state.phase, state.status) == (
        TASK_ID,
        1,
        "spec_clarification",
        Status.pending,
    )
    assert (state.created_by, state.created_at, state.updated_at) == ("user:ann", START, START)
    assert [(v.phase, v.entered_at) for v in state.phase_history] == [("spec_clarification", START)]


def test_events_are_numbered_after_the_state_version() -> None:
    state = in_development()
    events = decide(state, CompletePhase(), context(), TASK_ID)
    assert [e.originator_version for e in events] == [state.version + 1, state.version + 2]


def test_create_task_on_an_existing_task_is_rejected() -> None:
    with pytest.raises(CommandRejected, match="cannot create_task: task is running"):
        decide(running(), CreateTask("Again", ""), context(), TASK_ID)


def test_a_command_to_a_missing_task_is_task_not_found() -> None:
    with pytest.raises(TaskNotFound, match=f"cannot start: task {TASK_ID} does not exist"):
        decide(None, StartTask(), context(), TASK_ID)


# -- input validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("title", ["", "   ", "\t\n"])
def test_a_blank_title_is_invalid(title: str) -> None:
    with pytest.raises(InvalidCommand, match="title must not be blank"):
        decide(None, CreateTask(title, "spec"), context(), TASK_ID)


def test_a_title_over_200_characters_is_invalid() -> None:
    with pytest.raises(InvalidCommand, match="title is 201 characters long; the limit is 200"):
        decide(None, CreateTask("x" * 201, "spec"), context(), TASK_ID)


def test_a_title_of_200_characters_is_accepted() -> None:
    [event] = decide(None, CreateTask("x" * 200, "spec"), context(), TASK_ID)
    assert isinstance(event, TaskCreated)
    assert len(event.title) == 200


def test_the_title_is_trimmed() -> None:
    [event] = decide(None, CreateTask("  Fix login  ", "spec"), context(), TASK_ID)
    assert isinstance(event, TaskCreated)
    assert event.title == "Fix login"


def test_a_multi_line_title_is_invalid() -> None:
    with pytest.raises(InvalidCommand, match="single line"):
        decide(None, CreateTask("one\ntwo", "spec"), context(), TASK_ID)


def test_an_unknown_workflow_is_invalid_and_names_the_known_ones() -> None:
    with pytest.raises(InvalidCommand, match="unknown workflow 'epic'; known: item, project, task"):
        decide(None, CreateTask("Title", "spec", workflow="epic"), context(), TASK_ID)


def test_a_blank_repo_is_invalid() -> None:
    with pytest.raises(InvalidCommand, match="repo must not be blank"):
        decide(None, CreateTask("Title", "spec", repo=" "), context(), TASK_ID)


def test_a_description_that_is_not_text_is_invalid() -> None:
    with pytest.raises(InvalidCommand, match="description must be text, got int"):
        decide(None, CreateTask("Title", 42), context(), TASK_ID)  # type: ignore[arg-type]


def test_request_changes_without_feedback_is_invalid() -> None:
    with pytest.raises(InvalidCommand, match="feedback must not be blank"):
        decide(waiting(), RequestChanges(" "), context(), TASK_ID)


def test_fail_without_a_reason_is_invalid() -> None:
    with pytest.raises(InvalidCommand, match="reason must not be blank"):
        decide(running(), Fail(""), context(), TASK_ID)


def test_a_context_needs_a_utc_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware UTC"):
        Context("user:ann", datetime(2025, 3, 1, 12, 0), "req")
    with pytest.raises(ValueError, match="timezone-aware UTC"):
        Context("user:ann", datetime(2025, 3, 1, tzinfo=timezone(timedelta(hours=2))), "req")


def test_a_context_needs_an_actor() -> None:
    with pytest.raises(ValueError, match="actor must not be blank"):
        Context(" ", START, "req")


# -- the happy paths -----------------------------------------------------------------------------


def test_a_task_walks_its_happy_path_to_completed() -> None:
    steps: list[tuple[Command, list[str], str, Status]] = [
        (StartTask(), ["TaskStarted"], "spec_clarification", Status.running),
        (RequestApproval("spec"), ["ApprovalRequested"], "spec_clarification", Status.waiting),
        (Approve("good spec"), ["PhaseApproved", "PhaseEntered"], "planning", Status.running),
        (RequestApproval("plan"), ["ApprovalRequested"], "planning", Status.waiting),
        (Approve(), ["PhaseApproved", "PhaseEntered"], "development", Status.running),
        (CompletePhase(), ["PhaseCompleted", "PhaseEntered"], "review", Status.running),
        (RequestApproval("diff"), ["ApprovalRequested"], "review", Status.waiting),
        (Approve("ship it"), ["PhaseApproved", "TaskCompleted"], "completed", Status.completed),
    ]
    state = created()
    for command, expected, phase, status in steps:
        events = decide(state, command, context(state.version), TASK_ID)
        state = fold(events, state)
        assert state is not None
        assert (types(events), state.phase, state.status) == (expected, phase, status)
    assert state.version == 13
    assert [a.phase for a in state.approvals] == ["spec_clarification", "planning", "review"]
    assert [v.phase for v in state.phase_history] == [p.name for p in get_workflow("task").phases]


def test_approving_review_completes_the_task() -> None:
    state = run(in_development(), CompletePhase(), RequestApproval())
    events = decide(state, Approve("lgtm"), context(), TASK_ID)
    assert types(events) == ["PhaseApproved", "TaskCompleted"]
    done = fold(events, state)
    assert done is not None
    assert (done.phase, done.status) == ("completed", Status.completed)


def test_a_completed_task_accepts_nothing() -> None:
    state = completed()
    for command in (UpdateSpec("late"), Cancel(), Pause(), Approve(), StartTask()):
        with pytest.raises(CommandRejected, match="allowed: none"):
            decide(state, command, context(), TASK_ID)


def walk_project(until: str) -> tuple[TaskState, list[str]]:
    """Start a project and move it phase by phase until ``until``; also the phases visited."""
    workflow = get_workflow("project")
    state = run(created("project"), StartTask())
    visited = [state.phase]
    while state.phase != until:
        if workflow.phase(state.phase).gated:
            state = run(state, RequestApproval(), Approve())
        else:
            state = run(state, CompletePhase())
        visited.append(state.phase)
    return state, visited


def test_a_project_walks_every_phase_to_perpetual() -> None:
    state, visited = walk_project(until="perpetual")
    assert visited == [p.name for p in get_workflow("project").phases]
    assert state.status is Status.running


def test_a_project_in_perpetual_refuses_phase_moves() -> None:
    state, _ = walk_project(until="perpetual")
    for command in (CompletePhase(), RequestApproval(), Approve()):
        with pytest.raises(CommandRejected, match="is running in phase perpetual"):
            decide(state, command, context(), TASK_ID)


def test_a_project_in_perpetual_ends_only_by_cancel() -> None:
    state, _ = walk_project(until="perpetual")
    ended = run(state, Cancel("product retired"))
    assert (ended.phase, ended.status) == ("perpetual", Status.cancelled)


# -- refusals ------------------------------------------------------------------------------------

SAMPLE_COMMANDS: list[Command] = [
    CreateTask("Title", "spec"),
    StartTask(),
    UpdateSpec("a new spec"),
    RequestApproval("done"),
    Approve("ok"),
    RequestChanges("more tests"),
    CompletePhase(),
    Pause("break"),
    Resume(),
    Cancel("stop"),
    Fail("broken"),
    Retry(),
]

REPRESENTATIVE_STATES = {
    "pending": created,
    "running_gated": running,
    "waiting": waiting,
    "running_ungated": in_development,
    "paused": paused,
    "failed": failed,
    "completed": completed,
    "cancelled": cancelled,
}


@pytest.mark.parametrize("make_state", REPRESENTATIVE_STATES.values(), ids=REPRESENTATIVE_STATES)
def test_every_illegal_command_is_rejected_with_the_allowed_list(make_state: MakeState) -> None:
    state = make_state()
    allowed = allowed_commands(get_workflow("task"), state.phase, state.status)
    illegal = [c for c in SAMPLE_COMMANDS if c.name not in allowed]
    assert illegal
    for command in illegal:
        with pytest.raises(CommandRejected) as caught:
            decide(state, command, context(), TASK_ID)
        rejection = caught.value
        assert (rejection.command, rejection.phase, rejection.status) == (
            command.name,
            state.phase,
            state.status,
        )
        assert list(rejection.allowed) == allowed
        assert f"allowed: {', '.join(allowed) or 'none'}" in str(rejection)


def test_approve_while_running_is_rejected_with_a_clear_message() -> None:
    state = run(waiting(), Approve())
    with pytest.raises(CommandRejected) as caught:
        decide(state, Approve(), context(), TASK_ID)
    assert str(caught.value) == (
        "cannot approve: task is running in phase planning; "
        "allowed: cancel, fail, pause, request_approval, return_to_phase, update_spec"
    )


# -- pause, resume, cancel, fail, retry ----------------------------------------------------------


@pytest.mark.parametrize(
    "make_state", [created, running, waiting], ids=["pending", "running", "waiting"]
)
def test_resume_returns_to_the_status_it_was_paused_from(make_state: MakeState) -> None:
    before = make_state()
    paused_state = run(before, Pause("meeting"))
    assert (paused_state.status, paused_state.paused_from) == (Status.paused, before.status)
    resumed = run(paused_state, Resume())
    assert (resumed.phase, resumed.status, resumed.paused_from) == (
        before.phase,
        before.status,
        None,
    )


def test_pause_records_its_reason_and_origin() -> None:
    events = decide(waiting(), Pause("holiday"), context(), TASK_ID)
    [event] = events
    assert isinstance(event, TaskPaused)
    assert (event.reason, event.paused_from) == ("holiday", "waiting")


def test_resume_records_the_status_it_returns_to() -> None:
    [event] = decide(run(waiting(), Pause()), Resume(), context(), TASK_ID)
    assert isinstance(event, TaskResumed)
    assert event.status == "waiting"


def test_a_paused_task_can_be_cancelled() -> None:
    state = run(paused(), Cancel("no longer needed"))
    assert (state.status, state.paused_from) == (Status.cancelled, None)


def test_a_failed_task_can_be_cancelled() -> None:
    state = run(failed(), Cancel())
    assert state.status is Status.cancelled


def test_fail_records_the_reason() -> None:
    state = failed()
    assert (state.status, state.failure) == (Status.failed, "agent crashed")


def test_retry_runs_the_failed_phase_again_and_clears_the_failure() -> None:
    before = failed()
    [event] = decide(before, Retry(), context(), TASK_ID)
    assert isinstance(event, TaskRetried)
    state = fold([event], before)
    assert state is not None
    assert (state.phase, state.status, state.failure) == (before.phase, Status.running, None)


# -- specs and feedback --------------------------------------------------------------------------


def test_request_changes_keeps_the_phase_and_records_the_feedback() -> None:
    state = run(waiting(), RequestChanges("cover the error path"))
    assert (state.phase, state.status) == ("spec_clarification", Status.running)
    [request] = state.feedback
    assert (request.phase, request.actor, request.feedback) == (
        "spec_clarification",
        "user:ann",
        "cover the error path",
    )


def test_approval_answers_the_pending_feedback_of_its_phase() -> None:
    state = run(waiting(), RequestChanges("more"), RequestApproval(), Approve())
    assert state.feedback == ()
    assert state.phase == "planning"


@pytest.mark.parametrize("make_state", [created, running, waiting, paused, failed])
def test_update_spec_is_allowed_in_every_non_terminal_status(make_state: MakeState) -> None:
    before = make_state()
    state = run(before, UpdateSpec("rate limit per IP"))
    assert state.description == "rate limit per IP"
    assert (state.phase, state.status) == (before.phase, before.status)


def test_an_unchanged_spec_records_nothing() -> None:
    state = running()
    assert decide(state, UpdateSpec(state.description), context(), TASK_ID) == []


# -- evolve and fold -----------------------------------------------------------------------------


def history() -> list[TaskEvent]:
    """A stream that touches every event type."""
    events: list[TaskEvent] = []
    state: TaskState | None = None
    for command in [
        CreateTask("Title", "spec"),
        StartTask(),
        UpdateSpec("better spec"),
        Pause("wait"),
        Resume(),
        RequestApproval(),
        RequestChanges("more"),
        RequestApproval(),
        Approve(),
        RequestApproval(),
        Approve(),
        Fail("oops"),
        Retry(),
        CompletePhase(),
        RequestApproval(),
        Approve(),
    ]:
        new = decide(state, command, context(len(events)), TASK_ID)
        state = fold(new, state)
        events.extend(new)
    return events


def test_the_history_covers_every_event_type() -> None:
    expected = {
        TaskCreated, TaskStarted, SpecUpdated, TaskPaused, TaskResumed, ApprovalRequested,
        ChangesRequested, PhaseApproved, PhaseEntered, TaskFailed, TaskRetried, PhaseCompleted,
        TaskCompleted, MemoryRecorded,  # a change request is remembered (domain/memory.py)
    }  # fmt: skip
    assert {type(e) for e in history()} == expected


def test_fold_equals_evolving_one_event_at_a_time() -> None:
    events = history()
    state = None
    for event in events:
        state = evolve(state, event)
    assert fold(events) == state


def test_fold_from_a_snapshot_continues_where_it_stopped() -> None:
    events = history()
    snapshot = fold(events[:7])
    assert fold(events[7:], snapshot) == fold(events)


def test_fold_of_no_events_is_none() -> None:
    assert fold([]) is None


def test_evolve_sets_version_and_updated_at_from_the_event() -> None:
    events = history()
    state = fold(events)
    assert state is not None
    assert (state.version, state.updated_at) == (len(events), events[-1].timestamp)


def test_evolve_refuses_a_gap_in_versions() -> None:
    events = history()
    with pytest.raises(ValueError, match="is at version 1; cannot apply version 3"):
        fold([events[0], events[2]])


def test_evolve_refuses_another_tasks_event() -> None:
    first, second = history()[:2]
    stranger = replace(second, originator_id=UUID(int=2))
    with pytest.raises(ValueError, match="applied to task"):
        fold([first, stranger])


def test_evolve_refuses_an_event_before_task_created() -> None:
    with pytest.raises(ValueError, match="TaskStarted before TaskCreated"):
        evolve(None, history()[1])


def test_evolve_refuses_a_second_task_created() -> None:
    first = history()[0]
    with pytest.raises(ValueError, match="already exists"):
        evolve(evolve(None, first), replace(first, originator_version=2))


# -- the JSON form -------------------------------------------------------------------------------


def rich_state() -> TaskState:
    """A state with every optional field filled."""
    state = run(waiting(), RequestChanges("more"), RequestApproval(), Pause("later"))
    return replace(state, repo="https://example.test/repo.git", failure="earlier failure")


def test_to_dict_round_trips_exactly() -> None:
    state = rich_state()
    assert TaskState.from_dict(state.to_dict()) == state


def test_to_dict_round_trips_through_json() -> None:
    state = fold(history())
    assert state is not None
    assert TaskState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


def test_to_dict_holds_only_plain_json_types() -> None:
    def plain(value: object) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        # A float is a JSON number (costs, timeouts); it must be finite to survive JSON.
        if type(value) is float:
            return math.isfinite(value)
        return value is None or type(value) in (str, int, bool)

    assert plain(rich_state().to_dict())


# -- every command in every reachable position ---------------------------------------------------


def reachable(workflow: str) -> dict[tuple[str, Status, Status | None], TaskState]:
    """One state per reachable (phase, status, paused_from), found by trying every command."""
    start = created(workflow)
    seen = {(start.phase, start.status, start.paused_from): start}
    frontier = [start]
    while frontier:
        state = frontier.pop()
        for command in SAMPLE_COMMANDS:
            try:
                after = run(state, command)
            except (CommandRejected, InvalidCommand):
                continue
            key = (after.phase, after.status, after.paused_from)
            if key not in seen:
                seen[key] = after
                frontier.append(after)
    return seen


def expected_positions(workflow: str) -> set[tuple[str, Status, Status | None]]:
    """The positions the rules allow, written out independently of the machines.

    Work, fail, cancel and pause in every working phase; wait (and pause while waiting) at gates;
    be pending (or paused so) in the first phase; be completed in the final phase of a workflow
    that is not open-ended.
    """
    flow = get_workflow(workflow)
    positions = {(flow.first, Status.pending, None), (flow.first, Status.paused, Status.pending)}
    for phase in flow.phases:
        if flow.completes_at(phase.name):
            positions.add((phase.name, Status.completed, None))
            continue
        positions |= {
            (phase.name, Status.running, None),
            (phase.name, Status.failed, None),
            (phase.name, Status.cancelled, None),
            (phase.name, Status.paused, Status.running),
        }
        if phase.gated:
            positions |= {
                (phase.name, Status.waiting, None),
                (phase.name, Status.paused, Status.waiting),
            }
    return positions


@pytest.mark.parametrize("workflow", ["task", "project"])
def test_every_command_in_every_reachable_position_obeys_the_machines(workflow: str) -> None:
    flow = get_workflow(workflow)
    states = reachable(workflow)
    assert set(states) == expected_positions(workflow)
    for state in states.values():
        allowed = allowed_commands(flow, state.phase, state.status)
        for command in SAMPLE_COMMANDS:
            try:
                events = decide(state, command, context(), TASK_ID)
            except (CommandRejected, InvalidCommand):
                assert command.name not in allowed
                continue
            assert command.name in allowed
            after = fold(events, state)
            assert after is not None
            expected = destination(
                flow, state.phase, state.status, command.name, paused_from=state.paused_from
            )
            assert (after.phase, after.status) == (expected.phase, expected.status)
            assert after.version == state.version + len(events)
            assert (after.status is Status.paused) == (after.paused_from is not None)
