"""The central task list: kept from the log with its position, rebuildable to the same rows."""

from __future__ import annotations

import uuid

import anyio
import psycopg
import pytest

from ipa.domain import (
    Archive,
    Cancel,
    CloneTask,
    CompleteJob,
    CreateChildTask,
    CreateTask,
    ForkTask,
    QueueJob,
    RecordContext,
    RecordReflection,
    RecordUsage,
    RecordVerification,
    Resume,
    StartJob,
    StartTask,
    UpdateSpec,
    decide,
    fold,
)
from ipa.eventstore import CorruptEvent, EventStore
from ipa.projections import TaskList, summary

from ..eventstore.helpers import ctx, task_history

pytestmark = pytest.mark.anyio


async def populate(store: EventStore, n_tasks: int = 5, n_events: int = 7) -> dict:
    histories = dict(task_history(n_events) for _ in range(n_tasks))
    for task_id, events in histories.items():
        await store.append(task_id, events, 0)
    return histories


async def test_catch_up_gives_one_row_per_task_summarising_its_state(store: EventStore) -> None:
    histories = await populate(store)
    task_list = TaskList(store)

    position = await task_list.catch_up()

    assert position == await store.head_position()
    rows = {row["id"]: row for row in await task_list.rows()}
    assert set(rows) == {str(task_id) for task_id in histories}
    for task_id, events in histories.items():
        state = fold(events)
        row = rows[str(task_id)]
        assert {k: row[k] for k in summary(state)} == summary(state)
        assert row["status"] == "paused" and row["version"] == 7


async def test_position_is_saved_with_rows_so_a_new_runner_resumes_after_it(
    store: EventStore,
) -> None:
    histories = await populate(store, n_tasks=2)
    await TaskList(store).catch_up()
    assert await store.read_model_position("task_list") == 14
    task_id, events = next(iter(histories.items()))
    state = fold(events)
    await store.append(task_id, decide(state, Resume(), ctx(50), task_id), state.version)

    again = TaskList(store)
    await again.catch_up()

    row = await again.get(task_id)
    assert row is not None and row["version"] == 8 and row["status"] == "running"


async def test_rebuild_from_zero_gives_the_same_rows(store: EventStore) -> None:
    await populate(store, n_tasks=8)
    task_list = TaskList(store)
    await task_list.catch_up()
    before = await task_list.rows()

    position = await TaskList(store).rebuild()

    assert position == await store.head_position()
    assert await task_list.rows() == before


async def test_running_list_follows_new_events_live(store: EventStore) -> None:
    task_list = TaskList(store)
    async with anyio.create_task_group() as tg:
        await tg.start(task_list.run)
        histories = await populate(store, n_tasks=3, n_events=4)
        with anyio.fail_after(10):
            await task_list.wait_for(await store.head_position())
        tg.cancel_scope.cancel()

    assert {row["id"] for row in await task_list.rows()} == {str(t) for t in histories}


async def test_an_event_it_cannot_fold_stops_only_that_tasks_row(
    database, store: EventStore
) -> None:
    histories = await populate(store, n_tasks=2, n_events=5)
    broken, healthy = histories
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        conn.execute("UPDATE events SET topic = 'ipa.domain.events:TaskVanished' "
                     "WHERE originator_id = %s AND originator_version = 3", (broken,))

    await TaskList(store).catch_up()

    rows = {row["id"]: row for row in await TaskList(store).rows()}
    assert rows[str(broken)]["version"] == 2
    assert "version 3: unknown event type 'TaskVanished'" in rows[str(broken)]["error"]
    assert (rows[str(healthy)]["version"], rows[str(healthy)]["error"]) == (5, None)


async def test_a_failed_rebuild_leaves_the_list_as_it_was(database, store: EventStore) -> None:
    histories = await populate(store, n_tasks=2, n_events=5)
    task_list = TaskList(store)
    await task_list.catch_up()
    before = await task_list.rows()
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        conn.execute("DELETE FROM events WHERE originator_id = %s AND originator_version = 3",
                     (next(iter(histories)),))

    with pytest.raises(CorruptEvent, match="version 4: corrupt event: cannot be replayed"):
        await task_list.rebuild()

    assert await task_list.rows() == before
    assert await store.read_model_rows("task_list~rebuild", [str(t) for t in histories]) == {}


def saved_columns(rows: list[dict]) -> list[dict]:
    return sorted(({k: v for k, v in row.items() if k != "state"} for row in rows),
                  key=lambda row: row["id"])


