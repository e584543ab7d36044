"""The data-dir lock (B5): a second ``ipa serve``, or a store-writing command, on a data dir in
use is refused at start naming the holder; reading commands still work; a killed server never
blocks the next one; ``server.json`` says where the server listens while it runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio
import pytest

from ipa.eventstore import LOCK_FILE, ConnectionParams, DataDirInUse, data_dir_lock

from .test_cli import ipa, url_of
from .test_serve import free_port, served

pytestmark = pytest.mark.anyio


def test_a_held_lock_refuses_a_second_holder_naming_the_first(tmp_path: Path) -> None:
    with data_dir_lock(tmp_path, "ipa serve"):
        with pytest.raises(DataDirInUse) as refused:
            with data_dir_lock(tmp_path, "ipa snapshot"):
                pass  # pragma: no cover

    assert (refused.value.pid, refused.value.command) == (os.getpid(), "ipa serve")
    assert f"in use by ipa serve (pid {os.getpid()})" in str(refused.value)


def test_a_released_lock_can_be_taken_again_and_names_nobody(tmp_path: Path) -> None:
    with data_dir_lock(tmp_path, "ipa serve"):
        pass
    with data_dir_lock(tmp_path, "ipa projections rebuild"):
        held = json.loads((tmp_path / LOCK_FILE).read_text())

    assert held["command"] == "ipa projections rebuild"
    assert (tmp_path / LOCK_FILE).read_text() == ""


async def test_a_second_serve_on_the_data_dir_is_refused_naming_the_first(
    database: ConnectionParams, tmp_path: Path,
) -> None:
    async with served(database, data_dir=tmp_path) as first:
        assert "open " in first.first_line
        second = await ipa("serve", "--database-url", url_of(database), "--data-dir",
                           str(tmp_path), "--port", str(free_port()))
        still = first.process.returncode

    line = second.error_line()
    assert second.status == 1 and still is None
    assert f"the data dir {tmp_path.resolve()} is in use by ipa serve" in line
    assert f"pid {first.process.pid}" in line and first.url in line
    assert "recovered" not in second.err


@pytest.mark.parametrize("command", [["projections", "rebuild"],
                                     ["snapshot", "00000000-0000-4000-8000-000000000001"]],
                         ids=lambda command: command[0])
async def test_a_store_writing_command_is_refused_while_a_server_runs(
    database: ConnectionParams, tmp_path: Path, command: list[str],
) -> None:
    async with served(database, data_dir=tmp_path) as server:
        run = await ipa(*command, "--database-url", url_of(database), "--data-dir",
                        str(tmp_path))

    assert run.status == 1
    assert f"in use by ipa serve (pid {server.process.pid}, {server.url})" in run.error_line()


async def test_reading_commands_work_while_a_server_runs(
    database: ConnectionParams, tmp_path: Path,
) -> None:
    store = ["--database-url", url_of(database), "--data-dir", str(tmp_path)]
    async with served(database, data_dir=tmp_path) as server:
        task_id = (await ipa("task", "create", "t", "--url", server.url)).out.strip()
        events = await ipa("events", task_id, *store)
        replay = await ipa("replay", task_id, "--json", *store)
        verify = await ipa("audit", "verify", task_id, *store)

    assert events.status == 0 and "TaskCreated" in events.out
    assert replay.status == 0 and json.loads(replay.out)["id"] == task_id
    assert verify.status == 0, verify.out + verify.err


async def test_after_a_sigkill_a_new_server_starts_on_the_data_dir(
    database: ConnectionParams, tmp_path: Path,
) -> None:
    async with served(database, data_dir=tmp_path) as first:
        first.process.kill()
        with anyio.fail_after(10):
            await first.process.wait()
        left = json.loads((tmp_path / "server.json").read_text())  # a killed server's leftover
        async with served(database, data_dir=tmp_path) as second:
            now = json.loads((tmp_path / "server.json").read_text())
            listed = await ipa("task", "list", "--data-dir", str(tmp_path))

    assert left["pid"] == first.process.pid
    assert "open " in second.first_line, second.first_line
    assert (now["pid"], now["url"]) == (second.process.pid, second.url)
    assert listed.status == 0, listed.err


async def test_server_json_names_the_server_while_it_runs_and_goes_at_a_graceful_stop(
    database: ConnectionParams, tmp_path: Path,
) -> None:
    async with served(database, data_dir=tmp_path) as server:
        running = json.loads((tmp_path / "server.json").read_text())
        server.process.terminate()
        with anyio.fail_after(30):
            status = await server.process.wait()

    assert (running["url"], running["pid"]) == (server.url, server.process.pid)
    assert running["started_at"]
    assert status == 0 and not (tmp_path / "server.json").exists()


async def test_ipa_task_finds_the_server_from_the_data_dir(
    database: ConnectionParams, tmp_path: Path,
) -> None:
    async with served(database, data_dir=tmp_path) as server:
        created = await ipa("task", "create", "found", "--data-dir", str(tmp_path))
        listed = await ipa("task", "list", IPA_DATA_DIR=str(tmp_path))
        overridden = await ipa("task", "list", "--data-dir", str(tmp_path),
                               IPA_URL=f"http://127.0.0.1:{free_port()}")
        assert server.process.returncode is None

    assert created.status == 0, created.err
    assert created.out.strip() in listed.out
    assert overridden.status == 1 and "no ipa server at" in overridden.error_line()
