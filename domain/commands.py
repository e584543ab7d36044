"""The commands a task accepts: imperative requests that ``task.decide`` turns into events.

A command is plain, frozen data. Each class names itself once, in ``name``: that string is the
trigger of the workflow machines (``workflows.py`` builds its tables from these attributes) and the
word used in error messages ("cannot approve: ..."). Input is checked by ``decide``, not here, so
a malformed command can still be built, logged and refused with an ``InvalidCommand``.

The job commands (``JOB_COMMANDS``: the queue, its workspaces and repository) are not workflow
moves: they never change the task's phase or status, so the machines do not know them and
``allowed_commands`` does not list them. ``queue.py`` and ``workspaces.py`` say when each is
accepted.

``Context`` carries what a decision needs from outside the domain: who asks, the current time and
the ids that tie the resulting events to the request that caused them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar


@dataclass(frozen=True)
class Context:
    """Who is asking, when, and on behalf of which request.

    ``now`` must be timezone-aware UTC: it becomes the timestamp of every event the command
    produces, and a naive time would be read differently by every reader.
    """

    actor: str
    now: datetime
    correlation_id: str
    causation_id: str | None = None

    def __post_init__(self) -> None:
        # These are programming errors of the caller, not bad user input: ValueError, not a
        # DomainError, so they never turn into a polite 4xx.
        if not self.actor.strip():
            raise ValueError("Context.actor must not be blank")
        if not self.correlation_id.strip():
            raise ValueError("Context.correlation_id must not be blank")
        if self.now.tzinfo is None or self.now.utcoffset() != timedelta(0):
            raise ValueError(f"Context.now must be timezone-aware UTC, got {self.now!r}")


@dataclass(frozen=True)
class Command:
    """Base of every task command; ``name`` is the command's word in triggers and errors."""

    name: ClassVar[str]


@dataclass(frozen=True)
class CreateTask(Command):
    """Submit a new task (or project) that will run through ``workflow``."""

    name: ClassVar[str] = "create_task"

    title: str
    description: str
    workflow: str = "task"
    repo: str | None = None
    base_branch: str | None = None


@dataclass(frozen=True)
class StartTask(Command):
    """Begin work on a pending task in its first phase."""

    name: ClassVar[str] = "start"


@dataclass(frozen=True)
class UpdateSpec(Command):
    """Replace the task's description (its spec, or a project's PRD)."""

    name: ClassVar[str] = "update_spec"

    description: str


@dataclass(frozen=True)
class RequestApproval(Command):
    """Put the current gated phase's work in front of a person; ``summary`` says what was done."""

    name: ClassVar[str] = "request_approval"

    summary: str = ""


@dataclass(frozen=True)
class Approve(Command):
    """Accept the phase waiting at its gate and move on."""

    name: ClassVar[str] = "approve"

    comment: str = ""


@dataclass(frozen=True)
class RequestChanges(Command):
    """Send the phase waiting at its gate back for more work; ``feedback`` says what to change."""

    name: ClassVar[str] = "request_changes"

    feedback: str


@dataclass(frozen=True)
class CompletePhase(Command):
    """Finish the current phase that has no gate and move on."""

    name: ClassVar[str] = "complete_phase"


@dataclass(frozen=True)
class Pause(Command):
    """Stop new work for now; ``resume`` brings the task back to where it was."""

    name: ClassVar[str] = "pause"

    reason: str = ""


@dataclass(frozen=True)
class Resume(Command):
    """Return a paused task to the status it was paused from."""

    name: ClassVar[str] = "resume"


@dataclass(frozen=True)
class Cancel(Command):
    """Stop the task for good."""

    name: ClassVar[str] = "cancel"

    reason: str = ""


@dataclass(frozen=True)
class Fail(Command):
    """Record that the task cannot go on without a person; ``reason`` says why."""

    name: ClassVar[str] = "fail"

    reason: str


@dataclass(frozen=True)
class Retry(Command):
    """Send a failed task back to work in the phase where it failed."""

    name: ClassVar[str] = "retry"


