"""A task taken out of one store and put into another, as a :class:`~.bundle.TaskBundle`.

:func:`export_task` reads a task, its children (a project's, and theirs) and every agent run
their jobs started (each run's own stream), after checking each stream with the store's keyed
audit: a bundle never vouches for a stream its own store would not. Each stream is read up to
its head at that moment; each task's state there becomes its snapshot in the bundle.

:func:`check_target` and :func:`import_bundle` write a verified bundle into a store: none of
its streams may exist there yet (:class:`BundleRefused` ``exists`` naming the first, else);
then every event of every stream, the streams' keyed-manifest rows and the tasks' snapshots
go in with one call of the append function, in one transaction: all or nothing. Each event
keeps its body byte for byte and is chained again under this store's audit key (the bundle's
unkeyed digests are not stored); events keep the exporter's relative order in the log, and
get this store's next positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from eventsourcing.persistence import IntegrityError, Mapper
from psycopg.sql import SQL, Identifier

from ipa.domain import ChildSpawned, JobStarted, TaskState

from .bundle import BundleRefused, BundleStream, TaskBundle, chained, stream_order
from .codec import GENESIS, EventCodec, Seal, chain_digest, make_transcoder
from .errors import AuditKeyError, StoreError, StreamNotFound
from .integrity import Audit
from .recorder import SNAPSHOTS_TABLE
from .snapshots import TaskSnapshot
from .store import EventStore

_PAGE = 5000


@dataclass(frozen=True)
class Imported:
    """What an import wrote: the tasks (the root first), how many runs and events, and the
    log positions its events took."""

    task_ids: tuple[UUID, ...]
    runs: int
    events: int
    first_position: int
    last_position: int


async def export_task(store: EventStore, task_id: UUID) -> TaskBundle:
    """The bundle of ``task_id`` (its children and runs with it), not yet packed.

    Raises :class:`StreamNotFound` for an unknown task, :class:`BundleRefused`
    ``unexportable`` when a stream fails the store's audit (its first finding named), and
    :class:`AuditKeyError` when the store is keyed and this process has not its key.
    """
    audit = await Audit.start(store)
    if audit.findings:
        raise _unverified(audit.findings[0])
    codec = EventCodec()
    streams: list[BundleStream] = []
    states: dict[UUID, TaskState] = {}
    pending = [task_id]
    while pending:
        current = pending.pop(0)
        if current in states:
            continue
        rows = await _rows(store, current)
        if not rows:
            if current == task_id:
                raise StreamNotFound(task_id)
            continue  # a child spawned whose first events were never recorded
        await _audited(audit, current)
        runs: list[UUID] = []
        for row in rows:
            event = codec.record(row).event
            if isinstance(event, JobStarted):
                run_id = _uuid(event.run_id)
                if run_id is not None and run_id not in runs:
                    runs.append(run_id)
            elif isinstance(event, ChildSpawned):
                child = _uuid(event.child_id)
                if child is not None:
                    pending.append(child)
        states[current] = await store.load(current, rows[-1].originator_version)
        streams.append(_stream(current, "task", current, rows))
        for run_id in runs:
            run_rows = await _rows(store, run_id)
            if run_rows:
                await _audited(audit, run_id)
                streams.append(_stream(run_id, "run", current, run_rows))
    return TaskBundle(task_id=task_id, streams=tuple(streams), states=states)


async def check_target(store: EventStore, bundle: TaskBundle) -> None:
    """Refuse, before anything is written, a bundle this store cannot take: one whose
    stream exists here, or did (its manifest row is left: ``exists``), whose MAC fails with
    this store's audit key (``altered``), or a keyed store opened without its key
    (:class:`AuditKeyError`)."""
    if await store.keyed_from() is not None and store.audit_key is None:
        raise AuditKeyError("this store's chain is keyed: importing into it needs its audit key "
                            "(IPA_AUDIT_KEY, or audit.key in the data dir)")
    if bundle.signed_by(store.audit_key) is False:
        raise BundleRefused(BundleRefused.ALTERED, "the bundle's MAC fails with this store's "
                            "audit key, which made it (altered)")
    for stream in bundle.streams:
        if await store.version(stream.stream_id) > 0:
            raise _exists(stream)
        if await store.manifest_entry(stream.stream_id) is not None:
            raise _exists(stream, " (its events are gone, the keyed manifest still has it: see "
                                  "`ipa audit verify`)")


async def import_bundle(store: EventStore, bundle: TaskBundle) -> Imported:
    """Write ``bundle`` (read and verified by :meth:`TaskBundle.read`, checked by
    :func:`check_target`) into ``store`` in one transaction; the store's tail is told."""
    key = store.audit_key  # keys the chain whenever the store has one, as appends do
    heads: dict[UUID, tuple[int, str]] = {}
    rows: list[tuple[UUID, int, str, bytes]] = []
    for stream, event in stream_order(bundle.streams):
        prev = heads.get(stream.stream_id, (0, GENESIS))[1]
        digest = chain_digest(stream.stream_id, event.version, event.topic, prev.encode(),
                              event.body, key).decode()
        rows.append((stream.stream_id, event.version, event.topic,
                     prev.encode() + digest.encode() + event.body))
        heads[stream.stream_id] = (event.version, digest)
    macs = [] if key is None else [
        (stream_id, version, key.manifest_mac(stream_id, version, digest))
        for stream_id, (version, digest) in heads.items()]
    mapper: Mapper[UUID] = Mapper(transcoder=make_transcoder())
    snapshots = [mapper.to_stored_event(TaskSnapshot(
        originator_id=task_id, originator_version=state.version, timestamp=state.updated_at,
        state=state.to_dict())) for task_id, state in bundle.states.items()]
    try:
        positions = await store._run_sync(_insert, store, rows, macs, snapshots)
    except IntegrityError:
        for stream in bundle.streams:  # imported meanwhile: name which
            if await store.version(stream.stream_id) > 0:
                raise _exists(stream) from None
        raise BundleRefused(BundleRefused.EXISTS, f"task {bundle.task_id} or one of its runs "
                            "was recorded here meanwhile") from None
    store.tail.poke()
    return Imported(tuple(bundle.states), bundle.runs, bundle.events, min(positions),
                    max(positions))


