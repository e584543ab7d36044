"""The task aggregate as pure functions: decide what happens, then evolve the state from it.

- ``decide(state, command, ctx, task_id)`` checks a command against the task's state and its
  workflow machines and returns the events it causes, or raises a ``DomainError``. It reads no
  clock and makes no ids: the time, the actor and the ids arrive in ``ctx`` and ``task_id``.
- ``evolve(state, event)`` folds one event into the state; ``fold(events)`` folds many. Replaying
  a task's stream with ``fold`` gives back exactly the state its decisions were made on.

``TaskState`` itself, the value both work on, lives in ``state.py``. The job queue and the
workspaces decide and fold their own commands and events (``queue.py``, ``workspaces.py``);
this module routes to them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import singledispatch
from typing import Any
from uuid import UUID

from . import agents, archive, backlog, children, lineage, memory, queue, sync, workspaces
from .children_commands import CreateChildTask
from .commands import (
    Approve,
    Cancel,
    Command,
    CompletePhase,
    Context,
    CreateTask,
    Fail,
    Pause,
    RequestApproval,
    RequestChanges,
    Resume,
    Retry,
    StartTask,
    UpdateSpec,
)
from .credentials import refuse_credentials
from .decision import Draft, text
from .errors import CommandRejected, InvalidCommand, TaskNotFound, UnknownWorkflow
from .events import (
    ApprovalRequested,
    ChangesRequested,
    PhaseApproved,
    PhaseCompleted,
    PhaseEntered,
    SpecUpdated,
    TaskCancelled,
    TaskCompleted,
    TaskCreated,
    TaskEvent,
    TaskFailed,
    TaskPaused,
    TaskResumed,
    TaskRetried,
    TaskStarted,
)
from .lineage_commands import LINEAGE_COMMANDS
from .state import Approval, ChangeRequest, PhaseVisit, TaskState, changed
from .workflows import Position, Status, allowed_commands, destination, get_workflow

TITLE_MAX_LENGTH = 200
"""The longest title ``CreateTask`` accepts, in characters (after trimming)."""


# -- decide --------------------------------------------------------------------------------------


def decide(
    state: TaskState | None, command: Command, ctx: Context, task_id: UUID
) -> list[TaskEvent]:
    """The events that ``command`` causes on the task ``task_id``, now in ``state``.

    Workflow commands move the task through its phases and statuses; job commands
    (``JOB_COMMANDS``) change its job queue and workspaces only (see ``queue.py``).

    ``state`` is ``None`` for a task without events: only ``CreateTask`` (or a clone or fork
    of another task, ``LINEAGE_COMMANDS``) is accepted then, and only then. The events are
    numbered from ``state.version + 1`` and stamped with ``ctx``.

    Raises ``InvalidCommand`` for malformed input (``JobNotFound`` for a job the task does not
    have), ``TaskNotFound`` for a command to a task that does not exist, and ``CommandRejected``
    for a command its phase and status do not allow (``JobRejected`` for a job command the job's
    state refuses). An ``UpdateSpec`` that changes nothing returns no events, and so does a job
    command that records a fact already recorded.
    """
    if isinstance(command, CreateChildTask):  # a project's pod creates its child's stream
        command, linked = CreateTask(
            title=command.title, description=command.description, workflow=command.workflow,
            repo=command.repo, base_branch=command.base_branch), command
    elif isinstance(command, LINEAGE_COMMANDS):  # a clone or a fork of another task
        command, linked = lineage.creation(command), command
    else:
        linked = None
    if isinstance(command, CreateTask):
        if state is not None:
            workflow = get_workflow(state.workflow)
            allowed = allowed_commands(workflow, state.phase, state.status)
            raise CommandRejected(command.name, state.phase, state.status, allowed)
        if linked is None and command.workflow == "item":
            raise InvalidCommand("the item workflow is for a project's child tasks, which the "
                                 "project creates from its backlog; create a task or a project")
        draft = Draft(task_id, 0, ctx)
        _create(command, draft)
        if isinstance(linked, CreateChildTask):
            children.link(linked, draft)
        elif linked is not None:
            lineage.derive(linked, draft)
        return draft.events
    if state is None:
        raise TaskNotFound(task_id, command.name)
    if state.id != task_id:
        raise ValueError(f"state of task {state.id} given for task {task_id}")
    try:
        handler = _DECIDERS[type(command)]
    except KeyError:
        raise TypeError(f"not a task command: {command!r}") from None
    draft = Draft(task_id, state.version, ctx)
    handler(state, command, draft)
    memory.remember(state, draft)
    return draft.events


def _create(command: CreateTask, draft: Draft) -> None:
    title = text(command.title, "title", required=True).strip()
    if len(title) > TITLE_MAX_LENGTH:
        raise InvalidCommand(
            f"title is {len(title)} characters long; the limit is {TITLE_MAX_LENGTH}"
        )
    if "\n" in title or "\r" in title:
        raise InvalidCommand("title must be a single line")
    description = text(command.description, "description")
    if command.repo is not None:
        text(command.repo, "repo", required=True)
        refuse_credentials(command.repo, "repo")
    base_branch = None
    if command.base_branch is not None:
        if command.repo is None:
            raise InvalidCommand("base_branch needs a repo: it names a branch of the repository")
        base_branch = workspaces.branch_name(command.base_branch, "base_branch")
    try:
        workflow = get_workflow(text(command.workflow, "workflow"))
    except UnknownWorkflow as e:
        raise InvalidCommand(str(e)) from e
    draft.add(
        TaskCreated,
        title=title,
        description=description,
        workflow=workflow.name,
        repo=command.repo,
        phase=workflow.first,
        base_branch=base_branch,
    )


def _move(state: TaskState, command: Command) -> Position:
    """Where ``command`` takes the task; ``CommandRejected`` if its position does not allow it."""
    workflow = get_workflow(state.workflow)
    return destination(
        workflow, state.phase, state.status, command.name, paused_from=state.paused_from
    )


def _advance(state: TaskState, target: Position, draft: Draft) -> None:
    """Leave the current phase for ``target``: the next phase, or the end of the task."""
    if target.status is Status.completed:
        draft.add(TaskCompleted)
    else:
        draft.add(PhaseEntered, phase=target.phase, previous=state.phase)


def _start(state: TaskState, command: StartTask, draft: Draft) -> None:
    _move(state, command)
    draft.add(TaskStarted)


def _update_spec(state: TaskState, command: UpdateSpec, draft: Draft) -> None:
    description = text(command.description, "description")
    _move(state, command)
    # Saving an unchanged spec is a no-op, not a fact worth a line in the audit trail.
    if description != state.description:
        draft.add(SpecUpdated, description=description)


def _request_approval(state: TaskState, command: RequestApproval, draft: Draft) -> None:
    summary = text(command.summary, "summary")
    _move(state, command)
    draft.add(ApprovalRequested, phase=state.phase, summary=summary)


def _approve(state: TaskState, command: Approve, draft: Draft) -> None:
    comment = text(command.comment, "comment")
    target = _move(state, command)
    draft.add(PhaseApproved, phase=state.phase, comment=comment)
    backlog.approve_at_gate(state, draft)
    _advance(state, target, draft)


def _request_changes(state: TaskState, command: RequestChanges, draft: Draft) -> None:
    # Sending work back without saying what to change gives the agent nothing to act on.
    feedback = text(command.feedback, "feedback", required=True)
    _move(state, command)
    draft.add(ChangesRequested, phase=state.phase, feedback=feedback)


def _complete_phase(state: TaskState, command: CompletePhase, draft: Draft) -> None:
    target = _move(state, command)
    draft.add(PhaseCompleted, phase=state.phase)
    _advance(state, target, draft)


def _pause(state: TaskState, command: Pause, draft: Draft) -> None:
    reason = text(command.reason, "reason")
    _move(state, command)
    draft.add(TaskPaused, reason=reason, paused_from=state.status.value)


def _resume(state: TaskState, command: Resume, draft: Draft) -> None:
    target = _move(state, command)
    draft.add(TaskResumed, status=target.status.value)


def _cancel(state: TaskState, command: Cancel, draft: Draft) -> None:
    reason = text(command.reason, "reason")
    _move(state, command)
    draft.add(TaskCancelled, reason=reason)
    job_reason = f"the task was cancelled: {reason}" if reason else "the task was cancelled"
    queue.cancel_unfinished_jobs(state, draft, job_reason)


def _fail(state: TaskState, command: Fail, draft: Draft) -> None:
    # A failed task waits for a person, who needs to know why.
    reason = text(command.reason, "reason", required=True)
    _move(state, command)
    draft.add(TaskFailed, reason=reason)


def _retry(state: TaskState, command: Retry, draft: Draft) -> None:
    _move(state, command)
    draft.add(TaskRetried)


_DECIDERS: dict[type[Command], Callable[[TaskState, Any, Draft], None]] = {
    StartTask: _start,
    UpdateSpec: _update_spec,
    RequestApproval: _request_approval,
    Approve: _approve,
    RequestChanges: _request_changes,
    CompletePhase: _complete_phase,
    Pause: _pause,
    Resume: _resume,
    Cancel: _cancel,
    Fail: _fail,
    Retry: _retry,
    **queue.DECIDERS,
    **workspaces.DECIDERS,
    **agents.DECIDERS,
    **sync.DECIDERS,
    **backlog.DECIDERS,
    **children.DECIDERS,
    **archive.DECIDERS,
}


# -- evolve --------------------------------------------------------------------------------------


def evolve(state: TaskState | None, event: TaskEvent) -> TaskState:
    """The state after ``event``; ``state`` is ``None`` only before ``TaskCreated``.

    Raises ``ValueError`` when the event does not follow the state (another task's event, a gap
    or repeat in versions, a second ``TaskCreated``): the stream is broken, not the command.
    """
    if isinstance(event, TaskCreated):
        if state is not None:
            raise ValueError(f"task {state.id} already exists; cannot apply {event!r}")
        return _created(event)
    if state is None:
        raise ValueError(f"{type(event).__name__} before TaskCreated")
    if event.originator_id != state.id:
        raise ValueError(f"event of task {event.originator_id} applied to task {state.id}")
    if event.originator_version != state.version + 1:
        raise ValueError(
            f"task {state.id} is at version {state.version}; "
            f"cannot apply version {event.originator_version}"
        )
    return changed(state, {**_changes(event, state), "version": event.originator_version,
                               "updated_at": event.timestamp})


def fold(events: Iterable[TaskEvent], state: TaskState | None = None) -> TaskState | None:
    """``evolve`` over ``events`` in order, from ``state`` (a snapshot) or from nothing."""
    for event in events:
        state = evolve(state, event)
    return state


def _created(event: TaskCreated) -> TaskState:
    return TaskState(
        id=event.originator_id,
        version=event.originator_version,
        title=event.title,
        description=event.description,
        workflow=event.workflow,
        repo=event.repo,
        base_branch=event.base_branch,
        phase=event.phase,
        status=Status.pending,
        paused_from=None,
        created_at=event.timestamp,
        updated_at=event.timestamp,
        created_by=event.actor,
        phase_history=(PhaseVisit(event.phase, event.timestamp),),
    )


# Each fold returns only the fields the event changes; evolve adds version and updated_at.
@singledispatch
def _changes(event: TaskEvent, state: TaskState) -> dict[str, Any]:
    raise TypeError(f"no fold for {type(event).__name__}")


@_changes.register
def _started(event: TaskStarted, state: TaskState) -> dict[str, Any]:
    return {"status": Status.running}


@_changes.register
def _spec_updated(event: SpecUpdated, state: TaskState) -> dict[str, Any]:
    return {"description": event.description, **backlog.spec_updated(state)}


@_changes.register
def _approval_requested(event: ApprovalRequested, state: TaskState) -> dict[str, Any]:
    return {"status": Status.waiting}


@_changes.register
def _phase_approved(event: PhaseApproved, state: TaskState) -> dict[str, Any]:
    # The approval answers every change request of the phase; the next event moves the task on.
    approval = Approval(event.phase, event.actor, event.comment, event.timestamp)
    return {
        "approvals": (*state.approvals, approval),
        "feedback": tuple(f for f in state.feedback if f.phase != event.phase),
    }


@_changes.register
def _changes_requested(event: ChangesRequested, state: TaskState) -> dict[str, Any]:
    request = ChangeRequest(event.phase, event.actor, event.feedback, event.timestamp)
    return {"status": Status.running, "feedback": (*state.feedback, request)}


@_changes.register
def _phase_completed(event: PhaseCompleted, state: TaskState) -> dict[str, Any]:
    return {}  # a record for the audit trail; the next event moves the task on


@_changes.register
def _phase_entered(event: PhaseEntered, state: TaskState) -> dict[str, Any]:
    return {
        "phase": event.phase,
        "status": Status.running,
        "phase_history": (*state.phase_history, PhaseVisit(event.phase, event.timestamp)),
    }


@_changes.register
def _paused(event: TaskPaused, state: TaskState) -> dict[str, Any]:
    return {"status": Status.paused, "paused_from": Status(event.paused_from)}


@_changes.register
def _resumed(event: TaskResumed, state: TaskState) -> dict[str, Any]:
    return {"status": Status(event.status), "paused_from": None, "budget_paused": False}


@_changes.register
def _failed(event: TaskFailed, state: TaskState) -> dict[str, Any]:
    return {"status": Status.failed, "failure": event.reason}


@_changes.register
def _retried(event: TaskRetried, state: TaskState) -> dict[str, Any]:
    # Back at work, it is no longer a finished task: out of the archive (archive.py).
    return {"status": Status.running, "failure": None, "archived": False}


@_changes.register
def _cancelled(event: TaskCancelled, state: TaskState) -> dict[str, Any]:
    return {"status": Status.cancelled, "paused_from": None}


@_changes.register
def _completed(event: TaskCompleted, state: TaskState) -> dict[str, Any]:
    final = get_workflow(state.workflow).final
    return {
        "phase": final,
        "status": Status.completed,
        "phase_history": (*state.phase_history, PhaseVisit(final, event.timestamp)),
    }


for _event_type, _fold in (
    *queue.FOLDS.items(), *workspaces.FOLDS.items(), *agents.FOLDS.items(),
    *sync.FOLDS.items(), *backlog.FOLDS.items(), *children.FOLDS.items(),
    *memory.FOLDS.items(), *archive.FOLDS.items(), *lineage.FOLDS.items(),
):
    _changes.register(_event_type, _fold)