# -- the job queue ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueJob(Command):
    """Add a job to the queue of ``phase`` (``None``: the current phase) for ``agent`` to run.

    It waits until every job in ``depends_on`` has succeeded; among ready jobs, higher
    ``priority`` starts first, then the one queued first. Each attempt may take
    ``timeout_seconds``; after ``max_attempts`` failed attempts the job is dead-lettered.
    ``spec`` is the runner's JSON (e.g. ``{"command": ["python", "x.py"]}``).
    """

    name: ClassVar[str] = "queue_job"

    job_id: str
    agent: str
    priority: int = 0
    depends_on: Sequence[str] = ()
    timeout_seconds: float = 3600.0
    max_attempts: int = 5
    spec: dict[str, Any] = field(default_factory=dict)
    phase: str | None = None


@dataclass(frozen=True)
class StartJob(Command):
    """Start the next attempt of a ready job as the agent run ``run_id``."""

    name: ClassVar[str] = "start_job"

    job_id: str
    run_id: str


@dataclass(frozen=True)
class CompleteJob(Command):
    """Record that the run ``run_id`` of the job succeeded, with the runner's ``result``;
    ``landed`` is the task branch's newest commit once the run's work is on it (one record:
    a job is never succeeded with its work off the branch)."""

    name: ClassVar[str] = "complete_job"

    job_id: str
    run_id: str
    result: dict[str, Any] = field(default_factory=dict)
    landed: str | None = None


@dataclass(frozen=True)
class FailJob(Command):
    """Record that the run ``run_id`` of the job failed, or was ``interrupted`` (it counts too).

    ``jitter``, in [0, 1), spreads the retries of many jobs (see ``jobs.backoff_delay``); the
    caller draws it, so the decision stays replayable.
    """

    name: ClassVar[str] = "fail_job"

    job_id: str
    run_id: str
    reason: str
    interrupted: bool = False
    jitter: float = 0.0


@dataclass(frozen=True)
class RetryJob(Command):
    """Put a dead-lettered job back in the queue with all its attempts."""

    name: ClassVar[str] = "retry_job"

    job_id: str


@dataclass(frozen=True)
class HoldJob(Command):
    """Record that a person interrupted the run ``run_id`` of the job: it waits for a person
    (``retry_job``, ``skip_job``, ``cancel_job``) and the attempt does not count."""

    name: ClassVar[str] = "hold_job"

    job_id: str
    run_id: str
    reason: str = "interrupted"


@dataclass(frozen=True)
class SkipJob(Command):
    """Give up on a job that waits (dead, held, pending or failed): it will not run, and it
    counts as finished for its phase, so the phase can complete without it."""

    name: ClassVar[str] = "skip_job"

    job_id: str
    reason: str = ""


@dataclass(frozen=True)
class CancelJob(Command):
    """Take a job out of the queue for good (a running one is interrupted by its pod)."""

    name: ClassVar[str] = "cancel_job"

    job_id: str
    reason: str = ""


@dataclass(frozen=True)
class RecordWorkspace(Command):
    """Record that a working copy of ``repo`` was made for ``job_id`` (or for the task)."""

    name: ClassVar[str] = "record_workspace"

    workspace_id: str
    job_id: str | None
    path: str
    branch: str
    repo: str
    base_commit: str


@dataclass(frozen=True)
class RecordCommit(Command):
    """Record that the work in a workspace was committed as ``commit``."""

    name: ClassVar[str] = "record_commit"

    workspace_id: str
    commit: str
    message: str
    files: Sequence[str] = ()


@dataclass(frozen=True)
class RemoveWorkspace(Command):
    """Record that a workspace's working copy was deleted."""

    name: ClassVar[str] = "remove_workspace"

    workspace_id: str
    reason: str = ""


@dataclass(frozen=True)
class RecordBranch(Command):
    """Record that the task's branch ``name`` was made at ``base_commit`` of branch ``base``."""

    name: ClassVar[str] = "record_branch"

    branch: str
    base: str
    base_commit: str


