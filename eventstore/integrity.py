"""The audit: is every stream exactly what ipa wrote?

For each stream it checks that versions run 1, 2, 3... with no gap, that every event's digest
matches its bytes and links to its predecessor's digest (see :mod:`.codec`), that every event
decodes, and that every snapshot equals the state replayed from the events up to its version.
A snapshot, or a read model, that knows a version past the stream's last event shows events
deleted at the end, which the chain alone cannot see.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from uuid import UUID

from ipa.domain import DomainError, TaskEvent, TaskState, evolve

from .codec import GENESIS, EventCodec, Seal
from .errors import StoreError
from .store import EventStore

_PAGE = 5000


@dataclass(frozen=True)
class Finding:
    """One integrity failure: which stream, which version, what is wrong."""

    stream_id: UUID
    version: int
    problem: str

    def __str__(self) -> str:
        return f"task {self.stream_id} version {self.version}: {self.problem}"


async def verify_stream(
    store: EventStore, stream_id: UUID, *, recorded_version: int | None = None
) -> list[Finding]:
    """Every integrity failure of one stream (empty when intact).

    ``recorded_version``: the version another record (e.g. the task list) holds for the
    stream, checked against the stream's last event.
    """
    codec = EventCodec()
    snapshots = dict(await store.snapshots(stream_id))
    findings: list[Finding] = []
    expected_version = 1
    prev = GENESIS
    state: TaskState | None = None
    folding = True
    async for row in _rows(store, stream_id):
        version = row.originator_version
        if version != expected_version:
            findings.append(Finding(
                stream_id, version,
                f"versions jump from {expected_version - 1} to {version} (event deleted?)",
            ))
            folding = False  # a state folded across a hole means nothing
        expected_version = version + 1
        try:
            seal = Seal.of(row)
        except StoreError as e:
            findings.append(Finding(stream_id, version, str(e)))
            folding = False
            continue
        if seal.expected_digest(row) != seal.digest:
            findings.append(Finding(stream_id, version, "contents do not match the digest "
                                    "(event edited)"))
        if seal.prev != prev:
            findings.append(Finding(stream_id, version, "link to the previous event is broken "
                                    "(event inserted, deleted or reordered)"))
        prev = seal.digest
        if not folding:
            continue
        try:
            event = codec.to_domain_event(row)
            if isinstance(event, TaskEvent):
                state = evolve(state, event)
        except (StoreError, DomainError, TypeError, ValueError, KeyError) as e:
            findings.append(Finding(stream_id, version, f"cannot be replayed: {e}"))
            folding = False
            continue
        if state is not None and version in snapshots:
            if snapshots[version] != state.to_dict():
                findings.append(Finding(stream_id, version, "snapshot differs from the state "
                                        "replayed from events"))
    last = expected_version - 1
    for version in sorted(v for v in snapshots if v > last):
        findings.append(Finding(stream_id, version, f"a snapshot exists at version {version} "
                                f"but the events end at {last} (events deleted at the end?)"))
    if recorded_version is not None and recorded_version > last:
        findings.append(Finding(stream_id, recorded_version, f"the task list recorded version "
                                f"{recorded_version} but the events end at {last} "
                                "(events deleted at the end?)"))
    return findings


async def _rows(store: EventStore, stream_id: UUID) -> AsyncIterator:
    after = 0
    while True:
        page = await store.read_raw(stream_id, after=after, limit=_PAGE)
        for row in page:
            yield row
        if len(page) < _PAGE:
            return
        after = page[-1].originator_version
