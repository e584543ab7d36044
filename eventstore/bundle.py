"""The task bundle: the file ``ipa export`` writes and ``ipa import`` reads.

A bundle is a gzip-compressed tar of:

- ``manifest.json``: ``format`` (``ipa-task-bundle``), ``format_version``, the ``ipa_version``
  that wrote it, ``exported_at``, the root ``task_id``, its ``tasks`` (the task and, for a
  project, its children), ``streams`` (each task's and each agent run's: kind, owner, event
  count, head digest, file, size, SHA-256), ``snapshots`` and ``git`` (or ``null``);
- ``streams/<stream id>.jsonl``: the stream's events in version order, one JSON object a line:
  ``version``, ``position`` (in the exporter's log), ``topic``, ``body`` (the event's stored
  JSON, as text), ``prev`` and ``digest``;
- ``snapshots/<task id>.json``: each task's state at its last event (``TaskState.to_dict()``);
- ``git/branches.bundle``: ``git bundle create`` of the tasks' branches (optional);
- ``signature.json``: ``{"key_id", "mac"}``, the exporter's audit key's MAC of the manifest
  (optional).

**How a bundle proves itself.** The exporter's chain is keyed with its own audit key, which
another machine does not have; so a bundle carries an unkeyed chain over the same bytes:
``digest = sha256("<stream id>\\n<version>\\n<topic>\\n" + prev + body)``, ``prev`` the
previous event's digest (64 zeros first), as :func:`.codec.chain_digest` without a key. The
manifest holds each member's size and SHA-256 and each stream's event count and head digest.
:meth:`TaskBundle.read` checks all of it, decodes every event (only ipa's own event types,
none newer than this ipa's), replays each task and compares the state with its snapshot,
before anything is written. A lone surrogate in an event's text (which the API refuses at
every input, since no response could carry it as UTF-8) is refused too.

What this catches: a truncated or corrupt file, any change made without recomputing every
digest after it (an edited, inserted, deleted or reordered event, an edited snapshot or git
bundle), a manifest that does not match its members, and a history that does not replay to
the state the exporter had. What it cannot catch without a shared secret: someone who
rewrites a bundle and recomputes every digest. Against that, the exporter's MAC
(``signature.json``) is checked when the importing store has the same audit key (a cluster's
nodes, a key copied on purpose), and the bundle's SHA-256, which ``ipa export`` prints, can be
compared out of band (``ipa import --sha256``).
"""

from __future__ import annotations

import gzip
import hashlib
import hmac
import io
import json
import re
import tarfile
import typing
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from types import UnionType
from typing import Any
from uuid import UUID

from eventsourcing.domain import DomainEvent
from eventsourcing.utils import get_topic

from ipa import __version__
from ipa.domain import JobStarted, TaskCreated, TaskEvent, TaskState, evolve
from ipa.domain.runs import RunEvent, RunStarted

from .audit_key import AuditKey
from .codec import GENESIS, chain_digest, make_transcoder
from .errors import StoreError

FORMAT = "ipa-task-bundle"
FORMAT_VERSION = 1
"""The bundle format this ipa writes; it reads this one and older ones."""
MEDIA_TYPE = "application/gzip"
MANIFEST = "manifest.json"
SIGNATURE = "signature.json"
GIT_FILE = "git/branches.bundle"
MAX_BUNDLE = 256 * 2**20
"""The largest bundle file read, in bytes."""
MAX_CONTENT = 1024 * 2**20
"""The most bytes a bundle's members may hold uncompressed, together."""
MAX_MEMBERS = 100_000
BRANCH_REF = re.compile(r"refs/heads/ipa/[0-9a-f]{8}")
_STREAM_FILE = re.compile(r"streams/([0-9a-f-]{36})\.jsonl")
_SNAPSHOT_FILE = re.compile(r"snapshots/([0-9a-f-]{36})\.json")
_DIGEST = re.compile(r"[0-9a-f]{64}")
_GIT_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_GZIP_MAGIC = b"\x1f\x8b"
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class BundleRefused(StoreError):
    """A bundle that cannot be imported (or a task that cannot be exported); ``kind`` says
    why, one of the constants below, and the message names the problem."""

    NOT_A_BUNDLE = "not_a_bundle"
    TRUNCATED = "truncated"
    ALTERED = "altered"
    TOO_NEW = "too_new"
    TOO_LARGE = "too_large"
    EXISTS = "exists"
    UNEXPORTABLE = "unexportable"
    INVALID_TEXT = "invalid_text"

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class BundleEvent:
    """One event as a bundle carries it: its stored body and its unkeyed chain digests."""

    version: int
    position: int
    topic: str
    body: bytes
    prev: str
    digest: str


