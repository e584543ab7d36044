"""Agents at scale: agent start latency and the recording of streamed agent output.

On a private embedded PostgreSQL, with the real ``Supervisor``, pods, ``EventStore`` and the
Claude Code runner (``claude-agent-sdk``) driving the scripted stand-in CLI of the tests
(``tests/fakes/fake_claude.py``, which speaks the CLI's stream-json protocol):

- P pods (default 100) each get one agent job at the same moment (``QueueJob`` with
  ``{"runner": "claude"}``, agent type ``spec_writer``: the whole RARV cycle). Each run's CLI
  prints L assistant messages (default 200) as fast as it can, then its result.
- **agent start**: from ``Pod.execute(QueueJob)`` returning (the job is ready) to the runner's
  ``on_started`` (the CLI process is running), read with ``time.perf_counter()`` in this
  process. Baseline, same run: the runner called directly P times at once, no pod, no store
  (call → ``on_started``).
- **output recording**: every message is one line of a ``RunOutput`` event in the run's own
  stream. Rate = lines recorded / time from the first CLI running to the last job done; the
  script then reads every run's stream back and checks that every line is there. Baseline,
  same run: the same P CLIs through the runner with output thrown away (lines/s delivered).

Performance never makes this script fail; read the targets lines last.

    .venv/bin/python bench/agents.py [--pods P] [--lines L] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import anyio

from ipa.domain import Context, CreateTask, JobStatus, QueueJob, decide
from ipa.eventstore import (
    ConnectionParams,
    EventStore,
    StoreSettings,
    embedded_postgres,
)
from ipa.pods import (
    AgentSettings,
    ClaudeRunner,
    CommandRunner,
    PodEnvironment,
    RunRequest,
    WorkspaceManager,
)
from ipa.supervisor import Supervisor

ROOT = Path(__file__).resolve().parents[1]


def fake_claude_class() -> Any:
    """``FakeClaude`` from the tests (loaded by path: ``tests`` is not a package)."""
    spec = importlib.util.spec_from_file_location("fake_claude_fixture",
                                                  ROOT / "tests" / "fakes" / "claude.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.FakeClaude


def percentile_ms(samples: list[float], p: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[p - 1] * 1000


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


@contextlib.contextmanager
def database() -> Iterator[tuple[ConnectionParams, Path]]:
    with tempfile.TemporaryDirectory(prefix="ipa-bench-") as tmp:
        work = Path(tmp) / "work"
        work.mkdir()
        with embedded_postgres(Path(tmp) / "pg") as params:
            yield params, work


class TimedRunner(ClaudeRunner):
    """The Claude runner, noting when each job's CLI process is running."""

    started: dict[str, float] = {}

    async def run(self, request: RunRequest, on_output: Any, *, on_started: Any = None) -> Any:
        async def started(pid: int) -> None:
            TimedRunner.started[request.job_id] = time.perf_counter()
            if on_started is not None:
                await on_started(pid)

        return await super().run(request, on_output, on_started=started)


async def baseline(cli: str, pods: int, work: Path) -> tuple[list[float], float, int]:
    """The runner alone, P at once: start latencies, lines/s delivered, lines."""
    latencies: list[float] = []
    lines = 0

    async def one(i: int) -> None:
        nonlocal lines
        workspace = work / f"base-{i}"
        workspace.mkdir()
        begin = time.perf_counter()

        def started(pid: int) -> None:
            latencies.append(time.perf_counter() - begin)

        async def output(batch: list) -> None:
            nonlocal lines
            lines += len(batch)

        request = RunRequest(run_id=str(i), job_id=str(i), agent="spec_writer",
                             spec={"prompt": "Agent type: spec_writer\nGo."}, workspace=workspace)
        result = await ClaudeRunner(cli_path=cli).run(request, output, on_started=started)
        assert result.succeeded, result.reason

    begin = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(pods):
            tg.start_soon(one, i)
    first = begin + min(latencies)  # first CLI running -> last run done, as for ipa
    return latencies, lines / (time.perf_counter() - first), lines


async def create_task(store: EventStore) -> UUID:
    task_id = uuid4()
    ctx = Context(actor="bench", now=datetime.now(UTC), correlation_id="bench")
    await store.append(task_id, decide(None, CreateTask("bench", "bench/agents.py"), ctx,
                                       task_id), 0)
    return task_id


