"""What agents do to a task: the RARV steps of a job's run, usage and cost, the budget,
rate limits and questions to people — deciding the agent commands and folding their events.

**The RARV cycle.** Every attempt of an agent job leaves one event per step in the task's
stream, between its ``JobStarted`` and its ``JobSucceeded``/``JobFailed``:

- *Reason* — ``ContextPrepared``: which sections the run's context was built from, what was
  dropped to fit the model's budget;
- *Act* — the run itself (its own stream), then ``UsageRecorded`` and ``WorkspaceCommitted``;
- *Reflect* — ``ReflectionRecorded``: what was done and learned (and ``ArtifactRecorded`` for
  the spec, plan or review the agent wrote);
- *Verify* — ``VerificationPassed`` or ``VerificationFailed``; a failure adds a learning to the
  continuity log, and the job fails so its retry policy applies: the next attempt's *Reason*
  sees the learning.

These commands are accepted only for a job's current run while it runs (``RecordUsage`` also
after it ended or was cancelled: money spent is always recorded).

**Budget.** ``SetBudget`` caps the task's cost: its own agents' and, a project's, its
children's (each child's usage is added as its end is recorded: ``RecordChildFinished``, see
``children.py``; ``TaskState.spent_usd``). The ``RecordUsage`` or ``RecordChildFinished`` that
reaches the cap adds ``BudgetReached`` and pauses the task (``TaskPaused``): a paused project
spawns no new child, and the children still running are not stopped (their spend is added when
they end, so a project can end up above its cap by what they use). A person resumes it, or
raises the budget above what was spent, which resumes it. Setting a cap at or below what was
spent pauses a running task at once.

**Rate limits** do not use up an attempt: ``JobRateLimited`` puts the job back to pending until
its ``retry_at``, ``base · 2^(n-1)`` seconds (capped) for the n-th limit in a row, or the
provider's reset time when that is later. **Questions** do not either: ``QuestionAsked`` puts the
job back to pending, waiting (``awaiting``) until ``QuestionAnswered``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from .commands import (
    AnswerQuestion,
    AskQuestion,
    Command,
    RecordArtifact,
    RecordContext,
    RecordRateLimit,
    RecordReflection,
    RecordUsage,
    RecordVerification,
    SetBudget,
)
from .decision import Draft, identifier, json_object, number, rejection, text, whole
from .errors import InvalidCommand, JobNotFound
from .events import (
    ArtifactRecorded,
    BudgetReached,
    BudgetSet,
    ContextPrepared,
    JobCancelled,
    JobFailed,
    JobRateLimited,
    QuestionAnswered,
    QuestionAsked,
    ReflectionRecorded,
    TaskEvent,
    TaskPaused,
    TaskResumed,
    UsageRecorded,
    VerificationFailed,
    VerificationPassed,
)
from .state import (
    Artifact,
    Job,
    JobStatus,
    Learning,
    Question,
    TaskState,
    UsageTotals,
    changed,
)
from .workflows import Status

LEARNING_OUTPUT_CHARS = 2000
"""How much of a failed check's output (its end) a learning keeps."""

_PAUSABLE = (Status.pending, Status.running, Status.waiting)
_MAX_EXPONENT = 64


# -- decide --------------------------------------------------------------------------------------


def _job(state: TaskState, command: Command, job_id: object) -> Job:
    job_id = identifier(job_id, "job_id")
    try:
        return state.jobs[job_id]
    except KeyError:
        raise JobNotFound(command.name, job_id) from None


_STOPPED = (JobStatus.cancelled, JobStatus.held, JobStatus.skipped)


def _running(state: TaskState, command: Command, job_id: object, run_id: object) -> Job | None:
    """The job whose current, running run is ``run_id``; ``None`` if a person cancelled, held
    or skipped it under the run (nothing is left to record); ``JobRejected`` otherwise."""
    run_id = identifier(run_id, "run_id")
    job = _job(state, command, job_id)
    if job.run_id == run_id and job.status is JobStatus.running:
        return job
    if job.run_id == run_id and job.status in _STOPPED:
        return None
    if job.run_id != run_id:
        problem = f"run {run_id!r} is not the current run of job {job.job_id!r}"
    else:
        problem = f"job {job.job_id!r} is not running ({job.status.value})"
    raise rejection(state, command, problem)


def _count(value: object, what: str) -> int:
    return whole(value, what, minimum=0)


def _texts(values: object, what: str) -> list[str]:
    if not isinstance(values, list | tuple):
        raise InvalidCommand(f"{what} must be a list of texts, got {type(values).__name__}")
    return [text(value, f"{what} item") for value in values]