@dataclass(frozen=True)
class BundleStream:
    """A stream of the bundle: a task's (``kind`` ``task``) or one of its agent runs'
    (``run``); ``task_id`` is the task it belongs to (itself for a task)."""

    stream_id: UUID
    kind: str
    task_id: UUID
    events: tuple[BundleEvent, ...]

    @property
    def file(self) -> str:
        return f"streams/{self.stream_id}.jsonl"


@dataclass(frozen=True)
class GitBranches:
    """The tasks' branches as ``git bundle create`` wrote them (``data``), with the commit
    each ref points at, from the repository ``repo`` (as the task names it)."""

    repo: str | None
    refs: Mapping[str, str]
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class TaskBundle:
    """A task, its children and its agent runs, ready to write or verified as read.

    ``states``: each task's state at its last event, by id (the root task's first).
    """

    task_id: UUID
    streams: tuple[BundleStream, ...]
    states: Mapping[UUID, TaskState]
    git: GitBranches | None = None
    ipa_version: str = __version__
    exported_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    signature: tuple[str, str] | None = None
    """``(key_id, mac)`` of the exporter's audit key over the manifest, when it had one."""
    manifest: bytes = b""
    """The manifest as read (empty for a bundle about to be packed)."""
    sha256: str = ""
    """The SHA-256 of the whole file, as read or packed."""

    @property
    def events(self) -> int:
        return sum(len(stream.events) for stream in self.streams)

    @property
    def runs(self) -> int:
        return sum(stream.kind == "run" for stream in self.streams)

    def signed_by(self, key: AuditKey | None) -> bool | None:
        """Whether the bundle's MAC verifies with ``key``: ``None`` when it carries none or
        one made with another key (then it cannot tell)."""
        if key is None or self.signature is None or self.signature[0] != key.key_id:
            return None
        return hmac.compare_digest(_manifest_mac(key, self.manifest), self.signature[1])

    # Writing ------------------------------------------------------------------------------

    def pack(self, signer: AuditKey | None = None) -> bytes:
        """The bundle file (signed with ``signer``, the exporter's audit key, if given)."""
        members: dict[str, bytes] = {}
        streams = []
        for stream in self.streams:
            members[stream.file] = b"".join(_line(event) for event in stream.events)
            head = stream.events[-1].digest
            streams.append({"id": str(stream.stream_id), "kind": stream.kind,
                            "task_id": str(stream.task_id), "events": len(stream.events),
                            "head": head, **_described(stream.file, members[stream.file])})
        snapshots = []
        for task_id, state in self.states.items():
            name = f"snapshots/{task_id}.json"
            members[name] = json.dumps({"task_id": str(task_id), "version": state.version,
                                        "state": state.to_dict()}, sort_keys=True).encode()
            snapshots.append({"task_id": str(task_id), "version": state.version,
                              **_described(name, members[name])})
        git = None
        if self.git is not None:
            members[GIT_FILE] = self.git.data
            git = {"repo": self.git.repo, "refs": dict(self.git.refs),
                   **_described(GIT_FILE, self.git.data)}
        runs: dict[UUID, list[str]] = {}
        for stream in self.streams:
            if stream.kind == "run":
                runs.setdefault(stream.task_id, []).append(str(stream.stream_id))
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "ipa_version": self.ipa_version,
            "exported_at": self.exported_at.isoformat(), "task_id": str(self.task_id),
            "tasks": [{"id": str(task_id), "title": state.title, "workflow": state.workflow,
                       "status": state.status.value, "version": state.version,
                       "parent_id": None if state.parent_id is None else str(state.parent_id),
                       "runs": runs.get(task_id, [])}
                      for task_id, state in self.states.items()],
            "streams": streams, "snapshots": snapshots, "git": git,
            "totals": {"tasks": len(self.states), "runs": self.runs, "events": self.events},
        }
        raw = json.dumps(manifest, indent=1, sort_keys=True).encode()
        buffer = io.BytesIO()
        mtime = int(self.exported_at.timestamp())
        with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=6, mtime=mtime) as zipped, \
                tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar:
            _add(tar, MANIFEST, raw, mtime)
            for name, data in members.items():
                _add(tar, name, data, mtime)
            if signer is not None:
                signature = {"key_id": signer.key_id, "mac": _manifest_mac(signer, raw)}
                _add(tar, SIGNATURE, json.dumps(signature).encode(), mtime)
        return buffer.getvalue()

    # Reading ------------------------------------------------------------------------------

    @classmethod
    def read(cls, data: bytes, *, limit: int = MAX_BUNDLE,
             content_limit: int = MAX_CONTENT) -> TaskBundle:
        """The bundle in ``data``, checked as the module docstring says; else
        :class:`BundleRefused` naming the first problem. Reads nothing but ``data``."""
        if len(data) > limit:
            raise BundleRefused(BundleRefused.TOO_LARGE, f"the bundle is {len(data)} bytes; "
                                f"the limit is {limit}")
        members = _members(data, content_limit)
        raw = members.pop(MANIFEST, None)
        if raw is None:
            raise BundleRefused(BundleRefused.NOT_A_BUNDLE, f"no {MANIFEST} in the file: not "
                                "an ipa task bundle")
        manifest = _manifest(raw)
        signature = _signature(members.pop(SIGNATURE, None))
        listed = {entry["file"]: entry for entry in (
            *manifest["streams"], *manifest["snapshots"],
            *([manifest["git"]] if manifest["git"] else []))}
        for name in sorted(set(listed) - set(members)):
            raise BundleRefused(BundleRefused.TRUNCATED, f"the bundle lacks {name}, which its "
                                "manifest lists (truncated?)")
        for name in sorted(set(members) - set(listed)):
            raise BundleRefused(BundleRefused.ALTERED, f"the bundle holds {name[:100]!r}, which "
                                "its manifest does not list (altered)")
        for name, entry in listed.items():
            content = members[name]
            if len(content) != entry["size"] or _sha256(content) != entry["sha256"]:
                raise BundleRefused(BundleRefused.ALTERED, f"{name} does not match its size "
                                    "and SHA-256 in the manifest (altered)")
        return _verified(manifest, raw, members, signature, data)


