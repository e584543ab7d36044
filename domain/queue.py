"""The job queue of a task: deciding the job commands, and folding the job events.

Every change to a job is an event in the task's stream. A job is queued for a phase with a
priority, the jobs it depends on, a timeout per attempt and a number of attempts (5 unless
told). It starts when it is ready (``jobs.ready_jobs``); a failed attempt, interrupted or not,
is retried after an exponential backoff with jitter (``jobs.backoff_delay``) until the attempts
run out, and then the job is dead-lettered until a person retries it (``retry_job``).

**A person's interrupt holds the job** (``hold_job``, recorded by the pod for the interrupted
run): the job is ``held`` until a person retries (``retry_job``), skips (``skip_job``) or cancels
it; the interrupted attempt does not count, so interrupts never dead-letter a job. A skipped
job will not run and counts as finished for its phase (``jobs.phase_jobs_done``) and for the
jobs that depend on it.

**When each command is accepted.** Job commands are not workflow moves (they never change the
task's phase or status), so ``allowed_commands`` does not list them; instead:

- ``queue_job``, ``retry_job``, ``cancel_job``, ``skip_job``: while the task is not over (not
  completed or cancelled), whatever its status: work may be lined up while it is pending,
  paused or failed;
- ``start_job``: only while the task is ``running`` (a paused or waiting task starts nothing new)
  and only for a ready job of the current phase;
- ``complete_job``, ``fail_job``, ``hold_job``: for the job's current run, in any task status,
  because a run ends when it ends: one that finishes after a pause is recorded as usual, one
  cut short by a cancel is recorded as an interrupted failure and its job is cancelled, not
  retried. A report of a run whose job was cancelled, held or skipped meanwhile is accepted
  and changes nothing.

Cancelling the task cancels the jobs that are not running (``cancel_unfinished_jobs``); its pod
interrupts the running ones, and they end through ``fail_job``.

**Why dependencies cannot form a cycle.** ``depends_on`` may only name jobs that already exist,
and a job's dependencies never change after it is queued, so every edge points to an older job:
the only cycle possible is a job naming itself, which is refused. ``queue_job`` still runs the
general check (``jobs.dependency_cycle``) so that rule cannot silently break.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from .commands import (
    CancelJob,
    Command,
    CompleteJob,
    FailJob,
    HoldJob,
    QueueJob,
    RecordBranchConflict,
    RetryJob,
    SkipJob,
    StartJob,
)
from .decision import (
    Draft,
    identifier,
    identifiers,
    json_object,
    number,
    rejection,
    text,
    whole,
)
from .errors import InvalidCommand, JobNotFound
from .events import (
    BranchConflicted,
    JobCancelled,
    JobDeadLettered,
    JobFailed,
    JobHeld,
    JobQueued,
    JobRequeued,
    JobSkipped,
    JobStarted,
    JobSucceeded,
    TaskEvent,
)
from .jobs import backoff_delay, dependency_cycle, is_due, waiting_for
from .state import Job, JobStatus, TaskState, changed, json_copy
from .workflows import Status, get_workflow
from .workspaces import advance_branch, conflict_learning

# -- decide --------------------------------------------------------------------------------------


def _job(state: TaskState, command: Command, job_id: object) -> Job:
    job_id = identifier(job_id, "job_id")
    try:
        return state.jobs[job_id]
    except KeyError:
        raise JobNotFound(command.name, job_id) from None


def _task_open(state: TaskState, command: Command) -> None:
    if state.status.terminal:
        raise rejection(state, command, f"the task is {state.status.value}")


def _phase(state: TaskState, phase: object) -> str:
    """The phase a new job is for: one of the workflow's, not over yet, with work to do."""
    workflow = get_workflow(state.workflow)
    if phase is None:
        phase = state.phase
    try:
        named = workflow.phase(text(phase, "phase", required=True)).name
    except ValueError as e:
        raise InvalidCommand(str(e)) from None
    order = [p.name for p in workflow.phases]
    if order.index(named) < order.index(state.phase):
        raise InvalidCommand(f"phase {named} is over; the task is in {state.phase}")
    if workflow.completes_at(named):
        raise InvalidCommand(f"phase {named} ends the task; it has no jobs")
    return named


def _jobs(ids: list[str]) -> str:
    """``job 'a'`` or ``jobs 'a', 'b'``."""
    return ("job " if len(ids) == 1 else "jobs ") + ", ".join(repr(job_id) for job_id in ids)


def queue_job(state: TaskState, command: QueueJob, draft: Draft) -> None:
    """Queue a job as ``queue_job`` does, in another command's decision (a merge job)."""
    _queue(state, command, draft)


