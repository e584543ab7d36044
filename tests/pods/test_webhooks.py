"""Webhooks on the real store (issue #17): task events become signed deliveries to a real local
receiver, at least once, through failures, restarts and two dispatchers on one database."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any
from uuid import UUID

import anyio
import pytest

from ipa.domain import (
    WEBHOOK_LEDGER,
    CreateTask,
    QueueJob,
    RequestApproval,
    StartJob,
    StartTask,
    WebhookDisabled,
    WebhookEnabled,
    WebhookRegistered,
    decide,
    fold,
)
from ipa.eventstore import ConnectionParams, EventStore, StoreSettings
from ipa.eventstore.webhooks import NewDelivery
from ipa.pods import AddressRefused, WebhookNotFound, Webhooks, WebhookSettings
from ipa.telemetry import WEBHOOK_DELIVERIES

from ..eventstore.helpers import AUDIT_KEY, ctx
from .webhook_receiver import Receiver, until

pytestmark = pytest.mark.anyio

FAST = WebhookSettings(allow_private=True, backoff_base=0.05, backoff_cap=0.2,
                       poll_interval=0.05, timeout=5.0, lease=10.0, concurrency=4)


@contextlib.asynccontextmanager
async def running(webhooks: Webhooks) -> AsyncIterator[Webhooks]:
    async with anyio.create_task_group() as tg:
        await tg.start(webhooks.run)
        yield webhooks
        tg.cancel_scope.cancel()


async def task(store: EventStore, *commands: Any, title: str = "Add a limiter") -> UUID:
    """A task created and started, then driven by ``commands``."""
    task_id, state = uuid.uuid4(), None
    for step, command in enumerate([CreateTask(title, "to login"), StartTask(), *commands]):
        events = decide(state, command, ctx(step), task_id)
        await store.append(task_id, events, state.version if state else 0)
        state = fold(events, state)
    return task_id


async def gate(store: EventStore, n: int = 1) -> list[UUID]:
    """``n`` tasks that each wait at their first gate (one ``task.waiting`` message each)."""
    return [await task(store, RequestApproval("spec written")) for _ in range(n)]


async def test_a_task_event_is_delivered_once_signed_as_standard_webhooks_say(
    store: EventStore,
) -> None:
    with Receiver().running() as receiver:
        async with running(Webhooks(store, settings=FAST)) as webhooks:
            hook, secret = await webhooks.register(receiver.url, ["*"], actor="user:alice")
            receiver.secret = secret
            task_id = await task(store, RequestApproval("the spec is written"),
                                 title="Add rate limiting")
            [got] = await until(receiver.ok)
            delivered = await until(lambda: _delivered(webhooks, hook["id"]))

    message = got.message
    assert got.verified, "the signature verifies with the webhook's secret"
    assert got.headers["content-type"] == "application/json"
    assert got.delivery_id == delivered[0]["id"]
    assert message["type"] == "task.waiting"
    assert message["data"]["task_id"] == str(task_id)
    assert message["data"]["title"] == "Add rate limiting"
    assert message["data"]["url"] == f"/pods/{task_id}"
    assert message["data"]["phase"] == "spec_clarification"
    assert (delivered[0]["attempts"], delivered[0]["last_status"]) == (1, 200)
    assert delivered[0]["latency_ms"] is not None
    assert secret.startswith("whsec_") and "whsec" not in str(hook)


async def _delivered(webhooks: Webhooks, webhook_id: str, n: int = 1) -> list[dict]:
    rows = await webhooks.deliveries(webhook_id, status="delivered")
    return rows if len(rows) >= n else []


async def test_a_webhook_gets_only_the_types_it_subscribed_to(store: EventStore) -> None:
    with Receiver().running() as receiver:
        async with running(Webhooks(store, settings=FAST)) as webhooks:
            await webhooks.register(receiver.url, ["agent.spawned"], actor="user:alice")
            await task(store, RequestApproval(), title="not this one")
            spawned = await task(store, QueueJob("j1", "developer"), StartJob("j1", "run-1"))
            await until(receiver.ok)
            await webhooks.wait_for(await store.head_position())

    [got] = receiver.ok()
    assert got.message["type"] == "agent.spawned"
    assert got.message["data"]["task_id"] == str(spawned)
    assert got.message["data"]["agent"] == "developer"


async def test_a_receiver_that_fails_then_recovers_gets_the_message_with_the_same_id(
    store: EventStore,
) -> None:
    before = WEBHOOK_DELIVERIES.labels(outcome="retrying")._value.get()
    with Receiver(fail_first=3, fail_status=503).running() as receiver:
        async with running(Webhooks(store, settings=FAST)) as webhooks:
            hook, secret = await webhooks.register(receiver.url, ["*"], actor="user:alice")
            receiver.secret = secret
            await gate(store)
            [row] = await until(lambda: _delivered(webhooks, hook["id"]))
            view = await webhooks.get(hook["id"])

    assert [r.answered for r in receiver.received] == [503, 503, 503, 200]
    assert len({r.delivery_id for r in receiver.received}) == 1
    assert all(r.verified for r in receiver.received)
    assert (row["attempts"], row["last_status"], row["status"]) == (4, 200, "delivered")
    assert view["failures"] == 0 and view["last_success_at"] is not None
    assert WEBHOOK_DELIVERIES.labels(outcome="retrying")._value.get() - before == 3


async def test_a_receivers_retry_after_is_waited_out_before_the_next_attempt(
    store: EventStore,
) -> None:
    settings = replace(FAST, backoff_cap=30.0)  # the backoff alone would retry within 0.1 s
    with Receiver(fail_first=1, fail_status=503, retry_after="1").running() as receiver:
        async with running(Webhooks(store, settings=settings)) as webhooks:
            hook, _ = await webhooks.register(receiver.url, ["*"], actor="user:alice")
            await gate(store)
            [row] = await until(lambda: _delivered(webhooks, hook["id"]))

    first, second = receiver.received
    assert (first.answered, second.answered) == (503, 200)
    assert second.at - first.at >= 1.0
    assert row["attempts"] == 2


async def test_a_delivery_fails_for_good_once_its_retry_time_is_over(
    store: EventStore,
) -> None:
    settings = replace(FAST, retry_for=0.5)
    with Receiver(status=500).running() as receiver:
        async with running(Webhooks(store, settings=settings)) as webhooks:
            hook, _ = await webhooks.register(receiver.url, ["*"], actor="user:alice")
            await gate(store)
            [row] = await until(lambda: webhooks.deliveries(hook["id"], status="failed"))
            attempts_then = len(receiver.received)
            await anyio.sleep(0.3)  # a failed delivery is not tried again: nothing more comes

    assert row["attempts"] >= 2 and row["last_status"] == 500
    assert row["last_error"].startswith("HTTP 500")
    assert row["finished_at"] is not None and row["next_attempt_at"] is not None
    assert len(receiver.received) == attempts_then


async def test_failures_in_a_row_disable_the_webhook_with_an_event_until_enabled(
    store: EventStore,
) -> None:
    settings = replace(FAST, max_failures=3)
    with Receiver(status=500).running() as receiver:
        async with running(Webhooks(store, settings=settings)) as webhooks:
            hook, secret = await webhooks.register(receiver.url, ["*"], actor="user:alice")
            receiver.secret = secret
            [first] = await gate(store)
            disabled = await until(lambda: _disabled(webhooks, hook["id"]))
            await gate(store)  # while disabled: not delivered, then or later
            await webhooks.wait_for(await store.head_position())
            tries = len(receiver.received)
            receiver.recover()
            enabled = await webhooks.enable(hook["id"], actor="user:bob")
            [row] = await until(lambda: _delivered(webhooks, hook["id"]))
            ledger = await store.read(WEBHOOK_LEDGER)

    assert disabled["enabled"] is False and disabled["failures"] >= 3
    assert disabled["disabled_reason"].startswith("HTTP 500")
    assert tries == 3
    assert [type(r.event) for r in ledger] == [WebhookRegistered, WebhookDisabled,
                                               WebhookEnabled]
    disable = next(r for r in ledger if isinstance(r.event, WebhookDisabled))
    assert disable.actor == "ipa" and disable.data["failures"] == 3
    assert enabled["enabled"] is True and enabled["failures"] == 0
    assert row["payload"]["data"]["task_id"] == str(first)
    assert len(receiver.counts()) == 1, "the event while disabled is not delivered"


async def _disabled(webhooks: Webhooks, webhook_id: str) -> dict | None:
    view = await webhooks.get(webhook_id)
    return view if not view["enabled"] else None


async def test_events_while_no_dispatcher_ran_are_delivered_once_it_starts(
    store: EventStore,
) -> None:
    with Receiver().running() as receiver:
        async with running(Webhooks(store, settings=FAST)) as webhooks:
            hook, _ = await webhooks.register(receiver.url, ["*"], actor="user:alice")
        tasks = await gate(store, 3)  # the server is down
        async with running(Webhooks(store, settings=FAST)) as again:
            await until(lambda: len(receiver.ok()) == 3)
            rows = await until(lambda: _delivered(again, hook["id"], 3))
            await anyio.sleep(0.3)

    assert sorted(r.message["data"]["task_id"] for r in receiver.ok()) == sorted(map(str, tasks))
    assert set(receiver.counts().values()) == {1}
    assert {r.headers["webhook-id"] for r in receiver.ok()} == {row["id"] for row in rows}


async def test_deliveries_a_dead_node_held_are_sent_once_its_hold_runs_out(
    store: EventStore,
) -> None:
    with Receiver().running() as receiver:
        async with running(Webhooks(store, settings=FAST)) as webhooks:
            hook, _ = await webhooks.register(receiver.url, ["*"], actor="user:alice")
        table = store.webhook_table()
        await table.open()
        try:  # a node enqueues a page holding its deliveries for 1 s, then dies unsent
            start = await table.position()
            async with table.page(start, "dead-node", 1.0) as writes:
                for n in range(5):
                    writes.add(NewDelivery(str(uuid.uuid4()), hook["id"], start, "task.failed",
                                           str(uuid.uuid4()), f'{{"n": {n}}}', ctx(n).now))
                writes.position = start
        finally:
            await table.close()
        async with running(Webhooks(store, settings=FAST)) as webhooks:
            await until(lambda: len(receiver.ok()) == 5)
            await anyio.sleep(0.3)
            rows = await webhooks.deliveries(hook["id"])

    assert set(receiver.counts().values()) == {1}
    assert {row["status"] for row in rows} == {"delivered"}


async def test_two_dispatchers_on_one_database_deliver_each_message_once(
    database: ConnectionParams, store: EventStore,
) -> None:
    settings = StoreSettings(snapshot_interval=0, poll_interval=0.2, audit_key=AUDIT_KEY)
    with Receiver().running() as receiver:
        async with EventStore.open(database, settings) as other, \
                running(Webhooks(store, settings=FAST)) as one, \
                running(Webhooks(other, settings=FAST)) as two:
            await one.register(receiver.url, ["*"], actor="user:alice")
            await two.register(receiver.url, ["task.waiting"], actor="user:bob")
            async with anyio.create_task_group() as tg:
                for _ in range(4):
                    tg.start_soon(gate, store, 5)
                    tg.start_soon(gate, other, 5)
            await until(lambda: len(receiver.ok()) == 80, timeout=60)
            await anyio.sleep(0.5)

    assert len(receiver.counts()) == 80 and set(receiver.counts().values()) == {1}


async def test_an_address_ipa_does_not_send_to_is_refused_then_and_at_each_attempt(
    store: EventStore,
) -> None:
    closed = Webhooks(store, settings=replace(FAST, allow_private=False))
    await closed.open()
    try:
        for url in ("http://127.0.0.1:9/h", "http://localhost/h", "http://10.1.2.3/h",
                    "http://[::1]/h", "http://[::ffff:192.168.0.1]/h", "http://169.254.169.254/",
                    "http://0.0.0.0/", "http://nowhere.invalid/h"):
            with pytest.raises(AddressRefused):
                await closed.register(url, ["*"], actor="user:mallory")
        assert await closed.webhooks() == []
        with Receiver().running() as receiver:
            async with running(Webhooks(store, settings=FAST)) as open_:
                hook, _ = await open_.register(receiver.url, ["*"], actor="user:alice")
            async with running(Webhooks(store, settings=replace(
                    FAST, allow_private=False, max_failures=100))) as strict:
                await gate(store)
                row = await until(lambda: _tried(strict, hook["id"]))
        assert receiver.received == []
        assert "127.0.0.1 is a loopback address" in row["last_error"]
        assert row["last_status"] is None
    finally:
        await closed.close()


async def _tried(webhooks: Webhooks, webhook_id: str) -> dict | None:
    rows = await webhooks.deliveries(webhook_id)
    return rows[0] if rows and rows[0]["attempts"] else None


async def test_a_secret_is_sealed_in_its_event_and_removing_forgets_the_webhook(
    store: EventStore,
) -> None:
    with Receiver().running() as receiver:
        async with running(Webhooks(store, settings=FAST)) as webhooks:
            hook, secret = await webhooks.register(receiver.url, ["*"], actor="user:alice")
            await gate(store)
            await until(receiver.ok)
            await webhooks.remove(hook["id"], actor="user:alice")
            with pytest.raises(WebhookNotFound):
                await webhooks.get(hook["id"])
            await gate(store)
            await webhooks.wait_for(await store.head_position())
            await anyio.sleep(0.2)
            ledger = await store.read(WEBHOOK_LEDGER)

    registered = next(r for r in ledger if isinstance(r.event, WebhookRegistered))
    assert secret.removeprefix("whsec_") not in registered.data["secret"]
    assert registered.data["secret"].startswith("v1:")
    assert len(receiver.ok()) == 1
