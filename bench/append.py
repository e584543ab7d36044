"""Append throughput and latency of the event store, against raw PostgreSQL inserts.

What is measured, on a private embedded PostgreSQL in a fresh temp dir:

(a) one writer appends N events, one per ``EventStore.append`` call, to one task stream;
(b) W writers (default 100) each append E events (default 100) to their own stream, at once.

Each append carries one event, so events/s is also appends/s; latency is the time of one
``append`` call, which returns once its transaction committed (group commit: concurrent appends
share a transaction). The baseline runs in the same process on the same server: single-row
``INSERT``s, one row per transaction (autocommit), into a table with the store's columns and
keys and a payload of the store's mean stored size, with psycopg 3 ``AsyncConnection``s, one
connection per writer, on the same event loop. It takes no table lock and sends no NOTIFY, and
has no hash chain, manifest or JSON encoding: "store/baseline" is what the store's whole path
costs (keyed with a fresh audit key, as ``ipa serve`` keys a new store) relative to the plain
insert. For (b) a second baseline, the **batch ceiling**: the same W x E rows inserted 100 rows
per transaction (one ``INSERT ... SELECT FROM unnest(...)`` per transaction, autocommit, one
connection, back to back): what any group commit of 100 appends on one connection could reach.
Read the targets lines last: they say whether the issue's goals are met (#18: (a) store >= 0.9x
the single-row insert; (b) store >= 0.5x the batch ceiling with p99 <= 20 ms); performance
never makes this script fail.

    .venv/bin/python bench/append.py [--quick] [--events N] [--writers W] [--per-writer E]
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

BASELINE_TABLE = "bench_baseline_events"
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


async def measure_store(
    params: ConnectionParams, ctx: Context, shapes: list[tuple[int, int]]
) -> tuple[list[Result], int]:
    """One result per (writers, events each) shape, and the mean stored size of an event."""
    results = []
    # No automatic snapshots and no live tail: only the append path is measured.
    key = AuditKey.from_text(secrets.token_hex(32))
    settings = StoreSettings(snapshot_interval=0, live=False, audit_key=key)
    async with EventStore.open(params, settings) as store:
        await run_writers([store_writer(store, task_stream(WARMUP_APPENDS, ctx))])
        for writers, each in shapes:
            streams = [task_stream(each, ctx) for _ in range(writers)]
            results.append(await run_writers([store_writer(store, s) for s in streams]))
        # The baseline's payload gets the size the store really wrote (JSON + hash chain).
        rows = await store.read_raw(streams[0][0].originator_id)
    return results, round(statistics.mean(len(row.state) for row in rows))


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


async def measure_baseline(
    params: ConnectionParams, shapes: list[tuple[int, int]], payload_size: int
) -> tuple[list[Result], Result]:
    """The single-row baseline of every shape, and the batch ceiling of the last one's rows."""
    async with await psycopg.AsyncConnection.connect(params.conninfo(), autocommit=True) as conn:
        await conn.execute(f"DROP TABLE IF EXISTS {BASELINE_TABLE}")
        await conn.execute(
            f"CREATE TABLE {BASELINE_TABLE} (originator_id uuid NOT NULL,"
            " originator_version bigint NOT NULL, topic text, state bytea,"
            " notification_id bigserial, PRIMARY KEY (originator_id, originator_version))"
        )
        await conn.execute(f"CREATE UNIQUE INDEX ON {BASELINE_TABLE} (notification_id)")
    topic = "ipa.domain.events:TaskPaused"
    payload = os.urandom(payload_size)
    results = []
    for writers, each in [(1, WARMUP_APPENDS), *shapes]:
        # The setup connection is closed first: the server allows 100 connections in all.
        conns = [
            await psycopg.AsyncConnection.connect(params.conninfo(), autocommit=True)
            for _ in range(writers)
        ]
        try:
            results.append(
                await run_writers([baseline_writer(c, each, topic, payload) for c in conns])
            )
        finally:
            for c in conns:
                await c.close()
    writers, each = shapes[-1]
    async with await psycopg.AsyncConnection.connect(params.conninfo(), autocommit=True) as conn:
        await run_writers([ceiling_writer(conn, 10 * CEILING_BATCH, topic, payload)])  # warm-up
        ceiling = await run_writers([ceiling_writer(conn, writers * each, topic, payload)])
    return results[1:], ceiling


# -- report ---------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(
    labels: list[str], store: list[Result], baseline: list[Result], ceiling: Result, size: int
) -> None:
    print(f"{'scenario':<34}{'events/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'store/baseline':>16}")
    for label, s, b in zip(labels, store, baseline, strict=True):
        for who, r, ratio in (("store", s, f"{s.rate / b.rate:.2f}"), ("baseline", b, "")):
            print(
                f"{label + ' ' + who:<34}{r.rate:>10,.0f}{r.percentile_ms(50):>9.2f}"
                f"{r.percentile_ms(99):>9.2f}{ratio:>16}"
            )
    a, b = store
    print(
        f"{labels[-1] + ' ceiling':<34}{ceiling.rate:>10,.0f}{ceiling.percentile_ms(50):>9.2f}"
        f"{ceiling.percentile_ms(99):>9.2f}{b.rate / ceiling.rate:>16.2f}"
    )
    print(f"(stored event size: {size} bytes, store and baselines alike; the ceiling's latency is"
          f" a transaction of {CEILING_BATCH} rows)")
    print()
    ratio_a = a.rate / baseline[0].rate
    print(f"target (a) store >= 0.9x the single-row insert: {ratio_a:.2f}x "
          f"({a.rate:,.0f} vs {baseline[0].rate:,.0f} events/s) -> {verdict(ratio_a >= 0.9)}")
    ratio_b = b.rate / ceiling.rate
    ok = ratio_b >= 0.5 and b.percentile_ms(99) <= 20
    print(
        f"target (b) store >= 0.5x the {CEILING_BATCH}-rows-per-transaction ceiling, p99 <= 20 ms:"
        f" {ratio_b:.2f}x ({b.rate:,.0f} vs {ceiling.rate:,.0f} events/s), "
        f"p99 {b.percentile_ms(99):.1f} ms -> {verdict(ok)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=5000, help="(a): events of the one writer")
    parser.add_argument("--writers", type=int, default=100, help="(b): concurrent writers (<= 100)")
    parser.add_argument("--per-writer", type=int, default=100, help="(b): events per writer")
    parser.add_argument("--quick", action="store_true", help="smoke run: 500 and 100 x 10")
    args = parser.parse_args()
    if args.quick:
        args.events, args.per_writer = 500, 10
    if not 1 <= args.writers <= 100:
        # The baseline holds one connection per writer; the server allows 100 in all.
        parser.error("--writers must be 1..100")
    shapes = [(1, args.events), (args.writers, args.per_writer)]
    labels = [f"(a) 1 x {args.events}", f"(b) {args.writers} x {args.per_writer}"]
    ctx = Context(actor="bench", now=datetime.now(UTC), correlation_id="bench")

    async def measure() -> None:
        store, size = await measure_store(params, ctx, shapes)
        baseline, ceiling = await measure_baseline(params, shapes, size)
        report(labels, store, baseline, ceiling, size)

    with tempfile.TemporaryDirectory(prefix="ipa-bench-") as tmp:
        with embedded_postgres(Path(tmp)) as params:
            anyio.run(measure, backend="asyncio")


if __name__ == "__main__":
    main()
