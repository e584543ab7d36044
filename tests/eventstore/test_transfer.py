"""A task moved between two stores as a bundle (issue #17): exported with its runs (and a
project's children), read and verified, imported under the other store's own audit key; the
other store replays it to the same state and its audit passes. A bundle that is truncated,
altered, reordered, newer, not a bundle, too large, or whose task exists is refused before
anything is written."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from uuid import UUID

import psycopg
import pytest

from ipa.domain import (
    CompleteJob,
    CreateTask,
    Pause,
    QueueJob,
    StartJob,
    StartTask,
    TaskEvent,
    decide,
    fold,
)
from ipa.domain.runs import RunFinished, RunOutput, RunStarted
from ipa.eventstore import (
    Audit,
    AuditKey,
    ConnectionParams,
    EventStore,
    StoreSettings,
    StreamNotFound,
)
from ipa.eventstore.bundle import BundleRefused, TaskBundle
from ipa.eventstore.codec import GENESIS, Seal, chain_digest
from ipa.eventstore.transfer import check_target, export_task, import_bundle
from ipa.projections import TaskList

from ..ui.test_children_api import seed_project
from .helpers import AUDIT_KEY, T0, ctx

pytestmark = pytest.mark.anyio

OTHER_KEY = AuditKey.from_text("the-importing-store-s-own-key-0000000000000000", "the tests")
TEXT = "NUL \x00, ünïcode ✓ and 😀, byte for byte"


@pytest.fixture
def other_database(postgres_server: ConnectionParams) -> Iterator[ConnectionParams]:
    """A second empty database: the other machine's store."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server.conninfo(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield replace(postgres_server, dbname=name)
    with psycopg.connect(postgres_server.conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def target(other_database: ConnectionParams) -> AsyncIterator[EventStore]:
    """The importing store, keyed with a key of its own."""
    settings = StoreSettings(snapshot_interval=0, poll_interval=0.2, audit_key=OTHER_KEY)
    async with EventStore.open(other_database, settings) as store:
        yield store


async def record_task(store: EventStore, *, runs: int = 2) -> tuple[UUID, list[UUID]]:
    """A task whose jobs ran as agent runs (each with its own stream), then paused."""
    task_id = uuid.uuid4()
    events: list[TaskEvent] = list(decide(None, CreateTask("moved", TEXT), ctx(0), task_id))
    state = fold(events)
    run_ids = [uuid.uuid4() for _ in range(runs)]
    commands = [StartTask()]
    for n, run_id in enumerate(run_ids):
        commands += [QueueJob(f"job-{n}", "developer", spec={"command": ["true"]}),
                     StartJob(f"job-{n}", str(run_id)),
                     CompleteJob(f"job-{n}", str(run_id), result={"said": TEXT})]
    commands.append(Pause("moving it"))
    for step, command in enumerate(commands, start=1):
        new = decide(state, command, ctx(step), task_id)
        events += new
        state = fold(new, state)
    await store.append(task_id, events, 0)
    for run_id in run_ids:
        await store.append(run_id, run_history(task_id, run_id), 0)
    return task_id, run_ids


def run_history(task_id: UUID, run_id: UUID) -> list:
    common = dict(originator_id=run_id, actor=f"agent-run:{run_id}",
                  correlation_id=str(run_id), causation_id=None)
    return [
        RunStarted(**common, originator_version=1, timestamp=T0, task_id=str(task_id),
                   job_id="job", attempt=1, agent="developer", runner="command",
                   workspace="/w", pid=123),
        RunOutput(**common, originator_version=2, timestamp=T0 + timedelta(seconds=1),
                  lines=[{"seq": 1, "stream": "stdout", "text": TEXT}]),
        RunFinished(**common, originator_version=3, timestamp=T0 + timedelta(seconds=2),
                    succeeded=True, exit_code=0, reason=None, duration_seconds=2.0,
                    result={}),
    ]


async def exported(store: EventStore, task_id: UUID) -> bytes:
    return (await export_task(store, task_id)).pack(store.audit_key)


async def imported(target: EventStore, data: bytes) -> TaskBundle:
    bundle = TaskBundle.read(data)
    await check_target(target, bundle)
    await import_bundle(target, bundle)
    return bundle


async def audit_findings(store: EventStore) -> list:
    audit = await Audit.start(store)
    findings = list(audit.findings)
    for stream_id in await store.stream_ids():
        findings += await audit.verify_stream(stream_id)
    return findings + await audit.verify_manifest()


async def same_events(source: EventStore, target: EventStore, stream_id: UUID) -> None:
    before, after = await source.read(stream_id), await target.read(stream_id)
    assert [(e.version, e.type, e.timestamp, e.actor, e.data) for e in after] == [
        (e.version, e.type, e.timestamp, e.actor, e.data) for e in before]
    assert [Seal.of(r).body for r in await target.read_raw(stream_id)] == [
        Seal.of(r).body for r in await source.read_raw(stream_id)]  # byte for byte


# The round trip -------------------------------------------------------------------------------


async def test_an_imported_task_replays_to_the_same_state_and_passes_the_audit(
    store: EventStore, target: EventStore
) -> None:
    task_id, run_ids = await record_task(store)

    bundle = await imported(target, await exported(store, task_id))

    version = await store.version(task_id)
    assert (bundle.task_id, bundle.runs, bundle.events) == (task_id, 2, version + 2 * 3)
    assert (await target.load(task_id)).to_dict() == (await store.load(task_id)).to_dict()
    for stream_id in (task_id, *run_ids):
        await same_events(store, target, stream_id)
    state = await target.load(task_id)
    assert state.description == TEXT
    assert await target.snapshots(task_id) == [(state.version, state.to_dict())]
    assert await audit_findings(target) == []
    # Re-chained under the importing store's key: its digests are not the exporter's.
    assert Seal.of((await target.read_raw(task_id))[0]).digest != Seal.of(
        (await store.read_raw(task_id))[0]).digest
    assert (await target.manifest_entry(task_id)).version == state.version


async def test_imported_events_keep_their_order_in_the_log_and_the_task_list_sees_them(
    store: EventStore, target: EventStore
) -> None:
    task_id, run_ids = await record_task(store, runs=1)
    (await record_task(target, runs=0))  # the importing store has history of its own
    head = await target.head_position()

    await imported(target, await exported(store, task_id))

    moved = [e for e in await target.read_log(head) if e.stream_id in (task_id, *run_ids)]
    original = [e for e in await store.read_log(0) if e.stream_id in (task_id, *run_ids)]
    assert [(e.stream_id, e.version) for e in moved] == [
        (e.stream_id, e.version) for e in original]
    assert moved[0].position == head + 1
    task_list = TaskList(target)
    await task_list.catch_up()
    row = await task_list.get(task_id)
    assert row is not None and (row["version"], row["status"]) == (
        (await store.load(task_id)).version, "paused")


async def test_a_project_travels_with_its_children(store: EventStore, target: EventStore) -> None:
    swarm = await seed_project(store)

    bundle = await imported(target, await exported(store, swarm.project))

    assert set(bundle.states) == {swarm.project, *swarm.children.values()}
    assert list(bundle.states)[0] == swarm.project
    for task_id in bundle.states:
        assert (await target.load(task_id)).to_dict() == (await store.load(task_id)).to_dict()
    assert await audit_findings(target) == []


async def test_a_lone_surrogate_is_exported_but_not_imported(
    store: EventStore, target: EventStore
) -> None:
    task_id = uuid.uuid4()
    events = list(decide(None, CreateTask("odd", "a lone surrogate: \ud800"), ctx(0), task_id))
    await store.append(task_id, events, 0)
    data = await exported(store, task_id)

    message = await refused(target, data, BundleRefused.INVALID_TEXT)

    assert message == (f"task {task_id} version 1: its text holds a lone surrogate (such as "
                       "\\ud800), which ipa takes from no input: it cannot be shown or sent as "
                       "UTF-8")


async def test_the_bundle_is_signed_with_the_exporters_key(store: EventStore) -> None:
    task_id, _ = await record_task(store, runs=0)

    bundle = TaskBundle.read(await exported(store, task_id))

    assert bundle.signed_by(AUDIT_KEY) is True
    assert bundle.signed_by(OTHER_KEY) is None  # another key cannot tell


async def test_a_stream_that_fails_its_audit_is_not_exported(
    store: EventStore, database: ConnectionParams
) -> None:
    task_id, _ = await record_task(store, runs=0)
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        conn.execute("UPDATE events SET state = convert_to(replace(convert_from(state, 'UTF8'), "
                     "'moving it', 'MOVING IT'), 'UTF8') WHERE originator_id = %s", (task_id,))

    with pytest.raises(BundleRefused) as refused:
        await export_task(store, task_id)

    assert refused.value.kind == BundleRefused.UNEXPORTABLE
    assert "contents do not match the digest (event edited)" in str(refused.value)


async def test_an_unknown_task_is_not_found(store: EventStore) -> None:
    with pytest.raises(StreamNotFound):
        await export_task(store, uuid.uuid4())


# Refused bundles: nothing written --------------------------------------------------------------


def unpacked(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}


def packed(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb") as zipped, \
            tarfile.open(fileobj=zipped, mode="w") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def manifest_of(members: dict[str, bytes]) -> dict:
    return json.loads(members["manifest.json"])


def rehashed(members: dict[str, bytes], *names: str) -> dict[str, bytes]:
    """The members with the manifest's size and SHA-256 of ``names`` made to match (what a
    careless editor does); the exporter's signature goes."""
    manifest = manifest_of(members)
    entries = [*manifest["streams"], *manifest["snapshots"],
               *([manifest["git"]] if manifest["git"] else [])]
    for entry in entries:
        if entry["file"] in names:
            entry["size"] = len(members[entry["file"]])
            entry["sha256"] = hashlib.sha256(members[entry["file"]]).hexdigest()
    out = {**members, "manifest.json": json.dumps(manifest).encode()}
    out.pop("signature.json", None)
    return out


def lines_of(content: bytes) -> list[dict]:
    return [json.loads(line) for line in content.splitlines()]


def rechained(members: dict[str, bytes], stream_id: UUID,
              edit: Callable[[list[dict]], None]) -> dict[str, bytes]:
    """The stream's events edited by ``edit`` and chained again, the manifest made to match:
    a forger's work, with every digest recomputed."""
    name = f"streams/{stream_id}.jsonl"
    lines = lines_of(members[name])
    edit(lines)
    prev = GENESIS
    for line in lines:
        line["prev"] = prev
        line["digest"] = prev = chain_digest(stream_id, line["version"], line["topic"],
                                             prev.encode(), line["body"].encode()).decode()
    members = {**members, name: b"".join(json.dumps(line).encode() + b"\n" for line in lines)}
    manifest = manifest_of(members)
    entry = next(s for s in manifest["streams"] if s["id"] == str(stream_id))
    entry["head"], entry["events"] = prev, len(lines)
    return rehashed({**members, "manifest.json": json.dumps(manifest).encode()}, name)


def body_edit(version: int, change: Callable[[dict], None]) -> Callable[[list[dict]], None]:
    def edit(lines: list[dict]) -> None:
        body = json.loads(lines[version - 1]["body"])
        change(body)
        lines[version - 1]["body"] = json.dumps(body, separators=(",", ":"))
    return edit


@pytest.fixture
async def bundle_of(store: EventStore) -> tuple[UUID, UUID, bytes]:
    task_id, run_ids = await record_task(store, runs=1)
    assert await store.version(task_id) == LAST
    return task_id, run_ids[0], await exported(store, task_id)


LAST = 6
"""The version of :func:`record_task`'s task with one run."""


async def refused(target: EventStore, data: bytes, kind: str, **limits: int) -> str:
    """``data`` refused as ``kind``, with nothing written to ``target``; the message."""
    head = await target.head_position()
    with pytest.raises(BundleRefused) as error:
        bundle = TaskBundle.read(data, **limits)
        await check_target(target, bundle)
        await import_bundle(target, bundle)
    assert error.value.kind == kind, str(error.value)
    assert await target.head_position() == head
    message = str(error.value)
    assert "\n" not in message and len(message) < 500
    return message


async def test_a_truncated_bundle_is_refused(bundle_of, target: EventStore) -> None:
    _, _, data = bundle_of

    message = await refused(target, data[: len(data) // 2], BundleRefused.TRUNCATED)

    assert message.startswith("the bundle is truncated or corrupt")


async def test_a_bundle_missing_a_stream_is_refused(bundle_of, target: EventStore) -> None:
    _, run_id, data = bundle_of
    members = unpacked(data)
    del members[f"streams/{run_id}.jsonl"]

    message = await refused(target, packed(members), BundleRefused.TRUNCATED)

    assert message == (f"the bundle lacks streams/{run_id}.jsonl, which its manifest lists "
                       "(truncated?)")


async def test_an_edited_event_is_refused(bundle_of, target: EventStore) -> None:
    task_id, _, data = bundle_of
    members = unpacked(data)
    name = f"streams/{task_id}.jsonl"
    members[name] = members[name].replace(b"moving it", b"MOVING IT")

    first = await refused(target, packed(members), BundleRefused.ALTERED)
    second = await refused(target, packed(rehashed(members, name)), BundleRefused.ALTERED)

    assert first == f"{name} does not match its size and SHA-256 in the manifest (altered)"
    assert second == (f"task {task_id} version {LAST}: its contents do not match its digest "
                      "(event edited)")


async def test_an_event_altered_with_its_chain_recomputed_does_not_replay_to_the_snapshot(
    bundle_of, target: EventStore
) -> None:
    task_id, _, data = bundle_of
    forged = rechained(unpacked(data), task_id,
                       body_edit(1, lambda body: body.update(title="forged")))

    message = await refused(target, packed(forged), BundleRefused.ALTERED)

    assert message == (f"the snapshot of task {task_id} at version {LAST} differs from its events "
                       "replayed (altered)")


async def test_an_altered_snapshot_is_refused(bundle_of, target: EventStore) -> None:
    task_id, _, data = bundle_of
    members = unpacked(data)
    name = f"snapshots/{task_id}.json"
    snapshot = json.loads(members[name])
    snapshot["state"]["title"] = "forged"
    members[name] = json.dumps(snapshot).encode()

    message = await refused(target, packed(rehashed(members, name)), BundleRefused.ALTERED)

    assert message == (f"the snapshot of task {task_id} at version {LAST} differs from its events "
                       "replayed (altered)")


async def test_reordered_events_are_refused(bundle_of, target: EventStore) -> None:
    task_id, run_id, data = bundle_of
    members = unpacked(data)
    name = f"streams/{run_id}.jsonl"
    lines = members[name].splitlines(keepends=True)
    members[name] = lines[1] + lines[0] + b"".join(lines[2:])

    plain = await refused(target, packed(rehashed(members, name)), BundleRefused.ALTERED)
    renumbered = await refused(target, packed(rechained(unpacked(data), run_id, swap_first_two)),
                               BundleRefused.ALTERED)

    assert plain == (f"run {run_id}: line 1 holds version 2 (events deleted, inserted or "
                     "reordered)")
    assert renumbered == (f"run {run_id} version 2: its position is not after the previous "
                          "event's (reordered)")


def swap_first_two(lines: list[dict]) -> None:
    lines[0], lines[1] = lines[1], lines[0]
    lines[0]["version"], lines[1]["version"] = 1, 2


async def test_a_forgery_with_every_digest_recomputed_fails_the_exporters_mac(
    store: EventStore, bundle_of
) -> None:
    task_id, _, data = bundle_of
    members = rechained(unpacked(data), task_id,
                        body_edit(1, lambda body: body.update(correlation_id="forged")))
    members["signature.json"] = unpacked(data)["signature.json"]  # the exporter's, kept

    with pytest.raises(BundleRefused) as error:  # into a store with the exporter's key
        await check_target(store, TaskBundle.read(packed(members)))

    assert error.value.kind == BundleRefused.ALTERED
    assert str(error.value) == ("the bundle's MAC fails with this store's audit key, which "
                                "made it (altered)")


async def test_a_bundle_from_a_newer_ipa_is_refused(bundle_of, target: EventStore) -> None:
    task_id, run_id, data = bundle_of
    members = unpacked(data)
    manifest = manifest_of(members)
    manifest.update(format_version=2, ipa_version="9.0.0")
    newer_format = {**members, "manifest.json": json.dumps(manifest).encode()}
    newer_event = rechained(members, task_id, body_edit(1, lambda b: b.update(class_version=3)))
    new_type = rechained(members, run_id, lambda lines: lines[1].update(
        topic="ipa.domain.runs:RunTeleported"))

    format_message = await refused(target, packed(newer_format), BundleRefused.TOO_NEW)
    event_message = await refused(target, packed(newer_event), BundleRefused.TOO_NEW)
    type_message = await refused(target, packed(new_type), BundleRefused.TOO_NEW)

    assert format_message == ("the bundle was written by ipa 9.0.0 in format 2; this ipa "
                              "(0.1.0) reads format 1 and older: upgrade ipa to import it")
    assert event_message == (f"task {task_id} version 1: TaskCreated version 3 is newer than "
                             "this ipa's (2): written by a newer ipa; upgrade ipa to import it")
    assert type_message.startswith(f"run {run_id} version 2: event type "
                                   "'ipa.domain.runs:RunTeleported' is not one this ipa")


async def test_a_topic_that_is_not_an_ipa_event_type_is_never_imported(
    bundle_of, target: EventStore
) -> None:
    task_id, _, data = bundle_of
    forged = rechained(unpacked(data), task_id, lambda lines: lines[1].update(topic="os:system"))

    message = await refused(target, packed(forged), BundleRefused.TOO_NEW)

    assert f"task {task_id} version 2: event type 'os:system' is not one this ipa" in message


async def test_an_event_missing_a_field_is_refused(bundle_of, target: EventStore) -> None:
    _, run_id, data = bundle_of
    forged = rechained(unpacked(data), run_id, body_edit(2, lambda body: body.pop("lines")))

    message = await refused(target, packed(forged), BundleRefused.ALTERED)

    assert message == f"run {run_id} version 2: RunOutput has no field 'lines' (altered)"


async def test_a_task_that_exists_is_refused_naming_it(bundle_of, target: EventStore) -> None:
    task_id, _, data = bundle_of
    await imported(target, data)

    message = await refused(target, data, BundleRefused.EXISTS)

    assert message == f"task {task_id} exists here already (imported before?)"


async def test_a_task_deleted_here_that_the_manifest_remembers_is_refused(
    bundle_of, target: EventStore, other_database: ConnectionParams
) -> None:
    task_id, run_id, data = bundle_of
    await imported(target, data)
    with psycopg.connect(other_database.conninfo(), autocommit=True) as conn:
        conn.execute("DELETE FROM events WHERE originator_id IN (%s, %s)", (task_id, run_id))
        conn.execute("DELETE FROM snapshots")

    message = await refused(target, data, BundleRefused.EXISTS)

    assert message == (f"task {task_id} exists here already (its events are gone, the keyed "
                       "manifest still has it: see `ipa audit verify`)")


@pytest.mark.parametrize("data", [
    b"", b"hello", json.dumps({"format": "ipa-task-bundle"}).encode(), gzip.compress(b"x" * 100),
    packed({"README": b"not a bundle"}), packed({"manifest.json": b"[1, 2]"}),
], ids=["empty", "text", "json", "gzip", "tar-without-manifest", "other-manifest"])
async def test_what_is_not_a_bundle_is_refused(data: bytes, target: EventStore) -> None:
    kinds = (BundleRefused.NOT_A_BUNDLE, BundleRefused.TRUNCATED)
    head = await target.head_position()
    with pytest.raises(BundleRefused) as error:
        TaskBundle.read(data)
    assert error.value.kind in kinds and "\n" not in str(error.value)
    assert await target.head_position() == head


async def test_a_bundle_over_the_limits_is_refused(bundle_of, target: EventStore) -> None:
    _, _, data = bundle_of
    big_member = packed({"manifest.json": b" " * 5000})
    bomb = gzip.compress(b"\0" * 3 * 2**20)  # 3 KiB that inflate to 3 MiB

    whole = await refused(target, data, BundleRefused.TOO_LARGE, limit=len(data) - 1)
    content = await refused(target, big_member, BundleRefused.TOO_LARGE, content_limit=4000)
    inflated = await refused(target, bomb, BundleRefused.TOO_LARGE, content_limit=4000)

    assert whole == f"the bundle is {len(data)} bytes; the limit is {len(data) - 1}"
    assert content == "the bundle holds more than 4000 bytes uncompressed"
    assert inflated == f"the bundle inflates to more than {4000 + 500 + 2**20} bytes"


async def test_a_member_the_manifest_does_not_list_is_refused(
    bundle_of, target: EventStore
) -> None:
    _, _, data = bundle_of

    message = await refused(target, packed({**unpacked(data), "extra.sh": b"rm -rf /"}),
                            BundleRefused.ALTERED)

    assert message == "the bundle holds 'extra.sh', which its manifest does not list (altered)"
