"""Nodes and leases on the real store (DESIGN §6.1): a node's id is its own while it lives,
a dead node is seen at once through its session lock and a hung one after the TTL, claims
bump the epoch, and an append fenced by a lease this node lost writes nothing."""

from __future__ import annotations

import uuid

import anyio
import pytest

from ipa.eventstore import (
    LeaseLost,
    NodeIdTaken,
    VersionConflict,
)

from .helpers import task_history

pytestmark = pytest.mark.anyio


async def test_a_node_id_is_one_live_process_s_and_free_again_once_it_is_gone(
    open_store, node_of
) -> None:
    a, b = await open_store(), await open_store()
    first = await node_of(a, "n1", address="http://a")
    with pytest.raises(NodeIdTaken, match="n1"):
        await node_of(b, "n1")
    await first.close()  # the process died: the database dropped its session
    again = await node_of(b, "n1")
    assert [(n.id, n.status, n.address) for n in await again.nodes()] == [("n1", "up", "")]


async def test_a_dead_node_is_seen_at_once_and_a_hung_one_after_the_ttl(
    open_store, node_of
) -> None:
    a, b, c = await open_store(), await open_store(), await open_store()
    watcher, dead, hung = (
        await node_of(a, "w"),
        await node_of(b, "dead"),
        await node_of(c, "hung"),
    )
    assert await watcher.find_dead(ttl=60) == []

    await dead.close()
    assert await watcher.find_dead(ttl=60) == ["dead"]

    await watcher.heartbeat(pods=0, agents=0)
    # "hung" beat when it opened, in an earlier transaction: with a TTL of 0 it is stale now
    # (its session lives, its heart not); the watcher never judges itself.
    assert await watcher.find_dead(ttl=0) == ["hung"]
    assert {n.id: n.status for n in await watcher.nodes()} == {
        "dead": "dead",
        "hung": "dead",
        "w": "up",
    }
    assert await hung.heartbeat(pods=0, agents=0) == "dead"  # it learns it was given up


async def test_an_append_fenced_by_a_lost_lease_writes_nothing(open_store, node_of) -> None:
    a, b = await open_store(), await open_store()
    old, new = await node_of(a, "old"), await node_of(b, "new")
    task_id, events = task_history(4)
    assert await old.assign(task_id, "old") == 1
    await a.append(task_id, events[:2], 0)  # fenced with epoch 1: fine

    await new.set_status("up")
    await old.set_status("dead")  # as find_dead would, once "old" hangs past the TTL
    assert await new.claim([task_id]) == {task_id: 2}

    with pytest.raises(LeaseLost, match="no longer holds"):
        await a.append(task_id, events[2:3], 2)
    assert [e.version for e in await b.read(task_id)] == [1, 2]
    await b.append(task_id, events[2:], 2)  # the new owner writes on
    assert [e.version for e in await a.read(task_id)] == [1, 2, 3, 4]
    assert await new.owner(task_id) == ("new", "up", "")


async def test_in_a_batch_only_the_append_whose_lease_is_lost_fails(open_store, node_of) -> None:
    a, b = await open_store(), await open_store()
    old, new = await node_of(a, "old"), await node_of(b, "new")
    tasks = [task_history(2) for _ in range(3)]
    for task_id, _ in tasks:
        await old.assign(task_id, "old")
    await old.set_status("dead")
    lost = tasks[1][0]
    await new.claim([lost])

    results: dict[uuid.UUID, object] = {}

    async def append(task_id, events) -> None:
        try:
            results[task_id] = await a.append(task_id, events, 0)
        except LeaseLost as e:
            results[task_id] = e

    async with anyio.create_task_group() as tg:  # side by side: one batch
        for task_id, events in tasks:
            tg.start_soon(append, task_id, events)
    assert [isinstance(results[task_id], LeaseLost) for task_id, _ in tasks] == [False, True, False]
    assert [len(await a.read(task_id)) for task_id, _ in tasks] == [2, 0, 2]


async def test_claims_take_only_free_leases_and_survivors_share_a_dead_nodes(
    open_store, node_of
) -> None:
    a, b, c = await open_store(), await open_store(), await open_store()
    gone, one, two = await node_of(a, "gone"), await node_of(b, "one"), await node_of(c, "two")
    tasks = [uuid.uuid4() for _ in range(10)]
    assert set(await gone.claim(tasks)) == set(tasks)
    assert await one.claim(tasks) == {}  # a live node's leases are not free

    await gone.close()
    assert await one.find_dead(ttl=60) == ["gone"]
    first = await one.claim_orphans()
    second = await two.claim_orphans()
    assert len(first) == 5 and len(second) == 5 and set(first) | set(second) == set(tasks)
    assert set(first.values()) == {2}
    assert await one.claim_orphans() == {}


async def test_a_released_lease_is_claimed_by_another_node_and_the_old_epoch_is_fenced(
    open_store, node_of
) -> None:
    a, b = await open_store(), await open_store()
    leaving, staying = await node_of(a, "leaving"), await node_of(b, "staying")
    task_id, events = task_history(2)
    await leaving.assign(task_id, "leaving")
    await leaving.release([task_id])
    assert await staying.claim_orphans() == {task_id: 2}
    with pytest.raises(LeaseLost):
        await a.append(task_id, events, 0)
    await b.append(task_id, events, 0)
    with pytest.raises(VersionConflict):
        await b.append(task_id, events, 0)


async def test_streams_fenced_by_one_task_share_a_batch_and_fail_together(
    open_store, node_of
) -> None:
    # A task's stream and two more fenced by the task (its runs'): the first commits alone,
    # the other two in one statement, where one lease row answers both fences; once the lease
    # is lost, none is written.
    a, b = await open_store(), await open_store()
    old, new = await node_of(a, "old"), await node_of(b, "new")
    streams = [task_history(2) for _ in range(3)]
    task_id = streams[0][0]
    await old.assign(task_id, "old")

    async def append_all(expected: int) -> list[object]:
        results: list[object] = [None] * len(streams)

        async def one(i: int, stream_id, events) -> None:
            try:
                results[i] = await a.append(stream_id, events[expected:expected + 1], expected,
                                            fence=task_id)
            except LeaseLost as e:
                results[i] = e

        async with anyio.create_task_group() as tg:
            for i, (stream_id, events) in enumerate(streams):
                tg.start_soon(one, i, stream_id, events)
        return results

    commits = a.commits
    assert not any(isinstance(r, LeaseLost) for r in await append_all(0))
    assert a.commits == commits + 2  # one alone, then two fenced by one lease together

    await old.set_status("dead")
    await new.claim([task_id])
    assert all(isinstance(r, LeaseLost) for r in await append_all(1))
    assert [len(await a.read(s)) for s, _ in streams] == [1, 1, 1]
