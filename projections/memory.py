"""Agent memory as a read model: memories folded from the log, found again by meaning.

:class:`Memory` folds the store's global log into the memory table (``eventstore/memories.py``)
the way the task list folds tasks: ``MemoryRecorded`` (a task event, ``domain/memory.py``) adds
a row with its text's embedding, or, when a memory of the same scope says the same thing
(cosine similarity at least ``duplicate_similarity``), counts as that memory seen again: the
row gains the repeat's id and at least its importance. ``ContextPrepared`` marks the memories a
run was given as used. The memory ledger's ``MemoryPinned``, ``MemoryForgotten`` and
``MemoriesEvicted`` pin and remove rows. A page of the log is one transaction with the model's
position, so a crash applies nothing twice; :meth:`Memory.rebuild` replays the log from zero
beside the table and swaps the result in.

**Usefulness.** A memory's importance halves every ``half_life_days`` it is neither used nor
seen again (a pinned one counts as 1 and never decays). :meth:`Memory.recall` ranks the
candidates nearest a job's text by ``0.6 × similarity + 0.25 × decayed importance + 0.15 ×
recency`` and keeps at most ``quotas[kind]`` of each kind, after the scopes' pinned memories
(at most :data:`PINNED_MAX`), which every run gets. When a scope holds more than
``cap`` memories, the least useful leave it, recorded as ``MemoriesEvicted``.

**Without memory the agents still run.** An embedder that does not load, vectors of another
embedder in the table (``ipa memory reembed`` re-embeds them) or a database error make
:meth:`Memory.recall` return no memories and the problem, which the run records.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import anyio
import numpy as np
from anyio.abc import TaskStatus

from ipa.domain import (
    MEMORY_LEDGER,
    ContextPrepared,
    InvalidCommand,
    Job,
    MemoriesEvicted,
    MemoryEvent,
    MemoryForgotten,
    MemoryPinned,
    MemoryRecorded,
    TaskState,
    scopes_of,
)
from ipa.eventstore import (
    EventStore,
    PositionMoved,
    RecordedEvent,
    StoreError,
    StoreUnavailable,
)
from ipa.eventstore.memories import MODEL, MemoryTable, Page, Recorded

from .embedders import Embedder, EmbedderError, load, vectors
from .follow import TableModel, follow

log = logging.getLogger(__name__)

_PAGE = 1000
PINNED_MAX = 5
"""Pinned memories a run is given at most (before the others)."""
RECALL_EF_SEARCH = 160
"""The HNSW candidate list of a run's recall: longer than a search's (``EF_SEARCH`` of
``eventstore/memories.py``, 120, for people waiting on it), since a run recalls once and has
20 ms for it: more of the nearest among its candidates (``bench/memory.py``, 100,000 memories:
recall@10 0.94 at 120, 0.97 at 200, whose p99 came within 1 ms of 20 ms)."""
Progress = Callable[[int, int], None]


class MemoryNotFound(LookupError):
    """No memory has this id (it was never recorded, or was forgotten or evicted)."""

    def __init__(self, memory_id: str) -> None:
        super().__init__(f"no memory {memory_id!r}: never recorded, or forgotten since")
        self.memory_id = memory_id


class MemoryUnavailable(Exception):
    """Memory cannot be searched now (the message says why and what to do)."""


@dataclass(frozen=True)
class MemorySettings:
    """How memories are kept and found (``ipa serve``: :meth:`from_environment`)."""

    cap: int = 20_000
    """Memories a scope keeps at most (``IPA_MEMORY_CAP``); the least useful leave first."""
    half_life_days: float = 30.0
    """Days without use that halve a memory's importance (``IPA_MEMORY_HALF_LIFE_DAYS``)."""
    duplicate_similarity: float = 0.92
    """A new memory this similar to one of its scope is that memory seen again."""
    min_similarity: float = -1.0
    """Candidates less similar than this to a job's text are not recalled (by default every
    candidate may be: the scope already says it is about the same work, and the ranking puts
    the most similar first)."""
    recall_limit: int = 10
    quotas: Mapping[str, int] = field(
        default_factory=lambda: {"semantic": 6, "procedural": 3, "episodic": 3})
    context_share: float = 0.15
    """The share of an agent's context budget memories may take."""
    embedder: str | None = None
    """``IPA_EMBEDDER`` (``projections/embedders.py``); ``None``: the environment's."""

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> MemorySettings:
        """Settings from ``IPA_MEMORY_CAP`` and ``IPA_MEMORY_HALF_LIFE_DAYS``; a value that
        is not a positive number is a ``ValueError`` naming it."""

        def positive(name: str, default: float, kind: type = float) -> Any:
            text = environ.get(name)
            if text is None:
                return default
            try:
                value = kind(text)
            except ValueError:
                value = 0
            if not value > 0:
                raise ValueError(f"{name}={text!r}: expected a number > 0")
            return value

        return cls(cap=positive("IPA_MEMORY_CAP", cls.cap, int),
                   half_life_days=positive("IPA_MEMORY_HALF_LIFE_DAYS", cls.half_life_days),
                   embedder=environ.get("IPA_EMBEDDER"))


