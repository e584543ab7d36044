"""Questions about the job queue: what is ready, what waits, what is blocked, what is done."""

from __future__ import annotations

import pytest

from ipa.domain import (
    Approve,
    BlockedJob,
    CancelJob,
    CompleteJob,
    CompletePhase,
    FailJob,
    JobRejected,
    Pause,
    QueueJob,
    RequestApproval,
    RequestChanges,
    StartJob,
    backoff_delay,
    blocked_jobs,
    decide,
    dependency_cycle,
    fold,
    next_retry_at,
    phase_jobs_done,
    ready_jobs,
    timed_out_jobs,
)

from .helpers import (
    START,
    TASK_ID,
    at,
    context,
    fail,
    ids,
    run,
    running,
    started,
)

# -- what is ready, in which order -----------------------------------------------------------------


def test_ready_jobs_put_the_higher_priority_first() -> None:
    state = running(
        QueueJob("low", "dev", priority=-1), QueueJob("high", "dev", priority=5),
        QueueJob("normal", "dev"),
    )  # fmt: skip
    assert ids(ready_jobs(state, START)) == ["high", "normal", "low"]


def test_ready_jobs_are_first_in_first_out_within_a_priority() -> None:
    state = running(*(QueueJob(job_id, "dev", priority=1) for job_id in ["c", "a", "b"]))
    assert ids(ready_jobs(state, START)) == ["c", "a", "b"]


def test_a_job_waits_for_its_dependencies_and_is_ready_once_they_succeed() -> None:
    state = running(QueueJob("lint", "dev"), QueueJob("build", "dev", depends_on=["lint"]))
    assert ids(ready_jobs(state, START)) == ["lint"]
    state = run(state, StartJob("lint", "run-1"))
    assert ids(ready_jobs(state, START)) == []
    state = run(state, CompleteJob("lint", "run-1"))
    assert ids(ready_jobs(state, START)) == ["build"]


def test_nothing_is_ready_unless_the_task_is_running() -> None:
    state = run(running(QueueJob("a", "dev")), Pause())
    assert ready_jobs(state, START) == []


def test_a_job_of_a_later_phase_waits_for_its_phase() -> None:
    state = running(QueueJob("plan", "planner", phase="planning"))
    assert ready_jobs(state, START) == []
    with pytest.raises(JobRejected, match="belongs to phase planning; the task is in spec_"):
        decide(state, StartJob("plan", "run-1"), context(), TASK_ID)
    state = run(state, RequestApproval(), Approve())
    assert ids(ready_jobs(state, START)) == ["plan"]


def test_a_failed_job_is_ready_again_when_its_retry_is_due() -> None:
    state = fold(fail(started(), "a", "run-1", jitter=0.5), started())
    assert state is not None
    assert next_retry_at(state) == at(0.75)
    assert ready_jobs(state, at(0.7)) == []
    with pytest.raises(JobRejected, match="job 'a' waits to retry until 2025-03-01T12:00:00.75"):
        decide(state, StartJob("a", "run-2"), context(at(0.7)), TASK_ID)
    assert ids(ready_jobs(state, at(0.75))) == ["a"]
    state = run(state, StartJob("a", "run-2"), now=at(0.75))
    assert (state.jobs["a"].attempts, state.jobs["a"].retry_at, next_retry_at(state)) == (
        2, None, None,
    )  # fmt: skip


# -- backoff and timeouts --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "jitter", "seconds"),
    [(1, 0.0, 0.5), (1, 0.5, 0.75), (3, 0.25, 2.5), (9, 0.0, 128.0), (10, 0.5, 225.0),
     (1000, 0.999, 299.85)],
)  # fmt: skip
def test_backoff_is_a_capped_exponential_with_equal_jitter(
    attempt: int, jitter: float, seconds: float
) -> None:
    assert backoff_delay(attempt, jitter) == pytest.approx(seconds)


@pytest.mark.parametrize(("attempt", "jitter"), [(0, 0.0), (1, 1.0), (1, -0.1)])
def test_backoff_refuses_attempts_below_one_and_jitter_outside_0_1(
    attempt: int, jitter: float
) -> None:
    with pytest.raises(ValueError):
        backoff_delay(attempt, jitter)


