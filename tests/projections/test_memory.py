"""Agent memory as a read model on pgvector: folded, merged, used, forgotten, capped, rebuilt."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import anyio
import numpy as np
import pytest

from ipa.domain import (
    CreateChildTask,
    CreateTask,
    QueueJob,
    RecordContext,
    RecordReflection,
    StartJob,
    StartTask,
    TaskState,
    decide,
    fold,
)
from ipa.eventstore import EventStore, MemoryTable
from ipa.projections import Memory, MemoryNotFound, MemorySettings, MemoryUnavailable
from ipa.projections.embedders import EmbedderError, vectors

from ..eventstore.helpers import ctx

pytestmark = pytest.mark.anyio


@pytest.fixture
async def table(store: EventStore) -> AsyncIterator[MemoryTable]:
    table = store.memory_table()
    await table.open()
    yield table
    await table.close()


async def memory_of(store: EventStore, table: MemoryTable, **settings) -> Memory:
    memory = Memory(store, table, MemorySettings(**settings))
    await memory.open()
    assert memory.problem is None
    return memory


class Task:
    """A task on a repository whose job ``a`` runs, appended to the store as it goes."""

    def __init__(self, store: EventStore, repo: str | None = "/src/app",
                 title: str = "Add a limiter", parent: uuid.UUID | None = None):
        self.store, self.id, self.step = store, uuid.uuid4(), 0
        create = (CreateTask(title, "to the login endpoint", repo=repo) if parent is None else
                  CreateChildTask(title, "to the login endpoint", str(parent), title[:8],
                                  "developer", repo=repo))
        self.commands = [create, StartTask(),
                         QueueJob("a", "developer", max_attempts=3), StartJob("a", "run-1")]
        self.state: TaskState | None = None

    async def do(self, *commands) -> None:
        for command in commands:
            self.step += 1
            version = self.state.version if self.state else 0
            events = decide(self.state, command, ctx(self.step), self.id)
            await self.store.append(self.id, events, version)
            self.state = fold(events, self.state)

    async def start(self) -> Task:
        await self.do(*self.commands)
        return self

    async def learn(self, *texts: str, summary: str = "did it") -> None:
        await self.do(RecordReflection("a", "run-1", summary, list(texts)))


async def test_a_learning_is_found_by_meaning_in_its_repository(store, table) -> None:
    task = await Task(store).start()
    await task.learn("the tests need the --no-cov flag", "the API client lives in src/net/")
    memory = await memory_of(store, table)
    await memory.catch_up()

    [best, *_] = await memory.search("how do I run the tests", ["repo:/src/app"])
    assert best["text"] == "the tests need the --no-cov flag"
    assert best["kind"] == "semantic" and best["scope"] == "repo:/src/app"
    assert best["task_id"] == str(task.id) and best["run_id"] == "run-1"
    assert await memory.search("how do I run the tests", ["repo:/elsewhere"]) == []


async def test_a_repeat_in_the_same_scope_is_merged_not_piled_up(store, table) -> None:
    first = await Task(store).start()
    await first.learn("the tests need the --no-cov flag")
    memory = await memory_of(store, table)
    await memory.catch_up()
    second = await Task(store).start()
    await second.learn("the tests need the --no-cov flag", "The tests need the --no-cov flag.")
    other = await Task(store, repo="/src/other").start()
    await other.learn("the tests need the --no-cov flag")
    await memory.catch_up()

    rows = await memory.rows(scopes=["repo:/src/app"], kind="semantic")
    [row] = rows
    assert row["seen"] == 3 and len(row["merged_ids"]) == 2
    assert row["task_id"] == str(first.id)
    assert (await memory.get(row["merged_ids"][0]))["id"] == row["id"]  # a repeat's id finds it
    assert len(await memory.rows(scopes=["repo:/src/other"], kind="semantic")) == 1


async def test_repeats_within_one_page_merge_into_the_first_of_their_scope(store, table):
    tasks = [await Task(store, repo=repo).start() for repo in ("/src/app", "/src/other",
                                                               "/src/app", "/src/other")]
    for task in tasks:
        await task.learn("the tests need the --no-cov flag", "a fact only this task learned "
                         f"about {task.id.hex[:6]} and its parser")
    memory = await memory_of(store, table)
    await memory.catch_up()  # one page: every repeat is in the batch, none in the table

    for repo, (first, _second) in (("/src/app", tasks[::2]), ("/src/other", tasks[1::2])):
        rows = await memory.rows(scopes=[f"repo:{repo}"], kind="semantic")
        [flag] = [r for r in rows if "--no-cov" in r["text"]]
        assert flag["seen"] == 2 and flag["task_id"] == str(first.id)
        assert len(rows) == 3  # the two facts of its tasks kept apart


async def test_a_run_given_memories_marks_them_used(store, table) -> None:
    task = await Task(store).start()
    await task.learn("run ruff before committing")
    memory = await memory_of(store, table)
    await memory.catch_up()
    [row] = await memory.rows(kind="semantic")
    assert row["uses"] == 0 and row["last_used_at"] is None

    await task.do(RecordContext("a", "run-1", ["task"], memories=[row["id"]]))
    await memory.catch_up()

    [used] = await memory.rows(kind="semantic")
    assert used["uses"] == 1 and used["last_used_at"] is not None


async def test_forget_and_pin_are_events_of_the_ledger(store, table) -> None:
    task = await Task(store).start()
    await task.learn("use uv, not pip", "migrations live in db/migrations")
    memory = await memory_of(store, table)
    await memory.catch_up()
    keep, drop = sorted(await memory.rows(kind="semantic"), key=lambda r: r["text"])

    await memory.pin(keep["id"], actor="user:alice")
    await memory.forget(drop["id"], actor="user:alice", reason="wrong")
    await memory.catch_up()

    assert [r["id"] for r in await memory.rows(kind="semantic")] == [keep["id"]]
    assert (await memory.get(keep["id"]))["pinned"] is True
    with pytest.raises(MemoryNotFound):
        await memory.get(drop["id"])
    with pytest.raises(MemoryNotFound):
        await memory.forget(drop["id"], actor="user:alice")
    with pytest.raises(MemoryNotFound):
        await memory.get("not-an-id")


async def test_a_scope_past_its_cap_drops_its_least_useful_as_an_event(store, table) -> None:
    task = await Task(store).start()
    memory = await memory_of(store, table, cap=3)
    await task.learn("alpha: the parser is in src/parse", "beta: docs build with mkdocs",
                     "gamma: the CI runs on Python 3.12", "delta: never edit generated.py",
                     "epsilon: the cache lives in redis")
    await memory.catch_up()
    rows = await memory.rows(scopes=["repo:/src/app"])
    assert len(rows) == 3
    log = await store.read_log(0, 1000)
    evicted = [r.event for r in log if type(r.event).__name__ == "MemoriesEvicted"]
    # Five learnings in the repository's scope (the run's episode is the task's): two leave.
    assert len(evicted) == 1 and evicted[0].cap == 3 and len(evicted[0].memory_ids) == 2
    assert {r["id"] for r in rows}.isdisjoint(evicted[0].memory_ids)


async def test_rebuild_gives_the_same_memories(store, table) -> None:
    task = await Task(store).start()
    await task.learn("the tests need the --no-cov flag", "the API client lives in src/net/")
    second = await Task(store).start()
    await second.learn("the tests need the --no-cov flag")
    memory = await memory_of(store, table)
    await memory.catch_up()
    [row] = [r for r in await memory.rows(kind="semantic") if "API" in r["text"]]
    await memory.forget(row["id"], actor="user:alice")
    await memory.catch_up()
    before = await memory.rows(limit=1000)

    position = await memory.rebuild()

    assert position == await store.head_position()
    after = await memory.rows(limit=1000)
    drop = ("score",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in after] == \
        [{k: v for k, v in r.items() if k not in drop} for r in before]


async def test_text_postgres_cannot_hold_is_kept_readable(store, table) -> None:
    task = await Task(store).start()
    await task.learn("a NUL \x00 here", "a lone \udc80 surrogate")
    memory = await memory_of(store, table)
    await memory.catch_up()
    texts = sorted(r["text"] for r in await memory.rows(kind="semantic"))
    assert texts == ["a NUL \ufffd here", "a lone \ufffd surrogate"]


class Wrong:
    name, dimensions = "wrong", 8

    def embed(self, texts):
        return np.zeros((len(texts), 5))


async def test_an_embedder_of_the_wrong_size_turns_memory_off_with_a_reason(store, table):
    with pytest.raises(EmbedderError, match="declares 8 dimensions"):
        vectors(Wrong(), ["x"])
    task = await Task(store).start()
    await task.learn("something")
    memory = Memory(store, table, embedder=Wrong())
    await memory.open()
    await memory.catch_up()
    assert "declares 8 dimensions" in (memory.problem or "")
    with pytest.raises(MemoryUnavailable):
        await memory.search("x", ["repo:/src/app"])
    recalled = await memory.recall(task.state, task.state.jobs["a"])
    assert recalled.memories == [] and "declares 8 dimensions" in recalled.problem


async def test_another_embedder_needs_a_reembed_and_then_finds_the_same(store, table) -> None:
    task = await Task(store).start()
    await task.learn("the tests need the --no-cov flag")
    memory = await memory_of(store, table)
    await memory.catch_up()

    other = Memory(store, table, MemorySettings(embedder="wordllama:64"))
    await other.open()
    assert "ipa memory reembed" in (other.problem or "")
    assert await other.reembed() == 2  # the learning and the run's episode
    assert other.problem is None
    [best, *_] = await other.search("running tests", ["repo:/src/app"])
    assert best["text"] == "the tests need the --no-cov flag"


async def test_decay_halves_importance_per_half_life_and_pinning_stops_it(store, table):
    memory = Memory(store, table, MemorySettings(half_life_days=10))
    task = await Task(store).start()
    await task.learn("x")
    await memory.open()
    await memory.catch_up()
    [row] = await memory.rows(kind="semantic")
    later = row["last_seen_at"] + timedelta(days=20)
    assert memory.importance(row, later) == pytest.approx(row["importance"] / 4, rel=1e-4)
    assert memory.importance({**row, "pinned": True}, later) == 1.0


async def test_a_projects_children_share_what_each_of_them_did(store, table) -> None:
    project = uuid.uuid4()
    first = await Task(store, repo=None, title="Build the parser", parent=project).start()
    await first.learn(summary="Wrote the parser in src/parse.py with a recursive descent.")
    sibling = await Task(store, repo=None, title="Build the printer", parent=project).start()
    memory = await memory_of(store, table)
    await memory.catch_up()

    recalled = await memory.recall(sibling.state, sibling.state.jobs["a"])

    assert recalled.problem is None
    [episode] = [m for m in recalled.memories if m["kind"] == "episodic"]
    assert episode["scope"] == f"project:{project}" and "recursive descent" in episode["text"]
    stranger = await Task(store, repo=None, title="Build the printer").start()
    assert (await memory.recall(stranger.state, stranger.state.jobs["a"])).memories == []


async def test_two_processes_folding_together_apply_each_page_once(store, table) -> None:
    tasks = [await Task(store, title=f"Task {i}").start() for i in range(6)]
    for i, task in enumerate(tasks):
        await task.learn(f"lesson {i}: module m{i} needs the flag --f{i}",
                         f"fact {i}: service s{i} listens on port 80{i}")
    other_table = store.memory_table()  # the other process's own connections
    await other_table.open()
    try:
        one = await memory_of(store, table, cap=8)
        two = await memory_of(store, other_table, cap=8)
        async with anyio.create_task_group() as tg:
            tg.start_soon(one.catch_up)
            tg.start_soon(two.catch_up)
    finally:
        await other_table.close()

    rows = await one.rows(scopes=["repo:/src/app"], limit=100)
    assert len(rows) == 8 and all(r["seen"] == 1 for r in rows)
    evicted = [r.event for r in await store.read_log(0, 1000)
               if type(r.event).__name__ == "MemoriesEvicted"]
    assert sum(len(e.memory_ids) for e in evicted) == 4  # 12 lessons, a cap of 8


async def test_a_pinned_memory_goes_to_every_run_of_its_scopes(store, table) -> None:
    task = await Task(store).start()
    await task.learn(*[f"note {i}: the tests of module m{i} need the fixture f{i}"
                       for i in range(12)], "zebra crossings are painted white")
    memory = await memory_of(store, table)
    await memory.catch_up()
    [far] = [r for r in await memory.rows(kind="semantic", limit=100) if "zebra" in r["text"]]
    recalled = await memory.recall(task.state, task.state.jobs["a"])
    assert far["id"] not in [m["id"] for m in recalled.memories]  # too far from the job

    await memory.pin(far["id"], actor="user:ann")
    await memory.catch_up()
    recalled = await memory.recall(task.state, task.state.jobs["a"])

    assert recalled.memories[0]["id"] == far["id"]
    kinds = [m["kind"] for m in recalled.memories[1:]]
    assert kinds.count("semantic") == 6 and kinds.count("episodic") == 1  # quotas as before


async def test_a_large_scope_is_searched_on_its_familys_own_index(store, table,
                                                                  monkeypatch) -> None:
    """Past ``EXACT_UNDER`` rows a scope is walked by HNSW: a repository's on the index of
    repositories' memories only, so other scopes' rows nearer the query do not crowd it out."""
    from ipa.eventstore import memories

    monkeypatch.setattr(memories, "EXACT_UNDER", 1)  # every scope counts as large
    mine, other = await Task(store).start(), await Task(store, repo="/src/other").start()
    await mine.learn("the tests need the --no-cov flag", summary="ran the tests with --no-cov")
    await other.learn("the tests need the --no-cov flag here too", "run the tests with tox")
    memory = await memory_of(store, table)
    await memory.catch_up()

    found = await memory.search("how do I run the tests", ["repo:/src/app"])
    assert [m["text"] for m in found] == ["the tests need the --no-cov flag"]
    everywhere = await memory.search("how do I run the tests", None, limit=10)
    assert {m["scope"] for m in everywhere} == {
        "repo:/src/app", "repo:/src/other", f"task:{mine.id}", f"task:{other.id}"}
    async with table._conn() as conn:
        await conn.execute("SET enable_seqscan = off")  # a tiny table: show the index's plan
        plan = await (await conn.execute(
            "EXPLAIN SELECT id FROM ipa_memories WHERE scope LIKE 'repo:%%' AND "
            "(scope || '') = ANY(%s) ORDER BY embedding <=> %s LIMIT 10",
            (["repo:/src/app"], np.ones(memory.embedder.dimensions, dtype=np.float32)),
        )).fetchall()
    assert "ipa_memories_embedding_repo" in " ".join(str(r) for r in plan)


async def test_a_table_of_one_index_over_every_scope_gets_an_index_per_family(store,
                                                                              table) -> None:
    task = await Task(store).start()
    await task.learn("the tests need the --no-cov flag")
    memory = await memory_of(store, table)
    await memory.catch_up()
    async with table._conn() as conn:  # the table as memory made it before
        for family in ("repo", "project", "task"):
            await conn.execute(f"DROP INDEX ipa_memories_embedding_{family}")
        await conn.execute("CREATE INDEX ipa_memories_embedding ON ipa_memories "
                           "USING hnsw (embedding vector_cosine_ops)")
    await memory.close()

    memory = await memory_of(store, store.memory_table())
    async with memory.table._conn() as conn:
        names = {r["indexname"] for r in await (await conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'ipa_memories'")).fetchall()}
    assert {"ipa_memories_embedding_repo", "ipa_memories_embedding_project",
            "ipa_memories_embedding_task"} <= names
    assert "ipa_memories_embedding" not in names
    [best] = await memory.search("how do I run the tests", ["repo:/src/app"])
    assert best["text"] == "the tests need the --no-cov flag"
    await memory.close()


async def test_indexes_of_another_graph_are_built_again_when_memory_opens(store, table) -> None:
    """A table whose HNSW indexes were built otherwise than ``HNSW`` says gets them built
    again at open, by one of two processes opening it at once; search finds the same."""
    from ipa.eventstore.memories import HNSW

    task = await Task(store).start()
    await task.learn("the tests need the --no-cov flag", "the API client lives in src/net/")
    memory = await memory_of(store, table)
    await memory.catch_up()
    before = await memory.search("how do I run the tests", ["repo:/src/app"])
    async with table._conn() as conn:  # the indexes as memory built them before
        for family in ("repo", "project", "task"):
            await conn.execute(f"DROP INDEX ipa_memories_embedding_{family}")
            await conn.execute(f"CREATE INDEX ipa_memories_embedding_{family} ON ipa_memories "
                               "USING hnsw (embedding vector_cosine_ops) WHERE scope LIKE "
                               f"'{family}:%%'")
    await memory.close()

    opened: list[Memory] = []

    async def open_one() -> None:
        opened.append(await memory_of(store, store.memory_table()))

    async with anyio.create_task_group() as group:
        group.start_soon(open_one)
        group.start_soon(open_one)
    async with opened[0].table._conn() as conn:
        rows = await (await conn.execute(
            "SELECT c.relname, c.reloptions FROM pg_index i JOIN pg_class c ON "
            "c.oid = i.indexrelid WHERE i.indrelid = 'ipa_memories'::regclass AND "
            "c.relname LIKE 'ipa_memories_embedding%%'")).fetchall()
    assert {r["relname"]: set(r["reloptions"] or ()) for r in rows} == {
        f"ipa_memories_embedding_{family}": {f"{k}={v}" for k, v in HNSW.items()}
        for family in ("repo", "project", "task")}
    for other in opened:
        assert [m["id"] for m in await other.search("how do I run the tests",
                                                    ["repo:/src/app"])] == \
            [m["id"] for m in before]
        await other.close()


async def test_recall_with_the_database_gone_is_a_problem_not_an_error(store, table) -> None:
    task = await Task(store).start()
    await task.learn("the tests need the --no-cov flag")
    memory = await memory_of(store, table)
    await memory.catch_up()
    await table.close()  # both reads (the search and the pinned memories) now fail
    recalled = await memory.recall(task.state, task.state.jobs["a"])
    assert recalled.memories == [] and recalled.problem
