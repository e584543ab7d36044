"""The nodes of a cluster seen from outside (issue #15 item 1): ``GET /api/nodes``, the
``node`` of a task in ``GET /api/tasks[/{id}]``, ``ipa nodes`` and ``ipa task show``, on real
``ipa serve`` processes sharing the test's database; and a node id that is taken or malformed."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import anyio
import httpx
import pytest

from ipa.eventstore import ConnectionParams, EventStore
from ipa.pods import PodEnvironment, WorkspaceManager, runner_for
from ipa.projections import TaskList
from ipa.supervisor import Supervisor
from ipa.ui.app import create_app

from .test_cli import ipa, url_of
from .test_serve import Served, free_port, served, task_cli

pytestmark = pytest.mark.anyio


async def nodes_of(server: Served) -> list[dict]:
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
        response = await client.get("/api/nodes")
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    return response.json()["items"]


async def until_nodes(server: Served, predicate) -> list[dict]:
    """``/api/nodes`` once ``predicate(items)`` holds (polled, with a deadline)."""
    items: list[dict] = []
    try:
        with anyio.fail_after(20):
            while not predicate(items := await nodes_of(server)):
                await anyio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"the nodes never got there: {items}") from None
    return items


async def test_api_nodes_lists_this_node_up_and_a_task_names_its_node(
    database: ConnectionParams,
) -> None:
    async with served(database, "--node-id", "node-a") as server:
        # The address is recorded with the heartbeat after the server listens.
        [node] = await until_nodes(server, lambda items: items and items[0]["address"])
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
            created = (await client.post("/api/tasks", json={"title": "t"})).json()
            task = (await client.get(f"/api/tasks/{created['id']}")).json()
            past = (await client.get(f"/api/tasks/{created['id']}?version=1")).json()
            with anyio.fail_after(20):  # the task list's row follows the task's events
                while not (rows := (await client.get("/api/tasks")).json()["items"]):
                    await anyio.sleep(0.05)
        shown = await task_cli(server, "show", created["id"])

    assert node["id"] == "node-a" and node["status"] == "up" and node["self"] is True
    assert node["address"] == server.url
    assert node["started_at"] <= node["heartbeat_at"]
    assert {"pods", "agents", "max_pods", "leases"} <= set(node)
    assert task["node"] == "node-a"
    assert "node" not in past  # a past version says nothing of where the task runs now
    assert [row["node"] for row in rows] == ["node-a"]
    assert shown.status == 0 and "node: node-a" in shown.out


async def test_ipa_nodes_prints_a_table_and_its_json(database: ConnectionParams) -> None:
    async with served(database, "--node-id", "node-b") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
            await client.post("/api/tasks", json={"title": "t"})
        await until_nodes(server, lambda items: items and items[0]["pods"] == 1)
        table = await ipa("nodes", "--url", server.url)
        as_json = await ipa("nodes", "--url", server.url, "--json")

    assert table.status == 0, table.err
    header, row = table.lines
    assert header.split() == ["ID", "ADDRESS", "STATUS", "PODS", "AGENTS", "HEARTBEAT",
                              "STARTED"]
    assert row.startswith("*") and row.split()[1:6] == ["node-b", server.url, "up", "1", "0"]
    assert " s ago " in row and row.endswith(" UTC")
    assert as_json.status == 0, as_json.err
    [item] = json.loads(as_json.out)["items"]
    assert item["id"] == "node-b" and item["self"] is True and item["pods"] == 1


async def test_a_killed_node_is_listed_dead_by_the_other(database: ConnectionParams) -> None:
    async with served(database, "--node-id", "node-a") as first, \
            served(database, "--node-id", "node-b") as second:
        await until_nodes(first, lambda items: len(items) == 2
                          and all(n["address"] for n in items))
        second.process.send_signal(signal.SIGKILL)
        items = await until_nodes(first, lambda items: [n["status"] for n in items]
                                  == ["up", "dead"])
        table = await ipa("nodes", "--url", first.url)

    assert [(n["id"], n["self"]) for n in items] == [("node-a", True), ("node-b", False)]
    assert table.lines[2].split()[:3] == ["node-b", second.url, "dead"]


async def test_a_second_server_with_a_taken_node_id_exits_with_one_line(
    database: ConnectionParams, tmp_path: Path,
) -> None:
    async with served(database, "--node-id", "node-a"):
        run = await ipa("serve", "--database-url", url_of(database), "--data-dir",
                        str(tmp_path), "--port", str(free_port()), "--node-id", "node-a")

    assert run.status != 0
    assert "'node-a'" in run.error_line() and "in use" in run.error_line()


async def test_a_malformed_node_id_is_refused_with_exit_2(database: ConnectionParams) -> None:
    option = await ipa("serve", "--database-url", url_of(database), "--node-id", "bad id!")
    env = await ipa("serve", "--database-url", url_of(database), IPA_NODE_ID="bad id!")

    assert option.status == 2 and "invalid node id 'bad id!'" in option.error_line()
    assert env.status == 2 and "IPA_NODE_ID: invalid node id" in env.error_line()


async def test_ipa_nodes_without_a_server_is_one_line() -> None:
    run = await ipa("nodes", "--url", f"http://127.0.0.1:{free_port()}")

    assert run.status == 1 and "no ipa server at" in run.error_line()


async def test_a_server_that_is_no_node_lists_none_and_names_no_node(
    store: EventStore, tmp_path: Path,
) -> None:
    task_list = TaskList(store)
    supervisor = Supervisor(PodEnvironment(
        store=store, workspaces=WorkspaceManager(tmp_path / "workspaces"),
        scratch=tmp_path / "scratch", runner_for=runner_for))
    async with anyio.create_task_group() as tg:
        await tg.start(task_list.run)
        await tg.start(supervisor.run)
        app = create_app(supervisor, task_list)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://localhost") as client:
            listed = (await client.get("/api/nodes")).json()
            created = (await client.post("/api/tasks", json={"title": "t"})).json()
            task = (await client.get(f"/api/tasks/{created['id']}")).json()
            page = (await client.get("/", headers={"accept": "text/html"})).text
        tg.cancel_scope.cancel()

    assert listed == {"items": [], "next_cursor": None}
    assert task["node"] is None
    assert 'id="nodes"' not in page  # no panel on a server that is no node
