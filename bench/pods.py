"""Pods at scale: memory of idle pods, recovery of long tasks, and job dispatch latency.

Three parts, each on its own private embedded PostgreSQL in a fresh temp dir, with the real
``Supervisor``, ``Pod`` and ``EventStore`` (``snapshot_interval=0``, no live tail):

- **density**: N idle pods (default 1,000) in this process. A supervisor runs with one
  warm-up pod, then N tasks are created; the pods are started one by one through
  ``Supervisor.start``; each starts its pending task (``TaskStarted``) and then waits, with no
  job. Resident memory (``VmRSS`` of ``/proc/self/status``, after ``gc.collect()``) is read
  once everything has settled, before and after; per pod = delta / N. Baseline, in the same
  process just before and kept alive meanwhile: N anyio task groups of 4 sleeping tasks each
  (DESIGN §5 measured ~21 KB). ``--freeze`` calls ``gc.freeze()`` after the warm-up.
- **recovery**: T unfinished tasks of E events each (default 1,000 x 1,000: create, start,
  then pause/resume, ending paused so recovery starts no job), written in one append per task;
  then the task list is caught up (timed apart: a running server keeps it current). Time from
  ``tg.start(supervisor.run)`` until it returns (every pod started and ready), first with no
  snapshot (every pod replays its whole stream: the baseline), then after ``take_snapshot`` at
  the head of every task.
- **dispatch**: B busy pods (default 100), each running one job whose agent prints a line
  every ``--line-interval`` seconds (so the store also takes its output). Then D jobs
  (default 200) are queued one after the other, round robin over the busy pods, each running
  ``/bin/true``; a job's dispatch time runs from ``Pod.execute(QueueJob)`` returning (the job
  is ready) to the runner's ``on_started`` (its process is running), both read with
  ``time.perf_counter()`` in this process by a runner that wraps ``CommandRunner``. Baseline:
  ``anyio.open_process(["/bin/true"])`` called directly in the same process, idle and then
  with the busy pods running.

Read the targets lines last: they say whether the issue's goals are met; performance never
makes this script fail.

    .venv/bin/python bench/pods.py [density|recovery|dispatch|all] [--quick] [options]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar
from uuid import UUID, uuid4

import anyio
from anyio.abc import TaskStatus

from ipa.domain import (
    Context,
    CreateTask,
    JobStatus,
    Pause,
    QueueJob,
    Resume,
    StartTask,
    Status,
    TaskEvent,
    TaskState,
    UpdateSpec,
    decide,
    evolve,
)
from ipa.eventstore import ConnectionParams, EventStore, StoreSettings, embedded_postgres
from ipa.pods import (
    AgentRunner,
    CommandRunner,
    Pod,
    PodEnvironment,
    PodStatus,
    RunRequest,
    RunResult,
    WorkspaceManager,
)
from ipa.projections import TaskList
from ipa.supervisor import Supervisor

SETTINGS = StoreSettings(snapshot_interval=0, live=False)
SCHEDULER_COOLDOWN = 0.02  # pods/scheduler.py: a step never follows the last sooner than this
WRITERS = 4  # appends in flight while building the recovery data (group commit shares them)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def rss_bytes() -> int:
    """This process's resident set size, from the kernel."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def percentile_ms(samples: list[float], p: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[p - 1] * 1000


def context() -> Context:
    return Context(actor="bench", now=datetime.now(UTC), correlation_id="bench")


async def create_task(store: EventStore) -> UUID:
    task_id = uuid4()
    created = decide(None, CreateTask(title="bench task", description="bench/pods.py"),
                     context(), task_id)
    await store.append(task_id, created, 0)
    return task_id


def environment(store: EventStore, work: Path,
                runner_for: Callable[[dict], AgentRunner] | None = None) -> PodEnvironment:
    return PodEnvironment(store=store, workspaces=WorkspaceManager(work / "workspaces"),
                          scratch=work / "scratch",
                          runner_for=runner_for or (lambda spec: CommandRunner()))


