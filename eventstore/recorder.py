"""The store's tables on PostgreSQL, through the ``eventsourcing`` library's recorders.

- ``events``: every event of every stream (the library's application recorder: primary key
  ``(originator_id, originator_version)`` gives optimistic concurrency; ``notification_id``
  is the global position; each append takes the store's append lock and NOTIFYs ``events``,
  so positions become visible in order).
- ``snapshots``: task snapshots (the library's aggregate recorder).
- ``read_models`` / ``projection_tracking``: see :mod:`.read_models`.
- ``audit_manifest`` / ``audit_keyed_from``: see :mod:`.manifest`; the insert statements here
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
from .leases import LEASES_TABLE
from .leases import create_statements as lease_tables
from .manifest import MANIFEST_TABLE
from .prepared import PreparedStatement

EVENTS_TABLE = "events"
APPEND_ONE_TYPES = ("uuid", "bigint", "text", "bytea", "text", "uuid", "text", "bigint")
"""The parameters of :attr:`EventRecorder.append_one`."""
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
        # with a pipeline sync between): ~0.6 ms. Here an append is one statement in
        # autocommit, its steps data-modifying CTEs: the store's append lock (an advisory
        # lock taken before any position is drawn and held to the commit, so positions commit
        # in order), the fences (:mod:`.leases`), one NOTIFY, the events, and the appended
        # streams' rows of the keyed manifest (:mod:`.manifest`; none when the store is not
        # keyed). Against a PL/pgSQL function doing the same (table lock, SET LOCAL
        # lock_timeout, a fence query even when unfenced) it measured ~70 us faster an append,
        # 517 against 588 us beside a raw insert's 455 (bench/README.md).
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
            # fails its appends rather than writing events the manifest does not cover. (The
            # later functions, with fences, stay: their table lock conflicts with the row
            # lock every insert here holds, so an older node's appends still commit in order.)
            self.sql_create_statements.append(
                SQL("DROP FUNCTION IF EXISTS {}.{}").format(schema, SQL(old))
            )
        insert = SQL(
            "WITH append_lock AS MATERIALIZED (SELECT pg_advisory_xact_lock("
            "hashtextextended({lock_key}, 0))), "
            "fence AS MATERIALIZED ({fence}), "
            "notify AS MATERIALIZED (SELECT pg_notify({channel}, '')), "
            "appended AS (INSERT INTO {table} (originator_id, originator_version, topic, state) "
            "SELECT e.* FROM ({rows}) AS e, append_lock, fence, notify WHERE fence.held "
            "RETURNING notification_id), "
            "manifest AS (INSERT INTO {manifest} AS m (stream_id, version, mac) "
            "{manifest_rows} AND EXISTS (SELECT FROM appended) "
            "ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, "
            "mac = EXCLUDED.mac WHERE m.version < EXCLUDED.version) "
            "SELECT notification_id FROM appended"
        )
        common = {"lock_key": f"ipa-append:{datastore.schema}", "channel": self.channel_name,
                  "table": table, "manifest": manifest}
        # Rendered once: psycopg renders a composed query again at every execute (~20 us for
        # these), and caches the parsing of a query given as bytes.
        self.insert_statement = insert.format(
            **common,
            # Each fence is a (task, node, epoch) the lease row must still say, read under a
            # share lock so that a claim waits for this append; one that does not: no row.
            fence=SQL(
                "SELECT count(*) = cardinality(%(fence_tasks)b::uuid[]) AS held FROM "
                "(SELECT FROM {} AS l JOIN unnest(%(fence_tasks)b::uuid[], "
                "%(fence_nodes)b::text[], %(fence_epochs)b::bigint[]) AS f(t, n, e) "
                "ON l.task_id = f.t AND l.node_id = f.n AND l.epoch = f.e FOR SHARE OF l) AS h"
            ).format(leases),
            rows=SQL("SELECT * FROM unnest(%(ids)b::uuid[], %(versions)b::bigint[], "
                     "%(topics)b::text[], %(states)b::bytea[])"),
            manifest_rows=SQL("SELECT * FROM unnest(%(heads)b::uuid[], "
                              "%(head_versions)b::bigint[], %(macs)b::text[]) WHERE true"),
        ).as_bytes(None)
        """Insert events given as four arrays (``ids``, ``versions``, ``topics``, ``states``)
        and upsert manifest rows given as three (``heads``, ``head_versions``, ``macs``),
        fenced by three more (``fence_tasks``, ``fence_nodes``, ``fence_epochs``; empty:
        none); returns the events' positions in order, or no row when a fence did not hold
        (nothing is written then). Autocommit, or a transaction of its own: the append lock is
        held to the end of it."""
        self.append_one = PreparedStatement("ipa_append_one", insert.format(
            **common,
            fence=SQL(
                "SELECT $6::uuid IS NULL OR EXISTS (SELECT FROM {} WHERE task_id = $6 "
                "AND node_id = $7 AND epoch = $8 FOR SHARE) AS held"
            ).format(leases),
            rows=SQL("SELECT $1::uuid, $2::bigint, $3::text, $4::bytea"),
            manifest_rows=SQL("SELECT $1::uuid, $2::bigint, $5::text WHERE $5 IS NOT NULL"),
        ).as_bytes(None), APPEND_ONE_TYPES)
        """Insert one event (``$1``-``$4``: its stream, version, topic, state) and upsert its
        stream's manifest row (``$5``: the mac; NULL when the store is not keyed), fenced by
        ``$6``-``$8`` (task, node, epoch; three NULLs: not fenced); returns its position, or
        no row when the fence did not hold. Run through libpq (:mod:`.prepared`): a single
        writer's every append."""
        self.select_head_statement = SQL(
            "SELECT originator_version, topic, state FROM {} WHERE originator_id = %s "
            "ORDER BY originator_version DESC LIMIT 1"
        ).format(table)
        """A stream's newest row (version, topic, state)."""
        self.select_written_statement = SQL(
            "SELECT w.i, e.notification_id, e.topic, e.state FROM unnest(%(ids)s::uuid[], "
            "%(versions)s::bigint[]) WITH ORDINALITY AS w(id, version, i) JOIN {} e "
            "ON e.originator_id = w.id AND e.originator_version = w.version"
        ).format(table)
        """The rows at (``ids``, ``versions``) that exist: (place in the lists, from 1;
        position, topic, state)."""
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
