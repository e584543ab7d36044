"""Loading a task's stream into its state: the newest snapshot at or below the version asked
for, then the events after it, read on the store's async pool (:mod:`.reader`), each row
decoded once (:meth:`.codec.EventCodec.decode`) and folded by :func:`.snapshots.project_task`
(the domain's ``evolve``).

It does what the library's ``Repository.get(task_id, version=..., projector_func=
project_task)`` did, which ``EventStore.load`` called until #18 (the tests compare the two):
the same rows, the same snapshot, the same fold, and the same checks, nothing more: each row's
seal is there (the chain's digests and links are the audit's to check, :mod:`.integrity`), its
topic names an event class (:class:`UnknownEventType`), its body decodes and upcasts
(:class:`CorruptEvent`), and the history folds (:class:`CorruptEvent` naming the version).
Rows are decoded as the fold reaches them, so the first of these errors is the one raised.

A long history's decoding and fold (about 10 µs a row, most of it ``evolve``) runs in a worker
thread, so that the event loop keeps serving while a 100,000-event task replays; a short one
runs inline, cheaper than the hop.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain
from uuid import UUID

import anyio
from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import Mapper, Notification, StoredEvent

from ipa.domain import TaskState

from .codec import EventCodec
from .reader import Row, StreamReader
from .snapshots import project_task

INLINE_ROWS = 200
"""Histories of at most this many rows are folded in the event loop (a few ms at most)."""


class Replay:
    """Loads tasks' states from the store's rows."""

    def __init__(self, reader: StreamReader, codec: EventCodec, snapshots: Mapper[UUID]) -> None:
        self._reader = reader
        self._codec = codec
        self._snapshots = snapshots

    async def load(self, task_id: UUID, version: int | None = None) -> TaskState | None:
        """The task's state at ``version`` (``None``: its newest), ``None`` when it has no
        event there; from the newest snapshot at or below ``version`` and the events after."""
        snapshot = await self._reader.snapshot(task_id, version)
        after = None if snapshot is None else snapshot.originator_version
        return await self._folded(task_id, snapshot,
                                  await self._reader.rows(task_id, gt=after, lte=version))

    async def step(self, task_id: UUID, version: int
                   ) -> tuple[TaskState | None, Notification | None]:
        """The task's state before ``version`` (``None`` at version 1) and the row of the event
        that made ``version`` (``None`` when there is none), from one read of the rows after
        the newest snapshot below it: what a look at one past version needs."""
        snapshot = await self._reader.snapshot(task_id, version - 1)
        after = None if snapshot is None else snapshot.originator_version
        rows = await self._reader.positioned(task_id, gt=after, lte=version)
        if not rows or rows[-1][1] != version:
            return None, None
        position, _, topic, state = rows[-1]
        event = Notification(id=position, originator_id=task_id, originator_version=version,
                             topic=topic, state=state)
        before = [(v, t, s) for _, v, t, s in rows[:-1]]
        return await self._folded(task_id, snapshot, before), event

    async def _folded(self, task_id: UUID, snapshot: StoredEvent | None, rows: Sequence[Row]
                      ) -> TaskState | None:
        """:meth:`fold`, in a worker thread when the rows are many."""
        if len(rows) <= INLINE_ROWS:
            return self.fold(task_id, snapshot, rows)
        return await anyio.to_thread.run_sync(self.fold, task_id, snapshot, rows)

    def fold(self, task_id: UUID, snapshot: StoredEvent | None, rows: Sequence[Row]
             ) -> TaskState | None:
        """The state after ``snapshot`` (if any) and ``rows``, decoded as they are folded."""
        first = [] if snapshot is None else [self._snapshots.to_domain_event(snapshot)]
        # The rows' own id is a UUID (the column's type), whatever form the caller gave.
        stream_id = task_id if isinstance(task_id, UUID) else UUID(str(task_id))
        return project_task(None, chain(first, self._events(stream_id, rows)))

    def _events(self, task_id: UUID, rows: Sequence[Row]) -> Iterator[DomainEvent]:
        decode = self._codec.decode
        for version, topic, state in rows:
            yield decode(task_id, version, topic, state)
