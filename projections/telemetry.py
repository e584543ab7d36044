"""What the events this process appends say, as Prometheus metrics (:mod:`ipa.telemetry`).

:class:`EventMetrics` is an append observer (``EventStore.observe_appends``): it sees each
append this process commits, once, so every node of a cluster counts what it wrote and
nothing is counted twice. The mapping, by event type:

- ``TaskCompleted`` / ``TaskFailed`` / ``TaskCancelled``: ``ipa_task_duration_seconds``
  (``workflow``, ``outcome``), from the task's ``created_at``;
- ``PhaseEntered`` and ``TaskCompleted``: ``ipa_phase_duration_seconds`` (``workflow``,
  ``phase``) of the phase left, from when it was entered;
- ``JobSucceeded``, ``JobFailed`` (``interrupted`` or not), ``JobHeld``, ``JobRateLimited``,
  ``QuestionAsked``: ``ipa_job_runs_total`` (``agent``, ``outcome``);
- ``UsageRecorded``: ``ipa_agent_tokens_total`` (``agent``, ``model``, ``kind``) and
  ``ipa_agent_cost_usd_total`` (``agent``, ``model``);
- ``VerificationPassed`` / ``VerificationFailed``: ``ipa_verifications_total``;
- ``JobRateLimited`` and ``SyncRateLimited``: ``ipa_rate_limit_wait_seconds`` (``source``
  ``agent`` with the agent type, or ``sync`` with the connector).

Start times and a job's agent type come from the task's state *before* the append: the
``state_of`` lookup (``ipa serve``: the task's pod, which is the stream's single writer and
folds an append in only once it returned). It costs a dictionary lookup and is consulted only
for the events above; a state at another version than the one the append follows is not used
(what needs it is then left uncounted, or counted with agent ``unknown``). Events of the same
append are followed in order: a task created and started at once, or two phases entered in
one append, are timed from the events themselves.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from ipa.domain import (
    JobFailed,
    JobHeld,
    JobQueued,
    JobRateLimited,
    JobSucceeded,
    PhaseEntered,
    QuestionAsked,
    SyncRateLimited,
    TaskCancelled,
    TaskCompleted,
    TaskCreated,
    TaskFailed,
    TaskState,
    UsageRecorded,
    VerificationFailed,
    VerificationPassed,
)
from ipa.telemetry import (
    AGENT_COST,
    AGENT_TOKENS,
    JOB_RUNS,
    PHASE_DURATION,
    RATE_LIMIT_WAIT,
    TASK_DURATION,
    VERIFICATIONS,
)

StateOf = Callable[[UUID], TaskState | None]

UNKNOWN = "unknown"
"""The agent label of a job whose agent type the observer could not learn."""

DEFAULT_MODEL = "default"
"""The model label of usage recorded without a model (the agent type names none: the CLI
chose its own)."""

_TOKEN_KINDS = (("input", "input_tokens"), ("output", "output_tokens"),
                ("cache_read", "cache_read_tokens"), ("cache_write", "cache_write_tokens"))


class _Append:
    """One append being counted: the task as it was before it, followed event by event."""

    __slots__ = ("_state_of", "_stream_id", "_first_version", "_state", "_loaded", "workflow",
                 "created_at", "phase", "entered_at", "agents")

    def __init__(self, state_of: StateOf, stream_id: UUID, first_version: int) -> None:
        self._state_of = state_of
        self._stream_id = stream_id
        self._first_version = first_version
        self._state: TaskState | None = None
        self._loaded = False
        self.workflow: str | None = None
        self.created_at: datetime | None = None
        self.phase: str | None = None
        self.entered_at: datetime | None = None
        self.agents: dict[str, str] = {}  # jobs queued by this append: job id -> agent type

    def before(self) -> None:
        """Learn the task's state before this append (once, and only if an event needs it)."""
        if self._loaded:
            return
        self._loaded = True
        state = self._state_of(self._stream_id)
        if state is None or state.version != self._first_version - 1:
            return
        self._state = state
        self.workflow, self.created_at = state.workflow, state.created_at
        if state.phase_history:
            visit = state.phase_history[-1]
            self.phase, self.entered_at = visit.phase, visit.entered_at

    def start(self, event: TaskCreated) -> None:
        """The append starts the task's stream: there is no state before it."""
        self._loaded = True
        self.workflow, self.created_at = event.workflow, event.timestamp
        self.phase, self.entered_at = event.phase, event.timestamp

    def agent(self, job_id: str) -> str:
        if job_id in self.agents:
            return self.agents[job_id]
        self.before()
        job = None if self._state is None else self._state.jobs.get(job_id)
        return UNKNOWN if job is None else job.agent

    def leave_phase(self, at: datetime) -> None:
        """The task leaves its current phase at ``at``: observe how long it was in it."""
        self.before()
        if self.workflow is not None and self.phase is not None and self.entered_at is not None:
            PHASE_DURATION.labels(workflow=self.workflow, phase=self.phase).observe(
                _seconds(self.entered_at, at))

    def end_task(self, outcome: str, at: datetime) -> None:
        self.before()
        if self.workflow is not None and self.created_at is not None:
            TASK_DURATION.labels(workflow=self.workflow, outcome=outcome).observe(
                _seconds(self.created_at, at))