@dataclass(frozen=True)
class Recalled:
    """What :meth:`Memory.recall` found for a run: memories best first (each a row with its
    ``score``), or why there are none (``problem``)."""

    memories: list[dict[str, Any]]
    problem: str | None = None
    seconds: float = 0.0


def query_text(state: TaskState, job: Job) -> str:
    """What a job's memories are looked up by: the task, its phase and the job's agent."""
    return f"{state.title}\n{state.description[:2000]}\n{job.phase} {job.agent}"


class Memory(TableModel):
    """The memory read model, and what people do with it (see the module doc)."""

    name = "memory"
    off_note = " (agents run without it)"

    def __init__(self, store: EventStore, table: MemoryTable,
                 settings: MemorySettings | None = None, *, model: str = MODEL,
                 embedder: Embedder | None = None) -> None:
        super().__init__(store, table, model)
        self.settings = settings or MemorySettings()
        self._embedder = embedder

    @property
    def table(self) -> MemoryTable:
        return self._table

    @property
    def embedder(self) -> Embedder | None:
        return self._embedder

    async def open(self) -> None:
        """Open the table, load the embedder and check the table's vectors are its own; a
        problem turns memory off (:attr:`problem`) instead of raising."""
        try:
            await self._table.open()
        except StoreError as e:
            self._off(str(e))
            return
        if self._embedder is None:
            try:
                self._embedder = await anyio.to_thread.run_sync(load, self.settings.embedder)
            except EmbedderError as e:
                self._off(f"the embedder did not load: {e}")
                return
        try:
            state = await self._table.state(self.model)
            if state is None:
                await self._table.create(self.model, self._embedder.name,
                                         self._embedder.dimensions)
                return
        except StoreError as e:
            self._off(str(e))
            return
        position, name, dimensions = state
        if (name, dimensions) != (self._embedder.name, self._embedder.dimensions):
            self._off(f"the memories were embedded by {name} ({dimensions} dimensions), not "
                      f"by {self._embedder.name} ({self._embedder.dimensions}): run "
                      "`ipa memory reembed` to use the new embedder")
            return
        try:
            await self._table.upgrade_index(self.model)
        except StoreError as e:
            self._off(str(e))
            return
        self._position = position

    # -- folding ----------------------------------------------------------------------------

    async def catch_up(self, progress: Progress | None = None, *, strict: bool = False) -> int:
        """Apply every event after the saved position; return the new position.
        ``strict`` (a rebuild): an embedder failure raises, and no eviction is decided."""
        if self.problem is not None:
            return self._position
        head = await self._store.head_position() if progress else 0
        while True:
            page = await self._store.read_log(self._position, _PAGE)
            if not page:
                return self._position
            try:
                scopes = await self._apply(page)
            except PositionMoved:  # another process applied it: follow
                state = await self._table.state(self.model)
                self._position = state[0] if state else 0
                self._moved()
                continue
            except EmbedderError as e:
                if strict:
                    raise
                self._off(str(e))
                return self._position
            except StoreUnavailable:
                raise  # the database went away: again from the same page later
            except StoreError as e:
                if strict:
                    raise
                # A page PostgreSQL refuses would be refused again: memory stops there, said.
                self._off(f"memory stopped after log position {self._position}: {e}")
                return self._position
            self._position = page[-1].position
            self._moved()
            if scopes and not strict:
                await self._evict(scopes)
            if progress:
                progress(self._position, max(head, self._position))

    async def _apply(self, page: list[RecordedEvent]) -> set[str]:
        assert self._embedder is not None
        recorded = [r for r in page if isinstance(r.event, MemoryRecorded)]
        texts = [r.event.text for r in recorded]  # type: ignore[union-attr]
        found = await anyio.to_thread.run_sync(vectors, self._embedder, texts)
        vector_of = {id(r): found[i] for i, r in enumerate(recorded)}
        async with self._table.page(self.model, self._position) as writes:
            batch: list[Recorded] = []
            for r in page:
                event = r.event
                if isinstance(event, MemoryRecorded):
                    batch.append(Recorded(
                        event.memory_id, event.scope, event.kind, event.text, event.importance,
                        event.timestamp, str(r.stream_id), event.job_id, event.run_id,
                        r.position, vector_of[id(r)]))
                    continue
                if not isinstance(event, ContextPrepared | MemoryEvent):
                    continue
                await self._record(writes, batch)
                batch = []
                if isinstance(event, ContextPrepared):
                    if event.memories:
                        await writes.used(event.memories, event.timestamp)
                elif isinstance(event, MemoryPinned):
                    await writes.pin(event.memory_id, event.pinned)
                elif isinstance(event, MemoryForgotten):
                    await writes.delete([event.memory_id])
                elif isinstance(event, MemoriesEvicted):
                    await writes.delete(event.memory_ids)
            await self._record(writes, batch)
            writes.position = page[-1].position
        return writes.scopes

    async def _record(self, writes: Page, batch: list[Recorded]) -> None:
        """Insert ``batch``, each memory that repeats one of its scope (stored, or earlier in
        the batch) merged into that one instead."""
        if not batch:
            return
        stored = await writes.duplicates(batch)
        threshold = self.settings.duplicate_similarity
        new: list[Recorded] = []
        merges: list[tuple[str, Recorded]] = []
        # The batch's own repeats (not in the table yet): each memory against the earlier ones
        # kept, of its scope, from one matrix of the batch's similarities.
        matrix = np.stack([m.vector for m in batch])
        similarities = matrix @ matrix.T
        scope_numbers: dict[str, int] = {}
        scopes = np.array([scope_numbers.setdefault(m.scope, len(scope_numbers)) for m in batch])
        kept = np.zeros(len(batch), dtype=bool)
        for i, (memory, nearest) in enumerate(zip(batch, stored, strict=True)):
            best = nearest if nearest is not None and nearest[1] >= threshold else None
            if i:
                earlier = np.where(kept[:i] & (scopes[:i] == scopes[i]), similarities[i, :i],
                                   -np.inf)
                j = int(np.argmax(earlier))
                if earlier[j] >= threshold and (best is None or earlier[j] > best[1]):
                    best = (batch[j].id, float(earlier[j]))
            if best is None:
                new.append(memory)
                kept[i] = True
            else:
                merges.append((best[0], memory))
        await writes.insert(new)
        for into, memory in merges:
            await writes.merge(into, memory, bump=0.05)

    async def _evict(self, scopes: set[str]) -> None:
        """Record ``MemoriesEvicted`` for each scope past the cap (its least useful)."""
        cap = self.settings.cap
        try:
            counts = await self._table.counts(self.model, sorted(scopes))
            for scope, count in sorted(counts.items()):
                if count <= cap:
                    continue
                ids = await self._table.least_useful(self.model, scope, count - cap,
                                                     self.settings.half_life_days, _now())
                if ids:
                    await self._ledger(MemoriesEvicted, "ipa", scope=scope, cap=cap,
                                       memory_ids=ids)
        except StoreError as e:
            log.warning("memory: the scope cap was not applied (again after the next "
                        "memory): %s", e)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Catch up, then follow the live tail until cancelled."""
        await self._catch_up_logged()
        task_status.started()
        await follow(self._store, "memory", lambda: self._position, self.catch_up)

    async def _catch_up_logged(self) -> None:
        try:
            await self.catch_up()
        except StoreError as e:
            log.warning("memory: %s; catching up with the next event", e)


    # -- finding ----------------------------------------------------------------------------

    def _ready(self) -> Embedder:
        if self.problem is not None:
            raise MemoryUnavailable(self.problem)
        assert self._embedder is not None
        return self._embedder

    async def search(self, query: str, scopes: Sequence[str] | None, *, limit: int = 10,
                     candidates: int = 40, exact: bool = False,
                     ef_search: int | None = None) -> list[dict[str, Any]]:
        """The ``limit`` memories of ``scopes`` (``None``: of every scope) most useful for
        ``query``, best first, each with ``similarity`` and ``score`` (see the module doc);
        ``ef_search``: the index's candidate list, when not the store's default."""
        embedder = self._ready()
        if not query.strip():
            raise InvalidCommand("the query is empty: say what to look for")
        vector = vectors(embedder, [query])[0]  # one short text: well under a millisecond
        rows = await self._table.nearest(self.model, vector, scopes, max(limit, candidates),
                                         exact=exact, ef_search=ef_search)
        now = _now()
        for row in rows:
            row["score"] = self.score(row, now)
        rows.sort(key=lambda r: -r["score"])
        return rows[:limit]

    def score(self, row: Mapping[str, Any], now: datetime) -> float:
        similarity = float(row.get("similarity", 0.0))
        return round(0.6 * similarity + 0.25 * self.importance(row, now)
                     + 0.15 * self._halved(now - row["last_seen_at"]), 6)

    def importance(self, row: Mapping[str, Any], now: datetime) -> float:
        """A memory's importance now: halved per half-life without use; 1 when pinned."""
        if row["pinned"]:
            return 1.0
        last = max(row["last_seen_at"], row["last_used_at"] or row["last_seen_at"])
        return float(row["importance"]) * self._halved(now - last)

    def _halved(self, age: Any) -> float:
        days = max(0.0, age.total_seconds() / 86400.0)
        return math.pow(0.5, days / self.settings.half_life_days)

    async def recall(self, state: TaskState, job: Job) -> Recalled:
        """The memories a run of ``job`` should start from (see the module doc); never
        raises: a problem is returned instead, and the run goes on without memories."""
        started = time.perf_counter()
        rows: list[dict[str, Any]] = []
        pinned: list[dict[str, Any]] = []
        problem = None

        async def read_pinned() -> None:
            pinned.extend(await self._pinned(state))

        # The scopes' pinned memories are read meanwhile, on another connection: one round
        # trip less to wait for.
        async with anyio.create_task_group() as tg:
            tg.start_soon(read_pinned)
            try:
                rows = await self.search(query_text(state, job), scopes_of(state),
                                         limit=4 * self.settings.recall_limit,
                                         ef_search=RECALL_EF_SEARCH)
            except (MemoryUnavailable, EmbedderError, StoreError) as e:
                problem = str(e)
                tg.cancel_scope.cancel()
        if problem is not None:
            return Recalled([], problem, time.perf_counter() - started)
        quotas = dict(self.settings.quotas)
        # A pinned memory of the task's scopes goes to every run, however far its meaning.
        chosen = [row for row in rows if row["pinned"]]
        seen = {row["id"] for row in chosen}
        chosen = sorted([*chosen, *(row for row in pinned if row["id"] not in seen)],
                        key=lambda r: -r["score"])[:PINNED_MAX]
        for row in rows:
            if row["pinned"]:
                continue
            if row["similarity"] < self.settings.min_similarity:
                continue
            if quotas.get(row["kind"], 0) <= 0:
                continue
            quotas[row["kind"]] -= 1
            chosen.append(row)
            if len(chosen) >= self.settings.recall_limit:
                break
        return Recalled(chosen, None, time.perf_counter() - started)

    async def _pinned(self, state: TaskState) -> list[dict[str, Any]]:
        try:
            rows = await self._table.rows(self.model, scopes=scopes_of(state), pinned=True,
                                          limit=PINNED_MAX)
        except StoreError:
            return []
        now = _now()
        return [{**row, "similarity": 0.0, "score": self.score(row, now)} for row in rows]

    async def get(self, memory_id: str) -> dict[str, Any]:
        """The memory ``memory_id`` (or the one it was merged into); :class:`MemoryNotFound`."""
        _memory_id(memory_id)
        row = await self._table.get(self.model, memory_id)
        if row is None:
            raise MemoryNotFound(memory_id)
        row["score"] = self.score(row, _now())
        return row

    async def rows(self, *, scopes: Sequence[str] | None = None, ids: Sequence[str] | None = None,
                   kind: str | None = None, after: str = "",
                   limit: int = 100) -> list[dict[str, Any]]:
        """Memories by id, of ``scopes``/``ids``/``kind`` when given, each with its ``score``
        without a query (its decayed importance and recency)."""
        rows = await self._table.rows(self.model, scopes=scopes, ids=ids, kind=kind,
                                      after=after, limit=limit)
        now = _now()
        for row in rows:
            row["score"] = self.score(row, now)
        return rows

    # -- what people do ---------------------------------------------------------------------

    async def forget(self, memory_id: str, *, actor: str, reason: str = "") -> int:
        """Forget a memory (an event in the ledger); return the event's position."""
        row = await self.get(memory_id)
        return await self._ledger(MemoryForgotten, actor, memory_id=row["id"], reason=reason)

    async def pin(self, memory_id: str, *, actor: str, pinned: bool = True) -> int:
        row = await self.get(memory_id)
        return await self._ledger(MemoryPinned, actor, memory_id=row["id"], pinned=pinned)

    async def _ledger(self, event_type: type[MemoryEvent], actor: str, **fields: Any) -> int:
        """Append one event to the memory ledger (again on a concurrent append)."""
        return await self._store.append_next(MEMORY_LEDGER, lambda version: event_type(
            originator_id=MEMORY_LEDGER, originator_version=version + 1, timestamp=_now(),
            actor=actor, correlation_id="", causation_id=None, **fields), what="the memory ledger")

    # -- rebuilding -------------------------------------------------------------------------

    async def rebuild(self, progress: Progress | None = None) -> int:
        """Replay the whole log into a new table and swap it in; return the position."""
        embedder = self._embedder
        if embedder is None:
            embedder = await anyio.to_thread.run_sync(load, self.settings.embedder)
        staging = Memory(self._store, self._table, self.settings, model=f"{self.model}~rebuild",
                         embedder=embedder)
        await self._table.create(staging.model, embedder.name, embedder.dimensions)
        try:
            position = await staging.catch_up(progress, strict=True)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._table.drop(staging.model)
            raise
        await self._table.swap(self.model, staging.model)
        self._embedder, self.problem, self._position = embedder, None, position
        return position

    async def reembed(self, progress: Progress | None = None) -> int:
        """Embed every memory again with the configured embedder (a new one: after
        ``IPA_EMBEDDER`` changed) and swap the table in; return how many were embedded."""
        embedder = await anyio.to_thread.run_sync(load, self.settings.embedder)
        state = await self._table.state(self.model)
        if state is None:
            await self._table.create(self.model, embedder.name, embedder.dimensions)
            return 0
        staging = f"{self.model}~reembed"
        await self._table.create(staging, embedder.name, embedder.dimensions, index=False)
        done, after, total = 0, "", await self._table.count(self.model)
        try:
            while True:
                rows = await self._table.all_texts(self.model, after=after)
                if not rows:
                    break
                found = await anyio.to_thread.run_sync(vectors, embedder, [t for _, t in rows])
                await self._table.copy_rows(self.model, staging,
                                            {i: found[n] for n, (i, _) in enumerate(rows)})
                done += len(rows)
                after = rows[-1][0]
                if progress:
                    progress(done, max(total, done))
            await self._table.add_index(staging)
            await self._table.set_position(staging, state[0])
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._table.drop(staging)
            raise
        await self._table.swap(self.model, staging)
        self._embedder, self.problem, self._position = embedder, None, state[0]
        return done


def _memory_id(value: str) -> str:
    try:
        return str(UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise MemoryNotFound(value) from None


def _now() -> datetime:
    return datetime.now(UTC)
