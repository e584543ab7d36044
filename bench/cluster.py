"""A cluster of real ``ipa serve`` nodes on one PostgreSQL (issue #15): failover, forwarding,
throughput.

Every node is an ``ipa serve`` process (``IPA_AUTO_AGENTS=0``, one audit key, ``--lease-ttl``
10 s by default, so a heartbeat every second; no other ``IPA_*`` from the caller's
environment), started as the README's "A cluster" section says: the first node on the embedded
PostgreSQL of its data dir, the others with ``--database-url`` to it, one after the other (two
nodes opening a store at the same moment can collide on its DDL: specs/bench/README.md). Each
scenario has a fresh store in a temp dir. A node listens once its stderr says ``ipa: open
http://...``. This script attaches to the embedded PostgreSQL too (so the store outlives any
node it kills) and reads ``ipa_nodes``, ``ipa_leases``, ``ipa_inbox`` and the events directly
(psycopg, the store's read API): nothing it measures is asked of the nodes, but the probes.

- **forwarding** (on the failover cluster, before the kill; 1,000 idle pods on the owner):
  ``pause`` then ``resume``, alternately, on one task n2 owns: ``--requests`` (300) sent to n2
  (the owner answers) and as many to n1 (which finds the lease elsewhere and forwards through
  ``ipa_inbox``; the answer names the owner in ``x-ipa-node``), interleaved, one at a time on a
  keep-alive connection. p50 / p99 of each; overhead = forwarded − owner. Beside them: each
  node's CPU per command, and the inbox rows' own times (taken, answered).
- **failover**: n1, n2, n3 on one store; ``--tasks`` (1,000) idle tasks created on n2 through
  ``POST /api/tasks`` (16 at once: each is leased to n2 and its pod started; it then waits in
  its first phase with no job; the API is fast enough and fakes nothing). SIGKILL n2. From
  the kill: n2 marked ``dead`` (ipa_nodes polled every 10 ms), every lease claimed by a
  survivor (``claimed_at``, the database's clock, which is this machine's), every task
  *ready*. Ready = the task's new owner answers a command from the pod's memory: a ``resume``
  sent to the node the lease names answers 409 ``command_not_allowed`` (the task runs; nothing
  is recorded) and no ``x-ipa-node`` (not forwarded); a pod still loading answers otherwise
  (the "not-ready answers" line). Probes start when a task's lease is seen on a live node, 4
  at a time per node; a task's ready time lies between its last not-ready answer (or its
  lease's move) and its first ready one: the line gives the last task's bounds. The
  survivors' heartbeat pod counts (``GET /api/nodes``, one second apart) reaching N are
  printed beside it.
- **baseline** (same store, same tasks, right after): n3 drains (SIGTERM) and n1 takes its
  tasks (printed), so that n1 alone holds all N. SIGKILL n1 and start it again at once (as a
  service manager restarting it would, with no delay), same data dir and node id: it takes
  its leases back and starts every pod before it prints its ``open`` line. Baseline = kill →
  that line (N pods recovered; confirmed by one probe of each). Both times run from the kill:
  the cluster pays detection (up to one heartbeat) and spreads the pods over two processes;
  the single node pays a process start (Python, imports, store, task list) and starts all N.
- **throughput**: 3 nodes on a fresh store; ``--busy-tasks`` (300) tasks created round robin
  on them (each leased to the node it came to); each is paused, gets ``--jobs`` (4) command
  jobs in a chain (each depends on the one before: a ``python -S`` printing ``--lines`` (10)
  lines 50 ms apart), and is resumed, all at once. Recorded: every event after the resumes'
  start until every task waits at its gate (``ApprovalRequested``), by the events' own
  timestamps; per node = the events of the tasks it holds at the end and of their runs. Beside
  them, each node's CPU (its process, not its agents) and the whole machine's. A node that
  crashes meanwhile is reported; the commands it should have taken are sent again through
  another node (which forwards them, or takes the task on). Baseline, same run: one node on a
  fresh store doing the same work.

Everything started is ended at the end, on Ctrl-C and on SIGTERM: nodes by SIGTERM (a drain)
then SIGKILL, the embedded PostgreSQL with the last user, temp dirs removed (``--logs DIR``
keeps the nodes' and PostgreSQL's logs). Performance never makes this script fail; a node
that crashes is reported with its last error line. Read the targets lines last.

    .venv/bin/python bench/cluster.py [all|failover|throughput] [--tasks 1000]
        [--requests 300] [--busy-tasks 300] [--jobs 4] [--lines 10] [--lease-ttl 10]
        [--logs DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit
from uuid import UUID

import psycopg

from ipa.eventstore import (
    ConnectionParams,
    EventStore,
    RecordedEvent,
    StoreSettings,
    embedded_postgres,
)

IPA = shutil.which("ipa", path=os.path.dirname(sys.executable))
AUDIT_KEY = "bench-cluster-audit-key-0123456789abcdef"  # any 32+ characters, one per store
POLL = 0.01  # seconds between two reads of ipa_nodes / ipa_leases while a failover runs
PROBES_PER_NODE = 4
STALLED = 20.0  # seconds without a new event after which a throughput run is given up
OPEN_LINE = re.compile(r"ipa: open http://\S+ .*?(\d+) pods recovered")


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def percentile_ms(samples: list[float], p: int) -> float:
    if len(samples) < 2:
        return samples[0] * 1000 if samples else float("nan")
    return statistics.quantiles(samples, n=100, method="inclusive")[p - 1] * 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def url_of(params: ConnectionParams) -> str:
    query = urlencode({"host": params.host, "port": params.port})
    return f"postgresql://{params.user}@/{params.dbname}?{query}"


def cpu_of(pid: int, *, children: bool = False) -> float:
    """CPU seconds (user + system) of a process, or of its ended children; NaN when gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return float("nan")
    at = 13 if children else 11
    return (int(fields[at]) + int(fields[at + 1])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu(pgdata: Path) -> float:
    """CPU seconds of the PostgreSQL server in ``pgdata``: its postmaster and the processes
    it runs now (backends of the nodes' pooled connections, its workers)."""
    postmaster = int((pgdata / "postmaster.pid").read_text().split()[0])
    total = cpu_of(postmaster)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def environment() -> dict[str, str]:
    """This process's environment without any ``IPA_*`` setting, plus the bench's."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("IPA_")}
    return {**env, "IPA_AUTO_AGENTS": "0", "IPA_AUDIT_KEY": AUDIT_KEY}


# -- node processes ---------------------------------------------------------------------------


@dataclass
class Node:
    """One ``ipa serve`` process (a new one after each :meth:`Nodes.spawn`)."""

    name: str
    data_dir: Path
    args: list[str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    log: Path | None = None
    spawned: float = 0.0  # time.monotonic() when the process was started
    opened: float = 0.0  # ... when its "open" line was read
    recovered: int = 0  # pods recovered, as its "open" line says

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu_seconds(self, agents: bool = False) -> float:
        """CPU time of the node's own process (user + system); ``agents``: of its ended
        child processes instead (its agents, once reaped)."""
        assert self.process is not None
        return cpu_of(self.process.pid, children=agents)


class Nodes:
    """The node processes of one store; each ended when the block ends (SIGTERM: a drain;
    SIGKILL after 30 s)."""

    def __init__(self, root: Path, params: ConnectionParams | None, ttl: float,
                 logs: Path | None = None) -> None:
        self.root = root
        self.logs = logs
        self.database = params
        self.ttl = ttl
        self.nodes: dict[str, Node] = {}
        self._spawns = 0
        self._ended: set[int] = set()  # pids this script stopped, or reported

    def add(self, name: str, *, embedded: bool = False) -> Node:
        data_dir = self.root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        args = ["--node-id", name, "--lease-ttl", f"{self.ttl:g}"]
        if not embedded:
            assert self.database is not None
            args += ["--database-url", url_of(self.database)]
        node = self.nodes[name] = Node(name, data_dir, args)
        return node

    def spawn(self, node: Node) -> None:
        assert IPA is not None, "the ipa console script is not installed in this venv"
        self._spawns += 1
        node.log = self.root / f"{node.name}-{self._spawns}.log"
        with open(node.log, "wb") as log:
            node.spawned = time.monotonic()
            # A session of its own: a Ctrl-C reaches this script only, which ends the nodes.
            node.process = subprocess.Popen(
                [IPA, "serve", "--data-dir", str(node.data_dir), "--port", str(node.port),
                 *node.args], env=environment(), stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)

    def wait_open(self, node: Node, timeout: float = 90.0) -> None:
        """Until the node's stderr says it listens (read every 5 ms)."""
        assert node.process is not None and node.log is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = OPEN_LINE.search(node.log.read_text(errors="replace"))
            if match:
                node.opened = time.monotonic()
                node.recovered = int(match.group(1))
                return
            if node.process.poll() is not None:
                break
            time.sleep(0.005)
        raise RuntimeError(f"node {node.name} did not open:\n{node.log.read_text()[-3000:]}")

    def start(self, node: Node) -> None:
        self.spawn(node)
        self.wait_open(node)

    def report_exits(self, during: str) -> list[str]:
        """Print a line for each node process that exited by itself (not stopped or killed
        by this script); their names."""
        crashed = []
        for node in self.nodes.values():
            process = node.process
            if process is None or process.poll() is None or process.pid in self._ended:
                continue
            self._ended.add(process.pid)
            crashed.append(node.name)
            assert node.log is not None
            said = [line for line in node.log.read_text(errors="replace").splitlines()
                    if line.strip(" |")]
            errors = [line for line in said
                      if re.match(r"^\s*\|?\s*[\w.]*(Error|Exception|Detected)\b.*:", line)]
            last = (errors or said or ["nothing in its log"])[-1].strip(" |")
            print(f"  !! {node.name} exited by itself (status {process.returncode}) {during}: "
                  f"{last}")
        return crashed

    def stop(self, node: Node) -> None:
        """SIGTERM (a drain); the caller waits."""
        assert node.process is not None
        self._ended.add(node.process.pid)
        node.process.send_signal(signal.SIGTERM)

    def kill(self, node: Node) -> float:
        """SIGKILL the node and reap it; returns the wall-clock time of the kill."""
        assert node.process is not None
        self._ended.add(node.process.pid)
        at = time.time()
        node.process.send_signal(signal.SIGKILL)
        node.process.wait()
        return at

    def close(self) -> None:
        self.report_exits("before the end")
        alive = [node for node in self.nodes.values() if node.alive]
        for node in alive:
            self.stop(node)
        for node in alive:
            assert node.process is not None
            try:
                node.process.wait(30)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait()
            if node.process.returncode != 0:
                print(f"  !! {node.name} did not stop cleanly on SIGTERM (status "
                      f"{node.process.returncode})")
        if self.logs is not None:
            self.logs.mkdir(parents=True, exist_ok=True)
            for log in [*self.root.glob("*.log"), *self.root.glob("*/pg/log")]:
                name = "postgres.log" if log.name == "log" else log.name
                shutil.copy(log, self.logs / f"{self.root.name}-{name}")


@contextlib.contextmanager
def cluster(root: Path, names: list[str], ttl: float, logs: Path | None
            ) -> Iterator[tuple[Nodes, ConnectionParams]]:
    """``names`` started on a fresh store: the first on the embedded PostgreSQL of its data
    dir, the others on its URL. This process attaches to that PostgreSQL too, so the store
    lives until the block ends, whichever node dies; it stops with the last user."""
    with contextlib.ExitStack() as stack:
        nodes = Nodes(root, None, ttl, logs)
        stack.callback(nodes.close)  # if the first node fails before the store is attached
        first = nodes.add(names[0], embedded=True)
        nodes.start(first)
        params = stack.enter_context(embedded_postgres(first.data_dir))
        stack.callback(nodes.close)  # the nodes end before the server stops (last out)
        nodes.database = params
        for name in names[1:]:  # one after the other (see specs/bench/README.md: a race)
            nodes.start(nodes.add(name))
        yield nodes, params


# -- HTTP -------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def code(self) -> str:
        try:
            return str(json.loads(self.body)["error"]["code"])
        except (ValueError, KeyError, TypeError):
            return ""


class Http:
    """One HTTP/1.1 keep-alive connection to a node (asyncio streams): small, so that the
    script's own cost per request stays low on a 2-core box."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: Any = None) -> Answer:
        payload = b"" if body is None else json.dumps(body).encode()
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Length: {len(payload)}\r\n")
        if body is not None:
            head += "Content-Type: application/json\r\n"
        for attempt in (1, 2):
            if self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            assert self._reader is not None
            try:
                self._writer.write(head.encode() + b"\r\n" + payload)
                raw = await self._reader.readuntil(b"\r\n\r\n")
            except (ConnectionError, asyncio.IncompleteReadError):
                # The server closed an idle connection before reading this request: nothing
                # ran; once more on a new connection.
                await self.close()
                if attempt == 2:
                    raise
                continue
            lines = raw.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            data = await self._reader.readexactly(int(headers.get("content-length", "0")))
            return Answer(status, headers, data)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def each(url: str, items: Iterable[Any], work: Callable[[Http, Any], Awaitable[None]],
               concurrency: int) -> None:
    """``work(http, item)`` for every item, ``concurrency`` connections at once."""
    pending = iter(items)

    async def worker() -> None:
        http = Http(url)
        try:
            for item in pending:
                await work(http, item)
        finally:
            await http.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def create_tasks(node: Node, count: int, concurrency: int = 16) -> list[UUID]:
    created: list[UUID] = []

    async def create(http: Http, i: int) -> None:
        answer = await http.request("POST", "/api/tasks", {"title": f"bench task {i}"})
        expect(answer, 201, node, "POST /api/tasks")
        created.append(UUID(json.loads(answer.body)["id"]))

    await each(node.url, range(count), create, concurrency)
    return created


async def probe(http: Http, task_id: UUID) -> Answer:
    """``resume`` of a running task: 409 ``command_not_allowed`` from the pod's memory once
    its pod runs there; nothing is recorded either way."""
    return await http.request("POST", f"/api/tasks/{task_id}/resume", {})


def expect(answer: Answer, status: int, node: Node, what: str) -> None:
    if answer.status != status:
        raise RuntimeError(f"{what} on {node.name}: {answer.status} {answer.body[:300]!r}")


def is_ready(answer: Answer) -> bool:
    return (answer.status == 409 and answer.code() == "command_not_allowed"
            and "x-ipa-node" not in answer.headers)


# -- the store, read directly -----------------------------------------------------------------


@dataclass
class Seen:
    """What the poller last read of ``ipa_nodes`` and ``ipa_leases``."""

    owners: dict[UUID, str] = field(default_factory=dict)  # leases held by live nodes
    status: dict[str, str] = field(default_factory=dict)
    pods: dict[str, int] = field(default_factory=dict)


async def poll_store(params: ConnectionParams, seen: Seen, changed: asyncio.Event) -> None:
    """Read the nodes and the live leases every ``POLL`` seconds until cancelled."""
    async with await psycopg.AsyncConnection.connect(params.conninfo(), autocommit=True) as db:
        while True:
            nodes = await (await db.execute("SELECT id, status, pods FROM ipa_nodes")).fetchall()
            leases = await (await db.execute(
                "SELECT l.task_id, l.node_id FROM ipa_leases l JOIN ipa_nodes n "
                "ON n.id = l.node_id WHERE n.status = 'up'")).fetchall()
            seen.status = {row[0]: row[1] for row in nodes}
            seen.pods = {row[0]: row[2] for row in nodes}
            seen.owners = {row[0]: row[1] for row in leases}
            changed.set()
            await asyncio.sleep(POLL)


def claims(params: ConnectionParams, task_ids: list[UUID]) -> dict[UUID, tuple[str, float]]:
    """Each task's lease: its node and when it was claimed (epoch seconds, database clock)."""
    with psycopg.connect(params.conninfo(), autocommit=True) as db:
        rows = db.execute("SELECT task_id, node_id, extract(epoch FROM claimed_at) "
                          "FROM ipa_leases WHERE task_id = ANY(%s)", (task_ids,)).fetchall()
    return {row[0]: (row[1], float(row[2])) for row in rows}


def head_position(params: ConnectionParams) -> int:
    with psycopg.connect(params.conninfo(), autocommit=True) as db:
        row = db.execute("SELECT coalesce(max(notification_id), 0) FROM events").fetchone()
    return int(row[0]) if row else 0


def count_after(params: ConnectionParams, after: int, event_type: str) -> int:
    with psycopg.connect(params.conninfo(), autocommit=True) as db:
        row = db.execute("SELECT count(*) FROM events WHERE notification_id > %s AND "
                         "topic LIKE %s", (after, f"%:{event_type}")).fetchone()
    return int(row[0]) if row else 0


async def read_log(params: ConnectionParams, after: int) -> list[RecordedEvent]:
    """Every event after position ``after`` (the store's own reader, no tail, no writes)."""
    settings = StoreSettings(live=False, snapshot_interval=0)
    events: list[RecordedEvent] = []
    async with EventStore.open(params, settings, create=False) as store:
        while page := await store.read_log(after, 1000):
            events += page
            after = page[-1].position
    return events


# -- failover ---------------------------------------------------------------------------------


@dataclass
class Takeover:
    """When a departed node's tasks were ready elsewhere, in seconds after ``t0``."""

    gone: float | None = None  # the node marked dead (or left), as polled
    moved: float | None = None  # every lease on a live node, as polled
    pods: float | None = None  # the live nodes' heartbeat pod counts sum to N
    ready: dict[UUID, float] = field(default_factory=dict)
    last_not_ready: dict[UUID, float] = field(default_factory=dict)
    not_ready: Counter = field(default_factory=Counter)  # answers while not ready

    def last(self) -> tuple[float, float]:
        """The last task's ready time, with the bound below it."""
        if not self.ready:
            return float("nan"), float("nan")
        task_id = max(self.ready, key=self.ready.__getitem__)
        ready = self.ready[task_id]
        return ready, self.last_not_ready.get(task_id, min(self.moved or 0.0, ready))


async def watch_takeover(params: ConnectionParams, gone: Node, nodes: dict[str, Node],
                         task_ids: list[UUID], t0: float, timeout: float = 120.0) -> Takeover:
    """Poll the store and probe each task at the node holding its lease until every task
    is ready there (see the module doc)."""
    seen, changed = Seen(), asyncio.Event()
    result = Takeover()
    pending = set(task_ids)
    poller = asyncio.create_task(poll_store(params, seen, changed))
    https = {name: [Http(node.url) for _ in range(PROBES_PER_NODE)]
             for name, node in nodes.items() if node is not gone and node.alive}

    def note() -> None:
        now = time.monotonic() - t0
        if result.gone is None and seen.status.get(gone.name) in ("dead", "left"):
            result.gone = now
        if result.moved is None and all(seen.owners.get(t) in https for t in task_ids):
            result.moved = now
        takers = [name for name in https if seen.status.get(name) == "up"]
        if result.pods is None and sum(seen.pods.get(n, 0) for n in takers) >= len(task_ids):
            result.pods = now

    async def probe_all(name: str, queue: list[UUID]) -> None:
        pool = iter(queue)

        async def worker(http: Http) -> None:
            for task_id in pool:
                try:
                    answer = await probe(http, task_id)
                except (OSError, asyncio.IncompleteReadError):
                    answer = Answer(0, {}, b"")  # the node went away
                now = time.monotonic() - t0
                if is_ready(answer):
                    result.ready[task_id] = now
                    pending.discard(task_id)
                else:
                    result.last_not_ready[task_id] = now
                    result.not_ready[f"{answer.status or 'no answer'} {answer.code()}"
                                     .strip()] += 1

        await asyncio.gather(*(worker(http) for http in https[name]))

    try:
        async with asyncio.timeout(timeout):
            while pending or result.pods is None:
                await changed.wait()
                changed.clear()
                note()
                by_node: dict[str, list[UUID]] = {}
                for task_id in sorted(pending):  # the order survivors claim them in
                    owner = seen.owners.get(task_id)
                    if owner in https:
                        by_node.setdefault(owner, []).append(task_id)
                if by_node:
                    await asyncio.gather(*(probe_all(n, q) for n, q in by_node.items()))
                    note()
    except TimeoutError:
        print(f"  !! gave up after {timeout:g} s: {len(pending)} tasks not ready")
    finally:
        poller.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poller
        for pool in https.values():
            for http in pool:
                await http.close()
    return result


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def forwarding(params: ConnectionParams, nodes: Nodes, owner: Node, other: Node,
               task_id: UUID, requests: int) -> tuple[float, float]:
    """Print the forwarding figures; returns the overhead at p50 and p99 (ms)."""
    async def run() -> tuple[list[float], list[float], Counter]:
        here, there = Http(owner.url), Http(other.url)
        times: dict[str, list[float]] = {"owner": [], "forwarded": []}
        answers: Counter = Counter()
        try:
            for i in range(requests // 2 + 5):  # 5 warm-up cycles
                pairs = [("owner", here), ("forwarded", there)]
                for kind, http in pairs if i % 2 else pairs[::-1]:
                    for command in ("pause", "resume"):
                        body = {"reason": "bench"} if command == "pause" else {}
                        started = time.perf_counter()
                        answer = await http.request(
                            "POST", f"/api/tasks/{task_id}/{command}", body)
                        spent = time.perf_counter() - started
                        named = answer.headers.get("x-ipa-node", "-")
                        answers[(kind, answer.status, named)] += 1
                        if i >= 5:
                            times[kind].append(spent)
        finally:
            await here.close()
            await there.close()
        return times["owner"], times["forwarded"], answers

    cpu0 = {node.name: node.cpu_seconds() for node in nodes.nodes.values()}
    mine, forwarded, answers = asyncio.run(run())
    cpu = {node.name: node.cpu_seconds() - cpu0[node.name] for node in nodes.nodes.values()}
    commands = sum(answers.values())
    print(f"\nforwarding: pause/resume alternately on one of {owner.name}'s tasks, "
          f"{len(mine)} sent to its owner {owner.name} and {len(forwarded)} to {other.name} "
          "(forwarded), interleaved, one at a time")
    for label, samples in (("owner", mine), ("forwarded", forwarded)):
        print(f"  {label:<10} p50 {percentile_ms(samples, 50):6.2f} ms   "
              f"p99 {percentile_ms(samples, 99):6.2f} ms   max {max(samples) * 1000:6.1f} ms")
    p50 = percentile_ms(forwarded, 50) - percentile_ms(mine, 50)
    p99 = percentile_ms(forwarded, 99) - percentile_ms(mine, 99)
    ratio = percentile_ms(forwarded, 50) / percentile_ms(mine, 50)
    print(f"  overhead   p50 {p50:+6.2f} ms   p99 {p99:+6.2f} ms   (forwarded/owner p50 "
          f"{ratio:.2f}x)")
    print("  answers: " + ", ".join(f"{kind} {status} x-ipa-node={named}: {n}"
                                     for (kind, status, named), n in sorted(answers.items())))
    with psycopg.connect(params.conninfo(), autocommit=True) as db:
        rows = db.execute(
            "SELECT extract(epoch FROM taken_at - created_at), "
            "extract(epoch FROM answered_at - taken_at) FROM ipa_inbox WHERE task_id = %s "
            "ORDER BY created_at", (task_id,)).fetchall()[10:]  # the warm-up's left out
    print("  CPU per command (each appends one event): " + ", ".join(
        f"{name} {spent / commands * 1000:.1f} ms" for name, spent in sorted(cpu.items()))
          + f" (the owner {owner.name} runs them; {other.name} forwards half; the other "
          "nodes only follow the log)")
    if rows:
        taken = [float(row[0]) for row in rows]
        answered = [float(row[1]) for row in rows]
        print(f"  in ipa_inbox (database clock): row → taken by the owner p50 "
              f"{percentile_ms(taken, 50):.2f} / p99 {percentile_ms(taken, 99):.2f} ms; "
              f"taken → answer written p50 {percentile_ms(answered, 50):.2f} / p99 "
              f"{percentile_ms(answered, 99):.2f} ms")
    return p50, p99


def failover(root: Path, tasks: int, requests: int, ttl: float, logs: Path | None
             ) -> dict[str, float]:
    figures: dict[str, float] = {}
    started = time.monotonic()
    with cluster(root / "failover", ["n1", "n2", "n3"], ttl, logs) as (nodes, params):
        n1, n2, n3 = (nodes.nodes[name] for name in ("n1", "n2", "n3"))
        print(f"\nfailover store: n1 (embedded PostgreSQL), n2, n3 up in "
              f"{time.monotonic() - started:.1f} s; --lease-ttl {ttl:g} "
              f"(heartbeat {min(1.0, max(0.05, ttl / 5)):g} s)")
        t = time.monotonic()
        cpu0 = {node.name: node.cpu_seconds() for node in (n1, n2, n3)}
        task_ids = asyncio.run(create_tasks(n2, tasks))
        spent = time.monotonic() - t
        cpu = {node.name: node.cpu_seconds() - cpu0[node.name] for node in (n1, n2, n3)}
        print(f"created {len(task_ids):,} idle tasks on n2 in {spent:.1f} s "
              f"({len(task_ids) / spent:,.0f}/s, 16 at once through POST /api/tasks); CPU "
              + ", ".join(f"{name} {c:.1f} s" for name, c in sorted(cpu.items())))
        held = Counter(node for node, _ in claims(params, task_ids).values())
        assert held == {"n2": len(task_ids)}, held
        nodes.report_exits("while the tasks were created")

        figures["fwd_p50"], figures["fwd_p99"] = forwarding(params, nodes, n2, n1, task_ids[0],
                                                            requests)
        nodes.report_exits("while commands were forwarded")

        # -- SIGKILL the owner -------------------------------------------------------------
        print(f"\nfailover: SIGKILL n2 holding {len(task_ids):,} idle tasks; survivors n1, n3")
        t0 = time.monotonic()
        killed_wall = nodes.kill(n2)
        took = asyncio.run(watch_takeover(params, n2, nodes.nodes, task_ids, t0))
        nodes.report_exits("during the failover")
        leases = claims(params, task_ids)
        last_claim = max(at for _, at in leases.values()) - killed_wall
        first_claim = min(at for _, at in leases.values()) - killed_wall
        spread = Counter(node for node, _ in leases.values())
        ready, above = took.last()
        times = sorted(took.ready.values()) or [float("nan")]
        print(f"  n2 marked dead           {seconds(took.gone)}   (ipa_nodes read every "
              f"{POLL * 1000:.0f} ms)")
        print(f"  leases claimed           {first_claim:.2f} s first, {last_claim:.2f} s last "
              f"(claimed_at) — " + ", ".join(f"{n} {c}" for n, c in sorted(spread.items())))
        print(f"  tasks ready              p50 {statistics.median(times):.2f} s, last "
              f"{ready:.2f} s (between {above:.2f} and {ready:.2f} s)")
        print(f"  heartbeat pods = {len(task_ids):,}   {seconds(took.pods)}   (ipa_nodes.pods, "
              "updated once a heartbeat)")
        print("  not-ready answers: " + (", ".join(f"{code} ×{n}" for code, n in
                                                   took.not_ready.most_common()) or "none"))
        figures["failover"] = ready

        # -- baseline: one node restarting -------------------------------------------------
        print(f"\nbaseline: n3 drains (SIGTERM), n1 takes its tasks; then SIGKILL n1 and "
              f"start it again at once: one node recovering {len(task_ids):,} tasks")
        t0 = time.monotonic()
        nodes.stop(n3)
        drained = asyncio.run(watch_takeover(params, n3, nodes.nodes, task_ids, t0))
        n3.process.wait(60)  # type: ignore[union-attr]
        nodes.report_exits("during the drain")
        print(f"  (drain of n3: left {seconds(drained.gone)}, all {len(task_ids):,} ready on "
              f"n1 {drained.last()[0]:.2f} s after the SIGTERM, n3 exited "
              f"{time.monotonic() - t0:.2f} s)")
        t0 = time.monotonic()
        nodes.kill(n1)
        nodes.spawn(n1)
        nodes.wait_open(n1)
        opened = n1.opened - t0

        confirmed = asyncio.run(confirm_all(n1, task_ids))
        print(f"  process start → open     {n1.opened - n1.spawned:.2f} s "
              f"({n1.recovered:,} pods recovered before the open line)")
        print(f"  kill → all ready         {opened:.2f} s   (then, one probe each: "
              + ", ".join(f"{k} ×{n}" for k, n in confirmed.most_common()) + ")")
        if confirmed["ready"] < len(task_ids):
            print(f"  !! {len(task_ids) - confirmed['ready']} tasks not ready after the restart: "
                  "the baseline reads low")
        nodes.report_exits("after the restart")
        figures["baseline"] = opened
        print(f"  failover / baseline      {ready / opened:.2f}x  (failover {ready:.2f} s, "
              f"baseline {opened:.2f} s)")
    return figures


async def confirm_all(node: Node, task_ids: list[UUID]) -> Counter:
    """The answers of ``node`` to one probe of each task (``ready`` when ready)."""
    answers: Counter = Counter()

    async def one(http: Http, task_id: UUID) -> None:
        answer = await probe(http, task_id)
        answers["ready" if is_ready(answer) else f"{answer.status} {answer.code()}"] += 1

    await each(node.url, task_ids, one, 8)
    return answers


# -- throughput -------------------------------------------------------------------------------


@dataclass
class Work:
    """What one throughput run recorded."""

    nodes: int
    events: int
    window: float
    per_node: dict[str, int]
    cpu: dict[str, float]
    box: float  # cores busy, whole machine
    agents: float  # cores, the nodes' ended child processes
    postgres: float  # cores, the PostgreSQL server
    wall: float  # seconds from the resumes' start to the last task at its gate, as polled
    jobs_done: int
    failed: int
    created: float  # tasks created per second (setting up)
    crashed: list[str]
    retried: int  # requests sent again after a crash

    @property
    def rate(self) -> float:
        return self.events / self.window if self.window > 0 else float("nan")


def box_busy() -> float:
    """Seconds of CPU time the whole machine spent busy (not idle) since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def job_spec(job: int, lines: int) -> dict[str, Any]:
    """Job ``j<job>``, after the job before it: a Python process printing ``lines`` lines
    50 ms apart (each line its own output batch, most often)."""
    code = (f"import time\nfor i in range({lines}):\n    print('bench job {job} line', i, "
            "flush=True)\n    time.sleep(0.05)")
    return {"job_id": f"j{job}", "agent": "developer",
            "spec": {"command": [sys.executable, "-S", "-c", code]},
            "depends_on": [f"j{job - 1}"] if job else []}


class Sender:
    """Sends the throughput's commands, riding out a node that crashes: a request that finds
    no node, or gets a 5xx, is sent again to another live node (which forwards it to the
    task's owner, or takes the task on once the owner is seen dead); there, any answer but a
    5xx ends it (a 4xx then says the first try was applied)."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self.retried = 0

    async def send(self, http: Http, node: Node, path: str, body: Any, ok: int) -> Answer:
        if node.alive:
            try:
                answer = await http.request("POST", path, body)
                if answer.status == ok:
                    return answer
                if answer.status < 500:
                    expect(answer, ok, node, path)
            except (OSError, asyncio.IncompleteReadError):
                pass
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.retried += 1
            await asyncio.sleep(0.2)
            for other in [n for n in self.nodes if n.alive and n is not node]:
                spare = Http(other.url)
                try:
                    answer = await spare.request("POST", path, body)
                except (OSError, asyncio.IncompleteReadError):
                    continue
                finally:
                    await spare.close()
                if answer.status < 500:
                    return answer
        raise RuntimeError(f"{path}: no live node answered within 60 s")


def throughput(root: Path, names: list[str], tasks: int, jobs: int, lines: int, ttl: float,
               logs: Path | None) -> Work:
    with cluster(root, names, ttl, logs) as (nodes, params):
        members = [nodes.nodes[name] for name in names]
        sender = Sender(members)

        async def on_each(owner: dict[UUID, Node], work: Callable[..., Awaitable[None]]
                          ) -> None:
            """``work(http, node, task)`` for every task, 8 at once per node it came to."""
            async def one(node: Node, http: Http, task_id: UUID) -> None:
                await work(http, node, task_id)

            await asyncio.gather(*(
                each(node.url, [t for t, n in owner.items() if n is node],
                     functools.partial(one, node), 8) for node in members))

        async def prepare() -> dict[UUID, Node]:
            owner: dict[UUID, Node] = {}

            async def create(node: Node, http: Http, i: int) -> None:
                answer = await sender.send(http, node, "/api/tasks",
                                           {"title": f"bench task {i}"}, 201)
                owner[UUID(json.loads(answer.body)["id"])] = node

            await asyncio.gather(*(
                each(node.url, range(k, tasks, len(members)), functools.partial(create, node), 8)
                for k, node in enumerate(members)))

            async def load(http: Http, node: Node, task_id: UUID) -> None:
                await sender.send(http, node, f"/api/tasks/{task_id}/pause",
                                  {"reason": "bench: queueing"}, 200)
                for j in range(jobs):
                    await sender.send(http, node, f"/api/tasks/{task_id}/queue_job",
                                      job_spec(j, lines), 200)

            await on_each(owner, load)
            return owner

        t = time.monotonic()
        owner = asyncio.run(prepare())
        created = tasks / (time.monotonic() - t)
        head = head_position(params)
        cpu0 = {node.name: node.cpu_seconds() for node in members}
        agents0 = {node.name: node.cpu_seconds(agents=True) for node in members}
        pg0 = postgres_cpu(members[0].data_dir / "pg")
        busy0, wall0 = box_busy(), time.monotonic()

        async def resume(http: Http, node: Node, task_id: UUID) -> None:
            await sender.send(http, node, f"/api/tasks/{task_id}/resume", {}, 200)

        asyncio.run(on_each(owner, resume))
        last, moved = head, time.monotonic()
        while (done := count_after(params, head, "ApprovalRequested")) < tasks:
            if (now := head_position(params)) != last:
                last, moved = now, time.monotonic()
            elif time.monotonic() - moved > STALLED:
                print(f"  !! nothing recorded for {STALLED:g} s: {tasks - done} tasks never "
                      "reached their gate")
                break
            time.sleep(0.1)
        cpu = {node.name: node.cpu_seconds() - cpu0[node.name] for node in members}
        agents = sum(node.cpu_seconds(agents=True) - agents0[node.name] for node in members
                     if node.alive)
        pg = postgres_cpu(members[0].data_dir / "pg") - pg0
        crashed = nodes.report_exits("during the run")
        wall = time.monotonic() - wall0
        busy = (box_busy() - busy0) / wall
        events = asyncio.run(read_log(params, head))
        leases = claims(params, list(owner))

    run_task = {e.stream_id: UUID(str(e.data["task_id"])) for e in events
                if e.type == "RunStarted" and "task_id" in e.data}
    per_node: Counter = Counter()
    for event in events:
        task_id = event.stream_id if event.stream_id in leases else run_task.get(event.stream_id)
        per_node[leases[task_id][0] if task_id in leases else "(no lease)"] += 1
    stamps = [event.timestamp for event in events]
    window = (max(stamps) - min(stamps)).total_seconds() if stamps else 0.0
    kinds = Counter(event.type for event in events)
    return Work(len(names), len(events), window, dict(per_node), cpu, busy, agents / wall,
                pg / wall, wall,
                kinds["JobSucceeded"], kinds["JobFailed"] + kinds["JobDeadLettered"],
                created, crashed, sender.retried)


def print_work(label: str, work: Work) -> None:
    nodes = sum(c for c in work.cpu.values() if c == c) / work.wall  # NaN: a crashed node
    print(f"  {label:<8} {work.events:,} events in {work.window:.2f} s: "
          f"{work.rate:,.0f} events/s; jobs succeeded {work.jobs_done:,}, failed "
          f"{work.failed} (set-up: {work.created:,.0f} tasks/s created, paused, jobs queued)")
    print(f"    cores busy: node processes {nodes:.2f}, their agents {work.agents:.2f}, "
          f"PostgreSQL {work.postgres:.2f}; the whole machine {work.box:.2f} of "
          f"{os.cpu_count()}")
    for name in sorted(work.per_node):
        cpu = work.cpu.get(name)
        spent = f", its process {cpu / work.wall:.2f} cores" if cpu is not None else ""
        print(f"    {name:<6} {work.per_node[name]:,} events, "
              f"{work.per_node[name] / work.window:,.0f}/s{spent}")
    if work.crashed:
        print(f"    !! crashed: {', '.join(work.crashed)}; {work.retried} requests sent again "
              "through another node; per node = the tasks each holds at the end")


# -- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", nargs="?", default="all",
                        choices=["all", "failover", "throughput"],
                        help="failover includes the forwarding figures (default: all)")
    parser.add_argument("--tasks", type=int, default=1000, help="idle tasks of the failover")
    parser.add_argument("--requests", type=int, default=300,
                        help="commands to the owner and as many forwarded")
    parser.add_argument("--busy-tasks", type=int, default=300, help="tasks of the throughput")
    parser.add_argument("--jobs", type=int, default=4, help="command jobs per busy task")
    parser.add_argument("--lines", type=int, default=10,
                        help="lines each job prints, 50 ms apart")
    parser.add_argument("--lease-ttl", type=float, default=10.0)
    parser.add_argument("--logs", type=Path, metavar="DIR",
                        help="copy the nodes' stderr and PostgreSQL's logs to DIR before the temp "
                        "dirs go")
    args = parser.parse_args()

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # the same clean-up as Ctrl-C

    signal.signal(signal.SIGTERM, stop)
    load = os.getloadavg()[0]
    print(f"ipa cluster bench: real ipa serve nodes on one embedded PostgreSQL; "
          f"{os.cpu_count()} cores, load average {load:.2f} before")
    figures: dict[str, float] = {}
    work: dict[str, Work] = {}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ipa-bench-cluster-") as tmp:
        root = Path(tmp)
        try:
            if args.scenario in ("all", "failover"):
                try:
                    figures = failover(root, args.tasks, args.requests, args.lease_ttl,
                                       args.logs)
                except Exception as e:  # a crash of ipa's, reported; the rest goes on
                    print(f"  !! failover not measured: {type(e).__name__}: {e}")
            if args.scenario in ("all", "throughput"):
                print(f"\nthroughput: {args.busy_tasks} tasks × {args.jobs} chained command "
                      f"jobs ({args.lines} lines each, 50 ms apart), resumed at once; events "
                      "recorded by the events' timestamps")
                for label, names in (("3 nodes", ["n1", "n2", "n3"]), ("1 node", ["n1"])):
                    try:
                        work[label] = throughput(root / label.replace(" ", "-"), names,
                                                 args.busy_tasks, args.jobs, args.lines,
                                                 args.lease_ttl, args.logs)
                    except Exception as e:  # a crash of ipa's, reported; the rest goes on
                        print(f"  !! {label} not measured: {type(e).__name__}: {e}")
                        continue
                    print_work(label, work[label])
                if len(work) == 2:
                    print(f"  3 nodes / 1 node: "
                          f"{work['3 nodes'].rate / work['1 node'].rate:.2f}x events/s")
        except KeyboardInterrupt:
            print("\ninterrupted: nodes stopped, temp dirs removed", file=sys.stderr)
            raise SystemExit(130) from None

    print(f"\ntargets (whole run {time.monotonic() - started:.0f} s, load average "
          f"{load:.2f} before, {os.getloadavg()[0]:.2f} after):")
    if "failover" in figures:
        print(f"  failover of {args.tasks:,} idle tasks ≤ 5 s, detection included: "
              f"{figures['failover']:.2f} s -> {verdict(figures['failover'] <= 5.0)}")
        print(f"  forwarding overhead p99 ≤ 10 ms: {figures['fwd_p99']:+.2f} ms -> "
              f"{verdict(figures['fwd_p99'] <= 10.0)}")
    if work:
        print("  throughput: no target in #15 (figures above)")


if __name__ == "__main__":
    main()
