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
from collections.abc import Callable, Mapping
from typing import Any
from uuid import UUID

import anyio
from anyio.abc import TaskStatus

from ipa.domain import (
    ArtifactRecorded,
    ContextPrepared,
    Job,
    ReflectionRecorded,
    TaskCreated,
    TaskEvent,
    TaskState,
    UsageRecorded,
    VerificationFailed,
    VerificationPassed,
    attention,
    evolve,
    running_jobs,
)
from ipa.eventstore import (
    CorruptEvent,
    EventStore,
    PositionConflict,
    RecordedEvent,
    StoreError,
    UnknownEventType,
)

from .follow import follow

log = logging.getLogger(__name__)

MODEL = "task_list"
_PAGE = 1000

Progress = Callable[[int, int], None]

RARV_STEP: dict[type[TaskEvent], str] = {
    ContextPrepared: "act",
    UsageRecorded: "reflect",
    ReflectionRecorded: "verify",
    ArtifactRecorded: "verify",
    VerificationPassed: "verify",
    VerificationFailed: "verify",
}
"""The RARV step a run is in after each of its records (see ``pods/rarv.py``): its context
prepared (Reason done), it acts; its usage recorded (the agent stopped), it reflects; its
reflection or artifact recorded, or its checks' outcome, it verifies (the job's own outcome
ends the run). A run starts in ``reason`` (a command job, which has no RARV cycle: ``act``)."""


def summary(state: TaskState, steps: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The list's columns for one task; ``attention`` is the kind of what it needs from a
    person (``ipa.domain.attention``), or ``None``; ``parent_id``, ``item_id`` and ``kind``
    link a project's child task to its project and backlog item (``None`` on other tasks).
    ``archived``: a person put the finished task away; ``forked_from`` / ``cloned_from``:
    ``{task_id, version}`` of the task it was forked or cloned from (``None``: neither).

    What its agents used: ``input_tokens``, ``output_tokens``, ``cost_usd`` and, per agent
    type, ``usage_by_agent`` (``{agent: {tokens, cost_usd}}``, tokens in + out); ``running``:
    each job with a run in flight (``job_id``, ``agent``, ``run_id``, ``started_at``, its RARV
    ``step`` from ``steps`` by run id, and the ``tokens`` recorded for that run so far)."""
    needed = attention(state)
    total = state.usage.total
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
        "archived": state.archived,
        "forked_from": None if state.forked_from is None else state.forked_from.to_dict(),
        "cloned_from": None if state.cloned_from is None else state.cloned_from.to_dict(),
        "input_tokens": total.input_tokens,
        "output_tokens": total.output_tokens,
        "cost_usd": total.cost_usd,
        "usage_by_agent": {
            agent: {"tokens": used.input_tokens + used.output_tokens, "cost_usd": used.cost_usd}
            for agent, used in state.usage.by_agent.items()
        },
        "running": [_running(state, job, (steps or {}).get(job.run_id or ""))
                    for job in running_jobs(state)],
    }


def _running(state: TaskState, job: Job, step: str | None) -> dict[str, Any]:
    used = state.usage.by_run.get(job.run_id or "")
    return {
        "job_id": job.job_id,
        "agent": job.agent,
        "run_id": job.run_id,
        "started_at": None if job.started_at is None else job.started_at.isoformat(),
        "step": step or _first_step(job),
        "tokens": 0 if used is None else used.input_tokens + used.output_tokens,
    }


def _first_step(job: Job) -> str:
    return "act" if "command" in job.spec else "reason"


def steps_after(row: dict[str, Any] | None, state: TaskState, event: object) -> dict[str, str]:
    """The RARV step of each run in flight once ``event`` is folded into ``state``: the row's
    step of it before, moved on by the event's type (:data:`RARV_STEP`); a new run starts at
    its first step."""
    before = {r["run_id"]: r["step"] for r in (row or {}).get("running") or []}
    steps = {job.run_id: before.get(job.run_id) or _first_step(job)
             for job in running_jobs(state) if job.run_id}
    step = RARV_STEP.get(type(event))
    if step is not None:
        run_id = getattr(event, "run_id", None)
        job = state.jobs.get(getattr(event, "job_id", None) or "")
        run_id = run_id or (job.run_id if job is not None else None)
        if run_id in steps:
            steps[run_id] = step
    return steps


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
    steps = steps_after(row, state, recorded.event)
    return {**summary(state, steps), "error": None, "state": state.to_dict()}


def _unsaved(saved: dict[str, Any] | None, key: str, reason: str) -> dict[str, Any]:
    """The row kept for a task whose new row PostgreSQL refused: the last saved one (or a
    stub for a task never saved), marked with why; it takes no more events."""
    error = f"the task list cannot save this task's row: {reason}"
    if saved is not None:
        return {**saved, "error": error}
    return {"id": key, "title": "", "workflow": "", "phase": "", "status": "failed",
            "version": 0, "created_at": "", "last_activity": "", "attention": None,
            "parent_id": None, "item_id": None, "kind": None, "archived": False,
            "forked_from": None, "cloned_from": None, "input_tokens": 0,
            "output_tokens": 0, "cost_usd": 0.0, "usage_by_agent": {}, "running": [],
            "error": error, "state": None}


def _source_of(row: dict[str, Any]) -> str | None:
    """The id of the task a row's task was forked or cloned from, if any."""
    origin = row.get("forked_from") or row.get("cloned_from")
    return origin["task_id"] if isinstance(origin, dict) else None


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
        self._children: dict[str, set[str]] = {}  # a project's id -> its child tasks' ids
        self._derived: dict[str, set[str]] = {}  # a task's id -> its forks' and clones' ids

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
        children: dict[str, set[str]] = {}
        derived: dict[str, set[str]] = {}
        for row in await self.rows():
            columns[row["id"]] = _columns(row)
            if row.get("parent_id"):
                children.setdefault(row["parent_id"], set()).add(row["id"])
            if source := _source_of(row):
                derived.setdefault(source, set()).add(row["id"])
        self._columns, self._order, self._children = columns, sorted(columns), children
        self._derived = derived

    def _set_columns(self, key: str, row: dict[str, Any]) -> None:
        if self._columns is None:
            return
        if key not in self._columns:
            insort(self._order, key)
        self._columns[key] = _columns(row)
        if row.get("parent_id"):  # a child names its project from its first event on
            self._children.setdefault(row["parent_id"], set()).add(key)
        if source := _source_of(row):  # a fork or a clone names its source from version 2 on
            self._derived.setdefault(source, set()).add(key)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Catch up, then follow the live tail until cancelled."""
        await self.catch_up()
        task_status.started()
        await follow(self._store, f"task list {self.model}", lambda: self._position,
                     self.catch_up)

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

    def children_of(self, task_id: str) -> list[dict[str, Any]]:
        """The columns of every child task of project ``task_id`` (those of retried items
        too), by task id, from memory."""
        columns = self._columns or {}
        return [columns[key] for key in sorted(self._children.get(task_id, ()))
                if key in columns]

    def derived_from(self, task_id: str) -> list[dict[str, Any]]:
        """The columns of every task forked or cloned from task ``task_id``, by task id, from
        memory."""
        columns = self._columns or {}
        return [columns[key] for key in sorted(self._derived.get(task_id, ()))
                if key in columns]

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