def chained(stream_id: UUID, rows: Iterable[tuple[int, int, str, bytes]]
            ) -> tuple[BundleEvent, ...]:
    """A stream's events ``(version, position, topic, body)`` with the bundle's unkeyed
    chain over them."""
    events = []
    prev = GENESIS
    for version, position, topic, body in rows:
        digest = chain_digest(stream_id, version, topic, prev.encode(), body).decode()
        events.append(BundleEvent(version, position, topic, body, prev, digest))
        prev = digest
    return tuple(events)


def stream_order(streams: Sequence[BundleStream]) -> list[tuple[BundleStream, BundleEvent]]:
    """Every event of ``streams`` in the exporter's log order (the order an import appends)."""
    return sorted(((s, e) for s in streams for e in s.events), key=lambda pair: pair[1].position)


def task_topics() -> Mapping[str, type[DomainEvent]]:
    """ipa's task event types by topic: the only ones a task stream of a bundle may hold."""
    return _topics(TaskEvent)


def run_topics() -> Mapping[str, type[DomainEvent]]:
    """ipa's run event types by topic."""
    return _topics(RunEvent)


# Reading, step by step ----------------------------------------------------------------------


def _members(data: bytes, content_limit: int) -> dict[str, bytes]:
    """Every member of the tar.gz in ``data``, by name (regular files only, bounded)."""
    tar_data = _gunzipped(data, content_limit + content_limit // 8 + 2**20)
    members: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_data), mode="r:") as tar:
            while (member := tar.next()) is not None:
                name = member.name
                if not member.isfile():
                    raise BundleRefused(BundleRefused.ALTERED, f"the bundle holds {name[:100]!r}"
                                        ", which is not a regular file (altered)")
                if name in members:
                    raise BundleRefused(BundleRefused.ALTERED, f"the bundle holds {name[:100]!r}"
                                        " twice (altered)")
                if len(members) >= MAX_MEMBERS:
                    raise BundleRefused(BundleRefused.TOO_LARGE, f"the bundle holds more than "
                                        f"{MAX_MEMBERS} files")
                total += member.size
                if total > content_limit:
                    raise BundleRefused(BundleRefused.TOO_LARGE, "the bundle holds more than "
                                        f"{content_limit} bytes uncompressed")
                extracted = tar.extractfile(member)
                assert extracted is not None  # a regular file
                content = extracted.read()
                if len(content) != member.size:
                    raise EOFError(f"{name[:100]} ends early")
                members[name] = content
    except BundleRefused:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise BundleRefused(BundleRefused.TRUNCATED, f"the bundle is truncated or corrupt "
                            f"({str(e)[:200] or type(e).__name__})") from None
    if not members:
        raise BundleRefused(BundleRefused.NOT_A_BUNDLE, "not an ipa task bundle (an empty "
                            "archive)")
    return members


