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

import contextlib
import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    Notification,
    StoredEvent,
    UUIDAsHex,
    find_id_convertor,
)
from eventsourcing.utils import TopicError, get_topic, resolve_topic

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
_TYPED = b'"_type_"'
_ESCAPE = b"\\u"
_AS_WRITTEN = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")
"""A UTC timestamp with microseconds as ``isoformat`` writes it, and so reads back: the same
text (a fifth of the time of writing it again)."""
_AS_DIGIT_RUNS = bytes(0x30 if 0x30 <= c <= 0x39 else 0x20 for c in range(256))
_LONG_DIGITS = b"0" * 19
"""The run of digits an integer outside 64 bits needs (``orjson`` would read it as a float),
found in a body translated by ``_AS_DIGIT_RUNS`` (every digit a "0", any other byte a space):
a quarter of the cost of a regular expression."""


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
    header = f"{stream_id}\n{version}\n{topic}\n".encode()
    if key:
        return key.mac(header, prev, body).encode()
    return hashlib.sha256(b"".join((header, prev, body))).hexdigest().encode()


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
        self._classes: dict[str, tuple[type, int, Callable[[Any], Any]]] = {}
        self._transcodings = self.transcoder.names
        self._datetime = self._transcodings[DatetimeAsISO.name]

    def seal(
        self, events: Iterable[DomainEvent], prev_digest: str
    ) -> tuple[list[StoredEvent], str]:
        """Stored forms of ``events``, chained after ``prev_digest``; and the last digest."""
        sealed: list[StoredEvent] = []
        prev = prev_digest.encode()
        for event in events:
            topic, body = self._encoded(event)
            stream_id, version = event.originator_id, event.originator_version
            digest = chain_digest(stream_id, version, topic, prev, body, self.key)
            sealed.append(StoredEvent(stream_id, version, topic, prev + digest + body))
            prev = digest
        return sealed, prev.decode()

    def _stored(self, event: DomainEvent) -> StoredEvent:
        """The library's stored form of ``event`` (unsealed)."""
        return StoredEvent(event.originator_id, event.originator_version, *self._encoded(event))

    def _encoded(self, event: DomainEvent) -> tuple[str, bytes]:
        """The topic and body of ``event``'s stored form, its body written by ``orjson``
        when every field is a plain value (text, integer, boolean, null) or a datetime: the
        same bytes as the library's JSON, in 2 us instead of 5. Any other field (a list, a
        dict, a UUID, a float: ``orjson`` writes ``1e-06`` as ``1e-6``), or a value ``orjson``
        refuses (a lone surrogate, an integer past 64 bits), goes the library's way."""
        cls = type(event)
        state = dict(vars(event))
        del state["originator_id"], state["originator_version"]
        for value in state.values():
            kind = type(value)
            if not (kind in _PLAIN or kind is datetime):
                break
        else:
            class_version = getattr(cls, "class_version", 1)
            if class_version > 1:
                state["class_version"] = class_version
            with contextlib.suppress(orjson.JSONEncodeError):
                return get_topic(cls), orjson.dumps(state, default=_typed,
                                                    option=orjson.OPT_PASSTHROUGH_DATETIME)
        stored = super().to_stored_event(event)
        return stored.topic, stored.state

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

    def decode(self, stream_id: UUID, version: int, topic: str, state: bytes) -> DomainEvent:
        """The domain event of a stored row, as :meth:`to_domain_event` makes it, its body
        parsed once by ``orjson`` (and upcast only when older than its class).

        A row this does not take, or cannot decode, goes through :meth:`to_domain_event`,
        which decodes it (lone surrogates, NaN, integers past 64 bits: ``json`` reads them)
        or raises the error a load always raised for it.
        """
        try:
            body = state[_SEAL_LEN:]
            if len(state) < _SEAL_LEN or _LONG_DIGITS in body.translate(_AS_DIGIT_RUNS):
                raise ValueError("not for the fast decoder")
            try:
                cls, class_version, convert = self._classes[topic]
            except KeyError:
                cls = resolve_topic(topic)
                class_version = getattr(cls, "class_version", 1)
                convert = find_id_convertor(cls, UUID)
                self._classes[topic] = (cls, class_version, convert)
            data = orjson.loads(body)
            typed = body.count(_TYPED)
            if typed or _ESCAPE in body:
                # The library's decoder turns every {"_type_": name, "_data_": value} into its
                # value, innermost first. An event has one (its timestamp) at the top; any
                # other, or a key written with escapes, takes the whole walk.
                stamp = data.get("timestamp")
                if typed == 1 and _is_iso_stamp(stamp) and _ESCAPE not in body:
                    data["timestamp"] = self._datetime.decode(stamp["_data_"])
                else:
                    data = self._revive(data)
            data["originator_id"] = convert(stream_id)
            data["originator_version"] = version
            from_version = data.pop("class_version", 1)
            while from_version < class_version:
                getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(data)
                from_version += 1
            event = object.__new__(cls)
            object.__setattr__(event, "__dict__", data)
            return event
        except Exception:
            return self.to_domain_event(StoredEvent(stream_id, version, topic, state))

    def _revive(self, value: Any) -> Any:
        """``value`` with its typed dicts decoded, as the library's JSON object hook does."""
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, dict | list):
                    value[k] = self._revive(v)
            if len(value) == 2 and "_type_" in value and "_data_" in value:
                return self._transcodings[value["_type_"]].decode(value["_data_"])
        elif isinstance(value, list):
            for i, v in enumerate(value):
                if isinstance(v, dict | list):
                    value[i] = self._revive(v)
        return value

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
            event = self.decode(_uuid(notification.originator_id),
                                notification.originator_version, notification.topic,
                                notification.state)
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
            type=type_name(notification.topic),
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

    def record_json(self, notification: Notification) -> dict[str, Any]:
        """``self.record(notification).to_json()``, without the domain event when the row
        allows: a body of the class's current version whose only typed value is its timestamp
        (the rows ``decode`` reads fast) becomes its JSON straight from the parsed body, in a
        fifth of the time. Any other row goes through :meth:`record`."""
        return self.row_json(notification.originator_id, notification.id,
                             notification.originator_version, notification.topic,
                             notification.state)

    def row_json(self, stream_id: UUID, position: int, version: int, topic: str,
                 state: bytes) -> dict[str, Any]:
        """:meth:`record_json` of the row with these columns."""
        # The same dict as ``RecordedEvent.to_json``, keys in its order, made without the
        # domain event and without the RecordedEvent.
        body = state[_SEAL_LEN:]
        known = self._classes.get(topic)
        if (known is None or len(state) < _SEAL_LEN or _ESCAPE in body
                or body.count(_TYPED) != 1
                or _LONG_DIGITS in body.translate(_AS_DIGIT_RUNS)):
            return self._record_json(stream_id, position, version, topic, state)
        try:
            data = orjson.loads(body)
            stamp = data["timestamp"]
            if not _is_iso_stamp(stamp) or data.get("class_version", 1) != known[1]:
                return self._record_json(stream_id, position, version, topic, state)
            text = stamp["_data_"]
            moment = self._datetime.decode(text)  # what ``record`` would refuse, it refuses
            timestamp = (text if moment.microsecond and _AS_WRITTEN.fullmatch(text)
                         else moment.isoformat())
        except Exception:
            return self._record_json(stream_id, position, version, topic, state)
        record = {
            "stream_id": _uuid_text(stream_id),
            "version": version,
            "position": position,
            "type": type_name(topic),
            "timestamp": timestamp,
            "actor": data.get("actor", "unknown"),
            "correlation_id": data.get("correlation_id", ""),
            "causation_id": data.get("causation_id"),
            "data": data,
        }
        for field in METADATA_FIELDS:
            data.pop(field, None)
        return record

    def _record_json(self, stream_id: UUID, position: int, version: int, topic: str,
                     state: bytes) -> dict[str, Any]:
        return self.record(Notification(id=position, originator_id=stream_id,
                                        originator_version=version, topic=topic,
                                        state=state)).to_json()


_PLAIN = frozenset({str, int, bool, type(None)})


def _is_iso_stamp(value: Any) -> bool:
    """Whether ``value`` is a datetime as the library writes it: ``{"_type_": "datetime_iso",
    "_data_": ...}``."""
    return (type(value) is dict and len(value) == 2
            and value.get("_type_") == DatetimeAsISO.name and "_data_" in value)


@functools.lru_cache(maxsize=256)
def type_name(topic: str) -> str:
    """An event's type as shown: its class's name (``ipa.domain.events:TaskPaused``)."""
    return topic.rpartition(":")[2].rpartition(".")[2]


def _typed(value: Any) -> dict[str, str]:
    """A datetime as the library writes it (its ``DatetimeAsISO`` transcoding)."""
    if type(value) is datetime:
        return {"_type_": DatetimeAsISO.name, "_data_": value.isoformat()}
    raise TypeError(f"not a plain value: {type(value).__name__}")


@functools.lru_cache(maxsize=1024)
def _uuid_text(value: UUID | str) -> str:
    """``str(_uuid(value))``, remembered: an events page names one stream in every record."""
    return str(_uuid(value))


def _uuid(value: UUID | str) -> UUID:
    return value if isinstance(value, UUID) else UUID(str(value))
