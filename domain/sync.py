"""The sync engine's decisions and folds: configuration, the outbox and its approval gate,
deliveries, incidents, incoming changes, and the ``return_to_phase`` workflow move.

**When each command is accepted.** The outbox commands record facts of the pod's sync engine
(an update queued, delivered, failed; a review read), so they are accepted in any task status,
like the job commands; a fact already recorded (the same review twice, a payload identical to
the unsent one) adds no event. ``approve_update`` is refused for an update that is not waiting
to be sent, or whose payload is not the one the person saw (``payload_hash``).
``record_delivery`` is refused, whoever sends it, for an update the gate has not let through:
approval missing, for another payload, or expired at the time of the decision.

**Outside facts.** ``record_sync_rate_limit`` holds every update of its connector until
``now + wait_seconds`` (``sync_now`` ends it early); ``record_repository_rename``
moves ``github.repo`` to the name the repository answers to now.

**Reviews.** Each workflow that publishes a pull request names its *review gate*
(``REVIEW_GATES``): the gated phase from which the pull request is opened and whose gate its
reviews answer (``task``: ``review``; ``project``: ``deployment``, where a person reviews the
integrated result; ``item``: none, a child's work reaches people through its project's pull
request). A review applies when the task is in that phase and the review was given on the
commit last pushed (or names none): an approval then approves the gate (the task must be
waiting there). Changes requested send a ``task`` back to ``development``
(``return_to_phase``) with the review text and comments as feedback; a ``project``, whose
development is done by its children (all finished by then), gets the gate's own
``request_changes`` instead: it stays in ``deployment`` (waiting there for the review to
apply) and the phase's agent works on the feedback, its commits moving the pull request's
head. A review that does not apply yet is kept (``applied`` false); the pod applies it later
with ``apply_review`` when it does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from .backlog import approve_at_gate
from .commands import Approve, Command, RequestChanges
from .credentials import refuse_credentials
from .decision import Draft, identifier, json_object, number, rejection, text
from .errors import InvalidCommand
from .events import ChangesRequested, PhaseApproved, PhaseEntered, TaskCompleted, TaskEvent
from .outbox import (
    INCIDENT_LIMIT,
    Delivery,
    Incident,
    Outbox,
    OutboxEntry,
    Review,
    UpdateApproval,
    UpdateStatus,
    payload_hash,
)
from .state import TaskState
from .sync_commands import (
    ApplyReview,
    ApproveUpdate,
    ConfigureSync,
    ExpireApproval,
    QueueUpdate,
    RecordDelivery,
    RecordDeliveryFailure,
    RecordIssueStatus,
    RecordPullRequestState,
    RecordRepositoryRename,
    RecordReview,
    RecordSyncIncident,
    RecordSyncRateLimit,
    ReturnToPhase,
    SyncNow,
)
from .sync_events import (
    ApprovalExpired,
    ChangesRequestedOnPullRequest,
    IssueStatusChanged,
    PullRequestApproved,
    PullRequestClosed,
    PullRequestMerged,
    RemoteRepositoryRenamed,
    ReviewApplied,
    SyncConfigured,
    SyncIncident,
    SyncRateLimited,
    SyncRequested,
    UpdateApproved,
    UpdateDelivered,
    UpdateFailed,
    UpdateQueued,
    UpdateSkipped,
    UpdateSuperseded,
)
from .workflows import Status, destination, get_workflow

CONNECTOR_KINDS: dict[str, tuple[str, ...]] = {
    "github": ("pull_request", "status_comment"),
    "jira": ("issue_status", "comment"),
    "git": ("push",),
}
"""The kinds of update each connector delivers."""

INCIDENT_KINDS = ("repository_not_found", "auth", "transient_errors", "rejected")

DEFAULT_APPROVAL_TTL = 86400.0
"""Seconds an approval holds unless the connector's ``approval_ttl_seconds`` says otherwise."""

