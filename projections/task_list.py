"""The central task list: one row per task, kept in PostgreSQL from the store's global log.

Each row is a summary of the task's state (what the list page shows) plus the state itself,
so the next event folds with the domain's own ``evolve`` — the list never re-implements the
workflow. Rows and the log position they reflect are saved in one transaction; a restart
resumes after that position, and :meth:`TaskList.rebuild` replays the whole log from zero to
the same content.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from uuid import UUID

import anyio
from anyio.abc import TaskStatus

from ipa.domain import TaskEvent, TaskState, evolve
from ipa.eventstore import EventStore, PositionConflict, RecordedEvent

log = logging.getLogger(__name__)

MODEL = "task_list"
_PAGE = 1000

Progress = Callable[[int, int], None]


def summary(state: TaskState) -> dict[str, Any]:
    """The list's columns for one task."""
    return {
        "id": str(state.id),
        "title": state.title,
        "workflow": state.workflow,
        "phase": state.phase,
        "status": state.status.value,
        "version": state.version,
        "created_at": state.created_at.isoformat(),
        "last_activity": state.updated_at.isoformat(),
    }


def fold_row(row: dict[str, Any] | None, event: TaskEvent) -> dict[str, Any]:
    """The row after ``event``: the summary of the state folded with it."""
    state = TaskState.from_dict(row["state"]) if row is not None else None
    state = evolve(state, event)
    return {**summary(state), "state": state.to_dict()}


class TaskList:
    """Keeps the ``task_list`` read model up to date from the store's log."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._position = 0
        self._advanced = anyio.Event()

    @property
    def position(self) -> int:
        """The global position of the last event applied."""
        return self._position

    async def catch_up(self, progress: Progress | None = None) -> int:
        """Apply every event after the saved position; return the new position."""
        self._position = await self._store.read_model_position(MODEL)
        head = await self._store.head_position() if progress else 0
        while True:
            page = await self._store.read_log(self._position, _PAGE)
            if not page:
                return self._position
            try:
                await self._apply(page)
            except PositionConflict:
                # Another runner (a rebuild, another process) moved it on: follow it.
                self._position = await self._store.read_model_position(MODEL)
                continue
            self._position = page[-1].position
            self._advanced.set()
            self._advanced = anyio.Event()
            if progress:
                progress(self._position, max(head, self._position))

    async def _apply(self, page: list[RecordedEvent]) -> None:
        keys = sorted({str(r.stream_id) for r in page if isinstance(r.event, TaskEvent)})
        rows: dict[str, Any] = await self._store.read_model_rows(MODEL, keys) if keys else {}
        changed: dict[str, Any] = {}
        for recorded in page:
            if recorded.event is None:
                log.warning("task list: skipped %s v%s of unknown type %s",
                            recorded.stream_id, recorded.version, recorded.type)
            elif isinstance(recorded.event, TaskEvent):
                key = str(recorded.stream_id)
                row = rows.get(key)
                if row is not None and row["version"] >= recorded.version:
                    continue  # already applied
                rows[key] = changed[key] = fold_row(row, recorded.event)
        await self._store.save_read_model(MODEL, changed, page[-1].position)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Catch up, then follow the live tail until cancelled."""
        await self.catch_up()
        task_status.started()
        async with self._store.subscribe(after=self._position) as live:
            async for recorded in live:
                if recorded.position > self._position:
                    await self.catch_up()

    async def wait_for(self, position: int) -> None:
        """Return once events up to ``position`` are applied (bound it with a timeout)."""
        while self._position < position:
            await self._advanced.wait()

    async def rebuild(self, progress: Progress | None = None) -> int:
        """Forget the read model and replay the whole log into it; return the position."""
        await self._store.reset_read_model(MODEL)
        return await self.catch_up(progress)

    async def rows(self) -> list[dict[str, Any]]:
        """Every row, by task id (each with its ``state``)."""
        out: list[dict[str, Any]] = []
        after = ""
        while True:
            page = await self._store.read_model_page(MODEL, after=after, limit=_PAGE)
            out.extend(data for _, data in page)
            if len(page) < _PAGE:
                return out
            after = page[-1][0]

    async def get(self, task_id: UUID) -> dict[str, Any] | None:
        """The row of one task, or None."""
        return (await self._store.read_model_rows(MODEL, [str(task_id)])).get(str(task_id))
