"""The event store: an asyncio facade over the library's synchronous PostgreSQL recorders.

Every blocking call runs in a worker thread under one capacity limiter (the pool's size), so
the event loop never waits on the database. Appends go through group commit
(:mod:`.writer`); live subscriptions through the process's one tail (:mod:`.tail`). Reads of
events, and loads at any version (:mod:`.replay`: the newest snapshot at or below it, then the
events after), run on an async pool of their own (:mod:`.reader`), never behind the threads.
Append observers (:meth:`EventStore.observe_appends`) see exactly what this process commits
(its metrics: ``projections/telemetry.py``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar
from uuid import UUID

import anyio
from eventsourcing.application import Repository
from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import EventStore as LibraryEventStore
from eventsourcing.persistence import IntegrityError, Mapper, PersistenceError
from psycopg.sql import SQL

from ipa.domain import TaskEvent, TaskState

from .audit_key import AuditKey
from .codec import EventCodec, RecordedEvent, make_transcoder, type_name
from .database import ConnectionParams
from .errors import (
    AuditKeyError,
    PositionConflict,
    StoreError,
    StoreUnavailable,
    StreamNotFound,
    VersionConflict,
)
from .leases import Fences, Node
from .manifest import KeyedFrom, ManifestEntry, ManifestRecorder, check_key
from .memories import MemoryTable
from .read_models import ReadModelRecorder
from .reader import StreamReader
from .recorder import EVENTS_TABLE, EventRecorder, SnapshotRecorder, open_datastore
from .replay import Replay
from .snapshots import TaskSnapshot
from .tail import LiveTail, Subscription
from .usage import UsageTable
from .webhooks import WebhookTable
from .writer import Appended, BatchWriter, Committed, crossed

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

AppendObserver = Callable[[UUID, Sequence[DomainEvent]], None]


@dataclass(frozen=True)
class StoreSettings:
    """Tunables of the store.

    ``snapshot_interval``: take a task snapshot every N events (0: never automatically).
    ``live``: run the live tail (a server does; one-shot CLI commands need not).
    ``pool_size``: the library's connections and worker threads (appends and reads of events
    use neither); ``read_pool_size``: the async connections that reads and loads of events
    borrow, each for one query (:mod:`.reader`).
    ``audit_key``: keys the hash chain and the manifest (:mod:`.audit_key`). Opening a store
    with ``create=True`` and a key keys it (once: see :mod:`.manifest`); a key that is not
    the store's is refused. Without a key, a store never keyed is written with the unkeyed
    chain of older versions (tests, benchmarks), and a keyed one can be read, not written.
    """

    snapshot_interval: int = 100
    pool_size: int = 8
    read_pool_size: int = 8
    max_batch: int = 500
    live: bool = True
    poll_interval: float = 1.0
    subscriber_buffer: int = 1000
    audit_key: AuditKey | None = field(default=None, repr=False)


class EventStore:
    """Append, read, load, snapshot and follow the events of every task."""

    def __init__(self, params: ConnectionParams, settings: StoreSettings) -> None:
        self.params = params
        self.settings = settings
        self._datastore = open_datastore(params, pool_size=settings.pool_size)
        self._limiter = anyio.CapacityLimiter(settings.pool_size)
        self._codec = EventCodec(settings.audit_key)
        self._events = EventRecorder(self._datastore)
        self._manifest = ManifestRecorder(self._datastore, EVENTS_TABLE)
        self._manifest_exists = False  # a store made by an older ipa has no manifest tables
        self._keyed_from: KeyedFrom | None = None  # as found (or made) at open
        self._snapshots = SnapshotRecorder(self._datastore)
        self._snapshot_mapper: Mapper[UUID] = Mapper(transcoder=make_transcoder())
        self.read_models = ReadModelRecorder(self._datastore)
        self._reader = StreamReader(params, self._datastore.schema,
                                    pool_size=settings.read_pool_size)
        self._replay = Replay(self._reader, self._codec, self._snapshot_mapper)
        # The library's repository: what loads went through before :mod:`.replay`, kept as the
        # reference the replay is checked against (tests, bench/replay.py).
        self._repository: Repository[UUID] = Repository(
            event_store=LibraryEventStore(self._codec, self._events),
            snapshot_store=LibraryEventStore(self._snapshot_mapper, self._snapshots),
            cache_maxsize=None,
        )
        self.tail = LiveTail(
            self.read_log,
            self._read_stream_page,
            start=self.head_position,
            listen=(params.conninfo(), EVENTS_TABLE) if settings.live else None,
            poll_interval=settings.poll_interval,
            buffer=settings.subscriber_buffer,
        )
        self._writer = BatchWriter(
            params.conninfo(),
            self._events,
            self._codec,
            on_commit=self._committed,
            max_batch=settings.max_batch,
        )
        self._append_observers: list[AppendObserver] = []
        self._to_snapshot_send, self._to_snapshot = anyio.create_memory_object_stream[
            tuple[UUID, int]
        ](10_000)
        self.fences: Fences | None = None
        """The leases of the node this store serves (``None``: not a node; nothing fenced)."""

    def node(self, node_id: str, *, address: str = "", max_pods: int | None = None) -> Node:
        """This process as node ``node_id`` of the store; its appends are fenced from now on
        (open it with :meth:`Node.open` before use)."""
        node = Node(self.params, self._datastore.schema, node_id, address=address,
                    max_pods=max_pods)
        self.fences = node.fences
        return node

    def memory_table(self) -> MemoryTable:
        """The memory read model's storage in this store's database (:mod:`.memories`; open it
        before use)."""
        return MemoryTable(self.params, self._datastore.schema or "public")

    def webhook_table(self) -> WebhookTable:
        """The webhooks' storage in this store's database (:mod:`.webhooks`; open it before
        use)."""
        return WebhookTable(self.params, self._datastore.schema or "public")

    def usage_table(self) -> UsageTable:
        """The usage read model's storage in this store's database (:mod:`.usage`; open it
        before use)."""
        return UsageTable(self.params, self._datastore.schema or "public")

    # Lifecycle ------------------------------------------------------------------------------

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        params: ConnectionParams,
        settings: StoreSettings | None = None,
        *,
        create: bool = True,
    ) -> AsyncIterator[EventStore]:
        """Connect, create the tables if ``create`` (else require them), and run the writer,
        the snapshotter and (if ``settings.live``) the tail until the context exits."""
        settings = settings or StoreSettings()
        try:
            store = await anyio.to_thread.run_sync(cls, params, settings)
        except PersistenceError as e:
            raise StoreUnavailable(f"cannot reach the database at {params.describe()}: {e}") from e
        try:
            await store._run_sync(store._prepare_tables, create)
            await store._reader.open()
            body_error: BaseException | None = None
            async with anyio.create_task_group() as tg:
                await tg.start(store._writer.run)
                tg.start_soon(store._snapshotter)
                if settings.live:
                    await tg.start(store.tail.run)
                try:
                    yield store
                except BaseException as e:
                    # Re-raised below, outside the task group, so the caller gets its own
                    # error back rather than wrapped in an exception group.
                    body_error = e
                finally:
                    tg.cancel_scope.cancel()
            if body_error is not None:
                raise body_error
        finally:
            store._to_snapshot_send.close()
            store._to_snapshot.close()
            with anyio.CancelScope(shield=True):
                await store._reader.close()
            await anyio.to_thread.run_sync(store._datastore.close)

    def _prepare_tables(self, create: bool) -> None:
        if create:
            # One process at a time: two nodes opening a store together would otherwise race
            # on its DDL ("tuple concurrently updated" on CREATE OR REPLACE FUNCTION).
            with self._datastore.get_connection() as conn:
                conn.execute("SELECT pg_advisory_lock(hashtextextended('ipa-schema', 0))")
                try:
                    for recorder in (self._manifest, self._events, self._snapshots,
                                     self.read_models):
                        recorder.create_table()
                finally:
                    conn.execute(
                        "SELECT pg_advisory_unlock(hashtextextended('ipa-schema', 0))")
            self._prepare_audit(create)
            return
        with self._datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                SQL("SELECT to_regclass(%s) AS t"),
                (f"{self._datastore.schema}.{EVENTS_TABLE}",),
            )
            row = curs.fetchone()
        if row is None or row["t"] is None:
            raise StoreUnavailable(
                f"no ipa event store at {self.params.describe()} (nothing recorded there yet)"
            )
        self._datastore.register_type_adapters()
        self._prepare_audit(create)

    def _prepare_audit(self, create: bool) -> None:
        """Key the store (``create`` with a key), or check the key against its record."""
        key = self.settings.audit_key
        self._manifest_exists = create or self._manifest.exists()
        if create and key is not None:
            self._keyed_from = self._manifest.key_store(key)
            return
        self._keyed_from = self._manifest.keyed_from() if self._manifest_exists else None
        if self._keyed_from is None:
            return
        if key is not None:
            check_key(self._keyed_from, key)
        elif create:
            raise AuditKeyError(_KEY_NEEDED)

    async def _run_sync(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking library call in a worker thread; translate its errors."""
        try:
            return await anyio.to_thread.run_sync(
                lambda: fn(*args, **kwargs), limiter=self._limiter
            )
        except StoreError:
            raise
        except IntegrityError:
            raise
        except PersistenceError as e:
            raise StoreUnavailable(f"database at {self.params.describe()}: {e}") from e

    @property
    def commits(self) -> int:
        """Append transactions committed by this store so far."""
        return self._writer.commits

    # Writing --------------------------------------------------------------------------------

    async def append(
        self, stream_id: UUID, events: Sequence[DomainEvent], expected_version: int, *,
        fence: UUID | None = None,
    ) -> Appended:
        """Append ``events`` (versions ``expected_version + 1``...) to ``stream_id``.

        Returns once they are durable. Raises :class:`VersionConflict` (with the current
        version) if the stream is no longer at ``expected_version``; nothing is written then.
        On a node (:attr:`fences` set), an append to a task this node holds a lease of (or to
        a stream ``fence`` names the task of: a run's) is fenced: :class:`LeaseLost` when the
        lease is no longer this node's at that epoch, and nothing is written.
        """
        if self._keyed_from is not None and self._codec.key is None:
            raise AuditKeyError(_KEY_NEEDED)
        fenced = None if self.fences is None else self.fences.of(fence or stream_id)
        appended = await self._writer.append(stream_id, events, expected_version, fenced)
        if isinstance(events[0], TaskEvent):
            point = crossed(self.settings.snapshot_interval, expected_version, appended.version)
            if point is not None:
                with contextlib.suppress(anyio.WouldBlock):
                    # A snapshot is a cache: when the queue is full, skip this one.
                    self._to_snapshot_send.send_nowait((stream_id, point))
        return appended

    def observe_appends(self, observer: AppendObserver) -> Callable[[], None]:
        """Call ``observer(stream_id, events)`` for every append this store commits from now
        on: what this process writes, each once, in commit order, called as the commit is
        acknowledged (before the appender resumes). It must be quick and must not block; an
        error it raises is logged and changes nothing. Returns a function that ends the calls.
        """
        self._append_observers.append(observer)
        return lambda: (self._append_observers.remove(observer)
                        if observer in self._append_observers else None)

    def _committed(self, committed: Sequence[Committed]) -> None:
        self.tail.poke()
        for observer in self._append_observers:
            for appended, events in committed:
                try:
                    observer(appended.stream_id, events)
                except Exception:  # the appends are durable: an observer's bug is its own
                    log.exception("append observer %r failed", observer)

    async def take_snapshot(self, task_id: UUID, version: int | None = None) -> int:
        """Store a snapshot of the task at ``version`` (default: its head); return the version.
        Taking a snapshot that exists already is a no-op."""
        state = await self.load(task_id, version)
        snapshot = TaskSnapshot(
            originator_id=task_id,
            originator_version=state.version,
            timestamp=state.updated_at,
            state=state.to_dict(),
        )
        stored = self._snapshot_mapper.to_stored_event(snapshot)
        with contextlib.suppress(IntegrityError):
            await self._run_sync(self._snapshots.insert_events, [stored])
        return state.version

    async def _snapshotter(self) -> None:
        async with self._to_snapshot:
            async for task_id, version in self._to_snapshot:
                try:
                    await self.take_snapshot(task_id, version)
                except StoreError as e:
                    log.warning("snapshot of %s at %s skipped: %s", task_id, version, e)

    # Reading --------------------------------------------------------------------------------

    async def load(self, task_id: UUID, version: int | None = None) -> TaskState:
        """The task's state at ``version`` (default: now), from the newest snapshot at or
        below it plus the events after. Raises :class:`StreamNotFound`."""
        if version is not None and version < 1:
            raise StreamNotFound(task_id, version)
        state = await self._replay.load(task_id, version)
        if state is None or (version is not None and state.version < version):
            raise StreamNotFound(task_id, version)
        return state

    async def load_step(self, task_id: UUID, version: int
                        ) -> tuple[TaskState | None, RecordedEvent]:
        """The task's state before ``version`` (``None`` at version 1) and the event that made
        ``version``, read at once (one read of events; :meth:`load` and :meth:`read` would
        make two). Raises :class:`StreamNotFound` when the task has no event ``version``."""
        if version < 1:
            raise StreamNotFound(task_id, version)
        before, row = await self._replay.step(task_id, version)
        if row is None:
            raise StreamNotFound(task_id, version)
        return before, self._codec.record(row)

    async def read(
        self, stream_id: UUID, *, after: int = 0, upto: int | None = None, limit: int | None = None
    ) -> list[RecordedEvent]:
        """The stream's events with version in ``(after, upto]``, in order."""
        rows = await self._reader.stream(stream_id, gt=after, lte=upto, limit=limit)
        return self._codec.records(rows)

    async def read_json(
        self, stream_id: UUID, *, after: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """``[e.to_json() for e in await self.read(...)]``, made without the domain events
        where the rows allow (:meth:`EventCodec.record_json`): the API's events pages."""
        rows = await self._reader.positioned(stream_id, gt=after, limit=limit)
        row_json = self._codec.row_json
        return [row_json(stream_id, *row) for row in rows]

    async def scan_json(self, stream_id: UUID, types: Collection[str], *, page: int = 1000
                        ) -> AsyncIterator[dict[str, Any]]:
        """The stream's events whose type (``RecordedEvent.type``) is one of ``types``, as
        :meth:`read_json` makes them, in version order; the others are not decoded at all.
        Read ``page`` rows at a time."""
        after = 0
        while True:
            rows = await self._reader.positioned(stream_id, gt=after, limit=page)
            for position, version, topic, state in rows:
                if type_name(topic) in types:
                    yield self._codec.row_json(stream_id, position, version, topic, state)
            if len(rows) < page:
                return
            after = rows[-1][1]

    async def _read_stream_page(
        self, stream_id: UUID, after: int, limit: int
    ) -> list[RecordedEvent]:
        return await self.read(stream_id, after=after, limit=limit)

    async def read_log(self, after: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Events of every stream after global position ``after``, in position order."""
        return self._codec.records(await self._reader.log(after, limit))

    async def read_raw(self, stream_id: UUID, *, after: int = 0, limit: int | None = None):
        """The stream's rows as stored (for the audit)."""
        return await self._reader.stream(stream_id, gt=after, limit=limit)

    async def snapshots(self, task_id: UUID) -> list[tuple[int, dict[str, Any]]]:
        """Every snapshot of the task: (version, state dict), oldest first."""
        rows = await self._run_sync(self._snapshots.select_events, task_id)
        out = []
        for row in rows:
            snapshot = self._snapshot_mapper.to_domain_event(row)
            out.append((row.originator_version, snapshot.state))
        return out

    async def append_next(self, stream_id: UUID, event_at: Callable[[int], DomainEvent], *,
                          what: str, attempts: int = 20) -> int:
        """Append the one event ``event_at(version)`` makes for the stream's next version
        (``version``: the stream's newest), again on a concurrent append; its global position.
        A stream many write to (a ledger): after ``attempts`` conflicts, :class:`StoreError`
        saying ``what`` is busy."""
        for _ in range(attempts):
            version = await self.version(stream_id)
            try:
                appended = await self.append(stream_id, [event_at(version)], version)
            except VersionConflict:
                continue
            return appended.positions[-1]
        raise StoreError(f"{what} is busy: try again")

    async def version(self, stream_id: UUID) -> int:
        """The stream's current version (0 when it has no events)."""
        return await self._reader.head(stream_id)

    async def stream_ids(self) -> list[UUID]:
        """Every stream with at least one event."""
        return await self._run_sync(self._events.stream_ids)

    async def head_position(self) -> int:
        """The global position of the newest event (0 for an empty store)."""
        return await self._reader.max_position()

    def subscribe(self, stream_id: UUID | None = None, *, after: int = 0) -> Subscription:
        """Follow a stream after version ``after`` (or every stream after global position
        ``after``): history from the store, then live, no gap, no duplicate."""
        return self.tail.subscribe(stream_id, after=after)

    # Read models ----------------------------------------------------------------------------

    async def read_model_rows(self, model: str, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        return await self._run_sync(self.read_models.get_rows, model, keys)

    async def read_model_page(
        self, model: str, *, after: str = "", limit: int = 1000
    ) -> list[tuple[str, Any]]:
        return await self._run_sync(self.read_models.rows, model, after=after, limit=limit)

    async def save_read_model(
        self,
        model: str,
        rows: Mapping[str, Mapping[str, Any]],
        position: int,
        instead: Callable[[str, str], Mapping[str, Any]] | None = None,
    ) -> dict[str, str]:
        """Save ``rows`` and ``position`` at once; return the refused rows {key: reason}
        (each replaced by ``instead(key, reason)`` if given; see :mod:`.read_models`)."""
        try:
            return await self._run_sync(self.read_models.save, model, rows, position, instead)
        except IntegrityError as e:
            raise PositionConflict(f"read model {model!r} is already past {position}") from e

    async def read_model_position(self, model: str) -> int:
        return await self._run_sync(self.read_models.position, model)

    async def reset_read_model(self, model: str) -> None:
        await self._run_sync(self.read_models.reset, model)

    async def replace_read_model(self, model: str, staging: str) -> None:
        await self._run_sync(self.read_models.replace, model, staging)

    # Audit ----------------------------------------------------------------------------------

    @property
    def audit_key(self) -> AuditKey | None:
        """The key this store was opened with (``None``: none)."""
        return self.settings.audit_key

    async def keyed_from(self) -> KeyedFrom | None:
        """The store's keyed-from record as it is now (``None``: the store is not keyed)."""
        if not self._manifest_exists:
            return None
        return await self._run_sync(self._manifest.keyed_from)

    async def manifest_entry(self, stream_id: UUID) -> ManifestEntry | None:
        """The stream's row in the keyed manifest, if it has one."""
        if not self._manifest_exists:
            return None
        return await self._run_sync(self._manifest.entry, stream_id)

    async def manifest_orphans(self) -> list[ManifestEntry]:
        """Manifest rows whose stream has no event left."""
        if not self._manifest_exists:
            return []
        return await self._run_sync(self._manifest.orphans)

    async def manifest_summary(self) -> tuple[int, int]:
        """(streams, events) the manifest covers."""
        if not self._manifest_exists:
            return 0, 0
        return await self._run_sync(self._manifest.summary)


_KEY_NEEDED = ("this store's chain is keyed: writing to it needs its audit key "
               "(IPA_AUDIT_KEY, or audit.key in the data dir)")
