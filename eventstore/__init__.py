"""Persistence of ipa: the event store on PostgreSQL (embedded by default), snapshots, the
hash-chain audit, the live tail and read-model storage.

Only this package talks to the database or imports ``eventsourcing``'s persistence and
``psycopg``; the rest of ipa uses the names below.
"""

from .codec import RecordedEvent
from .database import ConnectionParams, check_data_dir, default_data_dir, embedded_postgres
from .errors import (
    CorruptEvent,
    PositionConflict,
    StoreError,
    StoreUnavailable,
    StreamNotFound,
    UnknownEventType,
    VersionConflict,
)
from .integrity import Finding, verify_stream
from .store import EventStore, StoreSettings
from .tail import Subscription
from .writer import Appended

__all__ = [
    "Appended",
    "ConnectionParams",
    "CorruptEvent",
    "EventStore",
    "Finding",
    "PositionConflict",
    "RecordedEvent",
    "StoreError",
    "StoreSettings",
    "StoreUnavailable",
    "StreamNotFound",
    "Subscription",
    "UnknownEventType",
    "VersionConflict",
    "check_data_dir",
    "default_data_dir",
    "embedded_postgres",
    "verify_stream",
]
