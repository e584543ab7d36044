"""A real ``ipa serve`` process: ``ipa task ...`` through its API, API keys, refusing a
non-loopback host without keys, and a graceful SIGTERM with an open stream."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import httpx
import pytest
from anyio.abc import Process

from ipa.eventstore import ConnectionParams

from .test_cli import IPA, Run, environment, ipa, url_of

pytestmark = pytest.mark.anyio


@dataclass
class Served:
    process: Process
    url: str
    first_line: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def served(database: ConnectionParams, *args: str, **env: str) -> AsyncIterator[Served]:
    port = free_port()
    process = await anyio.open_process(
        [IPA, "serve", "--database-url", url_of(database), "--port", str(port), *args],
        env=environment(**env))
    try:
        assert process.stderr is not None
        line = b""
        with anyio.fail_after(30):
            while not line.endswith(b"\n"):
                line += await process.stderr.receive(1)
        yield Served(process, f"http://127.0.0.1:{port}", line.decode())
    finally:
        if process.returncode is None:
            process.terminate()
            with anyio.move_on_after(15):
                await process.wait()
            if process.returncode is None:
                process.kill()
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