def _context(state: TaskState, command: RecordContext, draft: Draft) -> None:
    sections = _texts(command.sections, "sections")
    dropped = _texts(command.dropped, "dropped")
    tokens = _count(command.tokens, "tokens")
    budget = _count(command.budget_tokens, "budget_tokens")
    job = _running(state, command, command.job_id, command.run_id)
    if job is None:
        return
    memories = _texts(command.memories, "memories")
    problem = command.memory_problem
    if problem is not None:
        problem = text(problem, "memory_problem")
    draft.add(ContextPrepared, job_id=job.job_id, run_id=command.run_id, attempt=job.attempts,
              sections=sections, dropped=dropped, tokens=tokens, budget_tokens=budget,
              memories=memories, memory_problem=problem)


def _usage(state: TaskState, command: RecordUsage, draft: Draft) -> None:
    run_id = identifier(command.run_id, "run_id")
    agent = identifier(command.agent, "agent")
    model = text(command.model, "model")
    counts = {
        what: _count(getattr(command, what), what)
        for what in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    }
    cost = number(command.cost_usd, "cost_usd")
    if cost < 0:
        raise InvalidCommand(f"cost_usd must not be negative, got {cost}")
    job = _job(state, command, command.job_id)
    if job.run_id != run_id:
        raise rejection(state, command, f"run {run_id!r} is not a run of job {job.job_id!r}")
    draft.add(UsageRecorded, job_id=job.job_id, run_id=run_id, agent=agent, model=model,
              **counts, cost_usd=cost)
    charge(state, cost, draft)


def charge(state: TaskState, cost: float, draft: Draft) -> None:
    """``cost`` US dollars more spent by the task (by its agents, or by a project's child):
    the spend that reaches its budget adds ``BudgetReached`` and pauses it."""
    spent = state.spent_usd
    limit = state.budget_usd
    if limit is not None and spent < limit <= spent + cost:
        _reach_budget(state, limit, spent + cost, draft)


def _reach_budget(state: TaskState, limit: float, spent: float, draft: Draft) -> None:
    draft.add(BudgetReached, limit_usd=limit, spent_usd=spent)
    if state.status in _PAUSABLE:
        reason = f"budget reached: spent ${spent:.2f} of ${limit:.2f}"
        draft.add(TaskPaused, reason=reason, paused_from=state.status.value)


def _set_budget(state: TaskState, command: SetBudget, draft: Draft) -> None:
    limit = command.limit_usd
    if limit is not None:
        limit = number(limit, "limit_usd")
        if limit <= 0:
            raise InvalidCommand(f"limit_usd must be more than 0 (or null for none), got {limit}")
    if state.status.terminal:
        raise rejection(state, command, f"the task is {state.status.value}")
    if limit == state.budget_usd:
        return
    draft.add(BudgetSet, limit_usd=limit)
    spent = state.spent_usd
    if state.budget_paused and state.status is Status.paused and (limit is None or spent < limit):
        assert state.paused_from is not None
        draft.add(TaskResumed, status=state.paused_from.value)
    elif limit is not None and spent >= limit and not state.budget_paused:
        _reach_budget(state, limit, spent, draft)


def _reflection(state: TaskState, command: RecordReflection, draft: Draft) -> None:
    summary = text(command.summary, "summary")
    learnings = [item.strip() for item in _texts(command.learnings, "learnings") if item.strip()]
    job = _running(state, command, command.job_id, command.run_id)
    if job is None:
        return
    draft.add(ReflectionRecorded, job_id=job.job_id, run_id=command.run_id,
              attempt=job.attempts, summary=summary, learnings=learnings)


def _check(value: object, index: int) -> dict[str, Any]:
    where = f"checks[{index}]"
    check = json_object(value, where)
    text(check.get("command"), f"{where}.command", required=True)
    if not isinstance(check.get("passed"), bool):
        raise InvalidCommand(f"{where}.passed must be true or false")
    exit_code = check.get("exit_code")
    if exit_code is not None:
        whole(exit_code, f"{where}.exit_code")
    text(check.get("output", ""), f"{where}.output")
    return check


def _verification(state: TaskState, command: RecordVerification, draft: Draft) -> None:
    if not isinstance(command.checks, list | tuple):
        raise InvalidCommand("checks must be a list")
    checks = [_check(value, i) for i, value in enumerate(command.checks)]
    job = _running(state, command, command.job_id, command.run_id)
    if job is None:
        return
    failed = [check for check in checks if not check["passed"]]
    common = dict(job_id=job.job_id, run_id=command.run_id, attempt=job.attempts, checks=checks)
    if not failed:
        draft.add(VerificationPassed, **common)
        return
    draft.add(VerificationFailed, **common, learning=_learning(job.attempts, failed))