async def measure(params: ConnectionParams, work: Path, pods: int, lines: int) -> list[str]:
    fake = fake_claude_class()(work / "fake")
    fake.script({"*": [{"lines": lines, "text": "# Spec\nbench"}]})
    cli = str(fake.cli)

    base_latencies, base_rate, base_lines = await baseline(cli, pods, work)

    settings = StoreSettings(snapshot_interval=0, live=True)
    async with EventStore.open(params, settings, create=True) as store:
        env = PodEnvironment(
            store=store, workspaces=WorkspaceManager(work / "workspaces"),
            scratch=work / "scratch", runner_for=lambda spec: CommandRunner(),
            max_parallel=1, agents=AgentSettings(runner=lambda: TimedRunner(cli_path=cli)),
        )
        supervisor = Supervisor(env)
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            started_pods = [await supervisor.start(await create_task(store))
                            for _ in range(pods)]
            ready: dict[str, float] = {}

            async def queue(i: int) -> None:
                job_id = f"job-{i}"
                await started_pods[i].execute(QueueJob(job_id=job_id, agent="spec_writer",
                                                       spec={"runner": "claude"}))
                ready[job_id] = time.perf_counter()

            async with anyio.create_task_group() as queueing:
                for i in range(pods):
                    queueing.start_soon(queue, i)

            async def finished(i: int) -> None:
                async for state in started_pods[i].state.changes():
                    job = state.jobs.get(f"job-{i}")
                    if job is not None and job.status in (JobStatus.succeeded, JobStatus.dead):
                        return

            with anyio.fail_after(600):
                async with anyio.create_task_group() as waiting:
                    for i in range(pods):
                        waiting.start_soon(finished, i)
            end = time.perf_counter()
            states = [pod.get_state() for pod in started_pods]
            tg.cancel_scope.cancel()

        failed = [s.jobs[f"job-{i}"].last_error for i, s in enumerate(states)
                  if s.jobs[f"job-{i}"].status is not JobStatus.succeeded]
        recorded = 0
        for i, state in enumerate(states):
            run_id = state.jobs[f"job-{i}"].run_id
            assert run_id is not None
            for event in await store.read(UUID(run_id), limit=100_000):
                if event.type == "RunOutput":
                    recorded += len(event.data["lines"])

    latencies = [TimedRunner.started[job_id] - ready[job_id] for job_id in ready
                 if job_id in TimedRunner.started]
    expected = base_lines  # the same CLIs print the same messages
    elapsed = end - min(TimedRunner.started.values())  # first CLI running -> last job done
    rate = recorded / elapsed
    p50, p99 = percentile_ms(latencies, 50), percentile_ms(latencies, 99)
    b50, b99 = percentile_ms(base_latencies, 50), percentile_ms(base_latencies, 99)
    print(f"{pods} pods, one agent job each at once, {lines} messages per run")
    print(f"  agent start (job ready -> CLI running):  p50 {p50:7.1f} ms   p99 {p99:7.1f} ms")
    print(f"  baseline (runner alone, {pods} at once): p50 {b50:7.1f} ms   p99 {b99:7.1f} ms"
          f"   ratio p99 {p99 / b99:.2f}x")
    print(f"  output recorded: {recorded:,} lines of {expected:,} in {elapsed:.2f} s "
          f"= {rate:,.0f} lines/s (all recorded: {recorded == expected}; "
          f"failed jobs: {len(failed)})")
    print(f"  baseline (runner alone, output dropped): {base_rate:,.0f} lines/s; "
          f"ratio {rate / base_rate:.2f}")
    for reason in failed[:3]:
        print(f"  failed: {reason}")
    met = verdict(rate >= 5000 and recorded == expected)
    return [
        f"target agent output recording >= 5,000 events/s per node, all recorded: "
        f"{rate:,.0f}/s, {recorded:,}/{expected:,} -> {met}",
        f"agent start p99 with {pods} pods: {p99:.1f} ms (runner alone {b99:.1f} ms)",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--lines", type=int, default=200, help="messages per run")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10 pods x 50 lines")
    args = parser.parse_args()
    if args.quick:
        args.pods, args.lines = 10, 50
    if args.pods < 2 or args.lines < 1:
        parser.error("--pods >= 2 and --lines >= 1")
    with database() as (params, work):
        targets = anyio.run(measure, params, work, args.pods, args.lines, backend="asyncio")
    print("\n".join(targets))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
