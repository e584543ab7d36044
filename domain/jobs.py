"""Questions about a task's job queue, answered from its state alone: what may start, what waits.

Each function reads a ``TaskState`` (and, where the answer depends on it, a time passed in) and
returns values; nothing here decides or records. The pod's scheduler asks them to choose its next
move; ``queue.py`` asks some of them to refuse what they rule out.

**Retries.** A failed attempt waits ``backoff_delay(attempt, jitter)`` seconds before the next one:
exponential (``base · 2^(attempt-1)``, capped at ``cap``) with *equal jitter*: half the delay is
fixed and half is scaled by ``jitter`` in [0, 1), so retries of many jobs spread out but none
comes back sooner than half its delay. With the defaults (1 s, capped at 300 s) attempt 1 waits
0.5–1 s, attempt 4 waits 4–8 s, and from attempt 10 on 150–300 s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from .state import Job, JobStatus, TaskState
from .workflows import Status, get_workflow

BACKOFF_BASE = 1.0
"""The delay before the second attempt, in seconds, before jitter."""

BACKOFF_CAP = 300.0
"""The longest delay between two attempts, in seconds, before jitter."""

# Past this exponent the cap has long been reached; it keeps 2.0 ** n a finite float.
_MAX_EXPONENT = 64


@dataclass(frozen=True)
class BlockedJob:
    """A job that cannot run until a person acts: ``blocked_by`` names the dependencies in the way
    (dead-lettered, cancelled, or blocked themselves)."""

    job: Job
    blocked_by: tuple[str, ...]


def backoff_delay(
    attempt: int, jitter: float, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP
) -> float:
    """Seconds to wait after failed attempt ``attempt`` (from 1): equal jitter on a capped
    exponential, ``d/2 + jitter·d/2`` with ``d = min(cap, base·2^(attempt-1))``.

    ``jitter`` must be in [0, 1); the caller draws it, so the answer is the same on every replay.
    """
    if attempt < 1:
        raise ValueError(f"attempt must be at least 1, got {attempt}")
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter}")
    delay = min(cap, base * 2.0 ** min(attempt - 1, _MAX_EXPONENT))
    return delay / 2 + jitter * delay / 2


def ready_jobs(state: TaskState, now: datetime) -> list[Job]:
    """The jobs that ``start_job`` would accept at ``now``, the one to start first first.

    A job is ready when the task is running, the job belongs to the current phase, it is pending
    (or failed and its ``retry_at`` has come) and every job it depends on has succeeded. Higher
    ``priority`` comes first; within a priority, the job queued first.
    """
    if state.status is not Status.running:
        return []
    ready = [
        job
        for job in state.jobs.values()
        if job.phase == state.phase and is_due(job, now) and not waiting_for(state, job)
    ]
    return sorted(ready, key=lambda job: (-job.priority, job.queued_seq))


def is_due(job: Job, now: datetime) -> bool:
    """True when the job's own status lets it start at ``now``: pending (not waiting for an
    answer, nor until a rate limit's ``retry_at``), or failed and its retry is due."""
    if job.awaiting is not None:
        return False
    if job.status is JobStatus.pending:
        return job.retry_at is None or job.retry_at <= now
    return job.status is JobStatus.failed and job.retry_at is not None and job.retry_at <= now


def waiting_for(state: TaskState, job: Job) -> list[Job]:
    """The jobs that ``job`` depends on and that have not finished (succeeded or been
    skipped) yet, in its order."""
    return [
        state.jobs[dependency]
        for dependency in job.depends_on
        if not state.jobs[dependency].status.finished
    ]


def next_retry_at(state: TaskState) -> datetime | None:
    """The earliest time a failed (or rate-limited) job may try again; ``None`` when no job
    waits to retry."""
    due = [
        job.retry_at
        for job in state.jobs.values()
        if job.status in (JobStatus.failed, JobStatus.pending)
        and job.retry_at is not None
        and job.awaiting is None
    ]
    return min(due, default=None)


