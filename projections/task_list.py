"""The central task list: one row per task, kept in PostgreSQL from the store's global log.

Each row is a summary of the task's state (what the list page shows) plus the state itself,
so the next event folds with the domain's own ``evolve`` — the list never re-implements the
workflow. Rows and the log position they reflect are saved in one transaction; a restart
resumes after that position, and :meth:`TaskList.rebuild` replays the whole log from zero to
the same content.

An event the list cannot fold (a type this code does not know, a broken history), or a row
PostgreSQL refuses to store, does not stop the list: that task's row keeps its last good
state, says why in ``error``, and takes no more events; every other task goes on (``ipa audit
verify`` reports such rows). A rebuild is strict instead: it builds the new list beside
the old one and swaps them in one transaction only if every event folded, so a failed rebuild
leaves the old list as it was and names the event that stopped it.

The list's columns (every row but its ``state``) are also kept in memory, in task-id order, so
the task list API and page answer without a database read (:meth:`TaskList.page`); they are
updated in the same step as the saved rows and reloaded whenever the saved list moved on
without this runner (a rebuild, another process).
"""

from __future__ import annotations

import logging
from bisect import bisect_right, insort
from collections.abc import Callable
from typing import Any
from uuid import UUID

import anyio
from anyio.abc import TaskStatus

from ipa.domain import TaskCreated, TaskState, attention, evolve
from ipa.eventstore import (
    CorruptEvent,
    EventStore,
    PositionConflict,
    RecordedEvent,
    StoreError,
    UnknownEventType,
)

log = logging.getLogger(__name__)

MODEL = "task_list"
_PAGE = 1000

Progress = Callable[[int, int], None]


def summary(state: TaskState) -> dict[str, Any]:
    """The list's columns for one task; ``attention`` is the kind of what it needs from a
    person (``ipa.domain.attention``), or ``None``; ``parent_id``, ``item_id`` and ``kind``
    link a project's child task to its project and backlog item (``None`` on other tasks)."""
    needed = attention(state)
    return {
        "id": str(state.id),
        "title": state.title,
        "workflow": state.workflow,
        "phase": state.phase,
        "status": state.status.value,
        "version": state.version,
        "created_at": state.created_at.isoformat(),
        "last_activity": state.updated_at.isoformat(),
        "attention": None if needed is None else needed.kind,
        "parent_id": None if state.parent_id is None else str(state.parent_id),
        "item_id": state.item_id,
        "kind": state.kind,
    }


def fold_row(row: dict[str, Any] | None, recorded: RecordedEvent) -> dict[str, Any]:
    """The row after ``recorded``: the summary of the state folded with it.

    Raises a :class:`StoreError` naming the task and version when the event cannot be folded.
    """
    if recorded.event is None:
        if recorded.problem is not None:
            raise StoreError(recorded.problem)
        raise UnknownEventType(recorded.stream_id, recorded.version, recorded.type)
    state = TaskState.from_dict(row["state"]) if row is not None else None
    try:
        state = evolve(state, recorded.event)
    except (ValueError, TypeError, KeyError) as e:
        raise CorruptEvent(recorded.stream_id, recorded.version, f"cannot be replayed: {e}") from e
    return {**summary(state), "error": None, "state": state.to_dict()}


def _unsaved(saved: dict[str, Any] | None, key: str, reason: str) -> dict[str, Any]:
    """The row kept for a task whose new row PostgreSQL refused: the last saved one (or a
    stub for a task never saved), marked with why; it takes no more events."""
    error = f"the task list cannot save this task's row: {reason}"
    if saved is not None:
        return {**saved, "error": error}
    return {"id": key, "title": "", "workflow": "", "phase": "", "status": "failed",
            "version": 0, "created_at": "", "last_activity": "", "attention": None,
            "parent_id": None, "item_id": None, "kind": None, "error": error, "state": None}


def _columns(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key != "state"}


