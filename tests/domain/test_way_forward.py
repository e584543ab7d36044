"""Off the happy path: held and skipped jobs, the open-ended perpetual phase, and the attention
a task needs from a person."""

from __future__ import annotations

import pytest

from ipa.domain import (
    AnswerQuestion,
    Approve,
    AskQuestion,
    Cancel,
    CancelJob,
    CommandRejected,
    CompleteJob,
    CompletePhase,
    CreateTask,
    Fail,
    HoldJob,
    InvalidCommand,
    JobRejected,
    JobStatus,
    Pause,
    QueueJob,
    RecordArtifact,
    RecordBranch,
    RecordRepositoryUnavailable,
    RecordUsage,
    RequestApproval,
    RetryJob,
    SetBudget,
    SetRepo,
    SkipJob,
    StartJob,
    StartTask,
    Status,
    TaskState,
    attention,
    decide,
    fold,
    perpetual_due,
    phase_jobs_done,
    ready_jobs,
)

from .helpers import START, TASK_ID, at, context, ids, run, running, started, types

# -- holding a job -------------------------------------------------------------------------------


def test_a_held_job_waits_for_a_person_and_its_attempt_does_not_count() -> None:
    state = run(started(), HoldJob("a", "run-1", "interrupted by user:ann"))
    job = state.jobs["a"]
    assert (job.status, job.attempts, job.last_error) == (
        JobStatus.held, 0, "interrupted by user:ann")
    assert ready_jobs(state, at(10**6)) == []
    with pytest.raises(JobRejected, match="held by a person; retry_job it first"):
        decide(state, StartJob("a", "run-2"), context(), TASK_ID)


def test_three_interrupts_never_dead_letter_a_job() -> None:
    state = started(max_attempts=2)
    for n in range(1, 4):
        state = run(state, HoldJob("a", f"run-{n}", "interrupted"), RetryJob("a"),
                    StartJob("a", f"run-{n + 1}"))
    job = state.jobs["a"]
    assert (job.status, job.attempts) == (JobStatus.running, 1)


def test_the_report_of_a_run_held_under_it_records_nothing() -> None:
    state = run(started(), HoldJob("a", "run-1", "interrupted"))
    assert decide(state, CompleteJob("a", "run-1", {}), context(), TASK_ID) == []
    assert decide(state, RecordArtifact("a", "plan", "late"), context(), TASK_ID) == []


def test_an_artifact_of_a_cancelled_run_is_not_recorded() -> None:
    state = run(started(), CancelJob("a", "not needed"))
    assert decide(state, RecordArtifact("a", "plan", "late"), context(), TASK_ID) == []


def test_hold_after_the_task_ended_cancels_the_job() -> None:
    state = run(started(), Cancel(reason="stop"))
    events = decide(state, HoldJob("a", "run-1", "interrupted"), context(), TASK_ID)
    assert types(events) == ["JobFailed", "JobCancelled"]


# -- skipping a job ------------------------------------------------------------------------------


def dead(state: TaskState, job_id: str = "a") -> TaskState:
    from ipa.domain import FailJob

    return run(state, FailJob(job_id, "run-1", "exit 1"))


def test_a_skipped_dead_job_lets_its_phase_complete() -> None:
    state = dead(started(max_attempts=1))
    assert not phase_jobs_done(state)
    state = run(state, SkipJob("a", "not worth it"))
    assert state.jobs["a"].status is JobStatus.skipped
    assert phase_jobs_done(state)
    state = run(state, RequestApproval(summary="done"))
    assert state.status is Status.waiting


@pytest.mark.parametrize("how", ["held", "pending", "failed"])
def test_held_pending_and_failed_jobs_can_be_skipped(how: str) -> None:
    from ipa.domain import FailJob

    state = {
        "held": lambda: run(started(), HoldJob("a", "run-1", "x")),
        "pending": lambda: running(QueueJob("a", "spec_writer")),
        "failed": lambda: run(started(), FailJob("a", "run-1", "exit 1")),
    }[how]()
    assert run(state, SkipJob("a")).jobs["a"].status is JobStatus.skipped


def test_a_running_or_finished_job_cannot_be_skipped() -> None:
    with pytest.raises(JobRejected, match="is running; interrupt or cancel it first"):
        decide(started(), SkipJob("a"), context(), TASK_ID)
    done = run(started(), CompleteJob("a", "run-1", {}))
    with pytest.raises(JobRejected, match="already succeeded"):
        decide(done, SkipJob("a"), context(), TASK_ID)


def test_a_job_that_depends_on_a_skipped_job_may_run() -> None:
    state = running(QueueJob("a", "spec_writer", max_attempts=1),
                    QueueJob("b", "spec_writer", depends_on=["a"]))
    state = dead(run(state, StartJob("a", "run-1")))
    assert ids(ready_jobs(state, START)) == []
    state = run(state, SkipJob("a"))
    assert ids(ready_jobs(state, START)) == ["b"]


def test_retry_job_requeues_a_held_job() -> None:
    state = run(started(), HoldJob("a", "run-1", "x"), RetryJob("a"))
    assert state.jobs["a"].status is JobStatus.pending
    assert ids(ready_jobs(state, START)) == ["a"]


# -- the perpetual phase -------------------------------------------------------------------------


def in_perpetual() -> TaskState:
    """A project that went through every phase and is now in perpetual."""
    state = run(None, CreateTask("Shop", "PRD", workflow="project"), StartTask())
    n = 0
    while state.phase != "perpetual":
        n += 1
        state = run(state, QueueJob(f"j{n}", "developer"), StartJob(f"j{n}", f"r{n}"),
                    CompleteJob(f"j{n}", f"r{n}", {}))
        if state.phase in ("discovery", "architecture", "deployment"):
            state = run(state, RequestApproval(summary="done"), Approve())
        else:
            state = run(state, CompletePhase())
    return state


