"""What every decision shares: the draft that numbers and stamps its events, and input checks.

``task.decide`` opens a ``Draft`` per command and hands it to the command's handler (in
``task.py``, ``queue.py`` or ``workspaces.py``), which adds the events the command causes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from .commands import Command, Context
from .errors import InvalidCommand, JobRejected
from .events import TaskEvent
from .workflows import allowed_commands, get_workflow

if TYPE_CHECKING:
    from .state import TaskState


@dataclass
class Draft:
    """Collects the events of one decision, numbering and stamping them as they come."""

    task_id: UUID
    version: int
    ctx: Context
    events: list[TaskEvent] = field(default_factory=list)

    def add(self, event_type: type[TaskEvent], **fields: Any) -> None:
        self.version += 1
        self.events.append(
            event_type(
                originator_id=self.task_id,
                originator_version=self.version,
                timestamp=self.ctx.now,
                actor=self.ctx.actor,
                correlation_id=self.ctx.correlation_id,
                causation_id=self.ctx.causation_id,
                **fields,
            )
        )


def text(value: object, what: str, *, required: bool = False) -> str:
    """``value`` as a str, refusing other types and, when ``required``, blank ones."""
    if not isinstance(value, str):
        raise InvalidCommand(f"{what} must be text, got {type(value).__name__}")
    if required and not value.strip():
        raise InvalidCommand(f"{what} must not be blank")
    return value


def identifier(value: object, what: str) -> str:
    """An id given by the caller (a job, a workspace): trimmed, one line, not blank."""
    value = text(value, what, required=True).strip()
    if "\n" in value or "\r" in value:
        raise InvalidCommand(f"{what} must be a single line")
    return value


def identifiers(values: object, what: str) -> tuple[str, ...]:
    """A list of ids, each checked by ``identifier``, without repeats, in the order given."""
    # A bare string is a sequence too, of letters: refuse it rather than split it.
    if not isinstance(values, list | tuple):
        raise InvalidCommand(f"{what} must be a list of names, got {type(values).__name__}")
    return tuple(dict.fromkeys(identifier(value, f"{what} item") for value in values))


def whole(value: object, what: str, *, minimum: int | None = None) -> int:
    """``value`` as an int (a bool is not one), at least ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidCommand(f"{what} must be a whole number, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise InvalidCommand(f"{what} must be at least {minimum}, got {value}")
    return value


def number(value: object, what: str) -> float:
    """``value`` as a finite float (an int is welcome, a bool is not)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise InvalidCommand(f"{what} must be a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise InvalidCommand(f"{what} must be finite, got {value}")
    return float(value)


def json_object(value: object, what: str) -> dict[str, Any]:
    """A copy of ``value`` that is plain JSON: a dict with text keys, tuples turned into lists.

    Events are stored as JSON; anything else would come back different from what was decided.
    """
    if not isinstance(value, dict):
        raise InvalidCommand(f"{what} must be a JSON object, got {type(value).__name__}")
    return _json(value, what)


def _json(value: Any, where: str) -> Any:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidCommand(f"{where} must be finite, got {value}")
        return value
    if isinstance(value, list | tuple):
        return [_json(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise InvalidCommand(f"{where} has a key that is not text: {key!r}")
        return {key: _json(item, f"{where}.{key}") for key, item in value.items()}
    raise InvalidCommand(f"{where} is not JSON: {type(value).__name__}")


def rejection(state: TaskState, command: Command, problem: str) -> JobRejected:
    """The refusal of a job or workspace ``command`` on ``state``, saying ``problem``."""
    allowed = allowed_commands(get_workflow(state.workflow), state.phase, state.status)
    return JobRejected(command.name, problem, state.phase, state.status, allowed)
