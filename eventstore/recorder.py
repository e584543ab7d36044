"""The store's tables on PostgreSQL, through the ``eventsourcing`` library's recorders.

- ``events``: every event of every stream (the library's application recorder: primary key
  ``(originator_id, originator_version)`` gives optimistic concurrency; ``notification_id``
  is the global position; each insert transaction takes the table lock and NOTIFYs ``events``,
  so positions become visible in order).
- ``snapshots``: task snapshots (the library's aggregate recorder).
- ``read_models`` / ``projection_tracking``: see :mod:`.read_models`.
- ``audit_manifest`` / ``audit_keyed_from``: see :mod:`.manifest`; the insert functions here
  keep the manifest in the append's transaction.

This module adds the few queries the library does not have: a stream's rows with their
positions, a stream's head, and the list of streams.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import InterfaceError, Notification, OperationalError
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
)
from eventsourcing.utils import retry
from psycopg.sql import SQL, Composable, Identifier
from psycopg_pool import PoolTimeout

from .database import ConnectionParams
from .errors import StoreUnavailable, one_line
from .inbox import create_statements as inbox_tables
from .leases import LEASE_LOST, LEASES_TABLE
from .leases import create_statements as lease_tables
from .manifest import MANIFEST_TABLE

EVENTS_TABLE = "events"
SNAPSHOTS_TABLE = "snapshots"


def open_datastore(params: ConnectionParams, *, pool_size: int = 4) -> PostgresDatastore:
    """A connection pool on ``params``, opened now: an unreachable server fails here, with
    :class:`StoreUnavailable` saying where and why in one line."""
    try:
        psycopg.connect(params.conninfo(), connect_timeout=5).close()
    except psycopg.Error as e:
        raise StoreUnavailable(
            f"cannot reach the database at {params.describe()}: {one_line(e)}"
        ) from e
    datastore = PostgresDatastore(
        dbname=params.dbname,
        host=params.host,
        port=params.port,
        user=params.user,
        password=params.password,
        pool_size=pool_size,
        max_overflow=pool_size,
        connect_timeout=5.0,
        lock_timeout=10,
        originator_id_type="uuid",
    )
    # Opened once, waiting for the first connections; the library's later open() calls then
    # return at once (concurrent waiting opens trip an assertion in psycopg_pool).
    try:
        datastore.pool.open(wait=True, timeout=5.0)
    except PoolTimeout as e:
        raise StoreUnavailable(f"cannot reach the database at {params.describe()}: {e}") from e
    return datastore


class EventRecorder(PostgresApplicationRecorder):
    """The ``events`` table, with per-stream reads that carry global positions, and an
    insert in one round trip (:attr:`insert_statement`)."""

    def __init__(self, datastore: PostgresDatastore) -> None:
        super().__init__(datastore, events_table_name=EVENTS_TABLE)
        schema = Identifier(datastore.schema)
        table = SQL("{}.{}").format(schema, Identifier(EVENTS_TABLE))
        # The library's insert makes several round trips (SET LOCAL, LOCK, NOTIFY, INSERT,
        # with a pipeline sync between): ~0.6 ms. One call of this function in autocommit
        # does the same work (table lock first, so positions commit in order; one NOTIFY
        # per transaction) in ~0.2 ms, and takes plain arrays instead of composite values.
        # It also upserts the appended streams' rows of the keyed manifest (see
        # :mod:`.manifest`; none when the store is not keyed), in the same transaction.
        manifest = SQL("{}.{}").format(schema, Identifier(MANIFEST_TABLE))
        leases = SQL("{}.{}").format(schema, Identifier(LEASES_TABLE))
        self.sql_create_statements.extend(lease_tables(datastore.schema))
        self.sql_create_statements.extend(inbox_tables(datastore.schema))
        for old in ("ipa_insert_events(uuid[], bigint[], text[], bytea[])",
                    "ipa_insert_event(uuid, bigint, text, bytea)",
                    "ipa_insert_events(uuid[], bigint[], text[], bytea[], uuid[], bigint[], "
                    "text[])",
                    "ipa_insert_event(uuid, bigint, text, bytea, text)"):
            # The versions without the manifest: an older ipa still running on this store
            # fails its appends rather than writing events the manifest does not cover.
            self.sql_create_statements.append(
                SQL("DROP FUNCTION IF EXISTS {}.{}").format(schema, SQL(old))
            )
        # Both check the appends' leases first (fencing, :mod:`.leases`): each fence is a
        # (task, node, epoch) the lease row must still say, read under a share lock so that a
        # claim waits for this append; one that does not fails the whole call.
        for function, parameters, rows, manifest_rows, fences in (
            # Many events: four arrays, unnested; the manifest's rows as three more; the
            # fences as three more.
            ("ipa_insert_events", "ids uuid[], versions bigint[], topics text[], states bytea[], "
             "heads uuid[], head_versions bigint[], macs text[], "
             "fence_tasks uuid[], fence_nodes text[], fence_epochs bigint[]",
             "SELECT * FROM unnest(ids, versions, topics, states)",
             "SELECT * FROM unnest(heads, head_versions, macs)",
             "SELECT * FROM unnest(fence_tasks, fence_nodes, fence_epochs)"),
            # One event: plain values (a single append skips the array encoding).
            ("ipa_insert_event", "id uuid, version bigint, topic text, state bytea, mac text, "
             "fence_task uuid, fence_node text, fence_epoch bigint",
             "SELECT id, version, topic, state",
             "SELECT id, version, mac WHERE mac IS NOT NULL",
             "SELECT fence_task, fence_node, fence_epoch WHERE fence_task IS NOT NULL"),
        ):
            self.sql_create_statements.append(
                SQL(
                    "CREATE OR REPLACE FUNCTION {function}({parameters}) "
                    "RETURNS SETOF bigint LANGUAGE plpgsql AS $$ "
                    "DECLARE lost uuid; "
                    "BEGIN "
                    "SET LOCAL lock_timeout = '{lock_timeout}s'; "
                    "LOCK TABLE {table} IN EXCLUSIVE MODE; "
                    "SELECT f.t INTO lost FROM ({fences}) AS f(t, n, e) "
                    "LEFT JOIN (SELECT * FROM {leases} WHERE task_id IN "
                    "(SELECT t FROM ({fences}) AS g(t, n, e)) FOR SHARE) AS l "
                    "ON l.task_id = f.t AND l.node_id = f.n AND l.epoch = f.e "
                    "WHERE l.task_id IS NULL LIMIT 1; "
                    "IF lost IS NOT NULL THEN "
                    "RAISE EXCEPTION 'ipa: lease of task % lost', lost "
                    "USING ERRCODE = '{lease_lost}'; "
                    "END IF; "
                    "PERFORM pg_notify({channel}, ''); "
                    "RETURN QUERY INSERT INTO {table} "
                    "(originator_id, originator_version, topic, state) {rows} "
                    "RETURNING notification_id; "
                    "INSERT INTO {manifest} AS m (stream_id, version, mac) {manifest_rows} "
                    "ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, "
                    "mac = EXCLUDED.mac WHERE m.version < EXCLUDED.version; "
                    "END $$"
                ).format(
                    function=SQL("{}.{}").format(schema, Identifier(function)),
                    parameters=SQL(parameters),
                    lock_timeout=SQL(str(int(datastore.lock_timeout))),
                    table=table,
                    channel=self.channel_name,
                    rows=SQL(rows),
                    manifest=manifest,
                    manifest_rows=SQL(manifest_rows),
                    fences=SQL(fences),
                    leases=leases,
                    lease_lost=SQL(LEASE_LOST),
                )
            )
        # The batch writer runs these on its own async connection.
        self.insert_statement = SQL(
            "SELECT * FROM {}.ipa_insert_events(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        ).format(schema)
        """Insert events given as four arrays (ids, versions, topics, states) and upsert
        manifest rows given as three (stream ids, versions, MACs), fenced by three more (task
        ids, node ids, epochs; empty: none); returns the events' global positions in order."""
        self.insert_one_statement = SQL(
            "SELECT * FROM {}.ipa_insert_event(%s, %s, %s, %s, %s, %s, %s, %s)"
        ).format(schema)
        """Insert one event given as (id, version, topic, state, manifest MAC or None, fence
        task, node and epoch or three None); returns its position."""
        self.select_head_statement = SQL(
            "SELECT originator_version, topic, state FROM {} WHERE originator_id = %s "
            "ORDER BY originator_version DESC LIMIT 1"
        ).format(table)
        """A stream's newest row (version, topic, state)."""
        self._select_stream = SQL(
            "SELECT * FROM {} WHERE originator_id = %s"
        ).format(table)
        self._stream_ids = SQL("SELECT DISTINCT originator_id FROM {} ORDER BY 1").format(table)

    @retry((InterfaceError, OperationalError), max_attempts=3, wait=0.2)
    def select_stream(
        self,
        stream_id: UUID,
        *,
        gt: int | None = None,
        lte: int | None = None,
        limit: int | None = None,
        desc: bool = False,
    ) -> Sequence[Notification]:
        """Rows of one stream in version order, each with its global position (``id``)."""
        params: list[object] = [stream_id]
        statement = version_range(self._select_stream, params, gt, lte)
        statement += SQL(" ORDER BY originator_version DESC" if desc else
                         " ORDER BY originator_version ASC")
        if limit is not None:
            statement += SQL(" LIMIT %s")
            params.append(limit)
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params, prepare=True)
            return [
                Notification(
                    id=row["notification_id"],
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                )
                for row in curs.fetchall()
            ]

    def head(self, stream_id: UUID) -> Notification | None:
        """The newest row of a stream, or ``None`` for a stream with no events."""
        rows = self.select_stream(stream_id, desc=True, limit=1)
        return rows[0] if rows else None

    @retry((InterfaceError, OperationalError), max_attempts=3, wait=0.2)
    def stream_ids(self) -> list[UUID]:
        """Every stream that has at least one event."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._stream_ids)
            return [row["originator_id"] for row in curs.fetchall()]


class SnapshotRecorder(PostgresAggregateRecorder):
    """The ``snapshots`` table."""

    def __init__(self, datastore: PostgresDatastore) -> None:
        super().__init__(datastore, events_table_name=SNAPSHOTS_TABLE)


def version_range(query: Composable, params: list[Any], gt: int | None,
                  lte: int | None) -> Composable:
    """``query`` (a stream's rows, ending in its ``WHERE``) narrowed to versions after ``gt``
    and up to ``lte`` when given, their values appended to ``params``."""
    if gt is not None:
        query += SQL(" AND originator_version > %s")
        params.append(gt)
    if lte is not None:
        query += SQL(" AND originator_version <= %s")
        params.append(lte)
    return query
