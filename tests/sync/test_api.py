"""The outbox through the HTTP API, as the pod page uses it: the task JSON lists pending
approvals, and ``approve_update`` publishes one."""

from __future__ import annotations

import anyio
import httpx
import pytest

from ipa.eventstore import EventStore
from ipa.pods import PodEnvironment
from ipa.projections import TaskList
from ipa.supervisor import Supervisor
from ipa.ui.app import create_app
from ipa.ui.guard import GuardPolicy

from .services import Services

pytestmark = pytest.mark.anyio


@pytest.fixture
async def api(store: EventStore, pod_env: PodEnvironment):
    task_list = TaskList(store)
    supervisor = Supervisor(pod_env)
    async with anyio.create_task_group() as tg:
        await tg.start(task_list.run)
        await tg.start(supervisor.run)
        # The test client (127.0.0.1) stands for a trusted proxy: it names actors.
        app = create_app(supervisor, task_list, guard=GuardPolicy(trusted_proxies=("127.0.0.1",)))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            yield client
        tg.cancel_scope.cancel()


async def task_until(api, task_id: str, predicate) -> dict:
    with anyio.fail_after(15):
        while True:
            task = (await api.get(f"/api/tasks/{task_id}")).json()
            if predicate(task):
                return task
            await anyio.sleep(0.02)


async def test_a_pending_update_is_listed_and_approved_through_the_api(
    api, services: Services
) -> None:
    created = await api.post("/api/tasks", json={"title": "t", "description": "d"})
    task_id = created.json()["id"]
    await task_until(api, task_id, lambda t: t["status"] == "running")

    refused = await api.post(f"/api/tasks/{task_id}/configure_sync",
                             json={"jira": {"issue": "KEY-1", "token": "secret"}})
    assert refused.status_code == 400 and "credentials" in refused.json()["error"]["message"]
    configured = await api.post(f"/api/tasks/{task_id}/configure_sync",
                                json={"jira": {"issue": "KEY-1"}},
                                headers={"x-ipa-actor": "user:a"})
    assert configured.status_code == 200, configured.text

    task = await task_until(api, task_id, lambda t: t["outbox"])
    (entry,) = task["outbox"]
    assert (entry["connector"], entry["kind"], entry["status"]) == (
        "jira", "comment", "awaiting_approval")
    assert "secret" not in str(task)
    missing = await api.post(f"/api/tasks/{task_id}/approve_update", json={"update_id": "nope"})
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "invalid_input"

    approved = await api.post(f"/api/tasks/{task_id}/approve_update",
                              json={"update_id": entry["update_id"],
                                    "payload_hash": entry["payload_hash"]},
                              headers={"x-ipa-actor": "user:alice"})
    assert approved.status_code == 200, approved.text

    task = await task_until(api, task_id, lambda t: t["deliveries"])
    assert task["outbox"][0]["status"] == "delivered"
    assert task["outbox"][0]["approval"]["actor"] == "user:alice"
    assert task["deliveries"][0]["outcome"] == "delivered"
    assert list(services.issues["KEY-1"]["comments"].values())[0] == entry["payload"]["body"]
