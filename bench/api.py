"""The read endpoints under load: ``--clients`` (200) concurrent clients, p50/p95 per request.

This process runs a private embedded PostgreSQL (fresh temp dir), ``--tasks`` (200) tasks of a
few events each with their pods, and ``create_app`` under uvicorn on 127.0.0.1, listening as
``ipa serve`` does. The clients run in a separate process (``bench/api.py client ...``):
asyncio protocols with HTTP/1.1 keep-alive, each client sending its next request when the
previous answer is in (closed loop, no pause), for ``--seconds`` (5) per endpoint. Endpoints:
the task list (from the list's memory), one task and its jobs (from its pod's memory), a
task's events and a past version with its diff (from the store, answers kept by the API's
cache: see ``ipa/ui/cache.py``). For those two, a *cold* line comes first: every path asked
once, all 200 at once, before any answer was kept. Baseline, in the same run and the same
server process: a trivial Starlette endpoint returning a fixed small JSON body on a second
uvicorn.

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


class _Client(asyncio.Protocol):
    """One keep-alive connection sending its next request when the previous answer is in."""

    def __init__(self, paths: list[str], index: int, deadline: float, stats: dict,
                 done: asyncio.Future) -> None:
        self.requests = [f"GET {path} HTTP/1.1\r\nHost: b\r\n\r\n".encode()
                         for path in paths]
        self.index = index
        self.deadline = deadline
        self.stats = stats
        self.done = done
        self.buffer = b""
        self.started = 0.0
        self.first = index
        self.once = deadline == 0.0  # one request, then close

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.send()

    def send(self) -> None:
        if (self.index > self.first) if self.once else time.perf_counter() >= self.deadline:
            self.transport.close()
            return
        self.started = time.perf_counter()
        self.transport.write(self.requests[self.index % len(self.requests)])
        self.index += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end]
        at = head.lower().find(b"content-length:")
        length = int(head[at + 15:head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0
                          else len(head)]) if at >= 0 else 0
        if len(self.buffer) < end + 4 + length:
            return
        self.buffer = self.buffer[end + 4 + length:]
        self.stats["latencies"].append(time.perf_counter() - self.started)
        if not head.startswith(b"HTTP/1.1 200"):
            self.stats["errors"] += 1
        self.send()

    def connection_lost(self, exc) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def client_main(port: int, clients: int, seconds: float, paths: list[str]) -> None:
    loop = asyncio.get_running_loop()
    stats = {"latencies": [], "errors": 0}
    deadline = time.perf_counter() + seconds if seconds else 0.0
    done = [loop.create_future() for _ in range(clients)]
    for i in range(clients):
        await loop.create_connection(
            lambda i=i: _Client(paths, i, deadline, stats, done[i]), "127.0.0.1", port)
    await asyncio.gather(*done)
    ordered = sorted(stats["latencies"])
    print(json.dumps({
        "requests": len(ordered), "errors": stats["errors"],
        "rate": len(ordered) / (seconds or max(ordered)),
        "p50": ordered[len(ordered) // 2] * 1000,
        "p95": ordered[int(len(ordered) * 0.95)] * 1000,
    }))


def run_clients(port: int, clients: int, seconds: float, paths: list[str]) -> dict:
    out = subprocess.run([sys.executable, SCRIPT, "client", str(port), str(clients),
                          str(seconds), *paths], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


async def server_main(args: argparse.Namespace) -> None:
    from datetime import UTC, datetime

    import anyio
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from ipa.domain import Context, CreateTask, Pause, Resume, decide
    from ipa.ui.app import create_app

    async def trivial(request):
        return JSONResponse({"status": "ok", "items": [1, 2, 3]})

    async with private_ipa() as (store, task_list, supervisor):
        ids = []
        for i in range(args.tasks):
            ctx = Context(actor="bench", now=datetime.now(UTC), correlation_id=f"c{i}")
            events = decide(None, CreateTask(title=f"task {i}", description="d"), ctx,
                            task_id := __import__("uuid").uuid4())
            await store.append(task_id, events, 0)
            ids.append(task_id)
        async with anyio.create_task_group() as tg:
            await tg.start(task_list.run)
            await tg.start(supervisor.run)  # starts every task (TaskStarted)
            for task_id in ids:  # a few more events each
                for command in (Pause(reason="p"), Resume()):
                    await supervisor.execute(task_id, command, actor="bench")
            await task_list.wait_for(await store.head_position())
            baseline = Starlette(routes=[Route("/trivial", trivial)])
            async with served(tg, create_app(supervisor, task_list),
                              baseline) as (port, base_port):
                await measure_all(args, ids, port, base_port)
            await supervisor.shutdown(deadline=1)
            tg.cancel_scope.cancel()


async def measure_all(args: argparse.Namespace, ids: list, port: int, base_port: int) -> None:
    import anyio

    endpoints = {
        "GET /api/tasks": ["/api/tasks?limit=50"],
        "GET /api/tasks/{id}": [f"/api/tasks/{t}" for t in ids],
        "GET /api/tasks/{id}/events": [f"/api/tasks/{t}/events" for t in ids],
        "GET /api/tasks/{id}/jobs": [f"/api/tasks/{t}/jobs" for t in ids],
        "GET /api/tasks/{id}/versions/3": [f"/api/tasks/{t}/versions/3"
                                           for t in ids],
    }
    print(f"bench/api: {args.clients} clients, {args.seconds:g} s per "
          f"endpoint, {args.tasks} tasks, {os.cpu_count()} cores; clients in "
          "a separate process")
    base = await anyio.to_thread.run_sync(
        run_clients, base_port, args.clients, args.seconds, ["/trivial"])
    show("baseline: trivial Starlette JSON", base)
    worst = 0.0
    for label, paths in endpoints.items():
        if args.only and args.only not in label:
            continue
        if label in CACHED:
            # Every path once, all at once, before any was asked: misses.
            cold = await anyio.to_thread.run_sync(
                run_clients, port, len(paths), 0, paths)
            show(f"{label} (cold)", cold)
        result = await anyio.to_thread.run_sync(
            run_clients, port, args.clients, args.seconds, paths)
        show(label, result)
        worst = max(worst, result["p95"])
        print(f"  {'':<36} p95 / baseline p95: {result['p95'] / base['p95']:.2f}")
    print("targets:")
    print(f"  worst p95 <= 50 ms        {worst:>8.1f} ms   "
          f"{'met' if worst <= 50 else 'NOT met'}")


CACHED = ("GET /api/tasks/{id}/events", "GET /api/tasks/{id}/versions/3")
"""Endpoints whose answers the API keeps (see ipa/ui/cache.py): measured cold first."""


def show(label: str, result: dict) -> None:
    print(f"  {label:<36} {result['rate']:>8,.0f} req/s   p50 {result['p50']:>6.1f} ms   "
          f"p95 {result['p95']:>6.1f} ms   errors {result['errors']}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "client":
        port, clients, seconds, *paths = sys.argv[2:]
        asyncio.run(client_main(int(port), int(clients), float(seconds), paths))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--only", default="", help="only endpoints whose label has this")
    parser.add_argument("--quick", action="store_true", help="50 clients, 20 tasks, 1 s")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.tasks, args.seconds = 50, 20, 1
    asyncio.run(server_main(args))


if __name__ == "__main__":
    main()