async def test_columns_in_memory_match_the_saved_rows_and_page_by_task_id(
    store: EventStore,
) -> None:
    histories = await populate(store, n_tasks=7)
    task_list = TaskList(store)
    assert task_list.page() == []  # nothing before the first catch-up
    await task_list.catch_up()

    columns = saved_columns(await task_list.rows())
    assert task_list.page(limit=100) == columns
    assert task_list.page(after=columns[2]["id"], limit=3) == columns[3:6]
    assert task_list.count() == 7 and task_list.statuses() == {"paused": 7}

    # Another runner (here a rebuild, then new events it applies) moves the saved list on:
    # the next catch-up of this runner reloads what it missed.
    other = TaskList(store)
    await other.rebuild()
    task_id, events = next(iter(histories.items()))
    state = fold(events)
    await store.append(task_id, decide(state, Resume(), ctx(50), task_id), state.version)
    await other.catch_up()
    await task_list.catch_up()

    assert task_list.page(limit=100) == saved_columns(await task_list.rows())
    assert task_list.statuses() == {"paused": 6, "running": 1}


async def test_nul_and_surrogates_in_task_text_are_listed_as_given_after_restart_and_rebuild(
    store: EventStore,
) -> None:
    task_id = uuid.uuid4()
    events = list(decide(None, CreateTask(title="a\x00b", description="d"), ctx(), task_id))
    state = fold(events)
    events += decide(state, UpdateSpec(description="spec \x00 with \ud800 in it"), ctx(1), task_id)
    await store.append(task_id, events, 0)
    task_list = TaskList(store)

    await task_list.catch_up()
    restarted = TaskList(store)
    await restarted.catch_up()
    await restarted.rebuild()

    for runner in (task_list, restarted):
        row = await runner.get(task_id)
        assert row is not None and row["error"] is None
        assert row["title"] == "a\x00b" and row["version"] == 2
        assert row["state"]["description"] == "spec \x00 with \ud800 in it"
    assert restarted.page()[0]["title"] == "a\x00b"


async def test_a_row_postgres_refuses_is_marked_and_the_list_goes_on(
    database, store: EventStore
) -> None:
    histories = await populate(store, n_tasks=2, n_events=3)
    refused, healthy = histories
    task_list = TaskList(store)
    await task_list.catch_up()
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        conn.execute("ALTER TABLE read_models ADD CONSTRAINT no_poison "
                     "CHECK (data->'state'->>'description' IS DISTINCT FROM 'poison')")
    for task_id, title in ((refused, "poison"), (healthy, "fine")):
        state = fold(histories[task_id])
        events = decide(state, UpdateSpec(description=title), ctx(9), task_id)
        await store.append(task_id, events, 3)

    await task_list.catch_up()
    restarted = TaskList(store)
    await restarted.catch_up()

    rows = {row["id"]: row for row in await restarted.rows()}
    assert rows[str(refused)]["version"] == 3
    assert "cannot save this task's row" in rows[str(refused)]["error"]
    assert "no_poison" in rows[str(refused)]["error"]
    assert (rows[str(healthy)]["version"], rows[str(healthy)]["error"]) == (4, None)
    assert task_list.position == restarted.position == await store.head_position()


async def test_a_store_made_with_a_jsonb_list_is_migrated_on_open(
    database, store: EventStore, store_settings
) -> None:
    await populate(store, n_tasks=1, n_events=2)
    await TaskList(store).catch_up()
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        conn.execute("ALTER TABLE read_models ALTER COLUMN data TYPE jsonb")

    async with EventStore.open(database, store_settings) as reopened:
        task_id = uuid.uuid4()
        await reopened.append(task_id, list(decide(
            None, CreateTask(title="x\x00", description=""), ctx(), task_id)), 0)
        task_list = TaskList(reopened)
        await task_list.catch_up()
        assert (await task_list.get(task_id))["title"] == "x\x00"
    with psycopg.connect(database.conninfo()) as conn:
        [kind] = conn.execute("SELECT data_type FROM information_schema.columns "
                              "WHERE table_name = 'read_models' AND column_name = 'data'"
                              ).fetchone()
    assert kind == "json"


async def test_a_child_tasks_row_names_its_project_item_and_kind_and_rebuilds_the_same(
    store: EventStore,
) -> None:
    histories = await populate(store, n_tasks=2)
    project = next(iter(histories))
    children = [uuid.uuid4() for _ in range(3)]
    for n, child in enumerate(children):
        command = CreateChildTask(f"Build {n}", "d", parent_id=str(project), item_id=f"item-{n}",
                                  kind="backend_developer")
        await store.append(child, decide(None, command, ctx(n), child), 0)
    task_list = TaskList(store)
    await task_list.catch_up()
    before = await task_list.rows()

    await TaskList(store).rebuild()

    assert await task_list.rows() == before
    rows = {row["id"]: row for row in before}
    assert {k: rows[str(children[1])][k] for k in ("parent_id", "item_id", "kind")} == {
        "parent_id": str(project), "item_id": "item-1", "kind": "backend_developer"}
    assert (rows[str(project)]["parent_id"], rows[str(project)]["item_id"],
            rows[str(project)]["kind"]) == (None, None, None)
    mine = task_list.page(limit=100, where=lambda row: row["parent_id"] == str(project))
    assert [row["id"] for row in mine] == sorted(str(c) for c in children)
    assert task_list.columns(str(children[0]))["item_id"] == "item-0"  # type: ignore[index]
    assert task_list.columns(str(uuid.uuid4())) is None


