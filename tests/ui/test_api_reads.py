"""The API's reads served again (the list's pages, a task's view and its runs): the same
answer as a fresh one, and never older than the task list or the pod (real store, real pods)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from .test_api import api, create, job, parts, python, until  # noqa: F401 (fixtures)

pytestmark = pytest.mark.anyio


async def listed(api, predicate) -> dict:  # noqa: F811
    """``GET /api/tasks`` once the task list shows what ``predicate`` wants."""
    with anyio.fail_after(20):
        while True:
            page = (await api.get("/api/tasks")).json()
            if predicate(page["items"]):
                return page
            await anyio.sleep(0.02)


async def test_a_page_of_the_list_served_again_follows_every_change(api) -> None:  # noqa: F811
    pages = api.app.state.api.pages
    first = await create(api, title="first")
    one = await listed(api, lambda items: [row["status"] for row in items] == ["running"])
    again = (await api.get("/api/tasks")).json()
    served = pages.hits

    second = await create(api, title="second")
    both = await listed(api, lambda items: len(items) == 2)
    await api.post(f"/api/tasks/{first['id']}/pause", json={"reason": "look"})
    paused = await listed(api, lambda items: {row["id"]: row["status"] for row in items}
                          == {first["id"]: "paused", second["id"]: "running"})

    assert served >= 1 and again == one
    assert {row["title"] for row in both["items"]} == {"first", "second"}
    assert paused == (await api.get("/api/tasks")).json()
    assert [row["node"] for row in paused["items"]] == [None, None]  # no node: no lease


async def test_a_list_reloaded_at_the_same_position_is_rendered_again(api) -> None:  # noqa: F811
    task_list = api.app.state.api.task_list
    pages = api.app.state.api.pages
    await create(api, title="kept")
    before = await listed(api, lambda items: items and items[0]["status"] == "running")
    position = task_list.position

    await task_list.rebuild()  # every row made anew, at the same position
    misses = pages.misses
    after = (await api.get("/api/tasks")).json()

    assert task_list.position == position
    assert after == before and pages.misses == misses + 1


async def test_a_view_served_again_is_the_pods_current_state(api) -> None:  # noqa: F811
    task = await create(api)
    view = await until(api, task, lambda v: v["status"] == "running")
    views = api.app.state.api.views
    again = (await api.get(f"/api/tasks/{task['id']}")).json()
    hits = views.hits

    paused = await api.post(f"/api/tasks/{task['id']}/pause", json={"reason": "look"})
    now = (await api.get(f"/api/tasks/{task['id']}")).json()  # at once: the pod moved on

    assert again == view and hits >= 1
    assert paused.json()["status"] == now["status"] == "paused"
    assert now["version"] == view["version"] + 1


async def test_runs_served_again_follow_the_job_to_its_end(api, tmp_path: Path) -> None:  # noqa: F811
    go = tmp_path / "go"
    task = await create(api)
    url = f"/api/tasks/{task['id']}"
    wait_for_go = python(f"import os, time\nwhile not os.path.exists({str(go)!r}): "
                         "time.sleep(0.02)")
    await api.post(f"{url}/queue_job", json={"job_id": "slow", "agent": "dev",
                                             "spec": wait_for_go})
    await until(api, task, lambda v: job(v, "slow")["status"] == "running")
    running = (await api.get(f"{url}/runs")).json()
    again = (await api.get(f"{url}/runs")).json()

    go.touch()
    await until(api, task, lambda v: job(v, "slow")["status"] == "succeeded")
    done = (await api.get(f"{url}/runs")).json()
    first_page = (await api.get(f"{url}/runs", params={"limit": 1})).json()

    assert again == running
    assert [r["status"] for r in running["items"]] == ["running"]
    assert [r["status"] for r in done["items"]] == ["succeeded"]
    assert done["items"][0]["finished_at"] is not None
    assert first_page == done  # one run: one page, whatever the limit
    missing = await api.get("/api/tasks/00000000-0000-4000-8000-000000000000/runs")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "task_not_found"
