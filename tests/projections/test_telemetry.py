"""What appended events say, as metrics: :class:`EventMetrics` fed the events the real domain
decides, with the task's state before each append, as a pod's writer would give it.

The registry is the process's own, shared by every test: each test reads what changed, and
names agent types of its own so that other tests cannot move its figures."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from uuid import UUID

from ipa.domain import (
    Approve,
    AskQuestion,
    Cancel,
    Command,
    CompleteJob,
    CompletePhase,
    Context,
    CreateTask,
    Fail,
    FailJob,
    Pause,
    QueueJob,
    RecordRateLimit,
    RecordSyncRateLimit,
    RecordUsage,
    RecordVerification,
    RequestApproval,
    StartJob,
    StartTask,
    TaskState,
    decide,
    fold,
)
from ipa.projections.telemetry import EventMetrics
from ipa.telemetry import REGISTRY

START = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)


def value(metric: str, /, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


class Writer:
    """A task's single writer: decides commands at a given second after :data:`START` and
    hands each append to the metrics, with the state it decided on as the pod's state."""

    def __init__(self, *, share_state: bool = True) -> None:
        self.task_id = uuid.uuid4()
        self.state: TaskState | None = None
        self.share_state = share_state
        self.shown: TaskState | None = None  # what the lookup answers instead, if set
        self.metrics = EventMetrics(self.state_of)

    def state_of(self, task_id: UUID) -> TaskState | None:
        if self.shown is not None:
            return self.shown
        return self.state if self.share_state and task_id == self.task_id else None

    def append(self, seconds: float, *commands: Command) -> None:
        """One append of every command's events (as ``PodState.execute_all`` makes)."""
        ctx = Context(actor="system", now=START + timedelta(seconds=seconds),
                      correlation_id="c", causation_id=None)
        after, events = self.state, []
        for command in commands:
            decided = decide(after, command, ctx, self.task_id)
            events.extend(decided)
            after = fold(decided, after)
        self.metrics.observe(self.task_id, events)  # before the writer folds them in
        self.state = after

    def through_every_phase(self, start: float, step: float) -> float:
        """Approve or complete phase after phase until the task is done; the last time."""
        at = start
        while self.state is not None and self.state.status.value != "completed":
            at += step
            if self.state.phase in ("spec_clarification", "planning", "review"):
                self.append(at, RequestApproval())
                self.append(at, Approve())
            else:
                self.append(at, CompletePhase())
        return at


def agent_type() -> str:
    return f"agent_{uuid.uuid4().hex[:8]}"


def checks(passed: bool) -> Sequence[dict]:
    return [{"command": "pytest", "exit_code": 0 if passed else 1, "passed": passed,
             "output": "", "duration_seconds": 0.1}]


def test_a_completed_task_observes_its_duration_and_each_phase_it_left() -> None:
    count = value("ipa_task_duration_seconds_count", workflow="task", outcome="completed")
    total = value("ipa_task_duration_seconds_sum", workflow="task", outcome="completed")
    spec = value("ipa_phase_duration_seconds_sum", workflow="task", phase="spec_clarification")
    review = value("ipa_phase_duration_seconds_count", workflow="task", phase="review")
    writer = Writer()

    writer.append(0, CreateTask("t", "d"))
    writer.append(5, StartTask())
    end = writer.through_every_phase(5, 100)

    assert writer.state is not None and writer.state.status.value == "completed"
    assert value("ipa_task_duration_seconds_count", workflow="task",
                 outcome="completed") == count + 1
    assert value("ipa_task_duration_seconds_sum", workflow="task",
                 outcome="completed") == total + end
    # Created at 0, spec approved at 105: the gate's wait is the phase's time too.
    assert value("ipa_phase_duration_seconds_sum", workflow="task",
                 phase="spec_clarification") == spec + 105
    # The last phase ends with the task (TaskCompleted, no PhaseEntered of its own).
    assert value("ipa_phase_duration_seconds_count", workflow="task",
                 phase="review") == review + 1


def test_a_failed_and_a_cancelled_task_are_timed_from_their_creation() -> None:
    failed = value("ipa_task_duration_seconds_sum", workflow="task", outcome="failed")
    cancelled = value("ipa_task_duration_seconds_sum", workflow="task", outcome="cancelled")
    writer = Writer()
    writer.append(0, CreateTask("t", "d"))
    writer.append(1, StartTask())

    writer.append(30, Fail(reason="broken"))
    writer.append(90, Cancel(reason="enough"))

    assert value("ipa_task_duration_seconds_sum", workflow="task", outcome="failed") == failed + 30
    assert value("ipa_task_duration_seconds_sum", workflow="task",
                 outcome="cancelled") == cancelled + 90


def test_usage_counts_tokens_and_cost_by_agent_type_and_model() -> None:
    agent = agent_type()
    writer = Writer()
    writer.append(0, CreateTask("t", "d"))
    writer.append(1, StartTask(), QueueJob("j", agent))
    writer.append(2, StartJob("j", "run-1"))

    writer.append(3, RecordUsage("j", "run-1", agent, "claude-x", input_tokens=100,
                                 output_tokens=20, cache_read_tokens=7, cost_usd=0.25))
    writer.append(4, RecordUsage("j", "run-1", agent, "claude-y", input_tokens=1,
                                 output_tokens=2, cost_usd=0.5))
    writer.append(5, RecordUsage("j", "run-1", agent, "", input_tokens=3, output_tokens=0))

    tokens = {kind: value("ipa_agent_tokens_total", agent=agent, model="claude-x", kind=kind)
              for kind in ("input", "output", "cache_read", "cache_write")}
    assert tokens == {"input": 100, "output": 20, "cache_read": 7, "cache_write": 0}
    assert value("ipa_agent_cost_usd_total", agent=agent, model="claude-x") == 0.25
    assert value("ipa_agent_cost_usd_total", agent=agent, model="claude-y") == 0.5
    assert value("ipa_agent_tokens_total", agent=agent, model="claude-y", kind="output") == 2
    # No model named (the agent type has none): the CLI's default.
    assert value("ipa_agent_tokens_total", agent=agent, model="default", kind="input") == 3