REVIEW_PHASE = "review"
"""The phase whose gate the pull request's reviews answer, in the ``task`` workflow."""

RETURN_PHASE = "development"
"""Where a review requesting changes sends a ``task``."""


@dataclass(frozen=True)
class ReviewGate:
    """Where a workflow publishes its work for review, and what the reviews do.

    ``phase`` is the gated phase from which the pull request is opened (or the branch pushed)
    and kept up to date, also in the phases after it; its reviews answer that phase's gate.
    ``return_phase`` is the earlier phase a review requesting changes sends the task back to;
    ``None``: the gate's own request for changes (the task stays in ``phase``)."""

    phase: str
    return_phase: str | None


REVIEW_GATES: dict[str, ReviewGate] = {
    "task": ReviewGate(REVIEW_PHASE, RETURN_PHASE),
    # A project's development is its children's (all finished at deployment): sent back there,
    # it would pass through without anyone answering the review. Its deployer answers it.
    "project": ReviewGate("deployment", None),
}
"""The review gate of each workflow that opens a pull request (``item``: none; see the
module docstring)."""


def review_gate(workflow: str) -> ReviewGate | None:
    """The review gate of ``workflow``; ``None`` when its tasks publish no pull request."""
    return REVIEW_GATES.get(workflow)

_OPTIONS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "github": {"repo": str, "approval": bool, "base": str, "approval_ttl_seconds": (int, float)},
    "jira": {"issue": str, "approval": bool, "statuses": dict,
             "approval_ttl_seconds": (int, float)},
    "git": {"remote": str, "approval": bool, "approval_ttl_seconds": (int, float)},
}
_REQUIRED = {"github": "repo", "jira": "issue", "git": "remote"}
_GITHUB_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")
_JIRA_ISSUE = re.compile(r"[A-Z][A-Z0-9_]*-[0-9]+")


# -- decide: configuration and the outbox ---------------------------------------------------


def _configure(state: TaskState, command: ConfigureSync, draft: Draft) -> None:
    config = {name: dict(options) for name, options in state.outbox.config.items()}
    for connector in ("github", "jira", "git"):
        given = getattr(command, connector)
        if given is None:
            continue
        if given == {}:
            config.pop(connector, None)
            continue
        config[connector] = _options(state, connector, given)
    if config != state.outbox.config:
        draft.add(SyncConfigured, config=config)


def _options(state: TaskState, connector: str, given: object) -> dict[str, Any]:
    options = json_object(given, connector)
    allowed = _OPTIONS[connector]
    for key, value in options.items():
        if key not in allowed:
            raise InvalidCommand(
                f"{connector}: unknown option {key!r} (known: {', '.join(sorted(allowed))}); "
                "credentials are never part of a task: they come from the environment"
            )
        expected = allowed[key]
        if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
            raise InvalidCommand(f"{connector}.{key} has the wrong type: {value!r}")
    required = _REQUIRED[connector]
    if required not in options:
        raise InvalidCommand(f"{connector} needs {required!r}")
    text(options[required], f"{connector}.{required}", required=True)
    if connector == "git":
        refuse_credentials(options["remote"], "git.remote")
    if connector == "github" and not _GITHUB_REPO.fullmatch(options["repo"]):
        raise InvalidCommand(f"github.repo must be 'owner/name', got {options['repo']!r}")
    if connector == "jira":
        if not _JIRA_ISSUE.fullmatch(options["issue"]):
            raise InvalidCommand(f"jira.issue must be an issue key like 'KEY-1', "
                                 f"got {options['issue']!r}")
        workflow = get_workflow(state.workflow)
        for phase, status in options.get("statuses", {}).items():
            workflow_phases = [p.name for p in workflow.phases]
            if phase not in workflow_phases:
                raise InvalidCommand(f"jira.statuses: {phase!r} is not a phase of "
                                     f"{workflow.name} ({', '.join(workflow_phases)})")
            text(status, f"jira.statuses.{phase}", required=True)
    ttl = options.get("approval_ttl_seconds")
    if ttl is not None and number(ttl, f"{connector}.approval_ttl_seconds") <= 0:
        raise InvalidCommand(f"{connector}.approval_ttl_seconds must be positive")
    return options