def test_perpetual_is_due_an_interval_after_its_last_job_ended() -> None:
    state = in_perpetual()
    assert perpetual_due(state, 60) is None  # no round yet: entering it queues the first
    state = run(state, QueueJob("m1", "maintainer"), StartJob("m1", "rm1"))
    assert perpetual_due(state, 60) is None  # one runs
    state = run(state, CompleteJob("m1", "rm1", {}), now=at(100))
    assert perpetual_due(state, 60) == at(160)
    assert state.status is Status.running and phase_jobs_done(state)
    with pytest.raises(Exception, match="complete_phase"):
        decide(state, CompletePhase(), context(), TASK_ID)


def test_perpetual_is_never_due_in_a_task_or_while_paused() -> None:
    state = run(started(), CompleteJob("a", "run-1", {}))
    assert perpetual_due(state, 0) is None
    paused = run(in_perpetual(), QueueJob("m1", "maintainer"), StartJob("m1", "rm1"),
                 CompleteJob("m1", "rm1", {}), Pause(reason="x"))
    assert perpetual_due(paused, 0) is None


# -- attention -----------------------------------------------------------------------------------


def kind(state: TaskState) -> str | None:
    found = attention(state)
    return None if found is None else found.kind


def test_a_healthy_running_task_needs_nobody() -> None:
    assert attention(started()) is None


def test_a_gate_needs_an_approval_of_its_phase() -> None:
    state = run(started(), CompleteJob("a", "run-1", {}), RequestApproval(summary="done"))
    found = attention(state)
    assert found is not None and found.kind == "gate"
    assert found.phase == "spec_clarification" and "approve" in found.actions
    assert "spec clarification" in found.message


def test_an_open_question_needs_an_answer_until_it_is_answered() -> None:
    state = run(started(), AskQuestion("a", "run-1", "q1", "Which database?"))
    found = attention(state)
    assert found is not None and (found.kind, found.job_id) == ("question", "a")
    assert "Which database?" in found.message and found.actions == ("answer_question",)
    assert attention(run(state, AnswerQuestion("q1", "PostgreSQL"))) is None


def test_a_dead_job_and_a_held_job_need_a_person() -> None:
    found = attention(dead(started(max_attempts=1)))
    assert found is not None and (found.kind, found.job_id) == ("job_dead", "a")
    assert found.actions == ("retry_job", "skip_job", "cancel_job")
    assert kind(run(started(), HoldJob("a", "run-1", "interrupted by user:ann"))) == "job_held"


def test_an_unavailable_repository_needs_a_person() -> None:
    state = run(started(), RecordRepositoryUnavailable(repo="/nowhere", reason="no such path"))
    found = attention(state)
    assert found is not None and found.kind == "repository"
    assert "no such path" in found.message


def test_a_budget_stop_needs_a_bigger_budget_and_a_pause_by_a_person_does_not() -> None:
    state = run(started(), SetBudget(0.01),
                RecordUsage("a", "run-1", "spec_writer", "m", 1, 1, 0, 0, 0.02))
    assert state.budget_paused
    found = attention(state)
    assert found is not None and (found.kind, found.actions) == ("budget", ("set_budget",))
    assert kind(run(started(), Pause(reason="lunch"))) is None


def test_a_failed_task_needs_a_restart_and_a_finished_one_nothing() -> None:
    found = attention(run(started(), Fail(reason="pod crashed 5 times")))
    assert found is not None and (found.kind, found.actions) == ("crashed", ("restart",))
    assert "pod crashed 5 times" in found.message
    assert attention(run(started(), Cancel(reason="x"))) is None


def test_attention_is_plain_json() -> None:
    found = attention(run(started(), HoldJob("a", "run-1", "x")))
    assert found is not None
    assert found.to_dict() == {"kind": "job_held", "message": found.message,
                               "phase": "spec_clarification", "job_id": "a",
                               "actions": ["retry_job", "skip_job", "cancel_job"]}


def test_held_and_skipped_states_round_trip_through_json() -> None:
    state = run(running(QueueJob("a", "spec_writer"), QueueJob("b", "spec_writer")),
                StartJob("a", "run-1"), HoldJob("a", "run-1", "x"), SkipJob("b"))
    assert TaskState.from_dict(state.to_dict()) == state
    events = decide(state, RetryJob("a"), context(), TASK_ID)
    assert fold(events, state).jobs["a"].finished_at == state.jobs["a"].finished_at


def test_set_repo_points_the_task_elsewhere_until_work_has_landed() -> None:
    state = run(None, CreateTask(title="t", description="", repo="/old"),
                RecordRepositoryUnavailable(repo="/old", reason="gone"))

    moved = run(state, SetRepo(repo="/new"))

    assert (moved.repo, moved.repository_error, moved.branch) == ("/new", None, None)
    with pytest.raises(InvalidCommand, match="credentials"):
        run(state, SetRepo(repo="https://bob:hunter2@example.com/x.git"))
    landed = run(moved, StartTask(),
                 RecordBranch(branch="ipa/x", base="main", base_commit="a" * 40),
                 QueueJob(job_id="j", agent="dev"), StartJob(job_id="j", run_id="r"),
                 CompleteJob(job_id="j", run_id="r", landed="b" * 40))
    with pytest.raises(CommandRejected, match="work has landed"):
        run(landed, SetRepo(repo="/third"))