def test_job_runs_and_verifications_are_counted_by_agent_type_and_outcome() -> None:
    agent = agent_type()
    writer = Writer()
    writer.append(0, CreateTask("t", "d"))
    # Queued and started in one append: its agent type comes from the append itself.
    writer.append(1, StartTask(), QueueJob("j", agent, max_attempts=5), StartJob("j", "r1"))
    writer.append(2, RecordVerification("j", "r1", checks(passed=False)))
    writer.append(2, FailJob("j", "r1", "verification failed"))
    writer.append(3, StartJob("j", "r2"))
    writer.append(4, FailJob("j", "r2", "stopped", interrupted=True))
    writer.append(20, StartJob("j", "r3"))
    writer.append(21, RecordRateLimit("j", "r3", "429", base_seconds=30))
    writer.append(60, StartJob("j", "r4"))
    writer.append(61, AskQuestion("j", "r4", "q1", "which one?"))

    assert writer.state is not None
    outcomes = {outcome: value("ipa_job_runs_total", agent=agent, outcome=outcome)
                for outcome in ("failed", "interrupted", "rate_limited", "question", "succeeded")}
    assert outcomes == {"failed": 1, "interrupted": 1, "rate_limited": 1, "question": 1,
                        "succeeded": 0}
    assert value("ipa_verifications_total", agent=agent, outcome="failed") == 1
    assert value("ipa_rate_limit_wait_seconds_count", source="agent", name=agent) == 1
    assert value("ipa_rate_limit_wait_seconds_sum", source="agent", name=agent) == 30


def test_a_job_that_succeeds_is_counted_with_its_passed_verification() -> None:
    agent = agent_type()
    writer = Writer()
    writer.append(0, CreateTask("t", "d"))
    writer.append(1, StartTask(), QueueJob("j", agent))
    writer.append(2, StartJob("j", "r1"))

    writer.append(3, RecordVerification("j", "r1", checks(passed=True)))
    writer.append(4, CompleteJob("j", "r1", {"ok": True}))

    assert value("ipa_job_runs_total", agent=agent, outcome="succeeded") == 1
    assert value("ipa_verifications_total", agent=agent, outcome="passed") == 1


def test_a_sync_rate_limit_observes_its_wait_by_connector() -> None:
    before = value("ipa_rate_limit_wait_seconds_sum", source="sync", name="github")
    count = value("ipa_rate_limit_wait_seconds_count", source="sync", name="github")
    writer = Writer()
    writer.append(0, CreateTask("t", "d"))

    writer.append(1, RecordSyncRateLimit("github", "secondary rate limit", 120))

    assert value("ipa_rate_limit_wait_seconds_count", source="sync", name="github") == count + 1
    assert value("ipa_rate_limit_wait_seconds_sum", source="sync", name="github") == before + 120


def test_without_the_state_before_an_append_durations_are_left_out_and_agents_unknown() -> None:
    """A state at another version than the append follows is not the one it was decided on
    (here: none is given after creation); what needs it is left out, never guessed."""
    agent = agent_type()
    failed = value("ipa_task_duration_seconds_count", workflow="task", outcome="failed")
    unknown = value("ipa_job_runs_total", agent="unknown", outcome="failed")
    writer = Writer(share_state=False)
    writer.append(0, CreateTask("t", "d"))
    writer.append(1, StartTask(), QueueJob("j", agent))
    writer.append(2, StartJob("j", "r1"))

    writer.append(3, FailJob("j", "r1", "exit 1"))
    writer.append(4, Fail(reason="broken"))

    assert value("ipa_job_runs_total", agent="unknown", outcome="failed") == unknown + 1
    assert value("ipa_job_runs_total", agent=agent, outcome="failed") == 0
    assert value("ipa_task_duration_seconds_count", workflow="task", outcome="failed") == failed


def test_a_stale_state_is_not_used() -> None:
    agent = agent_type()
    writer = Writer()
    writer.append(0, CreateTask("t", "d"))
    writer.append(1, StartTask(), QueueJob("j", agent))
    writer.append(2, StartJob("j", "r1"))
    writer.shown = writer.state
    writer.append(3, Pause(reason="lunch"))  # the lookup now answers a version behind

    writer.append(4, FailJob("j", "r1", "exit 1"))

    assert value("ipa_job_runs_total", agent=agent, outcome="failed") == 0


def test_a_task_moved_through_phases_in_one_append_times_each_from_the_events() -> None:
    """Created, started and approved past its first gate in one append, with no state to look
    up: the phases it entered and left are timed from the append's own events."""
    count = value("ipa_phase_duration_seconds_count", workflow="task", phase="spec_clarification")
    writer = Writer(share_state=False)

    writer.append(0, CreateTask("t", "d"), StartTask(), RequestApproval(), Approve())

    assert writer.state is not None and writer.state.phase == "planning"
    assert value("ipa_phase_duration_seconds_count", workflow="task",
                 phase="spec_clarification") == count + 1


def test_events_of_no_interest_count_nothing() -> None:
    def samples() -> dict[tuple, float]:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in REGISTRY.collect() if family.name.startswith("ipa_")
                for s in family.samples}

    before = samples()
    writer = Writer()
    writer.append(0, CreateTask("t", "d"))  # times nothing yet: no phase or task has ended

    writer.append(1, StartTask(), Pause(reason="p"))

    assert samples() == before
