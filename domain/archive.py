"""Archiving: a person puts a finished task away, or takes it back.

``archive`` is accepted once the task has finished (``completed``, ``failed`` or
``cancelled``) and records ``TaskArchived``; ``unarchive`` records ``TaskUnarchived``. Neither
is a workflow move: the phase and status stay, every event stays in the stream (and in the
audit), and only the task's ``archived`` flag changes, which takes it out of the default task
list. Archiving an archived task, or unarchiving one that is not, records nothing. A failed
task that is retried is no longer finished: its ``TaskRetried`` takes it out of the archive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .archive_commands import Archive, Unarchive
from .commands import Command
from .decision import Draft, rejection
from .events import TaskEvent
from .workflows import Status

if TYPE_CHECKING:
    from .state import TaskState

FINISHED = (Status.completed, Status.failed, Status.cancelled)
"""The statuses of a task that can be archived."""


class TaskArchived(TaskEvent):
    """A person archived the finished task: it leaves the default task list."""


class TaskUnarchived(TaskEvent):
    """A person took the task out of the archive."""


def _archive(state: TaskState, command: Archive, draft: Draft) -> None:
    if state.status not in FINISHED:
        raise rejection(state, command, f"the task is {state.status.value}; only a finished "
                                        "task (completed, failed or cancelled) is archived")
    if not state.archived:
        draft.add(TaskArchived)


def _unarchive(state: TaskState, command: Unarchive, draft: Draft) -> None:
    if state.archived:
        draft.add(TaskUnarchived)


DECIDERS: dict[type[Command], Callable[[TaskState, Any, Draft], None]] = {
    Archive: _archive,
    Unarchive: _unarchive,
}
"""The handler of each command, for ``task.decide``."""


def _archived(event: TaskArchived, state: TaskState) -> dict[str, Any]:
    return {"archived": True}


def _unarchived(event: TaskUnarchived, state: TaskState) -> dict[str, Any]:
    return {"archived": False}


FOLDS: dict[type[TaskEvent], Callable[[Any, TaskState], dict[str, Any]]] = {
    TaskArchived: _archived,
    TaskUnarchived: _unarchived,
}
"""The fold of each event, for ``task.evolve``."""