class TaskList:
    """Keeps the ``task_list`` read model up to date from the store's log."""

    def __init__(self, store: EventStore, *, model: str = MODEL) -> None:
        self._store = store
        self.model = model
        self._position = 0
        self._advanced = anyio.Event()
        self._columns: dict[str, dict[str, Any]] | None = None  # by task id; None: not loaded
        self._order: list[str] = []  # task ids, sorted

    @property
    def position(self) -> int:
        """The global position of the last event applied."""
        return self._position

    async def catch_up(self, progress: Progress | None = None, *, strict: bool = False) -> int:
        """Apply every event after the saved position; return the new position.

        ``strict``: an event that cannot be folded raises (naming task and version) instead of
        marking its task's row.
        """
        position = await self._store.read_model_position(self.model)
        if position != self._position or self._columns is None:
            await self._load_columns()
        self._position = position
        head = await self._store.head_position() if progress else 0
        while True:
            page = await self._store.read_log(self._position, _PAGE)
            if not page:
                return self._position
            try:
                await self._apply(page, strict)
            except PositionConflict:
                # Another runner (a rebuild, another process) moved it on: follow it.
                self._position = await self._store.read_model_position(self.model)
                await self._load_columns()
                continue
            self._position = page[-1].position
            self._advanced.set()
            self._advanced = anyio.Event()
            if progress:
                progress(self._position, max(head, self._position))

    async def _apply(self, page: list[RecordedEvent], strict: bool) -> None:
        keys = sorted({str(r.stream_id) for r in page})
        rows: dict[str, Any] = await self._store.read_model_rows(self.model, keys)
        rows_before = dict(rows)
        changed: dict[str, Any] = {}
        for recorded in page:
            key = str(recorded.stream_id)
            row = rows.get(key)
            if row is None and not isinstance(recorded.event, TaskCreated):
                continue  # not a task stream (or a task this list could not start)
            if row is not None and (row["error"] or row["version"] >= recorded.version):
                continue  # stopped at an earlier problem, or already applied
            try:
                rows[key] = changed[key] = fold_row(row, recorded)
            except StoreError as e:
                if strict or row is None:
                    raise
                log.error("task list: %s; the row stays at version %s", e, row["version"])
                rows[key] = changed[key] = {**row, "error": str(e)}
        refused = await self._store.save_read_model(
            self.model, changed, page[-1].position,
            instead=lambda key, reason: _unsaved(rows_before.get(key), key, reason),
        )
        for key, reason in refused.items():
            log.error("task list: task %s: the row cannot be saved: %s", key, reason)
            changed[key] = _unsaved(rows_before.get(key), key, reason)
        for key, row in changed.items():
            self._set_columns(key, row)

    async def _load_columns(self) -> None:
        columns: dict[str, dict[str, Any]] = {}
        for row in await self.rows():
            columns[row["id"]] = _columns(row)
        self._columns, self._order = columns, sorted(columns)

    def _set_columns(self, key: str, row: dict[str, Any]) -> None:
        if self._columns is None:
            return
        if key not in self._columns:
            insort(self._order, key)
        self._columns[key] = _columns(row)

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
        """Replay the whole log into a new list and swap it in; return the position.

        If an event cannot be folded, raises naming it and leaves the current list as it was.
        """
        staging = TaskList(self._store, model=f"{self.model}~rebuild")
        await self._store.reset_read_model(staging.model)
        try:
            position = await staging.catch_up(progress, strict=True)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._store.reset_read_model(staging.model)
            raise
        await self._store.replace_read_model(self.model, staging.model)
        self._position = position
        await self._load_columns()
        return position

    def page(
        self, after: str = "", limit: int = 50,
        where: Callable[[dict[str, Any]], bool] | None = None,
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` rows' columns (no ``state``) after task id ``after``, by task id,
        from memory (empty until the list has caught up once); with ``where``, only the rows
        it accepts (e.g. those that need a person)."""
        if self._columns is None:
            return []
        start = bisect_right(self._order, after)
        if where is None:
            return [self._columns[key] for key in self._order[start:start + limit]]
        rows: list[dict[str, Any]] = []
        for key in self._order[start:]:
            if len(rows) >= limit:
                break
            if where(self._columns[key]):
                rows.append(self._columns[key])
        return rows

    def columns(self, task_id: str) -> dict[str, Any] | None:
        """One task's columns (no ``state``) from memory, or ``None`` when the list has no
        such task (or has not caught up once)."""
        return (self._columns or {}).get(task_id)

    def count(self) -> int:
        """How many tasks the list has (from memory)."""
        return len(self._order)

    def statuses(self) -> dict[str, int]:
        """How many tasks are in each status (from memory)."""
        out: dict[str, int] = {}
        for columns in (self._columns or {}).values():
            out[columns["status"]] = out.get(columns["status"], 0) + 1
        return out

    async def rows(self) -> list[dict[str, Any]]:
        """Every row, by task id (each with its ``state``)."""
        out: list[dict[str, Any]] = []
        after = ""
        while True:
            page = await self._store.read_model_page(self.model, after=after, limit=_PAGE)
            out.extend(data for _, data in page)
            if len(page) < _PAGE:
                return out
            after = page[-1][0]

    async def get(self, task_id: UUID) -> dict[str, Any] | None:
        """The row of one task, or None."""
        return (await self._store.read_model_rows(self.model, [str(task_id)])).get(str(task_id))