def _insert(store: EventStore, rows: list[tuple[UUID, int, str, bytes]],
            macs: list[tuple[UUID, int, str]], snapshots: list) -> list[int]:
    """One transaction: the events and manifest rows through the append statement (which
    takes the append lock and notifies), then the snapshots."""
    datastore = store._datastore
    insert_snapshot = SQL(
        "INSERT INTO {}.{} (originator_id, originator_version, topic, state) "
        "VALUES (%s, %s, %s, %s)"
    ).format(Identifier(datastore.schema), Identifier(SNAPSHOTS_TABLE))
    with datastore.transaction(commit=True) as curs:
        curs.execute(SQL("SET LOCAL lock_timeout = {}").format(f"{datastore.lock_timeout}s"))
        curs.execute(store._events.insert_statement, {
            "ids": [r[0] for r in rows], "versions": [r[1] for r in rows],
            "topics": [r[2] for r in rows], "states": [r[3] for r in rows],
            "heads": [m[0] for m in macs], "head_versions": [m[1] for m in macs],
            "macs": [m[2] for m in macs],
            "fence_tasks": [], "fence_nodes": [], "fence_epochs": []})
        positions = [row[next(iter(row))] for row in curs.fetchall()]
        for snapshot in snapshots:
            curs.execute(insert_snapshot, (snapshot.originator_id, snapshot.originator_version,
                                           snapshot.topic, snapshot.state))
    return positions


async def _rows(store: EventStore, stream_id: UUID) -> list:
    rows: list = []
    while page := await store.read_raw(stream_id, after=len(rows), limit=_PAGE):
        rows.extend(page)
        if len(page) < _PAGE:
            break
    return rows


async def _audited(audit: Audit, stream_id: UUID) -> None:
    findings = await audit.verify_stream(stream_id)
    if findings:
        raise _unverified(findings[0])


def _stream(stream_id: UUID, kind: str, task_id: UUID, rows: list) -> BundleStream:
    try:
        events = chained(stream_id, ((row.originator_version, row.id, row.topic,
                                      Seal.of(row).body) for row in rows))
        for event in events:
            event.body.decode("utf-8")
    except (StoreError, UnicodeDecodeError) as e:  # the audit passed: edited since?
        raise BundleRefused(BundleRefused.UNEXPORTABLE, f"{kind} {stream_id} cannot be "
                            f"exported: {e}") from None
    return BundleStream(stream_id, kind, task_id, events)


def _unverified(finding) -> BundleRefused:
    return BundleRefused(BundleRefused.UNEXPORTABLE, f"not exported: the store's audit fails "
                         f"({finding}); see `ipa audit verify`")


def _exists(stream: BundleStream, why: str = " (imported before?)") -> BundleRefused:
    if stream.kind == "task":
        return BundleRefused(BundleRefused.EXISTS, f"task {stream.stream_id} exists here "
                             f"already{why}")
    return BundleRefused(BundleRefused.EXISTS, f"run {stream.stream_id} of task "
                         f"{stream.task_id} exists here already{why}")


def _uuid(text: object) -> UUID | None:
    try:
        return UUID(str(text))
    except ValueError:
        return None
