"""Agent memory on pgvector: insert rate, search latency, index recall and recall's cost per run.

What is measured, on a private embedded PostgreSQL in a fresh temp dir, for N memories (default
100,000) in one repository scope:

1. **Insert rate** through the real path: tasks on one repository whose job's run reflects with
   ``LEARNED`` lines (``RecordReflection``; the domain's ``decide`` adds one ``MemoryRecorded``
   per learning, in the repository's scope, and one episode per reflection, in the task's).
   The histories are decided before the clock starts; each task is one ``EventStore.append``.
   Then ``Memory.catch_up()`` folds the log: it embeds the texts, looks for a duplicate of each
   and inserts the rows into the table with its HNSW index. Learnings are sentences drawn from
   a vocabulary of code words, distinct enough not to be merged (merges are counted anyway).
   The fold is stopped after ``--fold-limit`` seconds (default 900); the rate is then the one
   it reached, and the memories it did not fold are copied into its table (same rows, same
   vectors; its HNSW indexes built again after the copy, as a bulk load does) so that 2-4 run
   on all N. Baselines in the same run, on the same memories: the
   embedding alone (``vectors()`` in pages of 1,000, like the fold), a binary ``COPY`` into a
   table made ``LIKE`` the memory table (same indexes: HNSW as ``HNSW`` builds them, scope
   b-tree, GIN; the rows the fold reached are copied and timed first, for a like-for-like
   ratio), and the same ``COPY`` into a table without the HNSW index, built afterwards.
2. **Search latency**, top-10: ``MemoryTable.nearest`` given the query's vector, and
   ``Memory.search`` (embeds the query, reads 40 candidates, ranks them), beside the same calls
   with ``exact=True`` (a full scan). The two are timed in turn, query by query (one
   ``nearest``, one ``search``, the next ``nearest``...), so that a disturbance of a few
   seconds on the machine lands on both alike (timed one after the other, 1,000 of each,
   ``search``'s p99 was 11.5 ms against ``nearest``'s 7.8 in one run). The table is
   vacuumed and analyzed first, as autovacuum does soon after a bulk change (so every run
   plans alike, and no vacuum of the HNSW indexes takes a core meanwhile; the autovacuum
   workers at work are counted). Before 2-4 the process
   calls ``tune_gc()``
   as ``ipa serve`` does once started (the set-up's objects frozen, out of full collections'
   reach); the full collections during 2-4 are counted and printed.
3. **Recall@10** of the index: the ids ``nearest(limit=10)`` returns against those of the exact
   scan, for the same queries on the same table; then the same query in plain SQL, planned for
   its values (not prepared), at several ``hnsw.ef_search`` values (among them the one
   ``nearest`` sets, ``EF_SEARCH``): recall and latency of the index itself. And small
   scopes: ``nearest`` on 100 tasks' own scopes (4 episodes each, among all N memories), the
   share of each scope's memories it finds, against the exact scan.
4. **The context builder's added time per run**: ``Memory.recall(state, job)`` for jobs of tasks
   on the same repository (states built with domain commands), beside its index query alone
   (``nearest`` with 40 candidates at recall's ``RECALL_EF_SEARCH``, the query's vector
   given), the two timed in turn; and that query's recall against
   the exact scan (a job's text is nearest other tasks' episodes, not the repository's
   learnings, so the index walk has many rows to pass over).

The scope cap is raised above N (the default cap, 20,000 a scope, would evict most of them).
Other work on the machine shows up in the figures: the load average is printed at the start
and the end. Read the targets lines last; performance never makes this script fail.

    .venv/bin/python bench/memory.py [--quick] [--count N] [--fold-limit S] [--queries Q]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import anyio
import numpy as np
import psycopg
from pgvector.psycopg import register_vector_async

from ipa.domain import (
    Context,
    CreateTask,
    MemoryRecorded,
    QueueJob,
    RecordReflection,
    StartJob,
    StartTask,
    TaskEvent,
    TaskState,
    decide,
    fold,
    scopes_of,
)
from ipa.eventstore import AuditKey, ConnectionParams, EventStore, StoreSettings, embedded_postgres
from ipa.eventstore.memories import COLUMNS, FAMILIES, HNSW, TABLE
from ipa.eventstore.memories import EF_SEARCH as NEAREST_EF_SEARCH
from ipa.projections import Memory, MemorySettings
from ipa.projections.embedders import Embedder, load, vectors
from ipa.projections.memory import RECALL_EF_SEARCH, query_text
from ipa.ui.serve import tune_gc

REPO = "/src/shop"
SCOPE = f"repo:{REPO}"
REFLECTIONS_PER_RUN = 4
LEARNINGS_PER_REFLECTION = 5
PAGE = 1000  # the fold's page of the log, and the embedding baseline's batch
EF_SEARCH = sorted({40, 80, 100, 120, 140, NEAREST_EF_SEARCH, 200, 400})
RECALL_STATES = 20
SMALL_SCOPES = 100
WARMUP = 50
HNSW_WITH = ", ".join(f"{key} = {value}" for key, value in HNSW.items())

# -- realistic texts ------------------------------------------------------------------------

NOUNS = """parser lexer tokenizer scheduler queue worker cache session cookie token header router
handler middleware migration schema table index cursor connection pool transaction snapshot
projection stream event command aggregate reducer selector component template layout stylesheet
bundle webpack vite rollup babel eslint prettier ruff mypy pytest coverage fixture mock stub
container image dockerfile compose kubernetes helm chart manifest secret vault credential
certificate proxy gateway endpoint client server socket websocket timeout retry backoff limiter
throttle logger formatter tracer metric counter histogram gauge alert dashboard pipeline runner
artifact release changelog version tag branch commit rebase merge conflict hook linter
serializer deserializer encoder decoder codec buffer allocator thread mutex semaphore channel
future promise callback closure iterator generator decorator annotation interface protocol
struct enum trait module package crate gem wheel lockfile dependency registry mirror config
setting flag environment variable locale timezone clock calendar cron job batch upload download
attachment thumbnail video audio payment invoice subscription refund ledger account user role
permission policy tenant organisation workspace project issue ticket comment notification email
webhook topic partition offset consumer producer search query filter facet pagination sorting
ranking embedding vector model tensor gradient""".split()
VERBS = """fails breaks hangs crashes leaks times-out deadlocks panics segfaults flakes passes
builds compiles renders loads reloads restarts retries blocks stalls overflows truncates
duplicates drops corrupts rejects accepts validates caches invalidates""".split()
ADJECTIVES = """async sync stale cold warm nested optional required deprecated legacy experimental
internal public private generated vendored cached lazy eager strict lenient nullable unicode
binary compressed encrypted signed unsigned sorted unsorted partial empty""".split()
DIRS = """src lib app core api net db web ui cli tests docs scripts tools config infra internal
pkg cmd server client shared common utils services models views controllers handlers jobs
workers migrations fixtures assets static templates plugins adapters""".split()
EXTENSIONS = "py ts tsx js go rs rb java kt sql yaml toml json sh css html md".split()
TOOLS = """pytest make npm yarn pnpm cargo go uv pip poetry tox nox docker kubectl terraform
ansible gradle mvn bundle rake alembic flyway psql redis-cli""".split()
OPTIONS = """--no-cov -x --lf --frozen --offline --release --locked -j4 --watch --ci --verbose
--quiet --strict --fix --dry-run --force --no-cache --parallel --debug""".split()
LEARNED = [
    "the {a} {n1} in {p} {v} unless {c} runs with {o}",
    "{c} {o} is needed before the {n1} {n2} {v} in {p}",
    "never edit {p} by hand: the {a} {n1} regenerates it from the {n2}",
    "when the {n1} {v}, check the {a} {n2} configured in {p}",
    "the {n1} for {n2} lives in {p}, not in {q}",
    "run {c} {o} after touching the {a} {n1} or the {n2} {v}",
    "{p} wraps the {n1}; call it instead of the {a} {n2} directly",
    "the {a} {n1} {v} under load because the {n2} in {p} is not shared",
    "tests for the {n1} {n2} need the {a} fixture from {p}",
    "set the {n1} {n2} to {a} in {p} or {c} {v}",
]
SUMMARIES = [
    "changed the {n1} in {p} so the {a} {n2} no longer {v}; {c} {o} passes",
    "moved the {a} {n1} out of {p} into {q} and updated the {n2} that used it",
    "added tests for the {n1} {n2} in {p}; the {a} case still {v}",
]
QUERIES = [
    "how do I run the tests for the {n1} {n2}",
    "where is the {a} {n1} configured",
    "why does the {n1} {v} with {c}",
    "the {n1} {v} in {p}",
    "{c} {o} {n1} {n2}",
    "what calls the {a} {n1} in {p}",
]
TITLES = ["Fix the {a} {n1} that {v} in {p}", "Add a {n1} to the {n2} endpoint",
          "Speed up the {a} {n1} {n2}", "Move the {n1} out of {p}"]


def _path(rng: random.Random) -> str:
    dirs = "/".join(rng.sample(DIRS, rng.randint(2, 3)))
    return f"{dirs}/{rng.choice(NOUNS)}_{rng.choice(NOUNS)}.{rng.choice(EXTENSIONS)}"


def sentence(rng: random.Random, templates: Sequence[str]) -> str:
    """One of ``templates`` with its blanks filled from the vocabulary."""
    n1, n2 = rng.sample(NOUNS, 2)
    return rng.choice(templates).format(
        a=rng.choice(ADJECTIVES), n1=n1, n2=n2, v=rng.choice(VERBS), p=_path(rng),
        q=_path(rng), c=rng.choice(TOOLS), o=rng.choice(OPTIONS))


# -- histories ------------------------------------------------------------------------------


@dataclass(frozen=True)
class History:
    task_id: UUID
    events: list[TaskEvent]


def histories(count: int, ctx: Context, rng: random.Random) -> list[History]:
    """Tasks on ``REPO`` whose one run reflects until ``count`` learnings were recorded: each
    reflection has ``LEARNINGS_PER_REFLECTION`` of them (and is an episode of its task)."""
    out, left = [], count
    while left > 0:
        task_id = uuid4()
        commands: list[Any] = [
            CreateTask(sentence(rng, TITLES), sentence(rng, LEARNED), repo=REPO), StartTask(),
            QueueJob("develop", "developer"), StartJob("develop", "run-1")]
        for _ in range(REFLECTIONS_PER_RUN):
            if left <= 0:
                break
            learnings = [sentence(rng, LEARNED) for _ in range(min(left,
                                                                    LEARNINGS_PER_REFLECTION))]
            left -= len(learnings)
            commands.append(RecordReflection("develop", "run-1", sentence(rng, SUMMARIES),
                                             learnings))
        state: TaskState | None = None
        events: list[TaskEvent] = []
        for command in commands:
            new = decide(state, command, ctx, task_id)
            state = fold(new, state)
            events.extend(new)
        out.append(History(task_id, events))
    return out


def recall_states(ctx: Context, rng: random.Random) -> list[TaskState]:
    """Tasks on ``REPO`` whose job ``develop`` is running (what the context builder gets)."""
    states = []
    for _ in range(RECALL_STATES):
        state: TaskState | None = None
        description = f"{sentence(rng, LEARNED)}. {sentence(rng, LEARNED)}."
        for command in (CreateTask(sentence(rng, TITLES), description, repo=REPO), StartTask(),
                        QueueJob("develop", "developer"), StartJob("develop", "run-1")):
            state = fold(decide(state, command, ctx, uuid4() if state is None else state.id),
                         state)
        assert state is not None
        states.append(state)
    return states


# -- timing helpers -------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    samples: list[float]  # seconds

    def ms(self, p: int) -> float:
        return statistics.quantiles(self.samples, n=100, method="inclusive")[p - 1] * 1000


async def timed(calls: Sequence[Callable[[], Awaitable[Any]]]) -> tuple[Latency, list[Any]]:
    """Run ``calls`` one after another, after a warm-up of the first few; each call's time."""
    [(latency, results)] = await timed_together(calls)
    return latency, results