def test_a_job_that_timed_out_is_found() -> None:
    state = started(timeout_seconds=60)
    assert state.jobs["a"].deadline == at(60)
    assert timed_out_jobs(state, at(59)) == []
    assert ids(timed_out_jobs(state, at(60))) == ["a"]


# -- what cannot run -------------------------------------------------------------------------------


def test_blocked_jobs_name_the_dependency_in_their_way() -> None:
    state = running(
        QueueJob("lint", "dev", max_attempts=1), QueueJob("docs", "dev"),
        QueueJob("build", "dev", depends_on=["lint"]),
        QueueJob("ship", "dev", depends_on=["build", "docs"]),
    )  # fmt: skip
    assert blocked_jobs(state) == []
    state = run(state, StartJob("lint", "run-1"), FailJob("lint", "run-1", "x"))
    assert blocked_jobs(state) == [
        BlockedJob(state.jobs["build"], ("lint",)),
        BlockedJob(state.jobs["ship"], ("build",)),
    ]
    state = run(state, CancelJob("docs"))
    assert [(b.job.job_id, b.blocked_by) for b in blocked_jobs(state)] == [
        ("build", ("lint",)), ("ship", ("build", "docs")),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": ["b"], "b": ["c"], "c": []}, None),
        ({"a": ["b", "c"], "b": ["c"], "c": []}, None),
        ({"a": ["a"]}, ["a", "a"]),
        ({"a": ["b"], "b": ["c"], "c": ["a"]}, ["a", "b", "c", "a"]),
        ({"x": ["y"], "y": ["z"], "z": ["y"]}, ["y", "z", "y"]),
        ({"a": ["missing"]}, None),
    ],
)
def test_dependency_cycle_finds_a_cycle_as_a_closed_path(
    graph: dict[str, list[str]], cycle: list[str] | None
) -> None:
    assert dependency_cycle(graph) == cycle


# -- the phase's work ------------------------------------------------------------------------------


def test_a_phase_without_jobs_is_not_done() -> None:
    assert not phase_jobs_done(running())


def test_a_phase_is_done_when_all_its_jobs_succeeded() -> None:
    state = running(QueueJob("a", "dev"), QueueJob("b", "dev"), QueueJob("c", "dev"))
    state = run(state, StartJob("a", "r-a"), CompleteJob("a", "r-a"), CancelJob("c"))
    assert not phase_jobs_done(state)
    state = run(state, StartJob("b", "r-b"), CompleteJob("b", "r-b"))
    assert phase_jobs_done(state)  # the cancelled job does not count


def test_jobs_of_another_phase_do_not_count() -> None:
    state = run(started(), CompleteJob("a", "run-1"), QueueJob("p", "planner", phase="planning"))
    assert phase_jobs_done(state)
    state = run(state, RequestApproval(), Approve())
    assert not phase_jobs_done(state)


def test_after_changes_are_requested_the_phase_needs_new_work() -> None:
    state = run(started(), CompleteJob("a", "run-1"), RequestApproval())
    state = run(state, RequestChanges("more detail"), now=at(60))
    assert not phase_jobs_done(state)
    state = run(state, QueueJob("a2", "spec_writer"), StartJob("a2", "r2"), now=at(61))
    state = run(state, CompleteJob("a2", "r2"), now=at(62))
    assert phase_jobs_done(state)


def test_a_task_walks_its_phase_after_its_jobs() -> None:
    state = run(started(), CompleteJob("a", "run-1"), RequestApproval(), Approve())
    state = run(state, QueueJob("p", "planner"), StartJob("p", "r"), CompleteJob("p", "r"))
    assert phase_jobs_done(state)
    state = run(state, RequestApproval(), Approve(), QueueJob("d", "developer"))
    assert (state.phase, ids(ready_jobs(state, START))) == ("development", ["d"])
    state = run(state, StartJob("d", "r2"), CompleteJob("d", "r2"), CompletePhase())
    assert state.phase == "review"


