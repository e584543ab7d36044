"""Cost and token analytics as a read model: every ``UsageRecorded`` of the log as a row, summed
by time, project, task, agent type or model (``eventstore/usage.py`` keeps the rows).

:class:`Usage` folds the store's global log the way agent memory does: each page of the log is
one transaction with the model's position, so a crash or a second node applies nothing twice,
and :meth:`Usage.rebuild` replays the log from zero beside the tables and swaps the result in.
Besides the usage rows it keeps what analytics says about each task: its title and workflow
(``TaskCreated``), its project (``TaskLinked``), its budget (``BudgetSet``) and what its
finished children cost (``ChildFinished``, counted against a project's budget as the domain
counts it: ``TaskState.spent_usd``).

A usage row's *project* is its task's project: a child task's parent, a project itself, none for
a lone task. So a project's figures are its own agents' usage and its children's, as each was
recorded (not when the child finished, as its budget counts it).

:meth:`Usage.report` reads one snapshot of the tables: totals, groups, the most expensive runs
and budget use, all as of the same log position (``position`` in the report).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import anyio
from anyio.abc import TaskStatus

from ipa.domain import BudgetSet, ChildFinished, TaskCreated, TaskLinked, UsageRecorded
from ipa.eventstore import EventStore, PositionMoved, RecordedEvent, StoreError, StoreUnavailable
from ipa.eventstore.usage import (
    GROUPS,
    MODEL,
    TIME_GROUPS,
    TaskFacts,
    UsageTable,
    Used,
    dollars,
)

from .follow import TableModel, follow

log = logging.getLogger(__name__)

_PAGE = 1000
Progress = Callable[[int, int], None]

GROUP_KEYS = tuple(GROUPS)
"""What figures can be grouped by: ``day``, ``hour`` (UTC), ``project``, ``task``,
``agent_type``, ``model``."""
MAX_KEYS = 2
DEFAULT_DAYS = 30
"""The period when none is given: the 30 days up to now."""
MAX_DAYS = 3660
"""The longest period (about ten years)."""
MAX_HOUR_DAYS = 31
"""The longest period grouped by hour (744 hours)."""
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
MAX_TEXT = 64
"""The longest ``from``/``to``/``group_by`` text read."""

_FOLDED = (TaskCreated, TaskLinked, BudgetSet, ChildFinished, UsageRecorded)
_FOLDED_NAMES = frozenset(t.__name__ for t in _FOLDED)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class BadPeriod(ValueError):
    """A period or grouping that cannot be read (the message names which and why)."""


class UsageUnavailable(Exception):
    """Analytics cannot be read now (the message says why)."""


@dataclass(frozen=True)
class Period:
    """The times ``start`` ≤ t < ``end`` (UTC)."""

    start: datetime
    end: datetime

    @property
    def days(self) -> float:
        return (self.end - self.start).total_seconds() / 86400


def instant(text: str, name: str, *, end: bool = False) -> datetime:
    """``text`` (ISO 8601) as a UTC time: a date is the start of that UTC day, or, for the end
    of a period (``end``), the start of the next (a date ends a period with its whole day); a
    date-time without an offset is UTC's. :class:`BadPeriod` names ``name`` when malformed."""
    shown = text[:MAX_TEXT]
    example = "e.g. 2026-11-21 or 2026-11-21T09:00:00Z"
    if len(text) > MAX_TEXT or not text.isascii() or not text or text != text.strip():
        raise BadPeriod(f"{name}={shown!r} is not an ISO 8601 date or date-time ({example})")
    try:
        if _DATE.fullmatch(text):
            day = date.fromisoformat(text)
            at = datetime(day.year, day.month, day.day, tzinfo=UTC)
            if end:
                at += timedelta(days=1)
        else:
            at = datetime.fromisoformat(text)
            at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except (ValueError, OverflowError):
        raise BadPeriod(f"{name}={shown!r} is not an ISO 8601 date or date-time "
                        f"({example})") from None
    if at < EARLIEST:
        raise BadPeriod(f"{name}={shown!r} is before 1970: no usage was recorded then")
    return at


def period(start: str | None, end: str | None, now: datetime,
           keys: Sequence[str] = ()) -> Period:
    """The period ``from``=``start`` to ``to``=``end`` (see :func:`instant`); without ``to``,
    up to ``now``; without ``from``, the :data:`DEFAULT_DAYS` before ``to``. Refused
    (:class:`BadPeriod`): a malformed bound, ``to`` not after ``from``, a period longer than
    :data:`MAX_DAYS` days, or hours (``keys``) over more than :data:`MAX_HOUR_DAYS` days."""
    stop = now.astimezone(UTC) if end is None else instant(end, "to", end=True)
    if start is None:
        first = max(EARLIEST, stop - timedelta(days=DEFAULT_DAYS))
    else:
        first = instant(start, "from")
    if stop <= first:
        said = "now" if end is None else repr(end[:MAX_TEXT])
        raise BadPeriod(f"to ({said}: {stop.isoformat()}) is not after from "
                        f"({first.isoformat()}): an empty period")
    span = Period(first, stop)
    if span.days > MAX_DAYS:
        raise BadPeriod(f"from {first.date()} to {stop.date()} is {span.days:.0f} days; "
                        f"a period is at most {MAX_DAYS} days")
    if "hour" in keys and span.days > MAX_HOUR_DAYS:
        raise BadPeriod(f"group_by=hour covers at most {MAX_HOUR_DAYS} days and this period is "
                        f"{span.days:.1f}: group by day, or ask for a shorter period")
    return span


