"""Requests between nodes through PostgreSQL (``eventstore/inbox.py``): the owner answers,
an owner that does not take a request in time leaves it unrun, and the same request sent twice
(by its client's id) runs once."""

from __future__ import annotations

import uuid

import anyio
import pytest

from ipa.eventstore import OwnerUnreachable

pytestmark = pytest.mark.anyio


async def test_the_owner_answers_a_request_and_a_retry_gets_the_same_answer(
    open_store, node_of
) -> None:
    a, b = await open_store(), await open_store()
    asker, owner = await node_of(a, "asker"), await node_of(b, "owner")
    runs: list[dict] = []

    async def handler(request: dict) -> dict:
        runs.append(request)
        return {"status": 200, "body": {"echo": request["say"], "n": len(runs)}}

    async def nothing(request: dict) -> dict:
        raise AssertionError("asked the asker")

    async with anyio.create_task_group() as tg:
        await tg.start(owner.inbox.run, handler)
        await tg.start(asker.inbox.run, nothing)  # where its answers are announced
        task = uuid.uuid4()
        first = await asker.inbox.ask("owner", task, {"say": "hi"}, key="req-1")
        again = await asker.inbox.ask("owner", task, {"say": "hi"}, key="req-1")
        other = await asker.inbox.ask("owner", task, {"say": "yo"})
        tg.cancel_scope.cancel()

    assert first == again == {"status": 200, "body": {"echo": "hi", "n": 1}}
    assert other["body"] == {"echo": "yo", "n": 2}
    assert [r["say"] for r in runs] == ["hi", "yo"]


async def test_a_request_nobody_takes_is_withdrawn_and_never_runs(open_store, node_of) -> None:
    a, b = await open_store(), await open_store()
    asker, owner = await node_of(a, "asker"), await node_of(b, "owner")
    with pytest.raises(OwnerUnreachable, match="did not answer within 0.3 s"):
        await asker.inbox.ask("owner", uuid.uuid4(), {"say": "late"}, timeout=0.3)

    runs: list[dict] = []

    async def handler(request: dict) -> dict:
        runs.append(request)
        return {"status": 200, "body": {}}

    async with anyio.create_task_group() as tg:
        await tg.start(owner.inbox.run, handler)  # it comes up: the withdrawn one is gone
        await owner.inbox.take()  # what it does on every heartbeat, too
        tg.cancel_scope.cancel()
    assert runs == []