def perpetual_due(state: TaskState, interval: float) -> datetime | None:
    """When the next round of an open-ended final phase (``project``'s ``perpetual``) is due:
    ``interval`` seconds after its last job ended, once every job of the phase has ended
    (succeeded, skipped or cancelled) while the task runs. ``None`` otherwise: not in such a
    phase, a job of it still to run or waiting for a person, or no job yet (its first round is
    queued when the task enters the phase)."""
    workflow = get_workflow(state.workflow)
    if not workflow.open_ended or state.phase != workflow.final:
        return None
    if state.status is not Status.running:
        return None
    jobs = [job for job in state.jobs.values() if job.phase == state.phase]
    ended = (JobStatus.succeeded, JobStatus.skipped, JobStatus.cancelled)
    if not jobs or any(job.status not in ended or job.finished_at is None for job in jobs):
        return None
    return max(job.finished_at for job in jobs if job.finished_at) + timedelta(seconds=interval)


def running_jobs(state: TaskState) -> list[Job]:
    """The jobs with an attempt in flight, in queue order."""
    return [job for job in state.jobs.values() if job.status is JobStatus.running]


def timed_out_jobs(state: TaskState, now: datetime) -> list[Job]:
    """The running jobs whose attempt has passed its ``timeout_seconds`` at ``now``."""
    return [
        job
        for job in running_jobs(state)
        if job.deadline is not None and job.deadline <= now
    ]


def blocked_jobs(state: TaskState) -> list[BlockedJob]:
    """The jobs that wait for a dependency that cannot succeed without a person, in queue order.

    A dependency is in the way when it is dead-lettered or held (until someone runs
    ``retry_job``), cancelled (for good), or itself blocked.
    """
    blocked: dict[str, BlockedJob] = {}
    # A job can only depend on jobs queued before it, so one pass in queue order sees every
    # dependency's fate before the jobs that wait for it.
    for job in state.jobs.values():
        if job.status not in (JobStatus.pending, JobStatus.failed):
            continue
        in_the_way = tuple(
            dependency
            for dependency in job.depends_on
            if dependency in blocked
            or state.jobs[dependency].status
            in (JobStatus.dead, JobStatus.held, JobStatus.cancelled)
        )
        if in_the_way:
            blocked[job.job_id] = BlockedJob(job, in_the_way)
    return list(blocked.values())


def phase_jobs_done(state: TaskState) -> bool:
    """True when the work of the current phase is done, so its approval (or its end) may follow.

    That is: the phase has jobs that were not cancelled, all of them finished (succeeded, or
    skipped by a person), and, if a person
    has requested changes to this phase (not yet answered by an approval), at least one of them
    was queued since the latest request: the work done before it is what they sent back.
    Cancelled jobs do not count either way; a dead-lettered or held one keeps the phase open.
    """
    jobs = [
        job
        for job in state.jobs.values()
        if job.phase == state.phase and job.status is not JobStatus.cancelled
    ]
    if not jobs or any(not job.status.finished for job in jobs):
        return False
    requests = [request.at for request in state.feedback if request.phase == state.phase]
    return not requests or any(job.queued_at >= max(requests) for job in jobs)


def dependency_cycle(graph: Mapping[str, Iterable[str]]) -> list[str] | None:
    """A cycle in ``graph`` (job id → the ids it depends on), as a path that ends where it
    starts (``["a", "b", "a"]``); ``None`` when there is none. Ids without an entry are leaves.
    """
    done: set[str] = set()
    for root in graph:
        if root in done:
            continue
        # Depth-first, without recursion: a path of (node, its unvisited dependencies).
        path: list[str] = [root]
        on_path = {root}
        pending = [iter(graph.get(root, ()))]
        while pending:
            dependency = next(pending[-1], None)
            if dependency is None:
                finished = path.pop()
                on_path.remove(finished)
                done.add(finished)
                pending.pop()
                continue
            if dependency in on_path:
                return [*path[path.index(dependency) :], dependency]
            if dependency in done:
                continue
            path.append(dependency)
            on_path.add(dependency)
            pending.append(iter(graph.get(dependency, ())))
    return None
