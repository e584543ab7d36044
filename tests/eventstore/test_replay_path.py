"""Loads go through the store's own replay (``eventstore/replay.py``) and reads through its async
pool: the same states and the same errors as the library's repository, without its threads."""

from __future__ import annotations

import threading
import uuid
from decimal import Decimal

import anyio
import psycopg
import pytest
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic

from ipa.domain import Pause, Resume, TaskCreated, TaskEvent, decide, fold
from ipa.eventstore import (
    CorruptEvent,
    EventStore,
    StoreSettings,
    UnknownEventType,
    verify_stream,
)
from ipa.eventstore.codec import GENESIS, EventCodec, chain_digest, make_transcoder
from ipa.eventstore.replay import INLINE_ROWS
from ipa.eventstore.snapshots import project_task

from .helpers import T0, ctx, task_history

pytestmark = pytest.mark.anyio


async def library_load(store: EventStore, task_id, version=None):
    """The task's state as the library's repository folds it (how loads were made before)."""
    return await store._run_sync(store._repository.get, task_id, version=version,
                                 projector_func=project_task)


async def outcome(load) -> tuple:
    """What a load gave: its state, or its error's type and message."""
    try:
        return ("state", await load)
    except Exception as e:
        return ("error", type(e), str(e))


def old_rows(events: list[TaskEvent]) -> list[tuple[int, str, bytes]]:
    """The rows an older ipa wrote: ``TaskCreated`` in its first version (no ``base_branch``,
    no ``class_version``), the other events as today."""
    mapper, transcoder = Mapper(transcoder=make_transcoder()), make_transcoder()
    rows = []
    for event in events:
        stored = mapper.to_stored_event(event)
        body = stored.state
        if isinstance(event, TaskCreated):
            data = transcoder.decode(body)
            assert data.pop("class_version") == 2 and data.pop("base_branch") is None
            body = transcoder.encode(data)
        rows.append((stored.originator_version, stored.topic, body))
    return rows


def insert_chained(database, task_id, rows) -> None:
    """Insert ``rows`` (version, topic, body) as one stream, sealed with the unkeyed chain."""
    prev = GENESIS.encode()
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        for version, topic, body in rows:
            digest = chain_digest(task_id, version, topic, prev, body)
            conn.execute("INSERT INTO events (originator_id, originator_version, topic, state) "
                         "VALUES (%s, %s, %s, %s)", (task_id, version, topic, prev + digest + body))
            prev = digest


def sql(database, statement: str, *params: object) -> None:
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        conn.execute(statement, params)


async def test_a_stream_of_old_event_versions_loads_to_the_librarys_state(
    database, store: EventStore
) -> None:
    # Longer than INLINE_ROWS: the load at head folds in a worker thread, the early ones inline.
    task_id, events = task_history(INLINE_ROWS + 21)
    insert_chained(database, task_id, old_rows(events))
    [first] = await store.read_raw(task_id, limit=1)
    assert b"class_version" not in first.state and b"base_branch" not in first.state

    for version in (1, 2, 7, INLINE_ROWS, INLINE_ROWS + 1, None):
        loaded = await store.load(task_id, version)
        assert loaded == await library_load(store, task_id, version)
        assert loaded == fold(events[:version])
    assert (await store.load(task_id)).base_branch is None  # upcast: v1 had no base_branch


async def test_a_load_from_a_snapshot_equals_the_librarys_and_starts_from_the_same_one(
    database, store: EventStore
) -> None:
    task_id, events = task_history(8)
    insert_chained(database, task_id, old_rows(events))
    await store.take_snapshot(task_id, 3)
    await store.take_snapshot(task_id, 6)
    # Mark the snapshots so a load shows which one it started from.
    sql(database, "UPDATE snapshots SET state = replace(convert_from(state, 'UTF8'),"
        " '\"title\":\"t\"', '\"title\":\"snap' || originator_version || '\"')::bytea")

    for version in [*range(1, 9), None]:
        loaded = await store.load(task_id, version)
        assert loaded == await library_load(store, task_id, version)
    titles = [(await store.load(task_id, v)).title for v in range(1, 9)]
    assert titles == ["t", "t", "snap3", "snap3", "snap3", "snap6", "snap6", "snap6"]