async def timed_together(*lists: Sequence[Callable[[], Awaitable[Any]]]
                         ) -> list[tuple[Latency, list[Any]]]:
    """Run the lists' calls in turn (the first of each list, then the second of each, ...),
    after a warm-up of the first few, so that each list is timed under the same conditions
    as the others (a disturbance of a few seconds touches all of them alike, not the one
    whose turn it was); each call's time, list by list."""
    for i in range(min(WARMUP, len(lists[0]))):
        for calls in lists:
            await calls[i]()
    samples: list[list[float]] = [[] for _ in lists]
    results: list[list[Any]] = [[] for _ in lists]
    for i in range(len(lists[0])):
        for n, calls in enumerate(lists):
            start = time.perf_counter()
            results[n].append(await calls[i]())
            samples[n].append(time.perf_counter() - start)
    return [(Latency(s), r) for s, r in zip(samples, results, strict=True)]


def recall_at(found: Sequence[Sequence[str]], truth: Sequence[Sequence[str]], k: int) -> float:
    return statistics.mean(len(set(f[:k]) & set(t[:k])) / max(1, min(k, len(t)))
                           for f, t in zip(found, truth, strict=True))


def ids(results: Sequence[Sequence[dict[str, Any]]]) -> list[list[str]]:
    return [[r["id"] for r in rows] for rows in results]


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


