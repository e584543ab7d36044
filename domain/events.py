"""The events of a task's stream: frozen, past-tense records of what happened.

Every event carries, besides the library's identity fields (``originator_id`` = the task id,
``originator_version`` = its version in the stream, ``timestamp``), who caused it and why:

- ``actor``: ``"user:<name>"``, ``"api-key:<name>"``, ``"system"`` or ``"agent-run:<id>"``;
- ``correlation_id``: shared by every event that one request or one job produced;
- ``causation_id``: the id of the command or event that caused this one, when there is one.

Events hold plain data only (str, int, bool, None, lists and dicts of them), so the stored form
is JSON. Phases are stored by name (each workflow has its own), statuses by their value.
Times other than ``timestamp`` (``JobFailed.retry_at``) are ISO-8601 strings, so the stored JSON
needs no transcoding of its own. Changing an event's shape means raising its ``class_version``
and adding an ``upcast_v{n}_v{n+1}(state: dict) -> None`` static method that rewrites an old
payload in place; the store applies them on load.
"""

from __future__ import annotations

from eventsourcing.domain import DomainEvent


class TaskEvent(DomainEvent):
    """Base of every event in a task's stream."""

    actor: str
    correlation_id: str
    causation_id: str | None


class TaskCreated(TaskEvent):
    """A task was submitted: the first event of every task stream. ``base_branch`` is the
    branch its work starts from (``None``: the repository's default branch)."""

    class_version = 2

    title: str
    description: str
    workflow: str
    repo: str | None
    phase: str
    base_branch: str | None

    @staticmethod
    def upcast_v1_v2(state: dict) -> None:
        state["base_branch"] = None


class TaskStarted(TaskEvent):
    """Work on the task began (pending → running) in its current phase."""


class SpecUpdated(TaskEvent):
    """Someone edited the task's description (the spec or the PRD)."""

    description: str


class ApprovalRequested(TaskEvent):
    """The current phase's work is done and waits at its approval gate (running → waiting)."""

    phase: str
    summary: str


class PhaseApproved(TaskEvent):
    """A person approved the phase waiting at its gate; ``actor`` says who."""

    phase: str
    comment: str


class ChangesRequested(TaskEvent):
    """A person sent the gated phase back for more work (waiting → running, same phase)."""

    phase: str
    feedback: str


class PhaseCompleted(TaskEvent):
    """The work of a phase without a gate finished."""

    phase: str


class PhaseEntered(TaskEvent):
    """The task moved to ``phase``, the next one of its workflow."""

    phase: str
    previous: str


class TaskPaused(TaskEvent):
    """New work stopped; ``paused_from`` is the status that ``resume`` returns to."""

    reason: str
    paused_from: str


class TaskResumed(TaskEvent):
    """The paused task went back to ``status``."""

    status: str


class TaskFailed(TaskEvent):
    """The task cannot go on without a person: ``reason`` says why."""

    reason: str


class TaskRetried(TaskEvent):
    """A person sent the failed task back to work in its current phase."""


class TaskCancelled(TaskEvent):
    """The task was stopped for good."""

    reason: str


class TaskCompleted(TaskEvent):
    """The last phase of the workflow was approved (or finished): the task is done."""


# -- the job queue (see queue.py) ---------------------------------------------------------------


class JobQueued(TaskEvent):
    """A job joined the queue of ``phase``: ``agent`` runs it with the runner-specific ``spec``.

    It may start once every job in ``depends_on`` has succeeded; higher ``priority`` goes first.
    """

    job_id: str
    agent: str
    phase: str
    priority: int
    depends_on: list[str]
    timeout_seconds: float
    max_attempts: int
    spec: dict


class JobStarted(TaskEvent):
    """Attempt ``attempt`` (from 1) of the job began as the agent run ``run_id``."""

    job_id: str
    attempt: int
    run_id: str


class JobSucceeded(TaskEvent):
    """The run ``run_id`` of the job finished well; ``result`` is what the runner reported."""

    job_id: str
    attempt: int
    run_id: str
    result: dict


class JobFailed(TaskEvent):
    """The run ``run_id`` failed (or was ``interrupted``); either way it used up an attempt.

    ``retry_at`` (ISO-8601) is when the next attempt may start. ``None`` means there is none: the
    next event of the same decision says what became of the job (``JobDeadLettered``, or
    ``JobCancelled`` when the task itself has ended).
    """

    job_id: str
    attempt: int
    run_id: str
    reason: str
    interrupted: bool
    retry_at: str | None


class JobDeadLettered(TaskEvent):
    """The job used all its attempts and waits for a person to ``retry_job`` it."""

    job_id: str
    reason: str


class JobRequeued(TaskEvent):
    """A person retried the dead-lettered (or held) job: it is pending again with all its
    attempts."""

    job_id: str


