"""The read endpoints under load, warm and cold, beside a trivial endpoint of the same run.

This process runs a private embedded PostgreSQL (fresh temp dir), ``--tasks`` (600) tasks with
their pods, each with a history of ``--jobs`` (3) finished jobs (queued, started, succeeded)
and a pause and resume, and ``create_app`` under uvicorn on 127.0.0.1 configured as ``ipa
serve`` configures it (``server_config``: its httptools protocol with its limits; ``tune_gc``).
Baseline, in the same process and the same run: a trivial Starlette endpoint returning a small
fixed JSON body, on a second uvicorn configured the same way.

The clients run in a separate process (``bench/api.py client ...``): asyncio protocols with
HTTP/1.1 keep-alive, every connection opened before the first request is sent. Two lines per
endpoint:

- **cold**: ``--clients`` (200) paths of the endpoint (one per task) asked once, all at once,
  on as many connections, before anything asked them: the API's response cache and the store's
  buffers have not seen them (the trivial endpoint's cold line: the same number of requests at
  once). ``--tasks`` (600) / ``--clients`` bursts over disjoint paths, one after the other; the
  line is the burst of median p95, and every burst's p95 is printed beside it;
- **warm**: ``--clients`` closed-loop clients (each sends its next request when the previous
  answer is in, no pause) for ``--seconds`` (5), cycling over the paths.

Endpoints: the task list (from the list's memory), one task and its jobs (from its pod's
memory), a task's events page, a past version (state, diff and event) and its agent runs
(from the store, then the API's response cache: see ``ipa/ui/cache.py``). Each line prints
p50/p95/p99 and the ratio of its p95 to the trivial endpoint's (warm to warm, cold to cold).
Any answer but 200 is counted as an error and fails its target.

Targets: warm p95 of every read endpoint ≤ 2× the trivial endpoint's; cold p95 ≤ 50 ms.
Read the targets lines last; performance never makes this script fail.

    .venv/bin/python bench/api.py [--quick] [options]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

from serving import private_ipa, served

SCRIPT = os.path.abspath(__file__)
HOST = "127.0.0.1"  # a Host the app's guard answers (ui/guard.py: loopback names)
WARM_RATIO = 2.0
COLD_P95_MS = 50.0


# The client process ----------------------------------------------------------------------------


class _Client(asyncio.Protocol):
    """One keep-alive connection: once started, sends its next request when the previous
    answer is in, until ``deadline`` (or, with ``once``, after one answer)."""

    def __init__(self, paths: list[str], first: int, stats: dict, done: asyncio.Future,
                 once: bool) -> None:
        self.requests = [f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode()
                         for path in paths]
        self.index = first
        self.stats = stats
        self.done = done
        self.once = once
        self.deadline = 0.0
        self.buffer = b""
        self.sent_at = 0.0

    def connection_made(self, transport) -> None:
        self.transport = transport

    def start(self, deadline: float) -> None:
        self.deadline = deadline
        self.send()

    def send(self) -> None:
        self.sent_at = time.perf_counter()
        self.transport.write(self.requests[self.index % len(self.requests)])
        self.index += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
        if len(self.buffer) < end + 4 + length:
            return
        now = time.perf_counter()
        self.buffer = self.buffer[end + 4 + length:]
        self.stats["latencies"].append(now - self.sent_at)
        if not head.startswith(b"http/1.1 200"):
            self.stats["errors"] += 1
            self.stats.setdefault("first_error", head[:200].decode("latin-1"))
        if self.once or now >= self.deadline:
            self.transport.close()
        else:
            self.send()

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def client_main(port: int, clients: int, seconds: float, paths: list[str]) -> None:
    """``seconds`` 0: each path once (cold), on ``clients`` connections all sending at once."""
    loop = asyncio.get_running_loop()
    stats: dict = {"latencies": [], "errors": 0}
    once = seconds == 0
    count = min(clients, len(paths)) if once else clients
    done = [loop.create_future() for _ in range(count)]
    protocols = []
    for i in range(count):
        _, protocol = await loop.create_connection(
            lambda i=i: _Client(paths, i, stats, done[i], once), "127.0.0.1", port)
        protocols.append(protocol)
    await asyncio.sleep(0.2)  # every connection accepted by the server
    started = time.perf_counter()
    for protocol in protocols:
        protocol.start(started + seconds)
    await asyncio.gather(*done)
    elapsed = time.perf_counter() - started
    if once and len(paths) > count:  # the rest of the paths, a second wave (not expected)
        stats["errors"] += len(paths) - count
    ordered = sorted(stats["latencies"])
    print(json.dumps({
        "requests": len(ordered), "errors": stats["errors"],
        "first_error": stats.get("first_error"), "rate": len(ordered) / elapsed,
        **{f"p{q}": percentile(ordered, q) * 1000 for q in (50, 95, 99)},
    }))


def percentile(ordered: list[float], q: int) -> float:
    """The ``q``-th percentile (nearest rank) of a sorted list; 0 for an empty one."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, -(-len(ordered) * q // 100) - 1))]


