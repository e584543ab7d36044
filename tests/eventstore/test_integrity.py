"""The audit detects every kind of tampering with a stream, naming the version."""

from __future__ import annotations

import psycopg
import pytest

from ipa.eventstore import EventStore, verify_stream

from .helpers import task_history

pytestmark = pytest.mark.anyio

BROKEN_LINK = "link to the previous event is broken (event inserted, deleted or reordered)"


@pytest.fixture
async def task(store: EventStore):
    task_id, events = task_history(6)
    await store.append(task_id, events, 0)
    return task_id


def sql(database, statement: str, *params: object) -> None:
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        conn.execute(statement, params)


async def problems(store: EventStore, task_id, **kwargs) -> list[tuple[int, str]]:
    return [(f.version, f.problem) for f in await verify_stream(store, task_id, **kwargs)]


async def test_an_intact_stream_with_snapshots_passes(store: EventStore, task) -> None:
    await store.take_snapshot(task, 4)
    await store.take_snapshot(task)

    assert await problems(store, task, recorded_version=6) == []


async def test_an_edited_event_is_detected(database, store: EventStore, task) -> None:
    sql(database, "UPDATE events SET state = replace(convert_from(state, 'UTF8'), "
        "'\"reason\":\"p2\"', '\"reason\":\"p9\"')::bytea WHERE originator_id = %s "
        "AND originator_version = 3", task)

    assert await problems(store, task) == [(3, "contents do not match the digest (event edited)")]


async def test_a_deleted_event_is_detected(database, store: EventStore, task) -> None:
    sql(database, "DELETE FROM events WHERE originator_id = %s AND originator_version = 3", task)

    found = await problems(store, task)

    assert found[0] == (4, "versions jump from 2 to 4 (event deleted?)")
    assert (4, BROKEN_LINK) in found


async def test_events_deleted_at_the_end_are_detected_by_snapshot_or_task_list(
    database, store: EventStore, task
) -> None:
    await store.take_snapshot(task)
    sql(database, "DELETE FROM events WHERE originator_id = %s AND originator_version >= 5", task)

    found = await problems(store, task, recorded_version=6)

    assert [version for version, _ in found] == [6, 6]
    assert "snapshot exists at version 6 but the events end at 4" in found[0][1]
    assert "task list recorded version 6 but the events end at 4" in found[1][1]


async def test_an_inserted_event_is_detected(database, store: EventStore, task) -> None:
    # A copy of version 5's row appended as version 7: plausible bytes, wrong place.
    sql(database, "INSERT INTO events (originator_id, originator_version, topic, state) "
        "SELECT originator_id, 7, topic, state FROM events "
        "WHERE originator_id = %s AND originator_version = 5", task)

    found = await problems(store, task)

    assert (7, "contents do not match the digest (event edited)") in found
    assert (7, BROKEN_LINK) in found


async def test_reordered_events_are_detected(database, store: EventStore, task) -> None:
    sql(database, "UPDATE events e SET state = o.state, topic = o.topic FROM events o "
        "WHERE e.originator_id = %s AND o.originator_id = e.originator_id AND "
        "((e.originator_version = 3 AND o.originator_version = 4) OR "
        "(e.originator_version = 4 AND o.originator_version = 3))", task)

    found = await problems(store, task)

    versions = {version for version, _ in found}
    assert {3, 4} <= versions <= {3, 4, 5}  # 5's link to the new 4 breaks too
    assert (3, "contents do not match the digest (event edited)") in found


async def test_a_snapshot_that_differs_from_the_events_is_detected(
    database, store: EventStore, task
) -> None:
    await store.take_snapshot(task, 4)
    sql(database, "UPDATE snapshots SET state = replace(convert_from(state, 'UTF8'), "
        "'\"title\":\"t\"', '\"title\":\"forged\"')::bytea WHERE originator_id = %s", task)

    assert await problems(store, task) == [
        (4, "snapshot differs from the state replayed from events")
    ]
