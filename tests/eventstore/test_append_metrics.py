"""What the store tells about its appends: append observers (each committed append once, with
its events) and the writer's metrics (commit time, events per transaction)."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import anyio
import pytest

from ipa.eventstore import EventStore, VersionConflict
from ipa.telemetry import REGISTRY

from .helpers import task_history

pytestmark = pytest.mark.anyio


def value(metric: str) -> float:
    return REGISTRY.get_sample_value(metric) or 0.0


async def test_an_observer_sees_each_committed_append_once_with_its_events(
    store: EventStore,
) -> None:
    seen: list[tuple[UUID, list[str]]] = []

    def observer(stream_id: UUID, events: Sequence[object]) -> None:
        seen.append((stream_id, [type(e).__name__ for e in events]))

    store.observe_appends(observer)
    task_id, events = task_history(3)
    await store.append(task_id, events[:2], 0)
    with pytest.raises(VersionConflict):
        await store.append(task_id, events[1:2], 1)  # stale: nothing committed, nothing seen
    await store.append(task_id, events[2:3], 2)

    assert seen == [(task_id, ["TaskCreated", "TaskStarted"]), (task_id, ["TaskPaused"])]


async def test_appends_batched_together_are_each_seen(store: EventStore) -> None:
    seen: list[UUID] = []
    store.observe_appends(lambda stream_id, events: seen.append(stream_id))
    histories = [task_history(3) for _ in range(30)]

    async def write(task_id: UUID, events: list) -> None:
        for i, event in enumerate(events):
            await store.append(task_id, [event], i)

    async with anyio.create_task_group() as tg:
        for task_id, events in histories:
            tg.start_soon(write, task_id, events)

    assert sorted(seen) == sorted(task_id for task_id, _ in histories for _ in range(3))


async def test_a_failing_observer_neither_fails_the_append_nor_stops_the_others(
    store: EventStore,
) -> None:
    seen: list[UUID] = []

    def broken(stream_id: UUID, events: Sequence[object]) -> None:
        raise RuntimeError("an observer's bug")

    store.observe_appends(broken)
    stop = store.observe_appends(lambda stream_id, events: seen.append(stream_id))
    task_id, events = task_history(2)

    appended = await store.append(task_id, events[:1], 0)
    stop()
    await store.append(task_id, events[1:], 1)

    assert appended.version == 1 and await store.version(task_id) == 2
    assert seen == [task_id]  # once; none after it stopped


async def test_each_commit_is_timed_and_its_events_counted(store: EventStore) -> None:
    commits = value("ipa_append_commit_seconds_count")
    batches = value("ipa_append_batch_events_count")
    events_in_batches = value("ipa_append_batch_events_sum")
    appended = value("ipa_events_appended_total")
    before = store.commits
    histories = [task_history(4) for _ in range(20)]

    async def write(task_id: UUID, events: list) -> None:
        await store.append(task_id, events[:1], 0)
        await store.append(task_id, events[1:], 1)

    async with anyio.create_task_group() as tg:
        for task_id, events in histories:
            tg.start_soon(write, task_id, events)

    committed = store.commits - before
    assert 0 < committed <= 40
    assert value("ipa_append_commit_seconds_count") == commits + committed
    assert value("ipa_append_batch_events_count") == batches + committed
    assert value("ipa_append_batch_events_sum") == events_in_batches + 80
    assert value("ipa_events_appended_total") == appended + 80
    assert value("ipa_append_commit_seconds_sum") > 0
