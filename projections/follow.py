"""Following the store's log: what every read model does once it has caught up."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio

from ipa.eventstore import EventStore, StoreError

log = logging.getLogger(__name__)


async def follow(store: EventStore, name: str, position: Callable[[], int],
                 catch_up: Callable[[], Awaitable[int]]) -> None:
    """Call ``catch_up`` whenever the live tail passes ``position()``, until cancelled; a
    store error (the database went away, a save refused) is logged as ``name``'s and the
    tail is followed again a second later, from the position then."""
    while True:
        try:
            async with store.subscribe(after=position()) as live:
                async for recorded in live:
                    if recorded.position > position():
                        await catch_up()
        except StoreError as e:
            log.warning("%s: %s; catching up again in 1 s", name, e)
            await anyio.sleep(1.0)