def _gunzipped(data: bytes, limit: int) -> bytes:
    """``data`` decompressed (one gzip member), refused past ``limit`` bytes: a small file that
    inflates without end never fills the memory."""
    if not data.startswith(_GZIP_MAGIC):
        raise BundleRefused(BundleRefused.NOT_A_BUNDLE, "not an ipa task bundle (not a "
                            "gzip-compressed tar)")
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflate.decompress(data, limit)
    except zlib.error as e:
        raise BundleRefused(BundleRefused.TRUNCATED, f"the bundle is truncated or corrupt "
                            f"({e})") from None
    if inflate.unconsumed_tail:
        raise BundleRefused(BundleRefused.TOO_LARGE, f"the bundle inflates to more than {limit} "
                            "bytes")
    if not inflate.eof or inflate.unused_data:
        raise BundleRefused(BundleRefused.TRUNCATED, "the bundle is truncated or corrupt (its "
                            "compressed data " + ("ends early)" if not inflate.eof else
                                                  "is followed by more bytes)"))
    return out


def _manifest(raw: bytes) -> dict[str, Any]:
    """The manifest, its format checked first (a newer one is refused as such), then its
    shape."""
    try:
        manifest = json.loads(raw)
    except (ValueError, RecursionError):
        raise BundleRefused(BundleRefused.NOT_A_BUNDLE, f"{MANIFEST} is not JSON: not an ipa "
                            "task bundle") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleRefused(BundleRefused.NOT_A_BUNDLE, f"{MANIFEST} does not say "
                            f"format {FORMAT!r}: not an ipa task bundle")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BundleRefused(BundleRefused.ALTERED, "the manifest's format_version is not a "
                            "whole number ≥ 1 (altered)")
    if version > FORMAT_VERSION:
        made_by = manifest.get("ipa_version")
        by = f"ipa {made_by[:40]}" if isinstance(made_by, str) else "a newer ipa"
        raise BundleRefused(BundleRefused.TOO_NEW, f"the bundle was written by {by} in format "
                            f"{version}; this ipa ({__version__}) reads format {FORMAT_VERSION} "
                            "and older: upgrade ipa to import it")
    shape = _Shape("the manifest")
    shape.get(manifest, "ipa_version", str)
    shape.get(manifest, "exported_at", str)
    shape.uuid(manifest, "task_id")
    for task in shape.get(manifest, "tasks", list):
        shape.uuid(task, "id")
        shape.get(task, "version", int)
        shape.get(task, "runs", list)
    for stream in shape.get(manifest, "streams", list):
        shape.uuid(stream, "id")
        shape.uuid(stream, "task_id")
        if shape.get(stream, "kind", str) not in ("task", "run"):
            shape.fail(f"stream kind {stream['kind'][:20]!r}")
        shape.get(stream, "events", int)
        shape.digest(stream, "head")
        shape.member(stream, _STREAM_FILE, "id")
    for snapshot in shape.get(manifest, "snapshots", list):
        shape.uuid(snapshot, "task_id")
        shape.get(snapshot, "version", int)
        shape.member(snapshot, _SNAPSHOT_FILE, "task_id")
    git = manifest.get("git")
    if git is not None:
        shape.get(manifest, "git", dict)
        if git.get("repo") is not None:
            shape.get(git, "repo", str)
        refs = shape.get(git, "refs", dict)
        for ref, sha in refs.items():
            if not BRANCH_REF.fullmatch(ref) or not isinstance(sha, str) \
                    or not _GIT_SHA.fullmatch(sha):
                shape.fail(f"git ref {ref[:60]!r}")
        shape.member(git, re.compile(re.escape(GIT_FILE)), None)
    return manifest