def _queue_update(state: TaskState, command: QueueUpdate, draft: Draft) -> None:
    update_id = identifier(command.update_id, "update_id")
    connector = text(command.connector, "connector", required=True)
    kind = text(command.kind, "kind", required=True)
    if connector not in CONNECTOR_KINDS:
        raise InvalidCommand(f"unknown connector {connector!r}; known: "
                             f"{', '.join(CONNECTOR_KINDS)}")
    if kind not in CONNECTOR_KINDS[connector]:
        raise InvalidCommand(f"{connector} delivers no {kind!r}; it delivers: "
                             f"{', '.join(CONNECTOR_KINDS[connector])}")
    outbox = state.outbox
    if connector not in outbox.config:
        raise rejection(state, command, f"{connector} is not configured for this task")
    payload = json_object(command.payload, "payload")
    if outbox.entry(update_id) is not None:
        raise rejection(state, command, f"update {update_id!r} already exists")
    digest = payload_hash(payload)
    target = f"{connector}:{kind}"
    unsent = outbox.unsent(target)
    if unsent is not None and unsent.payload_hash == digest:
        return  # the same payload already waits: nothing new to say
    if unsent is not None:
        draft.add(UpdateSuperseded, update_id=unsent.update_id, by=update_id)
    if outbox.last_delivered_hash(target) == digest:
        draft.add(UpdateSkipped, update_id=update_id, connector=connector, kind=kind,
                  target=target, payload_hash=digest)
        return
    draft.add(UpdateQueued, update_id=update_id, connector=connector, kind=kind, target=target,
              payload=payload, payload_hash=digest,
              requires_approval=bool(outbox.config[connector].get("approval", True)))


def _entry(state: TaskState, command: Command, update_id: object) -> OutboxEntry:
    update_id = identifier(update_id, "update_id")
    entry = state.outbox.entry(update_id)
    if entry is None:
        raise InvalidCommand(f"cannot {command.name}: the task has no update {update_id!r}")
    return entry


def _approve_update(state: TaskState, command: ApproveUpdate, draft: Draft) -> None:
    entry = _entry(state, command, command.update_id)
    if not entry.status.unsent:
        raise rejection(state, command, f"update {entry.update_id!r} is {entry.status.value}")
    if command.payload_hash is not None and command.payload_hash != entry.payload_hash:
        raise rejection(state, command, f"the payload of update {entry.update_id!r} is not the "
                                        "one approved (it changed): review it again")
    if entry.approved_at(draft.ctx.now) and entry.approval is not None:
        return
    options = state.outbox.config.get(entry.connector, {})
    ttl = float(options.get("approval_ttl_seconds", DEFAULT_APPROVAL_TTL))
    expires_at = draft.ctx.now + timedelta(seconds=ttl)
    draft.add(UpdateApproved, update_id=entry.update_id, payload_hash=entry.payload_hash,
              expires_at=expires_at.isoformat())


def _expire_approval(state: TaskState, command: ExpireApproval, draft: Draft) -> None:
    entry = _entry(state, command, command.update_id)
    if entry.approval is None or not entry.status.unsent:
        return
    if entry.approval.expires_at > draft.ctx.now:
        raise rejection(state, command, f"the approval of {entry.update_id!r} holds until "
                                        f"{entry.approval.expires_at.isoformat()}")
    draft.add(ApprovalExpired, update_id=entry.update_id)


def _sync_now(state: TaskState, command: SyncNow, draft: Draft) -> None:
    draft.add(SyncRequested)