def group_keys(text: str | None, default: str = "day") -> tuple[str, ...]:
    """``group_by``: one key of :data:`GROUP_KEYS`, or two joined by a comma (at most one of
    ``day``/``hour``), e.g. ``day,model``. :class:`BadPeriod` names what is wrong."""
    if text is None:
        return (default,)
    keys = tuple(text.split(","))
    known = ", ".join(GROUP_KEYS)
    for key in keys:
        if key not in GROUPS:
            raise BadPeriod(f"group_by={text[:MAX_TEXT]!r}: {key[:MAX_TEXT]!r} is not one of "
                            f"{known}")
    if len(keys) > MAX_KEYS:
        raise BadPeriod(f"group_by={text[:MAX_TEXT]!r}: at most {MAX_KEYS} keys")
    if len(set(keys)) < len(keys):
        raise BadPeriod(f"group_by={text[:MAX_TEXT]!r}: a key named twice")
    if sum(key in TIME_GROUPS for key in keys) > 1:
        raise BadPeriod(f"group_by={text[:MAX_TEXT]!r}: day and hour do not go together")
    return keys


class Usage(TableModel):
    """The usage read model and its reports (see the module doc)."""

    name = "analytics"

    def __init__(self, store: EventStore, table: UsageTable, *, model: str = MODEL) -> None:
        super().__init__(store, table, model)

    @property
    def table(self) -> UsageTable:
        return self._table

    async def open(self) -> None:
        """Open the tables (made if missing) and read the saved position; a problem turns
        analytics off (:attr:`problem`) instead of raising."""
        try:
            await self._table.open()
            self._position = await self._table.position(self.model) or 0
        except StoreError as e:
            self._off(str(e))

    # -- folding ----------------------------------------------------------------------------

    async def catch_up(self, progress: Progress | None = None, *, strict: bool = False) -> int:
        """Apply every event after the saved position; return the new position. ``strict``
        (a rebuild): an event that cannot be read raises instead of being logged and left
        out, and so does any store error."""
        if self.problem is not None:
            return self._position
        head = await self._store.head_position() if progress else 0
        while True:
            page = await self._store.read_log(self._position, _PAGE)
            if not page:
                return self._position
            try:
                await self._apply(page, strict)
            except PositionMoved:  # another process applied it: follow
                self._position = await self._table.position(self.model) or 0
                self._moved()
                continue
            except StoreUnavailable:
                raise  # the database went away: again from the same page later
            except StoreError as e:
                if strict:
                    raise
                # A page PostgreSQL refuses would be refused again: analytics stops, said.
                self._off(f"analytics stopped after log position {self._position}: {e}")
                return self._position
            self._position = page[-1].position
            self._moved()
            if progress:
                progress(self._position, max(head, self._position))

    async def _apply(self, page: list[RecordedEvent], strict: bool) -> None:
        created: list[TaskFacts] = []
        parents: dict[str, str] = {}
        budgets: dict[str, Decimal | None] = {}
        children: dict[str, Decimal] = {}
        used: list[Used] = []
        for recorded in page:
            event = recorded.event
            if event is None:
                if recorded.type in _FOLDED_NAMES:
                    problem = (f"task {recorded.stream_id} version {recorded.version}: a "
                               f"{recorded.type} that cannot be read: {recorded.problem}")
                    if strict:
                        raise StoreError(problem)
                    log.error("analytics: %s; left out of the figures", problem)
                continue
            if not isinstance(event, _FOLDED):
                continue
            task = str(recorded.stream_id)
            if isinstance(event, UsageRecorded):
                used.append(Used(
                    recorded.position, event.timestamp, task, event.agent, event.model,
                    event.job_id, event.run_id, event.input_tokens, event.output_tokens,
                    event.cache_read_tokens, event.cache_write_tokens, dollars(event.cost_usd)))
            elif isinstance(event, TaskCreated):
                created.append(TaskFacts(task, event.title, event.workflow, event.timestamp))
            elif isinstance(event, TaskLinked):
                parents[task] = event.parent_id
            elif isinstance(event, BudgetSet):
                budgets[task] = None if event.limit_usd is None else dollars(event.limit_usd)
            else:
                children[task] = children.get(task, Decimal(0)) + dollars(event.cost_usd)
        async with self._table.page(self.model, self._position) as writes:
            # Tasks first: a usage row takes its project from its task's row.
            await writes.created(created)
            await writes.linked(parents)
            await writes.budgets(budgets)
            await writes.children_spent(children)
            await writes.used(used)
            writes.position = page[-1].position

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Open, catch up, then follow the live tail until cancelled; close on the way out."""
        try:
            await self.open()
            try:
                await self.catch_up()
            except StoreError as e:
                log.warning("analytics: %s; catching up with the next event", e)
            task_status.started()
            await follow(self._store, "analytics", lambda: self._position, self.catch_up)
        finally:
            with anyio.CancelScope(shield=True):
                await self.close()

    async def rebuild(self, progress: Progress | None = None) -> int:
        """Replay the whole log into new tables and swap them in; return the position. An
        event that cannot be read raises and leaves the current tables as they were."""
        await self._table.open()
        staging = Usage(self._store, self._table, model=f"{self.model}~rebuild")
        await self._table.create(staging.model)
        try:
            position = await staging.catch_up(progress, strict=True)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._table.drop(staging.model)
            raise
        await self._table.swap(self.model, staging.model)
        self.problem, self._position = None, position
        return position

    # -- reports ----------------------------------------------------------------------------

    async def report(self, span: Period, keys: Sequence[str], *, limit: int = 100,
                     top: int = 10, budgets: int = 50) -> dict[str, Any]:
        """The figures of ``span``, as JSON: ``totals``; ``groups`` by ``keys`` (at most
        ``limit``; ``more`` when there were more); the ``top`` most expensive runs; the
        ``budgets`` tasks that used the largest share of their budget (their whole spend, not
        only the period's); ``position``: the log position the figures include."""
        found = await self.overview(span, [tuple(keys)], limit=limit, top=top, budgets=budgets)
        by = found.pop("by")[",".join(keys)]
        return {**found, "group_by": list(keys), "groups": by["groups"], "more": by["more"]}

    async def overview(self, span: Period, groupings: Sequence[Sequence[str]], *,
                       limit: int = 100, top: int = 10, budgets: int = 50) -> dict[str, Any]:
        """:meth:`report` for several groupings at once, all from one snapshot: ``by`` maps
        each grouping (its keys joined by commas) to its ``groups`` and ``more``."""
        if self.problem is not None:
            raise UsageUnavailable(f"analytics is off: {self.problem}")
        async with self._table.reading(self.model) as reader:
            position = await reader.position()
            totals = await reader.totals(span.start, span.end)
            found = [(tuple(keys), await reader.groups(keys, span.start, span.end, limit + 1))
                     for keys in groupings]
            runs = await reader.top_runs(span.start, span.end, top) if top else []
            spent = await reader.budgets(budgets) if budgets else []
            named = {str(row[f"k{i}"]) for keys, rows in found for row in rows
                     for i, key in enumerate(keys)
                     if key in ("project", "task") and row[f"k{i}"] is not None}
            named |= {row[key] for row in runs for key in ("project_id", "task_id") if row[key]}
            titles = await reader.titles(sorted(named))
        return {
            "from": span.start.isoformat(), "to": span.end.isoformat(), "position": position,
            "totals": _sums(totals),
            "by": {",".join(keys): {"groups": [_group(row, keys, titles) for row in rows[:limit]],
                                    "more": len(rows) > limit}
                   for keys, rows in found},
            "top_runs": [_run(row, titles) for row in runs],
            "budgets": [_budget(row) for row in spent],
        }


def _sums(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "records": int(row["records"]), "runs": int(row["runs"]),
        **{name: int(row[name]) for name in ("input_tokens", "output_tokens",
                                             "cache_read_tokens", "cache_write_tokens")},
        "cost_usd": float(row["cost_usd"]),
    }


def _key(key: str, value: Any) -> str | None:
    if value is None:
        return None
    if key == "day":
        return value.astimezone(UTC).date().isoformat()
    if key == "hour":
        return value.astimezone(UTC).isoformat()
    return str(value)


def _group(row: dict[str, Any], keys: Sequence[str],
           titles: dict[str, dict[str, Any]]) -> dict[str, Any]:
    key = {name: _key(name, row[f"k{i}"]) for i, name in enumerate(keys)}
    shown = {name: (titles.get(value) or {}).get("title")
             for name, value in key.items() if name in ("project", "task") and value}
    return {"key": key, "titles": shown, **_sums(row)}


def _run(row: dict[str, Any], titles: dict[str, dict[str, Any]]) -> dict[str, Any]:
    project = row["project_id"]
    return {
        "task_id": row["task_id"], "title": (titles.get(row["task_id"]) or {}).get("title"),
        "run_id": row["run_id"],
        "job_id": row["job_id"], "agent_type": row["agent"], "model": row["model"],
        "at": row["at"].astimezone(UTC).isoformat(), "project_id": project,
        "project_title": (titles.get(project) or {}).get("title") if project else None,
        **_sums(row),
    }


def _budget(row: dict[str, Any]) -> dict[str, Any]:
    budget, spent = Decimal(row["budget_usd"]), Decimal(row["spent_usd"])
    return {
        "task_id": row["task_id"], "title": row["title"], "workflow": row["workflow"],
        "parent_id": row["parent_id"], "budget_usd": float(budget),
        "spent_usd": float(spent), "own_cost_usd": float(row["own_cost_usd"]),
        "children_cost_usd": float(row["children_cost_usd"]),
        "share": float(spent / budget) if budget else None,
    }
