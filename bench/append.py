"""Append throughput and latency of the event store, against raw PostgreSQL inserts.

What is measured, on a private embedded PostgreSQL in a fresh temp dir:

(a) one writer appends N events, one per ``EventStore.append`` call, to one task stream;
(b) W writers (default 100) each append E events (default 200) to their own stream, at once.

Each append carries one event, so events/s is also appends/s; latency is the time of one
``append`` call, which returns once its transaction committed (group commit: concurrent appends
share a transaction). The baseline runs in the same process on the same server: single-row
``INSERT``s, one row per transaction (autocommit), into a table with the store's columns and
keys and a payload of the store's mean stored size, with psycopg 3 ``AsyncConnection``s, one
connection per writer, on the same event loop (the garbage collector set up as ``ipa serve``
sets it, ``tune_gc``, for both). It takes no lock and sends no NOTIFY, and
has no hash chain, manifest or JSON encoding: "store/baseline" is what the store's whole path
costs (keyed with a fresh audit key, as ``ipa serve`` keys a new store) relative to the plain
insert. For (b) a second baseline, the **batch ceiling**: the same W x E rows inserted 100 rows
per transaction (one ``INSERT ... SELECT FROM unnest(...)`` per transaction, autocommit, one
connection, back to back): what any group commit of 100 appends on one connection could reach.

The store and the baseline a target compares it with run in alternating rounds (``--rounds``,
default 5: (a) a fifth of the events by the store, then a fifth by the baseline, and so on;
(b) the store's writers append a fifth of their events, then the ceiling inserts as many rows):
on a shared machine whose speed drifts within a minute, both sides see the same drift. Each
figure is over all rounds; the ratio of every round is printed beside it. (b)'s single-row
baseline needs W connections of its own and runs after the store is closed (no target).
Read the targets lines last: they say whether the issue's goals are met (#18: (a) store >= 0.9x
the single-row insert; (b) store >= 0.5x the batch ceiling with p99 <= 20 ms); performance
never makes this script fail.

    .venv/bin/python bench/append.py [--quick] [--events N] [--writers W] [--per-writer E]
                                     [--rounds R]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain, cycle, islice
from pathlib import Path
from uuid import uuid4

import anyio
import psycopg

from ipa.domain import Context, CreateTask, Pause, Resume, StartTask, TaskEvent, decide, evolve
from ipa.eventstore import AuditKey, ConnectionParams, EventStore, StoreSettings, embedded_postgres
from ipa.ui.serve import tune_gc

BASELINE_TABLE = "bench_baseline_events"
TOPIC = "ipa.domain.events:TaskPaused"
WARMUP_APPENDS = 200
CEILING_BATCH = 100  # rows per transaction of the batch ceiling

# A writer appends its events one at a time, records each call's latency (s), returns its count.
Writer = Callable[[list[float]], Awaitable[int]]


@dataclass(frozen=True)
class Result:
    """One scenario's run: how many events, how long in all, and each append's latency (s)."""

    events: int
    seconds: float
    latencies: Sequence[float]

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    def percentile_ms(self, p: int) -> float:
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[p - 1] * 1000


def task_stream(n: int, ctx: Context) -> list[TaskEvent]:
    """A legal stream of ``n`` one-event decisions: create, start, then pause/resume."""
    task_id = uuid4()
    commands = chain(
        [CreateTask(title="bench task", description="appended by bench/append.py"), StartTask()],
        cycle([Pause(reason="bench"), Resume()]),
    )
    state, events = None, []
    for command in islice(commands, n):
        [event] = decide(state, command, ctx, task_id)
        state = evolve(state, event)
        events.append(event)
    return events


async def run_writers(writers: Sequence[Writer]) -> Result:
    """Run every writer at once; the wall time runs from the first start to the last finish."""
    latencies: list[list[float]] = [[] for _ in writers]
    counts: list[int] = [0] * len(writers)

    async def one(i: int) -> None:
        counts[i] = await writers[i](latencies[i])

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(len(writers)):
            tg.start_soon(one, i)
    seconds = time.perf_counter() - start
    return Result(sum(counts), seconds, [x for per_writer in latencies for x in per_writer])


# -- the store ------------------------------------------------------------------------------------


def store_writer(store: EventStore, events: list[TaskEvent]) -> Writer:
    async def write(latencies: list[float]) -> int:
        for event in events:
            start = time.perf_counter()
            await store.append(event.originator_id, [event], event.originator_version - 1)
            latencies.append(time.perf_counter() - start)
        return len(events)

    return write


# -- the baseline ---------------------------------------------------------------------------------


def baseline_writer(
    conn: psycopg.AsyncConnection, n: int, topic: str, payload: bytes
) -> Writer:
    stream_id = uuid4()
    insert = (
        f"INSERT INTO {BASELINE_TABLE} (originator_id, originator_version, topic, state)"
        " VALUES (%s, %s, %s, %s) RETURNING notification_id"
    )

    async def write(latencies: list[float]) -> int:
        for version in range(1, n + 1):
            start = time.perf_counter()
            await conn.execute(insert, (stream_id, version, topic, payload), prepare=True)
            latencies.append(time.perf_counter() - start)
        return n

    return write


def ceiling_writer(
    conn: psycopg.AsyncConnection, rows: int, topic: str, payload: bytes
) -> Writer:
    """``rows`` rows over ``rows / 100`` streams, 100 rows (one stream) per transaction."""
    insert = (
        f"INSERT INTO {BASELINE_TABLE} (originator_id, originator_version, topic, state)"
        " SELECT * FROM unnest(%s::uuid[], %s::bigint[], %s::text[], %s::bytea[])"
        " RETURNING notification_id"
    )

    async def write(latencies: list[float]) -> int:
        done = 0
        while done < rows:
            n = min(CEILING_BATCH, rows - done)
            stream_id = uuid4()
            params = ([stream_id] * n, list(range(1, n + 1)), [topic] * n, [payload] * n)
            start = time.perf_counter()
            cursor = await conn.execute(insert, params, prepare=True)
            await cursor.fetchall()
            latencies.append(time.perf_counter() - start)
            done += n
        return done

    return write


async def create_baseline_table(params: ConnectionParams) -> None:
    async with await psycopg.AsyncConnection.connect(params.conninfo(), autocommit=True) as conn:
        await conn.execute(f"DROP TABLE IF EXISTS {BASELINE_TABLE}")
        await conn.execute(
            f"CREATE TABLE {BASELINE_TABLE} (originator_id uuid NOT NULL,"
            " originator_version bigint NOT NULL, topic text, state bytea,"
            " notification_id bigserial, PRIMARY KEY (originator_id, originator_version))"
        )
        await conn.execute(f"CREATE UNIQUE INDEX ON {BASELINE_TABLE} (notification_id)")


async def measure_single_rows(
    params: ConnectionParams, writers: int, each: int, payload: bytes
) -> Result:
    """W connections each inserting ``each`` single rows, all at once (after a warm-up)."""
    result = None
    for n in (WARMUP_APPENDS // writers + 1, each):
        # The setup connection is closed first: the server allows 100 connections in all.
        conns = [
            await psycopg.AsyncConnection.connect(params.conninfo(), autocommit=True)
            for _ in range(writers)
        ]
        try:
            result = await run_writers([baseline_writer(c, n, TOPIC, payload) for c in conns])
        finally:
            for c in conns:
                await c.close()
    assert result is not None
    return result


def chunks(events: list[TaskEvent], rounds: int) -> list[list[TaskEvent]]:
    """``events`` cut into ``rounds`` consecutive slices of (nearly) equal length."""
    size, extra = divmod(len(events), rounds)
    out, start = [], 0
    for r in range(rounds):
        end = start + size + (r < extra)
        out.append(events[start:end])
        start = end
    return out


@dataclass(frozen=True)
class Measured:
    """Every round of every side: (a) store and baseline; (b) store, ceiling, single rows."""

    a_store: list[Result]
    a_baseline: list[Result]
    b_store: list[Result]
    b_ceiling: list[Result]
    b_single: Result
    size: int


async def measure(params: ConnectionParams, ctx: Context, args: argparse.Namespace) -> Measured:
    # No automatic snapshots and no live tail: only the append path is measured.
    key = AuditKey.from_text(secrets.token_hex(32))
    settings = StoreSettings(snapshot_interval=0, live=False, audit_key=key)
    async with EventStore.open(params, settings) as store:
        warm = task_stream(WARMUP_APPENDS, ctx)
        await run_writers([store_writer(store, warm)])
        # The baselines' payload gets the size the store really wrote (JSON + hash chain).
        rows = await store.read_raw(warm[0].originator_id)
        size = round(statistics.mean(len(row.state) for row in rows))
        payload = os.urandom(size)
        await create_baseline_table(params)
        tune_gc()  # as ipa serve does, once started: both sides run under it
        async with await psycopg.AsyncConnection.connect(
            params.conninfo(), autocommit=True
        ) as conn:
            await run_writers([baseline_writer(conn, WARMUP_APPENDS, TOPIC, payload)])
            await run_writers([ceiling_writer(conn, 10 * CEILING_BATCH, TOPIC, payload)])
            a_store, a_baseline = [], []
            for chunk in chunks(task_stream(args.events, ctx), args.rounds):
                a_store.append(await run_writers([store_writer(store, chunk)]))
                a_baseline.append(
                    await run_writers([baseline_writer(conn, len(chunk), TOPIC, payload)])
                )
            streams = [chunks(task_stream(args.per_writer, ctx), args.rounds)
                       for _ in range(args.writers)]
            b_store, b_ceiling = [], []
            for r in range(args.rounds):
                b_store.append(await run_writers([store_writer(store, s[r]) for s in streams]))
                rows_now = sum(len(s[r]) for s in streams)
                b_ceiling.append(
                    await run_writers([ceiling_writer(conn, rows_now, TOPIC, payload)])
                )
    b_single = await measure_single_rows(params, args.writers, args.per_writer, payload)
    return Measured(a_store, a_baseline, b_store, b_ceiling, b_single, size)


# -- report ---------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def combined(results: Sequence[Result]) -> Result:
    return Result(sum(r.events for r in results), sum(r.seconds for r in results),
                  [x for r in results for x in r.latencies])


def line(label: str, result: Result, ratio: str = "", rounds: str = "") -> str:
    return (f"{label:<36}{result.rate:>10,.0f}{result.percentile_ms(50):>9.2f}"
            f"{result.percentile_ms(99):>9.2f}{ratio:>8}  {rounds}")


def per_round(ours: Sequence[Result], theirs: Sequence[Result]) -> str:
    return " ".join(f"{o.rate / t.rate:.2f}" for o, t in zip(ours, theirs, strict=True))


def report(labels: list[str], m: Measured) -> None:
    a_store, a_base = combined(m.a_store), combined(m.a_baseline)
    b_store, b_ceiling = combined(m.b_store), combined(m.b_ceiling)
    ratio_a = a_store.rate / a_base.rate
    ratio_b = b_store.rate / b_ceiling.rate
    print(f"{'scenario':<36}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}  each round")
    print(line(labels[0] + " store", a_store))
    print(line(labels[0] + " single-row", a_base, f"{ratio_a:.2f}", per_round(m.a_store,
                                                                              m.a_baseline)))
    print(line(labels[1] + " store", b_store))
    print(line(labels[1] + " ceiling", b_ceiling, f"{ratio_b:.2f}", per_round(m.b_store,
                                                                             m.b_ceiling)))
    print(line(labels[1] + " single-row", m.b_single, f"{b_store.rate / m.b_single.rate:.2f}"))
    print(f"(ratio: store / the line's baseline, events/s; stored event size {m.size} bytes, store"
          f" and baselines alike; the ceiling's latency is a transaction of {CEILING_BATCH} rows)")
    print()
    print(f"target (a) store >= 0.9x the single-row insert: {ratio_a:.2f}x "
          f"({a_store.rate:,.0f} vs {a_base.rate:,.0f} events/s) -> {verdict(ratio_a >= 0.9)}")
    ok = ratio_b >= 0.5 and b_store.percentile_ms(99) <= 20
    print(
        f"target (b) store >= 0.5x the {CEILING_BATCH}-rows-per-transaction ceiling, p99 <= 20 ms:"
        f" {ratio_b:.2f}x ({b_store.rate:,.0f} vs {b_ceiling.rate:,.0f} events/s), "
        f"p99 {b_store.percentile_ms(99):.1f} ms -> {verdict(ok)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="(a): events of the one writer")
    parser.add_argument("--writers", type=int, default=100, help="(b): concurrent writers (<= 100)")
    parser.add_argument("--per-writer", type=int, default=200, help="(b): events per writer")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of each side")
    parser.add_argument("--quick", action="store_true", help="smoke run: 500 and 100 x 10")
    args = parser.parse_args()
    if args.quick:
        args.events, args.per_writer, args.rounds = 500, 10, 2
    if not 1 <= args.writers <= 100:
        # The baseline holds one connection per writer; the server allows 100 in all.
        parser.error("--writers must be 1..100")
    if not 1 <= args.rounds <= min(args.events, args.per_writer):
        parser.error("--rounds must be 1..min(--events, --per-writer)")
    labels = [f"(a) 1 x {args.events}", f"(b) {args.writers} x {args.per_writer}"]
    ctx = Context(actor="bench", now=datetime.now(UTC), correlation_id="bench")

    async def run() -> None:
        report(labels, await measure(params, ctx, args))

    with tempfile.TemporaryDirectory(prefix="ipa-bench-") as tmp:
        with embedded_postgres(Path(tmp)) as params:
            anyio.run(run, backend="asyncio")


if __name__ == "__main__":
    main()
