"""The lease holders the API's views show (``ui/owners.py``): one read for the requests that
arrive together, never a read that started before the request (real store, real nodes)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from ipa.eventstore import EventStore, Node
from ipa.pods import PodEnvironment, WorkspaceManager, runner_for
from ipa.supervisor import Supervisor
from ipa.ui.owners import Owners

pytestmark = pytest.mark.anyio


@pytest.fixture
async def nodes(store: EventStore) -> AsyncIterator[tuple[Node, Node]]:
    here, there = store.node("here"), store.node("there")
    await here.open()
    await there.open()
    yield here, there
    await here.close()
    await there.close()


def supervisor_of(store: EventStore, tmp_path: Path, node: Node | None) -> Supervisor:
    return Supervisor(PodEnvironment(
        store=store, workspaces=WorkspaceManager(tmp_path / "workspaces"),
        scratch=tmp_path / "scratch", runner_for=runner_for), node=node)


class Gated:
    """The node's own ``owners`` read, held back after the query until ``gate`` is set (so a
    test can change the leases while a read's answer is on its way)."""

    def __init__(self, node: Node) -> None:
        self.real = node.owners
        self.gate = anyio.Event()
        self.queried = anyio.Event()
        node.owners = self  # type: ignore[method-assign]

    async def __call__(self):
        answer = await self.real()
        self.queried.set()
        await self.gate.wait()
        return answer


async def test_a_task_names_its_lease_holder_and_the_list_every_lease(
        store: EventStore, nodes, tmp_path: Path) -> None:
    here, there = nodes
    mine, theirs, free = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await here.assign(mine, "here")
    await here.assign(theirs, "there")
    owners = Owners(supervisor_of(store, tmp_path, here))

    assert await owners.of(mine) == "here"
    assert await owners.of(theirs) == "there"
    assert await owners.of(free) is None
    assert await owners.every() == {str(mine): "here", str(theirs): "there"}
    assert await owners.every() == await here.owners()


async def test_requests_that_arrive_together_share_one_read(
        store: EventStore, nodes, tmp_path: Path) -> None:
    here, _ = nodes
    tasks = [uuid.uuid4() for _ in range(20)]
    for i, task_id in enumerate(tasks):
        await here.assign(task_id, "here" if i % 2 else "there")
    owners = Owners(supervisor_of(store, tmp_path, here))
    answers: dict[int, object] = {}

    async def ask(i: int) -> None:
        answers[i] = await (owners.every() if i == len(tasks) else owners.of(tasks[i]))

    async with anyio.create_task_group() as tg:
        for i in range(len(tasks) + 1):
            tg.start_soon(ask, i)

    assert owners.queries <= 2  # the first request's own read, then one for all the others
    assert [answers[i] for i in range(len(tasks))] == [
        "here" if i % 2 else "there" for i in range(len(tasks))]
    assert answers[len(tasks)] == {str(t): "here" if i % 2 else "there"
                                   for i, t in enumerate(tasks)}


async def test_a_request_never_gets_the_answer_of_a_read_that_started_before_it(
        store: EventStore, nodes, tmp_path: Path) -> None:
    here, there = nodes
    moved = uuid.uuid4()
    await here.assign(moved, "here")
    owners = Owners(supervisor_of(store, tmp_path, here))
    gated = Gated(here)
    answers: dict[str, dict[str, str]] = {}

    async def ask(name: str) -> None:
        answers[name] = await owners.every()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, "before")
            await gated.queried.wait()  # the first read has its answer, held back
            await here.release([moved])
            await there.claim([moved])  # the lease moves to the other node meanwhile
            tg.start_soon(ask, "after")
            await anyio.sleep(0.05)  # the second request waits for the read in flight
            gated.gate.set()

    assert answers["before"] == {str(moved): "here"}
    assert answers["after"] == {str(moved): "there"}


async def test_a_request_cancelled_while_it_runs_a_read_leaves_the_others_an_answer(
        store: EventStore, nodes, tmp_path: Path) -> None:
    here, _ = nodes
    task_id = uuid.uuid4()
    await here.assign(task_id, "here")
    owners = Owners(supervisor_of(store, tmp_path, here))
    gated = Gated(here)
    answers: dict[str, dict[str, str]] = {}

    async def ask(name: str) -> None:
        answers[name] = await owners.every()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(ask, "first")
            await gated.queried.wait()
            with anyio.CancelScope() as leader:
                async with anyio.create_task_group() as inner:
                    inner.start_soon(ask, "cancelled")  # opens the next read and waits
                    await anyio.sleep(0.05)
                    tg.start_soon(ask, "joined")  # joins that next read
                    await anyio.sleep(0.05)
                    leader.cancel()
            gated.gate.set()

    assert "cancelled" not in answers
    assert answers["first"] == answers["joined"] == {str(task_id): "here"}


async def test_no_node_or_a_node_cut_off_from_the_store_names_no_one(
        store: EventStore, nodes, tmp_path: Path) -> None:
    here, _ = nodes
    task_id = uuid.uuid4()
    await here.assign(task_id, "here")
    alone = Owners(supervisor_of(store, tmp_path, None))
    cut_off = Owners(supervisor_of(store, tmp_path, here))
    await here.close()

    assert await alone.of(task_id) is None and await alone.every() == {}
    assert alone.queries == 0
    assert await cut_off.of(task_id) is None and await cut_off.every() == {}


async def test_the_list_gets_the_same_owners_object_until_a_lease_changes(
        store: EventStore, nodes, tmp_path: Path) -> None:
    # A kept page of the list is served again only with the very owners map it was rendered
    # with (ui/list_cache.py): equal reads hand out one object, a changed lease a new one.
    here, _ = nodes
    await here.assign(uuid.uuid4(), "here")
    owners = Owners(supervisor_of(store, tmp_path, here))

    first = await owners.every()
    again = await owners.every()
    await here.assign(uuid.uuid4(), "there")
    changed = await owners.every()

    assert again is first
    assert changed is not first and len(changed) == 2
    assert await Owners(supervisor_of(store, tmp_path, None)).every() is \
        await Owners(supervisor_of(store, tmp_path, None)).every()
