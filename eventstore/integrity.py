"""The audit: is every stream exactly what ipa wrote?

For each stream it checks that versions run 1, 2, 3... with no gap and that their global
positions increase with them (a swap of two positions shows); that every event's digest matches
its bytes (keyed with the audit key from the store's keyed-from position on, see
:mod:`.codec`) and links to its predecessor's; that every event decodes; and that every
snapshot equals the state replayed from the events up to its version. Against the keyed
manifest (:mod:`.manifest`): the stream has a row, its MAC verifies over the digest of the
event at its version, and the events do not end before it (a lost tail). For the store: the
keyed-from record verifies, and no manifest row is left whose stream is gone (a deleted task).
A snapshot, or a read model, that knows a version past the stream's last event also shows
events deleted at the end.

What it cannot see: someone holding both the key and the database can rewrite anything and
make it verify; a manifest row saved earlier and put back after its stream's tail was
deleted verifies (a replay); two events of different streams whose positions are swapped
keep each stream's order. See ``specs/eventstore/README.md``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from uuid import UUID

from ipa.domain import DomainError, TaskEvent, TaskState, evolve

from .audit_key import AuditKey
from .codec import GENESIS, EventCodec, Seal
from .errors import AuditKeyError, StoreError
from .manifest import ManifestEntry, check_key
from .store import EventStore

_PAGE = 5000


@dataclass(frozen=True)
class Finding:
    """One integrity failure: which stream, which version, what is wrong.

    A failure of the store as a whole (its keyed-from record) has no stream: ``version`` is
    then a global position.
    """

    stream_id: UUID | None
    version: int
    problem: str

    def __str__(self) -> str:
        if self.stream_id is None:
            return f"store position {self.version}: {self.problem}"
        return f"task {self.stream_id} version {self.version}: {self.problem}"


@dataclass(frozen=True)
class ManifestSummary:
    """What the keyed manifest covers: note it outside the store; it never goes down."""

    streams: int
    events: int


class Audit:
    """One audit of a store: :meth:`start` checks its keyed-from record, then
    :meth:`verify_stream` each stream and :meth:`verify_manifest` for deleted streams."""

    def __init__(
        self, store: EventStore, key: AuditKey | None, keyed_from: int | None,
        findings: list[Finding],
    ) -> None:
        self._store = store
        self._key = key
        self.keyed_from = keyed_from
        """The global position from which events are keyed (``None``: the store is not
        keyed; its chains are checked unkeyed and it has no manifest)."""
        self.findings = findings
        """Failures of the store as a whole, found by :meth:`start`."""

    @classmethod
    async def start(cls, store: EventStore) -> Audit:
        """Read the store's keyed-from record and check it with the store's audit key.

        Raises :class:`AuditKeyError` when the store is keyed and the audit has no key or
        another key (the audit could only report every keyed event as failing).
        """
        key = store.audit_key
        record = await store.keyed_from()
        findings: list[Finding] = []
        if record is None:
            if key is not None and await store.head_position() > 0:
                findings.append(Finding(None, 0, (
                    "the store has no keyed-from record although an audit key is set: it was "
                    "deleted, or no ipa with this key has written here yet (`ipa serve` "
                    "keys the store)"
                )))
            return cls(store, key, None, findings)
        if key is None:
            raise AuditKeyError(
                "this store's chain is keyed: the audit needs its key (IPA_AUDIT_KEY, or "
                "audit.key in the data dir)"
            )
        check_key(record, key)
        if not record.verifies(key):
            findings.append(Finding(None, record.position, (
                "the keyed-from record fails its MAC (altered: events would verify with the "
                "wrong digest)"
            )))
        return cls(store, key, record.position, findings)

    @property
    def keyed(self) -> bool:
        return self.keyed_from is not None

    async def summary(self) -> ManifestSummary:
        """The streams and events the manifest covers now."""
        return ManifestSummary(*await self._store.manifest_summary())

    async def verify_stream(
        self, stream_id: UUID, *, recorded_version: int | None = None
    ) -> list[Finding]:
        """Every integrity failure of one stream (empty when intact).

        ``recorded_version``: the version another record (e.g. the task list) holds for the
        stream, checked against the stream's last event.
        """
        store = self._store
        codec = EventCodec()
        # Read before the events: an append meanwhile can only move it past what is read.
        manifest = await store.manifest_entry(stream_id) if self.keyed else None
        manifest_digest: str | None = None
        snapshots = dict(await store.snapshots(stream_id))
        findings: list[Finding] = []
        expected_version = 1
        prev = GENESIS
        prev_position = 0
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
            if row.id <= prev_position:
                findings.append(Finding(
                    stream_id, version,
                    f"its global position {row.id} is not after the previous version's "
                    f"({prev_position}): positions swapped?",
                ))
            prev_position = max(prev_position, row.id)
            try:
                seal = Seal.of(row)
            except StoreError as e:
                findings.append(Finding(stream_id, version, str(e)))
                folding = False
                continue
            findings += self._check_digest(stream_id, row, seal)
            if seal.prev != prev:
                findings.append(Finding(stream_id, version, "link to the previous event is broken "
                                        "(event inserted, deleted or reordered)"))
            prev = seal.digest
            if manifest is not None and version == manifest.version:
                manifest_digest = seal.digest
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
        if self.keyed and last > 0:
            findings += await self._check_manifest(stream_id, manifest, manifest_digest, last)
        return findings

    async def verify_manifest(self) -> list[Finding]:
        """A finding for each manifest row whose stream has no event left (a deleted task).
        Run it after the streams, over a whole store."""
        if not self.keyed:
            return []
        return [
            Finding(entry.stream_id, entry.version, (
                f"the manifest has this stream at version {entry.version} but the store has "
                "no events for it (task deleted?)"
            ))
            for entry in await self._store.manifest_orphans()
        ]

    def _check_digest(self, stream_id: UUID, row, seal: Seal) -> list[Finding]:
        keyed = self.keyed_from is not None and row.id >= self.keyed_from
        if seal.expected_digest(row, self._key if keyed else None) == seal.digest:
            return []
        if keyed and seal.expected_digest(row) == seal.digest:
            problem = ("its digest is not keyed although it lies past the keyed-from position "
                       "(rewritten without the audit key?)")
        else:
            problem = "contents do not match the digest (event edited)"
        return [Finding(stream_id, row.originator_version, problem)]

    async def _check_manifest(
        self, stream_id: UUID, before: ManifestEntry | None, digest: str | None, last: int
    ) -> list[Finding]:
        """The stream's events (``last`` = its last version) against its manifest row, read
        as ``before`` ahead of the events (``digest``: the event's digest at its version)."""
        assert self._key is not None
        if before is not None and before.version > last:
            return [Finding(stream_id, before.version, (
                f"the manifest records version {before.version} but the events end at {last} "
                "(events deleted at the end?)"
            ))]
        entry = before
        if entry is None or entry.version < last:
            entry = await self._store.manifest_entry(stream_id)  # moved on by an append since?
        if entry is None:
            return [Finding(stream_id, last, (
                "the stream has no manifest row (not written by ipa with the audit key: "
                "inserted, or its row deleted)"
            ))]
        findings: list[Finding] = []
        if entry.version < last:
            findings.append(Finding(stream_id, entry.version + 1, (
                f"the events run past the manifest's version {entry.version} to {last} "
                "(appended without the audit key?)"
            )))
        if before is None or entry.version != before.version:
            digest = await self._digest_at(stream_id, entry.version)
        if digest is None or self._key.manifest_mac(stream_id, entry.version, digest) != entry.mac:
            findings.append(Finding(stream_id, entry.version, (
                "the manifest row fails its MAC (forged, or the stream rewritten up to here)"
            )))
        return findings

    async def _digest_at(self, stream_id: UUID, version: int) -> str | None:
        rows = await self._store.read_raw(stream_id, after=version - 1, limit=1)
        if not rows or rows[0].originator_version != version:
            return None
        try:
            return Seal.of(rows[0]).digest
        except StoreError:
            return None


async def verify_stream(
    store: EventStore, stream_id: UUID, *, recorded_version: int | None = None
) -> list[Finding]:
    """Every integrity failure of one stream, and of the store's keyed-from record (empty
    when intact); see :class:`Audit`."""
    audit = await Audit.start(store)
    return audit.findings + await audit.verify_stream(stream_id, recorded_version=recorded_version)


async def _rows(store: EventStore, stream_id: UUID) -> AsyncIterator:
    after = 0
    while True:
        page = await store.read_raw(stream_id, after=after, limit=_PAGE)
        for row in page:
            yield row
        if len(page) < _PAGE:
            return
        after = page[-1].originator_version
