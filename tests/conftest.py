"""Shared fixtures: one real embedded PostgreSQL per test session, a fresh database per test.

The server's data dir lives under the system temp dir (pgserver, run as root, opens up the
permissions of every parent directory of its data dir).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import anyio
import psycopg
import pytest

from ipa.eventstore import ConnectionParams, EventStore, StoreSettings, embedded_postgres

from .eventstore.helpers import AUDIT_KEY

# Before pytest-timeout ends a test (it raises wherever the event loop happens to be, which
# abandons an async test's tasks and can hang the teardown after it), the test prints the stack
# of every asyncio task ("Captured stderr": what each one waits for), then an async test is
# cancelled from inside, so its task groups and fixtures unwind as on any other failure.
DUMP_BEFORE_TIMEOUT = 10.0
CANCEL_BEFORE_TIMEOUT = 5.0


def _dump_asyncio_tasks(signum: int, frame: object) -> None:
    loop = asyncio._get_running_loop()
    if loop is None:
        return
    tasks = asyncio.all_tasks(loop)
    print(f"\n--- {len(tasks)} asyncio tasks, each with what it awaits ---", file=sys.stderr)
    for task in tasks:
        print(f"{task.get_name()}:", file=sys.stderr)
        awaited = task.get_coro()
        while awaited is not None:  # the coroutine chain: get_stack shows only its top
            frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
            if frame is not None:
                print(f"  {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}",
                      file=sys.stderr)
            awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)


_server: list[ConnectionParams] = []  # the session's PostgreSQL, once started


def _dump_database_activity() -> None:
    """What every other connection to the session's PostgreSQL is doing (locks waited on,
    transactions left open), printed beside the tasks' stacks."""
    if not _server:
        return
    try:
        with psycopg.connect(_server[0].conninfo(), autocommit=True, connect_timeout=5) as conn:
            rows = conn.execute(
                "SELECT pid, datname, state, wait_event_type, wait_event, "
                "now() - xact_start, left(query, 200) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname IS NOT NULL "
                "AND state IS DISTINCT FROM 'idle'").fetchall()
    except psycopg.Error as e:
        print(f"--- no database activity: {e}", file=sys.stderr)
        return
    print(f"--- {len(rows)} database connections not idle ---", file=sys.stderr)
    for row in rows:
        print("  " + " | ".join(map(str, row)), file=sys.stderr)


def _before_timeout() -> None:
    _dump_database_activity()
    os.kill(os.getpid(), signal.SIGUSR1)  # the tasks: printed on the event loop's thread


def pytest_configure(config: pytest.Config) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, _dump_asyncio_tasks)


def _timeout(item: pytest.Item) -> float:
    marker = item.get_closest_marker("timeout")
    if marker is not None and marker.args:
        return float(marker.args[0])
    return float(item.config.getini("timeout") or 0)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    timeout = _timeout(item)
    timer = None
    if timeout > DUMP_BEFORE_TIMEOUT:
        timer = threading.Timer(timeout - DUMP_BEFORE_TIMEOUT, _before_timeout)
        timer.daemon = True
        timer.start()
        test = getattr(item, "obj", None)
        if inspect.iscoroutinefunction(test):
            item.obj = _bounded(test, timeout - CANCEL_BEFORE_TIMEOUT)
    try:
        return (yield)
    finally:
        if timer is not None:
            timer.cancel()


def _bounded(test, seconds: float):
    @functools.wraps(test)
    async def bounded(*args, **kwargs):
        with anyio.fail_after(seconds):
            return await test(*args, **kwargs)

    return bounded


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[ConnectionParams]:
    """The embedded PostgreSQL, started once for the session."""
    with tempfile.TemporaryDirectory(prefix="ipa-test-pg-") as tmp:
        with embedded_postgres(Path(tmp)) as params:
            _server.append(params)
            yield params


@pytest.fixture
def database(postgres_server: ConnectionParams) -> Iterator[ConnectionParams]:
    """A new, empty database on the session's server, dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server.conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield replace(postgres_server, dbname=name)
    with psycopg.connect(postgres_server.conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def store_settings() -> StoreSettings:
    return StoreSettings(snapshot_interval=0, poll_interval=0.2, audit_key=AUDIT_KEY)


@pytest.fixture
async def store(
    database: ConnectionParams, store_settings: StoreSettings
) -> AsyncIterator[EventStore]:
    async with EventStore.open(database, store_settings) as store:
        yield store


@pytest.fixture
def now() -> datetime:
    return datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