def _learning(attempt: int, failed: list[dict[str, Any]]) -> str:
    parts = []
    for check in failed:
        status = ("timed out or could not run" if check.get("exit_code") is None
                  else f"exit status {check['exit_code']}")
        output = str(check.get("output", "")).strip()[-LEARNING_OUTPUT_CHARS:]
        parts.append(f"`{check['command']}` failed ({status})" + (f":\n{output}" if output else ""))
    return f"Attempt {attempt}: verification failed. " + "\n".join(parts)


def _artifact(state: TaskState, command: RecordArtifact, draft: Draft) -> None:
    name = identifier(command.artifact, "artifact")
    content = text(command.content, "content")
    job = _job(state, command, command.job_id)
    if state.status.terminal:
        raise rejection(state, command, f"the task is {state.status.value}")
    if job.status in _STOPPED:
        return  # a run a person stopped: what it made is not the job's result
    draft.add(ArtifactRecorded, job_id=job.job_id, name=name, phase=job.phase, content=content)


def _end_with_task(state: TaskState, job: Job, run_id: str, reason: str, draft: Draft) -> None:
    """The run of a task that ended meanwhile: its job fails and is cancelled, as in fail_job."""
    draft.add(JobFailed, job_id=job.job_id, attempt=job.attempts, run_id=run_id, reason=reason,
              interrupted=False, retry_at=None)
    draft.add(JobCancelled, job_id=job.job_id, reason=f"the task is {state.status.value}")


def _rate_limit(state: TaskState, command: RecordRateLimit, draft: Draft) -> None:
    reason = text(command.reason, "reason", required=True)
    base = number(command.base_seconds, "base_seconds")
    cap = number(command.cap_seconds, "cap_seconds")
    if base <= 0 or cap < base:
        raise InvalidCommand(f"need 0 < base_seconds ≤ cap_seconds, got {base} and {cap}")
    resets_at = None
    if command.resets_at is not None:
        try:
            resets_at = datetime.fromisoformat(text(command.resets_at, "resets_at"))
        except ValueError:
            problem = f"resets_at is not an ISO-8601 time: {command.resets_at!r}"
            raise InvalidCommand(problem) from None
        if resets_at.tzinfo is None:
            raise InvalidCommand("resets_at must carry a time zone")
    job = _running(state, command, command.job_id, command.run_id)
    if job is None:
        return
    if state.status.terminal:
        _end_with_task(state, job, command.run_id, reason, draft)
        return
    consecutive = job.rate_limits + 1
    wait = min(cap, base * 2.0 ** min(consecutive - 1, _MAX_EXPONENT))
    retry_at = draft.ctx.now + timedelta(seconds=wait)
    if resets_at is not None and resets_at > retry_at:
        retry_at = resets_at
        wait = (resets_at - draft.ctx.now).total_seconds()
    draft.add(JobRateLimited, job_id=job.job_id, run_id=command.run_id, attempt=job.attempts,
              reason=reason, wait_seconds=wait, retry_at=retry_at.isoformat(),
              consecutive=consecutive)


def _ask(state: TaskState, command: AskQuestion, draft: Draft) -> None:
    question_id = identifier(command.question_id, "question_id")
    question = text(command.question, "question", required=True)
    job = _running(state, command, command.job_id, command.run_id)
    if job is None:
        return
    if question_id in state.questions:
        raise rejection(state, command, f"question {question_id!r} was already asked")
    if state.status.terminal:
        _end_with_task(state, job, command.run_id, f"asked: {question}", draft)
        return
    draft.add(QuestionAsked, question_id=question_id, job_id=job.job_id,
              run_id=command.run_id, question=question)


def _answer(state: TaskState, command: AnswerQuestion, draft: Draft) -> None:
    question_id = identifier(command.question_id, "question_id")
    answer = text(command.answer, "answer", required=True)
    question = state.questions.get(question_id)
    if question is None:
        raise InvalidCommand(f"cannot {command.name}: the task has no question {question_id!r}")
    if state.status.terminal:
        raise rejection(state, command, f"the task is {state.status.value}")
    if question.answer is not None:
        problem = f"question {question_id!r} was already answered by {question.answered_by}"
        raise rejection(state, command, problem)
    draft.add(QuestionAnswered, question_id=question_id, answer=answer)


