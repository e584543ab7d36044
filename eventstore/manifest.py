"""The keyed manifest and the keyed-from record: what the audit checks the streams against.

- ``audit_manifest``: one row per stream, ``(stream_id, version, mac)``, where ``mac`` is the
  audit key's MAC of the stream id, its version and the digest of the event at that version
  (:meth:`.AuditKey.manifest_mac`). The append upserts it in the same call, so the same
  transaction, as the events (``insert_statement`` in :mod:`.recorder`); a row never moves
  back. A stream whose events end before its row's version lost its tail; a row whose stream
  is gone is a deleted task; a row whose MAC fails was forged; a stream without a row was
  not written by ipa.
- ``audit_keyed_from``: one row, written once when ipa first opens the store with an audit key:
  the global position from which events are keyed (events below it carry the unkeyed digest
  of older ipa versions), the key's id, and the key's MAC of both. In the same transaction
  (under the events table's lock) every stream then in the store gets its manifest row, so
  the manifest covers old streams too from that moment on.

No key is ever stored here: whoever holds only the database can read these rows but cannot
make new ones that verify.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError
from eventsourcing.postgres import PostgresDatastore, PostgresRecorder
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier

from .audit_key import AuditKey
from .errors import AuditKeyError

MANIFEST_TABLE = "audit_manifest"
KEYED_FROM_TABLE = "audit_keyed_from"
_DIGEST = slice(64, 128)  # where an event's own digest sits in its stored ``state``


@dataclass(frozen=True, slots=True)
class KeyedFrom:
    """The store's keyed-from record: events at ``position`` and after are keyed."""

    position: int
    key_id: str
    mac: str

    def verifies(self, key: AuditKey) -> bool:
        return key.keyed_from_mac(self.position, self.key_id) == self.mac


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    """One stream's manifest row."""

    stream_id: UUID
    version: int
    mac: str


