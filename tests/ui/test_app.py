"""The HTTP API: tasks and commands through the real store; every error is JSON."""

from __future__ import annotations

import uuid
from uuid import UUID

import anyio
import httpx
import pytest

from ipa.eventstore import EventStore
from ipa.pods import PodEnvironment, WorkspaceManager, runner_for
from ipa.projections import TaskList
from ipa.supervisor import Supervisor
from ipa.ui.app import create_app
from ipa.ui.guard import GuardPolicy

pytestmark = pytest.mark.anyio


@pytest.fixture
async def api(store: EventStore, tmp_path):
    task_list = TaskList(store)
    supervisor = Supervisor(PodEnvironment(
        store=store, workspaces=WorkspaceManager(tmp_path / "workspaces"),
        scratch=tmp_path / "scratch", runner_for=runner_for))
    async with anyio.create_task_group() as tg:
        await tg.start(task_list.run)
        await tg.start(supervisor.run)
        # The test client (127.0.0.1) stands for a trusted proxy: it names actors.
        app = create_app(supervisor, task_list, guard=GuardPolicy(trusted_proxies=("127.0.0.1",)))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            client.task_list = task_list  # type: ignore[attr-defined]
            client.supervisor = supervisor  # type: ignore[attr-defined]
            yield client
        tg.cancel_scope.cancel()


async def create(api, title: str = "Add rate limiting") -> dict:
    response = await api.post("/api/tasks", json={"title": title, "description": "login"})
    assert response.status_code == 201, response.text
    return response.json()


async def recorded(api, task: dict, event_type: str) -> None:
    """Wait until the task's stream has an event of ``event_type``."""
    with anyio.fail_after(15):
        async with api.supervisor.store.subscribe(UUID(task["id"])) as events:
            async for event in events:
                if event.type == event_type:
                    return


async def running(api, task: dict) -> None:
    """Wait until the task's pod has started it."""
    await recorded(api, task, "TaskStarted")


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


async def test_created_task_is_returned_and_listed(api, store: EventStore) -> None:
    task = await create(api)
    with anyio.fail_after(10):
        await api.task_list.wait_for(await store.head_position())

    listed = (await api.get("/api/tasks")).json()

    assert (task["phase"], task["status"], task["version"]) == ("spec_clarification", "pending", 1)
    assert [item["id"] for item in listed["items"]] == [task["id"]]
    assert listed["next_cursor"] is None
    assert (await api.get(f"/api/tasks/{task['id']}", params={"version": 1})).json() == task


async def test_task_list_pages_with_a_cursor(api, store: EventStore) -> None:
    ids = sorted([(await create(api, f"t{i}"))["id"] for i in range(5)])
    with anyio.fail_after(10):
        await api.task_list.wait_for(await store.head_position())

    first = (await api.get("/api/tasks", params={"limit": 3})).json()
    second = (await api.get("/api/tasks", params={"limit": 3,
                                                  "cursor": first["next_cursor"]})).json()

    assert [i["id"] for i in first["items"] + second["items"]] == ids
    assert second["next_cursor"] is None


async def test_commands_move_the_task_and_record_the_actor(api) -> None:
    task = await create(api)
    url = f"/api/tasks/{task['id']}"

    await running(api, task)
    paused = (await api.post(f"{url}/pause", json={"reason": "lunch"},
                             headers={"x-ipa-actor": "user:bob"})).json()
    events = (await api.get(f"{url}/events", params={"after": 1})).json()["items"]

    assert (paused["status"], paused["version"]) == ("paused", 3)
    assert [(e["version"], e["type"], e["actor"]) for e in events] == [
        (2, "TaskStarted", "system"), (3, "TaskPaused", "user:bob")]
    assert events[1]["data"]["reason"] == "lunch"


async def test_stale_expected_version_is_409_with_the_current_version(api) -> None:
    task = await create(api)

    await running(api, task)

    response = await api.post(f"/api/tasks/{task['id']}/pause", json={"expected_version": 1})

    assert assert_error(response, 409, "version_conflict")["current_version"] == 2


async def test_command_not_allowed_now_is_409_naming_the_allowed_ones(api) -> None:
    task = await create(api)

    response = await api.post(f"/api/tasks/{task['id']}/approve")

    error = assert_error(response, 409, "command_not_allowed")
    assert "pause" in error["allowed"] and "cannot approve" in error["message"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("post", "/api/tasks", b"{not json", 400, "bad_request"),
        ("post", "/api/tasks", b"[1]", 400, "bad_request"),
        ("post", "/api/tasks", b'{"title": "  "}', 400, "invalid_input"),
        ("post", "/api/tasks", b'{"title": "x", "workflow": "nope"}', 400, "invalid_input"),
        ("get", f"/api/tasks/{uuid.UUID(int=1)}", None, 404, "task_not_found"),
        ("get", "/api/tasks/not-a-uuid", None, 400, "bad_request"),
        ("get", f"/api/tasks/{uuid.UUID(int=1)}/events", None, 404, "task_not_found"),
        ("get", "/api/tasks?limit=0", None, 400, "bad_request"),
        ("post", f"/api/tasks/{uuid.UUID(int=1)}/explode", None, 404, "unknown_command"),
        ("get", "/nowhere", None, 404, "not_found"),
    ],
)
async def test_bad_requests_get_json_errors(api, method, path, body, status, code) -> None:
    headers = {"content-type": "application/json"} if body is not None else {}
    response = await api.request(method.upper(), path, content=body, headers=headers)

    assert_error(response, status, code)


async def test_bad_input_appends_nothing(api, store: EventStore) -> None:
    task = await create(api)
    await running(api, task)
    before = await store.head_position()

    await api.post(f"/api/tasks/{task['id']}/pause", json={"reason": 5})
    await api.post(f"/api/tasks/{task['id']}/pause", json={"nonsense": 1})
    await api.post("/api/tasks", json={"title": ""})

    assert await store.head_position() == before


async def test_a_command_for_a_finished_task_is_409_pod_not_running(api) -> None:
    task = await create(api)
    url = f"/api/tasks/{task['id']}"
    await api.post(f"{url}/cancel")
    with anyio.fail_after(10):
        await api.supervisor.wait_stopped(UUID(task["id"]))

    response = await api.post(f"{url}/resume")

    assert "has no running pod" in assert_error(response, 409, "pod_not_running")["message"]


async def test_a_queued_job_runs_in_the_tasks_pod(api) -> None:
    task = await create(api)
    url = f"/api/tasks/{task['id']}"

    response = await api.post(f"{url}/queue_job", json={
        "job_id": "hello", "agent": "spec_writer", "spec": {"command": ["true"]}})
    assert response.status_code == 200, response.text
    await recorded(api, task, "ApprovalRequested")

    events = (await api.get(f"{url}/events")).json()["items"]
    assert "JobSucceeded" in [e["type"] for e in events]
