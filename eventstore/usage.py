"""The usage read model's storage: one row per ``UsageRecorded``, and what analytics needs to
know of each task.

Two tables per model: ``ipa_usage`` holds one row per ``UsageRecorded`` (keyed by the event's
log position: its time, task, the task's project, agent type, model, job, run, tokens and
cost), ``ipa_usage_tasks`` one row per task (title, workflow, project, budget, what its
finished children cost: ``ChildFinished``). ``ipa_usage_state`` holds each model's log
position. A page of the log is applied in one transaction that first locks the model's state
row and checks the position it started from, so two processes (two nodes) never apply the same
page: the second finds the position moved and applies nothing. Every figure read is therefore a
sum of events, each counted once.

Costs are ``numeric``, written from the shortest decimal form of the event's float
(``repr``), so sums are exact decimal sums of what the events say; tokens are ``numeric`` too
(no sum or value can overflow). Text is stored as PostgreSQL's ``text`` can hold it (NUL and
lone surrogates replaced: :func:`storable`).

A rebuild writes tables beside these and swaps them in with the state row in one transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.sql import SQL, Composable, Identifier

from .database import ConnectionParams
from .memories import storable
from .side_tables import SideTables

TABLE = "ipa_usage"
TASKS_TABLE = "ipa_usage_tasks"
STATE_TABLE = "ipa_usage_state"
MODEL = "usage"

GROUPS: dict[str, str] = {
    "day": "date_trunc('day', u.at, 'UTC')",
    "hour": "date_trunc('hour', u.at, 'UTC')",
    "project": "u.project_id",
    "task": "u.task_id",
    "agent_type": "u.agent",
    "model": "u.model",
}
"""What each ``group_by`` key groups the rows by (days and hours are UTC's)."""
TIME_GROUPS = ("day", "hour")
WORK_MEM = "32MB"
"""Memory a report's sorts and hashes may take before spilling to disk (PostgreSQL's default,
4MB, spilled the groups of 50,000 rows)."""

_SUMS = ("count(*) AS records, count(DISTINCT u.run_first) AS runs, "
         "coalesce(sum(u.input_tokens), 0) AS input_tokens, "
         "coalesce(sum(u.output_tokens), 0) AS output_tokens, "
         "coalesce(sum(u.cache_read_tokens), 0) AS cache_read_tokens, "
         "coalesce(sum(u.cache_write_tokens), 0) AS cache_write_tokens, "
         "coalesce(sum(u.cost_usd), 0) AS cost_usd")
_IN_RANGE = "u.at >= %(start)s AND u.at < %(end)s"


@dataclass(frozen=True)
class Used:
    """A ``UsageRecorded`` to store: where it sits in the log and what it says."""

    position: int
    at: datetime
    task_id: str
    agent: str
    model: str
    job_id: str
    run_id: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: Decimal


@dataclass(frozen=True)
class TaskFacts:
    """A task as analytics names it (from its ``TaskCreated``)."""

    task_id: str
    title: str
    workflow: str
    created_at: datetime


def dollars(value: float | int) -> Decimal:
    """A cost as the exact decimal its float is written as (``0.1`` → ``Decimal('0.1')``)."""
    return Decimal(repr(float(value)))


class UsageTable(SideTables):
    """Rows of usage and the state of the model that keeps them (see the module doc)."""

    name = "usage"

    def __init__(self, params: ConnectionParams, schema: str = "public",
                 *, pool_size: int = 3) -> None:
        super().__init__(params, schema, pool_size=pool_size)

    def tables_of(self, model: str) -> tuple[str, str]:
        """The names of ``model``'s usage table and tasks table."""
        suffix = "" if model == MODEL else "_" + model.replace("~", "_")
        return f"{TABLE}{suffix}", f"{TASKS_TABLE}{suffix}"

    async def _create(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """The state table and the model's tables."""
        await conn.execute(SQL(
            "CREATE TABLE IF NOT EXISTS {} (model text PRIMARY KEY, "
            "position bigint NOT NULL DEFAULT 0)").format(self._t(STATE_TABLE)))
        async with conn.transaction():
            await self._create_tables(conn, MODEL, replace=False)
            await conn.execute(SQL(
                "INSERT INTO {} (model, position) VALUES (%s, 0) "
                "ON CONFLICT (model) DO NOTHING").format(self._t(STATE_TABLE)), (MODEL,))

    async def _create_tables(self, conn: psycopg.AsyncConnection[Any], model: str, *,
                             replace: bool) -> None:
        usage, tasks = self.tables_of(model)
        if replace:
            for table in (usage, tasks):
                await conn.execute(SQL("DROP TABLE IF EXISTS {}").format(self._t(table)))
        await conn.execute(SQL(
            "CREATE TABLE IF NOT EXISTS {} (position bigint PRIMARY KEY, at timestamptz NOT "
            "NULL, task_id uuid NOT NULL, project_id uuid, agent text NOT NULL, model text NOT "
            "NULL, job_id text NOT NULL, run_id text NOT NULL, run_first bigint NOT NULL, "
            "input_tokens numeric NOT NULL, "
            "output_tokens numeric NOT NULL, cache_read_tokens numeric NOT NULL, "
            "cache_write_tokens numeric NOT NULL, cost_usd numeric NOT NULL)"
        ).format(self._t(usage)))
        await conn.execute(SQL("CREATE INDEX IF NOT EXISTS {} ON {} (at)").format(
            Identifier(f"{usage}_at"), self._t(usage)))
        await conn.execute(SQL("CREATE INDEX IF NOT EXISTS {} ON {} (task_id, run_id)").format(
            Identifier(f"{usage}_run"), self._t(usage)))
        await conn.execute(SQL(
            "CREATE TABLE IF NOT EXISTS {} (task_id uuid PRIMARY KEY, title text NOT NULL, "
            "workflow text NOT NULL, created_at timestamptz NOT NULL, parent_id uuid, "
            "budget_usd numeric, children_cost_usd numeric NOT NULL DEFAULT 0)"
        ).format(self._t(tasks)))
        await conn.execute(SQL(
            "CREATE INDEX IF NOT EXISTS {} ON {} (task_id) WHERE budget_usd IS NOT NULL"
        ).format(Identifier(f"{tasks}_budget"), self._t(tasks)))

    # -- the model's tables -----------------------------------------------------------------

    async def position(self, model: str = MODEL) -> int | None:
        """The last log position ``model`` applied (``None``: it has no tables)."""
        async with self._conn() as conn:
            row = await (await conn.execute(SQL(
                "SELECT position FROM {} WHERE model = %s").format(self._t(STATE_TABLE)),
                (model,))).fetchone()
        return None if row is None else int(row["position"])

    async def create(self, model: str) -> None:
        """Make ``model``'s tables (empty) and state row (position 0), replacing any."""
        async with self._conn() as conn, conn.transaction():
            await self._create_tables(conn, model, replace=True)
            await conn.execute(SQL(
                "INSERT INTO {} (model, position) VALUES (%s, 0) ON CONFLICT (model) "
                "DO UPDATE SET position = 0").format(self._t(STATE_TABLE)), (model,))

    async def swap(self, model: str, staging: str) -> None:
        """Make ``staging``'s tables and state ``model``'s, in one transaction."""
        async with self._conn() as conn, conn.transaction():
            for table, staged in zip(self.tables_of(model), self.tables_of(staging),
                                     strict=True):
                await conn.execute(SQL("DROP TABLE IF EXISTS {}").format(self._t(table)))
                await conn.execute(SQL("ALTER TABLE {} RENAME TO {}").format(
                    self._t(staged), Identifier(table)))
                for suffix in ("pkey", "at", "run", "budget"):
                    await conn.execute(SQL("ALTER INDEX IF EXISTS {}.{} RENAME TO {}").format(
                        Identifier(self._schema), Identifier(f"{staged}_{suffix}"),
                        Identifier(f"{table}_{suffix}")))
            await conn.execute(SQL("DELETE FROM {} WHERE model = %s").format(
                self._t(STATE_TABLE)), (model,))
            await conn.execute(SQL("UPDATE {} SET model = %s WHERE model = %s").format(
                self._t(STATE_TABLE)), (model, staging))

    async def drop(self, model: str) -> None:
        """Forget ``model``'s tables and state (a failed rebuild's staging)."""
        async with self._conn() as conn, conn.transaction():
            for table in self.tables_of(model):
                await conn.execute(SQL("DROP TABLE IF EXISTS {}").format(self._t(table)))
            await conn.execute(SQL("DELETE FROM {} WHERE model = %s").format(
                self._t(STATE_TABLE)), (model,))

    # -- folding a page ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def page(self, model: str, start: int) -> AsyncIterator[UsagePage]:
        """A transaction that applies one page of the log after position ``start``;
        :class:`PositionMoved` when the model is no longer at ``start``."""
        async with self._held(STATE_TABLE, "model", model, start) as held:
            usage, tasks = self.tables_of(model)
            page = UsagePage(held.conn, self._t(usage), self._t(tasks))
            yield page
            held.position = page.position or start

    # -- reading ----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def reading(self, model: str = MODEL) -> AsyncIterator[UsageReader]:
        """A read-only snapshot of ``model``: every query through the reader sees the same
        applied events, the ones up to :meth:`UsageReader.position`."""
        async with self._conn() as conn, conn.transaction():
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            await conn.execute(f"SET LOCAL work_mem = '{WORK_MEM}'")
            usage, tasks = self.tables_of(model)
            yield UsageReader(conn, model, self._t(STATE_TABLE), self._t(usage), self._t(tasks))

    async def count(self, model: str = MODEL) -> int:
        """How many usage rows ``model`` has."""
        async with self.reading(model) as reader:
            [row] = await reader.rows(SQL("SELECT count(*) AS n FROM {}").format(
                reader.usage), {})
        return int(row["n"])


class UsageReader:
    """Queries of one snapshot of a usage model (:meth:`UsageTable.reading`)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], model: str, state: SQL, usage: SQL,
                 tasks: SQL) -> None:
        self._conn = conn
        self._model = model
        self._state = state
        self.usage = usage
        self.tasks = tasks

    async def rows(self, query: Composable, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        cursor = await self._conn.execute(query, params)
        return await cursor.fetchall()

    async def position(self) -> int:
        """The last log position the snapshot's figures include."""
        rows = await self.rows(SQL("SELECT position FROM {} WHERE model = %(model)s").format(
            self._state), {"model": self._model})
        return int(rows[0]["position"]) if rows else 0

    async def groups(self, keys: Sequence[str], start: datetime, end: datetime,
                     limit: int) -> list[dict[str, Any]]:
        """The sums of the rows at ``start`` ≤ time < ``end`` per value of ``keys`` (names of
        :data:`GROUPS`), each row with ``k0`` (``k1``...) and the sums; by time when a key is
        one, else by cost (highest first); at most ``limit`` rows."""
        columns = ", ".join(f"{GROUPS[key]} AS k{i}" for i, key in enumerate(keys))
        by = ", ".join(str(i + 1) for i in range(len(keys)))
        times = [f"k{i}" for i, key in enumerate(keys) if key in TIME_GROUPS]
        others = [f"k{i} NULLS LAST" for i, key in enumerate(keys) if key not in TIME_GROUPS]
        order = ", ".join([*times, "cost_usd DESC", *others])
        return await self.rows(SQL(
            "SELECT " + columns + ", " + _SUMS + " FROM {} u WHERE " + _IN_RANGE +
            " GROUP BY " + by + " ORDER BY " + order + " LIMIT %(limit)s").format(self.usage),
            {"start": start, "end": end, "limit": limit})

    async def totals(self, start: datetime, end: datetime) -> dict[str, Any]:
        """The sums of every row at ``start`` ≤ time < ``end``."""
        [row] = await self.rows(SQL("SELECT " + _SUMS + " FROM {} u WHERE " + _IN_RANGE).format(
            self.usage), {"start": start, "end": end})
        return row

    async def top_runs(self, start: datetime, end: datetime, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` runs that cost most at ``start`` ≤ time < ``end`` (each run's rows
        summed: a run's usage can be recorded more than once). The runs are chosen by cost
        alone first: summing every column of every run of the period took 3× as long."""
        return await self.rows(SQL(
            "WITH top AS (SELECT u.run_first, sum(u.cost_usd) AS cost, min(u.at) AS first "
            "FROM {} u WHERE " + _IN_RANGE + " GROUP BY u.run_first ORDER BY cost DESC, first, "
            "u.run_first LIMIT %(limit)s) "
            "SELECT min(u.task_id::text) AS task_id, min(u.run_id) AS run_id, "
            "min(u.job_id) AS job_id, min(u.agent) AS agent, min(u.model) AS model, "
            "min(u.at) AS at, min(u.project_id::text) AS project_id, "
            + _SUMS.replace("count(DISTINCT u.run_first)", "1") + " FROM {} u JOIN top "
            "ON top.run_first = u.run_first WHERE " + _IN_RANGE + " GROUP BY u.run_first "
            "ORDER BY cost_usd DESC, at, u.run_first").format(self.usage, self.usage),
            {"start": start, "end": end, "limit": limit})

    async def budgets(self, limit: int) -> list[dict[str, Any]]:
        """The ``limit`` tasks with a budget that used most of it: their own agents' cost
        (every row, whatever its time) and their finished children's."""
        return await self.rows(SQL(
            "SELECT t.task_id::text AS task_id, t.title, t.workflow, "
            "t.parent_id::text AS parent_id, t.budget_usd, t.children_cost_usd, "
            "own.cost_usd AS own_cost_usd, own.cost_usd + t.children_cost_usd AS spent_usd "
            "FROM {} t CROSS JOIN LATERAL (SELECT coalesce(sum(cost_usd), 0) AS cost_usd "
            "FROM {} WHERE task_id = t.task_id) own WHERE t.budget_usd IS NOT NULL "
            "ORDER BY (own.cost_usd + t.children_cost_usd) / t.budget_usd DESC, t.task_id "
            "LIMIT %(limit)s").format(self.tasks, self.usage), {"limit": limit})

    async def titles(self, task_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``{task id: {title, workflow, parent_id}}`` of the tasks named that it knows."""
        if not task_ids:
            return {}
        rows = await self.rows(SQL(
            "SELECT task_id::text AS task_id, title, workflow, parent_id::text AS parent_id "
            "FROM {} WHERE task_id = ANY(%(ids)s::uuid[])").format(self.tasks),
            {"ids": list(task_ids)})
        return {row["task_id"]: row for row in rows}


class UsagePage:
    """The writes of one page of the log, in its transaction (:meth:`UsageTable.page`).
    Call them in this order: tasks first, so the usage rows find their task's project."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], usage: SQL, tasks: SQL) -> None:
        self._conn = conn
        self._usage = usage
        self._tasks = tasks
        self.position = 0

    async def _many(self, query: Composable, rows: Sequence[Any]) -> None:
        if rows:
            async with self._conn.cursor() as cursor:
                await cursor.executemany(query, rows)

    async def created(self, tasks: Sequence[TaskFacts]) -> None:
        await self._many(SQL(
            "INSERT INTO {} (task_id, title, workflow, created_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (task_id) DO NOTHING").format(self._tasks),
            [(t.task_id, storable(t.title), storable(t.workflow), t.created_at) for t in tasks])

    async def linked(self, parents: Mapping[str, str]) -> None:
        """Each task's project (``TaskLinked``)."""
        await self._many(SQL("UPDATE {} SET parent_id = %s WHERE task_id = %s").format(
            self._tasks), [(parent, task) for task, parent in parents.items()])

    async def budgets(self, limits: Mapping[str, Decimal | None]) -> None:
        """Each task's budget now (``BudgetSet``; ``None``: none)."""
        await self._many(SQL("UPDATE {} SET budget_usd = %s WHERE task_id = %s").format(
            self._tasks), [(limit, task) for task, limit in limits.items()])

    async def children_spent(self, costs: Mapping[str, Decimal]) -> None:
        """What more each project's finished children cost (``ChildFinished``)."""
        await self._many(SQL(
            "UPDATE {} SET children_cost_usd = children_cost_usd + %s WHERE task_id = %s"
        ).format(self._tasks), [(cost, task) for task, cost in costs.items()])

    async def used(self, rows: Sequence[Used]) -> None:
        """Usage rows, each with its task's project (its parent, or itself if a project) and
        its run's number, ``run_first``: the position of the run's first row, so runs are
        counted as distinct integers (a distinct count of task and run id sorted 7× slower)."""
        await self._many(SQL(
            "INSERT INTO {} (position, at, task_id, project_id, agent, model, job_id, run_id, "
            "run_first, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
            "cost_usd) VALUES (%(position)s, %(at)s, %(task)s, (SELECT coalesce(t.parent_id, "
            "CASE WHEN t.workflow = 'project' THEN t.task_id END) FROM {} t WHERE t.task_id = "
            "%(task)s), %(agent)s, %(model)s, %(job)s, %(run)s, coalesce((SELECT r.run_first "
            "FROM {} r WHERE r.task_id = %(task)s AND r.run_id = %(run)s LIMIT 1), "
            "%(position)s), %(input)s, %(output)s, %(cache_read)s, %(cache_write)s, %(cost)s) "
            "ON CONFLICT (position) DO NOTHING").format(self._usage, self._tasks, self._usage),
            [{"position": r.position, "at": r.at, "task": r.task_id, "agent": storable(r.agent),
              "model": storable(r.model), "job": storable(r.job_id), "run": storable(r.run_id),
              "input": r.input_tokens, "output": r.output_tokens,
              "cache_read": r.cache_read_tokens, "cache_write": r.cache_write_tokens,
              "cost": r.cost_usd} for r in rows])
