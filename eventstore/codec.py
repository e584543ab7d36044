"""How an event is stored: the library's mapper, plus a hash chain that seals each stream.

A stored event's ``state`` is ``prev + digest + body``: ``body`` is the library's JSON of the
event (with its ``class_version``), ``prev`` the stream's previous event's digest (64 zeros
for the first) and ``digest`` the hex HMAC-SHA256, keyed with the audit key
(:mod:`.audit_key`), of::

    "<stream id>\\n<version>\\n<topic>\\n" + prev + body

So editing a row's bytes breaks its own digest, and deleting, inserting or reordering rows
breaks the link to the neighbour (or the version sequence); without the key, nobody can
compute a digest that verifies. Events stored before the store was keyed (below its keyed-from
position, see :mod:`.manifest`) carry the plain SHA-256 of the same message, which shows a
change made without recomputing the chain but not a forger who rewrites every later digest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    Notification,
    StoredEvent,
    UUIDAsHex,
)
from eventsourcing.utils import TopicError

from .audit_key import AuditKey
from .errors import CorruptEvent, UnknownEventType

GENESIS = "0" * 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DIGEST_LEN = 64
_SEAL_LEN = 2 * _DIGEST_LEN
METADATA_FIELDS = frozenset(
    {"originator_id", "originator_version", "timestamp", "actor", "correlation_id",
     "causation_id", "class_version"}
)


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as the store recorded it: where it sits and what it says.

    ``version`` is its place in its stream, ``position`` its place in the store's global log.
    ``event`` is the decoded domain event, or ``None`` when its type is unknown to this code
    (``type`` and ``data`` still say what was stored) or when the row cannot be decoded at
    all (``problem`` says why).
    """

    stream_id: UUID
    version: int
    position: int
    type: str
    timestamp: datetime
    actor: str
    correlation_id: str
    causation_id: str | None
    data: dict[str, Any]
    event: DomainEvent | None
    problem: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON form used by the CLI, the API and SSE ``data:`` lines."""
        return {
            "stream_id": str(self.stream_id),
            "version": self.version,
            "position": self.position,
            "type": self.type,
            "timestamp": self.timestamp.isoformat(),
            "actor": self.actor,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "data": self.data,
        }


class _Transcoder(JSONTranscoder):
    """The library's JSON transcoder, able to store any Python string.

    The library writes JSON as UTF-8 with non-ASCII characters as they are, and UTF-8 cannot
    hold a lone surrogate (``"\\ud800"``, which :func:`json.loads` accepts): the encode raised
    and an append failed. Such a body is written ASCII-escaped instead (``\\ud800`` in the
    JSON), which decodes back to the same string; every other body is byte for byte what it
    was, so existing hash chains are unaffected. NUL is data here (``\\u0000`` in the JSON).
    """

    def __init__(self) -> None:
        super().__init__()
        self._ascii_encoder = json.JSONEncoder(
            default=self.encoder.default, separators=(",", ":"), ensure_ascii=True
        )

    def encode(self, obj: Any) -> bytes:
        try:
            return super().encode(obj)
        except UnicodeEncodeError:
            return self._ascii_encoder.encode(obj).encode("ascii")


def make_transcoder() -> JSONTranscoder:
    transcoder = _Transcoder()
    for transcoding in (UUIDAsHex(), DatetimeAsISO(), DecimalAsStr()):
        transcoder.register(transcoding)
    return transcoder


def chain_digest(
    stream_id: UUID, version: int, topic: str, prev: bytes, body: bytes,
    key: AuditKey | None = None,
) -> bytes:
    """The hex digest that seals one event to its predecessor: keyed with ``key``, or the
    plain SHA-256 of an event stored before its store was keyed."""
    head = f"{stream_id}\n{version}\n{topic}\n".encode()
    h = hmac.new(key.secret, head, hashlib.sha256) if key else hashlib.sha256(head)
    h.update(prev)
    h.update(body)
    return h.hexdigest().encode()


@dataclass(frozen=True, slots=True)
class Seal:
    """The chain fields of one stored event."""

    prev: str
    digest: str
    body: bytes

    @classmethod
    def of(cls, stored: StoredEvent) -> Seal:
        state = stored.state
        if len(state) < _SEAL_LEN:
            raise CorruptEvent(
                _uuid(stored.originator_id), stored.originator_version, "no hash chain seal"
            )
        return cls(
            prev=state[:_DIGEST_LEN].decode("ascii", "replace"),
            digest=state[_DIGEST_LEN:_SEAL_LEN].decode("ascii", "replace"),
            body=state[_SEAL_LEN:],
        )

    def expected_digest(self, stored: StoredEvent, key: AuditKey | None = None) -> str:
        """The digest ``stored`` should carry, keyed with ``key`` (None: unkeyed)."""
        return chain_digest(
            _uuid(stored.originator_id),
            stored.originator_version,
            stored.topic,
            self.prev.encode(),
            self.body,
            key,
        ).decode()


class EventCodec(Mapper[UUID]):
    """Turns domain events into sealed stored events and back (with upcasting on load).

    ``key`` keys the chain of the events it seals; without one (a store that was never
    keyed), it seals with the plain SHA-256.
    """

    def __init__(self, key: AuditKey | None = None) -> None:
        super().__init__(transcoder=make_transcoder())
        self.key = key

    def seal(
        self, events: Iterable[DomainEvent], prev_digest: str
    ) -> tuple[list[StoredEvent], str]:
        """Stored forms of ``events``, chained after ``prev_digest``; and the last digest."""
        sealed: list[StoredEvent] = []
        prev = prev_digest.encode()
        for event in events:
            plain = super().to_stored_event(event)
            digest = chain_digest(
                event.originator_id, plain.originator_version, plain.topic, prev, plain.state,
                self.key,
            )
            sealed.append(replace(plain, state=prev + digest + plain.state))
            prev = digest
        return sealed, prev.decode()

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEvent:
        """Decode a sealed stored event (the seal is checked by the audit, not here)."""
        body = Seal.of(stored_event).body
        try:
            return super().to_domain_event(replace(stored_event, state=body))
        except TopicError as e:
            raise UnknownEventType(
                _uuid(stored_event.originator_id), stored_event.originator_version,
                stored_event.topic,
            ) from e
        except UnknownEventType:
            raise
        except Exception as e:  # a payload the event class cannot take
            raise CorruptEvent(
                _uuid(stored_event.originator_id), stored_event.originator_version, str(e)
            ) from e

    def record(self, notification: Notification) -> RecordedEvent:
        """A :class:`RecordedEvent` from a row of the log (``notification.id`` = position).

        An event of an unknown type is still returned, with ``event=None`` and its raw data,
        so a live view shows it instead of losing it. So is a row that cannot be decoded at
        all (edited bytes, a payload its class cannot take), with ``event=None`` and the reason
        in ``problem``: one bad row must not stop the readers of the whole log (the live tail,
        the task list), which decide for themselves what to do with it.
        """
        event: DomainEvent | None
        problem: str | None = None
        try:
            event = self.to_domain_event(notification)
            state = dict(vars(event))
        except (UnknownEventType, CorruptEvent) as e:
            event = None
            if isinstance(e, CorruptEvent):
                problem = str(e)
            try:
                state = self.transcoder.decode(Seal.of(notification).body)
            except Exception as undecodable:
                state, problem = {}, problem or str(CorruptEvent(
                    _uuid(notification.originator_id), notification.originator_version,
                    f"not JSON: {undecodable}"))
            if not isinstance(state, dict):
                state, problem = {}, problem or "the event is not a JSON object"
        timestamp = state.get("timestamp")
        if not isinstance(timestamp, datetime):
            timestamp, problem = _EPOCH, problem or "the event has no timestamp"
        return RecordedEvent(
            stream_id=_uuid(notification.originator_id),
            version=notification.originator_version,
            position=notification.id,
            type=notification.topic.rpartition(":")[2].rpartition(".")[2],
            timestamp=timestamp,
            actor=state.get("actor", "unknown"),
            correlation_id=state.get("correlation_id", ""),
            causation_id=state.get("causation_id"),
            data={k: v for k, v in state.items() if k not in METADATA_FIELDS},
            event=event,
            problem=problem,
        )

    def records(self, notifications: Sequence[Notification]) -> list[RecordedEvent]:
        return [self.record(n) for n in notifications]


def _uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))
