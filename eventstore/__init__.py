"""Persistence of ipa: the event store on PostgreSQL (embedded by default), snapshots, the
hash-chain audit, the live tail and read-model storage.

Only this package talks to the database or imports ``eventsourcing``'s persistence and
``psycopg``; the rest of ipa uses the names below.
"""

from .audit_key import KEY_FILE, AuditKey, load_audit_key
from .bundle import BundleRefused, TaskBundle
from .codec import RecordedEvent
from .database import ConnectionParams, check_data_dir, default_data_dir, embedded_postgres
from .errors import (
    AuditKeyError,
    CorruptEvent,
    PositionConflict,
    StoreError,
    StoreUnavailable,
    StreamNotFound,
    UnknownEventType,
    UnstorableEvent,
    VersionConflict,
)
from .inbox import OwnerUnreachable
from .integrity import Audit, Finding, ManifestSummary, verify_stream
from .leases import LeaseLost, Node, NodeIdTaken, NodeRow
from .lock import LOCK_FILE, DataDirInUse, data_dir_lock, read_holder
from .memories import MemoryTable
from .side_tables import PositionMoved
from .store import EventStore, StoreSettings
from .tail import Subscription
from .usage import UsageTable
from .writer import Appended

__all__ = [
    "KEY_FILE",
    "LOCK_FILE",
    "Appended",
    "Audit",
    "AuditKey",
    "AuditKeyError",
    "BundleRefused",
    "ConnectionParams",
    "CorruptEvent",
    "DataDirInUse",
    "EventStore",
    "Finding",
    "LeaseLost",
    "ManifestSummary",
    "MemoryTable",
    "Node",
    "NodeIdTaken",
    "NodeRow",
    "OwnerUnreachable",
    "PositionConflict",
    "RecordedEvent",
    "StoreError",
    "StoreSettings",
    "StoreUnavailable",
    "PositionMoved",
    "StreamNotFound",
    "Subscription",
    "TaskBundle",
    "UnknownEventType",
    "UnstorableEvent",
    "UsageTable",
    "VersionConflict",
    "check_data_dir",
    "data_dir_lock",
    "default_data_dir",
    "embedded_postgres",
    "load_audit_key",
    "read_holder",
    "verify_stream",
]