# -- 1. inserts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Inserted:
    memories: int  # MemoryRecorded events in the log
    repo_memories: int
    events: int
    append_s: float
    folded: int  # of the memories, those the fold reached before its limit
    fold_s: float
    kept: int  # rows the fold left of ``folded`` (the rest were merged)
    filled: int  # rows copied in after the fold's limit
    fill_s: float


def rows_of(recorded: Sequence[tuple[int, MemoryRecorded]], found: np.ndarray) -> list[tuple]:
    """The memory table's rows of ``(position, event)``, with their vectors ``found``."""
    return [(UUID(e.memory_id), e.scope, e.kind, e.text, e.importance, e.timestamp,
             e.timestamp, e.originator_id, e.job_id, e.run_id, position, found[n])
            for n, (position, e) in enumerate(recorded)]


async def insert(params: ConnectionParams, store: EventStore, memory: Memory,
                 tasks: list[History], limit: float) -> tuple[Inserted, list[tuple]]:
    """Append the tasks, fold them (for ``limit`` seconds at most), copy in what the fold did
    not reach; the figures, and every memory as a row (for the baselines)."""
    assert memory.embedder is not None
    start = time.perf_counter()
    recorded: list[tuple[int, MemoryRecorded]] = []
    for history in tasks:
        appended = await store.append(history.task_id, history.events, 0)
        recorded.extend((p, e) for p, e in zip(appended.positions, history.events, strict=True)
                        if isinstance(e, MemoryRecorded))
    append_s = time.perf_counter() - start
    start = time.perf_counter()
    with anyio.move_on_after(limit):
        await memory.catch_up()
    fold_s = time.perf_counter() - start
    state = await memory.table.state(memory.model)
    assert state is not None
    position = state[0]  # what the fold committed (a page cut short was rolled back)
    folded = sum(p <= position for p, _ in recorded)
    kept = await memory.table.count(memory.model)
    texts = [e.text for _, e in recorded]
    found = np.concatenate([vectors(memory.embedder, texts[i:i + PAGE])
                            for i in range(0, len(texts), PAGE)])
    rows = rows_of(recorded, found)
    start = time.perf_counter()
    rest = [row for row in rows if row[10] > position]
    if rest:
        async with await psycopg.AsyncConnection.connect(params.conninfo(),
                                                         autocommit=True) as conn:
            await register_vector_async(conn)
            for family in FAMILIES:  # a bulk load: the indexes are built after it
                await conn.execute(f"DROP INDEX {TABLE}_embedding_{family}")
            await copy(conn, TABLE, rest)
        await memory.table.add_index(memory.model)
        await memory.table.set_position(memory.model, await store.head_position())
        await memory.open()  # it reads the position again
    fill_s = time.perf_counter() - start
    inserted = Inserted(len(recorded), sum(e.scope == SCOPE for _, e in recorded),
                        sum(len(h.events) for h in tasks), append_s, folded, fold_s, kept,
                        len(rest), fill_s)
    return inserted, rows


