"""Webhooks under load: events appended across tasks, delivered to 10 webhooks subscribed to
everything, at a local receiver that counts by delivery id.

On a private embedded PostgreSQL, with the real ``EventStore`` and ``Webhooks`` (dispatcher and
senders, ``pods/webhooks.py``) in this process, as in ``ipa serve``:

- **receiver**: a separate process (``bench/webhook_receiver.py``: uvicorn + a bare ASGI app,
  so it does not share this process's CPU time): it verifies every message's signature with
  ``standardwebhooks``, counts messages by ``webhook-id`` and keeps, for the first arrival of
  each, the time from the event (the message's ``timestamp``: the decision's clock, taken just
  before its append) to its arrival.
- **load**: ``--tasks`` tasks (default 100), their histories decided before the clock starts:
  created, started, then jobs queued, started and completed over and over (a third of the
  events make a message: ``JobStarted`` → ``agent.spawned``). ``--writers`` writers (default
  20) append one event per ``EventStore.append``, paced to ``--rate`` events/s in all (default
  1,000) for ``--seconds`` (default 10). Ten webhooks subscribed to ``*`` are registered first.
- **figures**: deliveries/s (delivered / time from the first event to the last delivery),
  event → delivery p50 / p99 (target p99 ≤ 1 s), lost (expected delivery ids, computed from the
  histories with the domain's ``messages``/``delivery_id``, never received) and duplicated
  (received more than once); the rate the appends reached.
- **baselines**, same run, same receiver, before the load: loops posting the same number of
  signed messages (up to ``--baseline`` of them), as many at once as the senders
  (``--concurrency``), with nothing else running: through ``httpx`` (what the sync connectors
  use), and through the deliveries' client (``pods/webhook_http.py``: aiohttp).

Other work on the machine shows in every figure: the load average is printed at the start and
the end. Performance never makes this script fail; read the targets line last.

    .venv/bin/python bench/webhooks.py [--quick] [--rate R] [--seconds S] [--tasks N]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx

from ipa.domain import (
    CompleteJob,
    Context,
    CreateTask,
    QueueJob,
    StartJob,
    StartTask,
    TaskEvent,
    decide,
    delivery_id,
    fold,
    messages,
    new_secret,
    observe,
)
from ipa.eventstore import AuditKey, ConnectionParams, EventStore, StoreSettings, embedded_postgres
from ipa.pods import AddressGuard, Webhooks, WebhookSettings
from ipa.pods.webhook_delivery import USER_AGENT, sign
from ipa.pods.webhook_http import ExchangeFailed, HttpClient

WEBHOOKS = 10
TARGET_P99_S = 1.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the load -------------------------------------------------------------------------------


@dataclass
class Load:
    histories: dict[uuid.UUID, list[TaskEvent]]
    messages: list[tuple[Any, str]]
    """Each message with its type (for the expected delivery ids)."""

    @property
    def events(self) -> int:
        return sum(len(h) for h in self.histories.values())


def decide_load(tasks: int, events_per_task: int) -> Load:
    """Histories of ``tasks`` tasks with about ``events_per_task`` events each."""
    histories: dict[uuid.UUID, list[TaskEvent]] = {}
    made = []
    now = datetime.now(UTC)
    for n in range(tasks):
        task_id, state, events, facts = uuid.uuid4(), None, [], None
        commands: list[Any] = [CreateTask(f"bench task {n}", "webhooks under load"),
                               StartTask()]
        job = 0
        while len(events) + len(commands) < events_per_task + 3:
            commands += [QueueJob(f"j{job}", "developer"), StartJob(f"j{job}", f"run-{job}"),
                         CompleteJob(f"j{job}", f"run-{job}")]
            job += 1
        for command in commands:
            new = decide(state, command, Context(actor="bench", now=now,
                                                 correlation_id="bench"), task_id)
            state = fold(new, state)
            events += new
        for event in events:
            facts = observe(facts, event)
            made += [(m, m.type) for m in messages(facts, event)]
        histories[task_id] = events[:events_per_task]
    kept = {(tid, e.originator_version) for tid, h in histories.items() for e in h}
    made = [(m, t) for m, t in made if (m.task_id, m.version) in kept]
    return Load(histories, made)


def restamped(event: TaskEvent) -> TaskEvent:
    """``event`` with the time it is appended (its message's ``timestamp``)."""
    return type(event)(**{**vars(event), "timestamp": datetime.now(UTC)})


async def append_paced(store: EventStore, load: Load, writers: int, rate: float,
                       seconds: float) -> tuple[float, set[tuple[uuid.UUID, int]]]:
    """Append the events, one per append, ``rate`` a second in all, for ``seconds`` at most
    (when the appends cannot keep up, the rest is not appended); return the seconds taken
    and the (task, version) of the events appended."""
    streams = list(load.histories.items())
    interval = writers / rate
    started = time.perf_counter()
    appended: set[tuple[uuid.UUID, int]] = set()

    async def writer(mine: list[tuple[uuid.UUID, list[TaskEvent]]], offset: float) -> None:
        queue = [(tid, e) for k in range(max(len(h) for _, h in mine))
                 for tid, h in mine if k < len(h) for e in [h[k]]]
        stopped: set[uuid.UUID] = set()
        for n, (task_id, event) in enumerate(queue):
            due = started + offset + n * interval
            wait = due - time.perf_counter()
            if wait > 0:
                await anyio.sleep(wait)
            if time.perf_counter() - started > seconds or task_id in stopped:
                stopped.add(task_id)  # time is up: this task's later events are not appended
                continue
            await store.append(task_id, [restamped(event)], event.originator_version - 1)
            appended.add((task_id, event.originator_version))

    async with anyio.create_task_group() as tg:
        for w in range(writers):
            tg.start_soon(writer, streams[w::writers], w / rate)
    return time.perf_counter() - started, appended


# -- measuring ------------------------------------------------------------------------------


def percentile(samples: list[float], p: int) -> float:
    if len(samples) < 2:
        return samples[0] if samples else float("nan")
    return statistics.quantiles(samples, n=100, method="inclusive")[p - 1]


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def stats(client: httpx.AsyncClient) -> dict[str, Any]:
    return (await client.get("/stats", timeout=60)).json()


async def baseline(url: str, secret: str, count: int, concurrency: int) -> tuple[float, float]:
    """Deliveries/s of two plain loops posting ``count`` signed messages, ``concurrency`` at
    once: through httpx (one client per 8 of them: one pool of 64 connections spends most of
    its time in httpcore's bookkeeping), and through the deliveries' client (``webhook_http``,
    sized like the senders')."""
    body = json.dumps({"type": "agent.spawned", "timestamp": datetime.now(UTC).isoformat(),
                       "data": {"task_id": str(uuid.uuid4())}})

    async def loop(post: Any) -> float:
        sent = 0

        async def worker(n: int) -> None:
            nonlocal sent
            while sent < count:
                sent += 1
                signed = sign(secret, str(uuid.uuid4()), datetime.now(UTC), body)
                try:
                    await post(n, signed)
                except (httpx.HTTPError, ExchangeFailed, OSError):
                    sent -= 1  # again (a connection the receiver closed as it was reused)

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for n in range(concurrency):
                tg.start_soon(worker, n)
        return count / (time.perf_counter() - started)

    clients = [httpx.AsyncClient(limits=httpx.Limits(max_connections=8, keepalive_expiry=2.0))
               for _ in range(-(-concurrency // 8))]
    own = HttpClient(AddressGuard(allow_private=True).addresses, connections=concurrency)

    async def with_httpx(n: int, signed: dict[str, str]) -> None:
        response = await clients[n % len(clients)].post(
            url, content=body, headers={"content-type": "application/json", **signed})
        response.raise_for_status()

    async def with_own(n: int, signed: dict[str, str]) -> None:
        answer = await own.post(url, body.encode(), {
            "User-Agent": USER_AGENT, "Content-Type": "application/json", **signed})
        assert answer.status == 200

    try:
        return await loop(with_httpx), await loop(with_own)
    finally:
        for client in clients:
            await client.aclose()
        await own.aclose()


async def measure(params: ConnectionParams, args: argparse.Namespace) -> None:
    began = time.perf_counter()
    print(f"webhooks: {args.rate:,.0f} events/s for {args.seconds:g} s across {args.tasks} "
          f"tasks, {WEBHOOKS} webhooks subscribed to *; {os.cpu_count()} CPUs, load average "
          f"{load_average()} (other work on the machine shows in every figure)", flush=True)
    per_task = max(3, round(args.rate * args.seconds / args.tasks))
    load = decide_load(args.tasks, per_task)
    hook_secrets = {f"/h/{i}": new_secret(secrets.token_bytes(32)) for i in range(WEBHOOKS)}
    port = free_port()
    receiver = subprocess.Popen([sys.executable, str(Path(__file__).with_name(
        "webhook_receiver.py")), str(port), json.dumps(hook_secrets)])
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base_url) as control:
            with anyio.fail_after(60):
                while True:
                    try:
                        await control.get("/stats")
                        break
                    except httpx.TransportError:
                        await anyio.sleep(0.1)
            count = min(len(load.messages) * WEBHOOKS, args.baseline)
            httpx_rate, own_rate = await baseline(f"{base_url}/h/0", hook_secrets["/h/0"],
                                                  count, args.concurrency)
            await control.post("/reset")

            settings = StoreSettings(snapshot_interval=100, live=True,
                                     audit_key=AuditKey.from_text(secrets.token_hex(32)))
            async with EventStore.open(params, settings) as store, \
                    anyio.create_task_group() as tg:
                webhooks = Webhooks(store, settings=WebhookSettings(
                    allow_private=True, concurrency=args.concurrency))
                await tg.start(webhooks.run)
                ids = []
                for path, secret in hook_secrets.items():
                    view, _ = await webhooks.register(f"{base_url}{path}", ["*"], secret,
                                                      actor="bench")
                    ids.append(view["id"])
                started = time.time()
                append_s, appended = await append_paced(store, load, args.writers, args.rate,
                                                        args.seconds)
                made = [m for m, _ in load.messages if (m.task_id, m.version) in appended]
                expected = {delivery_id(hook, message) for hook in ids for message in made}
                print(f"(appended {len(appended):,} events in {append_s:.1f} s; draining)",
                      flush=True)
                with anyio.move_on_after(args.drain):
                    while len((await stats(control))["counts"]) < len(expected):
                        await anyio.sleep(0.5)
                await anyio.sleep(1.0)  # anything sent twice comes by now
                got = await stats(control)
                statuses = await webhooks.table.counts()
                tg.cancel_scope.cancel()
    finally:
        receiver.terminate()
        receiver.wait(10)

    counts: dict[str, int] = got["counts"]
    delivered = len(set(counts) & expected)
    lost = len(expected - set(counts))
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    unexpected = len(set(counts) - expected)
    latency = got["latency"]
    span = max(got["last"] - started, 1e-9)
    rate = delivered / span
    p50, p99 = percentile(latency, 50), percentile(latency, 99)
    print(f"\nappends: {len(appended):,} events in {append_s:.1f} s = "
          f"{len(appended) / append_s:,.0f} events/s (asked {args.rate:,.0f}); "
          f"{len(made):,} make a message, {len(expected):,} deliveries expected")
    print(f"delivered: {delivered:,} in {span:.1f} s (first event → last delivery) = "
          f"{rate:,.0f} deliveries/s")
    print(f"baselines ({count:,} posts, {args.concurrency} at once, nothing else running): "
          f"a plain httpx loop {httpx_rate:,.0f}/s (ipa/httpx loop {rate / httpx_rate:.2f}); "
          f"the same loop through ipa's HTTP client (aiohttp) {own_rate:,.0f}/s "
          f"(ipa/that loop {rate / own_rate:.2f})")
    print(f"event → delivery: p50 {p50 * 1000:,.0f} ms, p99 {p99 * 1000:,.0f} ms, "
          f"max {max(latency, default=float('nan')) * 1000:,.0f} ms")
    pending = statuses.get("pending", 0)
    print(f"not received by the end: {lost:,} (of which still pending, not lost: "
          f"{min(pending, lost):,}); duplicated: {duplicates:,}; unexpected ids: "
          f"{unexpected:,}; bad signatures: {got['bad']:,}")
    print(f"\nload average at the end {load_average()}; bench time "
          f"{time.perf_counter() - began:,.1f} s")
    print(f"target: event → delivery p99 <= {TARGET_P99_S:g} s: {p99:.3f} s -> "
          f"{verdict(p99 <= TARGET_P99_S)}; nothing lost or duplicated: "
          f"{verdict(lost == 0 and duplicates == 0)}"
          + ("" if lost == 0 else f" ({lost:,} not received within --drain {args.drain:g} s)"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000.0, help="events appended a second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to append")
    parser.add_argument("--tasks", type=int, default=100, help="task streams appended to")
    parser.add_argument("--writers", type=int, default=20, help="concurrent appenders")
    parser.add_argument("--concurrency", type=int, default=WebhookSettings.concurrency,
                        help="attempts at once (the senders, and the baseline's requests)")
    parser.add_argument("--baseline", type=int, default=5_000,
                        help="posts of the baseline at most")
    parser.add_argument("--drain", type=float, default=60.0,
                        help="seconds to wait for the last deliveries")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 s, 20 tasks")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.tasks, args.writers, args.baseline = 5.0, 20, 10, 2000
    if args.rate <= 0 or args.seconds <= 0 or args.tasks < 1 or args.writers < 1:
        parser.error("--rate and --seconds must be > 0, --tasks and --writers >= 1")
    args.writers = min(args.writers, args.tasks)
    with tempfile.TemporaryDirectory(prefix="ipa-bench-") as tmp:
        with embedded_postgres(Path(tmp)) as params:
            anyio.run(measure, params, args, backend="asyncio")


if __name__ == "__main__":
    main()
