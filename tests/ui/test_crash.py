"""A real ``ipa serve`` on the embedded PostgreSQL, killed with SIGKILL mid-run and started
again: the run's worktree is removed (the user's own worktrees are not), and a graceful stop
after the crash still stops the PostgreSQL it runs."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import Process

from ..pods.helpers import registered, repo_with_users_worktrees
from .test_cli import IPA, environment
from .test_serve import free_port

pytestmark = pytest.mark.anyio

# Runs until ipa serve, its parent, is gone (then it is reparented and stops by itself).
UNTIL_ORPHANED = ("import os, time\np = os.getppid()\nprint('working', flush=True)\n"
                  "while os.getppid() == p:\n    time.sleep(0.05)\n")


def postmaster(pgdata: Path) -> int | None:
    """The pid of the PostgreSQL running on ``pgdata``, if one runs."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def postgres_processes(pgdata: Path) -> list[int]:
    """Processes whose command line names ``pgdata`` (the postmaster is started with -D)."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
                state = Path(f"/proc/{name}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
            except OSError:
                continue
            if str(pgdata).encode() in cmdline and state != b"Z":
                found.append(int(name))
    return found


@contextlib.asynccontextmanager
async def serving(data_dir: Path) -> AsyncIterator[tuple[Process, httpx.AsyncClient]]:
    port = free_port()
    process = await anyio.open_process(
        [IPA, "serve", "--data-dir", str(data_dir), "--port", str(port)], env=environment())
    try:
        assert process.stderr is not None
        line = b""
        with anyio.fail_after(60):
            while not line.endswith(b"\n"):
                line += await process.stderr.receive(1)
        assert b"open http://" in line, line
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as client:
            yield process, client
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.aclose()


async def view_when(client: httpx.AsyncClient, task_id: str,
                    predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    with anyio.fail_after(30):
        while True:
            view = (await client.get(f"/api/tasks/{task_id}")).json()
            if predicate(view):
                return view
            await anyio.sleep(0.05)


async def test_after_sigkill_a_restart_removes_the_runs_worktree_and_a_stop_stops_postgres(
    tmp_path: Path,
) -> None:
    repo, mine, gone = repo_with_users_worktrees(tmp_path)
    data_dir = tmp_path / "data"
    pgdata = data_dir / "pg"
    try:
        async with serving(data_dir) as (process, client):
            task = (await client.post("/api/tasks", json={"title": "t", "repo": str(repo)})).json()
            queued = await client.post(f"/api/tasks/{task['id']}/queue_job", json={
                "job_id": "long", "agent": "dev", "max_attempts": 1,
                "spec": {"command": [sys.executable, "-c", UNTIL_ORPHANED]}})
            assert queued.status_code == 200, queued.text
            view = await view_when(client, task["id"], lambda v: any(
                j["status"] == "running" for j in v["jobs"]) and v["workspaces"])
            process.send_signal(signal.SIGKILL)
            await process.wait()
        [left] = view["workspaces"]
        assert Path(left["path"]).is_dir() and left["path"] in registered(repo)
        assert postmaster(pgdata) is not None  # a killed ipa leaves its PostgreSQL running

        async with serving(data_dir) as (process, client):
            await view_when(client, task["id"], lambda v: v["workspaces"][0]["removed"])
            process.send_signal(signal.SIGTERM)
            with anyio.fail_after(60):
                status = await process.wait()

        assert status == 0
        assert not Path(left["path"]).exists()
        assert registered(repo) == {str(mine), str(gone)}
        assert postmaster(pgdata) is None and postgres_processes(pgdata) == []
    finally:
        pid = postmaster(pgdata)
        if pid is not None:  # never leave a server behind, whatever failed
            os.kill(pid, signal.SIGQUIT)