async def autovacuums(conn: psycopg.AsyncConnection) -> int:
    """Autovacuum workers at work now (each takes a core from the searches)."""
    cursor = await conn.execute("SELECT count(*) FROM pg_stat_activity "
                                "WHERE backend_type = 'autovacuum worker'")
    return (await cursor.fetchone())[0]


@dataclass(frozen=True)
class Baselines:
    embed_s: float  # the memories the fold reached
    copy_hnsw_s: float  # the same
    copy_s: float  # every memory, no HNSW index
    build_s: float


async def baselines(params: ConnectionParams, embedder: Embedder, rows: list[tuple],
                    folded: int) -> Baselines:
    texts = [row[3] for row in rows[:folded]]
    start = time.perf_counter()
    for i in range(0, len(texts), PAGE):
        vectors(embedder, texts[i:i + PAGE])
    embed_s = time.perf_counter() - start
    async with await psycopg.AsyncConnection.connect(params.conninfo(),
                                                     autocommit=True) as conn:
        await register_vector_async(conn)
        await conn.execute(f"CREATE TABLE bench_hnsw (LIKE {TABLE} INCLUDING ALL)")
        await conn.execute(f"CREATE TABLE bench_plain (LIKE {TABLE} INCLUDING DEFAULTS)")
        copy_hnsw_s = await copy(conn, "bench_hnsw", rows[:folded])
        copy_s = await copy(conn, "bench_plain", rows)
        start = time.perf_counter()
        await conn.execute("SET maintenance_work_mem = '256MB'")  # as MemoryTable.add_index
        for family in FAMILIES:  # as MemoryTable.add_index
            await conn.execute("CREATE INDEX ON bench_plain USING hnsw (embedding "
                               f"vector_cosine_ops) WITH ({HNSW_WITH}) "
                               f"WHERE scope LIKE '{family}:%'")
        build_s = time.perf_counter() - start
        await conn.execute("DROP TABLE bench_hnsw, bench_plain")
    return Baselines(embed_s, copy_hnsw_s, copy_s, build_s)


