"""Group commit: concurrent appends to different streams share one database transaction.

One writer task per store drains the appends waiting at that moment into a batch, seals each
request's events onto its stream's hash chain (and MACs its stream's new manifest row, when the
store is keyed), and inserts the whole batch with one statement on one of the writer's own async
connections (one transaction, one append lock, one NOTIFY, one round trip; no worker thread).
One event alone goes through libpq, prepared on the connection (:mod:`.prepared`).
Two batches can be in flight, each on its own connection: one is sealed and sent while the
other commits, so the Python work of one overlaps the database work of the other (the append
lock still commits them one after the other, positions in order). With many appends waiting
and a connection free beside the one about to be used, a batch takes a share of them, so that
the two alternate. Batch size follows the load: one event alone when a single writer appends
(committed inline by the appending task itself, when nothing else is in flight and the last
batch was one append), up to ``max_batch`` under load. An append returns only after its
transaction committed: an acknowledged event is durable.

Expected versions are checked against an in-memory head cache (version and digest per stream),
filled from the database on a miss or a mismatch; the database's primary key is the final
judge. When a batch fails on a duplicate version (another process wrote one of its streams),
its requests are retried one by one so only the stale one fails, with a
:class:`VersionConflict` that carries the stream's real version. Two appends to the same
stream are never in flight at once: the second waits for the first to commit, then is checked
against the head it wrote.

Each committed transaction is timed and its events counted (``ipa_append_commit_seconds``,
``ipa_append_batch_events``, ``ipa_events_appended_total``: :mod:`ipa.telemetry`); then
``on_commit`` gets the batch's acknowledged appends with their events, before any of their
callers resumes (a stream's appends in their order; two streams' in either).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import anyio
import psycopg
from anyio.abc import TaskStatus
from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import StoredEvent

from ipa.telemetry import APPEND_BATCH_EVENTS, APPEND_COMMIT_SECONDS, EVENTS_APPENDED

from .codec import GENESIS, EventCodec, Seal
from .errors import StoreError, StoreUnavailable, UnstorableEvent, VersionConflict, one_line
from .leases import LeaseLost
from .prepared import bigint_value, text_value, uuid_value
from .recorder import EventRecorder

log = logging.getLogger(__name__)

MIN_SHARE = 32
"""Fewer appends than this per free connection wait in one batch rather than being split
(at 16, two halves of 50 alternating split again into quarters, and ran slower)."""


@dataclass(frozen=True, slots=True)
class Appended:
    """What an acknowledged append recorded: the stream's new version and the global
    positions of its events."""

    stream_id: UUID
    version: int
    positions: tuple[int, ...]


Committed = tuple[Appended, Sequence[DomainEvent]]
"""An acknowledged append and the events it recorded (what a commit observer is given)."""


@dataclass(eq=False, slots=True)
class _Request:
    stream_id: UUID
    events: Sequence[DomainEvent]
    expected_version: int
    done: anyio.Event | None = None  # set when it is answered; only a queued one waits
    result: Appended | None = None
    error: BaseException | None = None
    stored: list[StoredEvent] = field(default_factory=list)
    digest: str = ""
    manifest_mac: str | None = None  # the stream's new manifest row (None: store not keyed)
    fence: tuple[UUID, str, int] | None = None  # (task, node, epoch) its lease must still be


class _Heads:
    """Bounded cache of each stream's head: version and chain digest."""

    def __init__(self, maxsize: int = 100_000) -> None:
        self._heads: OrderedDict[UUID, tuple[int, str]] = OrderedDict()
        self._maxsize = maxsize

    def get(self, stream_id: UUID) -> tuple[int, str] | None:
        head = self._heads.get(stream_id)
        if head is not None:
            self._heads.move_to_end(stream_id)
        return head

    def put(self, stream_id: UUID, version: int, digest: str) -> None:
        self._heads[stream_id] = (version, digest)
        self._heads.move_to_end(stream_id)
        if len(self._heads) > self._maxsize:
            self._heads.popitem(last=False)

    def forget(self, stream_id: UUID) -> None:
        self._heads.pop(stream_id, None)