def run_clients(port: int, clients: int, seconds: float, paths: list[str]) -> dict:
    out = subprocess.run([sys.executable, SCRIPT, "client", str(port), str(clients),
                          str(seconds), *paths], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


# The server side ----------------------------------------------------------------------------


def history(task_id, jobs: int) -> list:
    """A task's events: created, started, ``jobs`` jobs queued, started and succeeded, paused
    and resumed."""
    from datetime import UTC, datetime

    from ipa.domain import (
        CompleteJob,
        Context,
        CreateTask,
        Pause,
        QueueJob,
        Resume,
        StartJob,
        StartTask,
        decide,
        fold,
    )

    commands = [CreateTask(title=f"task {task_id.hex[:8]}", description="a bench task"),
                StartTask()]
    for j in range(jobs):
        commands += [QueueJob(job_id=f"job-{j}", agent="bench",
                              spec={"command": ["true"]}),
                     StartJob(job_id=f"job-{j}", run_id=f"run-{task_id.hex[:8]}-{j}"),
                     CompleteJob(job_id=f"job-{j}", run_id=f"run-{task_id.hex[:8]}-{j}",
                                 result={"exit_code": 0})]
    commands += [Pause(reason="bench"), Resume()]
    state, events = None, []
    for i, command in enumerate(commands):
        ctx = Context(actor="bench", now=datetime.now(UTC), correlation_id=f"c{i}")
        new = decide(state, command, ctx, task_id)
        state = fold(new, state)
        events += new
    return events


async def server_main(args: argparse.Namespace) -> None:
    import uuid

    import anyio
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from ipa.ui.app import create_app
    from ipa.ui.serve import tune_gc

    async def trivial(request):
        return JSONResponse({"status": "ok", "items": [1, 2, 3]})

    async with private_ipa(node=not args.no_node) as (store, task_list, supervisor):
        ids = [uuid.uuid4() for _ in range(args.tasks)]
        for task_id in ids:
            await store.append(task_id, history(task_id, args.jobs), 0)
        async with anyio.create_task_group() as tg:
            await tg.start(task_list.run)
            await tg.start(supervisor.run)  # a pod for every task
            await task_list.wait_for(await store.head_position())
            versions = (await store.version(ids[0]))
            baseline = Starlette(routes=[Route("/trivial", trivial)])
            app = create_app(supervisor, task_list)
            tune_gc()  # as ipa serve does
            async with served(tg, app, baseline, like_serve=True) as (port, base_port):
                await measure_all(args, ids, versions, port, base_port)
            await supervisor.shutdown(deadline=1)
            tg.cancel_scope.cancel()


def endpoints(ids: list, versions: int) -> dict[str, list[str]]:
    """The paths of each endpoint: one per task (the list: its first page)."""
    middle = max(1, versions // 2)
    return {
        "GET /api/tasks": ["/api/tasks?limit=50"],
        "GET /api/tasks/{id}": [f"/api/tasks/{t}" for t in ids],
        "GET /api/tasks/{id}/jobs": [f"/api/tasks/{t}/jobs" for t in ids],
        "GET /api/tasks/{id}/events": [f"/api/tasks/{t}/events" for t in ids],
        f"GET /api/tasks/{{id}}/versions/{middle}": [f"/api/tasks/{t}/versions/{middle}"
                                                     for t in ids],
        "GET /api/tasks/{id}/runs": [f"/api/tasks/{t}/runs" for t in ids],
    }


async def measure_all(args: argparse.Namespace, ids: list, versions: int, port: int,
                      base_port: int) -> None:
    import anyio

    async def run(target: int, clients: int, seconds: float, paths: list[str]) -> dict:
        return await anyio.to_thread.run_sync(run_clients, target, clients, seconds, paths)

    print(f"bench/api: {args.clients} clients, {args.seconds:g} s per warm line, "
          f"{args.tasks} tasks of {versions} events, {os.cpu_count()} cores, load average "
          f"{load()}; clients in a separate process")
    print(f"  {'':<38} {'req/s':>8} {'p50':>7} {'p95':>7} {'p99':>7}   p95/trivial")
    async def cold_bursts(target: int, paths: list[str]) -> dict:
        """Each ``--clients`` paths asked once, all at once, burst after burst over disjoint
        paths; the burst of median p95 (with every burst's p95), so one burst's hiccup (a
        collection, a lease renewal) is not the figure."""
        slices = [paths[i:i + args.clients] for i in range(0, len(paths), args.clients)]
        bursts = [await run(target, args.clients, 0, part)
                  for part in slices if len(part) == args.clients] or [
                      await run(target, args.clients, 0, paths)]
        median = sorted(bursts, key=lambda burst: burst["p95"])[len(bursts) // 2]
        return {**median, "bursts": [burst["p95"] for burst in bursts]}

    await run(base_port, args.clients, 0.5, ["/trivial"])  # warm-up, not shown
    bursts = len(ids) // args.clients or 1
    base_cold = await cold_bursts(base_port, ["/trivial"] * args.clients * bursts)
    base_warm = await run(base_port, args.clients, args.seconds, ["/trivial"])
    show("trivial Starlette JSON (cold)", base_cold, None)
    show("trivial Starlette JSON (warm)", base_warm, None)
    targets: list[tuple[str, float | None, str, bool]] = []
    for label, paths in endpoints(ids, versions).items():
        if args.only and args.only not in label and args.only != label.split(" ", 1)[-1]:
            continue
        cold = await cold_bursts(port, paths) if len(paths) > 1 else await run(
            port, args.clients, 0, paths)
        warm = await run(port, args.clients, args.seconds, paths)
        show(f"{label} (cold)", cold, base_cold)
        show(f"{label} (warm)", warm, base_warm)
        if len(paths) > 1:
            targets.append((f"{label} cold p95 <= {COLD_P95_MS:g} ms", cold["p95"], "ms",
                            not cold["errors"] and cold["p95"] <= COLD_P95_MS))
        ratio = warm["p95"] / base_warm["p95"] if usable(base_warm) else None
        targets.append((f"{label} warm p95 <= {WARM_RATIO:g}x trivial", ratio, "x",
                        not warm["errors"] and ratio is not None and ratio <= WARM_RATIO))
    print(f"targets (trivial warm p95 {base_warm['p95']:.1f} ms; load average {load()}):")
    for label, value, unit, met in targets:
        if value is None:  # the baseline's failure, not ipa's: no ratio, no verdict
            print(f"  {label:<52} {'-':>7} {unit:<2}  not judged: the trivial baseline "
                  "answered nothing usable")
            continue
        print(f"  {label:<52} {value:>7.2f} {unit:<2}  {'met' if met else 'NOT met'}")


def usable(base: dict) -> bool:
    """Whether a baseline line can be divided by: answers, all 200, a p95 above 0."""
    return base["requests"] > 0 and not base["errors"] and base["p95"] > 0


def show(label: str, result: dict, base: dict | None) -> None:
    ratio = ("" if base is None else f"{result['p95'] / base['p95']:>9.2f}x" if usable(base)
             else f"{'-':>10}")
    errors = (f"   {result['errors']} errors, e.g. {result['first_error'].splitlines()[0]!r}"
              if result["errors"] else "")
    bursts = (f"   (p95 of each burst: {', '.join(f'{p:.1f}' for p in result['bursts'])})"
              if len(result.get("bursts", ())) > 1 else "")
    print(f"  {label:<38} {result['rate']:>8,.0f} {result['p50']:>7.1f} {result['p95']:>7.1f} "
          f"{result['p99']:>7.1f}   {ratio}{errors}{bursts}")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        port, clients, seconds, *paths = sys.argv[2:]
        asyncio.run(client_main(int(port), int(clients), float(seconds), paths))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=600,
                        help="tasks; their paths make tasks // clients cold bursts")
    parser.add_argument("--jobs", type=int, default=3, help="finished jobs per task")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--only", default="",
                        help="only the endpoints whose label has this, or whose path is this")
    parser.add_argument("--no-node", action="store_true",
                        help="the supervisor is no node of the store (no leases to look up)")
    parser.add_argument("--quick", action="store_true", help="50 clients, 50 tasks, 1 s")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.tasks, args.seconds = 50, 50, 1
    asyncio.run(server_main(args))


if __name__ == "__main__":
    main()