async def copy(conn: psycopg.AsyncConnection[Any], table: str, rows: Sequence[tuple]) -> float:
    """Binary ``COPY`` of ``rows`` into ``table`` in one transaction; its time."""
    start = time.perf_counter()
    async with conn.transaction(), conn.cursor() as cursor:
        async with cursor.copy(
                f"COPY {table} (id, scope, kind, text, importance, created_at, last_seen_at, "
                "task_id, job_id, run_id, position, embedding) FROM STDIN WITH (FORMAT BINARY)"
        ) as out:
            out.set_types(["uuid", "text", "text", "text", "float4", "timestamptz",
                           "timestamptz", "uuid", "text", "text", "int8", "vector"])
            for row in rows:
                await out.write_row(row)
    return time.perf_counter() - start


# -- 2, 3, 4. searching ---------------------------------------------------------------------


@dataclass(frozen=True)
class Searched:
    nearest: Latency
    nearest_exact: Latency
    search: Latency
    search_exact: Latency
    recall_nearest: float
    recall_search: float
    sweep: list[tuple[int, float, Latency]]  # ef_search, recall@10, latency


async def search(params: ConnectionParams, memory: Memory, queries: list[str],
                 exact_queries: int, explain: bool = False) -> Searched:
    assert memory.embedder is not None
    table, model = memory.table, memory.model
    found = vectors(memory.embedder, queries)
    checked = range(min(exact_queries, len(queries)))
    every = range(len(queries))

    def nearest(i: int, exact: bool = False) -> Callable[[], Awaitable[Any]]:
        return lambda: table.nearest(model, found[i], [SCOPE], 10, exact=exact)

    def searching(i: int, exact: bool = False) -> Callable[[], Awaitable[Any]]:
        return lambda: memory.search(queries[i], [SCOPE], limit=10, exact=exact)

    (nearest_lat, _), (search_lat, _) = await timed_together(
        [nearest(i) for i in every], [searching(i) for i in every])
    (exact_lat, truth), (search_exact_lat, search_truth) = await timed_together(
        [nearest(i, True) for i in checked], [searching(i, True) for i in checked])
    _, by_index = await timed([nearest(i) for i in checked])
    _, search_by_index = await timed([searching(i) for i in checked])

    sweep = []
    query = f"SELECT {COLUMNS} FROM {TABLE} WHERE scope LIKE 'repo:%%' AND (scope || '') = " \
            "ANY(%s) ORDER BY embedding <=> %s LIMIT 10"  # as MemoryTable.nearest
    async with await psycopg.AsyncConnection.connect(params.conninfo()) as conn:
        await register_vector_async(conn)
        for ef in EF_SEARCH:
            async def at_ef(i: int, ef: int = ef) -> list[str]:
                async with conn.transaction():
                    await conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
                    await conn.execute(f"SET LOCAL hnsw.ef_search = {ef}")
                    rows = await (await conn.execute(query, ([SCOPE], found[i]),
                                                     prepare=False)).fetchall()
                return [str(r[0]) for r in rows]

            latency, got = await timed([lambda i=i: at_ef(i) for i in checked])
            sweep.append((ef, recall_at(got, ids(truth), 10), latency))
        if explain:
            async with conn.transaction():
                await conn.execute("SET LOCAL hnsw.iterative_scan = strict_order")
                await conn.execute(f"SET LOCAL hnsw.ef_search = {NEAREST_EF_SEARCH}")
                plan = await (await conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + query,
                                                 ([SCOPE], found[0]), prepare=False)).fetchall()
            print("\n".join(["the first query's plan:", *(f"   {row[0]}" for row in plan)]))
    return Searched(nearest_lat, exact_lat, search_lat, search_exact_lat,
                    recall_at(ids(by_index), ids(truth), 10),
                    recall_at(ids(search_by_index), ids(search_truth), 10), sweep)