def _queue(state: TaskState, command: QueueJob, draft: Draft) -> None:
    job_id = identifier(command.job_id, "job_id")
    agent = identifier(command.agent, "agent")
    priority = whole(command.priority, "priority")
    depends_on = identifiers(command.depends_on, "depends_on")
    timeout = number(command.timeout_seconds, "timeout_seconds")
    if timeout <= 0:
        raise InvalidCommand(f"timeout_seconds must be more than 0, got {command.timeout_seconds}")
    max_attempts = whole(command.max_attempts, "max_attempts", minimum=1)
    spec = json_object(command.spec, "spec")
    if job_id in depends_on:
        raise InvalidCommand(f"job {job_id!r} cannot depend on itself")
    _task_open(state, command)
    phase = _phase(state, command.phase)
    if job_id in state.jobs:
        raise rejection(state, command, f"job {job_id!r} already exists")
    unknown = [dependency for dependency in depends_on if dependency not in state.jobs]
    if unknown:
        raise InvalidCommand(f"job {job_id!r} depends on unknown {_jobs(unknown)}")
    # The new job first, so a cycle through it is named from it.
    graph = {job_id: depends_on, **{job.job_id: job.depends_on for job in state.jobs.values()}}
    cycle = dependency_cycle(graph)
    if cycle is not None:
        raise InvalidCommand(f"jobs {' → '.join(cycle)} form a cycle")
    cancelled = [d for d in depends_on if state.jobs[d].status is JobStatus.cancelled]
    if cancelled:
        problem = f"job {job_id!r} depends on cancelled {_jobs(cancelled)}; it could never run"
        raise rejection(state, command, problem)
    draft.add(
        JobQueued,
        job_id=job_id,
        agent=agent,
        phase=phase,
        priority=priority,
        depends_on=list(depends_on),
        timeout_seconds=timeout,
        max_attempts=max_attempts,
        spec=spec,
    )


def _start(state: TaskState, command: StartJob, draft: Draft) -> None:
    run_id = identifier(command.run_id, "run_id")
    job = _job(state, command, command.job_id)
    name = repr(job.job_id)
    if state.status is not Status.running:
        problem = f"the task is {state.status.value}; jobs start only while it is running"
        raise rejection(state, command, problem)
    problem = {
        JobStatus.running: f"job {name} is already running (run {job.run_id!r})",
        JobStatus.succeeded: f"job {name} already succeeded",
        JobStatus.dead: f"job {name} is dead-lettered; retry_job it first",
        JobStatus.held: f"job {name} is held by a person; retry_job it first",
        JobStatus.skipped: f"job {name} was skipped",
        JobStatus.cancelled: f"job {name} is cancelled",
    }.get(job.status)
    if problem is None and job.awaiting is not None:
        problem = f"job {name} waits for an answer to question {job.awaiting!r}"
    if problem is None and not is_due(job, draft.ctx.now):
        retry_at = "" if job.retry_at is None else job.retry_at.isoformat()
        problem = f"job {name} waits to retry until {retry_at}"
    if problem is None and job.phase != state.phase:
        problem = f"job {name} belongs to phase {job.phase}; the task is in {state.phase}"
    waiting = waiting_for(state, job)
    if problem is None and waiting:
        listed = ", ".join(f"{d.job_id!r} ({d.status.value})" for d in waiting)
        problem = f"job {name} is not ready: waiting for {listed}"
    if problem is not None:
        raise rejection(state, command, problem)
    draft.add(JobStarted, job_id=job.job_id, attempt=job.attempts + 1, run_id=run_id)


_TAKEN_BY_A_PERSON = (JobStatus.cancelled, JobStatus.held, JobStatus.skipped)
"""What a job's run may find its job became while it ran; its report then records nothing."""


def _current_run(
    state: TaskState, command: CompleteJob | FailJob | HoldJob | RecordBranchConflict
) -> Job | None:
    """The job whose run ``command`` reports; ``None`` when the job was cancelled, held or
    skipped under it."""
    run_id = identifier(command.run_id, "run_id")
    job = _job(state, command, command.job_id)
    if job.run_id == run_id and job.status is JobStatus.running:
        return job
    if job.run_id == run_id and job.status in _TAKEN_BY_A_PERSON:
        return None  # a person stopped it while it ran: nothing is left to record
    if job.run_id is None:
        problem = f"job {job.job_id!r} has not started"
    elif job.run_id != run_id:
        problem = f"run {run_id!r} is not the current run of job {job.job_id!r} ({job.run_id!r})"
    else:
        problem = f"job {job.job_id!r} is not running ({job.status.value})"
    raise rejection(state, command, problem)


def _complete(state: TaskState, command: CompleteJob, draft: Draft) -> None:
    result = json_object(command.result, "result")
    job = _current_run(state, command)
    if job is None:
        return
    draft.add(
        JobSucceeded, job_id=job.job_id, attempt=job.attempts, run_id=job.run_id, result=result
    )
    if command.landed is not None:
        advance_branch(state, command, job.job_id, command.landed, draft)