def _record_delivery(state: TaskState, command: RecordDelivery, draft: Draft) -> None:
    entry = _entry(state, command, command.update_id)
    digest = text(command.payload_hash, "payload_hash", required=True)
    result = json_object(command.result, "result")
    if entry.status is UpdateStatus.delivered and entry.payload_hash == digest:
        return
    if entry.status not in (UpdateStatus.pending, UpdateStatus.held):
        raise rejection(state, command, f"update {entry.update_id!r} is {entry.status.value}")
    if digest != entry.payload_hash:
        raise rejection(state, command, f"update {entry.update_id!r} is bound to another payload")
    if not entry.approved_at(draft.ctx.now):
        raise rejection(state, command, f"update {entry.update_id!r} is not approved "
                                        "(or its approval expired)")
    draft.add(UpdateDelivered, update_id=entry.update_id, connector=entry.connector,
              kind=entry.kind, payload_hash=digest, attempt=entry.attempts + 1, result=result)


def _record_failure(state: TaskState, command: RecordDeliveryFailure, draft: Draft) -> None:
    entry = _entry(state, command, command.update_id)
    reason = text(command.reason, "reason", required=True)
    retry_at = None
    if command.retry_at is not None:
        try:
            retry_at = datetime.fromisoformat(text(command.retry_at, "retry_at")).isoformat()
        except ValueError:
            raise InvalidCommand(
                f"retry_at is not an ISO-8601 time: {command.retry_at!r}"
            ) from None
    if command.status_code is not None and not isinstance(command.status_code, int):
        raise InvalidCommand("status_code must be a whole number")
    if entry.status not in (UpdateStatus.pending, UpdateStatus.held):
        raise rejection(state, command, f"update {entry.update_id!r} is {entry.status.value}")
    draft.add(UpdateFailed, update_id=entry.update_id, connector=entry.connector,
              kind=entry.kind, reason=reason, attempt=entry.attempts + 1, retry_at=retry_at,
              status_code=command.status_code)


def _record_incident(state: TaskState, command: RecordSyncIncident, draft: Draft) -> None:
    connector = text(command.connector, "connector", required=True)
    kind = text(command.kind, "kind", required=True)
    reason = text(command.reason, "reason", required=True)
    if kind not in INCIDENT_KINDS:
        raise InvalidCommand(f"unknown incident kind {kind!r}; known: {', '.join(INCIDENT_KINDS)}")
    if any(i.open and (i.connector, i.kind, i.reason) == (connector, kind, reason)
           for i in state.outbox.incidents):
        return
    draft.add(SyncIncident, connector=connector, kind=kind, reason=reason)


def _record_rate_limit(state: TaskState, command: RecordSyncRateLimit, draft: Draft) -> None:
    connector = text(command.connector, "connector", required=True)
    reason = text(command.reason, "reason", required=True)
    wait = number(command.wait_seconds, "wait_seconds")
    if connector not in CONNECTOR_KINDS:
        raise InvalidCommand(f"unknown connector {connector!r}; known: "
                             f"{', '.join(CONNECTOR_KINDS)}")
    if wait < 0:
        raise InvalidCommand(f"wait_seconds must not be negative, got {wait}")
    until = draft.ctx.now + timedelta(seconds=wait)
    draft.add(SyncRateLimited, connector=connector, reason=reason, wait_seconds=wait,
              until=until.isoformat())


# -- decide: incoming changes -----------------------------------------------------------------


def _record_rename(state: TaskState, command: RecordRepositoryRename, draft: Draft) -> None:
    connector = text(command.connector, "connector", required=True)
    old = text(command.old, "old", required=True)
    new = text(command.new, "new", required=True)
    if connector != "github":
        raise InvalidCommand(f"{connector} has no repository to rename (github has)")
    if not _GITHUB_REPO.fullmatch(new):
        raise InvalidCommand(f"new must be 'owner/name', got {new!r}")
    options = state.outbox.config.get(connector)
    if options is None:
        raise rejection(state, command, f"{connector} is not configured for this task")
    current = options["repo"]
    if current == new:
        return
    if current.casefold() != old.casefold():  # GitHub's names are case-insensitive
        raise rejection(state, command, f"{connector}.repo is {current!r}, not {old!r}")
    draft.add(RemoteRepositoryRenamed, connector=connector, old=current, new=new)