class ManifestRecorder(PostgresRecorder):
    """The ``audit_manifest`` and ``audit_keyed_from`` tables."""

    def __init__(self, datastore: PostgresDatastore, events_table: str) -> None:
        super().__init__(datastore)
        schema = Identifier(datastore.schema)
        manifest = SQL("{}.{}").format(schema, Identifier(MANIFEST_TABLE))
        keyed_from = SQL("{}.{}").format(schema, Identifier(KEYED_FROM_TABLE))
        events = SQL("{}.{}").format(schema, Identifier(events_table))
        self.sql_create_statements += [
            # Every append updates its stream's row: half-empty pages let most updates stay
            # on their page (HOT, no new index entry), which measured cheaper.
            SQL("CREATE TABLE IF NOT EXISTS {} (stream_id uuid PRIMARY KEY, "
                "version bigint NOT NULL, mac text NOT NULL) WITH (fillfactor = 50)"
                ).format(manifest),
            SQL("CREATE TABLE IF NOT EXISTS {} (one boolean PRIMARY KEY DEFAULT true "
                "CHECK (one), position bigint NOT NULL, key_id text NOT NULL, "
                "mac text NOT NULL)").format(keyed_from),
        ]
        self._tables = (f"{datastore.schema}.{MANIFEST_TABLE}",
                        f"{datastore.schema}.{KEYED_FROM_TABLE}")
        self._exists = SQL("SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL "
                           "AS e")
        self._select_keyed_from = SQL("SELECT position, key_id, mac FROM {}").format(keyed_from)
        self._lock_events = SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(events)
        self._next_position = SQL(
            "SELECT coalesce(max(notification_id), 0) + 1 AS p FROM {}"
        ).format(events)
        self._heads = SQL(
            "SELECT DISTINCT ON (originator_id) originator_id, originator_version, "
            "substring(state FROM {} FOR 64) AS digest FROM {} "
            "ORDER BY originator_id, originator_version DESC"
        ).format(SQL(str(_DIGEST.start + 1)), events)
        self._insert_entries = SQL(
            "INSERT INTO {} (stream_id, version, mac) SELECT * FROM unnest(%s::uuid[], "
            "%s::bigint[], %s::text[]) ON CONFLICT (stream_id) DO NOTHING"
        ).format(manifest)
        self._insert_keyed_from = SQL(
            "INSERT INTO {} (position, key_id, mac) VALUES (%s, %s, %s)"
        ).format(keyed_from)
        self._select_entry = SQL(
            "SELECT stream_id, version, mac FROM {} WHERE stream_id = %s"
        ).format(manifest)
        self._select_orphans = SQL(
            "SELECT stream_id, version, mac FROM {} m WHERE NOT EXISTS "
            "(SELECT 1 FROM {} e WHERE e.originator_id = m.stream_id) ORDER BY stream_id"
        ).format(manifest, events)
        self._select_summary = SQL(
            "SELECT count(*) AS streams, coalesce(sum(version), 0) AS events FROM {}"
        ).format(manifest)

    @retry((InterfaceError, OperationalError), max_attempts=3, wait=0.2)
    def exists(self) -> bool:
        """Whether the tables are there (a store made before them has none)."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._exists, self._tables)
            row = curs.fetchone()
            return bool(row and row["e"])

    @retry((InterfaceError, OperationalError), max_attempts=3, wait=0.2)
    def keyed_from(self) -> KeyedFrom | None:
        """The store's keyed-from record, or ``None`` for a store never keyed."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._select_keyed_from)
            rows = curs.fetchall()
        if not rows:
            return None
        return KeyedFrom(rows[0]["position"], rows[0]["key_id"], rows[0]["mac"])

    def key_store(self, key: AuditKey) -> KeyedFrom:
        """Key the store with ``key`` if it is not keyed yet (record the keyed-from position
        and give every stream its manifest row, in one transaction under the events table's
        lock); return the keyed-from record.

        Raises :class:`AuditKeyError` when the store was keyed with another key, or its
        record fails its MAC: writing on would mix keys or bless a forgery.
        """
        record = self.keyed_from()
        if record is None:
            with self.datastore.transaction(commit=True) as curs:
                # Every append holds the table's row-exclusive lock from its start: once this
                # lock is granted, no append is in flight and none starts before the commit.
                curs.execute(self._lock_events)
                curs.execute(self._select_keyed_from)  # another process may have keyed it
                if not curs.fetchall():
                    curs.execute(self._next_position)
                    row = curs.fetchone()
                    assert row is not None
                    position = row["p"]
                    curs.execute(self._heads)
                    ids, versions, macs = [], [], []
                    for head in curs.fetchall():
                        digest = bytes(head["digest"]).decode("ascii", "replace")
                        ids.append(head["originator_id"])
                        versions.append(head["originator_version"])
                        macs.append(key.manifest_mac(
                            head["originator_id"], head["originator_version"], digest))
                    curs.execute(self._insert_entries, (ids, versions, macs))
                    curs.execute(self._insert_keyed_from, (
                        position, key.key_id, key.keyed_from_mac(position, key.key_id)))
            record = self.keyed_from()
            assert record is not None
        check_key(record, key)
        if not record.verifies(key):
            raise AuditKeyError(
                f"the store's keyed-from record (position {record.position}) fails its MAC: "
                "it was altered; run `ipa audit verify` (refusing to write)"
            )
        return record

    @retry((InterfaceError, OperationalError), max_attempts=3, wait=0.2)
    def entry(self, stream_id: UUID) -> ManifestEntry | None:
        """The stream's manifest row, if it has one."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._select_entry, (stream_id,), prepare=True)
            row = curs.fetchone()
        return None if row is None else ManifestEntry(row["stream_id"], row["version"],
                                                      row["mac"])

    @retry((InterfaceError, OperationalError), max_attempts=3, wait=0.2)
    def orphans(self) -> list[ManifestEntry]:
        """Manifest rows whose stream has no event left."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._select_orphans)
            return [ManifestEntry(r["stream_id"], r["version"], r["mac"])
                    for r in curs.fetchall()]

    @retry((InterfaceError, OperationalError), max_attempts=3, wait=0.2)
    def summary(self) -> tuple[int, int]:
        """(streams, events) the manifest covers: its rows, and the sum of their versions."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._select_summary)
            row = curs.fetchone()
        assert row is not None
        return int(row["streams"]), int(row["events"])


def check_key(record: KeyedFrom, key: AuditKey) -> None:
    """Raise :class:`AuditKeyError` unless ``key`` is the one the store was keyed with."""
    if record.key_id != key.key_id:
        raise AuditKeyError(
            f"the audit key from {key.source} is not the one this store was keyed with "
            f"(key id {key.key_id}, the store's {record.key_id}): wrong IPA_AUDIT_KEY or "
            "audit.key?"
        )