def _fail(state: TaskState, command: FailJob, draft: Draft) -> None:
    # The reason is all a person has to go on when the job is dead-lettered.
    reason = text(command.reason, "reason", required=True)
    if not isinstance(command.interrupted, bool):
        raise InvalidCommand(f"interrupted must be true or false, got {command.interrupted!r}")
    jitter = _jitter(command.jitter)
    job = _current_run(state, command)
    if job is None:
        return
    _fail_run(state, job, reason, command.interrupted, jitter, draft)


def _branch_conflict(state: TaskState, command: RecordBranchConflict, draft: Draft) -> None:
    head = identifier(command.head, "head")
    files = list(identifiers(command.files, "files"))
    jitter = _jitter(command.jitter)
    job = _current_run(state, command)
    if job is None:
        return
    learning = conflict_learning(head, files)
    draft.add(BranchConflicted, job_id=job.job_id, run_id=job.run_id, attempt=job.attempts,
              head=head, files=files, learning=learning)
    named = ", ".join(files) or "files git did not name"
    reason = f"its changes conflict with work that landed on the task's branch ({named})"
    _fail_run(state, job, reason, False, jitter, draft)


def _jitter(value: object) -> float:
    jitter = number(value, "jitter")
    if not 0.0 <= jitter < 1.0:
        raise InvalidCommand(f"jitter must be in [0, 1), got {value}")
    return jitter


def _fail_run(state: TaskState, job: Job, reason: str, interrupted: bool, jitter: float,
            draft: Draft) -> None:
    """The run of ``job`` failed: retried after a backoff, or dead-lettered at its last
    attempt."""
    attempt = job.attempts
    failed = dict(
        job_id=job.job_id,
        attempt=attempt,
        run_id=job.run_id,
        reason=reason,
        interrupted=interrupted,
    )
    if state.status.terminal:
        draft.add(JobFailed, **failed, retry_at=None)
        draft.add(JobCancelled, job_id=job.job_id, reason=f"the task is {state.status.value}")
    elif attempt >= job.max_attempts:
        draft.add(JobFailed, **failed, retry_at=None)
        attempts = "attempt" if attempt == 1 else "attempts"
        gave_up = f"gave up after {attempt} {attempts}: {reason}"
        draft.add(JobDeadLettered, job_id=job.job_id, reason=gave_up)
    else:
        retry_at = draft.ctx.now + timedelta(seconds=backoff_delay(attempt, jitter))
        draft.add(JobFailed, **failed, retry_at=retry_at.isoformat())


def _retry(state: TaskState, command: RetryJob, draft: Draft) -> None:
    job = _job(state, command, command.job_id)
    _task_open(state, command)
    if job.status not in (JobStatus.dead, JobStatus.held):
        problem = (f"job {job.job_id!r} is {job.status.value}; only a dead-lettered or held "
                   "job can be retried")
        raise rejection(state, command, problem)
    draft.add(JobRequeued, job_id=job.job_id)


def _hold(state: TaskState, command: HoldJob, draft: Draft) -> None:
    reason = text(command.reason, "reason", required=True)
    job = _current_run(state, command)
    if job is None:
        return
    if state.status.terminal:  # the task ended under the run: as in fail_job
        draft.add(JobFailed, job_id=job.job_id, attempt=job.attempts, run_id=job.run_id,
                  reason=reason, interrupted=True, retry_at=None)
        draft.add(JobCancelled, job_id=job.job_id, reason=f"the task is {state.status.value}")
        return
    draft.add(JobHeld, job_id=job.job_id, run_id=job.run_id, attempt=job.attempts,
              reason=reason)


def _skip(state: TaskState, command: SkipJob, draft: Draft) -> None:
    reason = text(command.reason, "reason")
    job = _job(state, command, command.job_id)
    _task_open(state, command)
    if job.status is JobStatus.running:
        problem = f"job {job.job_id!r} is running; interrupt or cancel it first"
        raise rejection(state, command, problem)
    if job.status not in (JobStatus.pending, JobStatus.failed, JobStatus.dead, JobStatus.held):
        raise rejection(state, command, f"job {job.job_id!r} is already {job.status.value}")
    draft.add(JobSkipped, job_id=job.job_id, reason=reason)


def _cancel(state: TaskState, command: CancelJob, draft: Draft) -> None:
    reason = text(command.reason, "reason")
    job = _job(state, command, command.job_id)
    _task_open(state, command)
    if job.status in (JobStatus.succeeded, JobStatus.skipped, JobStatus.cancelled):
        raise rejection(state, command, f"job {job.job_id!r} is already {job.status.value}")
    draft.add(JobCancelled, job_id=job.job_id, reason=reason)


