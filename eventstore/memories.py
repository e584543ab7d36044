"""The memory read model's storage: memory rows with their embedding in a pgvector column.

One table holds the memories (``ipa_memories``; ``embedding vector(N)`` with an HNSW index on
cosine distance and a b-tree on ``scope``), one row per model holds what it has applied
(``ipa_memory_state``: the log position, and the embedder that made the vectors, whose size
is the column's). A page of the log is folded in one transaction that first locks that row and
checks the position it started from, so two processes folding the same page (two nodes) cannot
both apply it: the second finds the position moved and folds nothing.

PostgreSQL's ``text`` holds no NUL and no lone surrogate; a memory's text is stored with
those replaced by U+FFFD (its event keeps the text exactly as recorded).

A rebuild (or a new embedder's vectors) is written into a table beside this one and swapped in
with its state row in one transaction; readers see the old memories or the new ones.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector_async
from psycopg.sql import SQL, Identifier, Literal

from ipa.domain import clean_text

from .database import ConnectionParams
from .errors import one_line
from .side_tables import SideTables

TABLE = "ipa_memories"
STATE_TABLE = "ipa_memory_state"
MODEL = "memories"

COLUMNS = ("id, scope, kind, text, importance, pinned, created_at, last_seen_at, last_used_at, "
           "uses, seen, task_id, job_id, run_id, merged_ids, position")


EXACT_UNDER = 5000
"""A scope with fewer rows is searched by reading them all (exact, and faster than walking an
index built mostly of other scopes' rows, where a filtered HNSW scan gives up before it found
them: 17% of a task's own memories at 100,000 rows)."""

SIZES_TTL = 30.0

HNSW = {"m": 16, "ef_construction": 200}
"""How each HNSW index is built. A graph built with a candidate list of 200 rather than
pgvector's default 64 reaches the same recall with a shorter search (:data:`EF_SEARCH`): at
100,000 memories (``bench/memory.py``) recall@10 0.96 takes ef_search 120 and ~3,050 index
pages read, against 200 and ~4,450 on the default graph (140 and ~3,400 at 128; 110 and
~2,850 at 256); inserts are ~1.5x slower. A larger ``m`` needs fewer pages read, but its index
of 100,000 256-float vectors outgrows PostgreSQL's default 128 MB of shared buffers (156 MB at
m = 24 against 130 MB) and was slower."""

EF_SEARCH = 120
"""The HNSW candidate list of a search (set on each of the pool's connections): recall@10 0.96
against an exact scan of 100,000 memories on the graph :data:`HNSW` builds."""

FAMILIES = ("repo", "project", "task")
"""The kinds of scope. Each has an HNSW index of its own rows only (partial: ``WHERE scope LIKE
'repo:%'``), so a search of a repository's memories walks a graph of repositories' memories, not
one crowded with the tasks' episodes its query is nearest (a filtered walk of one index over all
rows took 65 ms at p99 and found 0.6 of the ten nearest at 100,000 memories; 7 ms and 0.94 on the
repository's own index). A query names its family's clause literally, as the index does, for the
planner to see the index fits."""

_SCOPE_UNINDEXED = "(scope || '')"
"""The scope, as the nearest-neighbour queries filter on it: an expression no b-tree serves, so
the planner walks the HNSW index with the filter (``hnsw.iterative_scan``) instead of reading a
whole scope through its b-tree and sorting it by distance, which it picked for a scope holding
most of the table (an exact scan: 100 ms at 100,000 rows, and quadratic for the fold). The
queries are not prepared either: a generic plan, blind to the vector, picked the same."""


@dataclass(frozen=True)
class Recorded:
    """A ``MemoryRecorded`` to apply: its row's fields and its vector."""

    id: str
    scope: str
    kind: str
    text: str
    importance: float
    at: datetime
    task_id: str
    job_id: str
    run_id: str
    position: int
    vector: np.ndarray


def storable(text: str) -> str:
    """``text`` as PostgreSQL's ``text`` can hold it (see the module doc)."""
    return clean_text(text.replace("\x00", "\ufffd") if "\x00" in text else text)


class MemoryTable(SideTables):
    """Rows of memories and the state of the model that keeps them (see the module doc)."""

    name = "memory"

    def __init__(self, params: ConnectionParams, schema: str = "public",
                 *, pool_size: int = 4) -> None:
        super().__init__(params, schema, pool_size=pool_size, configure=self._configure)
        self._sized: dict[tuple[str, str], tuple[float, int]] = {}

    @staticmethod
    async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
        await register_vector_async(conn)
        await conn.set_autocommit(True)
        # How a search walks an HNSW index (:meth:`nearest`): set once for the connection,
        # not in a transaction of each search (three round trips more: ~1.5 ms of 9).
        await conn.execute("SELECT set_config('hnsw.iterative_scan', 'strict_order', false), "
                           "set_config('hnsw.ef_search', %s, false)", (str(EF_SEARCH),))

    async def _create(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """The extension and the state table (each model's table comes with :meth:`create`)."""
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        await conn.execute(SQL(
            "CREATE TABLE IF NOT EXISTS {} (model text PRIMARY KEY, "
            "position bigint NOT NULL DEFAULT 0, embedder text NOT NULL, "
            "dimensions int NOT NULL)").format(self._t(STATE_TABLE)))

    def _unreachable(self, error: Exception) -> str:
        if isinstance(error, psycopg.errors.FeatureNotSupported):  # no pgvector there
            return (f"memory: the database at {self._describe} has no pgvector extension: "
                    f"{one_line(error)}")
        return super()._unreachable(error)

    # -- the model's table ------------------------------------------------------------------

    def table_of(self, model: str) -> str:
        return TABLE if model == MODEL else f"{TABLE}_{model.replace('~', '_')}"

    async def state(self, model: str = MODEL) -> tuple[int, str, int] | None:
        """``(position, embedder, dimensions)`` of ``model``, or ``None`` before its first."""
        async with self._conn() as conn:
            row = await (await conn.execute(SQL(
                "SELECT position, embedder, dimensions FROM {} WHERE model = %s"
            ).format(self._t(STATE_TABLE)), (model,))).fetchone()
        return None if row is None else (row["position"], row["embedder"], row["dimensions"])

    async def create(self, model: str, embedder: str, dimensions: int, *,
                     index: bool = True) -> None:
        """Make ``model``'s table (empty) and state row (position 0) for ``embedder``'s
        vectors, replacing any it had; ``index``: with the HNSW index now (a bulk load adds
        it after: :meth:`add_index`)."""
        table = self.table_of(model)
        async with self._conn() as conn, conn.transaction():
            await conn.execute(SQL("DROP TABLE IF EXISTS {}").format(self._t(table)))
            await conn.execute(SQL(
                "CREATE TABLE {} (id uuid PRIMARY KEY, scope text NOT NULL, kind text NOT NULL, "
                "text text NOT NULL, importance real NOT NULL, pinned boolean NOT NULL "
                "DEFAULT false, created_at timestamptz NOT NULL, last_seen_at timestamptz "
                "NOT NULL, last_used_at timestamptz, uses integer NOT NULL DEFAULT 0, seen "
                "integer NOT NULL DEFAULT 1, task_id uuid, job_id text NOT NULL, run_id text "
                "NOT NULL, merged_ids uuid[] NOT NULL DEFAULT '{{}}', position bigint NOT NULL, "
                "embedding vector({}) NOT NULL)"
            ).format(self._t(table), Literal(int(dimensions))))
            await conn.execute(SQL("CREATE INDEX {} ON {} (scope)").format(
                Identifier(f"{table}_scope"), self._t(table)))
            await conn.execute(SQL("CREATE INDEX {} ON {} (scope) WHERE pinned").format(
                Identifier(f"{table}_pinned"), self._t(table)))
            await conn.execute(SQL("CREATE INDEX {} ON {} USING gin (merged_ids)").format(
                Identifier(f"{table}_merged"), self._t(table)))
            if index:
                await self._add_index(conn, table)
            await conn.execute(SQL(
                "INSERT INTO {} (model, position, embedder, dimensions) VALUES (%s, 0, %s, %s) "
                "ON CONFLICT (model) DO UPDATE SET position = 0, embedder = EXCLUDED.embedder, "
                "dimensions = EXCLUDED.dimensions").format(self._t(STATE_TABLE)),
                (model, embedder, dimensions))

    async def _add_index(self, conn: psycopg.AsyncConnection[Any], table: str,
                         suffix: str = "") -> None:
        for family in FAMILIES:
            await conn.execute(SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_cosine_ops) "
                "WITH (" + _HNSW_WITH + ") WHERE " + _family(family, with_params=False)
            ).format(Identifier(f"{table}_embedding_{family}{suffix}"), self._t(table)))

    async def add_index(self, model: str) -> None:
        """Build ``model``'s HNSW indexes (after a bulk load), dropping the single index over
        every scope of tables made before :data:`FAMILIES` had their own."""
        table = self.table_of(model)
        async with self._conn() as conn:
            await conn.execute("SET maintenance_work_mem = '256MB'")
            await self._add_index(conn, table)
            await conn.execute(SQL("DROP INDEX IF EXISTS {}.{}").format(
                Identifier(self._schema), Identifier(f"{table}_embedding")))

    async def upgrade_index(self, model: str) -> None:
        """Give a table made before its indexes were built as they are now (one index over
        every scope, before :data:`FAMILIES` had one each; or a graph built otherwise than
        :data:`HNSW`) its indexes, built again from its rows (a table made since has them:
        nothing to do). The new indexes are built beside the old ones, which are swapped out
        at the end: reads go on meanwhile, writes wait. Two processes upgrading at once take
        turns; the second finds it done."""
        table = self.table_of(model)
        async with self._conn() as conn:
            if await self._indexed(conn, table):
                return
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                                   (f"{self._schema}.{table}.embedding",))
                if await self._indexed(conn, table):
                    return
                await conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
                await self._add_index(conn, table, "_new")
                for old in ("", *(f"_{family}" for family in FAMILIES)):
                    await conn.execute(SQL("DROP INDEX IF EXISTS {}.{}").format(
                        Identifier(self._schema), Identifier(f"{table}_embedding{old}")))
                for family in FAMILIES:
                    await conn.execute(SQL("ALTER INDEX {}.{} RENAME TO {}").format(
                        Identifier(self._schema), Identifier(f"{table}_embedding_{family}_new"),
                        Identifier(f"{table}_embedding_{family}")))

    async def _indexed(self, conn: psycopg.AsyncConnection[Any], table: str) -> bool:
        """Whether ``table`` has its family's indexes built as :data:`HNSW` says, and not the
        one index over every scope."""
        cursor = await conn.execute(
            "SELECT c.relname, c.reloptions FROM pg_class c JOIN pg_namespace n ON "
            "n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = ANY(%s)",
            (self._schema, [f"{table}_embedding{suffix}" for suffix in
                            ("", *(f"_{family}" for family in FAMILIES))]))
        options = {r["relname"]: set(r["reloptions"] or ()) for r in await cursor.fetchall()}
        wanted = {f"{key}={value}" for key, value in HNSW.items()}
        return f"{table}_embedding" not in options and all(
            options.get(f"{table}_embedding_{family}") == wanted for family in FAMILIES)

    async def swap(self, model: str, staging: str) -> None:
        """Make ``staging``'s table and state ``model``'s, in one transaction."""
        table, staged = self.table_of(model), self.table_of(staging)
        async with self._conn() as conn, conn.transaction():
            await conn.execute(SQL("DROP TABLE IF EXISTS {}").format(self._t(table)))
            await conn.execute(SQL("ALTER TABLE {} RENAME TO {}").format(
                self._t(staged), Identifier(table)))
            for suffix in ("pkey", "scope", "pinned", "merged",
                           *(f"embedding_{family}" for family in FAMILIES)):
                await conn.execute(SQL("ALTER INDEX IF EXISTS {}.{} RENAME TO {}").format(
                    Identifier(self._schema), Identifier(f"{staged}_{suffix}"),
                    Identifier(f"{table}_{suffix}")))
            await conn.execute(SQL("DELETE FROM {} WHERE model = %s").format(
                self._t(STATE_TABLE)), (model,))
            await conn.execute(SQL("UPDATE {} SET model = %s WHERE model = %s").format(
                self._t(STATE_TABLE)), (model, staging))

    async def drop(self, model: str) -> None:
        """Forget ``model``'s table and state (a failed rebuild's staging)."""
        async with self._conn() as conn, conn.transaction():
            await conn.execute(SQL("DROP TABLE IF EXISTS {}").format(
                self._t(self.table_of(model))))
            await conn.execute(SQL("DELETE FROM {} WHERE model = %s").format(
                self._t(STATE_TABLE)), (model,))

    # -- folding a page ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def page(self, model: str, start: int) -> AsyncIterator[Page]:
        """A transaction that applies one page of the log after position ``start``;
        :class:`PositionMoved` when the model is no longer at ``start``."""
        async with self._held(STATE_TABLE, "model", model, start) as held:
            page = Page(held.conn, self._t(self.table_of(model)))
            yield page
            held.position = page.position or start

    # -- reading ----------------------------------------------------------------------------

    async def nearest(self, model: str, vector: np.ndarray, scopes: Sequence[str] | None,
                      limit: int, *, exact: bool = False,
                      ef_search: int | None = None) -> list[dict[str, Any]]:
        """Up to ``limit`` rows of ``scopes`` (``None``: of every scope) nearest ``vector``
        (``similarity`` = cosine), best first: the scopes of fewer than :data:`EXACT_UNDER`
        rows by an exact scan of their rows, the others through their family's HNSW index
        with a candidate list of ``ef_search`` (default :data:`EF_SEARCH`), at least twice
        ``limit`` (``exact``: all by scans, for checking the indexes)."""
        table = self._t(self.table_of(model))
        ef_search = max(ef_search or EF_SEARCH, limit * 2)
        async with self._conn() as conn:
            if exact:
                small, large = scopes, []
            elif scopes is None:
                small, large = [], None
            else:
                sizes = await self._sizes(conn, model, table, scopes)
                large = [s for s in scopes
                         if sizes.get(s, 0) >= EXACT_UNDER and _family_of(s) is not None]
                small = [s for s in scopes if s not in large]
            rows = []
            if small is None or small:
                cursor = await conn.execute(SQL(
                    "SELECT * FROM (SELECT " + COLUMNS + ", 1 - (embedding <=> %s) AS similarity "
                    "FROM {} WHERE %s::text[] IS NULL OR scope = ANY(%s) OFFSET 0) scanned "
                    "ORDER BY similarity DESC LIMIT %s").format(table),
                    (vector, small, small, limit), prepare=False)
                rows += await cursor.fetchall()
            if large is None or large:
                # The connection searches at EF_SEARCH (``_configure``); another candidate
                # list is set for the index walks alone, in a transaction of their own.
                async with (conn.transaction() if ef_search != EF_SEARCH
                            else contextlib.nullcontext()):
                    if ef_search != EF_SEARCH:
                        await conn.execute(SQL("SET LOCAL hnsw.ef_search = {}").format(
                            Literal(ef_search)))
                    for family, group in _by_family(large).items():  # each on its own index
                        cursor = await conn.execute(SQL(
                            "SELECT " + COLUMNS + ", 1 - (embedding <=> %s) AS similarity "
                            "FROM {} WHERE " + _family(family) + " AND (%s::text[] IS NULL OR "
                            + _SCOPE_UNINDEXED + " = ANY(%s)) ORDER BY embedding <=> %s LIMIT %s"
                        ).format(table), (vector, group, group, vector, limit), prepare=False)
                        rows += await cursor.fetchall()
        rows.sort(key=lambda r: -r["similarity"])
        return [_row(r) for r in rows[:limit]]

    async def _sizes(self, conn: psycopg.AsyncConnection[Any], model: str, table: SQL,
                     scopes: Sequence[str]) -> dict[str, int]:
        """:func:`_sizes`, remembered for :data:`SIZES_TTL` seconds (a scope's size only
        chooses how it is searched)."""
        now = time.monotonic()
        known = {s: self._sized[(model, s)][1] for s in scopes
                 if (model, s) in self._sized and now - self._sized[(model, s)][0] < SIZES_TTL}
        missing = [s for s in scopes if s not in known]
        if missing:
            for scope, n in (await _sizes(conn, table, missing)).items():
                self._sized[(model, scope)] = (now, n)
                known[scope] = n
        return known

    async def get(self, model: str, memory_id: str) -> dict[str, Any] | None:
        """The row of ``memory_id`` (or of a memory merged into it), or ``None``."""
        async with self._conn() as conn:
            row = await (await conn.execute(SQL(
                "SELECT " + COLUMNS + " FROM {} WHERE id = %s OR merged_ids @> ARRAY[%s::uuid] "
                "LIMIT 1").format(self._t(self.table_of(model))),
                (memory_id, memory_id))).fetchone()
        return None if row is None else _row(row)

    async def rows(self, model: str, *, scopes: Sequence[str] | None = None,
                   ids: Sequence[str] | None = None, kind: str | None = None,
                   pinned: bool | None = None, after: str = "",
                   limit: int = 100) -> list[dict[str, Any]]:
        """Rows by id (after ``after``), of ``scopes`` / ``ids`` / ``kind`` / ``pinned`` when
        given."""
        where, params = ["id::text > %s"], [after]
        if pinned is not None:
            where.append("pinned = %s")
            params.append(pinned)
        if scopes is not None:
            where.append("scope = ANY(%s)")
            params.append(list(scopes))
        if ids is not None:
            where.append("id = ANY(%s::uuid[])")
            params.append(list(ids))
        if kind is not None:
            where.append("kind = %s")
            params.append(kind)
        async with self._conn() as conn:
            cursor = await conn.execute(SQL(
                "SELECT " + COLUMNS + " FROM {} WHERE " + " AND ".join(where) +
                " ORDER BY id::text LIMIT %s").format(self._t(self.table_of(model))),
                (*params, limit), prepare=False)  # planned for its values: the pinned index
            return [_row(r) for r in await cursor.fetchall()]

    async def counts(self, model: str, scopes: Sequence[str]) -> dict[str, int]:
        async with self._conn() as conn:
            cursor = await conn.execute(SQL(
                "SELECT scope, count(*) AS n FROM {} WHERE scope = ANY(%s) GROUP BY scope"
            ).format(self._t(self.table_of(model))), (list(scopes),))
            return {r["scope"]: r["n"] for r in await cursor.fetchall()}

    async def count(self, model: str) -> int:
        async with self._conn() as conn:
            row = await (await conn.execute(SQL("SELECT count(*) AS n FROM {}").format(
                self._t(self.table_of(model))))).fetchone()
        return int(row["n"]) if row else 0

    async def least_useful(self, model: str, scope: str, count: int, half_life_days: float,
                           now: datetime) -> list[str]:
        """The ids of ``scope``'s ``count`` least useful memories: not pinned, lowest
        importance once decayed (halved every ``half_life_days`` without use), least used,
        oldest."""
        async with self._conn() as conn:
            cursor = await conn.execute(SQL(
                "SELECT id FROM {} WHERE scope = %s AND NOT pinned ORDER BY importance * "
                "power(0.5, extract(epoch FROM (%s - greatest(last_seen_at, "
                "coalesce(last_used_at, last_seen_at)))) / 86400.0 / %s) ASC, uses ASC, "
                "last_seen_at ASC LIMIT %s").format(self._t(self.table_of(model))),
                (scope, now, half_life_days, count))
            return [str(r["id"]) for r in await cursor.fetchall()]

    async def all_texts(self, model: str, *, after: str = "",
                        limit: int = 1000) -> list[tuple[str, str]]:
        """``(id, text)`` of every row after ``after`` by id (for re-embedding)."""
        async with self._conn() as conn:
            cursor = await conn.execute(SQL(
                "SELECT id::text AS id, text FROM {} WHERE id::text > %s ORDER BY id::text "
                "LIMIT %s").format(self._t(self.table_of(model))), (after, limit))
            return [(r["id"], r["text"]) for r in await cursor.fetchall()]

    async def copy_rows(self, source: str, target: str, vectors: dict[str, np.ndarray]) -> None:
        """Copy rows ``vectors`` names from ``source``'s table to ``target``'s, each with its
        new vector (re-embedding)."""
        columns = ", ".join(f"s.{c.strip()}" for c in COLUMNS.split(","))
        async with self._conn() as conn, conn.transaction():
            await conn.execute(SQL(
                "INSERT INTO {} (" + COLUMNS + ", embedding) SELECT " + columns +
                ", v.embedding FROM {} s JOIN unnest(%s::uuid[], %s::vector[]) AS "
                "v(id, embedding) ON s.id = v.id").format(
                    self._t(self.table_of(target)), self._t(self.table_of(source))),
                (list(vectors), list(vectors.values())))

    async def set_position(self, model: str, position: int) -> None:
        async with self._conn() as conn:
            await conn.execute(SQL("UPDATE {} SET position = %s WHERE model = %s").format(
                self._t(STATE_TABLE)), (position, model))


