"""The ``ipa`` command line, run as the installed console script against a real database.

Every command runs in its own process (``--database-url`` names the test's database), so what
is tested is what a user gets: the exit status, stdout, and stderr — where an error is one line
and never a traceback.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import pty
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode
from uuid import UUID

import anyio
import psycopg
import pytest

from ipa.eventstore import ConnectionParams, EventStore
from ipa.projections import TaskList, summary

from ..eventstore.helpers import AUDIT_KEY_TEXT, task_history
from .live import live_server
from .test_children_api import seed_project

pytestmark = pytest.mark.anyio

IPA = shutil.which("ipa", path=os.path.dirname(sys.executable))
UNKNOWN_TASK = "00000000-0000-4000-8000-000000000001"
STORE_COMMANDS = [
    ["events", UNKNOWN_TASK],
    ["replay", UNKNOWN_TASK],
    ["audit", "verify"],
    ["projections", "rebuild"],
    ["snapshot", UNKNOWN_TASK],
]


@dataclass(frozen=True)
class Run:
    """What one ``ipa`` process did."""

    status: int
    out: str
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    def error_line(self) -> str:
        """The one line on stderr (asserting there is exactly one, and no traceback)."""
        assert "Traceback" not in self.err
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        return lines[0]


DATA_DIR = tempfile.mkdtemp(prefix="ipa-test-data-")
"""The data dir of commands given none: never the user's own (its lock, server.json, keys)."""
atexit.register(shutil.rmtree, DATA_DIR, ignore_errors=True)


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without any ``IPA_*`` setting, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("IPA_")}
    # A server started by these tests queues no agent per phase (jobs are queued by hand);
    # it and the store-reading commands use the tests' audit key (that of their stores).
    return {**env, "IPA_AUTO_AGENTS": "0", "IPA_AUDIT_KEY": AUDIT_KEY_TEXT,
            "IPA_DATA_DIR": DATA_DIR, **extra}


CLI_TIMEOUT = 90.0


async def ipa(*args: str, **env: str) -> Run:
    """Run the ``ipa`` command to its end (killed after :data:`CLI_TIMEOUT`).

    Through ``subprocess.run`` in a worker thread, not the event loop's pipes: in a test whose
    live server had just stopped, ``anyio.run_process`` sometimes waited forever for the end of
    a pipe of a command that had exited (no process held the pipe's other end)."""
    assert IPA is not None, "the ipa console script is not installed in this environment"
    done = await anyio.to_thread.run_sync(functools.partial(
        subprocess.run, [IPA, *args], capture_output=True, env=environment(**env),
        timeout=CLI_TIMEOUT, check=False))
    return Run(done.returncode, done.stdout.decode(), done.stderr.decode())


def url_of(params: ConnectionParams) -> str:
    query = urlencode({"host": params.host, "port": params.port})
    return f"postgresql://{params.user}@/{params.dbname}?{query}"


def sql(database: ConnectionParams, statement: str, *params: object) -> None:
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        conn.execute(statement, params)


def table_exists(database: ConnectionParams, table: str) -> bool:
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
    return row is not None and row[0] is not None


@pytest.fixture
def url(database: ConnectionParams) -> str:
    return url_of(database)


@pytest.fixture
def cli(url: str):
    """``ipa`` with ``--database-url`` set to the test's database."""

    async def run(*args: str) -> Run:
        return await ipa(*args, "--database-url", url)

    return run


async def record_task(store: EventStore, n: int = 6) -> UUID:
    task_id, events = task_history(n)
    await store.append(task_id, events, 0)
    return task_id


@pytest.fixture
async def task(store: EventStore) -> UUID:
    """A task with 6 events: created, started, paused (v3), resumed, paused, resumed (v6)."""
    return await record_task(store)


