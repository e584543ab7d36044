"""Old payloads are upcast on load; an event type the code no longer knows is a clear error."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from eventsourcing.utils import get_topic

from ipa.domain import ContextPrepared, TaskEvent
from ipa.domain.runs import RunPrompted
from ipa.eventstore import EventStore, UnknownEventType
from ipa.eventstore.codec import GENESIS, chain_digest, make_transcoder

from .helpers import T0, task_history

pytestmark = pytest.mark.anyio


class NoteAdded(TaskEvent):
    """A test event whose shape changed: v1 had ``text``; v2 has ``body`` and ``format``."""

    class_version = 2
    body: str
    format: str

    @staticmethod
    def upcast_v1_v2(state: dict) -> None:
        state["body"] = state.pop("text")
        state["format"] = "plain"


def write_v1_row(database, stream: uuid.UUID, event_type: type = NoteAdded,
                 fields: dict | None = None) -> None:
    """The row the old code wrote: the event type's topic, the v1 payload, no class_version."""
    topic = get_topic(event_type)
    body = make_transcoder().encode({"timestamp": T0, "actor": "system",
                                     "correlation_id": "c", "causation_id": None,
                                     **(fields if fields is not None else {"text": "hello"})})
    prev = GENESIS.encode()
    digest = chain_digest(stream, 1, topic, prev, body)
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        conn.execute("INSERT INTO events (originator_id, originator_version, topic, state) "
                     "VALUES (%s, 1, %s, %s)", (stream, topic, prev + digest + body))


async def test_old_payload_is_upcast_to_the_new_shape_on_read(database, store: EventStore) -> None:
    stream = uuid.uuid4()
    write_v1_row(database, stream)

    [recorded] = await store.read(stream)

    assert isinstance(recorded.event, NoteAdded)
    assert (recorded.event.body, recorded.event.format) == ("hello", "plain")
    assert recorded.data == {"body": "hello", "format": "plain"}


@pytest.mark.parametrize(("event_type", "fields", "added"), [
    (ContextPrepared, {"job_id": "a", "run_id": "r", "attempt": 1, "sections": ["task"],
                       "dropped": [], "tokens": 9, "budget_tokens": 99},
     {"memories": [], "memory_problem": None}),
    (RunPrompted, {"agent": "developer", "model": "", "prompt": "p"}, {"memories": []}),
])
async def test_runs_recorded_before_memory_read_as_runs_given_none(
    database, store: EventStore, event_type, fields, added,
) -> None:
    stream = uuid.uuid4()
    write_v1_row(database, stream, event_type, fields)

    [recorded] = await store.read(stream)

    assert isinstance(recorded.event, event_type) and recorded.data == {**fields, **added}


async def test_new_payload_is_stored_with_its_class_version(store: EventStore) -> None:
    stream = uuid.uuid4()
    new = NoteAdded(originator_id=stream, originator_version=1, timestamp=T0, actor="system",
                    correlation_id="c", causation_id=None, body="hi", format="md")
    await store.append(stream, [new], 0)

    [recorded] = await store.read(stream)

    assert recorded.event == new


async def test_unknown_event_type_fails_load_naming_it_but_still_reads(
    database, store: EventStore
) -> None:
    task_id, events = task_history(3)
    await store.append(task_id, events, 0)
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        conn.execute("UPDATE events SET topic = 'ipa.domain.events:TaskVanished' "
                     "WHERE originator_id = %s AND originator_version = 2", (task_id,))

    with pytest.raises(UnknownEventType, match="version 2: unknown event type "
                       "'ipa.domain.events:TaskVanished'"):
        await store.load(task_id)
    recorded = await store.read(task_id)
    assert [r.type for r in recorded] == ["TaskCreated", "TaskVanished", "TaskPaused"]
    assert recorded[1].event is None