def _record_review(state: TaskState, command: RecordReview, draft: Draft) -> None:
    review_id = identifier(command.review_id, "review_id")
    connector = text(command.connector, "connector", required=True)
    reviewer = text(command.reviewer, "reviewer", required=True)
    body = text(command.body, "body")
    url = text(command.url, "url")
    commit = None if command.commit is None else identifier(command.commit, "commit")
    if command.verdict not in ("approved", "changes_requested"):
        raise InvalidCommand(f"verdict must be 'approved' or 'changes_requested', "
                             f"got {command.verdict!r}")
    if state.outbox.review(review_id) is not None:
        return
    common = dict(connector=connector, review_id=review_id, reviewer=reviewer, body=body,
                  commit=commit, url=url)
    if command.verdict == "approved":
        draft.add(PullRequestApproved, **common)
    else:
        if not isinstance(command.comments, list | tuple):
            raise InvalidCommand("comments must be a list")
        comments = [json_object(c, "comments item") for c in command.comments]
        draft.add(ChangesRequestedOnPullRequest, comments=comments, **common)
    feedback = _review_feedback(command.verdict, reviewer, body, url, command.comments)
    review = Review(review_id, connector, reviewer, command.verdict, feedback, commit,
                    draft.ctx.now)
    if _applies(state, review):
        _react(state, review, draft)


def _apply_review(state: TaskState, command: ApplyReview, draft: Draft) -> None:
    review_id = identifier(command.review_id, "review_id")
    review = state.outbox.review(review_id)
    if review is None:
        raise InvalidCommand(f"cannot {command.name}: the task has no review {review_id!r}")
    if review.applied:
        return
    if not _applies(state, review):
        raise rejection(state, command, f"review {review_id!r} does not apply now "
                                        f"(task {state.status.value} in {state.phase})")
    _react(state, review, draft)


def pushed_commit(state: TaskState) -> str | None:
    """The commit last pushed with the task's pull request (``None`` before the first)."""
    delivered = state.outbox.delivered.get("github:pull_request")
    return None if delivered is None else delivered.get("result", {}).get("commit")


def applies(state: TaskState, review: Review) -> bool:
    """True when the task can react to ``review`` now (see the module docstring)."""
    return not review.applied and _applies(state, review)


def _applies(state: TaskState, review: Review) -> bool:
    gate = review_gate(state.workflow)
    if gate is None or state.phase != gate.phase or state.status not in (Status.running,
                                                                          Status.waiting):
        return False
    if review.commit is not None and review.commit != pushed_commit(state):
        return False
    if review.verdict == "approved" or gate.return_phase is None:
        return state.status is Status.waiting  # approve and request_changes: at the gate
    workflow = get_workflow(state.workflow)
    return gate.return_phase in [p.name for p in workflow.phases]


def _react(state: TaskState, review: Review, draft: Draft) -> None:
    gate = review_gate(state.workflow)
    assert gate is not None  # _applies held
    draft.add(ReviewApplied, review_id=review.review_id)
    if review.verdict == "approved":
        target = destination(get_workflow(state.workflow), state.phase, state.status,
                             Approve.name, paused_from=state.paused_from)
        draft.add(PhaseApproved, phase=state.phase, comment=review.feedback)
        approve_at_gate(state, draft)  # as a person's approve does
        if target.status is Status.completed:
            draft.add(TaskCompleted)
        else:
            draft.add(PhaseEntered, phase=target.phase, previous=state.phase)
    elif gate.return_phase is None:
        destination(get_workflow(state.workflow), state.phase, state.status,
                    RequestChanges.name, paused_from=state.paused_from)
        draft.add(ChangesRequested, phase=state.phase, feedback=review.feedback)
    else:
        _return(state, gate.return_phase, review.feedback, draft)


