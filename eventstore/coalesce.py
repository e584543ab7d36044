"""Coalesced reads: concurrent reads of one kind, gathered into one query while others run.

Two hundred cold pages asked at once used to be two hundred queries queued on the read pool's
few connections; each paid its own round trip, pool hand-over and statement (~0.4 ms of this
process and the server's time apiece on two cores), so the last answer waited for all the
others. Here a read runs alone when a connection is free and nothing waits (the common case
costs what it did); when every slot is busy, the reads arriving meanwhile wait together, and
the first of them to find a free slot runs all of them in one query (``many``), up to
``max_batch`` at a time. It is the read-side sibling of the writer's group commit
(:mod:`.writer`), without a task of its own: a waiting read either leads the next batch or is
answered by another's.

Once taken into a batch, a read's query runs to its end even when the read that leads it is
cancelled (shielded), so no read taken along is left unanswered; a read cancelled while it
waits simply leaves the queue.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import anyio

K = TypeVar("K")
R = TypeVar("R")


class Slots:
    """How many reads may hold a connection at once (the pool's size), shared by every kind
    of coalesced read on that pool."""

    def __init__(self, size: int) -> None:
        self.free = size
        self._changed = anyio.Event()

    async def changed(self) -> None:
        """Return once a slot was given back."""
        await self._changed.wait()

    def give_back(self) -> None:
        self.free += 1
        self._changed.set()
        self._changed = anyio.Event()


@dataclass(eq=False, slots=True)
class _Read(Generic[K, R]):
    key: K
    taken: bool = False
    done: anyio.Event = field(default_factory=anyio.Event)
    result: R | None = None
    error: BaseException | None = None


class Coalescer(Generic[K, R]):
    """Reads of one kind: ``one(key)`` for a read alone, ``many(keys)`` (the results in the
    keys' order) for a batch of them."""

    def __init__(self, slots: Slots, one: Callable[[K], Awaitable[R]],
                 many: Callable[[Sequence[K]], Awaitable[list[R]]], *,
                 max_batch: int = 500) -> None:
        self._slots = slots
        self._one = one
        self._many = many
        self._max_batch = max_batch
        self._pending: deque[_Read[K, R]] = deque()
        self.queries = 0
        """Queries run so far (reads per query = the coalescing achieved)."""

    async def get(self, key: K) -> R:
        read: _Read[K, R] = _Read(key)
        self._pending.append(read)
        try:
            while not read.taken:
                if self._slots.free > 0:
                    await self._run(self._take())
                else:
                    await self._slots.changed()
        except BaseException:
            if not read.taken:
                self._pending.remove(read)
            raise
        await read.done.wait()
        if read.error is not None:
            raise read.error
        return read.result  # type: ignore[return-value]

    def _take(self) -> list[_Read[K, R]]:
        batch = []
        while self._pending and len(batch) < self._max_batch:
            read = self._pending.popleft()
            read.taken = True
            batch.append(read)
        return batch

    async def _run(self, batch: list[_Read[K, R]]) -> None:
        self._slots.free -= 1
        self.queries += 1
        try:
            with anyio.CancelScope(shield=True):
                if len(batch) == 1:
                    batch[0].result = await self._one(batch[0].key)
                else:
                    for read, result in zip(
                        batch, await self._many([read.key for read in batch]), strict=True
                    ):
                        read.result = result
        except Exception as e:
            for read in batch:
                read.error = e if len(batch) == 1 else _copy(e)
        finally:
            for read in batch:
                read.done.set()
            self._slots.give_back()


def _copy(error: Exception) -> Exception:
    """The error of a batch, once for each of its reads (one instance raised in many tasks
    would gather all their tracebacks)."""
    try:
        copy = type(error)(*error.args)
    except Exception:
        return error
    copy.__cause__ = error.__cause__ or error
    return copy