@dataclass(frozen=True)
class RecordBranchConflict(Command):
    """Record that the run ``run_id`` of the job succeeded but its changes conflict, in
    ``files``, with the work that landed on the task's branch (now at ``head``) since the run
    started: the attempt fails, and its retry starts from ``head`` knowing why."""

    name: ClassVar[str] = "record_branch_conflict"

    job_id: str
    run_id: str
    head: str
    files: Sequence[str]
    jitter: float = 0.0


@dataclass(frozen=True)
class RecordRepositoryUnavailable(Command):
    """Record that ``repo`` could not be reached (missing, or it cannot be cloned)."""

    name: ClassVar[str] = "record_repository_unavailable"

    repo: str
    reason: str


@dataclass(frozen=True)
class SetRepo(Command):
    """Point the task at another repository (a local path or a git URL): how a person fixes a
    repository the task cannot use. Allowed until a job's work has landed on the task's
    branch (the branch belongs to the old repository)."""

    name: ClassVar[str] = "set_repo"

    repo: str


# -- agents: the RARV cycle of a job, usage and cost, rate limits, questions -------------------


@dataclass(frozen=True)
class RecordContext(Command):
    """*Reason*: the context of the run ``run_id`` was built from ``sections`` (their names, in
    prompt order) in about ``tokens`` tokens of a ``budget_tokens`` budget; ``dropped`` names
    what did not fit and was left out or summarised."""

    name: ClassVar[str] = "record_context"

    job_id: str
    run_id: str
    sections: Sequence[str]
    dropped: Sequence[str] = ()
    tokens: int = 0
    budget_tokens: int = 0
    memories: Sequence[str] = ()
    memory_problem: str | None = None


@dataclass(frozen=True)
class RecordUsage(Command):
    """The tokens and cost the run ``run_id`` of ``agent`` used (model ``model``)."""

    name: ClassVar[str] = "record_usage"

    job_id: str
    run_id: str
    agent: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True)
class RecordReflection(Command):
    """*Reflect*: what the run did (``summary``) and what it learned (``learnings``)."""

    name: ClassVar[str] = "record_reflection"

    job_id: str
    run_id: str
    summary: str
    learnings: Sequence[str] = ()


@dataclass(frozen=True)
class RecordVerification(Command):
    """*Verify*: the checks run on the run's work; each is ``{"command", "exit_code",
    "passed", "output", "duration_seconds"}``. A failure becomes a learning of the job."""

    name: ClassVar[str] = "record_verification"

    job_id: str
    run_id: str
    checks: Sequence[dict[str, Any]]


@dataclass(frozen=True)
class RecordArtifact(Command):
    """A named piece of the task's work (``spec``, ``plan``, ``review``, ``summary``) made by
    the job; a newer one of the same name replaces it."""

    name: ClassVar[str] = "record_artifact"

    job_id: str
    artifact: str
    content: str


@dataclass(frozen=True)
class RecordRateLimit(Command):
    """The run ``run_id`` was refused by the model's rate limit (or an outage): the job waits
    ``base_seconds · 2^(n-1)`` (capped at ``cap_seconds``) for its n-th limit in a row, or
    until ``resets_at`` (ISO-8601) when the provider said when, and the attempt does not
    count."""

    name: ClassVar[str] = "record_rate_limit"

    job_id: str
    run_id: str
    reason: str
    base_seconds: float = 60.0
    cap_seconds: float = 3600.0
    resets_at: str | None = None


@dataclass(frozen=True)
class AskQuestion(Command):
    """The run ``run_id`` ended asking a person ``question``; the job waits for the answer
    (the attempt does not count)."""

    name: ClassVar[str] = "ask_question"

    job_id: str
    run_id: str
    question_id: str
    question: str


@dataclass(frozen=True)
class AnswerQuestion(Command):
    """A person answers an agent's question; the job's next run sees the answer."""

    name: ClassVar[str] = "answer_question"

    question_id: str
    answer: str


@dataclass(frozen=True)
class SetBudget(Command):
    """Cap what the task may spend on models, in US dollars (``None``: no cap). Raising it
    above what was spent resumes a task paused by its budget."""

    name: ClassVar[str] = "set_budget"

    limit_usd: float | None


