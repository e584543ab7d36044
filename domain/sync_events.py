"""The events of the sync engine in a task's stream: its outbox, approvals, deliveries,
incidents, and the changes read from outside systems.

Every change of an outbox entry is one of these events. Payloads are stored as sent (plain
JSON) with their hash (``payload_hash``, see ``outbox.payload_hash``); no event carries a
token. Times other than ``timestamp`` are ISO-8601 strings, as in ``events.py``.
"""

from __future__ import annotations

from .events import TaskEvent


class SyncConfigured(TaskEvent):
    """The outside systems that follow the task changed; ``config`` is the whole new setting
    (connector name → its options, never a credential)."""

    config: dict


class UpdateQueued(TaskEvent):
    """An update of ``target`` (``connector:kind``) joined the outbox, bound to ``payload``.

    ``requires_approval`` is set when the connector's approval gate is on: it will not be sent
    before a person approves exactly this payload (``payload_hash``).
    """

    update_id: str
    connector: str
    kind: str
    target: str
    payload: dict
    payload_hash: str
    requires_approval: bool


class UpdateSuperseded(TaskEvent):
    """A newer update of the same target (``by``) replaced this one before it was sent."""

    update_id: str
    by: str


class UpdateSkipped(TaskEvent):
    """An update was not queued: its payload is identical to what was last delivered."""

    update_id: str
    connector: str
    kind: str
    target: str
    payload_hash: str


class UpdateApproved(TaskEvent):
    """A person (``actor``) approved the update with the payload of ``payload_hash``, until
    ``expires_at``."""

    update_id: str
    payload_hash: str
    expires_at: str


class ApprovalExpired(TaskEvent):
    """The approval of the update ran out before it was delivered: it needs approval again."""

    update_id: str


class UpdateDelivered(TaskEvent):
    """The update was published; ``result`` is what later updates of the target need (a pull
    request's number and URL, a comment's id, the commit pushed)."""

    update_id: str
    connector: str
    kind: str
    payload_hash: str
    attempt: int
    result: dict


class UpdateFailed(TaskEvent):
    """Delivering the update failed (attempt ``attempt``): ``reason`` names the connector and
    what went wrong. ``retry_at`` says when it is tried again; ``None``: it is held for a
    person (``sync_now`` tries it again)."""

    update_id: str
    connector: str
    kind: str
    reason: str
    attempt: int
    retry_at: str | None
    status_code: int | None


class SyncRequested(TaskEvent):
    """A person asked to deliver and poll now: waiting retries are due at once."""


class SyncIncident(TaskEvent):
    """Something is wrong with ``connector`` that a person should know: ``kind`` is
    ``repository_not_found``, ``auth``, ``rejected`` or ``transient_errors``; ``reason`` says
    what."""

    connector: str
    kind: str
    reason: str


class PullRequestApproved(TaskEvent):
    """A reviewer (``actor`` = ``github:<login>``) approved the task's pull request."""

    connector: str
    review_id: str
    reviewer: str
    body: str
    commit: str | None
    url: str


class ChangesRequestedOnPullRequest(TaskEvent):
    """A reviewer asked for changes on the pull request; ``comments`` are the review's comments
    (``{path, line, body}``), which become feedback for the next development job."""

    connector: str
    review_id: str
    reviewer: str
    body: str
    comments: list
    commit: str | None
    url: str


class ReviewApplied(TaskEvent):
    """The reaction to the review ``review_id`` happened (the next events of the decision)."""

    review_id: str


class PullRequestMerged(TaskEvent):
    """The task's pull request ``number`` was merged (by ``by``)."""

    connector: str
    number: int
    by: str


class PullRequestClosed(TaskEvent):
    """The task's pull request ``number`` was closed without merging (by ``by``)."""

    connector: str
    number: int
    by: str


class IssueStatusChanged(TaskEvent):
    """Someone (``by``) moved the linked issue to ``status``, outside ipa."""

    connector: str
    issue: str
    status: str
    by: str


class SyncRateLimited(TaskEvent):
    """``connector``'s system asked ipa to slow down: nothing is sent to it, and it is not
    polled, for ``wait_seconds``, until ``until`` (a ``sync_now`` ends the wait early).
    ``reason`` names the limit and where the wait comes from (``retry-after``,
    ``x-ratelimit-reset``, or none given: at least a minute, growing)."""

    connector: str
    reason: str
    wait_seconds: float
    until: str


class RemoteRepositoryRenamed(TaskEvent):
    """The repository ``old`` of ``connector`` answered with a permanent redirect to another
    repository, ``new`` (it was renamed or transferred): later requests go to ``new``."""

    connector: str
    old: str
    new: str
