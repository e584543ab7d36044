"""Shared fixtures: one real embedded PostgreSQL per test session, a fresh database per test.

The server's data dir lives under the system temp dir (pgserver, run as root, opens up the
permissions of every parent directory of its data dir).
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from ipa.eventstore import ConnectionParams, EventStore, StoreSettings, embedded_postgres

from .eventstore.helpers import AUDIT_KEY


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[ConnectionParams]:
    """The embedded PostgreSQL, started once for the session."""
    with tempfile.TemporaryDirectory(prefix="ipa-test-pg-") as tmp:
        with embedded_postgres(Path(tmp)) as params:
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