async def test_a_rows_runs_in_flight_follow_their_rarv_step_and_its_usage_rebuilds_the_same(
    store: EventStore,
) -> None:
    task_id = uuid.uuid4()
    task_list = TaskList(store)
    state = None

    async def record(*commands) -> dict:
        nonlocal state
        for command in commands:
            events = decide(state, command, ctx(0 if state is None else state.version), task_id)
            await store.append(task_id, events, 0 if state is None else state.version)
            state = fold(events, state)
        await task_list.catch_up()
        return task_list.columns(str(task_id))  # type: ignore[return-value]

    def steps(row: dict) -> list[tuple[str, str, int]]:
        return [(run["run_id"], run["step"], run["tokens"]) for run in row["running"]]

    row = await record(CreateTask("Swarm", "d"), StartTask(),
                       QueueJob("build", "backend_developer"), StartJob("build", "run-1"))
    assert row["running"] == [{"job_id": "build", "agent": "backend_developer",
                               "run_id": "run-1", "started_at": ctx(3).now.isoformat(),
                               "step": "reason", "tokens": 0}]
    row = await record(RecordContext("build", "run-1", sections=("spec",)))
    assert steps(row) == [("run-1", "act", 0)]
    row = await record(QueueJob("lint", "developer", spec={"command": ["true"]}),
                       StartJob("lint", "run-2"),  # a command job has no RARV cycle: it acts
                       RecordUsage("build", "run-1", "backend_developer", "m", 300, 100,
                                   cost_usd=0.03))
    assert steps(row) == [("run-1", "reflect", 400), ("run-2", "act", 0)]
    assert (row["input_tokens"], row["output_tokens"], row["cost_usd"]) == (300, 100, 0.03)
    assert row["usage_by_agent"] == {"backend_developer": {"tokens": 400, "cost_usd": 0.03}}
    row = await record(RecordReflection("build", "run-1", "built it"))
    assert steps(row) == [("run-1", "verify", 400), ("run-2", "act", 0)]
    check = {"command": "true", "exit_code": 0, "passed": True, "output": "",
             "duration_seconds": 0.1}
    row = await record(RecordVerification("build", "run-1", checks=[check]),
                       CompleteJob("build", "run-1"))
    assert steps(row) == [("run-2", "act", 0)]
    before = await task_list.rows()

    await TaskList(store).rebuild()

    assert await task_list.rows() == before


async def test_a_projects_children_are_found_by_its_id_after_a_restart_and_a_rebuild(
    store: EventStore,
) -> None:
    histories = await populate(store, n_tasks=2)
    project, other = (str(task_id) for task_id in histories)
    children = sorted(str(uuid.uuid4()) for _ in range(3))
    for n, child in enumerate(children):
        command = CreateChildTask(f"Build {n}", "d", parent_id=project, item_id=f"item-{n}",
                                  kind="backend_developer")
        await store.append(uuid.UUID(child), decide(None, command, ctx(n), uuid.UUID(child)), 0)
    live = TaskList(store)
    await live.catch_up()
    restarted = TaskList(store)
    await restarted.catch_up()
    await TaskList(store).rebuild()
    rebuilt = TaskList(store)
    await rebuilt.catch_up()

    for task_list in (live, restarted, rebuilt):
        assert [row["id"] for row in task_list.children_of(project)] == children
        assert task_list.children_of(other) == []


async def test_forks_and_clones_are_found_by_their_sources_id_and_archived_rows_say_so(
    store: EventStore,
) -> None:
    histories = await populate(store, n_tasks=2)
    (source_id, events), (other, _) = histories.items()
    source = fold(events)
    assert source is not None
    made = {}
    for name, command in (("fork", ForkTask(source=source)), ("clone", CloneTask(source))):
        task_id = uuid.uuid4()
        await store.append(task_id, decide(None, command, ctx(9), task_id), 0)
        made[name] = str(task_id)
    live = TaskList(store)
    await live.catch_up()
    ended = decide(source, Cancel(), ctx(10), source_id)
    state = fold(ended, source)
    await store.append(source_id, [*ended, *decide(state, Archive(), ctx(11), source_id)],
                       source.version)
    await live.catch_up()
    await TaskList(store).rebuild()
    rebuilt = TaskList(store)
    await rebuilt.catch_up()

    for task_list in (live, rebuilt):
        assert sorted(row["id"] for row in task_list.derived_from(str(source_id))) == sorted(
            made.values())
        assert task_list.derived_from(str(other)) == []
        assert task_list.columns(str(source_id))["archived"] is True
        fork = task_list.columns(made["fork"])
        assert fork["forked_from"] == {"task_id": str(source_id), "version": source.version}
        assert fork["cloned_from"] is None and fork["archived"] is False
        assert task_list.columns(made["clone"])["cloned_from"]["task_id"] == str(source_id)