class Page:
    """The writes of one page of the log, in its transaction (:meth:`MemoryTable.page`)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], table: SQL) -> None:
        self._conn = conn
        self._table = table
        self.position = 0
        self.scopes: set[str] = set()
        """The scopes that gained a memory in this page (for the scope cap)."""

    async def duplicates(self, memories: Sequence[Recorded]) -> list[tuple[str, float] | None]:
        """For each memory, the nearest row of its scope already stored, with its cosine
        similarity (``None``: its scope has none)."""
        if not memories:
            return []
        sizes = await _sizes(self._conn, self._table, [m.scope for m in memories])
        await self._conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
        # A repeat is all but the same vector: a short candidate list finds it, at a fraction
        # of the cost of a search's (the lookup runs once per memory folded).
        await self._conn.execute("SET LOCAL hnsw.ef_search = 16")
        rows = []
        # A small scope's rows are read; a large one's, walked on its family's index.
        groups: dict[str | None, list[int]] = {}
        for i, m in enumerate(memories):
            large = sizes.get(m.scope, 0) >= EXACT_UNDER
            groups.setdefault(_family_of(m.scope) if large else None, []).append(i)
        for family, chosen in groups.items():
            inner = ("SELECT id, embedding FROM {} WHERE scope = n.scope OFFSET 0"
                     if family is None else "SELECT id, embedding FROM {} WHERE "
                     + _family(family) + " AND " + _SCOPE_UNINDEXED + " = n.scope")
            cursor = await self._conn.execute(SQL(
                "SELECT n.i, m.id::text AS id, 1 - (m.embedding <=> n.v) AS similarity FROM "
                "unnest(%s::int[], %s::vector[], %s::text[]) AS n(i, v, scope) CROSS JOIN "
                "LATERAL (SELECT id, embedding FROM (" + inner + ") c "
                "ORDER BY embedding <=> n.v LIMIT 1) m").format(self._table),
                (chosen, [memories[i].vector for i in chosen],
                 [memories[i].scope for i in chosen]), prepare=False)
            rows += await cursor.fetchall()
        found: list[tuple[str, float] | None] = [None] * len(memories)
        for row in rows:
            found[row["i"]] = (row["id"], float(row["similarity"]))
        return found

    async def insert(self, memories: Sequence[Recorded]) -> None:
        if not memories:
            return
        async with self._conn.cursor() as cursor:
            await cursor.executemany(SQL(
                "INSERT INTO {} (id, scope, kind, text, importance, created_at, last_seen_at, "
                "task_id, job_id, run_id, position, embedding) VALUES (%s, %s, %s, %s, %s, %s, "
                "%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING").format(self._table),
                [(m.id, m.scope, m.kind, storable(m.text), m.importance, m.at, m.at, m.task_id,
                  storable(m.job_id), storable(m.run_id), m.position, m.vector)
                 for m in memories])
        self.scopes.update(m.scope for m in memories)

    async def merge(self, into: str, memory: Recorded, bump: float) -> None:
        """``memory`` repeats row ``into``: the row is seen once more, at least as important
        as the repeat (plus ``bump``), and answers to the repeat's id too."""
        await self._conn.execute(SQL(
            "UPDATE {} SET seen = seen + 1, last_seen_at = greatest(last_seen_at, %s), "
            "importance = least(1.0, greatest(importance, %s) + %s), "
            "merged_ids = array_append(merged_ids, %s::uuid) WHERE id = %s").format(self._table),
            (memory.at, memory.importance, bump, memory.id, into))

    async def used(self, ids: Sequence[str], at: datetime) -> None:
        await self._conn.execute(SQL(
            "UPDATE {} SET uses = uses + 1, last_used_at = greatest(last_used_at, %s) "
            "WHERE id = ANY(%s::uuid[])").format(self._table), (at, list(ids)))

    async def pin(self, memory_id: str, pinned: bool) -> None:
        await self._conn.execute(SQL(
            "UPDATE {} SET pinned = %s WHERE id = %s OR merged_ids @> ARRAY[%s::uuid]"
        ).format(self._table), (pinned, memory_id, memory_id))

    async def delete(self, ids: Sequence[str]) -> None:
        await self._conn.execute(SQL(
            "DELETE FROM {} WHERE id = ANY(%s::uuid[]) OR merged_ids && %s::uuid[]"
        ).format(self._table), (list(ids), list(ids)))