@pytest.mark.parametrize(("tampering", "error"), [
    ("UPDATE events SET state = substring(state from 1 for 150) "
     "WHERE originator_id = %s AND originator_version = 3", CorruptEvent),
    ("UPDATE events SET state = substring(state from 1 for 100) "
     "WHERE originator_id = %s AND originator_version = 3", CorruptEvent),
    ("UPDATE events SET topic = 'ipa.domain.events:TaskVanished' "
     "WHERE originator_id = %s AND originator_version = 3", UnknownEventType),
    ("DELETE FROM events WHERE originator_id = %s AND originator_version = 3", CorruptEvent),
    ("UPDATE events SET state = replace(convert_from(state, 'UTF8'), '\"class_version\":2', "
     "'\"class_version\":\"two\"')::bytea WHERE originator_id = %s AND originator_version = 1",
     CorruptEvent),
], ids=["body-cut", "seal-cut", "topic-renamed", "event-deleted", "class-version-edited"])
@pytest.mark.parametrize("length", [6, INLINE_ROWS + 6], ids=["inline", "in-a-thread"])
async def test_a_tampered_stream_is_refused_with_the_librarys_error(
    database, store: EventStore, tampering: str, error: type, length: int
) -> None:
    task_id, events = task_history(length)
    await store.append(task_id, events, 0)
    sql(database, tampering, task_id)

    refused = await outcome(store.load(task_id))

    assert refused[:2] == ("error", error) and "version" in refused[2]
    assert refused == await outcome(library_load(store, task_id))
    assert await outcome(store.load(task_id, 2)) == await outcome(library_load(store, task_id, 2))


async def test_an_edit_that_keeps_the_json_valid_loads_as_before_and_the_audit_flags_it(
    database, store: EventStore
) -> None:
    # A load checks each row's seal is there, not its digest: that is the audit's (as before).
    task_id, events = task_history(6)
    await store.append(task_id, events, 0)
    sql(database, "UPDATE events SET state = replace(convert_from(state, 'UTF8'), "
        "'\"reason\":\"p2\"', '\"reason\":\"p9\"')::bytea WHERE originator_id = %s "
        "AND originator_version = 3", task_id)

    loaded = await store.load(task_id, 3)

    assert loaded == await library_load(store, task_id, 3) and loaded.status.value == "paused"
    assert [(f.version, f.problem) for f in await verify_stream(store, task_id)] == [
        (3, "contents do not match the digest (event edited)")]


async def test_odd_text_reads_and_loads_as_written(store: EventStore) -> None:
    task_id, events = task_history(2)
    for reason in ("\ud800 lone", "nul \x00 here", "emoji 😀 and \"quotes\" \\ ", "x" * 5000):
        for command in (Pause(reason=reason), Resume()):
            events.extend(decide(fold(events), command, ctx(len(events)), task_id))
    await store.append(task_id, events, 0)

    assert await store.load(task_id) == fold(events) == await library_load(store, task_id)
    assert [r.event for r in await store.read(task_id)] == events


async def test_reads_and_loads_do_not_wait_for_the_stores_threads(store: EventStore) -> None:
    task_id, events = task_history(5)
    await store.append(task_id, events, 0)
    release = threading.Event()
    async with anyio.create_task_group() as tg:
        for _ in range(store.settings.pool_size):
            tg.start_soon(store._run_sync, release.wait)
        try:
            with anyio.fail_after(10):
                while store._limiter.borrowed_tokens < store.settings.pool_size:
                    await anyio.sleep(0.01)
            # Every thread of the store is busy; none of these may need one.
            with anyio.fail_after(10):
                assert await store.load(task_id) == fold(events)
                assert await store.load(task_id, 2) == fold(events[:2])
                assert [r.version for r in await store.read(task_id, after=1)] == [2, 3, 4, 5]
                assert [r.stream_id for r in await store.read_log()] == [task_id] * 5
                assert len(await store.read_raw(task_id)) == 5
                assert await store.version(task_id) == 5
                assert await store.head_position() >= 5
        finally:
            release.set()


async def test_many_loads_at_once_share_a_small_read_pool(database) -> None:
    settings = StoreSettings(snapshot_interval=0, live=False, read_pool_size=2)
    async with EventStore.open(database, settings) as store:
        histories = [task_history(3 + i % 5) for i in range(40)]
        for task_id, events in histories:
            await store.append(task_id, events, 0)
        loaded: dict = {}

        async def load(task_id) -> None:
            loaded[task_id] = await store.load(task_id)

        async with anyio.create_task_group() as tg:
            for task_id, _ in histories * 5:
                tg.start_soon(load, task_id)

    assert loaded == {task_id: fold(events) for task_id, events in histories}


# The decoder alone: what it makes of a row is what the library's decoder makes, or the same
# error ----------------------------------------------------------------------------------------