@dataclass(frozen=True)
class Small:
    """``nearest`` on small scopes: a task's episodes, among all the memories."""

    scopes: int
    size: int  # memories in each
    recall: float  # of each scope's memories, the share the index found
    latency: Latency
    exact: Latency


async def small_scopes(memory: Memory, tasks: list[History], queries: list[str]) -> Small:
    """Each of ``SMALL_SCOPES`` tasks' own scope (its episodes) searched by the index and
    exactly: a filter the index serves badly, where a b-tree on the scope serves well."""
    assert memory.embedder is not None
    table, model = memory.table, memory.model
    picked = tasks[:: max(1, len(tasks) // SMALL_SCOPES)][:SMALL_SCOPES]
    scopes = [f"task:{h.task_id}" for h in picked]
    found = vectors(memory.embedder, queries[: len(scopes)])
    latency, by_index = await timed([
        lambda i=i, scope=scope: table.nearest(model, found[i], [scope], 10)
        for i, scope in enumerate(scopes)])
    exact, truth = await timed([
        lambda i=i, scope=scope: table.nearest(model, found[i], [scope], 10, exact=True)
        for i, scope in enumerate(scopes)])
    size = sum(1 for e in picked[0].events if isinstance(e, MemoryRecorded)
               and e.scope == scopes[0])
    return Small(len(scopes), size, recall_at(ids(by_index), ids(truth), 10), latency, exact)


@dataclass(frozen=True)
class Recalls:
    recall: Latency  # Memory.recall
    query: Latency  # its index query alone
    memories: float  # recalled per run, on average
    found_10: float  # recall@10 of its index query against the exact scan
    found_40: float  # the same over the 40 candidates


async def recalls(memory: Memory, states: list[TaskState], count: int) -> Recalls:
    """``Memory.recall`` per run, its index query alone, and how much of the exact answer
    that query finds."""
    assert memory.embedder is not None
    picks = [states[i % len(states)] for i in range(count)]
    found = vectors(memory.embedder, [query_text(s, s.jobs["develop"]) for s in states])
    limit = 4 * memory.settings.recall_limit
    (recall_lat, results), (query_lat, _) = await timed_together(
        [lambda s=s: memory.recall(s, s.jobs["develop"]) for s in picks],
        [lambda i=i: memory.table.nearest(memory.model, found[i % len(states)],
                                          scopes_of(picks[i]), limit,
                                          ef_search=RECALL_EF_SEARCH)
         for i in range(count)])
    problems = {r.problem for r in results if r.problem}
    if problems:
        raise RuntimeError(f"recall failed: {problems}")
    by_index, truth = [], []
    for state, vector in zip(states, found, strict=True):
        for exact, into in ((False, by_index), (True, truth)):
            into.append(await memory.table.nearest(memory.model, vector, scopes_of(state),
                                                   limit, exact=exact,
                                                   ef_search=RECALL_EF_SEARCH))
    return Recalls(recall_lat, query_lat, statistics.mean(len(r.memories) for r in results),
                   recall_at(ids(by_index), ids(truth), 10),
                   recall_at(ids(by_index), ids(truth), limit))


# -- the run --------------------------------------------------------------------------------


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def measure(params: ConnectionParams, args: argparse.Namespace) -> None:
    started = time.perf_counter()
    print(f"memories: {args.count:,} learnings in {SCOPE}; {os.cpu_count()} CPUs, load "
          f"average {load_average()} (other work on the machine shows in every figure)",
          flush=True)
    print(f"HNSW indexes built with {HNSW_WITH}; searched at hnsw.ef_search "
          f"{NEAREST_EF_SEARCH}", flush=True)
    rng = random.Random(16)
    ctx = Context(actor="bench", now=datetime.now(UTC), correlation_id="bench")
    tasks = histories(args.count, ctx, rng)
    queries = [sentence(rng, QUERIES) for _ in range(args.queries)]
    states = recall_states(ctx, rng)
    embedder = load()
    settings = StoreSettings(snapshot_interval=0, live=False,
                             audit_key=AuditKey.from_text(secrets.token_hex(32)))
    async with (EventStore.open(params, settings) as store,
                await psycopg.AsyncConnection.connect(params.conninfo(),
                                                      autocommit=True) as conn):
        table = store.memory_table()
        await table.open()
        try:
            memory = Memory(store, table, MemorySettings(cap=2 * args.count + 1_000),
                            embedder=embedder)
            await memory.open()
            inserted, rows = await insert(params, store, memory, tasks, args.fold_limit)
            print(f"(folded for {inserted.fold_s:,.0f} s; measuring the baselines)", flush=True)
            base = await baselines(params, embedder, rows, inserted.folded)
            # What autovacuum does soon after a bulk change, done before the clock starts (a
            # vacuum of the HNSW indexes running meanwhile takes one of the two cores).
            await conn.execute(f"VACUUM (ANALYZE) {TABLE}")
            index_mb = {family: (await (await conn.execute(
                "SELECT pg_relation_size(%s) / 1048576.0", (f"{TABLE}_embedding_{family}",)
            )).fetchone())[0] for family in FAMILIES}
            # As ``ipa serve`` does once it has started: what the set-up made (here the
            # histories of N memories) is frozen, out of reach of full collections.
            tune_gc()
            full_collections = [0]

            def count(phase: str, info: dict[str, int]) -> None:
                full_collections[0] += phase == "start" and info["generation"] == 2

            gc.callbacks.append(count)
            vacuums = [await autovacuums(conn)]
            searched = await search(params, memory, queries, args.exact_queries, args.explain)
            small = await small_scopes(memory, tasks, queries)
            recalled = await recalls(memory, states, args.recalls)
            vacuums.append(await autovacuums(conn))
            gc.callbacks.remove(count)
        finally:
            await table.close()
    print(f"(full garbage collections during 2-4, after tune_gc(): {full_collections[0]}; "
          f"autovacuum workers at work as 2 began and as 4 ended: {vacuums[0]}, {vacuums[1]})")
    report(inserted, base, searched, small, recalled, index_mb)
    print(f"\nload average at the end {load_average()}; "
          f"bench time {time.perf_counter() - started:,.1f} s")


def report(ins: Inserted, base: Baselines, s: Searched, small: Small, r: Recalls,
           index_mb: dict[str, float]) -> None:
    n, k = ins.memories, ins.folded
    fold_rate = k / ins.fold_s
    raw_rate = k / (base.embed_s + base.copy_hnsw_s)
    print(f"\n1. insert: {n:,} MemoryRecorded ({ins.repo_memories:,} learnings in {SCOPE}, "
          f"{n - ins.repo_memories:,} episodes in task scopes) in {ins.events:,} events")
    if k < n:
        print(f"   the fold was stopped at its limit after {k:,} memories; the other "
              f"{ins.filled:,} were copied in ({ins.fill_s:,.1f} s) for sections 2-4")
    print(f"   merged as duplicates by the fold: {k - ins.kept:,} of {k:,}")
    print(f"   {'':<44}{'memories':>10}{'s':>9}{'memories/s':>12}")
    lines = [
        ("append (one per task, all N)", n, ins.append_s),
        ("fold: Memory.catch_up()", k, ins.fold_s),
        ("baseline: embedding alone", k, base.embed_s),
        ("baseline: COPY into a table with HNSW", k, base.copy_hnsw_s),
        ("baseline: embedding + COPY with HNSW", k, base.embed_s + base.copy_hnsw_s),
        ("baseline: COPY, no HNSW index, all N", n, base.copy_s),
        ("baseline: ... then build the index", n, base.copy_s + base.build_s),
    ]
    for label, count, seconds in lines:
        print(f"   {label:<44}{count:>10,}{seconds:>9.1f}{count / seconds:>12,.0f}")
    print(f"   fold / (embedding + COPY with HNSW), memories/s: {fold_rate / raw_rate:.2f}")
    print(f"   HNSW indexes ({HNSW_WITH}): " + ", ".join(
        f"{family} {mb:,.0f} MB" for family, mb in index_mb.items()))

    print(f"\n2. search, top 10, {len(s.nearest.samples):,} queries "
          f"({len(s.nearest_exact.samples):,} exact); the table VACUUMed and ANALYZEd first")
    print(f"   {'':<38}{'p50 ms':>8}{'p99 ms':>8}{'exact p50':>11}{'exact p99':>11}"
          f"{'exact/index p50':>17}")
    plain = next(latency for ef, _, latency in s.sweep if ef == NEAREST_EF_SEARCH)
    for label, index, exact in (
            ("MemoryTable.nearest (vector given)", s.nearest, s.nearest_exact),
            ("Memory.search (embeds, ranks 40)", s.search, s.search_exact),
            (f"plain SQL, HNSW, ef_search {NEAREST_EF_SEARCH}", plain, s.nearest_exact)):
        print(f"   {label:<38}{index.ms(50):>8.2f}{index.ms(99):>8.2f}{exact.ms(50):>11.2f}"
              f"{exact.ms(99):>11.2f}{exact.ms(50) / index.ms(50):>17.1f}")

    print(f"\n3. recall@10 against the exact scan, {len(s.nearest_exact.samples):,} queries")
    print(f"   MemoryTable.nearest(limit=10)                    {s.recall_nearest:.3f}")
    print(f"   Memory.search(limit=10) (40 candidates, ranked)  {s.recall_search:.3f}")
    print("   the index, plain SQL at hnsw.ef_search:  recall@10   p50 ms   p99 ms")
    for ef, value, latency in s.sweep:
        print(f"   {ef:>39}{value:>11.3f}{latency.ms(50):>9.2f}{latency.ms(99):>9.2f}")

    print(f"   a task's own scope ({small.size} episodes among all N), nearest(limit=10) on "
          f"{small.scopes} of them: found {small.recall:.3f} of each scope's memories; "
          f"p50 {small.latency.ms(50):.2f} ms, p99 {small.latency.ms(99):.2f} ms (exact: "
          f"p50 {small.exact.ms(50):.2f} ms)")

    print(f"\n4. Memory.recall(state, job), {len(r.recall.samples):,} runs over "
          f"{RECALL_STATES} tasks ({r.memories:.1f} memories each)")
    print(f"   {'':<56}{'p50 ms':>8}{'p99 ms':>8}")
    for label, latency in (("Memory.recall", r.recall),
                           (f"baseline: nearest(limit=40, ef_search={RECALL_EF_SEARCH}), "
                            "vector given", r.query)):
        print(f"   {label:<56}{latency.ms(50):>8.2f}{latency.ms(99):>8.2f}")
    print(f"   recall / baseline, p50: {r.recall.ms(50) / r.query.ms(50):.2f}")
    print(f"   its candidates against the exact scan: recall@10 {r.found_10:.3f}, "
          f"recall@40 {r.found_40:.3f}")

    index_recall = next(value for ef, value, _ in s.sweep if ef == NEAREST_EF_SEARCH)
    reach = next((ef for ef, value, _ in s.sweep if value >= 0.95), None)
    search_p99, nearest_p99 = s.search.ms(99), s.nearest.ms(99)
    print()
    print(f"target: search p99 <= 10 ms (Memory.search, top 10): {search_p99:.2f} ms -> "
          f"{verdict(search_p99 <= 10)}  (nearest alone: {nearest_p99:.2f} ms -> "
          f"{verdict(nearest_p99 <= 10)})")
    print(f"target: recall@10 >= 0.95 (nearest, top 10): {s.recall_nearest:.3f} -> "
          f"{verdict(s.recall_nearest >= 0.95)}  (the index alone at its ef_search "
          f"{NEAREST_EF_SEARCH}: {index_recall:.3f}; the lowest ef_search reaching 0.95: "
          f"{reach if reach is not None else f'none up to {EF_SEARCH[-1]}'})")
    print(f"target: recall p99 <= 20 ms: {r.recall.ms(99):.2f} ms -> "
          f"{verdict(r.recall.ms(99) <= 20)}")
    print(f"(no target) insert rate through the fold: {fold_rate:,.0f} memories/s over "
          f"{k:,} memories; {n / ins.append_s:,.0f} memories/s appended")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000,
                        help="learnings recorded in the repository scope")
    parser.add_argument("--fold-limit", type=float, default=900,
                        help="seconds the fold may run; the rest is copied in")
    parser.add_argument("--queries", type=int, default=1000, help="searches timed (index)")
    parser.add_argument("--exact-queries", type=int, default=200,
                        help="of those, searched exactly too (latency baseline and recall)")
    parser.add_argument("--recalls", type=int, default=500, help="Memory.recall calls timed")
    parser.add_argument("--explain", action="store_true",
                        help="print the plan of one search (EXPLAIN ANALYZE, BUFFERS)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5,000 memories")
    args = parser.parse_args()
    if args.quick:
        args.count = 5000
    if args.count < 100 or min(args.queries, args.exact_queries, args.recalls) < 2 \
            or args.fold_limit <= 0:
        parser.error("--count must be >= 100, --queries, --exact-queries and --recalls >= 2, "
                     "--fold-limit > 0")
    with tempfile.TemporaryDirectory(prefix="ipa-bench-") as tmp:
        with embedded_postgres(Path(tmp)) as params:
            anyio.run(measure, params, args, backend="asyncio")


if __name__ == "__main__":
    main()
