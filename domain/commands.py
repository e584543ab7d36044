"""The commands a task accepts: imperative requests that ``task.decide`` turns into events.

A command is plain, frozen data. Each class names itself once, in ``name``: that string is the
trigger of the workflow machines (``workflows.py`` builds its tables from these attributes) and the
word used in error messages ("cannot approve: ..."). Input is checked by ``decide``, not here, so
a malformed command can still be built, logged and refused with an ``InvalidCommand``.

``Context`` carries what a decision needs from outside the domain: who asks, the current time and
the ids that tie the resulting events to the request that caused them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar


@dataclass(frozen=True)
class Context:
    """Who is asking, when, and on behalf of which request.

    ``now`` must be timezone-aware UTC: it becomes the timestamp of every event the command
    produces, and a naive time would be read differently by every reader.
    """

    actor: str
    now: datetime
    correlation_id: str
    causation_id: str | None = None

    def __post_init__(self) -> None:
        # These are programming errors of the caller, not bad user input: ValueError, not a
        # DomainError, so they never turn into a polite 4xx.
        if not self.actor.strip():
            raise ValueError("Context.actor must not be blank")
        if not self.correlation_id.strip():
            raise ValueError("Context.correlation_id must not be blank")
        if self.now.tzinfo is None or self.now.utcoffset() != timedelta(0):
            raise ValueError(f"Context.now must be timezone-aware UTC, got {self.now!r}")


@dataclass(frozen=True)
class Command:
    """Base of every task command; ``name`` is the command's word in triggers and errors."""

    name: ClassVar[str]


@dataclass(frozen=True)
class CreateTask(Command):
    """Submit a new task (or project) that will run through ``workflow``."""

    name: ClassVar[str] = "create_task"

    title: str
    description: str
    workflow: str = "task"
    repo: str | None = None


@dataclass(frozen=True)
class StartTask(Command):
    """Begin work on a pending task in its first phase."""

    name: ClassVar[str] = "start"


@dataclass(frozen=True)
class UpdateSpec(Command):
    """Replace the task's description (its spec, or a project's PRD)."""

    name: ClassVar[str] = "update_spec"

    description: str


@dataclass(frozen=True)
class RequestApproval(Command):
    """Put the current gated phase's work in front of a person; ``summary`` says what was done."""

    name: ClassVar[str] = "request_approval"

    summary: str = ""


@dataclass(frozen=True)
class Approve(Command):
    """Accept the phase waiting at its gate and move on."""

    name: ClassVar[str] = "approve"

    comment: str = ""


@dataclass(frozen=True)
class RequestChanges(Command):
    """Send the phase waiting at its gate back for more work; ``feedback`` says what to change."""

    name: ClassVar[str] = "request_changes"

    feedback: str


@dataclass(frozen=True)
class CompletePhase(Command):
    """Finish the current phase that has no gate and move on."""

    name: ClassVar[str] = "complete_phase"


@dataclass(frozen=True)
class Pause(Command):
    """Stop new work for now; ``resume`` brings the task back to where it was."""

    name: ClassVar[str] = "pause"

    reason: str = ""


@dataclass(frozen=True)
class Resume(Command):
    """Return a paused task to the status it was paused from."""

    name: ClassVar[str] = "resume"


@dataclass(frozen=True)
class Cancel(Command):
    """Stop the task for good."""

    name: ClassVar[str] = "cancel"

    reason: str = ""


@dataclass(frozen=True)
class Fail(Command):
    """Record that the task cannot go on without a person; ``reason`` says why."""

    name: ClassVar[str] = "fail"

    reason: str


@dataclass(frozen=True)
class Retry(Command):
    """Send a failed task back to work in the phase where it failed."""

    name: ClassVar[str] = "retry"


TASK_COMMANDS: tuple[type[Command], ...] = (
    CreateTask,
    StartTask,
    UpdateSpec,
    RequestApproval,
    Approve,
    RequestChanges,
    CompletePhase,
    Pause,
    Resume,
    Cancel,
    Fail,
    Retry,
)
"""Every command class, in the order a task usually meets them."""