def edit_version_3(database: ConnectionParams, task_id: UUID) -> None:
    """Change the bytes of the task's first pause (version 3) in place, as a hand edit would."""
    sql(database, "UPDATE events SET state = replace(convert_from(state, 'UTF8'), "
        "'\"reason\":\"p2\"', '\"reason\":\"p9\"')::bytea WHERE originator_id = %s "
        "AND originator_version = 3", task_id)


def rename_event_type(database: ConnectionParams, task_id: UUID, version: int) -> None:
    """Make an event's type one this code does not know (as if the class were removed)."""
    sql(database, "UPDATE events SET topic = 'ipa.domain.events:TaskVanished' "
        "WHERE originator_id = %s AND originator_version = %s", task_id, version)


# The test's own plumbing ------------------------------------------------------------------------


def test_the_url_given_to_ipa_names_the_test_database(database: ConnectionParams) -> None:
    assert ConnectionParams.from_url(url_of(database)) == database


# ipa events -------------------------------------------------------------------------------------


async def test_events_lists_every_version_in_order(cli, task: UUID) -> None:
    run = await cli("events", str(task))

    assert run.status == 0 and run.err == ""
    assert [int(line.split()[0]) for line in run.lines] == [1, 2, 3, 4, 5, 6]
    assert "TaskCreated" in run.lines[0] and "TaskPaused" in run.lines[2]