DECIDERS: dict[type[Command], Callable[[TaskState, Any, Draft], None]] = {
    RecordContext: _context,
    RecordUsage: _usage,
    SetBudget: _set_budget,
    RecordReflection: _reflection,
    RecordVerification: _verification,
    RecordArtifact: _artifact,
    RecordRateLimit: _rate_limit,
    AskQuestion: _ask,
    AnswerQuestion: _answer,
}
"""The handler of each agent command, for ``task.decide``."""


# -- evolve --------------------------------------------------------------------------------------


def _job_changed(state: TaskState, job_id: str, **changes: Any) -> dict[str, Any]:
    if job_id not in state.jobs:
        raise ValueError(f"event of job {job_id!r}, which was never queued")
    return {"jobs": state.jobs.with_item(job_id, changed(state.jobs[job_id], changes))}


def _nothing(event: TaskEvent, state: TaskState) -> dict[str, Any]:
    return {}  # a record of a step for the audit trail and the pages


def _usage_recorded(event: UsageRecorded, state: TaskState) -> dict[str, Any]:
    used = UsageTotals(event.input_tokens, event.output_tokens, event.cache_read_tokens,
                       event.cache_write_tokens, event.cost_usd, 1)
    return {"usage": state.usage.add(event.agent, event.job_id, event.run_id, used)}


def _budget_set(event: BudgetSet, state: TaskState) -> dict[str, Any]:
    return {"budget_usd": event.limit_usd}


def _budget_reached(event: BudgetReached, state: TaskState) -> dict[str, Any]:
    return {"budget_paused": state.status in _PAUSABLE}


def _learned(state: TaskState, event: TaskEvent, job_id: str, attempt: int,
             texts: list[str]) -> dict[str, Any]:
    new = tuple(Learning(job_id, attempt, item, event.timestamp) for item in texts)
    return {"learnings": (*state.learnings, *new)}


def _reflected(event: ReflectionRecorded, state: TaskState) -> dict[str, Any]:
    return _learned(state, event, event.job_id, event.attempt, list(event.learnings))


def _verification_failed(event: VerificationFailed, state: TaskState) -> dict[str, Any]:
    return _learned(state, event, event.job_id, event.attempt, [event.learning])


def _artifact_recorded(event: ArtifactRecorded, state: TaskState) -> dict[str, Any]:
    artifact = Artifact(event.name, event.job_id, event.phase, event.content, event.timestamp)
    return {"artifacts": state.artifacts.with_item(event.name, artifact)}


def _rate_limited(event: JobRateLimited, state: TaskState) -> dict[str, Any]:
    job = state.jobs[event.job_id]
    return _job_changed(state, event.job_id, status=JobStatus.pending,
                        attempts=max(0, job.attempts - 1), rate_limits=event.consecutive,
                        retry_at=datetime.fromisoformat(event.retry_at),
                        last_error=event.reason)


def _asked(event: QuestionAsked, state: TaskState) -> dict[str, Any]:
    job = state.jobs[event.job_id]
    question = Question(event.question_id, event.job_id, event.run_id, event.question,
                        event.timestamp)
    return {
        **_job_changed(state, event.job_id, status=JobStatus.pending,
                       attempts=max(0, job.attempts - 1), rate_limits=0, retry_at=None,
                       awaiting=event.question_id),
        "questions": state.questions.with_item(event.question_id, question),
    }


def _answered(event: QuestionAnswered, state: TaskState) -> dict[str, Any]:
    question = replace(state.questions[event.question_id], answer=event.answer,
                       answered_by=event.actor, answered_at=event.timestamp)
    changes: dict[str, Any] = {
        "questions": state.questions.with_item(event.question_id, question)
    }
    job = state.jobs.get(question.job_id)
    if job is not None and job.awaiting == event.question_id:
        changes.update(_job_changed(state, job.job_id, awaiting=None))
    return changes


FOLDS: dict[type[TaskEvent], Callable[[Any, TaskState], dict[str, Any]]] = {
    ContextPrepared: _nothing,
    UsageRecorded: _usage_recorded,
    BudgetSet: _budget_set,
    BudgetReached: _budget_reached,
    ReflectionRecorded: _reflected,
    VerificationPassed: _nothing,
    VerificationFailed: _verification_failed,
    ArtifactRecorded: _artifact_recorded,
    JobRateLimited: _rate_limited,
    QuestionAsked: _asked,
    QuestionAnswered: _answered,
}
"""The fold of each agent event, for ``task.evolve``: the state fields the event changes."""
