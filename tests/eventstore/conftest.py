"""Fixtures of the store tests: more stores on the test's database, as other nodes' processes
would have, and nodes on them (closed after the test)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import anyio
import pytest

from ipa.eventstore import ConnectionParams, EventStore, Node, StoreSettings


@pytest.fixture
async def open_store(database: ConnectionParams, store_settings: StoreSettings
                     ) -> AsyncIterator[Callable]:
    """Open another store on the same database: what another node's process would have."""
    async with anyio.create_task_group() as tg:
        stores: list[EventStore] = []
        closing: list[anyio.Event] = []

        async def opened() -> EventStore:
            ready = anyio.Event()
            stop = anyio.Event()

            async def hold() -> None:
                async with EventStore.open(database, store_settings) as store:
                    stores.append(store)
                    ready.set()
                    await stop.wait()

            tg.start_soon(hold)
            await ready.wait()
            closing.append(stop)
            return stores[-1]

        yield opened
        for stop in closing:
            stop.set()


@pytest.fixture
async def node_of() -> AsyncIterator[Callable]:
    """``await node_of(store, id, ...)``: an open node on ``store``."""
    opened: list[Node] = []

    async def node(store: EventStore, node_id: str, **options) -> Node:
        made = store.node(node_id, **options)
        opened.append(made)
        await made.open()
        return made

    yield node
    while opened:
        await opened.pop().close()
