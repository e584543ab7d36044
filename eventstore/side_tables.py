"""Tables kept beside the event log, on a connection pool of their own: agent memory
(:mod:`.memories`), usage for analytics (:mod:`.usage`) and webhooks (:mod:`.webhooks`).

:class:`SideTables` holds what they share: the pool (autocommit, rows as dicts), creating the
tables once under the schema lock every process takes for DDL, and PostgreSQL's errors said in
the store's words: :class:`~.errors.StoreUnavailable` when the database cannot be reached,
:class:`~.errors.StoreError` for a statement it refused, each starting with the tables' name.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import psycopg
from psycopg.rows import dict_row
from psycopg.sql import SQL, Identifier
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .database import ConnectionParams, connected
from .errors import StoreError, StoreUnavailable, one_line

SCHEMA_LOCK = "SELECT pg_advisory_{}(hashtextextended('ipa-schema', 0))"
"""The advisory lock every process holds while it creates or changes tables."""


class PositionMoved(Exception):
    """Another process applied the page first (the saved position is not the one read)."""


@dataclass
class Held:
    """A page's transaction (:meth:`SideTables._held`): ``conn``, and the ``position`` saved
    when it commits (the page's last applied position; at first the one it started from)."""

    conn: psycopg.AsyncConnection[dict[str, Any]]
    position: int


async def _autocommit(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.set_autocommit(True)


class SideTables:
    """A set of tables beside the log; a subclass names them (:attr:`name`) and creates them
    (:meth:`_create`)."""

    name: ClassVar[str]
    """What error messages start with ("memory", "usage", "webhooks")."""

    def __init__(self, params: ConnectionParams, schema: str = "public", *, pool_size: int,
                 configure: Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]
                 = _autocommit) -> None:
        self._conninfo = params.conninfo()
        self._describe = params.describe()
        self._schema = schema
        self._pool = AsyncConnectionPool(self._conninfo, min_size=1, max_size=pool_size,
                                          open=False, configure=configure,
                                          kwargs={"row_factory": dict_row})
        self._opened = False

    def _t(self, name: str) -> SQL:
        return SQL("{}.{}").format(Identifier(self._schema), Identifier(name))

    async def _create(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Create the tables if needed (``conn`` is in autocommit, the schema lock held)."""
        raise NotImplementedError

    async def open(self) -> None:
        """Create the tables if needed, and open the pool (once)."""
        if self._opened:
            return
        try:
            async with connected(self._conninfo,
                                                             autocommit=True) as conn:
                await conn.execute(SCHEMA_LOCK.format("lock"))
                try:
                    await self._create(conn)
                finally:
                    await conn.execute(SCHEMA_LOCK.format("unlock"))
            await self._pool.open(wait=True, timeout=10)
            self._opened = True
        except (psycopg.Error, TimeoutError) as e:
            raise StoreUnavailable(self._unreachable(e)) from e

    def _unreachable(self, error: Exception) -> str:
        """What :meth:`open` says when ``error`` kept it from opening."""
        return (f"{self.name}: cannot reach the database at {self._describe}: "
                f"{one_line(error)}")

    async def close(self) -> None:
        await self._pool.close()
        self._opened = False

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        try:
            async with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as e:
            raise StoreUnavailable(f"{self.name}: database at {self._describe}: "
                                   f"{one_line(e)}") from e
        except psycopg.Error as e:  # a statement PostgreSQL refused: said, never raised raw
            raise StoreError(f"{self.name}: {one_line(e)}") from e

    @contextlib.asynccontextmanager
    async def _held(self, state: str, key: str, value: str, start: int) -> AsyncIterator[Held]:
        """A transaction that applies one page of the log after position ``start``: the row of
        ``state`` whose ``key`` is ``value`` is locked and must still be at ``start`` (else
        :class:`PositionMoved`: another process, another node, applied the page), and the
        position set in :class:`Held` is saved with the page."""
        async with self._conn() as conn, conn.transaction():
            row = await (await conn.execute(SQL(
                "SELECT position FROM {} WHERE {} = %s FOR UPDATE"
            ).format(self._t(state), Identifier(key)), (value,))).fetchone()
            if row is None or row["position"] != start:
                raise PositionMoved(value)
            held = Held(conn, start)
            yield held
            await conn.execute(SQL("UPDATE {} SET position = %s WHERE {} = %s").format(
                self._t(state), Identifier(key)), (held.position, value))