class BatchWriter:
    """Appends events with group commit; run :meth:`run` in a task group first."""

    def __init__(
        self,
        conninfo: str,
        recorder: EventRecorder,
        codec: EventCodec,
        *,
        on_commit: Callable[[Sequence[Committed]], None] = lambda committed: None,
        max_batch: int = 500,
        depth: int = 2,
    ) -> None:
        self._conninfo = conninfo
        self._insert = recorder.insert_statement
        self._append_one = recorder.append_one
        self._select_head = recorder.select_head_statement
        self._select_written = recorder.select_written_statement
        self._lock_timeout = int(recorder.datastore.lock_timeout)
        self._codec = codec
        self._on_commit = on_commit
        self._max_batch = max_batch
        self._pending: deque[_Request] = deque()
        self._wakeup = anyio.Event()
        self._heads = _Heads()
        self._conns: list[psycopg.AsyncConnection[Any] | None] = [None] * depth
        # Each connection's server process (its pid and start time: a pid alone may be
        # another process's after a restart).
        self._servers: list[tuple[int, Any]] = [(0, None)] * depth
        self._free = list(range(depth))  # connections no batch is committing on
        self._streams_in_flight: set[UUID] = set()
        self._solo = True  # the last batch was one append: the next may commit inline
        self._closed = False
        self.commits = 0
        """Transactions committed so far (appends per commit = the batching achieved)."""

    async def append(
        self, stream_id: UUID, events: Sequence[DomainEvent], expected_version: int,
        fence: tuple[UUID, str, int] | None = None,
    ) -> Appended:
        """Record ``events`` after version ``expected_version`` of ``stream_id``.

        The events must carry versions ``expected_version + 1`` onwards. Raises
        :class:`VersionConflict` when the stream has moved on; nothing is written then.
        """
        if self._closed:
            raise StoreUnavailable("the event store is closed")
        _check_versions(stream_id, events, expected_version)
        request = _Request(stream_id, events, expected_version, fence=fence)
        if self._streams_in_flight or self._pending or not self._solo:
            # Others are committing, or were (the appenders of the last batch are about to
            # append again, each as it resumes): join the next batch.
            request.done = anyio.Event()
            self._pending.append(request)
            self._wakeup.set()
            await request.done.wait()
        else:
            # Nothing else in flight: commit right here, sparing two task switches.
            await self._commit_batch([request], self._begin([request]))
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Commit batches until cancelled; then fail whatever is still waiting."""
        try:
            await self._connection(0)
            task_status.started()
            async with anyio.create_task_group() as commits:
                while True:
                    await self._wakeup.wait()
                    self._wakeup = anyio.Event()
                    while self._pending and self._free:
                        batch = self._take_batch()
                        if not batch:
                            break  # each waiting append's stream is committing: wait for it
                        commits.start_soon(self._commit_batch, batch, self._begin(batch))
        finally:
            self._closed = True
            while self._pending:
                request = self._pending.popleft()
                request.error = StoreUnavailable("the event store closed before the append")
                if request.done is not None:
                    request.done.set()
            with anyio.CancelScope(shield=True):
                for conn in self._conns:
                    if conn is not None:
                        await conn.close()

    def _begin(self, batch: list[_Request]) -> int:
        """Mark ``batch`` in flight; the connection it commits on."""
        for request in batch:
            self._streams_in_flight.add(request.stream_id)
        self._solo = len(batch) == 1
        return self._free.pop()

    def _end(self, batch: list[_Request], line: int) -> None:
        for request in batch:
            self._streams_in_flight.discard(request.stream_id)
        self._free.append(line)
        if self._pending:
            self._wakeup.set()  # what arrived meanwhile goes to the writer task

    async def _commit_batch(self, batch: list[_Request], line: int) -> None:
        """Commit ``batch`` (begun on connection ``line``) and release its requests.
        Shielded: once sent, a batch's outcome is awaited and reported."""
        try:
            with anyio.CancelScope(shield=True):
                await self._commit(batch, line)
        except Exception as e:
            # A fault of this batch (a bug, not the database) fails its unanswered appends
            # and nothing else: the writer goes on with the next batch.
            log.exception("append batch of %d failed", len(batch))
            for request in batch:
                if request.result is None and request.error is None:
                    request.error = StoreUnavailable(f"the append failed: {one_line(e)}")
        finally:
            self._end(batch, line)
            for request in batch:
                if request.result is None and request.error is None:
                    request.error = StoreUnavailable("the append was interrupted")
                if request.done is not None:
                    request.done.set()
        try:
            self._on_commit([(r.result, r.events) for r in batch if r.result is not None])
        except Exception:
            # The appends are durable and acknowledged: a failing observer must not turn
            # them into errors (a client would retry and write them twice).
            log.exception("observer of a committed append failed")

    def _take_batch(self) -> list[_Request]:
        """The next batch: waiting appends, at most one per stream and none to a stream that
        is committing. Many waiting and a connection free beside this one: a share of them,
        so that one batch is sealed while the other commits."""
        share = math.ceil(len(self._pending) / len(self._free))
        size = min(self._max_batch, len(self._pending) if share < MIN_SHARE else share)
        batch: list[_Request] = []
        streams = set(self._streams_in_flight)
        held_back: list[_Request] = []
        while self._pending and len(batch) < size:
            request = self._pending.popleft()
            if request.stream_id in streams:
                held_back.append(request)
            else:
                streams.add(request.stream_id)
                batch.append(request)
        self._pending.extendleft(reversed(held_back))
        return batch

    async def _connection(self, line: int) -> psycopg.AsyncConnection[Any]:
        conn = self._conns[line]
        if conn is None or conn.closed:
            fresh = None
            try:
                fresh = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=5,
                    # How long an append waits for the append lock or a lease row.
                    options=f"-c lock_timeout={self._lock_timeout}s",
                )
                started = await (await fresh.execute(
                    "SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
                )).fetchone()
            except psycopg.Error as e:
                if fresh is not None:
                    await fresh.close()
                raise StoreUnavailable(f"could not append: {one_line(e)}") from e
            conn = self._conns[line] = fresh
            self._servers[line] = (fresh.info.backend_pid, started and started[0])
        return conn

    async def _commit(self, batch: list[_Request], line: int) -> None:
        ready = []
        for request in batch:
            # The head from memory when it is known (no coroutine per append), else read.
            head = self._known_head(request) or await self._read_head_for(request, line)
            if head is not None and self._seal(request, head):
                ready.append(request)
        if not ready:
            return
        try:
            positions = await self._insert_resolved(ready, line)
        except (psycopg.errors.UniqueViolation, _FenceFailed):
            # A stream moved on elsewhere, or a lease was lost: each alone finds which.
            for request in ready:
                await self._commit_one(request, line)
            return
        except (psycopg.Error, StoreUnavailable) as e:
            for request in ready:
                request.error = _unavailable(e)
            return
        offset = 0
        for request in ready:
            n = len(request.stored)
            self._acknowledge(request, positions[offset : offset + n])
            offset += n

    async def _commit_one(self, request: _Request, line: int) -> None:
        try:
            positions = await self._insert_resolved([request], line)
        except psycopg.errors.UniqueViolation:
            self._heads.forget(request.stream_id)
            try:
                current = (await self._read_head(request.stream_id, line))[0]
            except (psycopg.Error, StoreUnavailable) as e:
                request.error = _unavailable(e)
                return
            request.error = VersionConflict(request.stream_id, request.expected_version, current)
            return
        except _FenceFailed:
            self._heads.forget(request.stream_id)
            request.error = (StoreUnavailable("the append wrote nothing") if request.fence is None
                             else LeaseLost(request.fence[0], request.fence[1]))
            return
        except (psycopg.Error, StoreUnavailable) as e:
            request.error = _unavailable(e)
            return
        self._acknowledge(request, positions)

    def _broken(self, line: int) -> bool:
        """Whether the connection of ``line`` broke (rather than PostgreSQL answering with an
        error): what it was sending may or may not have reached the server."""
        conn = self._conns[line]
        return conn is not None and conn.broken

    async def _insert_resolved(self, requests: list[_Request], line: int) -> list[int]:
        """:meth:`_insert_rows`; when the connection broke under it (a PostgreSQL restart, a
        proxy cutting it), the statement may or may not have committed: its rows are looked
        for on a new connection. All there, byte for byte, it did (their positions); else it
        did not, and it is sent once more. Only when that cannot be told either does the
        append fail."""
        try:
            return await self._insert_rows(requests, line)
        except psycopg.OperationalError:
            if not self._broken(line):
                raise  # PostgreSQL refused it on a working connection: nothing was written
        positions = await self._written(requests, line)
        if positions is not None:
            return positions
        return await self._insert_rows(requests, line)

    async def _written(self, requests: list[_Request], line: int) -> list[int] | None:
        """The positions of the requests' rows when the database holds all of them as they
        were sent (one statement wrote them all or none); ``None`` otherwise."""
        stored = [s for r in requests for s in r.stored]
        pid, started = self._servers[line]
        conn = await self._connection(line)  # a new one: the broken one is closed
        # The broken connection's server process may still be running the statement (the
        # network was cut, the server did not restart): it is ended first, waiting up to 5 s,
        # so that what is found is what stays.
        await conn.execute("SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                           "WHERE pid = %s AND backend_start = %s", (pid, started))
        cursor = await conn.execute(self._select_written, {
            "ids": [s.originator_id for s in stored],
            "versions": [s.originator_version for s in stored]}, prepare=True)
        found = {i: (position, topic, bytes(state))
                 for i, position, topic, state in await cursor.fetchall()}
        positions = []
        for i, event in enumerate(stored, start=1):
            row = found.get(i)
            if row is None or row[1:] != (event.topic, event.state):
                return None
            positions.append(row[0])
        return positions

    async def _insert_rows(self, requests: list[_Request], line: int) -> list[int]:
        """Insert the requests' events and upsert their streams' manifest rows, in one
        statement (one transaction); return the events' positions. :class:`_FenceFailed`
        when one of their fences did not hold (nothing was written)."""
        conn = await self._connection(line)
        stored = [s for r in requests for s in r.stored]
        started = time.perf_counter()
        if len(stored) == 1:
            # A single writer's every append: through libpq, sparing psycopg's cursor.
            [event], [request] = stored, requests
            task, node, epoch = request.fence or (None, None, None)
            positions = await self._append_one.bigints(conn, (
                uuid_value(event.originator_id), bigint_value(event.originator_version),
                text_value(event.topic), event.state, text_value(request.manifest_mac),
                uuid_value(task), text_value(node), bigint_value(epoch),
            ))
        else:
            keyed = [r for r in requests if r.manifest_mac is not None]
            fences = [r.fence for r in requests if r.fence is not None]
            cursor = await conn.execute(self._insert, {
                "ids": [e.originator_id for e in stored],
                "versions": [e.originator_version for e in stored],
                "topics": [e.topic for e in stored],
                "states": [e.state for e in stored],
                "heads": [r.stream_id for r in keyed],
                "head_versions": [r.expected_version + len(r.events) for r in keyed],
                "macs": [r.manifest_mac for r in keyed],
                "fence_tasks": [f[0] for f in fences],
                "fence_nodes": [f[1] for f in fences],
                "fence_epochs": [f[2] for f in fences],
            }, prepare=True)
            positions = [row[0] for row in await cursor.fetchall()]
        if len(positions) != len(stored):
            raise _FenceFailed()
        # Once per transaction, and once the appender has sent its next statement: the
        # metrics' ~5 us then overlap that statement's round trip instead of preceding it.
        asyncio.get_running_loop().call_soon(
            _observe_commit, time.perf_counter() - started, len(stored))
        self.commits += 1
        return positions

    async def _read_head_for(self, request: _Request, line: int) -> tuple[int, str] | None:
        """The stream's head read from the database; ``None`` (the request failed) when it
        cannot be read."""
        try:
            return await self._read_head(request.stream_id, line)
        except StoreError as e:
            request.error = e
        except psycopg.Error as e:
            request.error = _unavailable(e)
        return None

    def _seal(self, request: _Request, head: tuple[int, str]) -> bool:
        """Check the expected version against the stream's ``head`` (version, digest) and
        seal the events; False if the request failed."""
        version, digest = head
        if version != request.expected_version:
            request.error = VersionConflict(request.stream_id, request.expected_version, version)
            return False
        try:
            request.stored, request.digest = self._codec.seal(request.events, digest)
            if self._codec.key is not None:
                request.manifest_mac = self._codec.key.manifest_mac(
                    request.stream_id, request.expected_version + len(request.events),
                    request.digest,
                )
        except Exception as e:  # an event the codec cannot encode fails its own append only
            request.error = UnstorableEvent(request.stream_id, one_line(e))
            return False
        return True

    def _known_head(self, request: _Request) -> tuple[int, str] | None:
        """The stream's head (version, digest) when memory can tell it for this request;
        ``None``: read it."""
        cached = self._heads.get(request.stream_id)
        if cached is not None and cached[0] == request.expected_version:
            return cached
        if cached is None and request.expected_version == 0:
            # A new stream (the usual case for version 0): if it exists after all, the
            # insert fails on the primary key and the request is retried alone.
            return 0, GENESIS
        return None

    async def _read_head(self, stream_id: UUID, line: int) -> tuple[int, str]:
        try:
            row = await self._head_row(stream_id, line)
        except psycopg.OperationalError:
            if not self._broken(line):
                raise
            row = await self._head_row(stream_id, line)  # a read: asked again, reconnected
        if row is None:
            return 0, GENESIS
        version, topic, state = row
        head = StoredEvent(stream_id, version, topic, bytes(state))
        digest = Seal.of(head).digest
        self._heads.put(stream_id, version, digest)
        return version, digest

    async def _head_row(self, stream_id: UUID, line: int) -> tuple[Any, ...] | None:
        conn = await self._connection(line)
        cursor = await conn.execute(self._select_head, (stream_id,), prepare=True)
        return await cursor.fetchone()

    def _acknowledge(self, request: _Request, positions: Sequence[int]) -> None:
        version = request.expected_version + len(request.events)
        self._heads.put(request.stream_id, version, request.digest)
        request.result = Appended(request.stream_id, version, tuple(positions))


def _observe_commit(seconds: float, events: int) -> None:
    APPEND_COMMIT_SECONDS.observe(seconds)
    APPEND_BATCH_EVENTS.observe(events)
    EVENTS_APPENDED.inc(events)


class _FenceFailed(Exception):
    """An insert wrote nothing: one of its fences did not hold (a lease was lost)."""


def _unavailable(error: BaseException) -> StoreError:
    if isinstance(error, StoreError):
        return error
    return StoreUnavailable(f"could not append: {one_line(error)}")


def _check_versions(stream_id: UUID, events: Sequence[DomainEvent], expected: int) -> None:
    if not events:
        raise ValueError("append needs at least one event")
    for offset, event in enumerate(events, start=1):
        if event.originator_id != stream_id or event.originator_version != expected + offset:
            raise ValueError(
                f"event {offset} of the append carries {event.originator_id} version "
                f"{event.originator_version}; expected {stream_id} version {expected + offset}"
            )


def crossed(interval: int, before: int, after: int) -> int | None:
    """The highest multiple of ``interval`` in ``(before, after]``, or None (snapshot points)."""
    if interval <= 0:
        return None
    point = math.floor(after / interval) * interval
    return point if point > before else None
