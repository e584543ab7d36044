"""Building task events for store tests, through the real domain."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from uuid import UUID

from ipa.domain import Context, CreateTask, Pause, Resume, StartTask, TaskEvent, decide, fold
from ipa.eventstore import AuditKey

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)

# The audit key of the tests' stores (and, as IPA_AUDIT_KEY, of the ``ipa`` processes they run).
AUDIT_KEY_TEXT = "ipa-tests-audit-key-00000000000000000000000000000000"
AUDIT_KEY = AuditKey.from_text(AUDIT_KEY_TEXT, "the tests")


def ctx(step: int = 0, actor: str = "user:alice") -> Context:
    return Context(actor=actor, now=T0 + timedelta(seconds=step), correlation_id=f"req-{step}")


def task_history(n: int, task_id: UUID | None = None) -> tuple[UUID, list[TaskEvent]]:
    """A legal history of ``n`` events: created, started, then pause/resume alternating."""
    task_id = task_id or uuid.uuid4()
    create = CreateTask(title="t", description="d")
    events: list[TaskEvent] = list(decide(None, create, ctx(), task_id))
    state = fold(events)
    step = 1
    while len(events) < n:
        if step == 1:
            command = StartTask()
        else:
            command = Pause(reason=f"p{step}") if step % 2 == 0 else Resume()
        new = decide(state, command, ctx(step), task_id)
        events.extend(new)
        state = fold(new, state)
        step += 1
    return task_id, events[:n]
