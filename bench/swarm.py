"""A project's swarm at scale: a 200-item backlog run as child tasks, 20 at once.

On a private embedded PostgreSQL, with the real ``Supervisor``, pods, ``EventStore`` and the
Claude Code runner driving the scripted stand-in CLI of the tests
(``tests/fakes/fake_claude.py``):

- **swarm**: a ``project`` task whose product analyst answers with a backlog of ``--items``
  items (default 200) in ``development``: ``items // 40`` chains of 5 (each item waiting for
  the one before, at a higher priority) and the rest independent. ``SetMaxChildren`` to
  ``--max-children`` (default 20). Every item runs as a child task (workflow ``item``): its
  kind's agent, then the reviewer, each CLI answering after ``--sleep`` seconds (default 0.2;
  the reviewer ends with ``VERDICT: approve``). The bench approves the project's own gates
  (discovery: the backlog; architecture) as a person; the other phases' agents answer at once;
  it cancels the project once it waits at the deployment gate.
  By default the project has no repository: every run works in a scratch directory and nothing
  is merged, so the figures are the swarm's own. With ``--repo`` the project works on a fresh
  git repository: each child gets a branch, each run a worktree, and each editing agent's run
  writes a file of its own (a wrapper around the fake CLI), so every child has a commit that is
  merged into the project's branch (``ChildMerged``). A run with ``--repo`` takes ~3 minutes.
- **baseline**, same run, same store, after the swarm: the same work as jobs of one ``task``
  (a second supervisor, ``max_parallel`` = ``--max-children``, no auto-queue): per item its
  kind's job and a reviewer job depending on it; an item's dependencies become its job's
  dependencies on their reviewer jobs. All jobs are queued in the task's first append; its wall
  time runs from ``TaskStarted`` to the last job's end.

Everything but memory and CPU is read from the events' own timestamps (the pods' clock, read
back from the store at the end):

- **wall**: ``BacklogApproved`` → the last ``ChildFinished``; and from
  ``PhaseEntered(development)`` (the architecture gate and infrastructure lie before it), which
  is what swarm/baseline compares.
- **concurrency**: children spawned and not finished (``ChildSpawned`` .. ``ChildFinished``) as
  a step function of time, averaged over the time some item was ready (its dependencies
  finished) and not spawned; and its maximum. Beside it, agent CLIs running at once
  (``RunStarted`` .. ``RunFinished`` of the children's runs), averaged over the phase.
- **item ready → child pod running**: an item is ready when its last dependency's
  ``ChildFinished`` is recorded (``PhaseEntered(development)`` without dependencies) *and* a
  slot is free: each ``ChildSpawned``, in order, takes the earliest free slot (free at the
  phase's entry, then one at each ``ChildFinished``). A child's pod is *running* at the child's
  first ``JobStarted``: its pod is up, its task started and its first agent job begun (the
  breakdown shows ``ChildSpawned`` and ``TaskStarted``, and the CLI's ``RunStarted`` after).
- **memory per child pod**: ``VmRSS`` of this process sampled every 20 ms with the number of
  pods the supervisor holds. Per pod = (highest RSS until the last ``ChildFinished`` − RSS at
  the architecture gate, process idle, after ``gc.collect()``) / the most child pods alive at
  once. An upper bound: a running child pod holds its agent run too, and the delta also holds
  whatever the process kept meanwhile (the project's growing state, buffers, arenas).
- **CPU**: cores busy over the phase, for this process, its ended child processes (the CLIs,
  git; ``RUSAGE_CHILDREN``) and the whole machine (``/proc/stat``): a busy machine slows all.

Performance never makes this script fail; read the targets lines last.

    .venv/bin/python bench/swarm.py [--items N] [--max-children C] [--sleep S] [--repo]
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import gc
import importlib.util
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import anyio

from ipa.domain import (
    Approve,
    BacklogItemStatus,
    Cancel,
    Context,
    CreateTask,
    QueueJob,
    SetMaxChildren,
    Status,
    TaskState,
    approval_policy,
    decide,
    evolve,
)
from ipa.eventstore import (
    ConnectionParams,
    EventStore,
    RecordedEvent,
    StoreSettings,
    embedded_postgres,
)
from ipa.pods import AgentSettings, ClaudeRunner, CommandRunner, PodEnvironment, WorkspaceManager
from ipa.projections import Memory as AgentMemory
from ipa.supervisor import Supervisor
from ipa.ui.serve import tune_gc

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("backend_developer", "frontend_developer", "database_engineer", "api_designer")
CHAIN = 5  # items per chain; one chain per 40 items
SAMPLE_EVERY = 0.02  # seconds between two RSS samples
ENDED = ("JobSucceeded", "JobDeadLettered", "JobCancelled", "JobSkipped")


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def percentile_ms(samples: list[float], p: int) -> float:
    if len(samples) < 2:
        return samples[0] * 1000 if samples else float("nan")
    return statistics.quantiles(samples, n=100, method="inclusive")[p - 1] * 1000


def rss_bytes() -> int:
    """This process's resident set size, from the kernel."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def fakes() -> Any:
    """``tests/fakes/claude.py`` (loaded by path: ``tests`` is not a package)."""
    spec = importlib.util.spec_from_file_location("fake_claude_fixture",
                                                  ROOT / "tests" / "fakes" / "claude.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def context() -> Context:
    return Context(actor="user:bench", now=datetime.now(UTC), correlation_id="bench")


@contextlib.contextmanager
def database() -> Iterator[tuple[ConnectionParams, Path]]:
    with tempfile.TemporaryDirectory(prefix="ipa-bench-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        with embedded_postgres(Path(tmp) / "pg") as params:
            yield params, work


# -- set-up -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    id: str
    kind: str
    priority: int
    depends_on: tuple[str, ...]


def backlog(n: int) -> list[Item]:
    """``n // 40`` chains of ``CHAIN`` items (priority 9), then independent items (5)."""
    chains = min(n // 40, n // CHAIN)
    items = []
    for i in range(n):
        chained = i < chains * CHAIN
        after = (f"item-{i - 1:03d}",) if chained and i % CHAIN else ()
        items.append(Item(f"item-{i:03d}", KINDS[i % len(KINDS)], 9 if chained else 5, after))
    return items


def fake_cli(work: Path, items: list[Item], sleep: float) -> str:
    """The fake CLI, scripted for the project and its items, behind a wrapper that writes one
    file of its own in the run's working directory when the agent may edit (so every item's
    work is a commit to merge)."""
    module = fakes()
    answer = module.backlog_answer(*[
        {"id": i.id, "kind": i.kind, "phase": "development", "priority": i.priority,
         "depends_on": list(i.depends_on)} for i in items])
    script = {
        "product_analyst": [answer],
        "reviewer": [{"text": "Looks right.\nVERDICT: approve", "sleep": sleep}],
        **{kind: [{"text": f"built as {kind}", "sleep": sleep}] for kind in KINDS},
        "*": [{"text": "done\nVERDICT: approve"}],
    }
    fake = module.FakeClaude(work / "fake").script(script)
    wrapper = work / "fake" / "claude-bench"
    wrapper.write_text(
        "#!/bin/sh\n"
        "case \" $* \" in *acceptEdits*) "
        "echo \"$PWD\" > \"work-$(basename \"$PWD\").txt\" ;; esac\n"
        f"exec {fake.cli} \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper)


def git_repo(path: Path) -> Path:
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(path), *args], check=True, capture_output=True)

    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    (path / "README").write_text("bench\n")
    git("add", "README")
    git("-c", "user.name=bench", "-c", "user.email=bench@bench", "commit", "-q", "-m", "init")
    return path


async def create(store: EventStore, title: str, workflow: str, repo: Path | None,
                 jobs: list[QueueJob] | None = None) -> UUID:
    """A new task (and ``jobs`` queued on it), in one append."""
    task_id = uuid4()
    command = CreateTask(title=title, description="bench/swarm.py", workflow=workflow,
                         repo=str(repo) if repo is not None else None)
    events = list(decide(None, command, context(), task_id))
    state: TaskState | None = None
    for event in events:
        state = evolve(state, event)
    for job in jobs or []:
        for event in decide(state, job, context(), task_id):
            state = evolve(state, event)
            events.append(event)
    await store.append(task_id, events, 0)
    return task_id


# -- sampling ---------------------------------------------------------------------------------


def box_busy() -> float:
    """Seconds of CPU time the whole machine spent busy (not idle) since boot."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


@dataclass
class Samples:
    """Every ``SAMPLE_EVERY`` seconds: the time, this process's RSS, the pods the supervisor
    holds, CPU time of this process, of its ended child processes (the CLIs, git) and of the
    whole machine (busy, not idle)."""

    at: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    pods: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    children: list[float] = field(default_factory=list)
    busy: list[float] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)  # how late the loop woke the sampler

    async def run(self, supervisor: Supervisor) -> None:
        # The readings (files in /proc, CPU clocks: about 1 ms) are taken on a worker thread
        # so that they do not hold up the event loop whose latency this script measures.
        while True:
            self.pods.append(len(supervisor.pods()))
            await anyio.to_thread.run_sync(self._read)
            asleep = time.perf_counter()
            await anyio.sleep(SAMPLE_EVERY)
            self.lag.append(time.perf_counter() - asleep - SAMPLE_EVERY)

    def _read(self) -> None:
        self.at.append(time.time())
        self.rss.append(rss_bytes())
        self.cpu.append(time.process_time())
        ended = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.children.append(ended.ru_utime + ended.ru_stime)
        self.busy.append(box_busy())

    def between(self, start: float, end: float) -> range:
        return range(bisect.bisect_left(self.at, start), bisect.bisect_right(self.at, end))

    def cores(self, start: float, end: float) -> tuple[float, float, float]:
        """Cores busy on average from ``start`` to ``end``: this process, its child processes,
        the whole machine."""
        window = self.between(start, end)
        if len(window) < 2:
            return float("nan"), float("nan"), float("nan")
        a, b = window[0], window[-1]
        span = self.at[b] - self.at[a]
        return ((self.cpu[b] - self.cpu[a]) / span,
                (self.children[b] - self.children[a]) / span,
                (self.busy[b] - self.busy[a]) / span)


# -- analysis ---------------------------------------------------------------------------------


def ts(event: RecordedEvent) -> float:
    return event.timestamp.timestamp()


def first(events: list[RecordedEvent], kind: str) -> float | None:
    return next((ts(e) for e in events if e.type == kind), None)


def running_average(starts: list[float], ends: list[float],
                    waiting: list[tuple[float, float]]) -> tuple[float, int, float]:
    """Units running (``starts[i]`` .. ``ends[i]``), as a step function of time: the
    time-weighted average over the time some work waited (the union of ``waiting``), the
    maximum, and the seconds some work waited."""
    moves = sorted([(t, 1) for t in starts] + [(t, -1) for t in ends])
    edges = sorted([(a, 1) for a, b in waiting if b > a] + [(b, -1) for a, b in waiting if b > a])
    points = sorted({t for t, _ in moves} | {t for t, _ in edges})
    running = waits = most = 0
    mi = ei = 0
    area = span = 0.0
    for here, after in zip(points, points[1:], strict=False):
        while mi < len(moves) and moves[mi][0] <= here:
            running += moves[mi][1]
            mi += 1
        while ei < len(edges) and edges[ei][0] <= here:
            waits += edges[ei][1]
            ei += 1
        most = max(most, running)
        if waits > 0:
            area += running * (after - here)
            span += after - here
    return (area / span if span else float("nan")), most, span


def average_between(starts: list[float], ends: list[float], start: float, end: float) -> float:
    """How many of the intervals ``starts[i]`` .. ``ends[i]`` overlap, on average from
    ``start`` to ``end``."""
    total = sum(max(0.0, min(e, end) - max(s, start)) for s, e in zip(starts, ends, strict=True))
    return total / (end - start) if end > start else float("nan")


@dataclass
class SwarmFigures:
    approved: float
    entered: float
    last_finished: float
    average: float = 0.0  # children running while work waited
    most: int = 0
    waited: float = 0.0
    clis: float = 0.0  # agent CLIs running, on average over the phase
    ready_to_running: list[float] = field(default_factory=list)
    first_wave: list[float] = field(default_factory=list)  # ready at the phase's entry
    later: list[float] = field(default_factory=list)
    ready_to_spawned: list[float] = field(default_factory=list)
    spawned_to_started: list[float] = field(default_factory=list)
    started_to_job: list[float] = field(default_factory=list)
    job_to_cli: list[float] = field(default_factory=list)
    child_end_to_finished: list[float] = field(default_factory=list)
    child_seconds: list[float] = field(default_factory=list)
    run_seconds: list[float] = field(default_factory=list)
    merged: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


async def swarm_figures(store: EventStore, project_id: UUID, max_children: int) -> SwarmFigures:
    events = await store.read(project_id)
    approved = first(events, "BacklogApproved")
    entered = next((ts(e) for e in events
                    if e.type == "PhaseEntered" and e.data["phase"] == "development"), None)
    assert approved is not None and entered is not None
    proposed = [e for e in events if e.type == "BacklogProposed"][-1]
    depends = {i["id"]: i.get("depends_on", []) for i in proposed.data["items"]}
    spawned = {e.data["item_id"]: (ts(e), UUID(e.data["child_id"]))
               for e in events if e.type == "ChildSpawned"}
    finished = {e.data["item_id"]: ts(e) for e in events if e.type == "ChildFinished"}
    f = SwarmFigures(approved, entered, max(finished.values()))
    f.merged = sum(e.type == "ChildMerged" for e in events)
    for e in events:
        if e.type == "ChildFinished":
            f.outcomes[e.data["outcome"]] = f.outcomes.get(e.data["outcome"], 0) + 1

    # Dependency-ready: its last dependency's ChildFinished, else the phase's entry.
    dep_ready = {item: max([entered, *(finished.get(d, float("inf")) for d in deps)])
                 for item, deps in depends.items()}
    # Ready: dependency-ready and a slot free. Each spawn, in the project's order, takes the
    # earliest free slot (max_children free at the phase's entry, one more per finish).
    free = [entered] * max_children
    ready: dict[str, float] = {}
    for e in events:
        if e.type == "ChildFinished":
            bisect.insort(free, ts(e))
        elif e.type == "ChildSpawned":
            slot = free.pop(0) if free else ts(e)
            ready[e.data["item_id"]] = max(dep_ready[e.data["item_id"]], slot)

    run_starts: list[float] = []
    run_ends: list[float] = []
    for item, (spawn_at, child_id) in spawned.items():
        child = await store.read(child_id)
        started = first(child, "TaskStarted")
        job = first(child, "JobStarted")
        ended = first(child, "TaskCompleted") or first(child, "TaskFailed")
        if started is None or job is None:
            continue
        latency = job - ready[item]
        f.ready_to_running.append(latency)
        (f.first_wave if ready[item] == entered else f.later).append(latency)
        f.ready_to_spawned.append(spawn_at - ready[item])
        f.spawned_to_started.append(started - spawn_at)
        f.started_to_job.append(job - started)
        if ended is not None:
            f.child_seconds.append(ended - started)
            if item in finished:
                f.child_end_to_finished.append(finished[item] - ended)
        for to_cli, run_start, run_end in await runs_of(store, child):
            f.job_to_cli.append(to_cli)
            run_starts.append(run_start)
            run_ends.append(run_end)
            f.run_seconds.append(run_end - run_start)

    # Waiting: from dependency-ready to spawned (never spawned: until the last finish).
    waiting = [(dep_ready[i], spawned[i][0] if i in spawned else f.last_finished)
               for i in depends]
    starts = [spawned[i][0] for i in spawned]
    ends = [finished.get(i, f.last_finished) for i in spawned]
    f.average, f.most, f.waited = running_average(starts, ends, waiting)
    f.clis = average_between(run_starts, run_ends, entered, f.last_finished)
    return f


async def runs_of(store: EventStore, task: list[RecordedEvent]
                  ) -> list[tuple[float, float, float]]:
    """Per job start of a task: ``JobStarted`` → its CLI running (``RunStarted``), and when
    the run started and finished (``RunFinished``)."""
    found = []
    for e in task:
        if e.type != "JobStarted":
            continue
        run = await store.read(UUID(e.data["run_id"]))
        started, done = first(run, "RunStarted"), first(run, "RunFinished")
        if started is not None and done is not None:
            found.append((started - ts(e), started, done))
    return found


@dataclass
class BaselineFigures:
    wall: float
    succeeded: int
    jobs: int
    average: float  # jobs running while a ready job waited
    most: int
    clis: float


async def baseline_figures(store: EventStore, task_id: UUID) -> BaselineFigures:
    events = await store.read(task_id)
    start = first(events, "TaskStarted")
    assert start is not None
    began = {e.data["job_id"]: ts(e) for e in events if e.type == "JobStarted"}
    ended = {e.data["job_id"]: ts(e) for e in events if e.type in ENDED}
    last = max(ended.values())
    queued = {e.data["job_id"]: e.data["depends_on"] for e in events if e.type == "JobQueued"}
    ready = {j: max([start, *(ended.get(d, float("inf")) for d in deps)])
             for j, deps in queued.items()}
    average, most, _ = running_average(
        list(began.values()), [ended.get(j, last) for j in began],
        [(ready[j], began.get(j, last)) for j in queued])
    runs = await runs_of(store, events)
    clis = average_between([r[1] for r in runs], [r[2] for r in runs], start, last)
    return BaselineFigures(last - start, sum(e.type == "JobSucceeded" for e in events),
                           len(queued), average, most, clis)


# -- the runs ---------------------------------------------------------------------------------


async def through_gates(supervisor: Supervisor, project_id: UUID, timeout: float) -> int:
    """Approve the project's own gates before development as a person, until it waits at the
    deployment gate (every item done, and the project idle: safe to cancel). Returns RSS
    before the architecture gate's approval (the process idle, after ``gc.collect()``)."""
    pod = supervisor.get(project_id)
    before = 0
    with anyio.fail_after(timeout):
        async for state in pod.state.changes():
            if state.status is Status.failed:
                raise RuntimeError(f"the project failed: {state.failure}")
            failed = [i.id for i in (state.backlog.items if state.backlog else ())
                      if i.status is BacklogItemStatus.failed]
            if failed:  # waits for a person: the figures would mean nothing
                raise RuntimeError(f"items failed: {', '.join(failed[:5])}")
            if state.status is not Status.waiting:
                continue
            if state.phase in ("discovery", "architecture"):
                if state.phase == "architecture":
                    gc.collect()
                    before = rss_bytes()
                if approval_policy(state, state.phase) == "person":
                    await pod.execute(Approve(comment="ok"), actor="user:bench")
            elif state.phase == "deployment":
                return before
    raise AssertionError("unreachable")


@dataclass
class Memory:
    before: int  # at the architecture gate, before development, after gc.collect()
    peak: int  # the highest sample until the last ChildFinished
    after: int  # once the project was cancelled, after gc.collect()
    pods: int  # the most child pods held at once meanwhile


async def run_swarm(env: PodEnvironment, repo: Path | None, max_children: int
                    ) -> tuple[UUID, Samples, int, int]:
    """Run the project until it waits at the deployment gate, then cancel it: its id, the
    samples, RSS before development (at the architecture gate) and at the end."""
    supervisor = Supervisor(env)
    samples = Samples()
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        tune_gc()  # as ipa serve does once it has started
        tg.start_soon(samples.run, supervisor)
        project_id = await create(env.store, "Bench project", "project", repo)
        pod = await supervisor.start(project_id)
        await pod.execute(SetMaxChildren(max_children), actor="user:bench")
        before = await through_gates(supervisor, project_id, timeout=900)
        await pod.execute(Cancel(reason="bench over"), actor="user:bench")
        await supervisor.wait_stopped(project_id)
        gc.collect()
        after = rss_bytes()
        tg.cancel_scope.cancel()
    return project_id, samples, before, after


def memory(samples: Samples, figures: SwarmFigures, before: int, after: int) -> Memory:
    window = samples.between(figures.entered, figures.last_finished)
    peak = max((samples.rss[i] for i in window), default=before)
    most = max((samples.pods[i] for i in window), default=1) - 1  # the project's own pod
    return Memory(before, peak, after, most)


async def run_baseline(env: PodEnvironment, repo: Path | None, items: list[Item]
                       ) -> tuple[UUID, Samples]:
    """The items' work as the jobs of one task (see the module doc), run to the end."""
    jobs = []
    for item in items:
        after = [f"{d}-review" for d in item.depends_on]
        jobs.append(QueueJob(job_id=item.id, agent=item.kind, priority=item.priority,
                             depends_on=after, spec={"runner": "claude"}))
        jobs.append(QueueJob(job_id=f"{item.id}-review", agent="reviewer",
                             priority=item.priority, depends_on=[item.id],
                             spec={"runner": "claude"}))
    supervisor = Supervisor(replace(env, agents=replace(env.agents, auto_queue=False)))
    samples = Samples()
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        tg.start_soon(samples.run, supervisor)
        task_id = await create(env.store, "Bench baseline", "task", repo, jobs)
        pod = await supervisor.start(task_id)
        with anyio.fail_after(900):
            async for state in pod.state.changes():
                if all(job.status.finished for job in state.jobs.values()):
                    break
        tg.cancel_scope.cancel()
    return task_id, samples


# -- report -----------------------------------------------------------------------------------


def row(label: str, values: list[float]) -> str:
    if not values:
        return f"  {label:<48}{'-':>9}"
    return (f"  {label:<48}{percentile_ms(values, 50):>9.1f}{percentile_ms(values, 99):>9.1f}"
            f"{max(values) * 1000:>9.1f}{len(values):>7}")


async def measure(params: ConnectionParams, work: Path, n: int, max_children: int,
                  sleep: float, with_repo: bool) -> list[str]:
    load = os.getloadavg()[0]
    items = backlog(n)
    cli = fake_cli(work, items, sleep)
    repo = git_repo(work / "repo") if with_repo else None
    settings = StoreSettings(snapshot_interval=0, live=True)
    async with EventStore.open(params, settings, create=True) as store, \
            anyio.create_task_group() as memory_group:
        # Agent memory as ipa serve runs it: recalled before each run, folded from the log.
        agent_memory = AgentMemory(store, store.memory_table())
        await agent_memory.open()
        await memory_group.start(agent_memory.run)
        agents = AgentSettings(runner=lambda: ClaudeRunner(cli_path=cli), verify_timeout=30.0,
                               auto_queue=True, perpetual_interval=3600.0,
                               memory=agent_memory)
        env = PodEnvironment(store=store, workspaces=WorkspaceManager(work / "workspaces"),
                             scratch=work / "scratch", runner_for=lambda spec: CommandRunner(),
                             max_parallel=max_children, agents=agents)
        begin = time.perf_counter()
        project_id, samples, rss_before, rss_after = await run_swarm(env, repo, max_children)
        swarm_s = time.perf_counter() - begin
        s = await swarm_figures(store, project_id, max_children)
        begin = time.perf_counter()
        base_id, base_samples = await run_baseline(env, repo, items)
        base_s = time.perf_counter() - begin
        b = await baseline_figures(store, base_id)
        base_events = await store.read(base_id)
        memories = await agent_memory.table.count(agent_memory.model)
        memory_group.cancel_scope.cancel()
        await agent_memory.close()

    mem = memory(samples, s, rss_before, rss_after)
    base_start = first(base_events, "TaskStarted") or 0.0
    own, kids, box = samples.cores(s.entered, s.last_finished)
    base_own, base_kids, base_box = base_samples.cores(base_start, base_start + b.wall)
    from_approval = s.last_finished - s.approved
    from_entry = s.last_finished - s.entered
    ratio = from_entry / b.wall
    per_pod = (mem.peak - mem.before) / max(mem.pods, 1)
    p50, p99 = percentile_ms(s.ready_to_running, 50), percentile_ms(s.ready_to_running, 99)
    chains = min(n // 40, n // CHAIN)
    work_s = 2 * statistics.mean(s.run_seconds) if s.run_seconds else 0.0
    print(f"swarm: {n} items ({chains} chains of {CHAIN}, {n - chains * CHAIN} independent), "
          f"max_children {max_children}, each item's 2 CLI runs answering after {sleep:g} s; "
          f"{'a git repository, real merges' if with_repo else 'no repository (scratch dirs)'}")
    print(f"  (load average before the run: {load:.2f} on {os.cpu_count()} cores; agent memory "
          f"on, as in ipa serve: {memories} memories at the end)")
    print(f"  children finished: {s.outcomes}; merged into the project's branch: {s.merged}; "
          f"whole run (project created -> cancelled) {swarm_s:.1f} s")
    print(f"  BacklogApproved -> last ChildFinished:            {from_approval:8.2f} s")
    print(f"  PhaseEntered(development) -> last ChildFinished:  {from_entry:8.2f} s")
    print(f"  children running (spawned, not finished) while work waited: average "
          f"{s.average:.2f} of {max_children} (over {s.waited:.1f} s), max {s.most}")
    print(f"  agent CLIs running at once, average over the phase: {s.clis:.2f}")
    if s.child_seconds:
        print(f"  one child TaskStarted -> TaskCompleted: mean "
              f"{statistics.mean(s.child_seconds):.2f} s (its 2 CLI runs: {work_s:.2f} s); "
              f"one CLI run RunStarted -> RunFinished: mean "
              f"{statistics.mean(s.run_seconds):.2f} s over {len(s.run_seconds)} runs")
    print(f"  CPU over the phase, in cores: this process {own:.2f}, its CLIs and git "
          f"{kids:.2f}, the machine {box:.2f} of {os.cpu_count()} (the rest: PostgreSQL and "
          f"whatever else runs on the machine)")
    print(f"  {'latency':<48}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'n':>7}")
    lag = [samples.lag[i] for i in samples.between(s.entered, s.last_finished)
           if i < len(samples.lag)]
    print(row(f"this process's event loop: a {SAMPLE_EVERY * 1000:g} ms sleep woke late by",
              lag))
    print(row("item ready -> child's first JobStarted", s.ready_to_running))
    print(row("  items ready at the phase's entry", s.first_wave))
    print(row("  items ready later (a slot or a dependency)", s.later))
    print(row("  of which: ready -> ChildSpawned (project)", s.ready_to_spawned))
    print(row("  of which: ChildSpawned -> child's TaskStarted", s.spawned_to_started))
    print(row("  of which: TaskStarted -> first JobStarted", s.started_to_job))
    print(row("then: JobStarted -> CLI running (RunStarted)", s.job_to_cli))
    print(row("child's TaskCompleted -> ChildFinished", s.child_end_to_finished))
    print(f"  memory: RSS {mem.before / 2**20:.1f} MB before development, peak "
          f"{mem.peak / 2**20:.1f} MB with at most {mem.pods} child pods, "
          f"{mem.after / 2**20:.1f} MB after; per child pod {per_pod / 1024:.0f} KB "
          "(upper bound)")
    print(f"baseline: the same {2 * n} agent jobs ({n} of the items' kinds, {n} reviewers, "
          f"same dependencies) in one task, max_parallel {max_children}")
    print(f"  TaskStarted -> last job ended: {b.wall:8.2f} s ({b.succeeded}/{b.jobs} "
          f"succeeded; whole run {base_s:.1f} s)")
    print(f"  jobs running while a ready job waited: average {b.average:.2f}, max {b.most}; "
          f"agent CLIs running at once: {b.clis:.2f}; CPU in cores: this process "
          f"{base_own:.2f}, CLIs and git {base_kids:.2f}, the machine {base_box:.2f}")
    print(f"swarm/baseline (PhaseEntered(development) -> last ChildFinished / baseline wall): "
          f"{ratio:.2f}x")
    print()
    return [
        f"target children running while work waited >= {0.95 * max_children:g} of "
        f"{max_children} on average: {s.average:.2f} (max {s.most}) "
        f"-> {verdict(s.average >= 0.95 * max_children)}",
        f"target item ready -> child pod running (first JobStarted) p99 <= 100 ms: "
        f"{p99:.1f} ms (p50 {p50:.1f} ms) -> {verdict(p99 <= 100)}",
        f"swarm of {n} items: {from_approval:.2f} s from backlog approval ({from_entry:.2f} s "
        f"from development); baseline {b.wall:.2f} s; swarm/baseline {ratio:.2f}x; "
        f"{per_pod / 1024:.0f} KB per child pod",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200, help="backlog items")
    parser.add_argument("--max-children", type=int, default=20)
    parser.add_argument("--sleep", type=float, default=0.2,
                        help="seconds each item's CLI run takes before answering")
    parser.add_argument("--repo", action="store_true",
                        help="the project on a git repository: worktrees, commits, merges")
    args = parser.parse_args()
    if args.items < 1 or not 1 <= args.max_children <= 200 or args.sleep < 0:
        parser.error("--items >= 1, --max-children from 1 to 200, --sleep >= 0")
    with database() as (params, work):
        targets = anyio.run(measure, params, work, args.items, args.max_children, args.sleep,
                            args.repo, backend="asyncio")
    print("\n".join(targets))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
