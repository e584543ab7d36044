"""A task's outbox: the updates for outside systems, their approvals and delivery history.

``Outbox`` is the value ``TaskState.outbox`` holds; ``sync.py`` decides the sync commands and
folds their events into it. An entry's life (each arrow is one event)::

    QueueUpdate ──► awaiting_approval ──UpdateApproved──► pending ──UpdateDelivered──► delivered
                    (gate on)            ▲     │ApprovalExpired      │ ▲
                                         │     ▼                    │ │ retry_at due
           (gate off) ──────────────────►│ awaiting_approval        │ │
                                         │                UpdateFailed(retry_at)
                                         └── SyncRequested ◄─ held ◄─ UpdateFailed(no retry)
    any unsent entry ──UpdateSuperseded (a newer payload of its target)──► superseded

A *target* is a connector and a kind (``github:pull_request``). At most one entry per target
is unsent; a newer payload supersedes it, so an approval never carries over to a payload
nobody saw. A payload identical to the unsent one changes nothing; one identical to what was
last delivered is ``UpdateSkipped`` (duplicate suppression).

Everything here is a plain value or a question answered from one (no clock: ``now`` comes in).
Dict fields take part in equality but not in the hash, as ``Job.spec`` does.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

HISTORY_LIMIT = 200
"""The delivery history keeps this many newest records."""

INCIDENT_LIMIT = 50
"""The incident list keeps this many newest incidents."""


def payload_hash(payload: dict[str, Any]) -> str:
    """The SHA-256 of ``payload`` in canonical JSON (sorted keys, no spaces), hex."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class UpdateStatus(StrEnum):
    """Where an outbox entry is (see the module docstring)."""

    awaiting_approval = "awaiting_approval"
    pending = "pending"
    held = "held"
    delivered = "delivered"
    superseded = "superseded"

    @property
    def unsent(self) -> bool:
        return self in (UpdateStatus.awaiting_approval, UpdateStatus.pending, UpdateStatus.held)


@dataclass(frozen=True)
class UpdateApproval:
    """Who approved which payload, when, and until when the approval holds."""

    actor: str
    at: datetime
    payload_hash: str
    expires_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {"actor": self.actor, "at": self.at.isoformat(),
                "payload_hash": self.payload_hash, "expires_at": self.expires_at.isoformat()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UpdateApproval:
        return cls(data["actor"], datetime.fromisoformat(data["at"]), data["payload_hash"],
                   datetime.fromisoformat(data["expires_at"]))


@dataclass(frozen=True)
class OutboxEntry:
    """One update for an outside system, bound to its exact ``payload``."""

    update_id: str
    connector: str
    kind: str
    target: str
    payload: dict[str, Any] = field(hash=False)
    payload_hash: str
    requires_approval: bool
    queued_at: datetime
    status: UpdateStatus
    approval: UpdateApproval | None = None
    attempts: int = 0
    retry_at: datetime | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None

    def approved_at(self, now: datetime) -> bool:
        """True when the entry may be sent at ``now`` as far as the gate is concerned."""
        if not self.requires_approval:
            return True
        approval = self.approval
        return (approval is not None and approval.payload_hash == self.payload_hash
                and now < approval.expires_at)

    def to_dict(self) -> dict[str, Any]:
        return {
            "update_id": self.update_id,
            "connector": self.connector,
            "kind": self.kind,
            "target": self.target,
            "payload": copy.deepcopy(self.payload),
            "payload_hash": self.payload_hash,
            "requires_approval": self.requires_approval,
            "queued_at": self.queued_at.isoformat(),
            "status": self.status.value,
            "approval": None if self.approval is None else self.approval.to_dict(),
            "attempts": self.attempts,
            "retry_at": _iso(self.retry_at),
            "last_error": self.last_error,
            "delivered_at": _iso(self.delivered_at),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OutboxEntry:
        approval = data["approval"]
        return cls(
            update_id=data["update_id"],
            connector=data["connector"],
            kind=data["kind"],
            target=data["target"],
            payload=copy.deepcopy(data["payload"]),
            payload_hash=data["payload_hash"],
            requires_approval=data["requires_approval"],
            queued_at=datetime.fromisoformat(data["queued_at"]),
            status=UpdateStatus(data["status"]),
            approval=None if approval is None else UpdateApproval.from_dict(approval),
            attempts=data["attempts"],
            retry_at=_from_iso(data["retry_at"]),
            last_error=data["last_error"],
            delivered_at=_from_iso(data["delivered_at"]),
        )


@dataclass(frozen=True)
class Delivery:
    """One line of the delivery history: an update sent, failed or skipped, and why."""

    update_id: str
    connector: str
    kind: str
    outcome: str  # "delivered" | "failed" | "skipped"
    at: datetime
    attempt: int = 0
    reason: str | None = None
    status_code: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"update_id": self.update_id, "connector": self.connector, "kind": self.kind,
                "outcome": self.outcome, "at": self.at.isoformat(), "attempt": self.attempt,
                "reason": self.reason, "status_code": self.status_code}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Delivery:
        return cls(data["update_id"], data["connector"], data["kind"], data["outcome"],
                   datetime.fromisoformat(data["at"]), data["attempt"], data["reason"],
                   data["status_code"])


@dataclass(frozen=True)
class Incident:
    """Something wrong with a connector; ``open`` until the connector delivers again."""

    connector: str
    kind: str
    reason: str
    at: datetime
    open: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"connector": self.connector, "kind": self.kind, "reason": self.reason,
                "at": self.at.isoformat(), "open": self.open}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Incident:
        return cls(data["connector"], data["kind"], data["reason"],
                   datetime.fromisoformat(data["at"]), data["open"])


