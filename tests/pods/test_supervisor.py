"""The supervisor: pods isolated from each other, crash restarts, recovery, shutdown."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import anyio
import psycopg
import pytest

from ipa.domain import Cancel, Context, QueueJob, Status, decide
from ipa.eventstore import EventStore
from ipa.pods import CommandRunner, PodEnvironment, PodStatus, RestartPolicy, WorkspaceManager
from ipa.supervisor import PodNotRunning, Supervisor

from .helpers import git, job, python, registered, repo_with_users_worktrees, wait_for

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


def crashing_runner(spec: dict) -> CommandRunner:
    if spec.get("crash"):
        raise Boom("the runner blew up")
    return CommandRunner()


async def kill_mid_run(database, store: EventStore, tmp_path: Path) -> None:
    """Run the supervisor in another process (``supervised.py``) until a job's agent prints,
    then SIGKILL it, and its agent (which, in a session of its own, would outlive it)."""
    url = (f"postgresql://{database.user}@/{database.dbname}?host={database.host}"
           f"&port={database.port}")
    script = Path(__file__).parent / "supervised.py"
    process = await anyio.open_process([sys.executable, str(script), url, str(tmp_path)])
    try:
        with anyio.fail_after(30):
            async with store.subscribe() as live:
                async for recorded in live:
                    if recorded.type == "RunOutput":
                        break
        pid = next(e for e in await store.read_log(0, 10_000) if e.type == "RunStarted").data["pid"]
    finally:
        process.send_signal(signal.SIGKILL)
        await process.wait()
        await process.aclose()
    os.kill(pid, signal.SIGKILL)


async def test_a_command_for_a_task_without_a_pod_is_refused(supervisor) -> None:
    task_id = uuid.uuid4()

    with pytest.raises(PodNotRunning, match=f"task {task_id} has no running pod"):
        await supervisor.execute(task_id, QueueJob(job_id="x", agent="a"))


async def test_starting_a_pod_for_an_unknown_task_fails_and_leaves_no_pod(supervisor) -> None:
    task_id = uuid.uuid4()

    with pytest.raises(Exception, match="not found"):
        await supervisor.start(task_id)

    assert supervisor.pods() == []


async def test_a_crashing_pod_restarts_then_is_marked_failed_and_others_run_on(
    pod_env, create_task
) -> None:
    env = PodEnvironment(**{**pod_env.__dict__, "runner_for": crashing_runner,
                            "policy": RestartPolicy(max_crashes=3, backoff_initial=0.01)})
    supervisor = Supervisor(env)
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        bad = await supervisor.start(await create_task("bad"))
        good = await supervisor.start(await create_task("good"))
        await bad.execute(QueueJob(job_id="x", agent="developer", spec={"crash": True}))

        state = await wait_for(bad, lambda s: s.status is Status.failed)
        await good.execute(QueueJob(job_id="y", agent="developer", spec=python("pass")))
        await wait_for(good, lambda s: job(s, "y").status.value == "succeeded")
        tg.cancel_scope.cancel()

    assert bad.status is PodStatus.failed and len(bad.crashes) == 3
    assert "pod crashed 3 times" in state.failure and "the runner blew up" in state.failure
    assert good.status is not PodStatus.failed


async def test_shutdown_lets_running_steps_finish_and_snapshots_every_pod(
    pod_env, create_task, store: EventStore
) -> None:
    supervisor = Supervisor(pod_env)
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        pod = await supervisor.start(await create_task())
        await pod.execute(QueueJob(job_id="short", agent="developer",
                                   spec=python("import time; time.sleep(0.5)")))
        await wait_for(pod, lambda s: job(s, "short").status.value == "running")
        await supervisor.shutdown(deadline=20)
        tg.cancel_scope.cancel()

    state = await store.load(pod.task_id)
    assert job(state, "short").status.value == "succeeded"
    assert [v for v, _ in await store.snapshots(pod.task_id)][-1] == state.version


async def test_shutdown_stops_every_pod_while_others_end_on_their_own(
    pod_env, create_task, store: EventStore
) -> None:
    supervisor = Supervisor(pod_env)
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        busy = await supervisor.start(await create_task("busy"))
        await busy.execute(QueueJob(job_id="long", agent="developer",
                                    spec=python("import time; time.sleep(30)")))
        await wait_for(busy, lambda s: job(s, "long").status.value == "running")
        ending = [await supervisor.start(await create_task(f"ending {n}")) for n in range(5)]
        for pod in ending:  # these pods end by themselves while the busy one is being stopped
            await pod.execute(Cancel(reason="done with"))
        await supervisor.shutdown(deadline=0)
        assert supervisor.pods() == []
        tg.cancel_scope.cancel()

    assert job(await store.load(busy.task_id), "long").status.value != "running"
    for pod in ending:
        assert (await store.load(pod.task_id)).status is Status.cancelled


async def test_after_sigkill_every_task_comes_back_and_interrupted_runs_are_retried(
    database, store: EventStore, create_task, tmp_path: Path
) -> None:
    task_id = await create_task()
    ctx = Context(actor="user:test", now=datetime.now(UTC), correlation_id="t")
    state = await store.load(task_id)
    queue = QueueJob(job_id="long", agent="spec_writer",
                     spec=python("print('working', flush=True); import time; time.sleep(60)"))
    await store.append(task_id, decide(state, queue, ctx, task_id), state.version)
    await kill_mid_run(database, store, tmp_path)
    before = await store.read(task_id)

    supervisor = Supervisor(PodEnvironment(
        store=store, workspaces=WorkspaceManager(tmp_path / "workspaces"),
        scratch=tmp_path / "scratch", runner_for=lambda spec: CommandRunner()))
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        pod = supervisor.get(task_id)
        state = await wait_for(pod, lambda s: job(s, "long").attempts == 2
                               and job(s, "long").status.value == "running")
        tg.cancel_scope.cancel()

    after = await store.read(task_id)
    assert [e.to_json() for e in after[: len(before)]] == [e.to_json() for e in before]
    failed = [e for e in after if e.type == "JobFailed"]
    assert failed[0].data["interrupted"] is True
    assert "ipa stopped while this run was in flight" in failed[0].data["reason"]


async def test_recovery_starts_pods_only_for_unfinished_tasks(
    pod_env, create_task, store: EventStore
) -> None:
    open_task = await create_task("open")
    done_task = await create_task("done")
    state = await store.load(done_task)
    ctx = Context(actor="user:test", now=datetime.now(UTC), correlation_id="t")
    from ipa.domain import Cancel

    await store.append(done_task, decide(state, Cancel(reason="x"), ctx, done_task),
                       state.version)

    supervisor = Supervisor(pod_env)
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        ids = {pod.task_id for pod in supervisor.pods()}
        tg.cancel_scope.cancel()

    assert ids == {open_task}


async def test_after_sigkill_leftover_worktrees_are_removed_and_the_users_are_kept(
    database, store: EventStore, create_task, tmp_path: Path
) -> None:
    repo, mine, gone = repo_with_users_worktrees(tmp_path)
    task_id = await create_task(repo=str(repo))
    ctx = Context(actor="user:test", now=datetime.now(UTC), correlation_id="t")
    state = await store.load(task_id)
    queue = QueueJob(job_id="long", agent="spec_writer", max_attempts=1,
                     spec=python("print('working', flush=True); import time; time.sleep(60)"))
    await store.append(task_id, decide(state, queue, ctx, task_id), state.version)
    # A finished task whose pod was removing its workspaces when the process was killed.
    finished = await create_task("finished", repo=str(repo))
    state = await store.load(finished)
    await store.append(finished, decide(state, Cancel(reason="x"), ctx, finished), state.version)
    await kill_mid_run(database, store, tmp_path)
    workspaces = WorkspaceManager(tmp_path / "workspaces")
    orphan = await workspaces.create(task_id=finished, workspace_id="w-1", repo=str(repo))
    [left] = (await store.load(task_id)).workspaces.values()
    assert Path(left.path).is_dir() and registered(repo) == {str(mine), str(gone), left.path,
                                                             str(orphan.info.path)}

    supervisor = Supervisor(PodEnvironment(
        store=store, workspaces=workspaces, scratch=tmp_path / "scratch",
        runner_for=lambda spec: CommandRunner()))
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        state = await wait_for(supervisor.get(task_id),
                               lambda s: s.workspaces[left.workspace_id].removed)
        tg.cancel_scope.cancel()

    assert not Path(left.path).exists() and not orphan.info.path.exists()
    assert registered(repo) == {str(mine), str(gone)}
    assert (mine / ".git").is_file()
    # The run's branch goes with its worktree (its commits, had it any, stay under
    # refs/ipa/runs/); the user's branches stay.
    assert git(repo, "branch", "--list", left.branch).strip() == ""
    assert git(repo, "branch", "--list", "mine").strip()
    removed = [e for e in await store.read(task_id) if e.type == "WorkspaceRemoved"]
    assert removed[-1].data["reason"] == "ipa stopped while its run was in flight"


async def test_a_drain_ends_the_heartbeat_before_the_node_lets_go(
    database, store: EventStore, tmp_path: Path
) -> None:
    # A beat under way when the drain ended used to go on on the closed node (an
    # AttributeError ended `ipa serve` with status 1), or reconnect it after it had left.
    from ipa.supervisor import Membership

    node = store.node("draining")
    await node.open()
    supervisor = Supervisor(PodEnvironment(
        store=store, workspaces=WorkspaceManager(tmp_path / "workspaces"),
        scratch=tmp_path / "scratch", runner_for=lambda spec: CommandRunner()),
        node=node, membership=Membership(lease_ttl=5, heartbeat=0.02))
    looked, gate = anyio.Event(), anyio.Event()
    real_mine = node.mine

    async def held_mine():  # the beat's lease check, held between its query and its use
        answer = await real_mine()
        looked.set()
        await gate.wait()
        return answer

    async def status() -> str:
        async with await psycopg.AsyncConnection.connect(database.conninfo()) as conn:
            cursor = await conn.execute("SELECT status FROM ipa_nodes WHERE id = 'draining'")
            return (await cursor.fetchone())[0]

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            node.mine = held_mine  # type: ignore[method-assign]
            await looked.wait()
            drained = anyio.Event()

            async def drain() -> None:
                await supervisor.shutdown(deadline=0)
                drained.set()

            tg.start_soon(drain)
            assert supervisor._leaving is not None and supervisor._beating is not None
            await supervisor._leaving.wait()  # the drain has come to its end ...
            await anyio.wait_all_tasks_blocked()
            assert not drained.is_set()  # ... and waits for the beat under way
            assert await status() == "draining"
            gate.set()
            await drained.wait()
            assert supervisor._beating.is_set()  # no beat, no reconnection after it left
            await anyio.wait_all_tasks_blocked()
            assert await status() == "left"
            assert node._conn is None
            tg.cancel_scope.cancel()