class Sample(TaskEvent):
    """An event in its third version: v1 had ``n``, v2 renamed it ``count``, v3 added ``tags``."""

    class_version = 3
    count: int
    tags: list

    @staticmethod
    def upcast_v1_v2(state: dict) -> None:
        state["count"] = state.pop("n")

    @staticmethod
    def upcast_v2_v3(state: dict) -> None:
        state["tags"] = []


STAMP = '{"_type_":"datetime_iso","_data_":"2026-11-21T09:00:00+00:00"}'
HEAD = f'"timestamp":{STAMP},"actor":"system","correlation_id":"c","causation_id":null'
BODIES = {
    "v1": f'{{{HEAD},"n":1}}',
    "v2": f'{{{HEAD},"count":2,"class_version":2}}',
    "v3": f'{{{HEAD},"count":3,"tags":["a"],"class_version":3}}',
    "nested-typed-values": f'{{{HEAD},"count":4,"tags":[{STAMP},'
                           f'{{"_type_":"uuid_hex","_data_":"{uuid.UUID(int=7).hex}"}},'
                           f'{{"k":{{"_type_":"decimal_str","_data_":"1.50"}}}},'
                           f'{{"_type_":"x","_data_":1,"more":2}}],"class_version":3}}',
    "escaped-key": '{"timestamp":{"\\u005ftype_":"datetime_iso","_data_":"2026-11-21T09:00:00'
                   '+00:00"},"actor":"a","correlation_id":"c","causation_id":null,"count":5,'
                   '"tags":[],"class_version":3}',
    "big-int": f'{{{HEAD},"count":123456789012345678901234567890,"tags":[],"class_version":3}}',
    "nan": f'{{{HEAD},"count":NaN,"tags":[Infinity],"class_version":3}}',
    "lone-surrogate": f'{{{HEAD},"count":6,"tags":["\\ud800"],"class_version":3}}',
    "unknown-transcoding": f'{{{HEAD},"count":1,"tags":[{{"_type_":"nope","_data_":1}}],'
                           '"class_version":3}',
    "class-version-text": f'{{{HEAD},"count":1,"tags":[],"class_version":"3"}}',
    "upcast-fails": f'{{{HEAD},"class_version":1}}',
    "not-json": f'{{{HEAD},"count":',
    "not-an-object": "[1, 2]",
    "not-utf-8": f'{{{HEAD},"count":1,"tags":["\xff"],"class_version":3}}',
}


def sealed(body: str) -> bytes:
    data = body.encode("latin-1" if "\xff" in body else "utf-8")
    return GENESIS.encode() + b"f" * 64 + data


def decoded(decode, *args) -> tuple:
    try:
        event = decode(*args)
    except Exception as e:
        return ("error", type(e), str(e))
    return ("event", type(event), repr(sorted(vars(event).items())))


@pytest.mark.parametrize("body", list(BODIES.values()), ids=list(BODIES))
def test_the_decoder_makes_what_the_librarys_decoder_makes(body: str) -> None:
    codec, stream, topic = EventCodec(), uuid.uuid4(), get_topic(Sample)

    fast = decoded(codec.decode, stream, 9, topic, sealed(body))

    assert fast == decoded(codec.to_domain_event, StoredEvent(stream, 9, topic, sealed(body)))


def test_the_decoder_refuses_what_the_librarys_decoder_refuses() -> None:
    codec, stream = EventCodec(), uuid.uuid4()
    body = sealed(BODIES["v3"])

    assert decoded(codec.decode, stream, 2, "ipa.domain.events:Gone", body)[:2] == (
        "error", UnknownEventType)
    assert decoded(codec.decode, stream, 2, get_topic(Sample), body[:100])[:2] == (
        "error", CorruptEvent)
    v1 = decoded(codec.decode, stream, 2, get_topic(Sample), sealed(BODIES["v1"]))
    assert "('count', 1)" in v1[2] and "('tags', [])" in v1[2]
    nested = decoded(codec.decode, stream, 2, get_topic(Sample),
                     sealed(BODIES["nested-typed-values"]))
    assert repr(uuid.UUID(int=7)) in nested[2] and repr(Decimal("1.50")) in nested[2]


def test_a_new_event_round_trips_through_the_decoder() -> None:
    codec, stream = EventCodec(), uuid.uuid4()
    event = Sample(originator_id=stream, originator_version=1, timestamp=T0, actor="system",
                   correlation_id="c", causation_id=None, count=1, tags=["x", {"y": [1.5]}])
    [stored], _ = codec.seal([event], GENESIS)

    assert codec.decode(stream, 1, stored.topic, stored.state) == event