def _seconds(start: datetime, end: datetime) -> float:
    return max(0.0, (end - start).total_seconds())


# -- the mapping: one function per event type ----------------------------------------------------


def _created(append: _Append, event: TaskCreated) -> None:
    append.start(event)


def _phase_entered(append: _Append, event: PhaseEntered) -> None:
    append.leave_phase(event.timestamp)
    append.phase, append.entered_at = event.phase, event.timestamp


def _completed(append: _Append, event: TaskCompleted) -> None:
    append.leave_phase(event.timestamp)  # the last phase ends with the task
    append.phase = None
    append.end_task("completed", event.timestamp)


def _failed(append: _Append, event: TaskFailed) -> None:
    append.end_task("failed", event.timestamp)  # a retry continues the same phase


def _cancelled(append: _Append, event: TaskCancelled) -> None:
    append.end_task("cancelled", event.timestamp)


def _queued(append: _Append, event: JobQueued) -> None:
    append.agents[event.job_id] = event.agent


def _job_outcome(outcome: str) -> Callable[[_Append, JobSucceeded | JobHeld | QuestionAsked],
                                           None]:
    def count(append: _Append, event: JobSucceeded | JobHeld | QuestionAsked) -> None:
        JOB_RUNS.labels(agent=append.agent(event.job_id), outcome=outcome).inc()
    return count


def _job_failed(append: _Append, event: JobFailed) -> None:
    outcome = "interrupted" if event.interrupted else "failed"
    JOB_RUNS.labels(agent=append.agent(event.job_id), outcome=outcome).inc()


def _rate_limited(append: _Append, event: JobRateLimited) -> None:
    agent = append.agent(event.job_id)
    JOB_RUNS.labels(agent=agent, outcome="rate_limited").inc()
    RATE_LIMIT_WAIT.labels(source="agent", name=agent).observe(max(0.0, event.wait_seconds))


def _sync_rate_limited(append: _Append, event: SyncRateLimited) -> None:
    RATE_LIMIT_WAIT.labels(source="sync", name=event.connector).observe(
        max(0.0, event.wait_seconds))


def _usage(append: _Append, event: UsageRecorded) -> None:
    model = event.model or DEFAULT_MODEL
    for kind, field in _TOKEN_KINDS:
        tokens = getattr(event, field)
        if tokens:
            AGENT_TOKENS.labels(agent=event.agent, model=model, kind=kind).inc(tokens)
    AGENT_COST.labels(agent=event.agent, model=model).inc(max(0.0, event.cost_usd))


def _verification(outcome: str) -> Callable[[_Append, VerificationPassed | VerificationFailed],
                                            None]:
    def count(append: _Append, event: VerificationPassed | VerificationFailed) -> None:
        VERIFICATIONS.labels(agent=append.agent(event.job_id), outcome=outcome).inc()
    return count


_HANDLERS: dict[type, Callable[[_Append, Any], None]] = {
    TaskCreated: _created,
    PhaseEntered: _phase_entered,
    TaskCompleted: _completed,
    TaskFailed: _failed,
    TaskCancelled: _cancelled,
    JobQueued: _queued,
    JobSucceeded: _job_outcome("succeeded"),
    JobFailed: _job_failed,
    JobHeld: _job_outcome("held"),
    QuestionAsked: _job_outcome("question"),
    JobRateLimited: _rate_limited,
    SyncRateLimited: _sync_rate_limited,
    UsageRecorded: _usage,
    VerificationPassed: _verification("passed"),
    VerificationFailed: _verification("failed"),
}


class EventMetrics:
    """Counts what appended events say; give :meth:`observe` to ``store.observe_appends``.

    ``state_of(task_id)``: the task's state as its writer knows it, or ``None`` (see the
    module's docstring); without one, durations are left out and agents are ``unknown``.
    """

    def __init__(self, state_of: StateOf = lambda task_id: None) -> None:
        self._state_of = state_of

    def observe(self, stream_id: UUID, events: Sequence[Any]) -> None:
        """Count one append's ``events`` (of any stream: those of no interest are skipped)."""
        append: _Append | None = None
        for event in events:
            handler = _HANDLERS.get(type(event))
            if handler is None:
                continue
            if append is None:
                append = _Append(self._state_of, stream_id, events[0].originator_version)
            handler(append, event)
