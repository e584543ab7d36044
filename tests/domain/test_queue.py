"""The job queue's decisions and folds: queueing, starting, retries with backoff, dead letters."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from ipa.domain import (
    Approve,
    Cancel,
    CancelJob,
    Command,
    CommandRejected,
    CompleteJob,
    CreateTask,
    FailJob,
    InvalidCommand,
    JobCancelled,
    JobDeadLettered,
    JobFailed,
    JobNotFound,
    JobQueued,
    JobRejected,
    JobStarted,
    JobStatus,
    JobSucceeded,
    Pause,
    QueueJob,
    RequestApproval,
    RetryJob,
    StartJob,
    StartTask,
    Status,
    TaskEvent,
    TaskState,
    decide,
    evolve,
    fold,
    ready_jobs,
    running_jobs,
)

from .helpers import (
    START,
    TASK_ID,
    at,
    context,
    created,
    fail,
    ids,
    run,
    running,
    started,
    types,
)

# -- queueing ------------------------------------------------------------------------------------


def test_queue_job_records_the_job_with_its_defaults() -> None:
    [event] = decide(running(), QueueJob("spec", "spec_writer"), context(), TASK_ID)
    assert isinstance(event, JobQueued)
    assert (
        event.job_id, event.agent, event.phase, event.priority, event.depends_on,
        event.timeout_seconds, event.max_attempts, event.spec,
    ) == ("spec", "spec_writer", "spec_clarification", 0, [], 3600.0, 5, {})  # fmt: skip


def test_a_queued_job_is_pending_in_the_state() -> None:
    spec = {"command": ["python", "x.py"]}
    state = running(QueueJob("spec", "spec_writer", priority=2, spec=spec, timeout_seconds=60))
    job = state.jobs["spec"]
    assert (job.status, job.attempts, job.priority, job.spec, job.timeout_seconds) == (
        JobStatus.pending, 0, 2, spec, 60.0,
    )  # fmt: skip
    assert (job.queued_seq, job.queued_at) == (state.version, START)


def test_the_spec_is_copied_into_the_event() -> None:
    spec = {"command": ("python", "x.py")}
    [event] = decide(running(), QueueJob("a", "dev", spec=spec), context(), TASK_ID)
    assert isinstance(event, JobQueued)
    assert event.spec == {"command": ["python", "x.py"]}  # tuples become the JSON lists they are


def test_a_job_id_is_used_once() -> None:
    state = running(QueueJob("a", "dev"))
    with pytest.raises(JobRejected, match="cannot queue_job: job 'a' already exists"):
        decide(state, QueueJob("a", "dev"), context(), TASK_ID)


def test_a_job_cannot_depend_on_an_unknown_job() -> None:
    with pytest.raises(InvalidCommand) as caught:
        decide(running(), QueueJob("build", "dev", depends_on=["lint"]), context(), TASK_ID)
    assert str(caught.value) == "job 'build' depends on unknown job 'lint'"


def test_several_unknown_dependencies_are_all_named() -> None:
    command = QueueJob("build", "dev", depends_on=["lint", "test"])
    with pytest.raises(InvalidCommand, match="unknown jobs 'lint', 'test'"):
        decide(running(), command, context(), TASK_ID)


def test_a_job_cannot_depend_on_itself() -> None:
    with pytest.raises(InvalidCommand) as caught:
        decide(running(), QueueJob("a", "dev", depends_on=["a"]), context(), TASK_ID)
    assert str(caught.value) == "job 'a' cannot depend on itself"


def test_a_cycle_is_refused_and_named() -> None:
    # Only existing jobs can be named, so no stream reaches this; a hand-made state does.
    state = running(QueueJob("a", "dev"))
    job_a = replace(state.jobs["a"], depends_on=("b",))
    state = replace(state, jobs=state.jobs.with_item("a", job_a))
    with pytest.raises(InvalidCommand) as caught:
        decide(state, QueueJob("b", "dev", depends_on=["a"]), context(), TASK_ID)
    assert str(caught.value) == "jobs b → a → b form a cycle"


def test_a_job_cannot_depend_on_a_cancelled_job() -> None:
    state = run(running(QueueJob("lint", "dev")), CancelJob("lint"))
    with pytest.raises(JobRejected, match="depends on cancelled job 'lint'; it could never run"):
        decide(state, QueueJob("build", "dev", depends_on=["lint"]), context(), TASK_ID)


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (QueueJob(" ", "dev"), "job_id must not be blank"),
        (QueueJob("a", ""), "agent must not be blank"),
        (QueueJob("a", "dev", priority=True), "priority must be a whole number, got bool"),
        (QueueJob("a", "dev", max_attempts=0), "max_attempts must be at least 1, got 0"),
        (QueueJob("a", "dev", timeout_seconds=0), "timeout_seconds must be more than 0"),
        (QueueJob("a", "dev", timeout_seconds=math.inf), "timeout_seconds must be finite"),
        (QueueJob("a", "dev", depends_on="lint"), "depends_on must be a list of names, got str"),
        (QueueJob("a", "dev", spec=[]), "spec must be a JSON object, got list"),  # type: ignore[arg-type]
        (QueueJob("a", "dev", spec={"x": {1, 2}}), r"spec.x is not JSON: set"),
        (QueueJob("a", "dev", phase="qa"), "workflow 'task' has no phase 'qa'"),
        (QueueJob("a", "dev", phase="completed"), "phase completed ends the task; it has no jobs"),
    ],
)
def test_queue_job_refuses_malformed_input(command: QueueJob, message: str) -> None:
    with pytest.raises(InvalidCommand, match=message):
        decide(running(), command, context(), TASK_ID)


def test_a_job_cannot_be_queued_for_a_phase_that_is_over() -> None:
    state = run(running(), RequestApproval(), Approve())
    with pytest.raises(InvalidCommand, match="phase spec_clarification is over"):
        decide(state, QueueJob("a", "dev", phase="spec_clarification"), context(), TASK_ID)


@pytest.mark.parametrize("status", ["pending", "paused", "waiting"])
def test_jobs_can_be_queued_while_the_task_is_not_running(status: str) -> None:
    state = {
        "pending": created,
        "paused": lambda: run(running(), Pause()),
        "waiting": lambda: run(running(), RequestApproval()),
    }[status]()
    assert run(state, QueueJob("a", "dev")).jobs["a"].status is JobStatus.pending


def test_a_cancelled_task_queues_nothing() -> None:
    state = run(running(), Cancel())
    with pytest.raises(JobRejected, match="cannot queue_job: the task is cancelled"):
        decide(state, QueueJob("a", "dev"), context(), TASK_ID)


# -- starting -------------------------------------------------------------------------


def test_start_job_refuses_a_job_that_waits_for_its_dependencies() -> None:
    state = running(QueueJob("lint", "dev"), QueueJob("build", "dev", depends_on=["lint"]))
    with pytest.raises(JobRejected) as caught:
        decide(state, StartJob("build", "run-1"), context(), TASK_ID)
    assert str(caught.value) == (
        "cannot start_job: job 'build' is not ready: waiting for 'lint' (pending)"
    )
    assert caught.value.problem == "job 'build' is not ready: waiting for 'lint' (pending)"
    assert isinstance(caught.value, CommandRejected)


@pytest.mark.parametrize("pause", [Pause("lunch"), RequestApproval()], ids=["paused", "waiting"])
def test_start_job_needs_a_running_task(pause: Command) -> None:
    state = run(running(QueueJob("a", "dev")), pause)
    with pytest.raises(JobRejected, match="jobs start only while it is running"):
        decide(state, StartJob("a", "run-1"), context(), TASK_ID)


def test_start_job_records_the_attempt_and_its_run() -> None:
    state = running(QueueJob("a", "dev"))
    [event] = decide(state, StartJob("a", "run-1"), context(), TASK_ID)
    assert isinstance(event, JobStarted)
    assert (event.job_id, event.attempt, event.run_id) == ("a", 1, "run-1")
    job = fold([event], state).jobs["a"]  # type: ignore[union-attr]
    assert (job.status, job.attempts, job.run_id, job.started_at) == (
        JobStatus.running, 1, "run-1", START,
    )  # fmt: skip
    assert ids(running_jobs(fold([event], state))) == ["a"]  # type: ignore[arg-type]


def test_start_job_of_an_unknown_job_is_refused() -> None:
    with pytest.raises(JobNotFound, match="cannot start_job: the task has no job 'x'"):
        decide(running(), StartJob("x", "run-1"), context(), TASK_ID)


def test_a_running_job_is_not_started_twice() -> None:
    with pytest.raises(JobRejected, match="job 'a' is already running \\(run 'run-1'\\)"):
        decide(started(), StartJob("a", "run-2"), context(), TASK_ID)


# -- success, failure and retries ----------------------------------------------------------------


def test_complete_job_records_the_result() -> None:
    events = decide(started(), CompleteJob("a", "run-1", {"files": 3}), context(), TASK_ID)
    [event] = events
    assert isinstance(event, JobSucceeded)
    assert (event.attempt, event.run_id, event.result) == (1, "run-1", {"files": 3})
    job = fold(events, started()).jobs["a"]  # type: ignore[union-attr]
    assert (job.status, job.result) == (JobStatus.succeeded, {"files": 3})


def test_a_report_of_another_run_is_refused() -> None:
    with pytest.raises(JobRejected, match="run 'run-0' is not the current run of job 'a'"):
        decide(started(), CompleteJob("a", "run-0"), context(), TASK_ID)


def test_a_report_of_a_job_that_never_started_is_refused() -> None:
    with pytest.raises(JobRejected, match="job 'a' has not started"):
        decide(running(QueueJob("a", "dev")), FailJob("a", "run-1", "x"), context(), TASK_ID)


def test_a_failed_attempt_retries_after_its_backoff() -> None:
    state = started()
    [event] = fail(state, "a", "run-1", jitter=0.5)
    assert isinstance(event, JobFailed)
    assert (event.attempt, event.reason, event.interrupted) == (1, "exit 1", False)
    assert event.retry_at == at(0.75).isoformat()
    job = fold([event], state).jobs["a"]  # type: ignore[union-attr]
    assert (job.status, job.retry_at, job.last_error) == (JobStatus.failed, at(0.75), "exit 1")


def test_the_third_attempt_waits_four_times_as_long() -> None:
    state = started()
    for attempt in [1, 2]:
        state = run(state, FailJob("a", f"run-{attempt}", "x"))
        state = run(state, StartJob("a", f"run-{attempt + 1}"), now=at(9))
    [event] = decide(state, FailJob("a", "run-3", "x", jitter=0.25), context(at(10)), TASK_ID)
    assert isinstance(event, JobFailed)
    assert (event.attempt, event.retry_at) == (3, at(10 + 2.5).isoformat())


def retried_until_dead(max_attempts: int = 2) -> tuple[TaskState, list[TaskEvent]]:
    """A job that failed all its attempts; also the events of the last failure."""
    state = started(max_attempts=max_attempts)
    for attempt in range(1, max_attempts):
        state = run(state, FailJob("a", f"run-{attempt}", "exit 1"))
        state = run(state, StartJob("a", f"run-{attempt + 1}"), now=at(600))
    events = fail(state, "a", f"run-{max_attempts}")
    after = fold(events, state)
    assert after is not None
    return after, events


def test_after_its_last_attempt_a_job_is_dead_lettered() -> None:
    state, events = retried_until_dead(max_attempts=2)
    assert types(events) == ["JobFailed", "JobDeadLettered"]
    failed, dead = events
    assert isinstance(failed, JobFailed) and isinstance(dead, JobDeadLettered)
    assert (failed.attempt, failed.retry_at) == (2, None)
    assert dead.reason == "gave up after 2 attempts: exit 1"
    job = state.jobs["a"]
    assert (job.status, job.attempts, job.retry_at) == (JobStatus.dead, 2, None)
    assert ready_jobs(state, at(10**6)) == []


def test_a_job_gets_five_attempts_unless_told() -> None:
    state, events = retried_until_dead(max_attempts=5)
    assert types(events) == ["JobFailed", "JobDeadLettered"]
    assert state.jobs["a"].attempts == 5


def test_a_dead_lettered_job_does_not_start() -> None:
    state, _ = retried_until_dead()
    with pytest.raises(JobRejected, match="job 'a' is dead-lettered; retry_job it first"):
        decide(state, StartJob("a", "run-9"), context(), TASK_ID)


def test_retry_job_puts_a_dead_job_back_with_all_its_attempts() -> None:
    state, _ = retried_until_dead()
    state = run(state, RetryJob("a"))
    job = state.jobs["a"]
    assert (job.status, job.attempts, job.retry_at) == (JobStatus.pending, 0, None)
    assert ids(ready_jobs(state, START)) == ["a"]
    state = run(state, StartJob("a", "run-9"))
    assert state.jobs["a"].attempts == 1


def test_retry_job_refuses_a_job_that_is_not_dead() -> None:
    with pytest.raises(JobRejected) as caught:
        decide(started(), RetryJob("a"), context(), TASK_ID)
    assert caught.value.problem == (
        "job 'a' is running; only a dead-lettered or held job can be retried")


def test_an_interrupted_attempt_counts_as_an_attempt() -> None:
    state = started(max_attempts=1)
    events = decide(state, FailJob("a", "run-1", "pod stopped", interrupted=True), context(),
                    TASK_ID)  # fmt: skip
    assert types(events) == ["JobFailed", "JobDeadLettered"]
    assert isinstance(events[0], JobFailed) and events[0].interrupted


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (FailJob("a", "run-1", " "), "reason must not be blank"),
        (FailJob("a", "run-1", "x", jitter=1.0), r"jitter must be in \[0, 1\)"),
        (FailJob("a", "run-1", "x", interrupted=1), "interrupted must be true or false"),  # type: ignore[arg-type]
        (CompleteJob("a", "run-1", result=None), "result must be a JSON object"),  # type: ignore[arg-type]
    ],
)
def test_reports_refuse_malformed_input(command: Command, message: str) -> None:
    with pytest.raises(InvalidCommand, match=message):
        decide(started(), command, context(), TASK_ID)


def test_a_running_job_finishes_while_the_task_is_paused() -> None:
    state = run(started(), Pause(), CompleteJob("a", "run-1"))
    assert (state.status, state.jobs["a"].status) == (Status.paused, JobStatus.succeeded)


def test_a_failure_while_paused_is_retried_later() -> None:
    state = run(started(), Pause(), FailJob("a", "run-1", "x"))
    assert (state.jobs["a"].status, state.jobs["a"].retry_at) == (JobStatus.failed, at(0.5))


# -- cancelling ----------------------------------------------------------------------------------


def test_cancel_job_takes_a_waiting_job_out_of_the_queue() -> None:
    state = run(running(QueueJob("a", "dev")), CancelJob("a", "not needed"))
    assert state.jobs["a"].status is JobStatus.cancelled
    assert ready_jobs(state, START) == []


def test_cancel_job_refuses_a_job_that_succeeded() -> None:
    state = run(started(), CompleteJob("a", "run-1"))
    with pytest.raises(JobRejected, match="job 'a' is already succeeded"):
        decide(state, CancelJob("a"), context(), TASK_ID)


def test_the_report_of_a_run_cancelled_under_it_changes_nothing() -> None:
    state = run(started(), CancelJob("a", "wrong approach"))
    assert decide(state, CompleteJob("a", "run-1"), context(), TASK_ID) == []
    assert fail(state, "a", "run-1") == []


def test_cancelling_the_task_cancels_its_waiting_jobs() -> None:
    state = running(QueueJob("a", "dev"), QueueJob("b", "dev"))
    state = run(state, StartJob("a", "run-1"))
    events = decide(state, Cancel("scrapped"), context(), TASK_ID)
    assert types(events) == ["TaskCancelled", "JobCancelled"]
    assert isinstance(events[1], JobCancelled)
    assert (events[1].job_id, events[1].reason) == ("b", "the task was cancelled: scrapped")


def test_a_run_interrupted_by_the_task_cancel_is_recorded_and_not_retried() -> None:
    state = run(started(), Cancel())
    events = decide(state, FailJob("a", "run-1", "cancelled", interrupted=True), context(),
                    TASK_ID)  # fmt: skip
    assert types(events) == ["JobFailed", "JobCancelled"]
    assert isinstance(events[0], JobFailed)
    assert (events[0].interrupted, events[0].retry_at) == (True, None)
    assert fold(events, state).jobs["a"].status is JobStatus.cancelled  # type: ignore[union-attr]


# -- folding and the JSON form -------------------------------------------------------------------


def queue_history() -> list[TaskEvent]:
    """A stream that touches every job event."""
    events: list[TaskEvent] = []
    state: TaskState | None = None
    for command in [
        CreateTask("Title", "spec"),
        StartTask(),
        QueueJob("a", "spec_writer", max_attempts=1, spec={"command": ["x"], "env": {"K": 1.5}}),
        QueueJob("b", "spec_writer", depends_on=["a"], priority=3),
        StartJob("a", "run-1"),
        FailJob("a", "run-1", "exit 1", jitter=0.3),
        RetryJob("a"),
        StartJob("a", "run-2"),
        CompleteJob("a", "run-2", {"ok": True}),
        StartJob("b", "run-3"),
        FailJob("b", "run-3", "timeout", interrupted=True, jitter=0.9),
        QueueJob("c", "spec_writer"),
        CancelJob("c", "later"),
    ]:
        new = decide(state, command, context(at(len(events))), TASK_ID)
        state = fold(new, state)
        events.extend(new)
    return events


def test_the_queue_history_covers_every_job_event() -> None:
    names = {type(event).__name__ for event in queue_history()}
    assert {
        "JobQueued", "JobStarted", "JobSucceeded", "JobFailed", "JobDeadLettered",
        "JobRequeued", "JobCancelled",
    } <= names  # fmt: skip


def test_job_events_hold_plain_json() -> None:
    library = {"originator_id", "originator_version", "timestamp"}
    for event in queue_history():
        fields = {k: v for k, v in vars(event).items() if k not in library}
        assert json.loads(json.dumps(fields)) == fields


def test_a_state_with_jobs_round_trips_through_json_exactly() -> None:
    state = fold(queue_history())
    assert state is not None
    assert {job.status for job in state.jobs.values()} == {
        JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled,
    }  # fmt: skip
    data = json.loads(json.dumps(state.to_dict()))
    assert TaskState.from_dict(data) == state
    assert TaskState.from_dict(data).to_dict() == state.to_dict()


def test_a_state_with_jobs_stays_hashable() -> None:
    state = fold(queue_history())
    assert state is not None
    assert hash(state) == hash(TaskState.from_dict(state.to_dict()))


def test_the_snapshot_of_a_state_is_a_copy() -> None:
    state = fold(queue_history())
    assert state is not None
    data = state.to_dict()
    data["jobs"][0]["spec"]["command"].append("y")
    assert state.jobs["a"].spec == {"command": ["x"], "env": {"K": 1.5}}


def test_a_snapshot_from_before_the_queue_loads_with_an_empty_queue() -> None:
    state = running()
    data = state.to_dict()
    for key in ("jobs", "workspaces", "repository_error"):
        del data[key]
    loaded = TaskState.from_dict(data)
    assert (dict(loaded.jobs), dict(loaded.workspaces), loaded.repository_error) == ({}, {}, None)
    assert loaded == state


def test_evolve_refuses_an_event_of_a_job_never_queued() -> None:
    events = queue_history()
    state = fold(events[:2])
    start = next(e for e in events if isinstance(e, JobStarted))
    with pytest.raises(ValueError, match="JobStarted of job 'a', which was never queued"):
        evolve(state, replace(start, originator_version=3))


