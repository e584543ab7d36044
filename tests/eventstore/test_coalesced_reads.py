"""Reads arriving while every read connection is busy are answered together, by one query
(``eventstore/coalesce.py``, ``eventstore/reader.py``): each read gets exactly what it gets
alone, bad values fail only their own read, and no cancellation strands a read taken along."""

from __future__ import annotations

import uuid

import anyio
import pytest

from ipa.domain import fold
from ipa.eventstore import EventStore, StoreSettings, StoreUnavailable
from ipa.eventstore.coalesce import Coalescer, Slots

from .helpers import task_history

pytestmark = pytest.mark.anyio

BIG = 2**63 - 1


async def burst(calls) -> list:
    """Run every ``call()`` at once; their results (or errors) in order."""
    results: list = [None] * len(calls)

    async def one(i: int) -> None:
        try:
            results[i] = ("ok", await calls[i]())
        except Exception as e:
            results[i] = ("error", type(e), str(e))

    async with anyio.create_task_group() as tg:
        for i in range(len(calls)):
            tg.start_soon(one, i)
    return results


async def test_a_burst_of_reads_is_answered_as_each_read_alone_in_a_few_queries(
    database,
) -> None:
    settings = StoreSettings(snapshot_interval=0, live=False, read_pool_size=2)
    async with EventStore.open(database, settings) as store:
        histories = [task_history(1 + i % 9) for i in range(30)]
        for task_id, events in histories:
            await store.append(task_id, events, 0)
        await store.take_snapshot(histories[8][0], 5)
        await store.take_snapshot(histories[8][0], 8)
        missing = uuid.uuid4()
        reader = store._reader
        calls = []
        for (task_id, _), (other, _) in zip(histories, histories[1:] + histories[:1],
                                            strict=True):
            calls += [
                lambda t=task_id: reader.stream(t),
                lambda t=task_id: reader.stream(t, gt=1, lte=4),
                lambda t=task_id: reader.stream(t, gt=2, limit=2),
                lambda t=task_id: reader.stream(str(t), lte=BIG + 5, limit=BIG + 1),
                lambda t=task_id: reader.rows(t, gt=-3),
                lambda t=task_id: reader.head(t),
                lambda t=task_id: reader.snapshot(t),
                lambda t=task_id: reader.snapshot(t, 6),
                lambda t=other: store.load(t),
                lambda t=task_id: store.read(t, after=1),
            ]
        calls += [lambda: reader.stream(missing), lambda: reader.head(missing),
                  lambda: reader.snapshot(missing, 3), lambda: reader.stream(missing, gt=BIG)]
        alone = [await call() for call in calls]
        before = reader.queries
        together = await burst(calls)
        queries = reader.queries - before

    assert together == [("ok", result) for result in alone]
    # 300-odd reads on two connections: all but the first few were answered in batches.
    assert queries < len(calls) // 5, (queries, len(calls))
    assert alone[-4:] == [[], 0, None, []]
    loads = alone[8:-4:10]  # each task's ninth call: the next task's load
    assert loads == [fold(events) for _, events in histories[1:] + histories[:1]]


async def test_a_bad_read_in_a_burst_fails_alone(database) -> None:
    settings = StoreSettings(snapshot_interval=0, live=False, read_pool_size=1)
    async with EventStore.open(database, settings) as store:
        task_id, events = task_history(4)
        await store.append(task_id, events, 0)
        reader = store._reader
        calls = [lambda: reader.stream(task_id)] * 10 + [
            lambda: reader.stream("not-a-uuid"),
            lambda: reader.head("nor-this"),
            lambda: reader.stream(task_id, lte=0),
            lambda: reader.stream(task_id, limit=-1),
            lambda: reader.snapshot(task_id, -2),
        ] + [lambda: reader.head(task_id)] * 10
        results = await burst(calls)

    status, rows = results[0]
    assert status == "ok" and [row.originator_version for row in rows] == [1, 2, 3, 4]
    assert results[:10] == [results[0]] * 10
    assert [r[:2] for r in results[10:12]] == [("error", ValueError)] * 2
    assert results[12:15] == [("ok", []), ("ok", []), ("ok", None)]
    assert results[15:] == [("ok", 4)] * 10


# The coalescer alone, on reads of its own making ------------------------------------------


async def test_reads_taken_along_are_answered_though_their_leader_is_cancelled() -> None:
    alone_gate, batch_gate = anyio.Event(), anyio.Event()
    batches: list[list[int]] = []

    async def one(key: int) -> int:
        await alone_gate.wait()
        return key * 10

    async def many(keys) -> list[int]:
        batches.append(list(keys))
        await batch_gate.wait()
        return [key * 10 for key in keys]

    coalescer = Coalescer(Slots(1), one, many)
    results: dict[int, int] = {}

    async def read(key: int) -> None:
        results[key] = await coalescer.get(key)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read, 0)  # takes the one slot and waits
        await anyio.wait_all_tasks_blocked()
        with anyio.CancelScope() as waiting:
            async with anyio.create_task_group() as waiters:
                waiters.start_soon(read, 1)  # cancelled while queued: leaves the queue
                await anyio.wait_all_tasks_blocked()
                waiting.cancel()
        leader = anyio.CancelScope()

        async def led() -> None:
            with leader:
                await read(2)

        tg.start_soon(led)
        await anyio.wait_all_tasks_blocked()
        tg.start_soon(read, 3)
        tg.start_soon(read, 4)
        await anyio.wait_all_tasks_blocked()
        alone_gate.set()  # read 0 ends; read 2 leads a batch of 2, 3 and 4
        await anyio.wait_all_tasks_blocked()
        assert batches == [[2, 3, 4]]
        leader.cancel()  # the leader goes, once its query is over ...
        await anyio.wait_all_tasks_blocked()
        batch_gate.set()

    assert results == {0: 0, 3: 30, 4: 40}  # ... and the reads it took along are answered
    assert coalescer.queries == 2


async def test_a_failed_batch_fails_each_of_its_reads_with_its_own_error() -> None:
    gate = anyio.Event()

    async def one(key: int) -> int:
        await gate.wait()
        return key

    async def many(keys) -> list[int]:
        raise StoreUnavailable("database at somewhere: connection lost")

    coalescer = Coalescer(Slots(1), one, many)
    errors: list[BaseException] = []

    async def read(key: int) -> None:
        try:
            await coalescer.get(key)
        except StoreUnavailable as e:
            errors.append(e)

    async with anyio.create_task_group() as tg:
        tg.start_soon(read, 0)
        await anyio.wait_all_tasks_blocked()
        for key in (1, 2, 3):
            tg.start_soon(read, key)
        await anyio.wait_all_tasks_blocked()
        gate.set()

    assert [str(e) for e in errors] == ["database at somewhere: connection lost"] * 3
    assert len({id(e) for e in errors}) == 3