def _review_feedback(verdict: str, reviewer: str, body: str, url: str,
                     comments: object) -> str:
    said = "approved" if verdict == "approved" else "requested changes"
    lines = [f"{reviewer} {said} on the pull request{f' ({url})' if url else ''}."]
    if body.strip():
        lines.append(body.strip())
    for comment in comments if isinstance(comments, list | tuple) else ():
        if isinstance(comment, dict) and str(comment.get("body", "")).strip():
            where = comment.get("path") or ""
            if where and comment.get("line") is not None:
                where = f"{where}:{comment['line']}"
            lines.append(f"- {where + ': ' if where else ''}{str(comment['body']).strip()}")
    return "\n".join(lines)


def _record_pull_request(state: TaskState, command: RecordPullRequestState, draft: Draft) -> None:
    connector = text(command.connector, "connector", required=True)
    by = text(command.by, "by")
    if not isinstance(command.number, int) or isinstance(command.number, bool):
        raise InvalidCommand("number must be a whole number")
    if command.state not in ("open", "merged", "closed"):
        raise InvalidCommand(f"state must be open, merged or closed, got {command.state!r}")
    known = state.outbox.remote.get("pull_request", {})
    if command.state == "open" or (known.get("number"), known.get("state")) == (
        command.number, command.state
    ):
        return
    event = PullRequestMerged if command.state == "merged" else PullRequestClosed
    draft.add(event, connector=connector, number=command.number, by=by)


def _record_issue_status(state: TaskState, command: RecordIssueStatus, draft: Draft) -> None:
    connector = text(command.connector, "connector", required=True)
    issue = text(command.issue, "issue", required=True)
    status = text(command.status, "status", required=True)
    by = text(command.by, "by")
    known = state.outbox.remote.get("issue", {}).get("status")
    if known is None:
        known = _delivered_issue_status(state.outbox)
    if status != known:
        draft.add(IssueStatusChanged, connector=connector, issue=issue, status=status, by=by)


def _delivered_issue_status(outbox: Outbox) -> str | None:
    delivered = outbox.delivered.get("jira:issue_status")
    entry = None if delivered is None else outbox.entry(delivered["update_id"])
    return None if entry is None else entry.payload.get("status")


# -- decide: return_to_phase (a workflow move) ------------------------------------------------


def _return_to_phase(state: TaskState, command: ReturnToPhase, draft: Draft) -> None:
    phase = text(command.phase, "phase", required=True)
    feedback = text(command.feedback, "feedback", required=True)
    workflow = get_workflow(state.workflow)
    destination(workflow, state.phase, state.status, command.name,
                paused_from=state.paused_from)
    names = [p.name for p in workflow.phases]
    if phase not in names or names.index(phase) >= names.index(state.phase):
        earlier = ", ".join(names[: names.index(state.phase)]) or "none"
        raise InvalidCommand(f"cannot return_to_phase {phase!r}: not an earlier phase than "
                             f"{state.phase} (earlier: {earlier})")
    _return(state, phase, feedback, draft)


def _return(state: TaskState, phase: str, feedback: str, draft: Draft) -> None:
    # The feedback is addressed to the phase the task returns to: its next job answers it.
    draft.add(ChangesRequested, phase=phase, feedback=feedback)
    draft.add(PhaseEntered, phase=phase, previous=state.phase)


DECIDERS: dict[type[Command], Callable[[TaskState, Any, Draft], None]] = {
    ConfigureSync: _configure,
    QueueUpdate: _queue_update,
    ApproveUpdate: _approve_update,
    ExpireApproval: _expire_approval,
    SyncNow: _sync_now,
    RecordDelivery: _record_delivery,
    RecordDeliveryFailure: _record_failure,
    RecordSyncIncident: _record_incident,
    RecordReview: _record_review,
    ApplyReview: _apply_review,
    RecordPullRequestState: _record_pull_request,
    RecordIssueStatus: _record_issue_status,
    RecordSyncRateLimit: _record_rate_limit,
    RecordRepositoryRename: _record_rename,
    ReturnToPhase: _return_to_phase,
}
"""The handler of each sync command, for ``task.decide``."""


