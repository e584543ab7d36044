"""Appending: optimistic concurrency, racing writers, group commit."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import anyio
import psycopg
import pytest

from ipa.domain import CreateTask, decide
from ipa.eventstore import (
    ConnectionParams,
    EventStore,
    StoreSettings,
    VersionConflict,
)
from ipa.eventstore.codec import GENESIS
from ipa.eventstore.errors import StoreError

from .helpers import ctx, task_history

pytestmark = pytest.mark.anyio


async def test_appended_events_read_back_in_order_with_metadata(store: EventStore) -> None:
    task_id, events = task_history(4)
    appended = await store.append(task_id, events, 0)

    recorded = await store.read(task_id)

    assert appended.version == 4
    assert [r.version for r in recorded] == [1, 2, 3, 4]
    assert [r.position for r in recorded] == list(appended.positions)
    assert [r.type for r in recorded] == ["TaskCreated", "TaskStarted", "TaskPaused", "TaskResumed"]
    first = recorded[0]
    assert (first.actor, first.correlation_id, first.causation_id) == ("user:alice", "req-0", None)
    assert first.timestamp == events[0].timestamp
    assert first.data["title"] == "t"
    assert "actor" not in first.data


async def test_stale_expected_version_is_refused_with_current_version(store: EventStore) -> None:
    task_id, events = task_history(3)
    await store.append(task_id, events[:2], 0)

    with pytest.raises(VersionConflict) as conflict:
        await store.append(task_id, events[:1], 0)

    assert (conflict.value.expected, conflict.value.current) == (0, 2)
    assert await store.version(task_id) == 2


async def test_exactly_one_of_two_racing_writers_wins(store: EventStore) -> None:
    task_id, events = task_history(3)
    await store.append(task_id, events[:2], 0)
    outcomes: list[object] = []

    async def write() -> None:
        try:
            outcomes.append(await store.append(task_id, events[2:3], 2))
        except VersionConflict as e:
            outcomes.append(e)

    async with anyio.create_task_group() as tg:
        tg.start_soon(write)
        tg.start_soon(write)

    conflicts = [o for o in outcomes if isinstance(o, VersionConflict)]
    assert len(outcomes) == 2 and len(conflicts) == 1
    assert conflicts[0].current == 3
    assert await store.version(task_id) == 3


async def test_writer_in_another_process_makes_this_ones_append_conflict(
    database, store_settings: StoreSettings, store: EventStore
) -> None:
    task_id, events = task_history(3)
    await store.append(task_id, events[:2], 0)  # this store now caches the head at 2
    async with EventStore.open(database, replace(store_settings, live=False)) as other:
        await other.append(task_id, events[2:3], 2)

    with pytest.raises(VersionConflict) as conflict:
        await store.append(task_id, events[2:3], 2)

    assert conflict.value.current == 3


async def test_concurrent_appends_to_many_streams_share_transactions(store: EventStore) -> None:
    histories = [task_history(5) for _ in range(50)]

    async def write(task_id, events) -> None:
        for i, event in enumerate(events):
            await store.append(task_id, [event], i)

    async with anyio.create_task_group() as tg:
        for task_id, events in histories:
            tg.start_soon(write, task_id, events)

    log = await store.read_log(0, 1000)
    assert len(log) == 250
    assert [r.position for r in log] == sorted({r.position for r in log})
    for task_id, _ in histories:
        assert [r.version for r in await store.read(task_id)] == [1, 2, 3, 4, 5]
    assert store.commits < 250  # batched: fewer transactions than appends


async def test_append_with_versions_not_following_expected_is_a_programming_error(
    store: EventStore,
) -> None:
    task_id, events = task_history(2)

    with pytest.raises(ValueError, match="expected .* version 1"):
        await store.append(task_id, events[1:], 0)
    with pytest.raises(ValueError, match="at least one event"):
        await store.append(task_id, [], 0)
    assert await store.version(task_id) == 0


async def test_first_append_to_an_existing_stream_conflicts(store: EventStore) -> None:
    task_id, events = task_history(1)
    await store.append(task_id, events, 0)
    _, others = task_history(1, task_id=task_id)

    with pytest.raises(VersionConflict) as conflict:
        await store.append(task_id, others, 0)

    assert conflict.value.current == 1
    assert len(await store.read(task_id)) == 1


async def test_version_of_unknown_stream_is_zero(store: EventStore) -> None:
    assert await store.version(uuid.uuid4()) == 0


async def test_each_append_of_a_batch_gets_the_positions_of_its_own_events(
    store: EventStore,
) -> None:
    histories = [task_history(n) for n in (1, 3, 2, 1, 4)]  # one statement, rows of unequal runs
    appended = {}

    async def write(task_id, events) -> None:
        appended[task_id] = await store.append(task_id, events, 0)

    async with anyio.create_task_group() as tg:
        for task_id, events in histories:
            tg.start_soon(write, task_id, events)

    for task_id, events in histories:
        recorded = await store.read(task_id)
        assert [r.version for r in recorded] == list(range(1, len(events) + 1))
        assert list(appended[task_id].positions) == [r.position for r in recorded]


async def test_an_append_waits_for_one_in_flight_so_positions_commit_in_order(
    store: EventStore, database: ConnectionParams
) -> None:
    # An append held open in another transaction (as another process's would be, between
    # drawing its position and committing) must make the next append wait: were the next one
    # to commit first, a reader following the log by position (the tail, every read model)
    # would pass the held position before it became visible and never see it.
    next_id, following = task_history(1)
    async with await psycopg.AsyncConnection.connect(database.conninfo()) as conn:
        held_id, held_position = await hold_the_append_lock(store, conn)
        appended = None

        async def append_next() -> None:
            nonlocal appended
            appended = await store.append(next_id, following, 0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(append_next)
            # Either the append blocks on the held transaction's lock, or it commits first.
            while appended is None and not await lock_waiters(conn):
                await anyio.sleep(0.01)
            assert appended is None, "an append committed past a position still in flight"
            await conn.commit()
    assert appended is not None and appended.positions[0] > held_position
    assert [r.stream_id for r in await store.read_log(0)] == [held_id, next_id]


async def hold_the_append_lock(store: EventStore, conn: psycopg.AsyncConnection
                               ) -> tuple[uuid.UUID, int]:
    """Insert an event in ``conn``'s transaction and leave it open: it holds the append lock,
    as another process's append does between drawing its position and committing. The
    stream and the position drawn."""
    held_id, held = task_history(1)
    [row], _ = store._codec.seal(held, GENESIS)
    cursor = await conn.execute(store._events.insert_statement, {
        "ids": [row.originator_id], "versions": [1], "topics": [row.topic],
        "states": [row.state], "heads": [], "head_versions": [], "macs": [],
        "fence_tasks": [], "fence_nodes": [], "fence_epochs": []})
    [(position,)] = await cursor.fetchall()
    return held_id, position


async def lock_waiters(conn: psycopg.AsyncConnection) -> set[int]:
    """The other server processes of this database waiting for a lock (seen from ``conn``'s
    transaction's own snapshot of the activity view: asked afresh each call)."""
    cursor = await conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'")
    pids = {pid for (pid,) in await cursor.fetchall()}
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    return pids


async def test_an_append_waits_while_its_stream_commits_in_the_other_batch(
    store: EventStore,
) -> None:
    # Two batches commit at once (one sealed while the other commits). The second append to a
    # stream, sent before the first is acknowledged, must not be sealed against the head the
    # first has not yet written: it waits for that batch, then commits.
    task_id, events = task_history(2)
    others = [task_history(1) for _ in range(40)]
    results: dict[object, object] = {}

    async def append(key, stream_id, batch, expected) -> None:
        try:
            results[key] = await store.append(stream_id, batch, expected)
        except VersionConflict as e:
            results[key] = e

    async with anyio.create_task_group() as tg:
        tg.start_soon(append, "first", task_id, events[:1], 0)
        for other_id, other in others:
            tg.start_soon(append, other_id, other_id, other, 0)
        tg.start_soon(append, "second", task_id, events[1:], 1)

    assert not [r for r in results.values() if isinstance(r, VersionConflict)]
    assert [r.version for r in await store.read(task_id)] == [1, 2]
    assert store.commits >= 3  # the first alone, then the others beside the second


async def test_appends_recover_after_the_writers_connections_are_cut(
    store: EventStore, database: ConnectionParams
) -> None:
    # A PostgreSQL restart or a proxy cutting idle connections: a head read on a cut
    # connection is asked again on a new one; a batch sent on one is looked for on a new one
    # (not there: sent again). None fails.
    histories = [task_history(1) for _ in range(200)]
    async with anyio.create_task_group() as tg:  # many at once: both connections in use
        for task_id, events in histories[:100]:
            tg.start_soon(store.append, task_id, events, 0)
    # A stream this store's writer has not seen: its head is read on a cut connection.
    elsewhere_id, elsewhere = task_history(2)
    async with EventStore.open(database, store.settings) as other:
        await other.append(elsewhere_id, elsewhere[:1], 0)
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        cut = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()
    assert cut and cut[0] >= 1
    await store.append(elsewhere_id, elsewhere[1:], 1)
    async with anyio.create_task_group() as tg:  # a batch of many on the other cut connection
        for task_id, events in histories[100:]:
            tg.start_soon(store.append, task_id, events, 0)
    for task_id, _ in histories:
        assert await store.version(task_id) == 1
    assert await store.version(elsewhere_id) == 2


class Cut:
    """A proxy in front of PostgreSQL's socket that cuts the connection carrying the
    statement whose bytes hold ``marker`` (once): with ``after_answer``, when the server
    answers it (the statement ran; the client never hears how it ended); else once ``go`` is
    set, the statement sent on and the server's side left open (a network cut: the server
    goes on with it) until :meth:`aclose`."""

    def __init__(self, upstream: str, marker: bytes, *, after_answer: bool) -> None:
        self.upstream, self.marker, self.after_answer = upstream, marker, after_answer
        self.go, self.cut, self.sent = asyncio.Event(), False, False
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task] = set()

    async def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.append(writer)
        from_server, to_server = await asyncio.open_unix_connection(self.upstream)
        self._writers.append(to_server)
        marked = False

        async def up() -> None:
            nonlocal marked
            with contextlib.suppress(OSError):
                while chunk := await reader.read(65536):
                    marked = marked or (self.marker in chunk and not self.sent)
                    to_server.write(chunk)
                    await to_server.drain()
                    if marked and not self.after_answer:
                        self.sent = True
                        await self.go.wait()
                        self.cut = True
                        writer.close()  # the client's side only: the server runs on
                        return

        relay = asyncio.ensure_future(up())
        try:
            while chunk := await from_server.read(65536):
                if marked and self.after_answer:
                    self.sent = self.cut = True
                    break
                writer.write(chunk)
                await writer.drain()
            if not self.after_answer:
                await relay  # the server's side stays open for as long as the client's
        except OSError:
            pass  # the client went away
        finally:
            relay.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay
            writer.close()
            if self.after_answer or not self.cut:
                to_server.close()

    async def aclose(self) -> None:
        """Close every connection it relayed (the servers' sides left open too) and end its
        sessions."""
        for writer in self._writers:
            writer.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def cut_store(database: ConnectionParams, settings: StoreSettings, proxy: Cut
                    ) -> AsyncIterator[EventStore]:
    """A store whose connections all go through ``proxy``."""
    sockets = Path(tempfile.mkdtemp(prefix="ipa-cut-"))  # short: a socket path has 107 bytes
    server = await asyncio.start_unix_server(
        proxy.session, path=str(sockets / f".s.PGSQL.{database.port}"))
    try:
        async with server, EventStore.open(replace(database, host=str(sockets)),
                                           settings) as store:
            yield store
    finally:
        await proxy.aclose()
        shutil.rmtree(sockets, ignore_errors=True)


