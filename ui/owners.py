"""Which node holds each task's lease, as the API's views show it (``node``), read for many
requests at once.

Every read is a query on the node's own connection to the store, one at a time; under 200
clients a query per request queued them all behind each other. Here a request joins the next
read, one that starts after the request arrived (never one already in flight, whose answer may
be older than the request), and every request that arrives while a read runs joins the one
after it: under load, one query answers a whole wave of requests. A read for one task asks for
its lease's row (``Supervisor.owner_of``); a read for the list, or for several tasks at once,
asks for every lease (``Node.owners``).

``None`` / ``{}`` when this process is no node, or when the node's connection to the store is
down for the moment (the views are still served).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import anyio

from ipa.eventstore import StoreUnavailable
from ipa.supervisor import Supervisor

EVERY = "*"
"""What a read of the list asks for: every lease."""

NO_OWNERS: dict[str, str] = {}
"""The owners of a process that is no node: one object, never changed (see ``every``)."""


class _Read:
    """One query, for every request that joined it before it started."""

    def __init__(self) -> None:
        self.wanted: set[Any] = set()
        self.done = anyio.Event()
        self.owners: dict[str, str] = {}  # by the task id's text, as the task list writes it
        self.error: BaseException | None = None
        self.abandoned = False  # its request was cancelled mid-query: the others read again


class Owners:
    """The lease holders of tasks, read through ``supervisor``'s node."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.queries = 0
        self._next: _Read | None = None
        self._running: _Read | None = None
        self._every: dict[str, str] = {}  # the last read of every lease

    async def of(self, task_id: UUID) -> str | None:
        """The id of the node that holds the task's lease now."""
        if self.supervisor.node is None:
            return None
        return (await self._read(task_id)).owners.get(str(task_id))

    async def every(self) -> dict[str, str]:
        """Every leased task's node, by task id as the task list writes it."""
        if self.supervisor.node is None:
            return NO_OWNERS
        return (await self._read(EVERY)).owners

    async def _read(self, wanted: Any) -> _Read:
        while True:
            read = self._next
            if read is None:  # this request opens the next read and runs it
                read = self._next = _Read()
                read.wanted.add(wanted)
                return await self._run(read)
            read.wanted.add(wanted)  # not started yet: its answer is fresh enough
            await read.done.wait()
            if read.abandoned:
                continue
            if read.error is not None:
                raise read.error
            return read

    async def _run(self, read: _Read) -> _Read:
        """Wait for the read in flight (it started before this request: too old), then run
        ``read`` for every request that joined it meanwhile."""
        try:
            while self._running is not None:
                await self._running.done.wait()
            self._next = None
            self._running = read
            read.owners = await self._query(read.wanted)
        except anyio.get_cancelled_exc_class():
            read.abandoned = True  # the requests that joined it read again
            raise
        except BaseException as e:
            read.error = e
            raise
        finally:
            if self._next is read:
                self._next = None
            if self._running is read:
                self._running = None
            read.done.set()
        return read

    async def _query(self, wanted: set[Any]) -> dict[str, str]:
        node = self.supervisor.node
        if node is None:
            return {}
        self.queries += 1
        try:
            if len(wanted) == 1 and EVERY not in wanted:
                [task_id] = wanted
                owner = await self.supervisor.owner_of(task_id)
                return {} if owner is None else {str(task_id): owner}
            owners = await node.owners()
            if owners == self._every:
                # The same object while nothing changed: a list page rendered with it is
                # known to show the same nodes (:mod:`.list_cache`), without a look per row.
                return self._every
            self._every = owners
            return owners
        except StoreUnavailable:
            return {}
