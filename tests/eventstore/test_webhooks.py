"""Webhooks' storage on the real PostgreSQL (issue #17): sealed secrets, a page enqueued once
whoever races for it, due deliveries claimed by one node at a time, outcomes and the failure
count that disables a webhook."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import anyio
import pytest

from ipa.eventstore import AuditKey, EventStore, PositionMoved
from ipa.eventstore.webhooks import (
    NewDelivery,
    Outcome,
    SecretBox,
    SecretUnreadable,
    WebhookTable,
)

from .helpers import AUDIT_KEY, T0

pytestmark = pytest.mark.anyio

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_a_sealed_secret_opens_with_the_same_audit_key_only() -> None:
    box = SecretBox(AUDIT_KEY)
    sealed = box.seal(SECRET)
    other = SecretBox(AuditKey.from_text("another-audit-key-" + "0" * 40))

    assert sealed.startswith("v1:") and SECRET.removeprefix("whsec_") not in sealed
    assert box.seal(SECRET) != sealed, "a fresh nonce each time"
    assert box.open(sealed) == SECRET
    with pytest.raises(SecretUnreadable, match="another audit key"):
        other.open(sealed)
    with pytest.raises(SecretUnreadable, match="opened without one"):
        SecretBox(None).open(sealed)
    tampered = sealed[:-6] + ("AAAAAA" if not sealed.endswith("AAAAAA") else "BBBBBB")
    with pytest.raises(SecretUnreadable):
        box.open(tampered)
    assert SecretBox(None).seal(SECRET) == "plain:" + SECRET
    assert box.open("plain:" + SECRET) == SECRET


@pytest.fixture
async def table(store: EventStore) -> AsyncIterator[WebhookTable]:
    table = store.webhook_table()
    await table.open()
    try:
        yield table
    finally:
        await table.close()


async def registered(table: WebhookTable, n_deliveries: int, *, claim: str = "enqueuer",
                     lease: float = 0.0) -> tuple[str, list[str]]:
    """A webhook with ``n_deliveries`` deliveries enqueued (held by ``claim`` for ``lease``
    seconds: 0, due at once)."""
    hook = str(uuid.uuid4())
    ids = [str(uuid.uuid4()) for _ in range(n_deliveries)]
    start = await table.position()
    async with table.page(start, claim, lease) as writes:
        await writes.register(hook, "http://example.com/h", ["*"], "plain:" + SECRET, T0,
                              "user:alice", start + 1)
        for i, delivery_id in enumerate(ids):
            writes.add(NewDelivery(delivery_id, hook, start + 1, "task.failed",
                                   str(uuid.uuid4()), f'{{"i": {i}}}', T0))
        writes.position = start + 1
    return hook, ids


async def test_a_page_is_enqueued_once_when_two_nodes_race_for_it(table: WebhookTable) -> None:
    hook, _ = await registered(table, 0)
    start = await table.position()
    done: dict[str, str] = {}

    async def enqueue(name: str) -> None:
        delivery_id = str(uuid.uuid4())
        try:
            async with table.page(start, name, 30.0) as writes:
                writes.add(NewDelivery(delivery_id, hook, start + 1, "task.failed",
                                       str(uuid.uuid4()), "{}", T0))
                writes.position = start + 1
                await anyio.sleep(0.2)  # the other one waits on the position row meanwhile
            done[name] = delivery_id
        except PositionMoved:
            done[name] = "moved"

    async with anyio.create_task_group() as tg:
        tg.start_soon(enqueue, "a")
        tg.start_soon(enqueue, "b")

    [winner] = [d for d in done.values() if d != "moved"]
    assert sorted(done.values()) == sorted([winner, "moved"])
    assert [d["id"] for d in await table.deliveries(hook)] == [winner]
    assert await table.position() == start + 1


async def test_saved_position_moves_with_the_page_and_a_stale_start_is_refused(
    table: WebhookTable,
) -> None:
    hook, ids = await registered(table, 3, lease=60.0)
    position = await table.position()

    with pytest.raises(PositionMoved):
        async with table.page(position - 1, "late", 1.0):
            pass
    assert position == 1
    assert [w["id"] for w in await table.webhooks()] == [hook]
    assert {d["id"] for d in await table.deliveries(hook)} == set(ids)


async def test_due_deliveries_are_claimed_by_one_node_at_a_time(table: WebhookTable) -> None:
    hook, ids = await registered(table, 40)
    held = await table.claim("held-elsewhere", 0, 60.0)
    found: dict[str, list[str]] = {}

    async def node(name: str) -> None:
        found[name] = [c.id for c in await table.claim(name, 25, 60.0)]

    async with anyio.create_task_group() as tg:
        tg.start_soon(node, "a")
        tg.start_soon(node, "b")
    again = await table.claim("c", 100, 60.0)

    assert held == []
    assert not set(found["a"]) & set(found["b"])
    assert sorted(found["a"] + found["b"]) == sorted(ids)
    assert again == [], "held deliveries are not due"


async def test_a_held_delivery_is_due_again_once_released(table: WebhookTable) -> None:
    hook, ids = await registered(table, 2, claim="stopping", lease=600.0)

    assert await table.claim("other", 10, 60.0) == []
    await table.release(ids[:1], "not-the-holder")
    assert await table.claim("other", 10, 60.0) == []
    await table.release(ids, "stopping")
    assert sorted(c.id for c in await table.claim("other", 10, 60.0)) == sorted(ids)


async def test_outcomes_count_failures_in_a_row_and_mark_the_webhook_to_disable(
    table: WebhookTable,
) -> None:
    hook, ids = await registered(table, 6)
    claimed = await table.claim("n", 10, 60.0)
    assert len(claimed) == 6

    def failed(i: int, code: int | None = 500) -> Outcome:
        return Outcome(ids[i], hook, False, code, f"HTTP {code}", 3.0, 60.0)

    first = await table.record([failed(0, None), failed(1, None)], "n", retry_for=3600,
                               max_failures=3)
    success = await table.record([failed(2), Outcome(ids[3], hook, True, 204, None, 2.0, 0.0)],
                                 "n", retry_for=3600, max_failures=3)
    after = (await table.webhook(hook))["failures"]
    limit = await table.record([failed(4), failed(5)], "n", retry_for=3600, max_failures=2)
    stale = await table.record([failed(0)], "n", retry_for=3600, max_failures=2)
    rows = {d["id"]: d for d in await table.deliveries(hook)}

    assert first.statuses == {ids[0]: "pending", ids[1]: "pending"} and not first.to_disable
    assert success.statuses[ids[3]] == "delivered" and after == 0
    assert limit.to_disable == [(hook, 2, "HTTP 500")]
    assert stale.statuses == {}, "an outcome of a delivery no longer held is ignored"
    assert rows[ids[3]]["last_status"] == 204 and rows[ids[3]]["finished_at"] is not None
    assert rows[ids[0]]["attempts"] == 1 and rows[ids[0]]["last_status"] is None
    assert rows[ids[0]]["next_attempt_at"] > rows[ids[0]]["last_attempt_at"]


async def test_a_failure_past_the_retry_time_is_failed_and_old_ones_are_pruned(
    table: WebhookTable,
) -> None:
    hook, ids = await registered(table, 1)
    await table.claim("n", 10, 60.0)

    recorded = await table.record([Outcome(ids[0], hook, False, 500, "HTTP 500", 1.0, 120.0)],
                                  "n", retry_for=60, max_failures=20)
    kept = await table.prune(3600)
    pruned = await table.prune(0)

    assert recorded.statuses == {ids[0]: "failed"}
    assert (kept, pruned) == (0, 1)
    assert await table.deliveries(hook) == []
