"""A statement prepared once per connection and run through libpq's own calls.

psycopg's cursor is general: it adapts each parameter through its dumpers, keeps a cache of
prepared statements, drives a generator through a waiter that sets a timer at every wait, and
makes a row object per result row. For the one statement a single writer runs at every append,
that costs ~45 us of the ~300 us an insert takes on a fast disk (bench/README.md). Here the
statement is prepared on each connection once (``PREPARE``, through psycopg), its parameters are
given already encoded in PostgreSQL's binary formats (:func:`uuid_value`, :func:`bigint_value`,
:func:`text_value`), and it is sent with ``PQsendQueryPrepared`` on the connection's own
``pgconn``, waited for with one reader callback on the event loop, and its first column read
back in binary.

The connection stays psycopg's: the caller must not use it for anything else meanwhile (the
writer runs one statement per connection at a time). An error PostgreSQL answers is raised as
psycopg raises it (:func:`psycopg.errors.error_from_result`: a ``UniqueViolation`` is a
``UniqueViolation``); a connection that breaks raises :class:`psycopg.OperationalError` and is
left ``broken``, as psycopg leaves it.
"""

from __future__ import annotations

import asyncio
import struct
import weakref
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import psycopg
from psycopg import pq

Value = bytes | None
"""A parameter in PostgreSQL's binary format (None: SQL NULL)."""

_BIGINT = struct.Struct("!q")


def uuid_value(value: UUID | None) -> Value:
    return None if value is None else value.bytes


def bigint_value(value: int | None) -> Value:
    return None if value is None else _BIGINT.pack(value)


def text_value(value: str | None) -> Value:
    return None if value is None else value.encode()


class PreparedStatement:
    """``sql`` (with ``$1``... placeholders of ``types``), prepared as ``name`` on each
    connection it first runs on; :meth:`bigints` runs it."""

    def __init__(self, name: str, sql: bytes, types: Sequence[str]) -> None:
        self.name = name.encode()
        self._prepare = (f"PREPARE {name} ({', '.join(types)}) AS ".encode() + sql)
        self._formats = [1] * len(types)  # every parameter binary
        self._prepared_on: weakref.WeakSet[psycopg.AsyncConnection[Any]] = weakref.WeakSet()

    async def bigints(self, conn: psycopg.AsyncConnection[Any], values: Sequence[Value]
                      ) -> list[int]:
        """Run the statement with ``values`` (preparing it on ``conn`` first, the first time:
        a table it names may not exist before); the first column of its rows, a ``bigint``."""
        if conn not in self._prepared_on:
            await conn.execute(self._prepare)
            self._prepared_on.add(conn)
        pgconn = conn.pgconn
        pgconn.send_query_prepared(self.name, values, self._formats, 1)
        socket = pgconn.socket
        while pgconn.flush():  # a large parameter the socket took only part of
            # As libpq asks: wait to write or to read, and read what came meanwhile.
            await _ready(socket, write=True)
            pgconn.consume_input()
        while True:  # no answer can be there before the socket says so
            await _ready(socket)
            pgconn.consume_input()
            if not pgconn.is_busy():
                break
        results = []
        while (result := pgconn.get_result()) is not None:
            results.append(result)
        for result in results:
            if result.status != pq.ExecStatus.TUPLES_OK:
                raise psycopg.errors.error_from_result(result, conn.info.encoding)
        return [_bigint(result.get_value(row, 0))
                for result in results for row in range(result.ntuples)]


def _bigint(value: bytes | None) -> int:
    if value is None:
        raise psycopg.DataError("the statement answered NULL where a bigint was due")
    return int(_BIGINT.unpack(value)[0])


async def _ready(socket: int, *, write: bool = False) -> None:
    """Until ``socket`` can be read (or, with ``write``, read or written)."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(socket, _resolve, ready)
    if write:
        loop.add_writer(socket, _resolve, ready)
    try:
        await ready
    finally:
        loop.remove_reader(socket)
        if write:
            loop.remove_writer(socket)


def _resolve(ready: asyncio.Future[None]) -> None:
    if not ready.done():
        ready.set_result(None)