def _signature(raw: bytes | None) -> tuple[str, str] | None:
    if raw is None:
        return None
    try:
        signature = json.loads(raw)
        key_id, mac = signature["key_id"], signature["mac"]
        if isinstance(key_id, str) and isinstance(mac, str):
            return key_id, mac
    except (ValueError, RecursionError, TypeError, KeyError):
        pass
    raise BundleRefused(BundleRefused.ALTERED, f"{SIGNATURE} is malformed (altered)")


def _verified(manifest: dict[str, Any], raw: bytes, members: dict[str, bytes],
              signature: tuple[str, str] | None, data: bytes) -> TaskBundle:
    """The bundle after its streams, replays and snapshots check out."""
    root = UUID(manifest["task_id"])
    tasks = {UUID(task["id"]): task for task in manifest["tasks"]}
    if len(tasks) != len(manifest["tasks"]) or root not in tasks:
        raise BundleRefused(BundleRefused.ALTERED, "the manifest's tasks repeat or leave out "
                            "its task_id (altered)")
    entries = {UUID(entry["id"]): entry for entry in manifest["streams"]}
    if len(entries) != len(manifest["streams"]):
        raise BundleRefused(BundleRefused.ALTERED, "the manifest lists a stream twice (altered)")
    if {i for i, e in entries.items() if e["kind"] == "task"} != set(tasks) or any(
            UUID(e["task_id"]) != i for i, e in entries.items() if e["kind"] == "task"):
        raise BundleRefused(BundleRefused.ALTERED, "the manifest's tasks and task streams do "
                            "not match (altered)")
    snapshots = {UUID(entry["task_id"]): entry for entry in manifest["snapshots"]}
    if set(snapshots) != set(tasks) or len(snapshots) != len(manifest["snapshots"]):
        raise BundleRefused(BundleRefused.ALTERED, "the manifest's snapshots do not match its "
                            "tasks, one each (altered)")
    streams = {stream_id: _stream(stream_id, entry, members[entry["file"]])
               for stream_id, entry in entries.items()}
    positions = [e.position for s in streams.values() for e in s.events]
    if len(set(positions)) != len(positions):
        raise BundleRefused(BundleRefused.ALTERED, "two events of the bundle share a log "
                            "position (altered)")
    states: dict[UUID, TaskState] = {}
    run_ids: dict[UUID, set[UUID]] = {}
    for task_id in tasks:  # manifest order: the root first
        states[task_id], run_ids[task_id] = _replay(streams[task_id])
    for task_id, task in tasks.items():
        state = states[task_id]
        _check_snapshot(task_id, state, snapshots[task_id], members)
        if task["version"] != state.version:
            raise BundleRefused(BundleRefused.ALTERED, f"the manifest has task {task_id} at "
                                f"version {task['version']}, its events end at {state.version} "
                                "(altered)")
        if task_id != root and state.parent_id not in tasks:
            raise BundleRefused(BundleRefused.ALTERED, f"task {task_id} is in the bundle but "
                                "is not a child of a task in it (altered)")
        listed = task["runs"]
        owned = {i for i, e in entries.items() if e["kind"] == "run" and UUID(e["task_id"]) ==
                 task_id}
        if (not all(_is_uuid(r) for r in listed) or {UUID(r) for r in listed} != owned
                or len(listed) != len(owned)):
            raise BundleRefused(BundleRefused.ALTERED, f"the manifest's runs of task {task_id} "
                                "do not match its run streams (altered)")
        for run_id in owned:
            if run_id not in run_ids[task_id]:
                raise BundleRefused(BundleRefused.ALTERED, f"run {run_id} is not a run of task "
                                    f"{task_id}: no JobStarted names it (altered)")
            _check_run(streams[run_id], task_id)
    git = None
    if manifest["git"] is not None:
        entry = manifest["git"]
        branches = {f"refs/heads/{s.branch.name}" for s in states.values() if s.branch}
        if not set(entry["refs"]) <= branches:
            raise BundleRefused(BundleRefused.ALTERED, "the git bundle carries a branch that is "
                                "not a bundled task's (altered)")
        git = GitBranches(entry.get("repo"), dict(entry["refs"]), members[GIT_FILE])
    order = [root, *(t for t in tasks if t != root)]
    return TaskBundle(
        task_id=root,
        streams=tuple(streams[i] for i in sorted(streams, key=lambda i: (
            entries[i]["kind"] != "task", order.index(UUID(entries[i]["task_id"])), str(i)))),
        states={task_id: states[task_id] for task_id in order},
        git=git, ipa_version=manifest["ipa_version"],
        exported_at=_when(manifest["exported_at"]), signature=signature, manifest=raw,
        sha256=_sha256(data),
    )


