"""A cluster of real ``ipa serve`` nodes on one PostgreSQL (issue #15, DESIGN §6.1): tasks
spread over the nodes; a SIGKILLed node's tasks resume on the survivors with no acknowledged
event lost and no job attempt overlapping another; a node paused past the lease TTL writes
nothing more to the tasks it lost; a rolling restart (drain, start again) loses nothing."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from uuid import UUID

import anyio
import httpx
import psycopg
import pytest

from ipa.eventstore import ConnectionParams

from .test_cli import ipa, url_of
from .test_serve import Served, served

pytestmark = pytest.mark.anyio

TTL = "3"


def work(seconds: float) -> dict:
    """A command job printing a line every 0.1 s for ``seconds``."""
    steps = int(seconds * 10)
    code = f"import time\nfor i in range({steps}):\n    print(i, flush=True)\n    time.sleep(0.1)"
    return {"command": [sys.executable, "-c", code]}


@contextlib.asynccontextmanager
async def cluster(database: ConnectionParams, *names: str, **env: str
                  ) -> AsyncIterator[dict[str, Served]]:
    async with contextlib.AsyncExitStack() as stack:
        nodes = {}
        for name in names:
            nodes[name] = await stack.enter_async_context(
                served(database, "--node-id", name, "--lease-ttl", TTL, **env))
        yield nodes


def leases(database: ConnectionParams) -> dict[UUID, tuple[str | None, int]]:
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        rows = conn.execute("SELECT task_id, node_id, epoch FROM ipa_leases").fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


def node_status(database: ConnectionParams) -> dict[str, str]:
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        return dict(conn.execute("SELECT id, status FROM ipa_nodes").fetchall())


class Client:
    """Talks to one node; keeps every version the API acknowledged, by task."""

    def __init__(self) -> None:
        self.acknowledged: dict[str, list[tuple[int, str]]] = {}

    async def create(self, node: Served, title: str) -> str:
        async with httpx.AsyncClient(base_url=node.url) as http:
            response = await http.post("/api/tasks", json={"title": title})
        assert response.status_code == 201, response.text
        task = response.json()
        self.acknowledged.setdefault(task["id"], []).append((task["version"], "TaskCreated"))
        return task["id"]

    async def queue(self, node: Served, task_id: str, job_id: str, seconds: float,
                    depends_on: list[str] | None = None) -> None:
        async with httpx.AsyncClient(base_url=node.url) as http:
            response = await http.post(f"/api/tasks/{task_id}/queue_job", json={
                "job_id": job_id, "agent": "developer", "spec": work(seconds),
                "depends_on": depends_on or []})
        assert response.status_code == 200, response.text
        self.acknowledged[task_id].append((response.json()["version"], "JobQueued"))


async def task(node: Served, task_id: str) -> dict:
    async with httpx.AsyncClient(base_url=node.url) as http:
        return (await http.get(f"/api/tasks/{task_id}")).json()


async def until(predicate, timeout: float = 40, step: float = 0.1):
    with anyio.fail_after(timeout):
        while not (result := await predicate()):
            await anyio.sleep(step)
    return result


async def events(node: Served, stream: str) -> list[dict]:
    async with httpx.AsyncClient(base_url=node.url) as http:
        response = await http.get(f"/api/tasks/{stream}/events", params={"limit": 500})
        if response.status_code == 404:
            response = await http.get(f"/api/runs/{stream}/events", params={"limit": 500})
        assert response.status_code == 200, response.text
        return response.json()["items"]


async def assert_nothing_lost(node: Served, client: Client) -> None:
    """Every version the API acknowledged is in the store, as the event it acknowledged."""
    for task_id, acknowledged in client.acknowledged.items():
        recorded = {e["version"]: e["type"] for e in await events(node, task_id)}
        for version, kind in acknowledged:
            assert version in recorded and kind in (recorded[version], "*"), (
                task_id, version, kind, recorded)


async def assert_attempts_never_overlap(node: Served, task_id: str, job_id: str) -> int:
    """The job's runs, one after another in time (a run's first to last event); how many."""
    runs = [e["data"]["run_id"] for e in await events(node, task_id)
            if e["type"] == "JobStarted" and e["data"]["job_id"] == job_id]
    spans = []
    for run_id in runs:
        recorded = await events(node, run_id)
        if recorded:
            spans.append((datetime.fromisoformat(recorded[0]["timestamp"]),
                          datetime.fromisoformat(recorded[-1]["timestamp"])))
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start, f"job {job_id} of {task_id}: runs overlap: {spans}"
    return len(runs)


async def test_a_sigkilled_nodes_tasks_resume_on_the_survivors_and_nothing_is_lost(
    database: ConnectionParams,
) -> None:
    client = Client()
    async with cluster(database, "n1", "n2", "n3") as nodes:
        created = {name: [await client.create(node, f"{name} task {i}") for i in range(2)]
                   for name, node in nodes.items()}
        owners = leases(database)
        for name, task_ids in created.items():  # each task is leased to the node it came to
            assert [owners[UUID(t)][0] for t in task_ids] == [name, name]
        for name, task_ids in created.items():
            for task_id in task_ids:
                await client.queue(nodes[name], task_id, "work", 3.0 if name == "n1" else 0.5)
        victims = created["n1"]
        await until(lambda: _all_running(nodes["n1"], victims, "work"))

        nodes["n1"].process.send_signal(signal.SIGKILL)
        survivor = nodes["n2"]
        await until(lambda: _true(node_status(database).get("n1") == "dead"), timeout=10)
        for task_id in [t for ids in created.values() for t in ids]:
            await until(lambda t=task_id: _job_status(survivor, t, "work", "succeeded"))

        after = leases(database)
        taken = sorted(after[UUID(t)][0] for t in victims)
        assert taken == ["n2", "n3"]  # spread over the survivors, one each
        assert all(after[UUID(t)][1] == 2 for t in victims)  # each claimed once more
        for task_id in victims:
            state = await task(survivor, task_id)
            assert state["node"] == after[UUID(task_id)][0]  # the API names the new owner
            assert await assert_attempts_never_overlap(survivor, task_id, "work") == 2
            [job] = [j for j in state["jobs"] if j["job_id"] == "work"]
            assert job["attempts"] == 2 and job["status"] == "succeeded"
        await assert_nothing_lost(survivor, client)
    audit = await ipa("audit", "verify", "--database-url", url_of(database))
    assert audit.status == 0, audit.out + audit.err


async def test_a_node_paused_past_the_ttl_writes_nothing_more_to_the_tasks_it_lost(
    database: ConnectionParams,
) -> None:
    client = Client()
    async with cluster(database, "n1", "n2") as nodes:
        task_id = await client.create(nodes["n1"], "paused node")
        await client.queue(nodes["n1"], task_id, "work", 8.0)
        await until(lambda: _all_running(nodes["n1"], [task_id], "work"))
        [first_run] = [e["data"]["run_id"] for e in await events(nodes["n2"], task_id)
                       if e["type"] == "JobStarted"]
        await until(lambda: _has_output(nodes["n2"], first_run))
        [started] = [e for e in await events(nodes["n2"], first_run) if e["type"] == "RunStarted"]
        agents = children_of(started["data"]["pid"])  # the job's process, under its watchdog
        assert agents

        nodes["n1"].process.send_signal(signal.SIGSTOP)
        try:
            await until(lambda: _true(leases(database)[UUID(task_id)][0] == "n2"), timeout=15)
            # The frozen node's agent stopped by itself before its task was claimed.
            assert not [pid for pid in agents if running(pid)]
        finally:
            resumed = datetime.now().astimezone()
            nodes["n1"].process.send_signal(signal.SIGCONT)
        await until(lambda: _job_status(nodes["n2"], task_id, "work", "succeeded"), timeout=40)
        # n1 woke, tried to record its run, was refused, and knows why.
        said = await said_until(nodes["n1"], "LeaseLost", "no longer holds its lease")
        assert "LeaseLost" in said and "no longer holds its lease" in said, said

        late = [e for e in await events(nodes["n2"], first_run)
                if datetime.fromisoformat(e["timestamp"]) > resumed]
        assert late == []  # the paused node's run recorded nothing after it woke
        assert await assert_attempts_never_overlap(nodes["n2"], task_id, "work") == 2
        seen = await task(nodes["n1"], task_id)  # read through the node that lost it
        owner = await task(nodes["n2"], task_id)
        assert (seen["status"], seen["version"]) == (owner["status"], owner["version"])
        await assert_nothing_lost(nodes["n2"], client)
        assert node_status(database)["n1"] == "up"  # it lives on, without the task
        assert leases(database)[UUID(task_id)][0] == "n2"


async def test_a_rolling_restart_of_every_node_loses_nothing(
    database: ConnectionParams, tmp_path
) -> None:
    client = Client()
    dirs = {name: tmp_path / name for name in ("n1", "n2")}
    for path in dirs.values():
        path.mkdir()
    async with contextlib.AsyncExitStack() as stack:
        async def start(name: str) -> Served:
            return await stack.enter_async_context(served(
                database, "--node-id", name, "--lease-ttl", TTL, data_dir=dirs[name]))

        n1, n2 = await start("n1"), await start("n2")
        task_ids = [await client.create(n1, f"task {i}") for i in range(3)]
        for task_id in task_ids:
            await client.queue(n1, task_id, "first", 1.5)
            await client.queue(n1, task_id, "second", 3.0, depends_on=["first"])
        await until(lambda: _all_started(n1, task_ids, "first"))

        n1.process.send_signal(signal.SIGTERM)  # a drain: runs finish, leases go back
        assert await n1.process.wait() == 0
        assert node_status(database)["n1"] == "left"
        await until(lambda: _true(all(leases(database)[UUID(t)][0] == "n2" for t in task_ids)),
                    timeout=10)
        # Every second job started on n2 (one may have ended already on a loaded machine).
        await until(lambda: _all_started(n2, task_ids, "second"))

        n1 = await start("n1")  # back; then the other one drains
        n2.process.send_signal(signal.SIGTERM)
        assert await n2.process.wait() == 0
        await until(lambda: _true(all(leases(database)[UUID(t)][0] == "n1" for t in task_ids)),
                    timeout=10)
        for task_id in task_ids:
            state = await task(n1, task_id)
            assert state["status"] == "waiting", state["status"]  # both jobs done: the gate
            for job_id in ("first", "second"):
                assert await _job_status(n1, task_id, job_id, "succeeded")
                assert await assert_attempts_never_overlap(n1, task_id, job_id) == 1
            async with httpx.AsyncClient(base_url=n1.url) as http:  # the new owner goes on
                approved = await http.post(f"/api/tasks/{task_id}/approve", json={})
            assert approved.status_code == 200, approved.text
            client.acknowledged[task_id].append((approved.json()["version"], "*"))
        await assert_nothing_lost(n1, client)
    audit = await ipa("audit", "verify", "--database-url", url_of(database))
    assert audit.status == 0, audit.out + audit.err


async def test_commands_and_streams_on_a_node_that_does_not_own_the_task_work_as_on_the_owner(
    database: ConnectionParams,
) -> None:
    client = Client()
    async with cluster(database, "n1", "n2") as nodes:
        task_id = await client.create(nodes["n1"], "owned by n1")
        seen: list[str] = []

        async def follow(*, task_status=anyio.TASK_STATUS_IGNORED) -> None:
            async with httpx.AsyncClient(base_url=nodes["n2"].url, timeout=None) as http, \
                    http.stream("GET", f"/api/tasks/{task_id}/stream") as stream:
                task_status.started()
                async for line in stream.aiter_lines():
                    if line.startswith("event:"):
                        seen.append(line.split(":", 1)[1].strip())

        async with anyio.create_task_group() as tg, \
                httpx.AsyncClient(base_url=nodes["n2"].url) as n2:
            await tg.start(follow)
            paused = await n2.post(f"/api/tasks/{task_id}/pause", json={"reason": "lunch"},
                                   headers={"x-request-id": "pause-1"})
            again = await n2.post(f"/api/tasks/{task_id}/pause", json={"reason": "lunch"},
                                  headers={"x-request-id": "pause-1"})  # a retry
            stale = await n2.post(f"/api/tasks/{task_id}/resume",
                                  json={"expected_version": 1})
            refused = await n2.post(f"/api/tasks/{task_id}/approve", json={})
            queued = await n2.post(f"/api/tasks/{task_id}/queue_job", json={
                "job_id": "j", "agent": "developer", "spec": work(0.2)})
            resumed = await n2.post(f"/api/tasks/{task_id}/resume", json={})
            held = await n2.post(f"/api/tasks/{task_id}/jobs/nope/retry", json={})
            await until(lambda: _job_status(nodes["n2"], task_id, "j", "succeeded"))
            await until(lambda: _true("JobSucceeded" in seen), timeout=10)
            tg.cancel_scope.cancel()

        assert paused.status_code == 200 and paused.json()["status"] == "paused"
        assert paused.headers["x-ipa-node"] == "n1"  # the owner answered
        assert again.json() == paused.json()  # the same answer; paused once, not twice
        assert stale.status_code == 409 and stale.json()["error"]["code"] == "version_conflict"
        assert stale.json()["error"]["current_version"] == paused.json()["version"]
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "command_not_allowed"
        assert queued.status_code == 200 and resumed.json()["status"] == "running"
        assert held.status_code == 404 and held.json()["error"]["code"] == "job_not_found"
        events_ = [e["type"] for e in await events(nodes["n1"], task_id)]
        assert events_.count("TaskPaused") == 1
        assert {"TaskPaused", "TaskResumed", "JobQueued", "JobSucceeded"} <= set(seen)
        assert leases(database)[UUID(task_id)][0] == "n1"  # nothing moved


async def test_a_node_at_its_max_pods_sends_new_tasks_to_the_least_loaded_node(
    database: ConnectionParams,
) -> None:
    client = Client()
    async with contextlib.AsyncExitStack() as stack:
        full = await stack.enter_async_context(served(
            database, "--node-id", "full", "--lease-ttl", TTL, "--max-pods", "1"))
        free = await stack.enter_async_context(served(
            database, "--node-id", "free", "--lease-ttl", TTL))
        first = await client.create(full, "stays")
        second = await client.create(full, "goes to the other node")
        await client.queue(full, second, "work", 0.2)  # forwarded to its owner

        await until(lambda: _job_status(free, second, "work", "succeeded"))
        owners = leases(database)
        assert (owners[UUID(first)][0], owners[UUID(second)][0]) == ("full", "free")
        assert (await task(full, second))["node"] == "free"
        await assert_nothing_lost(free, client)


async def test_a_log_in_on_one_node_holds_on_every_node_and_a_log_out_ends_it_everywhere(
    database: ConnectionParams,
) -> None:
    keys = {"IPA_API_KEYS": "ann:ann-key-0123456789"}
    async with cluster(database, "n1", "n2", **keys) as nodes, \
            httpx.AsyncClient(base_url=nodes["n1"].url) as n1, \
            httpx.AsyncClient(base_url=nodes["n2"].url) as n2:
        login = await n1.post("/login", json={"key": "ann-key-0123456789"})
        assert login.status_code == 200
        token = login.cookies["ipa_session"]
        n1.cookies.clear()
        cookie = {"cookie": f"ipa_session={token}"}

        assert (await n1.get("/api/tasks", headers=cookie)).status_code == 200
        assert (await n2.get("/api/tasks", headers=cookie)).status_code == 200
        forged = {"cookie": f"ipa_session={token[:-2]}xx"}
        assert (await n2.get("/api/tasks", headers=forged)).status_code == 401
        out = await n2.post("/logout", headers=cookie)
        assert out.json()["session_revoked"] is True
        assert (await n2.get("/api/tasks", headers=cookie)).status_code == 401
        await until(lambda: _refused(n1, cookie), timeout=5)  # within a second or so


async def _refused(client: httpx.AsyncClient, cookie: dict) -> bool:
    return (await client.get("/api/tasks", headers=cookie)).status_code == 401


async def test_a_node_taking_over_a_task_whose_local_repository_it_cannot_see_says_so(
    database: ConnectionParams, tmp_path
) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "--allow-empty", "-m", "init"], check=True)
    async with cluster(database, "n1", "n2") as nodes:
        async with httpx.AsyncClient(base_url=nodes["n1"].url) as http:
            created = await http.post("/api/tasks", json={"title": "t", "repo": str(repo)})
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        repo.rename(tmp_path / "elsewhere")  # what n2's machine would not see
        nodes["n1"].process.send_signal(signal.SIGKILL)
        await until(lambda: _true(leases(database)[UUID(task_id)][0] == "n2"), timeout=15)
        warning = f"task {task_id}, whose repository {repo} does not exist here"
        said = await said_until(nodes["n2"], warning)
        assert warning in said, said


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


async def said_until(node: Served, *texts: str, timeout: float = 15) -> str:
    """What the node writes to stderr after its first line, read until it has said every
    one of ``texts`` (or ``timeout`` seconds passed: the caller's assertion then fails)."""
    assert node.process.stderr is not None
    said = b""
    with anyio.move_on_after(timeout):
        while not all(text.encode() in said for text in texts):
            said += await node.process.stderr.receive()
    return said.decode(errors="replace")


async def _true(value: bool) -> bool:
    return value


async def _job_status(node: Served, task_id: str, job_id: str, status: str) -> bool:
    jobs = {j["job_id"]: j for j in (await task(node, task_id)).get("jobs", [])}
    return job_id in jobs and jobs[job_id]["status"] == status


async def _all_running(node: Served, task_ids: list[str], job_id: str) -> bool:
    for task_id in task_ids:
        if not await _job_status(node, task_id, job_id, "running"):
            return False
    return True


async def _all_started(node: Served, task_ids: list[str], job_id: str) -> bool:
    for task_id in task_ids:
        if not (await _job_status(node, task_id, job_id, "running")
                or await _job_status(node, task_id, job_id, "succeeded")):
            return False
    return True


async def _has_output(node: Served, run_id: str) -> bool:
    return any(e["type"] == "RunOutput" for e in await events(node, run_id))


if os.name != "posix":  # SIGSTOP/SIGKILL
    pytestmark = pytest.mark.skip("POSIX signals")