def cancel_unfinished_jobs(state: TaskState, draft: Draft, reason: str) -> None:
    """Cancel every job that waits (pending, failed, dead, held): the task that would run
    them ended.

    Running jobs are left to their pod, which interrupts them and reports each with ``fail_job``.
    """
    for job in state.jobs.values():
        if job.status in (JobStatus.pending, JobStatus.failed, JobStatus.dead, JobStatus.held):
            draft.add(JobCancelled, job_id=job.job_id, reason=reason)


DECIDERS: dict[type[Command], Callable[[TaskState, Any, Draft], None]] = {
    QueueJob: _queue,
    StartJob: _start,
    CompleteJob: _complete,
    FailJob: _fail,
    RecordBranchConflict: _branch_conflict,
    RetryJob: _retry,
    CancelJob: _cancel,
    HoldJob: _hold,
    SkipJob: _skip,
}
"""The handler of each job command, for ``task.decide``."""


# -- evolve --------------------------------------------------------------------------------------


def _queued(event: JobQueued, state: TaskState) -> dict[str, Any]:
    if event.job_id in state.jobs:
        raise ValueError(f"job {event.job_id!r} is queued twice")
    job = Job(
        job_id=event.job_id,
        agent=event.agent,
        phase=event.phase,
        priority=event.priority,
        depends_on=tuple(event.depends_on),
        timeout_seconds=float(event.timeout_seconds),
        max_attempts=event.max_attempts,
        spec=json_copy(event.spec),
        queued_seq=event.originator_version,
        queued_at=event.timestamp,
    )
    return {"jobs": state.jobs.with_item(job.job_id, job)}


def _changed(state: TaskState, event: TaskEvent, job_id: str, **changes: Any) -> dict[str, Any]:
    """The ``jobs`` of ``state`` with ``changes`` made to the job ``job_id``."""
    if job_id not in state.jobs:
        raise ValueError(f"{type(event).__name__} of job {job_id!r}, which was never queued")
    return {"jobs": state.jobs.with_item(job_id, changed(state.jobs[job_id], changes))}


def _started(event: JobStarted, state: TaskState) -> dict[str, Any]:
    return _changed(
        state,
        event,
        event.job_id,
        status=JobStatus.running,
        attempts=event.attempt,
        run_id=event.run_id,
        started_at=event.timestamp,
        retry_at=None,
        awaiting=None,
        finished_at=None,
    )


def _succeeded(event: JobSucceeded, state: TaskState) -> dict[str, Any]:
    return _changed(
        state,
        event,
        event.job_id,
        status=JobStatus.succeeded,
        result=json_copy(event.result),
        rate_limits=0,
        finished_at=event.timestamp,
    )


def _failed(event: JobFailed, state: TaskState) -> dict[str, Any]:
    retry_at = None if event.retry_at is None else datetime.fromisoformat(event.retry_at)
    return _changed(
        state,
        event,
        event.job_id,
        status=JobStatus.failed,
        last_error=event.reason,
        retry_at=retry_at,
        rate_limits=0,
        finished_at=event.timestamp,
    )


def _dead_lettered(event: JobDeadLettered, state: TaskState) -> dict[str, Any]:
    return _changed(
        state, event, event.job_id, status=JobStatus.dead, last_error=event.reason, retry_at=None
    )


def _requeued(event: JobRequeued, state: TaskState) -> dict[str, Any]:
    # last_error stays: it says why the job died until a new attempt says otherwise.
    return _changed(
        state, event, event.job_id, status=JobStatus.pending, attempts=0, retry_at=None
    )


def _cancelled(event: JobCancelled, state: TaskState) -> dict[str, Any]:
    finished = state.jobs[event.job_id].finished_at if event.job_id in state.jobs else None
    return _changed(state, event, event.job_id, status=JobStatus.cancelled, retry_at=None,
                    finished_at=finished or event.timestamp)


def _held(event: JobHeld, state: TaskState) -> dict[str, Any]:
    # The interrupted attempt does not count: a held job never runs out of attempts.
    return _changed(state, event, event.job_id, status=JobStatus.held, last_error=event.reason,
                    attempts=max(0, event.attempt - 1), retry_at=None,
                    finished_at=event.timestamp)


def _skipped(event: JobSkipped, state: TaskState) -> dict[str, Any]:
    return _changed(state, event, event.job_id, status=JobStatus.skipped, retry_at=None,
                    awaiting=None, finished_at=event.timestamp)


FOLDS: dict[type[TaskEvent], Callable[[Any, TaskState], dict[str, Any]]] = {
    JobQueued: _queued,
    JobStarted: _started,
    JobSucceeded: _succeeded,
    JobFailed: _failed,
    JobDeadLettered: _dead_lettered,
    JobRequeued: _requeued,
    JobCancelled: _cancelled,
    JobHeld: _held,
    JobSkipped: _skipped,
}
"""The fold of each job event, for ``task.evolve``: the state fields the event changes."""