async def until(pod: Pod, predicate: Callable[[TaskState], bool], timeout: float = 60) -> None:
    with anyio.fail_after(timeout):
        async for state in pod.state.changes():
            if predicate(state):
                return


async def settle() -> None:
    """Let every pod reach its idle wait, then collect garbage."""
    # A scheduler whose own step moved the state sleeps one cooldown before its next (idle)
    # step; after that every task of the process waits on something.
    await anyio.sleep(SCHEDULER_COOLDOWN * 5)
    await anyio.wait_all_tasks_blocked()
    gc.collect()


@contextlib.contextmanager
def database() -> Iterator[tuple[ConnectionParams, Path]]:
    """A private embedded PostgreSQL and a scratch dir for workspaces, both removed after."""
    with tempfile.TemporaryDirectory(prefix="ipa-bench-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        with embedded_postgres(Path(tmp) / "pg") as params:
            yield params, work


# -- density --------------------------------------------------------------------------------


async def idle_group(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """The baseline's unit: a task group of four tasks that sleep until cancelled."""
    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(anyio.sleep_forever)
        task_status.started()


async def measure_density(params: ConnectionParams, work: Path, n: int, freeze: bool
                          ) -> list[str]:
    async with EventStore.open(params, SETTINGS) as store:
        supervisor = Supervisor(environment(store, work))
        warm = await create_task(store)
        async with anyio.create_task_group() as tg:
            # The warm-up pod (recovered at start) runs every code path an idle pod runs once,
            # so imports, caches and worker threads are in the "before" figure of both.
            await tg.start(supervisor.run)
            await until(supervisor.get(warm), lambda s: s.status is Status.running)
            task_ids: list[UUID] = []

            async def create() -> None:
                task_ids.append(await create_task(store))

            async with anyio.create_task_group() as creating:
                for _ in range(n):
                    creating.start_soon(create)
            if freeze:
                gc.collect()
                gc.freeze()

            await settle()
            before = rss_bytes()
            async with anyio.create_task_group() as groups:
                start = time.perf_counter()
                for _ in range(n):
                    await groups.start(idle_group)
                baseline_s = time.perf_counter() - start
                await settle()
                baseline = rss_bytes() - before

                # The baseline's groups stay alive: the pods' memory is all new memory too.
                before = rss_bytes()
                start = time.perf_counter()
                pods = [await supervisor.start(task_id) for task_id in task_ids]
                start_s = time.perf_counter() - start
                for pod in pods:
                    await until(pod, lambda s: s.status is Status.running)
                settle_s = time.perf_counter() - start
                await settle()
                used = rss_bytes() - before
                ready = sum(pod.status is PodStatus.ready for pod in pods)
                groups.cancel_scope.cancel()
            tg.cancel_scope.cancel()
    if freeze:
        gc.unfreeze()

    per_pod, per_group = used / n / 1024, baseline / n / 1024
    print(f"density: {n:,} idle pods (each started its task, no job); "
          f"gc.freeze() after warm-up: {'yes' if freeze else 'no'}")
    print(f"{'':<44}{'RSS delta':>12}{'per unit':>12}{'start':>10}")
    print(f"{'pods (supervisor.start, one at a time)':<44}{used / 2**20:>9.1f} MB"
          f"{per_pod:>9.1f} KB{start_s:>8.2f} s")
    print(f"{'baseline: task group of 4 sleeping tasks':<44}{baseline / 2**20:>9.1f} MB"
          f"{per_group:>9.1f} KB{baseline_s:>8.2f} s")
    print(f"pods ready: {ready:,}/{n:,}; all tasks running (TaskStarted) {settle_s:.2f} s "
          f"after the first start; pod/baseline memory: {per_pod / per_group:.1f}x")
    print()
    ok = per_pod <= 256 and ready == n
    return [f"target (density) <= 256 KB resident per idle pod at {n:,} pods: "
            f"{per_pod:.1f} KB (baseline {per_group:.1f} KB, {per_pod / per_group:.1f}x) "
            f"-> {verdict(ok)}"]


# -- recovery -------------------------------------------------------------------------------


def task_history(task_id: UUID, n: int) -> list[TaskEvent]:
    """``n`` legal events that leave the task paused: create, start, (one spec update when
    ``n`` is even), then pause/resume, ending on a pause."""
    ctx = context()
    commands: list[Any] = [CreateTask(title="bench task", description="bench/pods.py"),
                           StartTask()]
    if n % 2 == 0:
        commands.append(UpdateSpec(description="bench/pods.py, updated"))
    state: TaskState | None = None
    events: list[TaskEvent] = []
    for i in range(n):
        if i < len(commands):
            command = commands[i]
        else:
            command = Pause(reason="bench") if (i - len(commands)) % 2 == 0 else Resume()
        [event] = decide(state, command, ctx, task_id)
        state = evolve(state, event)
        events.append(event)
    return events


async def build_tasks(store: EventStore, tasks: int, events: int) -> list[UUID]:
    """Write ``tasks`` histories, one append each, ``WRITERS`` appends in flight."""
    task_ids = [uuid4() for _ in range(tasks)]
    limiter = anyio.Semaphore(WRITERS)

    async def write(task_id: UUID, history: list[TaskEvent]) -> None:
        try:
            await store.append(task_id, history, 0)
        finally:
            limiter.release()

    async with anyio.create_task_group() as tg:
        for task_id in task_ids:
            await limiter.acquire()
            # Decided while the previous appends commit (the server works on the other core).
            tg.start_soon(write, task_id, task_history(task_id, events))
    return task_ids


@dataclass
class Recovery:
    seconds: float
    pods: int
    ready: int
    paused: int


async def recover(env: PodEnvironment) -> Recovery:
    """Start a supervisor on the store, time its recovery, stop it."""
    supervisor = Supervisor(env)
    gc.collect()
    async with anyio.create_task_group() as tg:
        start = time.perf_counter()
        await tg.start(supervisor.run)
        seconds = time.perf_counter() - start
        pods = supervisor.pods()
        result = Recovery(
            seconds, len(pods), sum(p.status is PodStatus.ready for p in pods),
            sum(p.get_state().status is Status.paused for p in pods),
        )
        tg.cancel_scope.cancel()
    return result


async def measure_recovery(params: ConnectionParams, work: Path, tasks: int, events: int
                           ) -> list[str]:
    total = tasks * events
    async with EventStore.open(params, SETTINGS) as store:
        env = environment(store, work)
        start = time.perf_counter()
        task_ids = await build_tasks(store, tasks, events)
        build_s = time.perf_counter() - start
        # A running server keeps the task list current (ui/serve.py runs TaskList.run); bring
        # it up to date here so recovery pays only for what a restart pays.
        start = time.perf_counter()
        await TaskList(store).catch_up()
        catch_up_s = time.perf_counter() - start
        start = time.perf_counter()
        rows = await TaskList(store).rows()
        rows_s = time.perf_counter() - start
        if len(rows) != tasks:
            raise RuntimeError(f"the task list has {len(rows)} rows, expected {tasks}")

        if await store.snapshots(task_ids[0]):
            raise RuntimeError("a snapshot exists before take_snapshot: the replay is not full")
        full = await recover(env)
        start = time.perf_counter()
        for task_id in task_ids:
            if await store.take_snapshot(task_id) != events:
                raise RuntimeError(f"snapshot of {task_id} is not at version {events}")
        snapshot_s = time.perf_counter() - start
        snap = await recover(env)

    print(f"recovery: {tasks:,} paused tasks x {events:,} events ({total:,} events)")
    print(f"{'build: decide + append, one append per task':<48}{build_s:>9.2f} s  "
          f"{total / build_s:>9,.0f} events/s")
    print(f"{'task list catch-up, every event (before both)':<48}{catch_up_s:>9.2f} s  "
          f"{total / catch_up_s:>9,.0f} events/s")
    print(f"{'task list rows(), alone (part of recovery)':<48}{rows_s * 1000:>9.1f} ms")
    print(f"{'take_snapshot at head, every task':<48}{snapshot_s:>9.2f} s")
    print(f"{'':<48}{'recovery':>11}{'per pod':>11}{'ready':>8}{'paused':>8}")
    for label, r in (("no snapshot, full replay (baseline)", full),
                     ("from a snapshot at head", snap)):
        print(f"{label:<48}{r.seconds:>9.2f} s{r.seconds / max(r.pods, 1) * 1000:>8.2f} ms"
              f"{r.ready:>8,}{r.paused:>8,}")
    print(f"speedup (no snapshot / snapshot): {full.seconds / snap.seconds:.1f}x")
    print()
    ok = snap.ready == tasks and snap.seconds <= 5
    return [f"target (recovery) {tasks:,} x {events:,}-event tasks, all pods ready <= 5 s: "
            f"{snap.seconds:.2f} s, {snap.ready:,} ready (no snapshot: {full.seconds:.2f} s, "
            f"{full.seconds / snap.seconds:.1f}x slower) -> {verdict(ok)}"]


# -- dispatch -------------------------------------------------------------------------------


@dataclass
class Marks:
    """Per job id (perf_counter): when its runner was called and its process was running,
    and an event set at the latter."""

    called: dict[str, float] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    running: dict[str, anyio.Event] = field(default_factory=dict)


@dataclass(frozen=True)
class TimedRunner:
    """``CommandRunner``, noting when it is called and when its process is running."""

    name: ClassVar[str] = "command"
    marks: Marks
    inner: CommandRunner = CommandRunner()

    def check(self, spec: Mapping[str, Any]) -> None:
        self.inner.check(spec)

    async def run(self, request: RunRequest, on_output: Callable[..., Awaitable[None]], *,
                  on_started: Callable[[int], Any] | None = None) -> RunResult:
        job_id = request.job_id
        self.marks.called[job_id] = time.perf_counter()

        def started(pid: int) -> Any:
            self.marks.started[job_id] = time.perf_counter()
            self.marks.running.setdefault(job_id, anyio.Event()).set()
            return on_started(pid) if on_started is not None else None

        return await self.inner.run(request, on_output, on_started=started)


@dataclass(frozen=True)
class Dispatch:
    """One job's way from ready to running (perf_counter seconds)."""

    ready: float
    called: float
    started: float


async def spawn_true(n: int) -> list[float]:
    """Seconds to start ``/bin/true`` with ``anyio.open_process``, one at a time."""
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        process = await anyio.open_process(["/bin/true"])
        samples.append(time.perf_counter() - start)
        async with process:
            await process.wait()
    return samples


async def queue_job(pod: Pod, marks: Marks, job_id: str, spec: dict[str, Any]) -> float:
    """Queue a job on ``pod``; the time it became ready (``execute`` returned)."""
    marks.running.setdefault(job_id, anyio.Event())
    await pod.execute(QueueJob(job_id=job_id, agent="bench", spec=spec))
    return time.perf_counter()


async def dispatch(pod: Pod, marks: Marks, job_id: str) -> Dispatch:
    """Queue a ``/bin/true`` job and wait until its process is running."""
    ready = await queue_job(pod, marks, job_id, {"command": ["/bin/true"]})
    with anyio.fail_after(30):
        await marks.running[job_id].wait()
    return Dispatch(ready, marks.called[job_id], marks.started[job_id])


def busy_agent(interval: float) -> dict[str, Any]:
    """A job spec whose agent prints a line every ``interval`` seconds until stopped."""
    code = f"import time\nwhile True:\n    print('busy', flush=True)\n    time.sleep({interval!r})"
    return {"command": [sys.executable, "-c", code]}


async def measure_dispatch(params: ConnectionParams, work: Path, busy: int, dispatches: int,
                           interval: float) -> list[str]:
    marks = Marks()
    warmup = max(5, dispatches // 20)
    async with EventStore.open(params, SETTINGS) as store:
        supervisor = Supervisor(environment(store, work, lambda spec: TimedRunner(marks)))
        task_ids = [await create_task(store) for _ in range(busy)]
        idle_spawn = await spawn_true(dispatches)
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            pods = [supervisor.get(task_id) for task_id in task_ids]
            for i, pod in enumerate(pods):
                await queue_job(pod, marks, f"busy-{i}", busy_agent(interval))
            with anyio.fail_after(120):  # every busy agent's process is running
                for i in range(busy):
                    await marks.running[f"busy-{i}"].wait()
            commits = store.commits
            start = time.perf_counter()
            loaded_spawn = await spawn_true(dispatches)
            runs = [await dispatch(pods[i % busy], marks, f"job-{i}")
                    for i in range(warmup + dispatches)][warmup:]
            commits_per_s = (store.commits - commits) / (time.perf_counter() - start)
            still_busy = sum(pod.get_state().jobs[f"busy-{i}"].status is JobStatus.running
                             for i, pod in enumerate(pods))
            tg.cancel_scope.cancel()

    total = [r.started - r.ready for r in runs]
    print(f"dispatch: {dispatches:,} jobs (after {warmup} warm-up) queued one at a time, "
          f"round robin over {busy:,} busy pods")
    print(f"(each busy agent prints a line every {interval:g} s; {commits_per_s:,.0f} store "
          f"commits/s meanwhile; {still_busy:,} busy agents still running at the end)")
    print(f"{'':<46}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}")
    rows = [
        ("job ready -> process running", total),
        ("  of which: ready -> runner called", [r.called - r.ready for r in runs]),
        ("  of which: runner called -> running", [r.started - r.called for r in runs]),
        ("baseline: open_process(/bin/true), idle", idle_spawn),
        ("baseline: open_process(/bin/true), busy pods", loaded_spawn),
    ]
    for label, values in rows:
        print(f"{label:<46}{percentile_ms(values, 50):>9.2f}{percentile_ms(values, 99):>9.2f}"
              f"{max(values) * 1000:>9.2f}")
    p99, base = percentile_ms(total, 99), percentile_ms(loaded_spawn, 99)
    print(f"dispatch/baseline (p99, busy pods): {p99 / base:.1f}x")
    print()
    return [f"target (dispatch) p99 <= 50 ms with {busy:,} busy pods: {p99:.1f} ms "
            f"(baseline spawn p99 {base:.1f} ms, {p99 / base:.1f}x) -> {verdict(p99 <= 50)}"]


# -- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", nargs="?", default="all",
                        choices=["density", "recovery", "dispatch", "all"])
    parser.add_argument("--pods", type=int, default=1000, help="density: idle pods")
    parser.add_argument("--freeze", action="store_true",
                        help="density: gc.freeze() after the warm-up, before the pods start")
    parser.add_argument("--tasks", type=int, default=1000, help="recovery: tasks")
    parser.add_argument("--events", type=int, default=1000, help="recovery: events per task")
    parser.add_argument("--busy", type=int, default=100, help="dispatch: busy pods")
    parser.add_argument("--dispatches", type=int, default=200, help="dispatch: measured jobs")
    parser.add_argument("--line-interval", type=float, default=0.1,
                        help="dispatch: seconds between two lines of a busy agent")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 100 pods; 100 x 200 events; 10 busy pods x 20 jobs")
    args = parser.parse_args()
    if args.quick:
        args.pods, args.tasks, args.events, args.busy, args.dispatches = 100, 100, 200, 10, 20
    if min(args.pods, args.tasks, args.busy) < 1 or args.events < 3 or args.dispatches < 2:
        parser.error("sizes must be >= 1 (--events >= 3, --dispatches >= 2)")

    parts: list[Callable[[ConnectionParams, Path], Awaitable[list[str]]]] = []
    if args.part in ("density", "all"):  # first: its memory figures want a fresh process
        parts.append(lambda p, w: measure_density(p, w, args.pods, args.freeze))
    if args.part in ("dispatch", "all"):
        parts.append(lambda p, w: measure_dispatch(p, w, args.busy, args.dispatches,
                                                   args.line_interval))
    if args.part in ("recovery", "all"):
        parts.append(lambda p, w: measure_recovery(p, w, args.tasks, args.events))
    targets: list[str] = []
    for part in parts:
        with database() as (params, work):
            targets += anyio.run(part, params, work, backend="asyncio")
    print("\n".join(targets))


if __name__ == "__main__":
    main()