# -- evolve -----------------------------------------------------------------------------------


def _outbox(outbox: Outbox) -> dict[str, Any]:
    return {"outbox": outbox}


def _changed_entry(state: TaskState, event: Any, **changes: Any) -> Outbox:
    entry = state.outbox.entry(event.update_id)
    if entry is None:
        raise ValueError(f"{type(event).__name__} of unknown update {event.update_id!r}")
    return state.outbox.with_entry(replace(entry, **changes))


def _configured(event: SyncConfigured, state: TaskState) -> dict[str, Any]:
    return _outbox(replace(state.outbox, config=event.config))


def _queued(event: UpdateQueued, state: TaskState) -> dict[str, Any]:
    status = UpdateStatus.awaiting_approval if event.requires_approval else UpdateStatus.pending
    entry = OutboxEntry(
        update_id=event.update_id, connector=event.connector, kind=event.kind,
        target=event.target, payload=event.payload, payload_hash=event.payload_hash,
        requires_approval=event.requires_approval, queued_at=event.timestamp, status=status,
    )
    return _outbox(state.outbox.with_entry(entry))


def _superseded(event: UpdateSuperseded, state: TaskState) -> dict[str, Any]:
    return _outbox(_changed_entry(state, event, status=UpdateStatus.superseded))


def _skipped(event: UpdateSkipped, state: TaskState) -> dict[str, Any]:
    record = Delivery(event.update_id, event.connector, event.kind, "skipped", event.timestamp,
                      reason="identical to the last delivered payload")
    return _outbox(state.outbox.with_delivery(record))


def _approved(event: UpdateApproved, state: TaskState) -> dict[str, Any]:
    entry = state.outbox.entry(event.update_id)
    assert entry is not None, event
    approval = UpdateApproval(event.actor, event.timestamp, event.payload_hash,
                              datetime.fromisoformat(event.expires_at))
    status = UpdateStatus.pending if entry.status is UpdateStatus.awaiting_approval else (
        entry.status
    )
    return _outbox(_changed_entry(state, event, approval=approval, status=status))


def _expired(event: ApprovalExpired, state: TaskState) -> dict[str, Any]:
    return _outbox(_changed_entry(state, event, approval=None,
                                  status=UpdateStatus.awaiting_approval))


def _delivered(event: UpdateDelivered, state: TaskState) -> dict[str, Any]:
    outbox = _changed_entry(state, event, status=UpdateStatus.delivered, attempts=event.attempt,
                            retry_at=None, last_error=None, delivered_at=event.timestamp)
    entry = outbox.entry(event.update_id)
    assert entry is not None
    delivered = {**outbox.delivered, entry.target: {
        "update_id": event.update_id, "payload_hash": event.payload_hash,
        "result": event.result, "at": event.timestamp.isoformat(),
    }}
    incidents = tuple(replace(i, open=False) if i.connector == event.connector else i
                      for i in outbox.incidents)
    record = Delivery(event.update_id, event.connector, event.kind, "delivered",
                      event.timestamp, event.attempt)
    outbox = replace(outbox, delivered=delivered, incidents=incidents).with_delivery(record)
    return _outbox(outbox)


def _failed(event: UpdateFailed, state: TaskState) -> dict[str, Any]:
    retry_at = None if event.retry_at is None else datetime.fromisoformat(event.retry_at)
    status = UpdateStatus.pending if retry_at is not None else UpdateStatus.held
    outbox = _changed_entry(state, event, status=status, attempts=event.attempt,
                            retry_at=retry_at, last_error=event.reason)
    record = Delivery(event.update_id, event.connector, event.kind, "failed", event.timestamp,
                      event.attempt, event.reason, event.status_code)
    return _outbox(outbox.with_delivery(record))