_HNSW_WITH = ", ".join(f"{key} = {int(value)}" for key, value in HNSW.items())


def _family(family: str, *, with_params: bool = True) -> str:
    """The clause of a family's rows, as its partial index is defined (its ``%`` doubled in a
    statement with parameters)."""
    assert family in FAMILIES
    return f"scope LIKE '{family}:{'%%' if with_params else '%'}'"


def _family_of(scope: str) -> str | None:
    """The family of ``scope``; ``None`` for a scope of none (no index has its rows: it is
    searched by reading them)."""
    family = scope.partition(":")[0]
    return family if family in FAMILIES else None


def _by_family(scopes: Sequence[str] | None) -> dict[str, list[str] | None]:
    """``scopes`` (large, of a family) by family; ``None`` (every scope): each family."""
    if scopes is None:
        return dict.fromkeys(FAMILIES)
    grouped: dict[str, list[str] | None] = {}
    for scope in scopes:
        family = _family_of(scope)
        assert family is not None
        group = grouped.setdefault(family, [])
        assert group is not None
        group.append(scope)
    return grouped


async def _sizes(conn: psycopg.AsyncConnection[Any], table: SQL,
                 scopes: Sequence[str]) -> dict[str, int]:
    """How many rows each scope has, counted up to :data:`EXACT_UNDER` (enough to choose how
    to search it, at a bounded cost)."""
    cursor = await conn.execute(SQL(
        "SELECT s AS scope, (SELECT count(*) FROM (SELECT 1 FROM {} WHERE scope = s "
        "LIMIT %s) x) AS n FROM unnest(%s::text[]) s").format(table),
        (EXACT_UNDER, list(set(scopes))), prepare=False)
    return {r["scope"]: r["n"] for r in await cursor.fetchall()}


def _row(row: dict[str, Any]) -> dict[str, Any]:
    out = {**row, "id": str(row["id"]),
           "task_id": None if row["task_id"] is None else str(row["task_id"]),
           "merged_ids": [str(i) for i in row["merged_ids"]]}
    if "similarity" in out:
        similarity = float(out["similarity"])
        out["similarity"] = 0.0 if math.isnan(similarity) else similarity
    return out

