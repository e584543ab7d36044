"""The commands of the sync engine: the outbox, its approval gate, deliveries, incoming changes.

Like the job commands, most of these are not workflow moves: they record what the pod's sync
engine saw or did (an update queued, delivered or failed, a review read from GitHub), so
``allowed_commands`` does not list them and ``sync.py`` says when each is accepted. Two of them
are meant for people through the API: ``approve_update`` and ``sync_now`` (and
``configure_sync``). ``return_to_phase`` is a workflow move (phase-bound, see
``workflows.py``): it sends a task from a gated phase back to an earlier one.

No command here carries a token: connector credentials come from the environment of the
process (see specs/sync), and ``configure_sync`` refuses any key it does not know.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from .commands import Command


@dataclass(frozen=True)
class ConfigureSync(Command):
    """Say which outside systems follow this task (``None`` leaves a connector as it is).

    ``github``: ``{"repo": "owner/name", "approval": true, "base": "main",
    "approval_ttl_seconds": 86400}``; ``jira``: ``{"issue": "KEY-1", "approval": true,
    "statuses": {"review": "In Review", ...}}``; ``git``: ``{"remote": URL, "approval": false}``.
    An empty object removes the connector.
    """

    name: ClassVar[str] = "configure_sync"

    github: dict[str, Any] | None = None
    jira: dict[str, Any] | None = None
    git: dict[str, Any] | None = None


@dataclass(frozen=True)
class QueueUpdate(Command):
    """Put an update for ``connector`` in the outbox, bound to exactly ``payload``.

    ``kind`` says what it changes outside (``pull_request``, ``status_comment``, ``push``,
    ``issue_status``, ``comment``); one connector and kind is one *target*, and a newer update of
    a target supersedes the pending one.
    """

    name: ClassVar[str] = "queue_update"

    update_id: str
    connector: str
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ApproveUpdate(Command):
    """A person approves the pending update ``update_id`` for publishing.

    ``payload_hash``, when given, must be the hash of the payload the person saw: a payload
    that changed since is refused, not approved blindly.
    """

    name: ClassVar[str] = "approve_update"

    update_id: str
    payload_hash: str | None = None


@dataclass(frozen=True)
class SyncNow(Command):
    """Deliver what waits in the outbox and poll the outside systems now, without backoff."""

    name: ClassVar[str] = "sync_now"


@dataclass(frozen=True)
class ExpireApproval(Command):
    """Record that the approval of ``update_id`` has expired (it needs approval again)."""

    name: ClassVar[str] = "expire_approval"

    update_id: str


@dataclass(frozen=True)
class RecordDelivery(Command):
    """Record that ``update_id`` (with the payload of ``payload_hash``) was delivered.

    ``result`` is what the outside system answered that later updates need (a pull request's
    number and URL, a comment's id, the commit pushed).
    """

    name: ClassVar[str] = "record_delivery"

    update_id: str
    payload_hash: str
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordDeliveryFailure(Command):
    """Record that delivering ``update_id`` failed, and why.

    ``retry_at`` (ISO-8601) is when to try again (a timeout, a 5xx, a rate limit); ``None``
    holds the update until a person acts (``sync_now``, or a new update): a wrong token, a
    repository that does not exist, a 422, a rejected push.
    """

    name: ClassVar[str] = "record_delivery_failure"

    update_id: str
    reason: str
    retry_at: str | None = None
    status_code: int | None = None


@dataclass(frozen=True)
class RecordSyncIncident(Command):
    """Record an incident of ``connector``: ``kind`` is ``repository_not_found``,
    ``transient_errors`` (N in a row) or ``auth``; ``reason`` says what happened."""

    name: ClassVar[str] = "record_sync_incident"

    connector: str
    kind: str
    reason: str


@dataclass(frozen=True)
class RecordSyncRateLimit(Command):
    """``connector``'s system refused a request for a rate limit: send nothing to it and poll
    it not for ``wait_seconds`` (the engine's choice: what the system said, else at least a
    minute, growing); ``reason`` names the limit and the wait."""

    name: ClassVar[str] = "record_sync_rate_limit"

    connector: str
    reason: str
    wait_seconds: float


@dataclass(frozen=True)
class RecordRepositoryRename(Command):
    """``connector``'s repository ``old`` moved permanently to ``new`` (renamed or
    transferred, as a redirect said): later requests use ``new``."""

    name: ClassVar[str] = "record_repository_rename"

    connector: str
    old: str
    new: str


@dataclass(frozen=True)
class RecordReview(Command):
    """Record a review read from the pull request: ``verdict`` is ``approved`` or
    ``changes_requested``; ``comments`` are its review comments (``{path, line, body}``).

    ``commit`` is the commit the review was given on. When the task stands where the review
    applies (in ``review``, reviewing that commit), the reaction is part of the same decision:
    an approval approves the review gate, changes send the task back to ``development`` with
    the review as feedback. Otherwise the review waits (``apply_review`` later).
    """

    name: ClassVar[str] = "record_review"

    connector: str
    review_id: str
    reviewer: str
    verdict: str
    body: str = ""
    comments: list[dict[str, Any]] = field(default_factory=list)
    commit: str | None = None
    url: str = ""


@dataclass(frozen=True)
class ApplyReview(Command):
    """Apply the reaction of a recorded review that could not apply when it was read."""

    name: ClassVar[str] = "apply_review"

    review_id: str


@dataclass(frozen=True)
class RecordPullRequestState(Command):
    """Record the state of the task's pull request as read: ``open``, ``merged`` or ``closed``."""

    name: ClassVar[str] = "record_pull_request_state"

    connector: str
    number: int
    state: str
    by: str = ""


@dataclass(frozen=True)
class RecordIssueStatus(Command):
    """Record the status of the linked issue as read, and who set it (``by``)."""

    name: ClassVar[str] = "record_issue_status"

    connector: str
    issue: str
    status: str
    by: str = ""


@dataclass(frozen=True)
class ReturnToPhase(Command):
    """Send the task from a gated phase back to the earlier ``phase``, with ``feedback`` for it.

    The feedback becomes a change request of ``phase`` (what its next job must address).
    """

    name: ClassVar[str] = "return_to_phase"

    phase: str
    feedback: str


SYNC_COMMANDS: tuple[type[Command], ...] = (
    ConfigureSync,
    QueueUpdate,
    ApproveUpdate,
    SyncNow,
    ExpireApproval,
    RecordDelivery,
    RecordDeliveryFailure,
    RecordSyncIncident,
    RecordReview,
    ApplyReview,
    RecordPullRequestState,
    RecordIssueStatus,
    RecordSyncRateLimit,
    RecordRepositoryRename,
)
"""The commands of the outbox and the incoming changes: never workflow moves."""