@dataclass(frozen=True)
class Review:
    """A review read from the pull request; ``applied`` once the task reacted to it."""

    review_id: str
    connector: str
    reviewer: str
    verdict: str  # "approved" | "changes_requested"
    feedback: str
    commit: str | None
    at: datetime
    applied: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"review_id": self.review_id, "connector": self.connector,
                "reviewer": self.reviewer, "verdict": self.verdict, "feedback": self.feedback,
                "commit": self.commit, "at": self.at.isoformat(), "applied": self.applied}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Review:
        return cls(data["review_id"], data["connector"], data["reviewer"], data["verdict"],
                   data["feedback"], data["commit"], datetime.fromisoformat(data["at"]),
                   data["applied"])


@dataclass(frozen=True)
class Outbox:
    """The sync side of a task: its configuration, outbox, history and what was read outside.

    ``config``: connector → options (``configure_sync``). ``delivered``: target → what was
    last delivered there (``update_id``, ``payload_hash``, ``result``). ``remote``: the last
    state read outside (``pull_request``: number/state/by; ``issue``: key/status/by).
    ``rate_limited_until``: connector → until when its system asked ipa to wait (nothing is
    sent to it before).
    """

    config: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)
    entries: tuple[OutboxEntry, ...] = ()
    deliveries: tuple[Delivery, ...] = ()
    delivered: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)
    incidents: tuple[Incident, ...] = ()
    reviews: tuple[Review, ...] = ()
    remote: dict[str, dict[str, Any]] = field(default_factory=dict, hash=False)
    sync_requested_at: datetime | None = None
    rate_limited_until: dict[str, datetime] = field(default_factory=dict, hash=False)

    # -- questions --------------------------------------------------------------------------

    def entry(self, update_id: str) -> OutboxEntry | None:
        """The entry ``update_id``, or ``None``."""
        return next((e for e in self.entries if e.update_id == update_id), None)

    def unsent(self, target: str) -> OutboxEntry | None:
        """The entry of ``target`` not sent yet, or ``None``."""
        return next((e for e in self.entries if e.target == target and e.status.unsent), None)

    def last_delivered_hash(self, target: str) -> str | None:
        delivered = self.delivered.get(target)
        return None if delivered is None else delivered["payload_hash"]

    def review(self, review_id: str) -> Review | None:
        return next((r for r in self.reviews if r.review_id == review_id), None)

    def due(self, now: datetime) -> list[OutboxEntry]:
        """The entries that may be sent at ``now``: pending, approved (when the gate is on),
        past their ``retry_at`` and their connector's rate limit; in queue order."""
        return [
            e for e in self.entries
            if e.status is UpdateStatus.pending and e.approved_at(now)
            and ((ready := self._ready_at(e)) is None or ready <= now)
        ]

    def _ready_at(self, entry: OutboxEntry) -> datetime | None:
        """The earliest time ``entry`` may be sent: its ``retry_at`` or its connector's rate
        limit, whichever is later; ``None`` when neither holds it."""
        times = [t for t in (entry.retry_at, self.rate_limited_until.get(entry.connector))
                 if t is not None]
        return max(times, default=None)

    def expired(self, now: datetime) -> list[OutboxEntry]:
        """The unsent entries whose approval has run out at ``now``."""
        return [
            e for e in self.entries
            if e.status.unsent and e.approval is not None and e.approval.expires_at <= now
        ]

    def next_due(self) -> datetime | None:
        """The earliest time something changes by itself: a retry falls due or an approval
        expires; ``None`` when nothing waits for time."""
        times = [ready for e in self.entries if e.status is UpdateStatus.pending
                 and (ready := self._ready_at(e)) is not None]
        times += [e.approval.expires_at for e in self.entries
                  if e.status.unsent and e.approval is not None]
        return min(times, default=None)

    # -- changes (for the folds) ------------------------------------------------------------

    def with_entry(self, entry: OutboxEntry) -> Outbox:
        """A copy with ``entry`` replacing the one of its id, or added last."""
        entries = list(self.entries)
        for i, existing in enumerate(entries):
            if existing.update_id == entry.update_id:
                entries[i] = entry
                break
        else:
            entries.append(entry)
        return replace(self, entries=tuple(entries))

    def with_delivery(self, delivery: Delivery) -> Outbox:
        return replace(self, deliveries=(*self.deliveries, delivery)[-HISTORY_LIMIT:])

    # -- JSON -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, as three top-level keys of the task's JSON: ``outbox`` (the
        entries), ``deliveries`` (the history) and ``sync`` (the rest)."""
        return {
            "outbox": [entry.to_dict() for entry in self.entries],
            "deliveries": [delivery.to_dict() for delivery in self.deliveries],
            "sync": {
                "config": copy.deepcopy(self.config),
                "delivered": copy.deepcopy(self.delivered),
                "incidents": [incident.to_dict() for incident in self.incidents],
                "reviews": [review.to_dict() for review in self.reviews],
                "remote": copy.deepcopy(self.remote),
                "sync_requested_at": _iso(self.sync_requested_at),
                "rate_limited_until": {c: t.isoformat()
                                       for c, t in self.rate_limited_until.items()},
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outbox:
        """The outbox in a task's JSON (``data`` is the whole task); empty when it has none
        (a snapshot from before the sync engine)."""
        sync = data.get("sync") or {}
        return cls(
            config=copy.deepcopy(sync.get("config", {})),
            entries=tuple(OutboxEntry.from_dict(e) for e in data.get("outbox", ())),
            deliveries=tuple(Delivery.from_dict(d) for d in data.get("deliveries", ())),
            delivered=copy.deepcopy(sync.get("delivered", {})),
            incidents=tuple(Incident.from_dict(i) for i in sync.get("incidents", ())),
            reviews=tuple(Review.from_dict(r) for r in sync.get("reviews", ())),
            remote=copy.deepcopy(sync.get("remote", {})),
            sync_requested_at=_from_iso(sync.get("sync_requested_at")),
            rate_limited_until={c: datetime.fromisoformat(t)
                                for c, t in sync.get("rate_limited_until", {}).items()},
        )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _from_iso(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
