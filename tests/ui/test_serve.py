"""A real ``ipa serve`` process: ``ipa task ...`` through its API, API keys, refusing a
non-loopback host without keys, and a graceful SIGTERM with an open stream."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
from anyio.abc import Process

from ipa.eventstore import ConnectionParams
from ipa.pods import AgentConfigError
from ipa.ui.serve import agent_settings

from ..fakes.claude import FakeClaude
from .test_cli import IPA, Run, environment, ipa, url_of

pytestmark = pytest.mark.anyio


@dataclass
class Served:
    process: Process
    url: str
    first_line: str
    data_dir: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def served(database: ConnectionParams, *args: str, data_dir: Path | None = None,
                 **env: str) -> AsyncIterator[Served]:
    """An ``ipa serve`` on the test's database, with a data dir of its own unless given (the
    data dir is locked by its server)."""
    with contextlib.ExitStack() as stack:
        if "--data-dir" in args:
            data_dir = Path(args[args.index("--data-dir") + 1])
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ipa-serve-")))
        port = free_port()
        process = await anyio.open_process(
            [IPA, "serve", "--database-url", url_of(database), "--data-dir", str(data_dir),
             "--port", str(port), *args],
            env=environment(**env))
        try:
            assert process.stderr is not None
            line = b""
            with anyio.fail_after(30):
                while not line.endswith(b"\n"):
                    line += await process.stderr.receive(1)
            yield Served(process, f"http://127.0.0.1:{port}", line.decode(), data_dir)
        finally:
            if process.returncode is None:
                process.terminate()
                with anyio.move_on_after(15):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            await process.aclose()


async def task_cli(server: Served, *args: str, **env: str) -> Run:
    return await ipa("task", *args, "--url", server.url, **env)


async def test_ipa_task_commands_act_through_the_server(database: ConnectionParams) -> None:
    async with served(database) as server:
        assert f"open {server.url}/" in server.first_line
        assert "listening on 127.0.0.1 only" in server.first_line

        created = await task_cli(server, "create", "Add rate limiting", "--description", "login")
        task_id = created.out.strip()
        with anyio.fail_after(20):
            while json.loads((await task_cli(server, "show", task_id, "--json")).out)[
                    "status"] != "running":
                await anyio.sleep(0.05)
        paused = await task_cli(server, "pause", task_id, "--reason", "lunch")
        stale = await task_cli(server, "resume", task_id, "--expected-version", "1")
        resumed = await task_cli(server, "resume", task_id, "--json")
        listed = await task_cli(server, "list")
        at_1 = await task_cli(server, "show", task_id, "--version", "1")
        cancelled = await task_cli(server, "cancel", task_id, "--json")

    assert created.status == 0 and len(task_id) == 36
    assert paused.status == 0 and "status: paused" in paused.out
    assert stale.status == 1 and "current version 3" in stale.error_line()
    assert "version_conflict" in stale.error_line()
    assert json.loads(resumed.out)["status"] == "running"
    assert task_id in listed.out and "Add rate limiting" in listed.out
    assert "version: 1" in at_1.out
    assert json.loads(cancelled.out)["status"] == "cancelled"


async def test_ipa_task_without_a_server_is_one_line(database: ConnectionParams) -> None:
    run = await ipa("task", "list", "--url", f"http://127.0.0.1:{free_port()}")

    assert run.status == 1 and "no ipa server at" in run.error_line()


async def test_with_keys_the_cli_needs_one_and_the_actor_is_its_name(
    database: ConnectionParams,
) -> None:
    async with served(database, IPA_API_KEYS="ci:ci-key-123456") as server:
        assert "API keys required" in server.first_line
        refused = await task_cli(server, "list")
        created = await task_cli(server, "create", "t", "--json", IPA_API_KEY="ci-key-123456")

    assert refused.status == 1 and "unauthorized" in refused.error_line()
    assert json.loads(created.out)["created_by"] == "api-key:ci"


async def test_serve_refuses_a_public_host_without_keys(database: ConnectionParams) -> None:
    run = await ipa("serve", "--database-url", url_of(database), "--host", "0.0.0.0")

    assert run.status == 2
    assert "refusing to listen on 0.0.0.0" in run.error_line()


async def test_serve_on_a_port_in_use_says_so_and_exits_1(database: ConnectionParams) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = await ipa("serve", "--database-url", url_of(database), "--port", str(port))

    assert run.status == 1
    assert f"cannot listen on 127.0.0.1:{port}" in run.error_line()


async def test_sigterm_ends_open_streams_and_exits_0(database: ConnectionParams) -> None:
    async with served(database) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
            task = (await client.post("/api/tasks", json={"title": "t"})).json()
            async with client.stream("GET", f"/api/tasks/{task['id']}/stream") as stream:
                lines = stream.aiter_lines()
                assert [await anext(lines) for _ in range(3)] == ["retry: 1000", "", "id: 1"]
                server.process.send_signal(signal.SIGTERM)
                with anyio.fail_after(10):
                    rest = [line async for line in lines]
                    status = await server.process.wait()

    assert status == 0
    assert "event: shutdown" in rest


# CLI parity: what a person does on the page, done with `ipa task ...` ------------------------


async def until(server: Served, task_id: str, predicate) -> dict:
    """The task's view once ``predicate`` holds (polled through the API, with a deadline)."""
    view: dict = {}
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
        try:
            with anyio.fail_after(60):
                while True:
                    view = (await client.get(f"/api/tasks/{task_id}")).json()
                    if predicate(view):
                        return view
                    await anyio.sleep(0.05)
        except TimeoutError:
            jobs = [(j["job_id"], j["status"], j.get("last_error")) for j in view.get("jobs", [])]
            raise AssertionError(f"the task never got there: phase {view.get('phase')}, status "
                                 f"{view.get('status')}, attention {view.get('attention')}, "
                                 f"jobs {jobs}") from None