def _stream(stream_id: UUID, entry: dict[str, Any], content: bytes) -> BundleStream:
    """A stream's events from its file, their chain checked against the manifest."""
    what = f"{entry['kind']} {stream_id}"
    lines = content.split(b"\n")
    if lines[-1] != b"":
        raise BundleRefused(BundleRefused.ALTERED, f"{what}: its file does not end with a "
                            "whole line (altered)")
    events: list[BundleEvent] = []
    prev, position = GENESIS, 0
    for number, line in enumerate(lines[:-1], start=1):
        event = _event(what, number, line)
        if event.version != number:
            raise BundleRefused(BundleRefused.ALTERED, f"{what}: line {number} holds version "
                                f"{event.version} (events deleted, inserted or reordered)")
        if event.position <= position:
            raise BundleRefused(BundleRefused.ALTERED, f"{what} version {number}: its position "
                                "is not after the previous event's (reordered)")
        if event.prev != prev:
            raise BundleRefused(BundleRefused.ALTERED, f"{what} version {number}: the link to "
                                "the previous event is broken (inserted, deleted or reordered)")
        expected = chain_digest(stream_id, number, event.topic, prev.encode(), event.body)
        if expected.decode() != event.digest:
            raise BundleRefused(BundleRefused.ALTERED, f"{what} version {number}: its contents "
                                "do not match its digest (event edited)")
        events.append(event)
        prev, position = event.digest, event.position
    if len(events) != entry["events"] or not events or prev != entry["head"]:
        raise BundleRefused(BundleRefused.ALTERED, f"{what}: {len(events)} event(s) ending at "
                            f"digest {prev[:12]}..., the manifest says {entry['events']} ending "
                            f"at {entry['head'][:12]}... (truncated or altered)")
    return BundleStream(stream_id, entry["kind"], UUID(entry["task_id"]), tuple(events))


def _event(what: str, number: int, line: bytes) -> BundleEvent:
    try:
        fields = json.loads(line)
        event = BundleEvent(fields["version"], fields["position"], fields["topic"],
                            fields["body"].encode("utf-8"), fields["prev"], fields["digest"])
        if (set(fields) == _LINE_FIELDS and _whole(event.version) and _whole(event.position)
                and isinstance(event.topic, str) and isinstance(event.prev, str)
                and isinstance(event.digest, str)):
            return event
    except (ValueError, RecursionError, TypeError, KeyError, AttributeError):
        pass  # a line that is not JSON, a body with a lone surrogate, a field missing
    raise BundleRefused(BundleRefused.ALTERED, f"{what}: line {number} is not an event "
                        "of a bundle (altered)")


_LINE_FIELDS = frozenset({"version", "position", "topic", "body", "prev", "digest"})


