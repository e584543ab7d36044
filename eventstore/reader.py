"""The store's reads of events and snapshots, on an async connection pool of their own.

Reads used to run the library's synchronous queries in the store's worker threads, so two
hundred cold reads at once waited behind its eight threads. Here each read borrows an async
connection (``psycopg_pool.AsyncConnectionPool``, ``StoreSettings.read_pool_size``) for its
query alone, never a thread: the queries are the library's (rows of one stream in version
order, of the log after a position, the newest snapshot at or below a version), prepared, with
the rows in binary (``bytea`` arrives as bytes, not as hex to decode).

Reads of a stream's rows, of its head and of a task's snapshot are coalesced
(:mod:`.coalesce`): when every connection is busy, those arriving meanwhile are answered by one
query for all of them (``unnest`` of their parameters, ``WITH ORDINALITY``, each read a
``LATERAL`` subquery of the same shape as its own query), so a burst of cold pages costs a few
queries, not one each.

PostgreSQL's errors become :class:`~.errors.StoreUnavailable`, as the library's did; a query
whose connection broke is tried again on another, three times in all, as a stream's rows were
(``EventRecorder.select_stream``'s ``retry``).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any
from uuid import UUID

import anyio
import psycopg
from eventsourcing.persistence import Notification, StoredEvent
from psycopg.sql import SQL, Composable, Identifier
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from .coalesce import Coalescer, Slots
from .database import ConnectionParams
from .errors import StoreUnavailable
from .recorder import EVENTS_TABLE, SNAPSHOTS_TABLE, version_range

ATTEMPTS = 3
RETRY_WAIT = 0.2

Row = tuple[int, str, bytes]
"""A stream's row as a load folds it: (version, topic, state)."""

_Range = tuple[UUID, int | None, int | None, int | None]
"""A read of a stream's rows: (stream, after version, up to version, at most rows)."""

_NO_UPPER = 2**63 - 1  # "up to" no version: the largest bigint


