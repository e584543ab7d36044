"""Loading a task: at any past version, through snapshots taken every N events or on demand."""

from __future__ import annotations

import uuid

import anyio
import psycopg
import pytest

from ipa.domain import fold
from ipa.eventstore import EventStore, StoreSettings, StreamNotFound

from .helpers import task_history

pytestmark = pytest.mark.anyio


async def test_load_at_every_past_version_equals_the_fold_of_its_prefix(store: EventStore) -> None:
    task_id, events = task_history(9)
    await store.append(task_id, events, 0)

    for version in range(1, 10):
        assert await store.load(task_id, version) == fold(events[:version])
    assert await store.load(task_id) == fold(events)


async def test_loading_unknown_task_or_future_version_is_not_found(store: EventStore) -> None:
    task_id, events = task_history(3)
    await store.append(task_id, events, 0)

    with pytest.raises(StreamNotFound, match="not found"):
        await store.load(uuid.uuid4())
    with pytest.raises(StreamNotFound, match="version 4"):
        await store.load(task_id, 4)
    with pytest.raises(StreamNotFound):
        await store.load(task_id, 0)


async def test_snapshot_is_taken_every_n_events(database) -> None:
    task_id, events = task_history(25)
    async with EventStore.open(database, StoreSettings(snapshot_interval=10, live=False)) as store:
        for version, event in enumerate(events):
            await store.append(task_id, [event], version)
        with anyio.fail_after(10):
            while len(await store.snapshots(task_id)) < 2:
                await anyio.sleep(0.01)
        snapshots = await store.snapshots(task_id)

    assert [version for version, _ in snapshots] == [10, 20]
    for version, state in snapshots:
        assert state == fold(events[:version]).to_dict()


async def test_one_append_that_crosses_an_interval_snapshots_at_the_boundary(database) -> None:
    task_id, events = task_history(7)
    async with EventStore.open(database, StoreSettings(snapshot_interval=5, live=False)) as store:
        await store.append(task_id, events, 0)
        with anyio.fail_after(10):
            while not await store.snapshots(task_id):
                await anyio.sleep(0.01)
        assert [v for v, _ in await store.snapshots(task_id)] == [5]


async def test_on_demand_snapshot_at_head_and_at_a_past_version(store: EventStore) -> None:
    task_id, events = task_history(6)
    await store.append(task_id, events, 0)

    assert await store.take_snapshot(task_id) == 6
    assert await store.take_snapshot(task_id, 3) == 3
    assert await store.take_snapshot(task_id, 3) == 3  # again: a no-op

    assert [v for v, _ in await store.snapshots(task_id)] == [3, 6]


async def test_load_starts_from_newest_snapshot_at_or_below_the_version(
    database, store: EventStore
) -> None:
    task_id, events = task_history(8)
    await store.append(task_id, events, 0)
    await store.take_snapshot(task_id, 3)
    await store.take_snapshot(task_id, 6)
    # Mark the snapshots so a load shows which one it started from.
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        for version in (3, 6):
            conn.execute(
                "UPDATE snapshots SET state = replace(convert_from(state, 'UTF8'),"
                " '\"title\":\"t\"', '\"title\":\"snap' || %s || '\"')::bytea"
                " WHERE originator_version = %s",
                (version, version),
            )

    titles = {v: (await store.load(task_id, v)).title for v in range(1, 9)}

    assert titles == {1: "t", 2: "t", 3: "snap3", 4: "snap3", 5: "snap3",
                      6: "snap6", 7: "snap6", 8: "snap6"}


async def test_a_scan_of_some_types_reads_every_page_and_only_those_types(
    store: EventStore,
) -> None:
    task_id, events = task_history(23)  # created, started, then paused/resumed alternating
    await store.append(task_id, events, 0)
    every = [e.to_json() for e in await store.read(task_id)]

    for page in (1, 7, 11, 23, 1000):  # page edges inside, at and past the stream's end
        paused = [e async for e in store.scan_json(task_id, {"TaskPaused"}, page=page)]
        assert paused == [e for e in every if e["type"] == "TaskPaused"]
        assert len(paused) == 11
    assert [e async for e in store.scan_json(task_id, {"TaskDeleted"})] == []
    assert [e async for e in store.scan_json(uuid.uuid4(), {"TaskPaused"})] == []


async def test_a_step_is_the_state_before_a_version_and_the_event_that_made_it(
    store: EventStore,
) -> None:
    task_id, events = task_history(9)
    await store.append(task_id, events, 0)
    await store.take_snapshot(task_id, 4)  # steps before, at and after a snapshot

    for version in range(1, 10):
        before, event = await store.load_step(task_id, version)
        assert before == (fold(events[:version - 1]) if version > 1 else None)
        assert event == (await store.read(task_id, after=version - 1, upto=version))[0]
    for missing in (0, 10):
        with pytest.raises(StreamNotFound):
            await store.load_step(task_id, missing)
    with pytest.raises(StreamNotFound):
        await store.load_step(uuid.uuid4(), 1)