def _replay(stream: BundleStream) -> tuple[TaskState, set[UUID]]:
    """The task's state folded from its events, and the runs its jobs started."""
    state: TaskState | None = None
    runs: set[UUID] = set()
    for event in _decoded(stream, task_topics()):
        if state is None and not isinstance(event, TaskCreated):
            raise BundleRefused(BundleRefused.ALTERED, f"task {stream.stream_id}: its first "
                                "event does not create it (altered)")
        try:
            state = evolve(state, event)
        except Exception as e:  # whatever a crafted event makes the fold raise
            raise BundleRefused(BundleRefused.ALTERED, f"task {stream.stream_id} version "
                                f"{event.originator_version}: cannot be replayed "
                                f"({str(e)[:200] or type(e).__name__})") from None
        if isinstance(event, JobStarted) and _is_uuid(event.run_id):
            runs.add(UUID(event.run_id))
    assert state is not None  # a stream has at least one event
    return state, runs


def _check_run(stream: BundleStream, task_id: UUID) -> None:
    events = list(_decoded(stream, run_topics()))
    first = events[0]
    if not isinstance(first, RunStarted) or first.task_id != str(task_id):
        raise BundleRefused(BundleRefused.ALTERED, f"run {stream.stream_id}: its first event "
                            f"is not the start of a run of task {task_id} (altered)")


def _decoded(stream: BundleStream, topics: Mapping[str, type[DomainEvent]]
             ) -> Iterable[DomainEvent]:
    """The stream's events decoded as this ipa's event types (upcast as on a load)."""
    transcoder = make_transcoder()
    for event in stream.events:
        where = f"{stream.kind} {stream.stream_id} version {event.version}"
        cls = topics.get(event.topic)
        if cls is None:
            raise BundleRefused(BundleRefused.ALTERED if event.topic in _all_topics() else
                                BundleRefused.TOO_NEW,
                                f"{where}: event type {event.topic[:100]!r} is not one this ipa "
                                f"({__version__}) has for a {stream.kind} stream (written by a "
                                "newer ipa, or altered)")
        try:
            state = transcoder.decode(event.body)
        except Exception as e:  # not JSON, too deep, a "_type_" it cannot take ...
            raise BundleRefused(BundleRefused.ALTERED, f"{where}: its body is not an event's "
                                f"JSON ({str(e)[:100]})") from None
        if not isinstance(state, dict):
            raise BundleRefused(BundleRefused.ALTERED, f"{where}: its body is not a JSON object")
        current = getattr(cls, "class_version", 1)
        stored = state.pop("class_version", 1)
        if not _whole(stored) or stored > current:
            raise BundleRefused(BundleRefused.TOO_NEW, f"{where}: {cls.__name__} version "
                                f"{stored!r} is newer than this ipa's ({current}): written by a "
                                "newer ipa; upgrade ipa to import it")
        try:
            while stored < current:
                getattr(cls, f"upcast_v{stored}_v{stored + 1}")(state)
                stored += 1
        except Exception as e:  # an upcaster meeting a body it cannot take
            raise BundleRefused(BundleRefused.ALTERED, f"{where}: cannot be upcast "
                                f"({str(e)[:100] or type(e).__name__})") from None
        state["originator_id"] = stream.stream_id
        state["originator_version"] = event.version
        if _SURROGATE_ESCAPE.search(event.body) and _lone_surrogate(state):
            raise BundleRefused(BundleRefused.INVALID_TEXT, f"{where}: its text holds a lone "
                                "surrogate (such as \\ud800), which ipa takes from no input: "
                                "it cannot be shown or sent as UTF-8")
        problem = _fields_problem(cls, state)
        if problem:
            raise BundleRefused(BundleRefused.ALTERED, f"{where}: {cls.__name__} {problem} "
                                "(altered)")
        decoded = object.__new__(cls)
        object.__setattr__(decoded, "__dict__", state)
        yield decoded


