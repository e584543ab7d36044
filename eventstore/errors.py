"""The errors of the event store, named for the condition.

The library's own exceptions (psycopg's, eventsourcing's) never leave this package: they are
translated here, with ``raise ... from``, so callers handle one family.
"""

from __future__ import annotations

from uuid import UUID


def one_line(error: BaseException) -> str:
    """A driver's (often multi-line) message as one line."""
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())


class StoreError(Exception):
    """Base of every event store error."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or started; the message says which and why."""


class VersionConflict(StoreError):
    """An append expected a version of the stream that is no longer its head.

    ``current`` is the stream's version when the conflict was found, so the caller can reload
    and decide again.
    """

    def __init__(self, stream_id: UUID, expected: int, current: int) -> None:
        super().__init__(
            f"stream {stream_id}: expected version {expected}, but it is at version {current}"
        )
        self.stream_id = stream_id
        self.expected = expected
        self.current = current


class StreamNotFound(StoreError):
    """No event has been recorded with this stream (task) id, or none at that version."""

    def __init__(self, stream_id: UUID, version: int | None = None) -> None:
        where = f" at version {version}" if version is not None else ""
        super().__init__(f"task {stream_id} not found{where}")
        self.stream_id = stream_id
        self.version = version


class UnknownEventType(StoreError):
    """A stored event names a type this version of ipa does not know (removed or renamed)."""

    def __init__(self, stream_id: UUID, version: int, topic: str) -> None:
        super().__init__(
            f"task {stream_id} version {version}: unknown event type {topic!r} "
            "(written by another version of ipa?)"
        )
        self.stream_id = stream_id
        self.version = version
        self.topic = topic


class CorruptEvent(StoreError):
    """A stored event cannot be decoded: its bytes are not what ipa writes."""

    def __init__(self, stream_id: UUID, version: int, reason: str) -> None:
        super().__init__(f"task {stream_id} version {version}: corrupt event: {reason}")
        self.stream_id = stream_id
        self.version = version


class PositionConflict(StoreError):
    """A read model's saved position is already at or past the one being saved: another
    runner (a rebuild, another process) applied those events; reload the position."""


class UnstorableEvent(StoreError):
    """An event of an append cannot be encoded for storage (a value of a type the codec does
    not know); that append fails, nothing of it is written, the others go on."""

    def __init__(self, stream_id: UUID, reason: str) -> None:
        super().__init__(f"task {stream_id}: an event cannot be stored: {reason}")
        self.stream_id = stream_id


class AuditKeyError(StoreError):
    """The audit key is missing, unreadable, or not the one this store was keyed with; the
    message says which and where the key was looked for."""
