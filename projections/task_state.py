"""The pod state projection: a task's events folded into a JSON-able view.

The same code serves the live state of a pod (fold each new event as it is appended) and a
replay at any version (fold the events up to it, or start from a snapshot): both call
:func:`apply`, which is the domain's own ``evolve``, and render with :func:`view`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ipa.domain import (
    Attention,
    TaskEvent,
    TaskState,
    allowed_commands,
    attention,
    evolve,
    fold,
    get_workflow,
)


def apply(state: TaskState | None, event: TaskEvent) -> TaskState:
    """Fold one event into the state (the first event creates it)."""
    return evolve(state, event)


def replay(events: Iterable[TaskEvent], state: TaskState | None = None) -> TaskState | None:
    """Fold ``events`` in order, from ``state`` (a snapshot) or from nothing."""
    return fold(events, state)


def view(state: TaskState, *, crashed: Attention | None = None) -> dict[str, Any]:
    """The task as the pages, the API and ``ipa replay --json`` show it.

    ``attention`` says what a person must do (``ipa.domain.attention``), or is ``None``;
    ``crashed`` is what the supervisor knows beyond the state (its pod crashed and stopped)
    and wins over what the state says.
    """
    needed = crashed or attention(state)
    return {
        **state.to_dict(),
        "allowed_commands": allowed_commands(
            get_workflow(state.workflow), state.phase, state.status
        ),
        "attention": None if needed is None else needed.to_dict(),
    }


def diff(before: dict[str, Any] | None, after: dict[str, Any]) -> dict[str, Any]:
    """The top-level fields of ``after`` that differ from ``before`` (for time travel)."""
    if before is None:
        return dict(after)
    return {key: value for key, value in after.items() if before.get(key) != value}
