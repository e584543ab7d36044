"""The commands that make a task from another one (see ``lineage.py``): each is the first
command of the new task's stream, as ``create_task`` is."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from .commands import Command

if TYPE_CHECKING:
    from .state import TaskState


@dataclass(frozen=True)
class CloneTask(Command):
    """Create a task with the description and settings of ``source`` (a task's current
    state), none of its history; ``title``: the new task's (default: the source's)."""

    name: ClassVar[str] = "clone"

    source: TaskState
    title: str | None = None


@dataclass(frozen=True)
class ForkTask(Command):
    """Create a task that goes on from ``source`` (a task's state at a past version);
    ``branch``: the new task's branch, made at the commit the source's branch had then
    (needed when it had one); ``title``: the new task's (default: the source's)."""

    name: ClassVar[str] = "fork"

    source: TaskState
    branch: str | None = None
    title: str | None = None


LINEAGE_COMMANDS: tuple[type[Command], ...] = (CloneTask, ForkTask)
"""The commands that create a task from another one."""