async def test_events_json_prints_one_event_a_line_with_its_fields(cli, task: UUID) -> None:
    run = await cli("events", str(task), "--json")

    assert run.status == 0 and run.err == ""
    events = [json.loads(line) for line in run.lines]
    assert [e["version"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert {"version", "type", "timestamp", "data", "actor"} <= set(events[0])
    assert events[2]["type"] == "TaskPaused"
    assert events[2]["data"]["reason"] == "p2"
    assert events[2]["actor"] == "user:alice"
    assert events[2]["timestamp"] == "2026-11-21T09:00:02+00:00"


async def test_events_after_n_starts_at_the_next_version(cli, task: UUID) -> None:
    run = await cli("events", str(task), "--after", "2", "--json")

    assert run.status == 0
    assert [json.loads(line)["version"] for line in run.lines] == [3, 4, 5, 6]


async def test_events_piped_into_a_reader_that_stops_early_ends_quietly(
    store: EventStore, url: str
) -> None:
    task_id = await record_task(store, 2000)  # more output than the pipe holds

    status, err = await anyio.to_thread.run_sync(
        read_one_line_and_hang_up, [IPA, "events", str(task_id), "--database-url", url]
    )

    assert "Traceback" not in err and "Error" not in err
    assert status == 141  # as if killed by SIGPIPE, like other shell tools


def read_one_line_and_hang_up(command: list[str]) -> tuple[int, str]:
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment()
    ) as process:
        assert process.stdout is not None
        process.stdout.readline()
        process.stdout.close()
        _, err = process.communicate(timeout=30)
        return process.returncode, err.decode()


# ipa replay -------------------------------------------------------------------------------------


async def test_replay_at_a_version_shows_the_state_as_of_that_version(cli, task: UUID) -> None:
    at_2 = json.loads((await cli("replay", str(task), "--at", "2", "--json")).out)
    at_3 = json.loads((await cli("replay", str(task), "--at", "3", "--json")).out)

    assert (at_2["version"], at_2["status"]) == (2, "running")
    assert (at_3["version"], at_3["status"], at_3["paused_from"]) == (3, "paused", "running")
    assert at_3["id"] == str(task)


async def test_replay_without_a_version_shows_the_latest_state(
    cli, store: EventStore, task: UUID
) -> None:
    run = await cli("replay", str(task), "--json")

    assert run.status == 0 and run.err == ""
    state = json.loads(run.out)
    assert (state["version"], state["status"]) == (6, "running")
    assert state["updated_at"] == (await store.load(task)).updated_at.isoformat()
    assert "pause" in state["allowed_commands"]


async def test_replay_prints_one_field_a_line(cli, task: UUID) -> None:
    run = await cli("replay", str(task), "--at", "3")

    assert run.status == 0
    fields = dict(line.strip().split(": ", 1) for line in run.lines)
    assert fields["version"] == "3" and fields["status"] == "paused"
    assert fields["id"] == str(task)


async def test_replay_past_the_last_version_is_not_found(cli, task: UUID) -> None:
    run = await cli("replay", str(task), "--at", "7")

    assert run.status == 1 and run.out == ""
    assert run.error_line() == f"ipa: task {task} not found at version 7"


# ipa snapshot -----------------------------------------------------------------------------------


async def test_snapshot_stores_the_state_at_the_version_asked(
    cli, store: EventStore, task: UUID
) -> None:
    run = await cli("snapshot", str(task), "--at", "4")

    assert run.status == 0 and run.err == ""
    assert run.out == f"snapshot of task {task} at version 4\n"
    assert [(v, s) for v, s in await store.snapshots(task)] == [
        (4, (await store.load(task, 4)).to_dict())
    ]


# ipa audit verify -------------------------------------------------------------------------------


async def test_audit_verify_of_an_intact_store_says_ok_with_the_manifest_summary(
    cli, store: EventStore, task: UUID
) -> None:
    await record_task(store)
    await store.take_snapshot(task, 4)

    run = await cli("audit", "verify")

    assert (run.status, run.err) == (0, "")
    assert run.lines == [
        "manifest: 2 stream(s), 12 event(s), keyed from position 1 (note these outside the "
        "store: they never go down)",
        "ok: 2 stream(s) intact",
    ]


async def test_audit_verify_of_an_intact_task_says_ok(cli, task: UUID) -> None:
    run = await cli("audit", "verify", str(task))

    assert (run.status, run.out, run.err) == (0, "ok: 1 stream(s) intact\n", "")


async def test_audit_verify_of_a_task_names_its_edited_version(
    cli, database: ConnectionParams, task: UUID
) -> None:
    edit_version_3(database, task)

    run = await cli("audit", "verify", str(task))

    assert run.status == 1
    assert run.lines == [f"FAIL task {task} version 3: contents do not match the digest "
                         "(event edited)"]
    assert "1 problem" in run.error_line()


async def test_audit_verify_of_every_task_names_only_the_edited_one(
    cli, database: ConnectionParams, store: EventStore, task: UUID
) -> None:
    intact = await record_task(store)
    edit_version_3(database, task)

    run = await cli("audit", "verify")

    assert run.status == 1
    failing = [line for line in run.lines if "version 3" in line]
    assert len(failing) == 1 and str(task) in failing[0]
    assert str(intact) not in run.out
    assert "in 2 stream(s)" in run.error_line()


async def test_audit_verify_names_a_snapshot_that_differs_from_the_events(
    cli, database: ConnectionParams, store: EventStore, task: UUID
) -> None:
    await store.take_snapshot(task, 4)
    sql(database, "UPDATE snapshots SET state = replace(convert_from(state, 'UTF8'), "
        "'\"title\":\"t\"', '\"title\":\"forged\"')::bytea WHERE originator_id = %s", task)

    run = await cli("audit", "verify", str(task))

    assert run.status == 1
    assert run.lines == [f"FAIL task {task} version 4: snapshot differs from the state "
                         "replayed from events"]


async def test_audit_verify_names_an_event_whose_type_is_unknown(
    cli, database: ConnectionParams, task: UUID
) -> None:
    rename_event_type(database, task, 3)

    run = await cli("audit", "verify", str(task))

    assert run.status == 1
    assert any(f"task {task} version 3" in line and "TaskVanished" in line for line in run.lines)


async def test_audit_verify_names_a_task_the_task_list_has_but_the_events_lost(
    cli, database: ConnectionParams, store: EventStore, task: UUID
) -> None:
    await TaskList(store).catch_up()
    sql(database, "DELETE FROM events WHERE originator_id = %s", task)

    run = await cli("audit", "verify")

    assert run.status == 1
    assert run.lines[0].startswith(f"FAIL task {task} version 6: the task list has it")
    assert run.lines[1] == (f"FAIL task {task} version 6: the manifest has this stream at "
                            "version 6 but the store has no events for it (task deleted?)")
    assert "2 problem(s)" in run.error_line()


async def test_audit_verify_names_a_task_deleted_with_its_task_list_row(
    cli, database: ConnectionParams, store: EventStore, task: UUID
) -> None:
    intact = await record_task(store)
    await TaskList(store).catch_up()
    sql(database, "DELETE FROM events WHERE originator_id = %s", task)
    sql(database, "DELETE FROM read_models WHERE key = %s", str(task))

    run = await cli("audit", "verify")

    assert run.status == 1
    assert run.lines == [
        f"FAIL task {task} version 6: the manifest has this stream at version 6 but the store "
        "has no events for it (task deleted?)",
        "manifest: 2 stream(s), 12 event(s), keyed from position 1 (note these outside the "
        "store: they never go down)",
    ]
    assert str(intact) not in run.out
    assert "1 problem(s) in 1 stream(s)" in run.error_line()


async def test_audit_verify_names_a_task_whose_tail_was_deleted_and_list_row_lowered(
    cli, database: ConnectionParams, store: EventStore, task: UUID
) -> None:
    await TaskList(store).catch_up()
    sql(database, "DELETE FROM events WHERE originator_id = %s AND originator_version >= 5", task)
    sql(database, "UPDATE read_models SET data = json_build_object('id', key, 'version', 4, "
        "'error', null) WHERE key = %s", str(task))

    run = await cli("audit", "verify", str(task))

    assert run.status == 1
    assert run.lines == [f"FAIL task {task} version 6: the manifest records version 6 but the "
                         "events end at 4 (events deleted at the end?)"]


async def test_audit_verify_names_a_task_whose_task_list_row_is_marked_broken(
    cli, database: ConnectionParams, store: EventStore, task: UUID
) -> None:
    rename_event_type(database, task, 6)
    await TaskList(store).catch_up()  # marks the row: it cannot fold version 6

    run = await cli("audit", "verify", str(task))

    assert run.status == 1
    assert (f"FAIL task {task} version 6: the task list marks this task broken: unknown event "
            "type 'TaskVanished' (written by another version of ipa?)") in run.lines


async def test_audit_verify_names_a_forged_keyed_from_record(
    cli, database: ConnectionParams, task: UUID
) -> None:
    sql(database, "UPDATE audit_keyed_from SET position = position + 100")

    run = await cli("audit", "verify")

    assert run.status == 1
    assert run.lines[0] == ("FAIL store position 101: the keyed-from record fails its MAC "
                            "(altered: events would verify with the wrong digest)")


@pytest.mark.parametrize("command", [["audit", "verify"], ["serve"]])
async def test_another_audit_key_is_one_line_and_nothing_is_rekeyed(
    url: str, database: ConnectionParams, task: UUID, command: list[str]
) -> None:
    before = keyed_from(database)

    with busy_port() as port:  # should the key pass, the server stops at once all the same
        run = await ipa(*command, "--database-url", url, *(["--port", port] * (command[0] ==
                        "serve")), IPA_AUDIT_KEY="not-the-tests-audit-key-000000000000000000000")

    assert run.status == 1
    assert "is not the one this store was keyed with" in run.error_line()
    assert "wrong IPA_AUDIT_KEY or audit.key?" in run.error_line()
    assert keyed_from(database) == before


def keyed_from(database: ConnectionParams) -> list[tuple]:
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        return conn.execute("SELECT * FROM audit_keyed_from").fetchall()


@contextlib.contextmanager
def busy_port() -> Iterator[str]:
    """A port something else listens on (so ``ipa serve`` exits once its store is open)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield str(busy.getsockname()[1])


async def test_serve_keeps_its_audit_key_in_the_data_dir(
    url: str, database: ConnectionParams, tmp_path: Path
) -> None:
    # A fresh store, keyed by the first writer with a key file it makes in the data dir (an
    # occupied port stops the server right after it opened the store).
    with busy_port() as port:
        run = await ipa("serve", "--database-url", url, "--data-dir", str(tmp_path),
                        "--port", port, IPA_AUDIT_KEY="")

    assert "cannot listen" in run.error_line()
    assert (tmp_path / "audit.key").stat().st_mode & 0o777 == 0o600
    assert keyed_from(database) != []
    again = await ipa("audit", "verify", "--database-url", url, "--data-dir", str(tmp_path),
                      IPA_AUDIT_KEY="")
    assert again.status == 0, again.err


async def test_audit_verify_shows_progress_on_a_terminal(url: str, task: UUID) -> None:
    controller, terminal = pty.openpty()
    try:
        process = await anyio.open_process(
            [IPA, "audit", "verify", "--database-url", url], stderr=terminal, env=environment()
        )
    finally:
        os.close(terminal)
    async with process:
        shown = await anyio.to_thread.run_sync(read_until_closed, controller)
        status = await process.wait()

    assert status == 0
    assert "verified 1/1" in shown


def read_until_closed(fd: int) -> str:
    chunks = []
    try:
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    except OSError:  # EIO: every process holding the terminal has closed it
        pass
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


# ipa projections rebuild ------------------------------------------------------------------------


async def test_projections_rebuild_gives_the_same_rows(cli, store: EventStore) -> None:
    for _ in range(3):
        await record_task(store)
    await TaskList(store).catch_up()
    before = await TaskList(store).rows()

    run = await cli("projections", "rebuild")

    assert run.status == 0 and run.err == ""
    head = await store.head_position()
    assert run.out == (f"task list rebuilt: 3 task(s), log position {head}\n"
                       f"agent memory rebuilt: 0 memories, log position {head}\n"
                       f"analytics rebuilt: 0 usage record(s), log position {head}\n")
    assert await TaskList(store).rows() == before


async def test_projections_rebuild_fills_an_empty_task_list(cli, store: EventStore) -> None:
    tasks = [await record_task(store, n) for n in (2, 3, 5)]

    run = await cli("projections", "rebuild")

    assert run.status == 0
    rows = {row["id"]: row for row in await TaskList(store).rows()}
    assert set(rows) == {str(task_id) for task_id in tasks}
    for task_id in tasks:
        expected = summary(await store.load(task_id))
        assert {key: rows[str(task_id)][key] for key in expected} == expected


# Bad input: one line on stderr, a non-zero exit, nothing written -------------------------------


@pytest.mark.parametrize("command", [["events"], ["replay"], ["audit", "verify"], ["snapshot"]])
async def test_an_unknown_task_is_one_line_not_found(cli, task: UUID, command: list[str]) -> None:
    run = await cli(*command, UNKNOWN_TASK)

    assert run.status == 1 and run.out == ""
    assert run.error_line() == f"ipa: task {UNKNOWN_TASK} not found"


@pytest.mark.parametrize("command", [["events"], ["replay"], ["audit", "verify"], ["snapshot"]])
async def test_a_malformed_task_id_is_a_usage_error_naming_it(cli, command: list[str]) -> None:
    run = await cli(*command, "not-a-uuid")

    assert run.status == 2 and run.out == ""
    assert "'not-a-uuid' is not a task id" in run.error_line()


@pytest.mark.parametrize("command", ["replay", "snapshot"])
@pytest.mark.parametrize("version", ["abc", "0", "-1", "2.5"])
async def test_a_malformed_version_is_a_usage_error(cli, command: str, version: str) -> None:
    run = await cli(command, UNKNOWN_TASK, "--at", version)

    assert run.status == 2 and run.out == ""
    assert f"invalid version {version!r}" in run.error_line()


async def test_a_malformed_after_is_a_usage_error(cli) -> None:
    run = await cli("events", UNKNOWN_TASK, "--after", "x")

    assert run.status == 2
    assert "invalid value 'x'" in run.error_line()


async def test_an_unreachable_database_is_one_line_naming_it() -> None:
    run = await ipa("events", UNKNOWN_TASK, "--database-url", "postgresql://postgres@127.0.0.1:1/x")

    assert run.status == 1 and run.out == ""
    assert "127.0.0.1:1" in run.error_line()


async def test_a_malformed_database_url_is_one_line_naming_it() -> None:
    run = await ipa("audit", "verify", "--database-url", "mysql://db.example/x")

    assert run.status == 1
    assert "'mysql://db.example/x'" in run.error_line()


async def test_a_database_without_ipa_tables_is_one_line_and_left_untouched(
    database: ConnectionParams, url: str
) -> None:
    run = await ipa("projections", "rebuild", "--database-url", url)

    assert run.status == 1
    assert run.error_line().startswith("ipa: no ipa event store at postgresql://")
    assert not table_exists(database, "events")
    assert not table_exists(database, "read_models")


async def test_replay_through_an_unknown_event_type_is_one_line_naming_it(
    cli, database: ConnectionParams, task: UUID
) -> None:
    rename_event_type(database, task, 3)

    run = await cli("replay", str(task))

    assert run.status == 1 and run.out == ""
    line = run.error_line()
    assert f"task {task} version 3" in line and "TaskVanished" in line


async def test_replay_before_an_unknown_event_type_still_works(
    cli, database: ConnectionParams, task: UUID
) -> None:
    rename_event_type(database, task, 3)

    run = await cli("replay", str(task), "--at", "2", "--json")

    assert run.status == 0
    assert json.loads(run.out)["version"] == 2


async def test_events_still_lists_an_event_of_unknown_type(
    cli, database: ConnectionParams, task: UUID
) -> None:
    rename_event_type(database, task, 3)

    run = await cli("events", str(task), "--json")

    assert run.status == 0
    events = [json.loads(line) for line in run.lines]
    assert [e["version"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert events[2]["type"] == "TaskVanished"
    assert events[2]["data"]["reason"] == "p2"


async def test_rebuild_through_an_unknown_event_type_is_one_line_and_keeps_the_rows(
    cli, database: ConnectionParams, store: EventStore, task: UUID
) -> None:
    await TaskList(store).catch_up()
    before = await TaskList(store).rows()
    rename_event_type(database, task, 3)

    run = await cli("projections", "rebuild")

    assert run.status == 1
    line = run.error_line()
    assert f"task {task} version 3" in line and "TaskVanished" in line
    assert await TaskList(store).rows() == before


async def test_replay_across_a_deleted_event_is_one_line_naming_it(
    cli, database: ConnectionParams, task: UUID
) -> None:
    sql(database, "DELETE FROM events WHERE originator_id = %s AND originator_version = 4", task)

    run = await cli("replay", str(task))

    assert run.status == 1
    assert f"task {task}" in run.error_line()


@pytest.mark.parametrize("command", STORE_COMMANDS, ids=lambda command: command[0])
async def test_a_data_dir_without_data_is_one_line_and_stays_empty(
    tmp_path: Path, command: list[str]
) -> None:
    run = await ipa(*command, "--data-dir", str(tmp_path))

    assert run.status == 1 and run.out == ""
    assert run.error_line().startswith(f"ipa: no ipa data in {tmp_path}")
    assert list(tmp_path.iterdir()) == []


async def test_a_data_dir_from_the_environment_is_used(tmp_path: Path) -> None:
    run = await ipa("audit", "verify", IPA_DATA_DIR=str(tmp_path))

    assert run.status == 1
    assert run.error_line().startswith(f"ipa: no ipa data in {tmp_path}")


async def test_an_empty_pg_folder_is_not_initialised(tmp_path: Path) -> None:
    (tmp_path / "pg").mkdir()

    run = await ipa("audit", "verify", "--data-dir", str(tmp_path))

    assert run.status == 1
    assert run.error_line().startswith(f"ipa: no ipa data in {tmp_path}")
    assert list((tmp_path / "pg").iterdir()) == []


async def test_a_data_dir_that_cannot_be_created_is_one_line_and_not_created(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "a-file"  # root ignores permissions, but not a file in the path
    blocker.write_text("")

    run = await ipa("events", UNKNOWN_TASK, "--data-dir", str(blocker / "ipa"))

    assert run.status == 1
    assert str(blocker / "ipa") in run.error_line()
    assert blocker.is_file()


async def test_a_database_url_from_the_environment_is_used(url: str, task: UUID) -> None:
    run = await ipa("replay", str(task), "--json", IPA_DATABASE_URL=url)

    assert run.status == 0
    assert json.loads(run.out)["version"] == 6


async def test_a_data_dir_option_wins_over_a_database_url_in_the_environment(
    tmp_path: Path, url: str, task: UUID
) -> None:
    run = await ipa("replay", str(task), "--data-dir", str(tmp_path), IPA_DATABASE_URL=url)

    assert run.status == 1
    assert run.error_line().startswith(f"ipa: no ipa data in {tmp_path}")


# ``ipa task tree`` and ``show`` of a project's children (issue #14), through a real server.


async def test_task_tree_prints_the_backlog_by_phase_with_children_and_dependencies(
    store: EventStore, tmp_path: Path
) -> None:
    async with live_server(store, tmp_path) as server:
        swarm = await seed_project(store)
        with anyio.fail_after(10):
            await server.task_list.wait_for(await store.head_position())
        tree = await ipa("task", "tree", str(swarm.project), "--url", server.url)
        as_json = await ipa("task", "tree", str(swarm.project), "--url", server.url, "--json")
        shown = await ipa("task", "show", str(swarm.project), "--url", server.url)
        child = await ipa("task", "show", str(swarm.children["api"]), "--url", server.url)
        child_tree = await ipa("task", "tree", str(swarm.children["api"]), "--url", server.url)

    assert tree.status == 0, tree.err
    lines = tree.lines
    assert lines[0].startswith(f"Shop  {swarm.project}  project · development · paused")
    assert "max 4 children at once: 2 queued, 1 running, 1 waiting, 1 failed, 2 finished" in (
        lines[1])
    assert [line.split()[-1] for line in lines if line.lstrip("│ ").startswith(("├─", "└─"))
            and len(line.split()) == 2] == ["infrastructure", "development", "qa"]
    api = next(line for line in lines if " api " in line)
    assert "backend_developer" in api and "spawned" in api
    assert f"child {str(swarm.children['api'])[:8]} running/development" in api
    assert api.endswith("after: schema, ci")
    ui = next(line for line in lines if " ui " in line)
    assert "approved" in ui and ui.endswith("after: api, auth")
    # Dependency order inside a phase: schema, then what it frees (api before auth: priority).
    items = [line.lstrip("│ ").split()[1] for line in lines[2:]
             if line.startswith(("│  ", "   "))]
    assert items == ["ci", "schema", "api", "auth", "ui", "docs", "e2e"]
    data = json.loads(as_json.out)
    assert [p["phase"] for p in data["backlog"]["phases"]] == ["infrastructure", "development",
                                                                "qa"]
    assert data["counts"] == {"queued": 2, "running": 1, "waiting": 1, "failed": 1,
                              "finished": 2}
    assert "children: 2 queued, 1 running, 1 waiting, 1 failed, 2 finished" in shown.out
    assert "backlog: 7 items, version 1, approved" in shown.out
    assert f"project: {swarm.project} (item api, kind backend_developer)" in child.out
    assert f"of project {swarm.project}: ipa task tree {swarm.project}" in child_tree.out
