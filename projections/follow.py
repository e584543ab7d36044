"""Following the store's log: what every read model does once it has caught up, and
:class:`TableModel`, what the read models kept in tables of their own (agent memory,
analytics) share: their position, waiting for it, and turning off with a reason."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

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


class TableModel:
    """A read model folded page by page into ``table`` (its ``close()`` closes the table)
    under the name ``model``; :attr:`problem` says why it is off (``None``: it works)."""

    name: ClassVar[str]
    """What its warnings start with ("memory", "analytics")."""
    off_note: ClassVar[str] = ""
    """Added to the warning when it turns off (what goes on without it)."""

    def __init__(self, store: EventStore, table: Any, model: str) -> None:
        self._store = store
        self._table = table
        self.model = model
        self.problem: str | None = None
        self._position = 0
        self._advanced = anyio.Event()

    @property
    def position(self) -> int:
        """The log position up to which the model has applied the log."""
        return self._position

    async def close(self) -> None:
        await self._table.close()

    def _off(self, problem: str) -> None:
        self.problem = problem
        log.warning("%s is off: %s%s", self.name, problem, self.off_note)
        self._moved()  # whoever waits for a position learns it will not come

    def _moved(self) -> None:
        """Wake whoever waits for the position (:meth:`wait_for`)."""
        self._advanced.set()
        self._advanced = anyio.Event()

    async def wait_for(self, position: int) -> None:
        """Return once events up to ``position`` are applied, or the model is off (bound it
        with a timeout)."""
        while self._position < position and self.problem is None:
            await self._advanced.wait()
