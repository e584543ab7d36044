"""The webhooks API on a real ``ipa serve`` (issue #17): register, list, read deliveries,
remove; a task's agent events delivered signed to a real local receiver; a restart between
event and delivery delivers once; a webhook disabled after failures and enabled again; bad
input refused with a one-line 4xx, nothing written."""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
import httpx
import pytest

from ipa.domain import WEBHOOK_LEDGER
from ipa.eventstore import ConnectionParams, EventStore

from ..pods.webhook_receiver import Receiver, until
from .test_serve import Served, served

pytestmark = pytest.mark.anyio

FAST = {"IPA_WEBHOOK_ALLOW_PRIVATE": "1", "IPA_WEBHOOK_BACKOFF_BASE": "0.05",
        "IPA_WEBHOOK_BACKOFF_CAP": "0.2", "IPA_WEBHOOK_POLL_INTERVAL": "0.05"}
UNKNOWN = "00000000-0000-4000-8000-000000000001"


def client(server: Served) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=20)


async def failing_job(http: httpx.AsyncClient) -> str:
    """A task whose one job fails for good: an ``agent.spawned`` then an ``agent.crashed``."""
    created = await http.post("/api/tasks", json={"title": "Add rate limiting"})
    task_id = created.json()["id"]
    queued = await http.post(f"/api/tasks/{task_id}/queue_job", json={
        "job_id": "bad", "agent": "tester", "max_attempts": 1,
        "spec": {"command": [sys.executable, "-c", "raise SystemExit(3)"]}})
    assert queued.status_code == 200, queued.text
    return task_id


async def deliveries(http: httpx.AsyncClient, webhook_id: str, n: int,
                     status: str = "delivered") -> list[dict[str, Any]]:
    async def found() -> list[dict[str, Any]]:
        got = await http.get(f"/api/webhooks/{webhook_id}/deliveries",
                             params={"status": status})
        items = got.json()["items"]
        return items if len(items) >= n else []

    return await until(found, timeout=30)


async def test_webhooks_deliver_a_task_s_agent_events_signed_and_list_their_history(
    database: ConnectionParams,
) -> None:
    with Receiver().running() as receiver:
        async with served(database, **FAST) as server, client(server) as http:
            added = await http.post("/api/webhooks", json={
                "url": receiver.url, "events": ["agent.spawned", "agent.crashed"]})
            hook = added.json()
            receiver.secret = hook["secret"]
            listed = (await http.get("/api/webhooks")).json()
            one = (await http.get(f"/api/webhooks/{hook['id']}")).json()
            task_id = await failing_job(http)
            rows = await deliveries(http, hook["id"], 2)
            paged = (await http.get(f"/api/webhooks/{hook['id']}/deliveries",
                                    params={"limit": 1})).json()
            rest = (await http.get(f"/api/webhooks/{hook['id']}/deliveries",
                                   params={"limit": 1, "cursor": paged["next_cursor"]})).json()
            removed = await http.delete(f"/api/webhooks/{hook['id']}")
            gone = await http.get(f"/api/webhooks/{hook['id']}")
            gone_history = await http.get(f"/api/webhooks/{hook['id']}/deliveries")

    assert added.status_code == 201, added.text
    assert hook["secret"].startswith("whsec_") and hook["status"] == "active"
    assert hook["events"] == ["agent.spawned", "agent.crashed"]
    assert [h["id"] for h in listed["items"]] == [hook["id"]]
    assert "secret" not in listed["items"][0] and "secret" not in one
    assert hook["secret"] not in json.dumps(listed) + json.dumps(one)
    assert one["created_by"] == "user:local"
    got = receiver.ok()
    assert [r.message["type"] for r in got] == ["agent.spawned", "agent.crashed"]
    assert all(r.verified for r in got)
    assert {r.message["data"]["task_id"] for r in got} == {task_id}
    assert got[1].message["data"]["agent"] == "tester"
    assert sorted(r["id"] for r in rows) == sorted(r.delivery_id for r in got)
    for row in rows:
        assert (row["status"], row["attempts"], row["last_status"]) == ("delivered", 1, 200)
        assert row["last_duration_ms"] >= 0 and row["latency_ms"] >= 0
        assert row["payload"]["data"]["task_id"] == task_id
    assert len(paged["items"]) == 1 and rest["next_cursor"] is None
    assert paged["items"][0]["id"] != rest["items"][0]["id"]
    assert removed.status_code == 200 and removed.json()["removed"] is True
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "webhook_not_found"
    assert gone_history.status_code == 404


