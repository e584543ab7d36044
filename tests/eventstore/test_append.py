"""Appending: optimistic concurrency, racing writers, group commit."""

from __future__ import annotations

import uuid
from dataclasses import replace

import anyio
import pytest

from ipa.eventstore import EventStore, StoreSettings, VersionConflict

from .helpers import task_history

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