class JobHeld(TaskEvent):
    """A person interrupted the run ``run_id``: its agent was stopped and the job waits for a
    person (retry, skip or cancel). Attempt ``attempt`` does not count against the job."""

    job_id: str
    run_id: str
    attempt: int
    reason: str


class JobSkipped(TaskEvent):
    """A person skipped the job: it will not run, and counts as finished for its phase."""

    job_id: str
    reason: str


class JobCancelled(TaskEvent):
    """The job will not run (again)."""

    job_id: str
    reason: str


class WorkspaceCreated(TaskEvent):
    """A working copy of ``repo`` at ``base_commit`` was made at ``path`` on ``branch``."""

    workspace_id: str
    job_id: str | None
    path: str
    branch: str
    repo: str
    base_commit: str


class WorkspaceCommitted(TaskEvent):
    """The work in the workspace was committed as ``commit``."""

    workspace_id: str
    commit: str
    message: str
    files: list[str]


class WorkspaceRemoved(TaskEvent):
    """The workspace's working copy was deleted."""

    workspace_id: str
    reason: str


class RepositoryUnavailable(TaskEvent):
    """``repo`` could not be reached (missing, or it cannot be cloned); ``reason`` says why."""

    repo: str
    reason: str


class RepositoryChanged(TaskEvent):
    """A person pointed the task at the repository ``repo`` (was ``previous``); the task's
    branch, made in the old one, is forgotten."""

    repo: str
    previous: str | None


class BranchCreated(TaskEvent):
    """The task's branch ``name`` (``ipa/<task8>``) was made at ``base_commit``, the newest
    commit of the branch ``base``; the task's jobs land their commits on it."""

    name: str
    base: str
    base_commit: str


class BranchAdvanced(TaskEvent):
    """The commit of job ``job_id`` landed on the task's branch: its newest commit is now
    ``commit`` (was ``previous``)."""

    job_id: str
    commit: str
    previous: str


class BranchConflicted(TaskEvent):
    """The run ``run_id`` of job ``job_id`` succeeded, but its changes conflict in ``files``
    with the work that landed on the task's branch (at ``head``) since it started; nothing
    landed. ``learning`` joins the continuity log, and a ``JobFailed`` follows."""

    job_id: str
    run_id: str
    attempt: int
    head: str
    files: list[str]
    learning: str


# -- agents (see agents.py) ---------------------------------------------------------------------


class ContextPrepared(TaskEvent):
    """*Reason*: the run's context was built from ``sections``; ``dropped`` did not fit.
    ``memories`` are the ids of the memories it holds (``domain/memory.py``), in prompt order;
    ``memory_problem`` says why the run got none when memory could not be read."""

    class_version = 2

    job_id: str
    run_id: str
    attempt: int
    sections: list[str]
    dropped: list[str]
    tokens: int
    budget_tokens: int
    memories: list[str]
    memory_problem: str | None

    @staticmethod
    def upcast_v1_v2(state: dict) -> None:
        state["memories"] = []
        state["memory_problem"] = None


class UsageRecorded(TaskEvent):
    """The run ``run_id`` of ``agent`` used these tokens and cost ``cost_usd`` US dollars."""

    job_id: str
    run_id: str
    agent: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: float


class BudgetSet(TaskEvent):
    """The task may spend at most ``limit_usd`` (``None``: no limit)."""

    limit_usd: float | None


class BudgetReached(TaskEvent):
    """What the task spent reached its budget; the next event pauses it."""

    limit_usd: float
    spent_usd: float


class ReflectionRecorded(TaskEvent):
    """*Reflect*: what the run did and what it learned."""

    job_id: str
    run_id: str
    attempt: int
    summary: str
    learnings: list[str]


class VerificationPassed(TaskEvent):
    """*Verify*: every check of the run's work passed."""

    job_id: str
    run_id: str
    attempt: int
    checks: list[dict]


class VerificationFailed(TaskEvent):
    """*Verify*: a check of the run's work failed; ``learning`` joins the continuity log."""

    job_id: str
    run_id: str
    attempt: int
    checks: list[dict]
    learning: str


class ArtifactRecorded(TaskEvent):
    """The job made the artifact ``name`` (``spec``, ``plan``, ...) of the task."""

    job_id: str
    name: str
    phase: str
    content: str


class JobRateLimited(TaskEvent):
    """The run was refused by a rate limit or an outage: the job waits until ``retry_at``
    (``wait_seconds``, the ``consecutive``-th limit in a row); the attempt does not count."""

    job_id: str
    run_id: str
    attempt: int
    reason: str
    wait_seconds: float
    retry_at: str
    consecutive: int


class QuestionAsked(TaskEvent):
    """An agent asked a person ``question``; its job waits for the answer."""

    question_id: str
    job_id: str
    run_id: str
    question: str


class QuestionAnswered(TaskEvent):
    """A person (``actor``) answered the question ``question_id``."""

    question_id: str
    answer: str
