"""The store's reads of events and snapshots, on an async connection pool of their own.

Reads used to run the library's synchronous queries in the store's worker threads, so two
hundred cold reads at once waited behind its eight threads. Here each read borrows an async
connection (``psycopg_pool.AsyncConnectionPool``, ``StoreSettings.read_pool_size``) for its
query alone, never a thread: the queries are the library's (rows of one stream in version
order, of the log after a position, the newest snapshot at or below a version), prepared, with
the rows in binary (``bytea`` arrives as bytes, not as hex to decode).

PostgreSQL's errors become :class:`~.errors.StoreUnavailable`, as the library's did; a query
whose connection broke is tried again on another, three times in all, as a stream's rows were
(``EventRecorder.select_stream``'s ``retry``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import anyio
import psycopg
from eventsourcing.persistence import Notification, StoredEvent
from psycopg.sql import SQL, Composable, Identifier
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from .database import ConnectionParams
from .errors import StoreUnavailable
from .recorder import EVENTS_TABLE, SNAPSHOTS_TABLE, version_range

ATTEMPTS = 3
RETRY_WAIT = 0.2

Row = tuple[int, str, bytes]
"""A stream's row as a load folds it: (version, topic, state)."""


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
        self._stream = SQL("SELECT {} FROM {} WHERE originator_id = %s").format(columns, events)
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
        params: list[Any] = [stream_id]
        query = version_range(self._stream, params, gt, lte) + SQL(" ORDER BY originator_version")
        if limit is not None:
            query += SQL(" LIMIT %s")
            params.append(limit)
        return [Notification(id=position, originator_id=stream, originator_version=version,
                             topic=topic, state=state)
                for position, stream, version, topic, state in await self._fetch(query, params)]

    async def rows(self, stream_id: UUID, *, gt: int | None = None, lte: int | None = None
                   ) -> list[Row]:
        """(version, topic, state) of one stream's rows in ``(gt, lte]``, in version order."""
        params: list[Any] = [stream_id]
        query = version_range(self._rows, params, gt, lte) + SQL(" ORDER BY originator_version")
        return await self._fetch(query, params)  # type: ignore[return-value]

    async def log(self, after: int, limit: int) -> list[Notification]:
        """Rows of every stream after global position ``after``, in position order."""
        return [Notification(id=position, originator_id=stream, originator_version=version,
                             topic=topic, state=state)
                for position, stream, version, topic, state
                in await self._fetch(self._log, (after, limit))]

    async def head(self, stream_id: UUID) -> int:
        """The stream's newest version (0: it has no events)."""
        rows = await self._fetch(self._head, (stream_id,))
        return rows[0][0] if rows else 0

    async def max_position(self) -> int:
        """The global position of the newest event (0: none)."""
        return (await self._fetch(self._max_position, ()))[0][0] or 0

    async def snapshot(self, task_id: UUID, lte: int | None = None) -> StoredEvent | None:
        """The task's newest snapshot at or below version ``lte`` (any: ``None``)."""
        params: list[Any] = [task_id]
        query = version_range(self._snapshot, params, None, lte)
        query += SQL(" ORDER BY originator_version DESC LIMIT 1")
        rows = await self._fetch(query, params)
        if not rows:
            return None
        version, topic, state = rows[0]
        return StoredEvent(originator_id=task_id, originator_version=version, topic=topic,
                           state=state)