AGENT_COMMANDS: tuple[type[Command], ...] = (
    RecordContext,
    RecordUsage,
    RecordReflection,
    RecordVerification,
    RecordArtifact,
    RecordRateLimit,
    AskQuestion,
    AnswerQuestion,
    SetBudget,
)
"""The commands of agent runs and what they cost: never workflow moves."""

JOB_COMMANDS: tuple[type[Command], ...] = (
    QueueJob,
    StartJob,
    CompleteJob,
    FailJob,
    RetryJob,
    CancelJob,
    HoldJob,
    SkipJob,
    RecordWorkspace,
    RecordCommit,
    RemoveWorkspace,
    RecordBranch,
    RecordBranchConflict,
    RecordRepositoryUnavailable,
    SetRepo,
)
"""The commands of the job queue and its workspaces: never workflow moves."""

TASK_COMMANDS: tuple[type[Command], ...] = (
    CreateTask,
    StartTask,
    UpdateSpec,
    RequestApproval,
    Approve,
    RequestChanges,
    CompletePhase,
    Pause,
    Resume,
    Cancel,
    Fail,
    Retry,
    *JOB_COMMANDS,
    *AGENT_COMMANDS,
)
"""Every command class: the workflow commands in the order a task usually meets them, then
``JOB_COMMANDS`` and ``AGENT_COMMANDS`` (then the sync engine's and the backlog's, added
below)."""

# -- the sync engine, a project's backlog, archive, clone and fork (their modules build on
# Command: imported last; archive.py and lineage.py decide the last two) ----------------------

from .archive_commands import ARCHIVE_COMMANDS, Archive, Unarchive  # noqa: E402
from .backlog_commands import (  # noqa: E402
    BACKLOG_COMMANDS,
    AddBacklogItem,
    ApproveBacklogChange,
    ChangeBacklogItem,
    DropBacklogItem,
    RejectBacklogChange,
    ReorderBacklog,
)
from .children_commands import (  # noqa: E402
    CHILD_COMMANDS,
    CancelItem,
    RetryItem,
    SetApprovalPolicy,
    SetMaxChildren,
    SkipItem,
)
from .lineage_commands import LINEAGE_COMMANDS, CloneTask, ForkTask  # noqa: E402
from .sync_commands import (  # noqa: E402
    SYNC_COMMANDS,
    ApproveUpdate,
    ConfigureSync,
    ReturnToPhase,
    SyncNow,
)

TASK_COMMANDS = (*TASK_COMMANDS, ReturnToPhase, *SYNC_COMMANDS, *BACKLOG_COMMANDS,
                 *CHILD_COMMANDS, *ARCHIVE_COMMANDS, *LINEAGE_COMMANDS)

PERSON_COMMANDS: tuple[type[Command], ...] = (
    CreateTask,
    UpdateSpec,
    Approve,
    RequestChanges,
    ReturnToPhase,
    Pause,
    Resume,
    Cancel,
    Retry,
    QueueJob,
    RetryJob,
    CancelJob,
    SkipJob,
    AnswerQuestion,
    SetBudget,
    SetRepo,
    ConfigureSync,
    ApproveUpdate,
    SyncNow,
    AddBacklogItem,
    ChangeBacklogItem,
    DropBacklogItem,
    ReorderBacklog,
    ApproveBacklogChange,
    RejectBacklogChange,
    SetMaxChildren,
    RetryItem,
    SkipItem,
    CancelItem,
    SetApprovalPolicy,
    Archive,
    Unarchive,
    CloneTask,
    ForkTask,
)
"""The commands a person may give (through the API and the pages): the decisions at the
gates, steering the task and its jobs, answers, the budget, the sync settings, the edits
of a project's backlog, archiving a finished task, and cloning or forking a task (``clone``
and ``fork``, like ``create_task``, begin a new task's stream).

Every other command of ``TASK_COMMANDS`` is recorded by ipa itself — the pod's scheduler
(``start``, ``request_approval``, ``complete_phase``, ``fail``, the runs of jobs), its agents
(usage, context, reflection, verification, artifacts, rate limits, questions), its workspace
manager and its sync engine (the outbox, deliveries, reviews read from outside) — and stands for
something that happened there: accepted from a client, it would be a forged record."""
