"""Snapshots of a task's state: the fold of its events up to a version, stored beside them.

A snapshot is a library ``DomainEvent`` in its own table (``snapshots``), keyed by task id and
the version it was taken at; loading at version N starts from the newest snapshot at or below N
and folds the events after it. Snapshots are a cache: losing one only makes a load slower, and
``ipa audit verify`` checks each against the events it summarises.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from eventsourcing.domain import DomainEvent

from ipa.domain import TaskState, evolve

from .errors import CorruptEvent


class TaskSnapshot(DomainEvent):
    """The state of a task (``TaskState.to_dict()``) at ``originator_version``."""

    state: dict[str, Any]


def project_task(state: TaskState | None, events: Iterable[DomainEvent]) -> TaskState | None:
    """Fold a snapshot (if first) and events into a task's state: the projector the library's
    repository calls for current and historical loads.

    A history the domain cannot fold (a missing version, an event out of place) is a
    :class:`CorruptEvent` naming the version, not a bare ``ValueError``.
    """
    for event in events:
        if isinstance(event, TaskSnapshot):
            state = TaskState.from_dict(event.state)
            continue
        try:
            state = evolve(state, event)
        except (ValueError, TypeError, KeyError) as e:
            raise CorruptEvent(
                event.originator_id, event.originator_version, f"cannot be replayed: {e}"
            ) from e
    return state
