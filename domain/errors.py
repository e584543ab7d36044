"""The domain's error family: every refusal a decision can give, named for its condition.

Each one reaches the caller of a command (commands fail loudly; see STYLE.md, "Domain"). Only
``ui/`` turns them into HTTP statuses, so each carries the facts that table needs as attributes,
not only inside its message.

Programming errors (a naive timestamp in a ``Context``, an event applied to the wrong stream) are
not domain errors: they raise ``ValueError`` or ``TypeError`` and should never reach a user.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING
from uuid import UUID

if TYPE_CHECKING:
    from .workflows import Status


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""


class InvalidCommand(DomainError):
    """The command itself is malformed (a blank title, an unknown workflow), whatever the state."""


class UnknownWorkflow(DomainError):
    """No workflow has this name; ``known`` lists the names that exist."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known = tuple(sorted(known))
        super().__init__(f"unknown workflow {name!r}; known: {', '.join(self.known)}")


class TaskNotFound(DomainError):
    """A command other than ``create_task`` was sent to a task that has no events yet."""

    def __init__(self, task_id: UUID, command: str) -> None:
        self.task_id = task_id
        self.command = command
        super().__init__(f"cannot {command}: task {task_id} does not exist")


class CommandRejected(DomainError):
    """The command is well formed but not allowed in the task's current phase and status.

    ``allowed`` holds the commands that would be accepted there, so a caller can say what to do
    instead: "cannot approve: task is running in phase planning; allowed: cancel, fail, ...".
    """

    def __init__(self, command: str, phase: str, status: Status, allowed: Iterable[str]) -> None:
        self.command = command
        self.phase = phase
        self.status = status
        self.allowed = tuple(allowed)
        listed = ", ".join(self.allowed) or "none"
        super().__init__(
            f"cannot {command}: task is {status.value} in phase {phase}; allowed: {listed}"
        )


class JobRejected(CommandRejected):
    """A queue command (or a workspace record) that the job's state or the task's status refuses.

    ``problem`` says what is wrong in the words of the queue ("job 'x' is not ready: waiting for
    'lint' (pending)"); ``allowed`` holds the workflow commands of the task's position, as for
    every ``CommandRejected``, because job commands are not workflow moves (see ``queue.py``).
    """

    def __init__(
        self, command: str, problem: str, phase: str, status: Status, allowed: Iterable[str]
    ) -> None:
        # Skips CommandRejected's message on purpose: the problem is the job's, not the phase's.
        DomainError.__init__(self, f"cannot {command}: {problem}")
        self.command = command
        self.problem = problem
        self.phase = phase
        self.status = status
        self.allowed = tuple(allowed)


class JobNotFound(InvalidCommand):
    """A command names a job the task does not have."""

    def __init__(self, command: str, job_id: str) -> None:
        self.command = command
        self.job_id = job_id
        super().__init__(f"cannot {command}: the task has no job {job_id!r}")


class CredentialsInUrl(InvalidCommand):
    """A URL given to a task holds credentials (``https://user:token@host/...``); ipa never
    stores them. ``field`` names where it was given (``repo``, ``git.remote``)."""

    def __init__(self, field: str, url: str, what: str) -> None:
        self.field = field
        self.what = what
        super().__init__(
            f"{field} holds credentials ({what}); ipa never stores them in a task. Give the "
            f"URL without them ({url}) and put the token in the secrets file (IPA_SECRETS_FILE, "
            "e.g. IPA_GITHUB_TOKEN=...) or the environment of `ipa serve`; for ssh, use a key"
        )
