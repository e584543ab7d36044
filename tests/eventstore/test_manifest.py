"""Keying a store: the keyed-from record, the manifest kept by every append, and the key checked
at open (a store is keyed once, never silently re-keyed)."""

from __future__ import annotations

from dataclasses import replace

import anyio
import psycopg
import pytest

from ipa.eventstore import (
    Audit,
    AuditKey,
    AuditKeyError,
    EventStore,
    StoreSettings,
    VersionConflict,
)

from .helpers import AUDIT_KEY, task_history

pytestmark = pytest.mark.anyio

ANOTHER_KEY = AuditKey.from_text("another-audit-key-00000000000000000000000000", "elsewhere")


def sql(database, statement: str, *params: object) -> list[tuple]:
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


async def audit_everything(store: EventStore) -> list[str]:
    audit = await Audit.start(store)
    found = [str(f) for f in audit.findings]
    for stream_id in await store.stream_ids():
        found += [str(f) for f in await audit.verify_stream(stream_id)]
    return found + [str(f) for f in await audit.verify_manifest()]


async def test_every_append_moves_its_streams_manifest_row(
    store: EventStore,
) -> None:
    histories = [task_history(5) for _ in range(20)]

    async def write(task_id, events) -> None:
        await store.append(task_id, events[:1], 0)  # a single event (insert_one_statement)
        await store.append(task_id, events[1:], 1)  # several (insert_statement)

    async with anyio.create_task_group() as tg:
        for task_id, events in histories:
            tg.start_soon(write, task_id, events)

    for task_id, _ in histories:
        entry = await store.manifest_entry(task_id)
        assert entry is not None and entry.version == 5
    assert await store.manifest_summary() == (20, 100)
    assert await audit_everything(store) == []


async def test_an_append_the_database_refuses_leaves_the_manifest_as_it_was(
    database, store_settings: StoreSettings, store: EventStore
) -> None:
    task_id, events = task_history(4)
    await store.append(task_id, events[:2], 0)  # this store now caches the head at 2
    async with EventStore.open(database, replace(store_settings, live=False)) as other:
        await other.append(task_id, events[2:3], 2)
    before = await store.manifest_entry(task_id)

    with pytest.raises(VersionConflict):  # refused by the primary key, in the database
        await store.append(task_id, events[2:4], 2)

    assert await store.manifest_entry(task_id) == before
    assert await audit_everything(store) == []


async def test_an_empty_store_is_keyed_from_its_first_position(store: EventStore) -> None:
    record = await store.keyed_from()

    assert record is not None and record.position == 1
    assert record.key_id == AUDIT_KEY.key_id


async def test_a_store_keyed_with_another_key_is_refused_and_not_rekeyed(
    database, store_settings: StoreSettings, store: EventStore
) -> None:
    task_id, events = task_history(3)
    await store.append(task_id, events, 0)
    before = sql(database, "SELECT * FROM audit_keyed_from")

    for create in (True, False):
        with pytest.raises(AuditKeyError, match="not the one this store was keyed with .* "
                           "wrong IPA_AUDIT_KEY or audit.key"):
            async with EventStore.open(database, replace(store_settings, audit_key=ANOTHER_KEY),
                                       create=create):
                pass

    assert sql(database, "SELECT * FROM audit_keyed_from") == before
    assert await audit_everything(store) == []


async def test_a_keyed_store_is_not_written_without_its_key(
    database, store_settings: StoreSettings, store: EventStore
) -> None:
    keyless = replace(store_settings, audit_key=None)
    with pytest.raises(AuditKeyError, match="writing to it needs its audit key"):
        async with EventStore.open(database, keyless):
            pass

    async with EventStore.open(database, keyless, create=False) as reader:
        task_id, events = task_history(1)
        with pytest.raises(AuditKeyError, match="writing to it needs its audit key"):
            await reader.append(task_id, events, 0)
        with pytest.raises(AuditKeyError, match="the audit needs its key"):
            await Audit.start(reader)


async def test_a_forged_keyed_from_record_stops_a_writer_from_starting(
    database, store_settings: StoreSettings, store: EventStore
) -> None:
    sql(database, "UPDATE audit_keyed_from SET position = position + 10")

    with pytest.raises(AuditKeyError, match="fails its MAC: it was altered"):
        async with EventStore.open(database, store_settings):
            pass


# A store written before the chain was keyed --------------------------------------------------


async def legacy_store(database) -> tuple:
    """A store as an ipa without audit keys left it: unkeyed chains, no manifest tables."""
    unkeyed = StoreSettings(snapshot_interval=0, live=False)
    async with EventStore.open(database, unkeyed) as store:
        old, events = task_history(6)
        await store.append(old, events[:4], 0)
        head = await store.head_position()
    sql(database, "DROP TABLE audit_manifest, audit_keyed_from")
    return old, events, head


async def test_a_store_written_before_keys_still_verifies_without_a_key(database) -> None:
    await legacy_store(database)

    unkeyed = StoreSettings(snapshot_interval=0, live=False)
    async with EventStore.open(database, unkeyed, create=False) as store:
        audit = await Audit.start(store)
        assert not audit.keyed
        assert await audit_everything(store) == []


async def test_a_store_written_before_keys_verifies_once_keyed_and_as_keyed_events_follow(
    database, store_settings: StoreSettings
) -> None:
    old, events, head = await legacy_store(database)

    async with EventStore.open(database, store_settings) as store:
        record = await store.keyed_from()
        assert record is not None and record.position == head + 1
        assert await audit_everything(store) == []

        await store.append(old, events[4:], 4)
        new, new_events = task_history(3)
        await store.append(new, new_events, 0)

        assert await audit_everything(store) == []
        assert await store.manifest_summary() == (2, 9)
    async with EventStore.open(database, store_settings) as again:  # keyed once, not twice
        assert await again.keyed_from() == record


async def test_a_store_written_before_keys_is_covered_by_the_manifest_once_keyed(
    database, store_settings: StoreSettings
) -> None:
    old, _, _ = await legacy_store(database)
    async with EventStore.open(database, store_settings) as store:
        # The old stream's last events deleted after keying: its manifest row shows it.
        sql(database, "DELETE FROM events WHERE originator_id = %s AND originator_version = 4",
            old)

        assert await audit_everything(store) == [
            f"task {old} version 4: the manifest records version 4 but the events end at 3 "
            "(events deleted at the end?)"
        ]