def git_repo(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "--allow-empty", "-m", "init"], check=True)
    return path


async def test_a_question_a_gate_and_the_budget_are_handled_from_the_cli(
    database: ConnectionParams, tmp_path: Path,
) -> None:
    fake = FakeClaude(tmp_path / "fake").script({
        "spec_writer": [{"text": "QUESTION: which endpoint?"}, {"text": "# Spec\nlogin"}],
        "*": [{"text": "# Plan\nsteps"}]})
    env = {"IPA_AUTO_AGENTS": "1", "IPA_CLAUDE_CLI": str(fake.cli)}
    async with served(database, **env) as server:
        task_id = (await task_cli(server, "create", "Rate limit", "--repo",
                                  str(git_repo(tmp_path / "repo")))).out.strip()
        await until(server, task_id, lambda v: any(
            q["answer"] is None for q in v.get("questions") or []))
        asked = await task_cli(server, "show", task_id)
        answered = await task_cli(server, "answer", task_id, "the login one")
        await until(server, task_id, lambda v: v["status"] == "waiting")
        at_gate = await task_cli(server, "show", task_id)
        changes = await task_cli(server, "request-changes", task_id, "more detail")
        await until(server, task_id, lambda v: v["status"] == "waiting"
                    and len(v["feedback"]) == 1)
        budget = await task_cli(server, "budget", task_id, "5")
        shown_budget = await task_cli(server, "show", task_id)
        approved = await task_cli(server, "approve", task_id, "--comment", "ok")
        await until(server, task_id, lambda v: v["phase"] == "planning"
                    and v["status"] == "waiting")
        back = await task_cli(server, "back-to-phase", task_id, "spec_clarification", "redo")
        again = await task_cli(server, "approve", task_id, "--expected-version", "1")
        no_job = await task_cli(server, "job", "retry", task_id, "no-such-job")

    assert "questions:" in asked.out and "open" in asked.out and "which endpoint?" in asked.out
    assert "attention: question:" in asked.out and "(do: answer" in asked.out
    assert "attention: gate:" in at_gate.out
    assert f"branch: ipa/{task_id.replace('-', '')[:8]} from main " in at_gate.out
    assert answered.status == 0, answered.err
    assert "gate: spec_clarification waits for approval" in at_gate.out
    assert "answered" in at_gate.out and "the login one" in at_gate.out
    assert "jobs:" in at_gate.out and "spec_writer" in at_gate.out
    assert changes.status == 0 and "status: running" in changes.out
    assert budget.status == 0 and "of a $5.00 budget" in shown_budget.out
    assert approved.status == 0
    assert back.status == 0 and "phase: spec_clarification" in back.out
    assert again.status == 1 and "version_conflict" in again.error_line()
    assert no_job.status == 1 and "no-such-job" in no_job.error_line()


