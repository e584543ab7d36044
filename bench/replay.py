"""Loading a long task stream: a full replay against raw PostgreSQL and the library, and a load
from a snapshot at head.

What is measured, on a private embedded PostgreSQL in a fresh temp dir: one task stream of N
events (default 100,000: create, start, then pause/resume), written in appends of 1,000 events.
Then, before any snapshot exists, in turns (median of 3 each):

1. ipa: ``EventStore.load(task_id)`` at head, a full replay: every event read, decoded and
   folded (``eventstore/replay.py``);
2. the ceiling, written plainly below: the stream's rows fetched with the same driver (one
   psycopg ``AsyncConnection``, one query), then in one pass each body ``json.loads``-ed into
   its event and folded with the domain's ``evolve`` into the same ``TaskState`` (checked equal
   to ipa's);
3. the peer: the library's ``Repository.get`` (how ``load`` worked before #18), in a worker
   thread, on the same rows and projector;
4. the steps apart, to show where the time goes: fetching the rows (the ceiling's query; ipa's
   reader), decoding them into events (``json.loads`` as above; ipa's ``EventCodec.decode``),
   and folding the events with ``evolve`` (the same for both: the domain's cost, paid by any
   load).

Then ``take_snapshot`` at head and ``load`` at head from that snapshot (median of 20), and the
speedup (full replay / snapshot load). Read the target lines last: they say whether the issue's
goals are met; performance never makes this script fail.

    .venv/bin/python bench/replay.py [--quick] [--events N] [--batch B]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from itertools import chain, cycle, islice
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import anyio
import psycopg

from ipa.domain import (
    Context,
    CreateTask,
    Pause,
    Resume,
    StartTask,
    TaskCreated,
    TaskEvent,
    TaskPaused,
    TaskResumed,
    TaskStarted,
    TaskState,
    decide,
    evolve,
)
from ipa.eventstore import EventStore, StoreSettings, embedded_postgres
from ipa.eventstore.snapshots import project_task

FULL_REPLAYS = 3
SNAPSHOT_LOADS = 20
TARGET_RATIO = 2.0
SEAL = 128  # the hash chain's two digests before each stored body (eventstore/codec.py)
EVENT_CLASSES = {f"{c.__module__}:{c.__qualname__}": c
                 for c in (TaskCreated, TaskStarted, TaskPaused, TaskResumed)}


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


async def fetch(conn: psycopg.AsyncConnection, task_id: UUID) -> list[tuple[int, str, bytes]]:
    cursor = await conn.execute(
        "SELECT originator_version, topic, state FROM events WHERE originator_id = %s "
        "ORDER BY originator_version", (task_id,), binary=True)
    return await cursor.fetchall()


def to_event(task_id: UUID, version: int, topic: str, state: bytes) -> TaskEvent:
    data = json.loads(state[SEAL:])
    data["timestamp"] = datetime.fromisoformat(data["timestamp"]["_data_"])
    data.pop("class_version", None)
    data["originator_id"] = task_id
    data["originator_version"] = version
    event = object.__new__(EVENT_CLASSES[topic])
    object.__setattr__(event, "__dict__", data)
    return event


async def raw_replay(conn: psycopg.AsyncConnection, task_id: UUID) -> TaskState | None:
    """The ceiling: fetch, then ``json.loads`` and fold each row, as plainly as it can be."""
    folded: TaskState | None = None
    for version, topic, state in await fetch(conn, task_id):
        folded = evolve(folded, to_event(task_id, version, topic, state))
    return folded


async def steps_apart(store: EventStore, conn: psycopg.AsyncConnection, task_id: UUID
                      ) -> dict[str, float]:
    """Seconds of each step on its own: fetch and decode by the ceiling and by ipa, the fold."""
    times: dict[str, float] = {}
    start = time.perf_counter()
    rows = await fetch(conn, task_id)
    times["raw fetch"] = time.perf_counter() - start
    start = time.perf_counter()
    events = [to_event(task_id, *row) for row in rows]
    times["raw decode"] = time.perf_counter() - start
    start = time.perf_counter()
    folded: TaskState | None = None
    for event in events:
        folded = evolve(folded, event)
    times["fold"] = time.perf_counter() - start
    del events, rows
    start = time.perf_counter()
    rows = await store._reader.rows(task_id)
    times["ipa fetch"] = time.perf_counter() - start
    start = time.perf_counter()
    decoded = [store._codec.decode(task_id, *row) for row in rows]
    times["ipa decode"] = time.perf_counter() - start
    if len(decoded) != folded.version:
        raise RuntimeError("ipa's reader and the ceiling's query read different rows")
    return times


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def per_event(seconds: float, n: int) -> str:
    return f"{seconds * 1e6 / n:6.2f} us/event"


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

        samples: dict[str, list[float]] = {}

        async def timed(key: str, load: Callable[[], Any]) -> TaskState:
            start = time.perf_counter()
            state = await load()
            samples.setdefault(key, []).append(time.perf_counter() - start)
            if state.version != n:  # a load that stopped early would look fast
                raise RuntimeError(f"{key} returned version {state.version}, expected {n}")
            return state

        async with await psycopg.AsyncConnection.connect(params.conninfo(),
                                                         autocommit=True) as conn:
            for _ in range(FULL_REPLAYS):  # in turns, so that noise falls on all three alike
                ipa_state = await timed("ipa", lambda: store.load(task_id))
                raw_state = await timed("raw", lambda: raw_replay(conn, task_id))
                await timed("library", lambda: store._run_sync(
                    store._repository.get, task_id, projector_func=project_task))
            for _ in range(FULL_REPLAYS):
                for key, seconds in (await steps_apart(store, conn, task_id)).items():
                    samples.setdefault(key, []).append(seconds)
        if raw_state != ipa_state:
            raise RuntimeError("the ceiling's fold differs from ipa's load")

        start = time.perf_counter()
        snapshot_version = await store.take_snapshot(task_id)
        snapshot_s = time.perf_counter() - start
        snap_ms = await median_load_ms(store, task_id, n, SNAPSHOT_LOADS)

    med = {key: statistics.median(values) for key, values in samples.items()}
    ratio = med["ipa"] / med["raw"]
    full_ms = med["ipa"] * 1000
    speedup = full_ms / snap_ms
    print(f"stream of {n:,} events; full replays: median of {FULL_REPLAYS}, taken in turns")
    print(f"{f'write, appends of {batch:,} events':<50}{write_s * 1000:>10.1f} ms  "
          f"{n / write_s:,.0f} events/s")
    rows = [
        ("ipa: EventStore.load, full replay", med["ipa"]),
        ("ceiling: fetch + json.loads + evolve", med["raw"]),
        ("peer: the library's Repository.get", med["library"]),
    ]
    for label, seconds in rows:
        print(f"{label:<50}{seconds * 1000:>10.1f} ms  {per_event(seconds, n)}")
    print(f"{'ipa / ceiling':<50}{ratio:>10.2f} x")
    print(f"{'ipa / library':<50}{med['ipa'] / med['library']:>10.2f} x")
    print(f"the steps apart (median of {FULL_REPLAYS}):")
    for label, key in (("  fetch: ceiling (psycopg async, binary)", "raw fetch"),
                       ("  fetch: ipa (its read pool)", "ipa fetch"),
                       ("  decode: ceiling (json.loads into events)", "raw decode"),
                       ("  decode: ipa (EventCodec.decode, orjson)", "ipa decode"),
                       ("  fold: the domain's evolve (both)", "fold")):
        print(f"{label:<50}{med[key] * 1000:>10.1f} ms  {per_event(med[key], n)}")
    print(f"{'  decode: ipa / ceiling':<50}{med['ipa decode'] / med['raw decode']:>10.2f} x")
    ipa_read = med["ipa fetch"] + med["ipa decode"]
    raw_read = med["raw fetch"] + med["raw decode"]
    print(f"{'  fetch + decode: ipa / ceiling':<50}{ipa_read / raw_read:>10.2f} x  "
          "(the store's own part)")
    fold_share = med["fold"] / (raw_read + med["fold"])
    print(f"{'  the fold, share of the ceiling':<50}{fold_share:>10.0%}")
    print(f"{'  full replay / ceiling without its fold':<50}{med['ipa'] / raw_read:>10.2f} x  "
          "(fetch + json.loads only)")
    print(f"{f'take_snapshot at version {snapshot_version:,}':<50}{snapshot_s * 1000:>10.1f} ms")
    print(f"{f'load at head, from snapshot (median of {SNAPSHOT_LOADS})':<50}{snap_ms:>10.2f} ms")
    print(f"{'speedup (full replay / snapshot load)':<50}{speedup:>10,.0f} x")
    print()
    print(f"target: full replay <= {TARGET_RATIO:g}x the ceiling: {ratio:.2f}x -> "
          f"{verdict(ratio <= TARGET_RATIO)}")
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