async def test_a_restart_between_event_and_delivery_delivers_each_message_once(
    database: ConnectionParams,
) -> None:
    receiver = Receiver()
    with receiver.running():
        port = int(receiver.url.split(":")[2].split("/")[0])
    env = {**FAST, "IPA_WEBHOOK_BACKOFF_BASE": "0.5", "IPA_WEBHOOK_BACKOFF_CAP": "0.5"}
    async with served(database, **env) as server, client(server) as http:
        hook = (await http.post("/api/webhooks", json={
            "url": receiver.url, "events": ["*"]})).json()
        task_id = await failing_job(http)
        await deliveries(http, hook["id"], 1, status="pending")  # enqueued, nobody listening
    with Receiver(port=port, secret=hook["secret"]).running() as back:
        async with served(database, **env) as server, client(server) as http:
            rows = await deliveries(http, hook["id"], 2)
            await anyio.sleep(1.0)  # anything sent twice would have come by now

    assert len(rows) == 2
    assert {r.message["data"]["task_id"] for r in back.ok()} == {task_id}
    assert sorted(back.counts().values()) == [1, 1] and all(r.verified for r in back.ok())


async def test_a_webhook_failing_in_a_row_is_disabled_and_enabled_again(
    database: ConnectionParams,
) -> None:
    with Receiver(status=500).running() as receiver:
        async with served(database, **FAST, IPA_WEBHOOK_MAX_FAILURES="2") as server, \
                client(server) as http:
            hook = (await http.post("/api/webhooks", json={
                "url": receiver.url, "events": ["*"]})).json()
            await failing_job(http)

            async def disabled() -> dict | None:
                view = (await http.get(f"/api/webhooks/{hook['id']}")).json()
                return view if view["status"] == "disabled" else None

            off = await until(disabled, timeout=30)
            receiver.recover()
            enabled = await http.post(f"/api/webhooks/{hook['id']}/enable")

            async def all_delivered() -> list[dict]:
                # Every delivery delivered, and each one the receiver took is recorded (a late
                # one can come: the crash's, when it comes after the webhook is enabled).
                got = await http.get(f"/api/webhooks/{hook['id']}/deliveries")
                items = got.json()["items"]
                done = items and all(i["status"] == "delivered" for i in items)
                return items if done and {i["id"] for i in items} == set(receiver.counts()) \
                    else []

            # The crash's message is not made when the webhook was disabled before it came.
            rows = await until(all_delivered, timeout=30)

    assert off["enabled"] is False and off["consecutive_failures"] >= 2
    assert off["disabled_reason"].startswith("HTTP 500")
    assert enabled.status_code == 200 and enabled.json()["status"] == "active"
    assert 1 <= len(rows) <= 2 and rows[-1]["payload"]["type"] == "agent.spawned"
    assert len(receiver.counts()) == len(rows)


