"""The live tail: subscriptions from any position get every later event once, in order."""

from __future__ import annotations

from dataclasses import replace

import anyio
import pytest

from ipa.eventstore import EventStore, StoreSettings

from .helpers import task_history

pytestmark = pytest.mark.anyio


async def take(subscription, n: int) -> list:
    got = []
    with anyio.fail_after(20):
        async for recorded in subscription:
            got.append(recorded)
            if len(got) == n:
                break
    return got


async def test_stream_subscription_resumes_after_a_version_while_appends_continue(
    store: EventStore,
) -> None:
    task_id, events = task_history(40)
    await store.append(task_id, events[:10], 0)

    async with anyio.create_task_group() as tg:
        async def keep_appending() -> None:
            for version in range(10, 40):
                await store.append(task_id, events[version : version + 1], version)

        async with store.subscribe(task_id, after=4) as subscription:
            tg.start_soon(keep_appending)
            got = await take(subscription, 35)

    assert [r.version for r in got] == list(range(5, 41))[:35]


async def test_global_subscription_resumes_after_a_position_across_streams(
    store: EventStore,
) -> None:
    histories = [task_history(6) for _ in range(5)]
    for task_id, events in histories[:2]:
        await store.append(task_id, events, 0)  # positions 1..12

    async with store.subscribe(after=7) as subscription:
        for task_id, events in histories[2:]:
            for version, event in enumerate(events):
                await store.append(task_id, [event], version)
        got = await take(subscription, 5 + 18)

    assert [r.position for r in got] == list(range(8, 31))


async def test_subscribers_of_one_task_do_not_see_other_tasks(store: EventStore) -> None:
    (mine, my_events), (other, other_events) = task_history(3), task_history(3)

    async with store.subscribe(mine) as subscription:
        await store.append(other, other_events, 0)
        await store.append(mine, my_events, 0)
        got = await take(subscription, 3)

    assert {r.stream_id for r in got} == {mine}


async def test_slow_subscriber_is_detached_and_catches_up_without_gap(database) -> None:
    settings = StoreSettings(subscriber_buffer=4, poll_interval=0.05, snapshot_interval=0)
    task_id, events = task_history(60)
    async with EventStore.open(database, settings) as store:
        async with store.subscribe(task_id) as slow, store.subscribe(task_id) as fast:
            await store.append(task_id, events[:1], 0)
            first = await take(slow, 1)
            for version in range(1, 60):  # far more than the slow one's buffer of 4
                await store.append(task_id, events[version : version + 1], version)
            fast_got = await take(fast, 60)
            slow_got = first + await take(slow, 59)

    assert [r.version for r in fast_got] == list(range(1, 61))
    assert [r.version for r in slow_got] == list(range(1, 61))


async def test_commits_of_another_process_arrive_through_listen_notify(
    database, store_settings
) -> None:
    # Polling every 60 s: only NOTIFY can deliver within the test's deadline.
    settings = replace(store_settings, poll_interval=60.0)
    task_id, events = task_history(3)
    async with EventStore.open(database, settings) as watcher:
        async with watcher.subscribe(task_id) as subscription:
            async with EventStore.open(database, replace(settings, live=False)) as writer:
                await writer.append(task_id, events, 0)
            got = await take(subscription, 3)

    assert [r.version for r in got] == [1, 2, 3]


async def test_subscription_without_live_tail_ends_after_history(database) -> None:
    task_id, events = task_history(4)
    async with EventStore.open(database, StoreSettings(live=False)) as store:
        await store.append(task_id, events, 0)
        async with store.subscribe(task_id, after=1) as subscription:
            got = [r.version async for r in subscription]

    assert got == [2, 3, 4]


async def test_an_observer_sees_every_later_event_in_log_order_then_none_at_stop(
    database,
) -> None:
    (first, early), (second, late) = task_history(3), task_history(4)
    seen: list = []

    def broken(recorded) -> None:
        raise RuntimeError("an observer's bug")

    async with EventStore.open(database, StoreSettings()) as store:
        await store.append(first, early, 0)
        with anyio.fail_after(20):
            while store.tail.position < 3:  # the tail handed these out before the observer
                await anyio.sleep(0.01)
        store.tail.observe(broken)  # must not stop the tail for the next one
        store.tail.observe(seen.append)
        stop = store.tail.observe(lambda recorded: None)
        stop()
        for version, event in enumerate(late):
            await store.append(second, [event], version)
        with anyio.fail_after(20):
            while len(seen) < 4:
                await anyio.sleep(0.01)
        assert store.tail.running

    assert [(r.stream_id, r.version, r.position) for r in seen[:4]] == [
        (second, version, 3 + version) for version in range(1, 5)]
    assert seen[4:] == [None]