def _sync_requested(event: SyncRequested, state: TaskState) -> dict[str, Any]:
    entries = []
    for entry in state.outbox.entries:
        if entry.status is UpdateStatus.held:
            gated = entry.requires_approval and entry.approval is None
            entry = replace(entry, retry_at=None, status=UpdateStatus.awaiting_approval
                            if gated else UpdateStatus.pending)
        elif entry.status is UpdateStatus.pending:
            entry = replace(entry, retry_at=None)
        entries.append(entry)
    # A person asked for now: the waits a system asked for end too (their choice, not ipa's).
    return _outbox(replace(state.outbox, entries=tuple(entries),
                           sync_requested_at=event.timestamp, rate_limited_until={}))


def _incident(event: SyncIncident, state: TaskState) -> dict[str, Any]:
    incident = Incident(event.connector, event.kind, event.reason, event.timestamp)
    incidents = (*state.outbox.incidents, incident)[-INCIDENT_LIMIT:]
    return _outbox(replace(state.outbox, incidents=incidents))


def _rate_limited(event: SyncRateLimited, state: TaskState) -> dict[str, Any]:
    until = {**state.outbox.rate_limited_until,
             event.connector: datetime.fromisoformat(event.until)}
    return _outbox(replace(state.outbox, rate_limited_until=until))


def _renamed(event: RemoteRepositoryRenamed, state: TaskState) -> dict[str, Any]:
    config = {**state.outbox.config,
              event.connector: {**state.outbox.config[event.connector], "repo": event.new}}
    return _outbox(replace(state.outbox, config=config))


def _reviewed(event: PullRequestApproved | ChangesRequestedOnPullRequest,
              state: TaskState) -> dict[str, Any]:
    verdict = "approved" if isinstance(event, PullRequestApproved) else "changes_requested"
    comments = getattr(event, "comments", [])
    review = Review(event.review_id, event.connector, event.reviewer, verdict,
                    _review_feedback(verdict, event.reviewer, event.body, event.url, comments),
                    event.commit, event.timestamp)
    return _outbox(replace(state.outbox, reviews=(*state.outbox.reviews, review)))


def _review_applied(event: ReviewApplied, state: TaskState) -> dict[str, Any]:
    reviews = tuple(replace(r, applied=True) if r.review_id == event.review_id else r
                    for r in state.outbox.reviews)
    return _outbox(replace(state.outbox, reviews=reviews))


def _pull_request(event: PullRequestMerged | PullRequestClosed,
                  state: TaskState) -> dict[str, Any]:
    merged = isinstance(event, PullRequestMerged)
    remote = {**state.outbox.remote, "pull_request": {
        "number": event.number, "state": "merged" if merged else "closed", "by": event.by,
    }}
    return _outbox(replace(state.outbox, remote=remote))


def _issue_status(event: IssueStatusChanged, state: TaskState) -> dict[str, Any]:
    remote = {**state.outbox.remote, "issue": {
        "issue": event.issue, "status": event.status, "by": event.by,
    }}
    return _outbox(replace(state.outbox, remote=remote))


FOLDS: dict[type[TaskEvent], Callable[[Any, TaskState], dict[str, Any]]] = {
    SyncConfigured: _configured,
    UpdateQueued: _queued,
    UpdateSuperseded: _superseded,
    UpdateSkipped: _skipped,
    UpdateApproved: _approved,
    ApprovalExpired: _expired,
    UpdateDelivered: _delivered,
    UpdateFailed: _failed,
    SyncRequested: _sync_requested,
    SyncIncident: _incident,
    PullRequestApproved: _reviewed,
    ChangesRequestedOnPullRequest: _reviewed,
    ReviewApplied: _review_applied,
    PullRequestMerged: _pull_request,
    PullRequestClosed: _pull_request,
    IssueStatusChanged: _issue_status,
    SyncRateLimited: _rate_limited,
    RemoteRepositoryRenamed: _renamed,
}
"""The fold of each sync event, for ``task.evolve``: the state fields the event changes."""
