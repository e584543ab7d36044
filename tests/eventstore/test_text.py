"""Any text is data: NUL and lone surrogates are stored as given, and one append that cannot be
stored fails alone while the writer and every other append go on."""

from __future__ import annotations

import dataclasses
import uuid

import anyio
import pytest

from ipa.domain import CreateTask, decide
from ipa.eventstore import EventStore, StoreError, UnstorableEvent

from .helpers import ctx, task_history

pytestmark = pytest.mark.anyio

ODD_TEXT = ["a\x00b", "lone \ud800 high", "lone \udfff low", "\x00", "emoji \U0001f600 ok"]


def created(title: str) -> tuple[uuid.UUID, list]:
    task_id = uuid.uuid4()
    return task_id, list(decide(None, CreateTask(title=title, description=title), ctx(),
                                task_id))


@pytest.mark.parametrize("title", ODD_TEXT)
async def test_odd_text_is_stored_and_read_back_as_given(store: EventStore, title: str) -> None:
    task_id, events = created(title)

    await store.append(task_id, events, 0)

    [recorded] = await store.read(task_id)
    assert recorded.data["title"] == title
    assert (await store.load(task_id)).title == title
    await store.take_snapshot(task_id)
    [(_, snapshot)] = await store.snapshots(task_id)
    assert snapshot["title"] == title


async def test_plain_text_is_stored_utf8_as_before(store: EventStore) -> None:
    """Bodies that UTF-8 can hold keep the library's bytes (existing hash chains stay valid)."""
    task_id, events = created("café ✓")

    await store.append(task_id, events, 0)

    [row] = await store.read_raw(task_id)
    assert "café ✓".encode() in row.state


def unencodable(task_id: uuid.UUID) -> list:
    """A creation whose title the codec cannot encode (not a string at all)."""
    _, [event] = created("x")
    return [dataclasses.replace(event, originator_id=task_id, title=object())]


async def test_an_append_that_cannot_be_encoded_fails_alone_and_is_not_stored(
    store: EventStore,
) -> None:
    bad_id = uuid.uuid4()

    with pytest.raises(UnstorableEvent, match=f"task {bad_id}: an event cannot be stored"):
        await store.append(bad_id, unencodable(bad_id), 0)

    assert await store.version(bad_id) == 0
    task_id, events = task_history(3)
    assert (await store.append(task_id, events, 0)).version == 3


async def test_concurrent_appends_each_stored_iff_acknowledged(store: EventStore) -> None:
    """Many writers at once, every fifth append unencodable and every seventh full of odd
    text: each acknowledged append is stored, each failed one is not, the writer survives."""
    outcomes: dict[uuid.UUID, bool] = {}

    async def write(n: int) -> None:
        task_id = uuid.uuid4()
        if n % 5 == 0:
            events = unencodable(task_id)
        else:
            _, events = created(ODD_TEXT[n % len(ODD_TEXT)] if n % 7 == 0 else f"task {n}")
            events = [dataclasses.replace(e, originator_id=task_id) for e in events]
        try:
            await store.append(task_id, events, 0)
            outcomes[task_id] = True
        except StoreError:
            outcomes[task_id] = False

    async with anyio.create_task_group() as tg:
        for n in range(200):
            tg.start_soon(write, n)

    assert list(outcomes.values()).count(False) == 40
    stored = set(await store.stream_ids())
    assert {t for t, ok in outcomes.items() if ok} == stored
    task_id, events = task_history(2)
    assert (await store.append(task_id, events, 0)).version == 2
