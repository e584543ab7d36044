"""Loading a long task stream: full replay against a load from a snapshot at head.

What is measured, on a private embedded PostgreSQL in a fresh temp dir: one task stream of N
events (default 100,000: create, start, then pause/resume), written in appends of 1,000 events.
Then ``EventStore.load(task_id)`` at head

1. before any snapshot exists: every event is read, decoded and folded (median of 3 loads);
2. after ``take_snapshot(task_id)`` at head: the snapshot is read and nothing after it
   (median of 20 loads).

Both are the store's public ``load``, so the times include the worker-thread hop and the
queries. "speedup" is full replay / snapshot load. Read the targets lines last: they say whether
the issue's goals are met; performance never makes this script fail.

    .venv/bin/python bench/replay.py [--quick] [--events N] [--batch B]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import chain, cycle, islice
from pathlib import Path
from uuid import UUID, uuid4

import anyio

from ipa.domain import (
    Context,
    CreateTask,
    Pause,
    Resume,
    StartTask,
    TaskEvent,
    TaskState,
    decide,
    evolve,
)
from ipa.eventstore import EventStore, StoreSettings, embedded_postgres

FULL_REPLAYS = 3
SNAPSHOT_LOADS = 20


def task_stream(task_id: UUID, n: int, ctx: Context) -> Iterator[TaskEvent]:
    """A legal stream of ``n`` events (the load folds them, so they must follow the workflow)."""
    commands = chain(
        [CreateTask(title="bench task", description="written by bench/replay.py"), StartTask()],
        cycle([Pause(reason="bench"), Resume()]),
    )
    state: TaskState | None = None
    for command in islice(commands, n):
        [event] = decide(state, command, ctx, task_id)
        state = evolve(state, event)
        yield event


async def write_stream(store: EventStore, events: list[TaskEvent], batch: int) -> None:
    for version in range(0, len(events), batch):
        await store.append(events[0].originator_id, events[version : version + batch], version)


async def median_load_ms(store: EventStore, task_id: UUID, n: int, times: int) -> float:
    """Median wall time of ``times`` loads at head, in ms; each must reach version ``n``."""
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        state = await store.load(task_id)
        samples.append(time.perf_counter() - start)
        # A load that stopped early would look fast; make sure it did the whole job.
        if state.version != n:
            raise RuntimeError(f"load returned version {state.version}, expected {n}")
    return statistics.median(samples) * 1000


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


async def measure(params, n: int, batch: int) -> None:
    ctx = Context(actor="bench", now=datetime.now(UTC), correlation_id="bench")
    task_id = uuid4()
    # No automatic snapshots: the first loads must replay the whole stream.
    async with EventStore.open(params, StoreSettings(snapshot_interval=0, live=False)) as store:
        # Decided before the clock starts: the write rate is the store's, not the domain's.
        events = list(task_stream(task_id, n, ctx))
        start = time.perf_counter()
        await write_stream(store, events, batch)
        write_s = time.perf_counter() - start
        if await store.snapshots(task_id):
            raise RuntimeError("a snapshot exists before take_snapshot: the replay is not full")
        full_ms = await median_load_ms(store, task_id, n, FULL_REPLAYS)
        start = time.perf_counter()
        snapshot_version = await store.take_snapshot(task_id)
        snapshot_s = time.perf_counter() - start
        snap_ms = await median_load_ms(store, task_id, n, SNAPSHOT_LOADS)

    speedup = full_ms / snap_ms
    rows = [
        (f"write, appends of {batch:,} events", write_s * 1000, f"{n / write_s:,.0f} events/s"),
        (f"load at head, full replay (median of {FULL_REPLAYS})", full_ms,
         f"{full_ms * 1000 / n:.1f} us/event"),
        (f"take_snapshot at version {snapshot_version:,}", snapshot_s * 1000, ""),
        (f"load at head, from snapshot (median of {SNAPSHOT_LOADS})", snap_ms, ""),
    ]
    print(f"stream of {n:,} events")
    for label, ms, note in rows:
        print(f"{label:<46}{ms:>11.2f} ms  {note}".rstrip())
    print(f"{'speedup (full replay / snapshot load)':<46}{speedup:>11,.0f} x")
    print()
    print(f"target: snapshot load <= 20 ms: {snap_ms:.2f} ms -> {verdict(snap_ms <= 20)}")
    print(f"target: snapshot load >= 100x faster than full replay: {speedup:,.0f}x -> "
          f"{verdict(speedup >= 100)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000, help="events in the stream")
    parser.add_argument("--batch", type=int, default=1000, help="events per append while writing")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5,000 events")
    args = parser.parse_args()
    if args.quick:
        args.events = 5000
    if args.events < 2 or args.batch < 1:
        parser.error("--events must be >= 2 and --batch >= 1")
    with tempfile.TemporaryDirectory(prefix="ipa-bench-") as tmp:
        with embedded_postgres(Path(tmp)) as params:
            anyio.run(measure, params, args.events, args.batch, backend="asyncio")


if __name__ == "__main__":
    main()