BAD: list[tuple[Any, int, str, str]] = [
    (b"{not json", 400, "bad_request", "not valid JSON"),
    ({"url": "ftp://example.com/h", "events": ["*"]}, 400, "invalid_webhook_url",
     "http:// or https://"),
    ({"url": "not a url", "events": ["*"]}, 400, "invalid_webhook_url", "url 'not a url'"),
    ({"url": "https://user:pw@example.com/h", "events": ["*"]}, 400, "invalid_webhook_url",
     "credentials"),
    ({"url": "http://example.com/\u0000", "events": ["*"]}, 400, "invalid_webhook_url",
     "control characters"),
    (b'{"url": "http://example.com/\\ud800", "events": ["*"]}', 400, "invalid_text",
     "lone surrogate"),
    ({"url": "http://93.184.215.14/h", "events": ["task.exploded"]}, 400,
     "unknown_webhook_event", "unknown event type 'task.exploded'"),
    ({"url": "http://93.184.215.14/h"}, 400, "unknown_webhook_event", "'events' is required"),
    ({"events": ["*"]}, 400, "invalid_webhook_url", "'url' is required"),
    ({"url": "http://93.184.215.14/h", "events": ["*"], "secret": "short"}, 400,
     "invalid_webhook_secret", "24 to 64"),
    ({"url": "http://93.184.215.14/h", "events": ["*"], "owner": "me"}, 400, "bad_request",
     "unknown field(s) 'owner'"),
    ({"url": "http://127.0.0.1:8765/api/tasks", "events": ["*"]}, 422,
     "webhook_address_refused", "127.0.0.1 is a loopback address"),
    ({"url": "http://localhost/h", "events": ["*"]}, 422, "webhook_address_refused",
     "loopback"),
    ({"url": "http://[::ffff:10.0.0.1]/h", "events": ["*"]}, 422, "webhook_address_refused",
     "private"),
    ({"url": "http://169.254.169.254/latest", "events": ["*"]}, 422,
     "webhook_address_refused", "link-local"),
    (b'{"url": ' + b"[" * 100 + b"]" * 100 + b"}", 400, "bad_request", "nested deeper"),
    (b'{"url": "' + b"a" * (1024 * 1024) + b'"}', 413, "payload_too_large", "limit"),
]


async def test_bad_input_is_a_one_line_4xx_naming_the_problem_and_writes_nothing(
    database: ConnectionParams, store: EventStore,
) -> None:
    answers = []
    async with served(database) as server, client(server) as http:
        for body, *_ in BAD:
            if isinstance(body, bytes):
                answers.append(await http.post("/api/webhooks", content=body,
                                               headers={"content-type": "application/json"}))
            else:
                answers.append(await http.post("/api/webhooks", json=body))
        listed = (await http.get("/api/webhooks")).json()
        not_uuid = await http.get("/api/webhooks/not-a-uuid")
        unknown = await http.get(f"/api/webhooks/{UNKNOWN}")
        enable_unknown = await http.post(f"/api/webhooks/{UNKNOWN}/enable")
        remove_unknown = await http.delete(f"/api/webhooks/{UNKNOWN}")
        bad_status = await http.get(f"/api/webhooks/{UNKNOWN}/deliveries",
                                    params={"status": "lost"})
        bad_cursor = await http.get(f"/api/webhooks/{UNKNOWN}/deliveries",
                                    params={"cursor": "x1"})

    for answer, (body, status, code, words) in zip(answers, BAD, strict=True):
        error = answer.json()["error"]
        assert (answer.status_code, error["code"]) == (status, code), (body, answer.text)
        assert words in error["message"] and "\n" not in error["message"], error
    assert listed == {"items": [], "next_cursor": None}
    assert await store.version(WEBHOOK_LEDGER) == 0, "nothing was recorded"
    for answer, status, code in [(not_uuid, 404, "webhook_not_found"),
                                 (unknown, 404, "webhook_not_found"),
                                 (enable_unknown, 404, "webhook_not_found"),
                                 (remove_unknown, 404, "webhook_not_found"),
                                 (bad_status, 400, "bad_request"),
                                 (bad_cursor, 400, "bad_cursor")]:
        assert (answer.status_code, answer.json()["error"]["code"]) == (status, code)