class StreamReader:
    """Rows of the ``events`` and ``snapshots`` tables, read on the pool (open it first)."""

    def __init__(self, params: ConnectionParams, schema: str, *, pool_size: int) -> None:
        self._conninfo = params.conninfo()
        self._describe = params.describe()
        self._pool_size = pool_size
        self._pool: AsyncConnectionPool | None = None
        events = SQL("{}.{}").format(Identifier(schema), Identifier(EVENTS_TABLE))
        snapshots = SQL("{}.{}").format(Identifier(schema), Identifier(SNAPSHOTS_TABLE))
        columns = SQL("notification_id, originator_id, originator_version, topic, state")
        self._stream = SQL(
            "SELECT notification_id, originator_version, topic, state FROM {} "
            "WHERE originator_id = %s"
        ).format(events)
        self._rows = SQL(
            "SELECT originator_version, topic, state FROM {} WHERE originator_id = %s"
        ).format(events)
        self._log = SQL(
            "SELECT {} FROM {} WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
        ).format(columns, events)
        self._head = SQL(
            "SELECT originator_version FROM {} WHERE originator_id = %s "
            "ORDER BY originator_version DESC LIMIT 1"
        ).format(events)
        self._max_position = SQL("SELECT max(notification_id) FROM {}").format(events)
        self._snapshot = SQL(
            "SELECT originator_version, topic, state FROM {} WHERE originator_id = %s"
        ).format(snapshots)
        # The same reads for many at once: r.i is each read's place in the batch.
        ranges = (
            "FROM unnest(%s::uuid[], %s::bigint[], %s::bigint[], %s::bigint[]) "
            "WITH ORDINALITY AS r(id, gt, lte, lim, i) CROSS JOIN LATERAL ("
            "SELECT {columns} FROM {events} "
            "WHERE originator_id = r.id AND originator_version > r.gt "
            "AND originator_version <= r.lte ORDER BY originator_version LIMIT r.lim) AS e "
            "ORDER BY r.i, e.originator_version"
        )
        self._ranges = SQL(
            "SELECT r.i, e.notification_id, e.originator_version, e.topic, e.state " + ranges
        ).format(columns=SQL("notification_id, originator_version, topic, state"), events=events)
        self._ranges_rows = SQL(
            "SELECT r.i, e.originator_version, e.topic, e.state " + ranges
        ).format(columns=SQL("originator_version, topic, state"), events=events)
        self._heads = SQL(
            "SELECT (SELECT max(originator_version) FROM {} WHERE originator_id = r.id) "
            "FROM unnest(%s::uuid[]) WITH ORDINALITY AS r(id, i) ORDER BY r.i"
        ).format(events)
        self._snapshots = SQL(
            "SELECT r.i, s.originator_version, s.topic, s.state "
            "FROM unnest(%s::uuid[], %s::bigint[]) WITH ORDINALITY AS r(id, lte, i) "
            "CROSS JOIN LATERAL (SELECT originator_version, topic, state FROM {} "
            "WHERE originator_id = r.id AND originator_version <= r.lte "
            "ORDER BY originator_version DESC LIMIT 1) AS s"
        ).format(snapshots)
        slots = Slots(pool_size)
        # A stream's rows with their positions (pages, the audit), and without (loads: no
        # column a replay of 100,000 rows would decode for nothing).
        self._range_reads = Coalescer(slots, partial(self._range, self._stream),
                                      partial(self._many_ranges, self._ranges))
        self._rows_reads = Coalescer(slots, partial(self._range, self._rows),
                                     partial(self._many_ranges, self._ranges_rows))
        self._head_reads = Coalescer(slots, self._head_of, self._many_heads)
        self._snapshot_reads = Coalescer(slots, self._snapshot_of, self._many_snapshots)

    @property
    def queries(self) -> int:
        """Queries the coalesced reads ran so far."""
        return sum(c.queries for c in (self._range_reads, self._rows_reads, self._head_reads,
                                        self._snapshot_reads))

    async def open(self) -> None:
        """Open the pool (one connection now, more as reads need them)."""
        self._pool = AsyncConnectionPool(
            self._conninfo, min_size=1, max_size=self._pool_size, open=False,
            kwargs={"autocommit": True}, name="ipa-reads",
        )
        try:
            await self._pool.open(wait=True, timeout=10)
        except PoolTimeout as e:
            raise StoreUnavailable(f"cannot reach the database at {self._describe}: {e}") from e

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def _fetch(self, query: Composable, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        if self._pool is None:
            raise StoreUnavailable("the store is not open")
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with self._pool.connection() as conn:
                    cursor = await conn.execute(query, params, prepare=True, binary=True)
                    return await cursor.fetchall()
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                if attempt == ATTEMPTS or isinstance(e, PoolTimeout | PoolClosed):
                    raise StoreUnavailable(f"database at {self._describe}: {e}") from e
            except psycopg.Error as e:
                raise StoreUnavailable(f"database at {self._describe}: {e}") from e
            await anyio.sleep(RETRY_WAIT)
        raise AssertionError("unreachable")

    async def stream(self, stream_id: UUID, *, gt: int | None = None, lte: int | None = None,
                     limit: int | None = None) -> list[Notification]:
        """Rows of one stream with version in ``(gt, lte]``, in version order, each with its
        global position (``id``)."""
        rows = await self.positioned(stream_id, gt=gt, lte=lte, limit=limit)
        if not rows:
            return []
        stream_id = _as_uuid(stream_id)
        return [Notification(id=position, originator_id=stream_id, originator_version=version,
                             topic=topic, state=state)
                for position, version, topic, state in rows]

    async def positioned(self, stream_id: UUID, *, gt: int | None = None,
                         lte: int | None = None, limit: int | None = None
                         ) -> list[tuple[int, int, str, bytes]]:
        """:meth:`stream`'s rows as they come: (position, version, topic, state)."""
        read = _range(stream_id, gt, lte, limit)
        if read is None:
            return []
        return await self._range_reads.get(read)  # type: ignore[return-value]

    async def rows(self, stream_id: UUID, *, gt: int | None = None, lte: int | None = None
                   ) -> list[Row]:
        """(version, topic, state) of one stream's rows in ``(gt, lte]``, in version order."""
        read = _range(stream_id, gt, lte, None)
        if read is None:
            return []
        return await self._rows_reads.get(read)  # type: ignore[return-value]

    async def log(self, after: int, limit: int) -> list[Notification]:
        """Rows of every stream after global position ``after``, in position order."""
        return [Notification(id=position, originator_id=stream, originator_version=version,
                             topic=topic, state=state)
                for position, stream, version, topic, state
                in await self._fetch(self._log, (after, limit))]

    async def head(self, stream_id: UUID) -> int:
        """The stream's newest version (0: it has no events)."""
        return await self._head_reads.get(_as_uuid(stream_id))

    async def max_position(self) -> int:
        """The global position of the newest event (0: none)."""
        return (await self._fetch(self._max_position, ()))[0][0] or 0

    async def snapshot(self, task_id: UUID, lte: int | None = None) -> StoredEvent | None:
        """The task's newest snapshot at or below version ``lte`` (any: ``None``)."""
        if lte is not None and lte < 1:
            return None
        row = await self._snapshot_reads.get((_as_uuid(task_id), _upper(lte)))
        if row is None:
            return None
        version, topic, state = row
        return StoredEvent(originator_id=task_id, originator_version=version, topic=topic,
                           state=state)

    # One read alone, and many at once ------------------------------------------------------

    async def _range(self, query: Composable, read: _Range) -> list[tuple[Any, ...]]:
        """``query``'s rows of one read (its stream's, in version order)."""
        stream_id, gt, lte, limit = read
        params: list[Any] = [stream_id]
        query = version_range(query, params, gt or None, lte)
        query += SQL(" ORDER BY originator_version")
        if limit is not None:
            query += SQL(" LIMIT %s")
            params.append(limit)
        return await self._fetch(query, params)

    async def _many_ranges(self, query: Composable, reads: Sequence[_Range]
                           ) -> list[list[tuple[Any, ...]]]:
        """``query``'s rows of many reads, each read's apart (its place first in each row)."""
        ids, gts, ltes, limits = zip(*reads, strict=True)
        rows = await self._fetch(query, (
            list(ids), list(gts), [_NO_UPPER if lte is None else lte for lte in ltes],
            list(limits),
        ))
        found: list[list[tuple[Any, ...]]] = [[] for _ in reads]
        for row in rows:
            found[row[0] - 1].append(row[1:])
        return found

    async def _head_of(self, stream_id: UUID) -> int:
        rows = await self._fetch(self._head, (stream_id,))
        return rows[0][0] if rows else 0

    async def _many_heads(self, stream_ids: Sequence[UUID]) -> list[int]:
        return [version or 0 for (version,) in await self._fetch(self._heads, (list(stream_ids),))]

    async def _snapshot_of(self, read: tuple[UUID, int | None]) -> Row | None:
        task_id, lte = read
        params: list[Any] = [task_id]
        query = version_range(self._snapshot, params, None, lte)
        query += SQL(" ORDER BY originator_version DESC LIMIT 1")
        rows = await self._fetch(query, params)
        return rows[0] if rows else None  # type: ignore[return-value]

    async def _many_snapshots(self, reads: Sequence[tuple[UUID, int | None]]
                              ) -> list[Row | None]:
        ids, ltes = zip(*reads, strict=True)
        found: list[Row | None] = [None] * len(reads)
        for i, version, topic, state in await self._fetch(
            self._snapshots, (list(ids), [_NO_UPPER if lte is None else lte for lte in ltes]),
        ):
            found[i - 1] = (version, topic, state)
        return found


def _as_uuid(value: UUID | str) -> UUID:
    """A stream id as the column holds it (a malformed one fails its own read here, never a
    batch it would have joined)."""
    return value if isinstance(value, UUID) else UUID(str(value))


def _upper(lte: int | None) -> int | None:
    """``lte`` (or a limit), None when no bigint is above it: it bounds nothing."""
    return None if lte is None or lte >= _NO_UPPER else lte


def _range(stream_id: UUID | str, gt: int | None, lte: int | None,
           limit: int | None) -> _Range | None:
    """A read of rows, its bounds made bigints that select the same rows (``gt`` 0 for none);
    None when it can select no row. No read's values can then fail a batch it joins."""
    gt = max(gt or 0, 0)
    lte = _upper(lte)
    if gt >= _NO_UPPER or (lte is not None and lte <= gt) or (limit is not None and limit <= 0):
        return None
    return _as_uuid(stream_id), gt, lte, _upper(limit)