def marked_task(marker: str) -> tuple[uuid.UUID, list]:
    task_id = uuid.uuid4()
    return task_id, list(decide(None, CreateTask(title=marker, description="d"), ctx(), task_id))


async def test_an_append_whose_answer_was_lost_is_acknowledged_once(
    database: ConnectionParams, store_settings: StoreSettings
) -> None:
    # The connection broke after PostgreSQL ran the append and before its answer came: the
    # writer finds the rows on a new connection and acknowledges them (before, the append
    # failed with StoreUnavailable though its events were stored).
    marker = f"cut-{uuid.uuid4().hex}"
    proxy = Cut(f"{database.host}/.s.PGSQL.{database.port}", marker.encode(), after_answer=True)
    async with cut_store(database, store_settings, proxy) as store:
        task_id, events = marked_task(marker)
        appended = await store.append(task_id, events, 0)
        assert proxy.cut
        [row] = await store.read(task_id)
        assert (appended.version, appended.positions) == (1, (row.position,))
        assert row.event == events[0]
        _, more = task_history(2, task_id)
        await store.append(task_id, more[1:], 1)  # the head the writer keeps is right
        assert await store.version(task_id) == 2


async def test_an_append_cut_off_while_the_server_still_runs_it_is_stored_once(
    database: ConnectionParams, store_settings: StoreSettings
) -> None:
    # The network is cut while the append waits in the server (here for the append lock,
    # held by another transaction): the server would go on and commit it. The writer ends
    # that server process before looking for the rows, so the append it sends again is the
    # only one (not looked for too early and then beaten to its versions by the first).
    marker = f"cut-{uuid.uuid4().hex}"
    proxy = Cut(f"{database.host}/.s.PGSQL.{database.port}", marker.encode(), after_answer=False)
    async with cut_store(database, store_settings, proxy) as store, \
            await psycopg.AsyncConnection.connect(database.conninfo()) as holder:
        task_id, events = marked_task(marker)
        held_id, _ = await hold_the_append_lock(store, holder)
        appended = None

        async def append() -> None:
            nonlocal appended
            appended = await store.append(task_id, events, 0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(append)
            while not (proxy.sent and (first := await lock_waiters(holder))):
                await anyio.sleep(0.01)
            proxy.go.set()  # the cut: the first statement still waits in the server
            while not await lock_waiters(holder) - first:  # until it is sent again
                await anyio.sleep(0.01)
            await holder.commit()
        assert appended is not None and appended.version == 1
        assert [r.stream_id for r in await store.read_log(0)] == [held_id, task_id]


async def test_a_single_event_larger_than_the_socket_takes_at_once_is_stored_whole(
    store: EventStore,
) -> None:
    # A one-event append goes through libpq directly (eventstore/prepared.py): a body of
    # megabytes is sent in many writes, waiting on the socket between them.
    task_id = uuid.uuid4()
    description = "".join(f"{i:07d}\u00e9\x00" for i in range(400_000))  # ~3.6 MB, NUL and é
    [created] = decide(None, CreateTask(title="big", description=description), ctx(), task_id)

    appended = await store.append(task_id, [created], 0)

    [recorded] = await store.read(task_id)
    assert appended.version == 1 and recorded.position == appended.positions[0]
    assert (await store.load(task_id)).description == description


@pytest.mark.parametrize("node", ["node\x00b", "node\ud800"])
async def test_a_one_event_append_whose_fence_postgresql_cannot_take_fails_alone(
    store: EventStore, node: str,
) -> None:
    # The one-event statement's values go to libpq as bytes (eventstore/prepared.py): a NUL
    # in a text value is refused by PostgreSQL, a lone surrogate cannot even be encoded.
    # Either way that append fails, nothing is written, and the writer goes on.
    task_id, events = task_history(2)
    with pytest.raises(StoreError):
        await store._writer.append(task_id, events[:1], 0, fence=(task_id, node, 1))
    assert await store.read(task_id) == []

    await store.append(task_id, events[:1], 0)
    await store.append(task_id, events[1:], 1)
    assert [r.version for r in await store.read(task_id)] == [1, 2]
