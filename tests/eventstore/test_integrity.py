"""The audit detects every kind of tampering with a stream, naming the version; keyed, it
detects what a forger with the database but without the audit key can do."""

from __future__ import annotations

import psycopg
import pytest

from ipa.eventstore import Audit, AuditKey, EventStore, Finding, verify_stream
from ipa.eventstore.codec import GENESIS, chain_digest

from .helpers import task_history

pytestmark = pytest.mark.anyio

BROKEN_LINK = "link to the previous event is broken (event inserted, deleted or reordered)"
EDITED = "contents do not match the digest (event edited)"
UNKEYED = ("its digest is not keyed although it lies past the keyed-from position (rewritten "
           "without the audit key?)")
MANIFEST_FORGED = "the manifest row fails its MAC (forged, or the stream rewritten up to here)"
FORGERS_KEY = AuditKey.from_text("a-key-that-is-not-the-stores-0000000000000000", "the forger")


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


async def test_events_deleted_at_the_end_are_detected_by_snapshot_task_list_and_manifest(
    database, store: EventStore, task
) -> None:
    await store.take_snapshot(task)
    sql(database, "DELETE FROM events WHERE originator_id = %s AND originator_version >= 5", task)

    found = await problems(store, task, recorded_version=6)

    assert [version for version, _ in found] == [6, 6, 6]
    assert "snapshot exists at version 6 but the events end at 4" in found[0][1]
    assert "task list recorded version 6 but the events end at 4" in found[1][1]
    assert "manifest records version 6 but the events end at 4" in found[2][1]


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


# Tampering by someone with the database but not the audit key ---------------------------------


def edit_version_3(database, task_id) -> None:
    sql(database, "UPDATE events SET state = replace(convert_from(state, 'UTF8'), "
        "'\"reason\":\"p2\"', '\"reason\":\"p9\"')::bytea WHERE originator_id = %s "
        "AND originator_version = 3", task_id)


def rechain(database, task_id, key: AuditKey | None) -> None:
    """Recompute every digest of the stream as a forger would: unkeyed, or with ``key``."""
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        rows = conn.execute("SELECT originator_version, topic, state FROM events "
                            "WHERE originator_id = %s ORDER BY originator_version",
                            (task_id,)).fetchall()
        prev = GENESIS.encode()
        for version, topic, state in rows:
            body = bytes(state)[128:]
            digest = chain_digest(task_id, version, topic, prev, body, key)
            conn.execute("UPDATE events SET state = %s WHERE originator_id = %s AND "
                         "originator_version = %s", (prev + digest + body, task_id, version))
            prev = digest


@pytest.mark.parametrize("forgers_key", [None, FORGERS_KEY], ids=["unkeyed", "another-key"])
async def test_an_edit_with_the_chain_recomputed_and_snapshots_deleted_is_detected(
    database, store: EventStore, task, forgers_key
) -> None:
    await store.take_snapshot(task, 4)
    edit_version_3(database, task)
    sql(database, "DELETE FROM snapshots WHERE originator_id = %s", task)
    rechain(database, task, forgers_key)

    found = await problems(store, task, recorded_version=6)

    digest_problem = UNKEYED if forgers_key is None else EDITED
    assert found == [(v, digest_problem) for v in range(1, 7)] + [(6, MANIFEST_FORGED)]


async def test_events_deleted_at_the_end_with_the_task_list_lowered_are_detected(
    database, store: EventStore, task
) -> None:
    sql(database, "DELETE FROM events WHERE originator_id = %s AND originator_version >= 5", task)

    found = await problems(store, task, recorded_version=4)

    assert found == [(6, "the manifest records version 6 but the events end at 4 (events "
                         "deleted at the end?)")]


async def test_a_manifest_row_lowered_with_the_events_is_detected(
    database, store: EventStore, task
) -> None:
    sql(database, "DELETE FROM events WHERE originator_id = %s AND originator_version >= 5", task)
    sql(database, "UPDATE audit_manifest SET version = 4 WHERE stream_id = %s", task)

    assert await problems(store, task, recorded_version=4) == [(4, MANIFEST_FORGED)]


async def test_a_stream_without_a_manifest_row_is_detected(
    database, store: EventStore, task
) -> None:
    sql(database, "DELETE FROM audit_manifest WHERE stream_id = %s", task)

    assert await problems(store, task) == [
        (6, "the stream has no manifest row (not written by ipa with the audit key: inserted, "
            "or its row deleted)")
    ]


def positions(database, task_id) -> dict[int, int]:
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        rows = conn.execute("SELECT originator_version, notification_id FROM events "
                            "WHERE originator_id = %s", (task_id,)).fetchall()
    return dict(rows)


async def test_two_events_whose_global_positions_are_swapped_are_detected(
    database, store: EventStore, task
) -> None:
    at = positions(database, task)
    update = "UPDATE events SET notification_id = %s WHERE originator_id = %s AND " \
             "originator_version = %s"
    sql(database, update, -1, task, 3)
    sql(database, update, at[3], task, 4)
    sql(database, update, at[4], task, 3)

    assert await problems(store, task) == [
        (4, f"its global position {at[3]} is not after the previous version's ({at[4]}): "
            "positions swapped?")
    ]


async def test_a_deleted_task_is_detected_by_the_manifest(
    database, store: EventStore, task
) -> None:
    intact, events = task_history(3)
    await store.append(intact, events, 0)
    sql(database, "DELETE FROM events WHERE originator_id = %s", task)

    audit = await Audit.start(store)

    assert await audit.verify_stream(intact) == []
    assert await audit.verify_manifest() == [
        Finding(task, 6, "the manifest has this stream at version 6 but the store has no "
                         "events for it (task deleted?)")
    ]


@pytest.mark.parametrize("forgery", [
    "UPDATE audit_keyed_from SET position = position + 100",
    "UPDATE audit_keyed_from SET position = 0",
])
async def test_a_forged_keyed_from_record_is_detected(
    database, store: EventStore, task, forgery: str
) -> None:
    sql(database, forgery)

    audit = await Audit.start(store)

    assert [(f.stream_id, f.problem) for f in audit.findings] == [
        (None, "the keyed-from record fails its MAC (altered: events would verify with the "
               "wrong digest)")
    ]


async def test_a_deleted_keyed_from_record_is_detected(database, store: EventStore, task) -> None:
    sql(database, "DELETE FROM audit_keyed_from")

    audit = await Audit.start(store)

    assert [str(f) for f in audit.findings] == [
        "store position 0: the store has no keyed-from record although an audit key is set: "
        "it was deleted, or no ipa with this key has written here yet (`ipa serve` keys the "
        "store)"
    ]

