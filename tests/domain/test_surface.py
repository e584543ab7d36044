"""The domain's public names, and the rule that it imports nothing heavier than its brief allows."""

from __future__ import annotations

import ast
from pathlib import Path

import ipa.domain

DOMAIN = Path(ipa.domain.__file__).parent

# DESIGN.md §2: domain/ may import the stdlib, transitions and eventsourcing.domain only.
ALLOWED_OUTSIDE_STDLIB = {"transitions", "eventsourcing.domain"}
FORBIDDEN_STDLIB = {"random", "secrets", "time", "os", "socket", "subprocess", "asyncio", "io"}


SYNC_NAMES = [
    "ReturnToPhase", "ConfigureSync", "QueueUpdate", "ApproveUpdate", "SyncNow",
    "ExpireApproval", "RecordDelivery", "RecordDeliveryFailure", "RecordSyncIncident",
    "RecordReview", "ApplyReview", "RecordPullRequestState", "RecordIssueStatus",
    "SYNC_COMMANDS", "SyncConfigured", "UpdateQueued", "UpdateSuperseded", "UpdateSkipped",
    "UpdateApproved", "ApprovalExpired", "UpdateDelivered", "UpdateFailed", "SyncRequested",
    "SyncIncident", "PullRequestApproved", "ChangesRequestedOnPullRequest", "ReviewApplied",
    "PullRequestMerged", "PullRequestClosed", "IssueStatusChanged", "Outbox", "OutboxEntry",
    "UpdateStatus", "UpdateApproval", "Delivery", "Incident", "Review", "payload_hash",
    "applies", "pushed_commit", "CONNECTOR_KINDS", "REVIEW_PHASE", "RETURN_PHASE",
    "REVIEW_GATES", "ReviewGate", "review_gate",
    "RecordSyncRateLimit", "RecordRepositoryRename", "SyncRateLimited", "RemoteRepositoryRenamed",
]  # fmt: skip


BRANCH_NAMES = [
    "RecordBranch", "RecordBranchConflict", "BranchCreated", "BranchAdvanced", "BranchConflicted",
    "Branch", "job_commit",
]


BACKLOG_NAMES = [
    "ProposeBacklog", "AddBacklogItem", "ChangeBacklogItem", "DropBacklogItem", "ReorderBacklog",
    "BACKLOG_COMMANDS", "BacklogProposed", "BacklogApproved", "BacklogItemAdded",
    "BacklogItemChanged", "BacklogItemDropped", "BacklogReordered", "Backlog", "BacklogItem",
    "BacklogItemStatus", "BacklogInvalid", "parse_backlog", "backlog_phases", "ready_items",
    "phase_items_done", "ProposeBacklogChange", "ApproveBacklogChange", "RejectBacklogChange",
    "BacklogChangeProposed", "BacklogChangeApproved", "BacklogChangeRejected", "BacklogChange",
    "plan_phases", "replan_due",
]  # fmt: skip


CHILD_NAMES = [
    "CHILD_COMMANDS", "CreateChildTask", "SpawnChild", "RecordChildFinished", "SetMaxChildren",
    "RetryItem", "SkipItem", "CancelItem", "SetApprovalPolicy", "TaskLinked", "ChildSpawned",
    "ChildFinished", "ChildMerged", "ChildConflicted", "MaxChildrenSet",
    "RecordChildConflict", "ProposeCycle", "CycleProposed", "ItemRetried", "ItemSkipped",
    "ItemCancelled",
    "ApprovalPolicySet", "MAX_CHILDREN_DEFAULT", "POLICIES", "approval_policy",
    "running_children",
]


TASK_OPERATION_NAMES = [
    "ARCHIVE_COMMANDS", "Archive", "Unarchive", "TaskArchived", "TaskUnarchived",
    "LINEAGE_COMMANDS", "CloneTask", "ForkTask", "TaskCloned", "TaskForked", "Origin", "carried",
]


WAY_FORWARD_NAMES = [
    "HoldJob", "SkipJob", "JobHeld", "JobSkipped", "perpetual_due", "Attention",
    "ATTENTION_KINDS", "attention", "crash_attention",
]  # fmt: skip


WEBHOOK_NAMES = [
    "WEBHOOK_LEDGER", "WEBHOOK_EVENT_TYPES", "Message", "TaskFacts", "WebhookDisabled",
    "WebhookEnabled", "WebhookEvent", "WebhookRefused", "WebhookRegistered", "WebhookRemoved",
    "delivery_id", "facts_of", "messages", "new_secret", "observe", "parse_events",
    "parse_secret", "parse_url", "payload", "retry_delay", "subscribed",
]  # fmt: skip


