"""What the job queue tests share: a task at a fixed time, and commands decided and folded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from ipa.domain import (
    Command,
    Context,
    CreateTask,
    FailJob,
    Job,
    QueueJob,
    StartJob,
    StartTask,
    TaskEvent,
    TaskState,
    decide,
    fold,
)

TASK_ID = UUID(int=1)
START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return START + timedelta(seconds=seconds)


def context(now: datetime = START) -> Context:
    return Context(actor="system", now=now, correlation_id="req", causation_id=None)


def run(state: TaskState | None, *commands: Command, now: datetime = START) -> TaskState:
    """Decide and fold each command in turn, all at ``now``."""
    for command in commands:
        state = fold(decide(state, command, context(now), TASK_ID), state)
    assert state is not None
    return state


def created() -> TaskState:
    return run(None, CreateTask("Add rate limiting", "to the login endpoint"))


def running(*jobs: QueueJob) -> TaskState:
    return run(created(), StartTask(), *jobs)


def ids(jobs: list[Job]) -> list[str]:
    return [job.job_id for job in jobs]


def types(events: list[TaskEvent]) -> list[str]:
    return [type(event).__name__ for event in events]


def started(job_id: str = "a", **queue: object) -> TaskState:
    """A running task whose only job ``job_id`` runs its first attempt as ``run-1``."""
    return run(running(QueueJob(job_id, "spec_writer", **queue)), StartJob(job_id, "run-1"))


def fail(state: TaskState, job_id: str, run_id: str, jitter: float = 0.0) -> list[TaskEvent]:
    return decide(state, FailJob(job_id, run_id, "exit 1", jitter=jitter), context(), TASK_ID)


