"""The agent commands: RARV step events, usage and the budget, rate limits, questions."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from ipa.domain import (
    AnswerQuestion,
    AskQuestion,
    Cancel,
    CommandRejected,
    CompleteJob,
    FailJob,
    InvalidCommand,
    JobRejected,
    JobStatus,
    Pause,
    RecordArtifact,
    RecordContext,
    RecordRateLimit,
    RecordReflection,
    RecordUsage,
    RecordVerification,
    Resume,
    SetBudget,
    StartJob,
    Status,
    TaskState,
    decide,
    next_retry_at,
    ready_jobs,
)

from .helpers import START, TASK_ID, at, context, run, started, types


def usage(cost: float, run_id: str = "run-1", **tokens: int) -> RecordUsage:
    counts = {"input_tokens": 100, "output_tokens": 20, **tokens}
    return RecordUsage("a", run_id, "spec_writer", "claude-sonnet", cost_usd=cost, **counts)


def events_of(state: TaskState, command, now=START) -> list[str]:
    return types(decide(state, command, context(now), TASK_ID))


def check(command: str, passed: bool, exit_code: int | None = 0, output: str = "") -> dict:
    return {"command": command, "passed": passed, "exit_code": exit_code, "output": output,
            "duration_seconds": 0.1}


# -- the RARV steps ------------------------------------------------------------------------------


def test_each_rarv_step_is_an_event_of_the_running_job() -> None:
    state = started()
    assert events_of(state, RecordContext("a", "run-1", ["task", "spec"], ["old"], 900, 1000)) \
        == ["ContextPrepared"]
    # What a run reflects and the checks that pass are memories too (tests/domain/test_memory).
    assert events_of(state, RecordReflection("a", "run-1", "wrote it", ["x"])) \
        == ["ReflectionRecorded", "MemoryRecorded", "MemoryRecorded"]
    assert events_of(state, RecordVerification("a", "run-1", [check("pytest", True)])) \
        == ["VerificationPassed", "MemoryRecorded"]


def test_a_failed_verification_is_a_learning_the_next_attempt_sees() -> None:
    state = started(max_attempts=3)
    checks = [check("pytest -q", True), check("ruff .", False, 1, "E501 line too long")]
    state = run(state, RecordVerification("a", "run-1", checks))

    [learning] = state.learnings
    assert learning.job_id == "a" and learning.attempt == 1
    assert "`ruff .` failed (exit status 1)" in learning.text
    assert "E501 line too long" in learning.text
    assert "pytest" not in learning.text  # only what failed
    state = run(state, FailJob("a", "run-1", "verification failed"))
    assert state.jobs["a"].status is JobStatus.failed  # the retry policy applies


def test_a_check_that_could_not_run_says_so() -> None:
    state = run(started(), RecordVerification("a", "run-1", [check("make", False, None, "")]))
    assert "timed out or could not run" in state.learnings[0].text


def test_reflection_learnings_join_the_continuity_log_without_blank_ones() -> None:
    state = run(started(), RecordReflection("a", "run-1", "did it", ["use the cache", "  "]))
    assert [x.text for x in state.learnings] == ["use the cache"]


@pytest.mark.parametrize(
    "command",
    [
        RecordContext("a", "run-1", "not a list"),
        RecordContext("a", "run-1", ["x"], tokens=-1),
        RecordVerification("a", "run-1", [{"command": "x"}]),
        RecordVerification("a", "run-1", "pytest"),
        RecordReflection("a", "run-1", 7),
        RecordUsage("a", "run-1", "w", "m", input_tokens=-5, output_tokens=0),
        RecordUsage("a", "run-1", "w", "m", 1, 1, cost_usd=-1.0),
        RecordUsage("a", "run-1", "w", "m", 1, 1, cost_usd=float("nan")),
    ],
)
def test_malformed_agent_commands_are_invalid(command) -> None:
    with pytest.raises(InvalidCommand):
        decide(started(), command, context(), TASK_ID)


def test_steps_of_a_run_that_is_not_current_are_refused() -> None:
    state = started()
    with pytest.raises(JobRejected, match="not the current run"):
        decide(state, RecordReflection("a", "run-0", "x"), context(), TASK_ID)


def test_steps_of_a_run_whose_job_was_cancelled_record_nothing() -> None:
    state = run(started(), Cancel("stop"))
    assert state.jobs["a"].status is JobStatus.running  # its pod interrupts it
    state = run(state, FailJob("a", "run-1", "interrupted", interrupted=True))
    assert events_of(state, RecordReflection("a", "run-1", "x")) == []


def test_artifacts_keep_the_newest_version_per_name() -> None:
    state = run(started(), RecordArtifact("a", "spec", "v1"), RecordArtifact("a", "spec", "v2"))
    assert state.artifacts["spec"].content == "v2"
    assert state.artifacts["spec"].phase == "spec_clarification"


# -- usage and the budget ------------------------------------------------------------------------


def test_usage_adds_up_per_run_job_agent_and_task() -> None:
    state = run(started(), usage(0.25, cache_read_tokens=7), usage(0.5))
    assert state.usage.total.input_tokens == 200
    assert state.usage.total.cache_read_tokens == 7
    assert state.usage.total.cost_usd == pytest.approx(0.75)
    assert state.usage.total.runs == 2
    assert state.usage.by_agent["spec_writer"].cost_usd == pytest.approx(0.75)
    assert state.usage.by_job["a"].output_tokens == 40
    assert state.usage.by_run["run-1"].runs == 2
    assert TaskState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


def test_usage_is_recorded_even_after_the_run_ended() -> None:
    state = run(started(), CompleteJob("a", "run-1"))
    assert events_of(state, usage(0.1)) == ["UsageRecorded"]
    with pytest.raises(JobRejected, match="not a run of job"):
        decide(state, usage(0.1, run_id="other"), context(), TASK_ID)


def test_reaching_the_budget_pauses_the_task_once() -> None:
    state = run(started(), SetBudget(1.0), usage(0.6))
    assert state.status is Status.running
    assert events_of(state, usage(0.5)) == ["UsageRecorded", "BudgetReached", "TaskPaused"]
    state = run(state, usage(0.5))
    assert state.status is Status.paused and state.budget_paused
    assert events_of(state, usage(0.1)) == ["UsageRecorded"]  # already over: no second pause


def test_raising_the_budget_resumes_a_task_paused_by_it() -> None:
    state = run(started(), SetBudget(1.0), usage(1.2))
    assert events_of(state, SetBudget(1.1)) == ["BudgetSet"]  # still under what was spent
    assert events_of(state, SetBudget(2.0)) == ["BudgetSet", "TaskResumed"]
    state = run(state, SetBudget(2.0))
    assert state.status is Status.running and not state.budget_paused


def test_resuming_by_hand_accepts_the_spending() -> None:
    state = run(started(), SetBudget(1.0), usage(1.2), Resume())
    assert state.status is Status.running and not state.budget_paused
    assert events_of(state, usage(5.0)) == ["UsageRecorded"]


def test_a_budget_below_what_was_spent_pauses_at_once_and_none_lifts_it() -> None:
    state = run(started(), usage(3.0))
    assert events_of(state, SetBudget(2.0)) == ["BudgetSet", "BudgetReached", "TaskPaused"]
    state = run(state, SetBudget(2.0))
    assert events_of(state, SetBudget(None)) == ["BudgetSet", "TaskResumed"]


def test_a_person_pausing_is_not_lifted_by_the_budget() -> None:
    state = run(started(), Pause("lunch"), SetBudget(1.0))
    assert events_of(state, SetBudget(5.0)) == ["BudgetSet"]


@pytest.mark.parametrize("limit", [0, -1, "ten", float("inf")])
def test_a_budget_must_be_a_positive_number(limit) -> None:
    with pytest.raises(InvalidCommand):
        decide(started(), SetBudget(limit), context(), TASK_ID)


# -- rate limits ---------------------------------------------------------------------------------


def test_a_rate_limit_waits_with_exponential_backoff_and_keeps_the_attempt() -> None:
    state = started()
    waits = []
    for n in range(1, 9):
        state = run(state, RecordRateLimit("a", f"run-{n}", "429 rate limited"), now=at(0))
        job = state.jobs["a"]
        assert job.status is JobStatus.pending and job.attempts == 0
        waits.append((job.retry_at - at(0)).total_seconds())
        state = run(state, StartJob("a", f"run-{n + 1}"), now=job.retry_at)
    assert waits == [60, 120, 240, 480, 960, 1920, 3600, 3600]
    assert state.jobs["a"].attempts == 1


def test_a_rate_limited_job_is_not_ready_before_its_time() -> None:
    state = run(started(), RecordRateLimit("a", "run-1", "overloaded", base_seconds=10))
    assert ready_jobs(state, at(9)) == []
    assert [j.job_id for j in ready_jobs(state, at(10))] == ["a"]
    assert next_retry_at(state) == at(10)
    with pytest.raises(JobRejected, match="waits to retry"):
        decide(state, StartJob("a", "run-2"), context(at(5)), TASK_ID)


def test_the_providers_reset_time_wins_when_later() -> None:
    resets = (START + timedelta(hours=2)).isoformat()
    state = run(started(), RecordRateLimit("a", "run-1", "limit", resets_at=resets))
    assert state.jobs["a"].retry_at == START + timedelta(hours=2)


def test_an_attempt_that_ends_otherwise_resets_the_rate_limit_count() -> None:
    state = run(started(), RecordRateLimit("a", "run-1", "429"))
    state = run(state, StartJob("a", "run-2"), now=at(60))
    state = run(state, FailJob("a", "run-2", "exit 1"), now=at(61))
    assert state.jobs["a"].rate_limits == 0


@pytest.mark.parametrize(
    "command",
    [
        RecordRateLimit("a", "run-1", ""),
        RecordRateLimit("a", "run-1", "x", base_seconds=0),
        RecordRateLimit("a", "run-1", "x", base_seconds=10, cap_seconds=5),
        RecordRateLimit("a", "run-1", "x", resets_at="tomorrow"),
        RecordRateLimit("a", "run-1", "x", resets_at="2026-01-01T00:00:00"),
    ],
)
def test_malformed_rate_limits_are_invalid(command) -> None:
    with pytest.raises(InvalidCommand):
        decide(started(), command, context(), TASK_ID)


# -- questions -----------------------------------------------------------------------------------


def test_a_question_holds_the_job_until_a_person_answers() -> None:
    state = run(started(), AskQuestion("a", "run-1", "q1", "Postgres or SQLite?"))
    job = state.jobs["a"]
    assert job.status is JobStatus.pending and job.awaiting == "q1" and job.attempts == 0
    assert ready_jobs(state, at(3600)) == []
    with pytest.raises(JobRejected, match="waits for an answer"):
        decide(state, StartJob("a", "run-2"), context(), TASK_ID)

    state = run(state, AnswerQuestion("q1", "Postgres"))
    question = state.questions["q1"]
    assert question.answer == "Postgres" and question.answered_by == "system"
    assert [j.job_id for j in ready_jobs(state, START)] == ["a"]


def test_a_question_is_answered_once() -> None:
    state = run(started(), AskQuestion("a", "run-1", "q1", "?"), AnswerQuestion("q1", "yes"))
    with pytest.raises(CommandRejected, match="already answered"):
        decide(state, AnswerQuestion("q1", "no"), context(), TASK_ID)
    with pytest.raises(InvalidCommand, match="no question"):
        decide(state, AnswerQuestion("q9", "no"), context(), TASK_ID)
    with pytest.raises(InvalidCommand):
        decide(state, AnswerQuestion("q1", "  "), context(), TASK_ID)
