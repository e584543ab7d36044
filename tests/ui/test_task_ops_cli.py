"""``ipa task archive|unarchive|clone|fork`` and ``ipa task list --archived`` through a real
server, and ``ipa audit verify`` after them (issue #17)."""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

import anyio
import pytest

from ipa.eventstore import EventStore

from .live import live_server
from .test_cli import ipa, url_of

pytestmark = pytest.mark.anyio


async def test_archive_clone_and_fork_from_the_command_line(
    store: EventStore, tmp_path: Path, database
) -> None:
    async with live_server(store, tmp_path) as server:
        url = ("--url", server.url)
        created = await server.client.post("/api/tasks", json={"title": "Ship it"})
        task_id = created.json()["id"]
        await server.client.post(f"/api/tasks/{task_id}/cancel", json={"reason": "shipped"})
        with anyio.fail_after(20):
            await server.supervisor.wait_stopped(UUID(task_id))

        archived = await ipa("task", "archive", task_id, *url, "--json")
        with anyio.fail_after(10):
            await server.task_list.wait_for(await store.head_position())
        listed = await ipa("task", "list", *url)
        with_archived = await ipa("task", "list", "--archived", *url)
        only = await ipa("task", "list", "--only-archived", *url)
        running = (await server.client.post("/api/tasks", json={"title": "Busy"})).json()
        refused = await ipa("task", "archive", running["id"], *url)
        unarchived = await ipa("task", "unarchive", task_id, *url, "--json")
        clone = await ipa("task", "clone", task_id, "--title", "Ship it again", *url)
        fork = await ipa("task", "fork", task_id, "--version", "2", *url)
        head = (await server.client.get(f"/api/tasks/{task_id}")).json()["version"]
        out_of_range = await ipa("task", "fork", task_id, "--version", "99", *url)
        shown = await ipa("task", "show", fork.out.strip(), *url)
        source = await ipa("task", "show", task_id, *url)
        for made in (clone, fork):
            await server.client.post(f"/api/tasks/{made.out.strip()}/cancel")
        await server.client.post(f"/api/tasks/{running['id']}/cancel")
    verified = await ipa("audit", "verify", "--database-url", url_of(database))

    assert archived.status == 0 and '"archived": true' in archived.out
    assert task_id not in listed.out and task_id in with_archived.out
    [line] = [line for line in with_archived.lines if task_id in line]
    assert "archived" in line and "cancelled" in line
    assert [line.split()[0] for line in only.lines] == [task_id]
    assert refused.status == 1 and "only a finished task" in refused.error_line()
    assert "[HTTP 409 command_not_allowed]" in refused.error_line()
    assert unarchived.status == 0 and '"archived": false' in unarchived.out
    for made in (clone, fork):
        assert made.status == 0, made.err
        assert UUID(made.out.strip()) and made.out.strip() != task_id
    assert out_of_range.status == 1
    assert out_of_range.error_line() == (
        f"ipa: version 99 is out of range: task {task_id} has versions 1 to {head} "
        "[HTTP 422 version_out_of_range]")
    assert f"forked from {task_id} at version 2" in shown.out
    assert fork.out.strip() in source.out and clone.out.strip() in source.out
    assert verified.status == 0, verified.out + verified.err
    assert verified.lines[-1] == "ok: 4 stream(s) intact"  # the two tasks, the clone, the fork