def _check_snapshot(task_id: UUID, state: TaskState, entry: dict[str, Any],
                    members: dict[str, bytes]) -> None:
    """The exporter's state of the task (its snapshot) must be the replay's."""
    if entry["version"] != state.version:
        raise BundleRefused(BundleRefused.ALTERED, f"the snapshot of task {task_id} is at "
                            f"version {entry['version']}, its events end at {state.version} "
                            "(altered)")
    try:
        snapshot = json.loads(members[entry["file"]])
        same = (snapshot["task_id"] == str(task_id) and snapshot["version"] == state.version
                and TaskState.from_dict(snapshot["state"]).to_dict() == state.to_dict())
    except Exception:  # whatever a malformed state makes from_dict raise
        same = False
    if not same:
        raise BundleRefused(BundleRefused.ALTERED, f"the snapshot of task {task_id} at version "
                            f"{state.version} differs from its events replayed (altered)")


# Helpers ------------------------------------------------------------------------------------


class _Shape:
    """Checks of the manifest's fields; the first one wrong is :class:`BundleRefused`."""

    def __init__(self, what: str) -> None:
        self.what = what

    def fail(self, problem: str) -> typing.NoReturn:
        raise BundleRefused(BundleRefused.ALTERED, f"{self.what} is malformed: {problem} "
                            "(altered)")

    def get(self, obj: Any, key: str, kind: type) -> Any:
        value = obj.get(key) if isinstance(obj, dict) else None
        if not isinstance(value, kind) or (kind is int and (isinstance(value, bool)
                                                            or value < 0)):
            self.fail(f"{key!r} is not {kind.__name__}")
        return value

    def uuid(self, obj: Any, key: str) -> None:
        if not _is_uuid(self.get(obj, key, str)):
            self.fail(f"{key!r} is not a UUID")

    def digest(self, obj: Any, key: str) -> None:
        if not _DIGEST.fullmatch(self.get(obj, key, str)):
            self.fail(f"{key!r} is not a digest")

    def member(self, obj: Any, pattern: re.Pattern[str], id_key: str | None) -> None:
        """``file`` (named after ``obj[id_key]``), ``size`` and ``sha256`` of a member."""
        name = self.get(obj, "file", str)
        match = pattern.fullmatch(name)
        if match is None or (id_key is not None and match.group(1) != obj[id_key]):
            self.fail(f"file {name[:100]!r}")
        self.get(obj, "size", int)
        self.digest(obj, "sha256")


def _line(event: BundleEvent) -> bytes:
    return json.dumps({"version": event.version, "position": event.position,
                       "topic": event.topic, "body": event.body.decode("utf-8"),
                       "prev": event.prev, "digest": event.digest}).encode() + b"\n"


def _described(name: str, data: bytes) -> dict[str, Any]:
    return {"file": name, "size": len(data), "sha256": _sha256(data)}


def _add(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), mtime, 0o644
    tar.addfile(info, io.BytesIO(data))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _manifest_mac(key: AuditKey, manifest: bytes) -> str:
    return key.mac(b"ipa task bundle\n" + manifest)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_uuid(text: Any) -> bool:
    try:
        return isinstance(text, str) and str(UUID(text)) == text
    except ValueError:
        return False


def _when(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise BundleRefused(BundleRefused.ALTERED, "the manifest's exported_at is not a time "
                            "(altered)") from None


@cache
def _topics(base: type[DomainEvent]) -> Mapping[str, type[DomainEvent]]:
    found: dict[str, type[DomainEvent]] = {}
    pending = list(base.__subclasses__())
    while pending:
        cls = pending.pop()
        found[get_topic(cls)] = cls
        pending.extend(cls.__subclasses__())
    return found


def _all_topics() -> set[str]:
    return set(task_topics()) | set(run_topics())


def _lone_surrogate(value: Any) -> bool:
    """Whether a string in ``value`` (nested lists and dicts too) holds a lone surrogate."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return False


def _fields_problem(cls: type, state: dict[str, Any]) -> str | None:
    """What is wrong with a decoded event's fields for its class: one missing, or of a JSON
    type its annotation does not take (``None`` when they fit)."""
    for name, hint in _hints(cls).items():
        if name not in state:
            return f"has no field {name!r}"
        if not _fits(state[name], hint):
            return f"field {name!r} is not {getattr(hint, '__name__', hint)}"
    return None


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fits(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is typing.Union or isinstance(hint, UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if hint is Any:
        return True
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # an annotation this check does not model