async def test_task_list_is_newest_first_and_filters_by_status_and_attention(
    database: ConnectionParams,
) -> None:
    async with served(database) as server:
        first = (await task_cli(server, "create", "first")).out.strip()
        second = (await task_cli(server, "create", "second")).out.strip()
        await task_cli(server, "pause", first)
        listed = await task_cli(server, "list")
        paused = await task_cli(server, "list", "--status", "paused")
        needs_me = await task_cli(server, "list", "--attention", "--json")
    bogus = await ipa("task", "list", "--status", "bogus", "--url", server.url)

    ids = [line.split()[0] for line in listed.lines]
    assert ids.index(second) < ids.index(first)
    assert [line.split()[0] for line in paused.lines] == [first]
    assert needs_me.status == 0 and all(row.get("attention") for row in json.loads(needs_me.out))
    assert bogus.status == 2 and bogus.out == ""
    assert "invalid choice: 'bogus'" in bogus.error_line() and "'paused'" in bogus.error_line()


async def test_a_job_is_interrupted_held_and_skipped_from_the_cli(
    database: ConnectionParams, tmp_path: Path,
) -> None:
    fake = FakeClaude(tmp_path / "fake").script({"*": [{"text": "# Spec", "sleep": 60}]})
    env = {"IPA_AUTO_AGENTS": "1", "IPA_CLAUDE_CLI": str(fake.cli)}
    async with served(database, **env) as server:
        task_id = (await task_cli(server, "create", "t", "--repo",
                                  str(git_repo(tmp_path / "repo")))).out.strip()
        view = await until(server, task_id, lambda v: any(
            j["status"] == "running" for j in v["jobs"]))
        [job] = [j["job_id"] for j in view["jobs"] if j["status"] == "running"]
        interrupted = await task_cli(server, "job", "interrupt", task_id, job)
        await until(server, task_id, lambda v: any(
            j["job_id"] == job and j["status"] == "held" for j in v["jobs"]))
        skipped = await task_cli(server, "job", "skip", task_id, job, "--reason", "not needed")
        shown = await task_cli(server, "show", task_id)
        restart = await task_cli(server, "restart", task_id)
        elsewhere = git_repo(tmp_path / "elsewhere")
        moved = await task_cli(server, "set-repo", task_id, str(elsewhere))
        refused = await task_cli(server, "set-repo", task_id, str(tmp_path / "nowhere"))

    assert interrupted.status == 0, interrupted.err
    assert moved.status == 0, moved.err
    assert refused.status == 1 and "repository_refused" in refused.error_line()
    assert skipped.status == 0, skipped.err
    assert f"{job}  spec_writer" in shown.out and "skipped" in shown.out
    assert restart.status == 1 and "pod_running" in restart.error_line()


def test_agent_settings_read_the_perpetual_interval_from_the_environment() -> None:
    assert agent_settings({}).perpetual_interval == 3600.0
    assert agent_settings({"IPA_PERPETUAL_INTERVAL": "90"}).perpetual_interval == 90.0
    with pytest.raises(AgentConfigError, match="IPA_PERPETUAL_INTERVAL='-1'"):
        agent_settings({"IPA_PERPETUAL_INTERVAL": "-1"})