def test_public_names_are_pinned() -> None:
    assert sorted(ipa.domain.__all__) == sorted(
        [
            "Command", "Context", "CreateTask", "StartTask", "UpdateSpec", "RequestApproval",
            "Approve", "RequestChanges", "CompletePhase", "Pause", "Resume", "Cancel", "Fail",
            "Retry", "TASK_COMMANDS", "PERSON_COMMANDS",
            "QueueJob", "StartJob", "CompleteJob", "FailJob", "RetryJob", "CancelJob",
            "RecordWorkspace", "RecordCommit", "RemoveWorkspace", "RecordRepositoryUnavailable",
            "SetRepo", "JOB_COMMANDS",
            "RecordContext", "RecordUsage", "RecordReflection", "RecordVerification",
            "RecordArtifact", "RecordRateLimit", "AskQuestion", "AnswerQuestion", "SetBudget",
            "AGENT_COMMANDS",
            "TaskEvent", "TaskCreated", "TaskStarted", "SpecUpdated", "ApprovalRequested",
            "PhaseApproved", "ChangesRequested", "PhaseCompleted", "PhaseEntered", "TaskPaused",
            "TaskResumed", "TaskFailed", "TaskRetried", "TaskCancelled", "TaskCompleted",
            "JobQueued", "JobStarted", "JobSucceeded", "JobFailed", "JobDeadLettered",
            "JobRequeued", "JobCancelled", "WorkspaceCreated", "WorkspaceCommitted",
            "WorkspaceRemoved", "RepositoryUnavailable", "RepositoryChanged",
            "ContextPrepared", "UsageRecorded", "BudgetSet", "BudgetReached",
            "ReflectionRecorded", "VerificationPassed", "VerificationFailed", "ArtifactRecorded",
            "JobRateLimited", "QuestionAsked", "QuestionAnswered",
            "Usage", "UsageTotals", "Learning", "Question", "Artifact",
            "TaskState", "Approval", "ChangeRequest", "PhaseVisit", "TITLE_MAX_LENGTH",
            "decide", "evolve", "fold",
            "Job", "JobStatus", "Workspace", "FrozenMap", "BlockedJob", "ready_jobs",
            "running_jobs", "blocked_jobs", "timed_out_jobs", "next_retry_at", "phase_jobs_done",
            "backoff_delay", "dependency_cycle", "head_commit", "BACKOFF_BASE", "BACKOFF_CAP",
            "Status", "Phase", "Workflow", "Position", "WORKFLOWS", "get_workflow",
            "allowed_commands", "destination",
            "DomainError", "CommandRejected", "InvalidCommand", "TaskNotFound", "UnknownWorkflow",
            "JobRejected", "JobNotFound", "CredentialsInUrl", "clean_text",
            "MEMORY_LEDGER", "SCOPE_KINDS", "MemoriesEvicted", "MemoryEvent", "MemoryForgotten",
            "MemoryKind", "MemoryPinned", "MemoryRecorded", "parse_scope", "scopes_of",
            *SYNC_NAMES, *BRANCH_NAMES, *WAY_FORWARD_NAMES, *BACKLOG_NAMES, *CHILD_NAMES,
            *TASK_OPERATION_NAMES,
            *WEBHOOK_NAMES,
        ]
    )  # fmt: skip


def test_every_public_name_exists() -> None:
    assert all(hasattr(ipa.domain, name) for name in ipa.domain.__all__)


def _absolute_imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return modules


def test_domain_imports_only_what_its_layer_allows() -> None:
    imported = set().union(*(_absolute_imports(p) for p in DOMAIN.glob("*.py")))
    outside = {m for m in imported if m.split(".")[0] in {"transitions", "eventsourcing"}}
    assert outside <= ALLOWED_OUTSIDE_STDLIB
    assert not {m.split(".")[0] for m in imported} & (
        FORBIDDEN_STDLIB | {"ipa", "psycopg", "asyncpg", "starlette", "anyio"}
    )


# Calls that would read a clock, make an id, draw a random number or touch the outside world.
IMPURE_CALLS = {"now", "utcnow", "today", "time", "uuid1", "uuid4", "open", "print", "input"}


def test_domain_reads_no_clock_and_makes_no_ids() -> None:
    called = set()
    for path in DOMAIN.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                called.add((path.name, name))
    assert {(file, name) for file, name in called if name in IMPURE_CALLS} == set()
