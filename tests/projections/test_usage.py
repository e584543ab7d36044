"""Cost and token analytics as a read model (issue #17): every figure is a sum of the
``UsageRecorded`` events of the log, by day, hour, project, task, agent type and model; a
project counts its children's usage; budget use counts finished children as the domain does;
a rebuild gives the same figures; two runners never count an event twice; periods are read
strictly.

The history is decided by the real domain and appended to the real store: a project with its
children (``seed_project``) and a lone task, their usage recorded at given times over three
days, so the expected figures are computed here from the events the store holds.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

import anyio
import psycopg
import pytest

from ipa.domain import (
    Command,
    Context,
    CreateTask,
    QueueJob,
    RecordChildFinished,
    RecordUsage,
    SetBudget,
    StartJob,
    StartTask,
    TaskState,
    decide,
    fold,
)
from ipa.eventstore import EventStore, UsageTable
from ipa.projections import BadPeriod, Period, Usage, UsageUnavailable
from ipa.projections.usage import group_keys, instant, period

from ..ui.test_children_api import Swarm, seed_project

pytestmark = pytest.mark.anyio

DAY1 = datetime(2026, 11, 20, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)
DAY3 = DAY2 + timedelta(days=1)
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


async def record(store: EventStore, task_id: UUID, at: datetime, *commands: Command) -> None:
    """Decide ``commands`` on the task as its pod would, at time ``at``, and append them."""
    state = await store.load(task_id)
    version, events = state.version, []
    for command in commands:
        new = decide(state, command, Context("ipa:test", at, "seed"), task_id)
        events += new
        state = fold(new, state)
    await store.append(task_id, events, version)


async def create(store: EventStore, at: datetime, *commands: Command) -> UUID:
    task_id = uuid.uuid4()
    state: TaskState | None = None
    events: list = []
    for command in commands:
        new = decide(state, command, Context("ipa:test", at, "seed"), task_id)
        events += new
        state = fold(new, state)
    await store.append(task_id, events, 0)
    return task_id


@dataclass
class History:
    """The seeded tasks: the project and its children (``swarm``) and a lone task."""

    swarm: Swarm
    lone: UUID

    @property
    def project(self) -> UUID:
        return self.swarm.project

    @property
    def child(self) -> UUID:
        return self.swarm.children["api"]


async def seed_usage(store: EventStore) -> History:
    """Usage over three days: the project's analyst on day 1; its ``api`` child's developer at
    the last instant of day 1 and the first of day 2 (one run), its security reviewer on day 2;
    a lone task's developer on day 2 (two runs in one hour) and day 3; budgets on the project
    and the lone task, and the ``api`` child's end recorded on the project with its cost."""
    swarm = await seed_project(store)
    history = History(swarm, await create(
        store, DAY1, CreateTask("A lone task", "Fix the login"), StartTask(),
        QueueJob("a", "developer"), StartJob("a", "run-a"), SetBudget(0.5)))
    await record(store, swarm.project, DAY1 + timedelta(hours=8), SetBudget(1.25))
    await record(store, swarm.project, DAY1 + timedelta(hours=10), RecordUsage(
        "analyst-1", "run-1", "product_analyst", "claude-opus", 500, 100, 50, 0, 0.05))
    child = history.child
    await record(store, child, DAY2 - timedelta(microseconds=1), RecordUsage(
        "build", "run-build", "developer", "claude-sonnet", 1000, 200, 30, 10, 0.1))
    await record(store, child, DAY2, RecordUsage(
        "build", "run-build", "developer", "claude-sonnet", 300, 100, cost_usd=0.2))
    await record(store, child, DAY2 + timedelta(hours=9, minutes=15),
                 QueueJob("scan", "security_reviewer"), StartJob("scan", "run-s"),
                 RecordUsage("scan", "run-s", "security_reviewer", "claude-haiku", 40, 10,
                             cost_usd=0.007))
    await record(store, history.lone, DAY2 + timedelta(hours=9, minutes=30), RecordUsage(
        "a", "run-a", "developer", "claude-sonnet", 2000, 500, 100, 20, 0.3))
    await record(store, history.lone, DAY2 + timedelta(hours=9, minutes=59),
                 QueueJob("b", "reviewer"), StartJob("b", "run-b"),
                 RecordUsage("b", "run-b", "reviewer", "claude-haiku", 10, 5, cost_usd=0.001))
    await record(store, history.lone, DAY3 + timedelta(hours=12), RecordUsage(
        "a", "run-a", "developer", "claude-sonnet", 700, 70, cost_usd=0.25))
    await record(store, swarm.project, DAY3, RecordChildFinished(
        str(child), "completed", input_tokens=1380, output_tokens=320, cost_usd=0.307))
    return history


# -- what the events say, computed here -----------------------------------------------------


async def events_of(store: EventStore) -> list[Any]:
    found, after = [], 0
    while page := await store.read_log(after, 1000):
        found += page
        after = page[-1].position
    return found


async def usage_events(store: EventStore) -> list[dict[str, Any]]:
    """Each ``UsageRecorded`` of the log with its task's project (the parent of a child task,
    else the task if it is a project)."""
    projects: dict[str, str | None] = {}
    rows = []
    for recorded in await events_of(store):
        event, task = recorded.event, str(recorded.stream_id)
        if recorded.type == "TaskCreated":
            projects[task] = task if event.workflow == "project" else None
        elif recorded.type == "TaskLinked":
            projects[task] = event.parent_id
        elif recorded.type == "UsageRecorded":
            rows.append({"at": event.timestamp, "task": task, "project": projects[task],
                         "agent_type": event.agent, "model": event.model,
                         "run": (task, event.run_id),
                         "day": event.timestamp.date().isoformat(),
                         "hour": event.timestamp.replace(minute=0, second=0,
                                                         microsecond=0).isoformat(),
                         "input_tokens": event.input_tokens,
                         "output_tokens": event.output_tokens,
                         "cache_read_tokens": event.cache_read_tokens,
                         "cache_write_tokens": event.cache_write_tokens,
                         "cost": Decimal(repr(event.cost_usd))})
    return rows


def sums(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"records": len(rows), "runs": len({r["run"] for r in rows}),
            **{name: sum(r[name] for r in rows) for name in (
                "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")},
            "cost_usd": float(sum((r["cost"] for r in rows), Decimal(0)))}


def expected_groups(rows: list[dict[str, Any]], keys: tuple[str, ...],
                    span: Period) -> dict[tuple, dict[str, Any]]:
    grouped: dict[tuple, list] = defaultdict(list)
    for row in rows:
        if span.start <= row["at"] < span.end:
            grouped[tuple(row[key] for key in keys)].append(row)
    return {key: sums(found) for key, found in grouped.items()}


def groups_of(report: dict[str, Any], keys: tuple[str, ...]) -> dict[tuple, dict[str, Any]]:
    return {tuple(group["key"][key] for key in keys): {
        name: group[name] for name in ("records", "runs", "input_tokens", "output_tokens",
                                       "cache_read_tokens", "cache_write_tokens", "cost_usd")}
        for group in report["groups"]}


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture
async def table(store: EventStore) -> AsyncIterator[UsageTable]:
    table = store.usage_table()
    await table.open()
    yield table
    await table.close()


@pytest.fixture
async def usage(store: EventStore, table: UsageTable) -> Usage:
    usage = Usage(store, table)
    await usage.open()
    assert usage.problem is None
    return usage


@pytest.fixture
async def history(store: EventStore) -> History:
    return await seed_usage(store)


TWO_DAYS = Period(DAY1, DAY3)


async def test_every_grouping_sums_exactly_the_usage_recorded_events_of_the_period(
    store: EventStore, usage: Usage, history: History
) -> None:
    await usage.catch_up()
    rows = await usage_events(store)

    for keys in [("day",), ("hour",), ("project",), ("task",), ("agent_type",), ("model",),
                 ("day", "model"), ("project", "agent_type")]:
        report = await usage.report(TWO_DAYS, keys)
        assert groups_of(report, keys) == expected_groups(rows, keys, TWO_DAYS), keys
        assert report["totals"] == sums([r for r in rows if DAY1 <= r["at"] < DAY3])
        assert report["position"] == await store.head_position()
        assert not report["more"]


async def test_a_project_counts_its_own_and_its_childrens_usage_and_a_lone_task_none(
    usage: Usage, history: History
) -> None:
    await usage.catch_up()

    report = await usage.report(TWO_DAYS, ("project",))

    by_project = {g["key"]["project"]: g for g in report["groups"]}
    assert set(by_project) == {str(history.project), None}
    # the analyst (0.05) + the api child's developer (0.1 + 0.2) and reviewer (0.007)
    assert by_project[str(history.project)]["cost_usd"] == 0.357
    assert by_project[str(history.project)]["titles"] == {"project": "Shop"}
    assert by_project[None]["cost_usd"] == 0.301  # the lone task's two runs on day 2
    assert [g["key"]["project"] for g in report["groups"]] == [str(history.project), None]


async def test_the_last_instant_of_a_day_and_the_first_of_the_next_fall_in_their_own_days(
    usage: Usage, history: History
) -> None:
    await usage.catch_up()

    days = groups_of(await usage.report(TWO_DAYS, ("day",)), ("day",))
    hours = groups_of(await usage.report(Period(DAY2 - timedelta(hours=1),
                                                DAY2 + timedelta(hours=10)), ("hour",)),
                      ("hour",))

    assert days[("2026-11-20",)]["cost_usd"] == 0.15  # 10:00 and 23:59:59.999999
    assert days[("2026-11-21",)]["cost_usd"] == 0.508  # 00:00, 09:15, 09:30, 09:59
    assert list(hours) == [("2026-11-20T23:00:00+00:00",), ("2026-11-21T00:00:00+00:00",),
                           ("2026-11-21T09:00:00+00:00",)]
    assert hours[("2026-11-21T09:00:00+00:00",)]["records"] == 3
    # A period's end is not in it; its start is.
    assert (await usage.report(Period(DAY1, DAY2), ("day",)))["totals"]["cost_usd"] == 0.15
    assert (await usage.report(Period(DAY2, DAY2 + timedelta(microseconds=1)), ("day",)))[
        "totals"]["records"] == 1


async def test_the_most_expensive_runs_sum_each_runs_records(
    usage: Usage, history: History
) -> None:
    await usage.catch_up()

    report = await usage.report(Period(DAY1, DAY3 + timedelta(days=1)), ("day",), top=3)

    assert [(r["run_id"], r["cost_usd"], r["records"]) for r in report["top_runs"]] == [
        ("run-a", 0.55, 2), ("run-build", 0.3, 2), ("run-1", 0.05, 1)]
    best = report["top_runs"][0]
    assert (best["task_id"], best["title"], best["agent_type"], best["model"],
            best["project_id"], best["input_tokens"]) == (
        str(history.lone), "A lone task", "developer", "claude-sonnet", None, 2700)
    second = report["top_runs"][1]
    assert (second["project_id"], second["project_title"]) == (str(history.project), "Shop")


async def test_budget_use_counts_own_usage_and_finished_children_as_the_domain_does(
    store: EventStore, usage: Usage, history: History
) -> None:
    await usage.catch_up()

    budgets = {b["task_id"]: b for b in (await usage.report(TWO_DAYS, ("day",)))["budgets"]}

    lone, project = budgets[str(history.lone)], budgets[str(history.project)]
    assert (lone["budget_usd"], lone["spent_usd"], lone["children_cost_usd"]) == (0.5, 0.551, 0)
    assert lone["share"] == pytest.approx(1.102)
    assert (project["budget_usd"], project["own_cost_usd"], project["children_cost_usd"],
            project["spent_usd"]) == (1.25, 0.05, 0.307, 0.357)
    assert list(budgets) == [str(history.lone), str(history.project)]  # most used first
    for task_id in (history.lone, history.project):
        state = await store.load(task_id)
        assert budgets[str(task_id)]["spent_usd"] == pytest.approx(state.spent_usd, abs=1e-12)
        assert budgets[str(task_id)]["budget_usd"] == state.budget_usd


async def test_a_rebuild_gives_the_same_figures(
    store: EventStore, table: UsageTable, usage: Usage, history: History
) -> None:
    await usage.catch_up()
    before = [await usage.report(TWO_DAYS, keys) for keys in GROUPINGS]

    position = await usage.rebuild()

    assert position == await store.head_position()
    assert [await usage.report(TWO_DAYS, keys) for keys in GROUPINGS] == before
    again = Usage(store, table)  # as a restarted server reads it
    await again.open()
    assert again.position == position
    assert await again.catch_up() == position
    assert [await again.report(TWO_DAYS, keys) for keys in GROUPINGS] == before
    assert await table.count() == len(await usage_events(store))


GROUPINGS = [("day",), ("hour",), ("project",), ("task",), ("agent_type",), ("model",)]


async def test_two_runners_on_one_table_never_count_an_event_twice(
    store: EventStore, table: UsageTable, usage: Usage, history: History
) -> None:
    other_table = store.usage_table()
    other = Usage(store, other_table)
    await other.open()
    try:
        async with anyio.create_task_group() as tg:
            for runner in (usage, other, usage, other):
                tg.start_soon(runner.catch_up)
        rows = await usage_events(store)
        assert usage.position == other.position == await store.head_position()
        assert await table.count() == len(rows)
        report = await other.report(Period(DAY1, NOW), ("day",))
        assert report["totals"] == sums(rows)
        budgets = {b["task_id"]: b for b in report["budgets"]}
        assert budgets[str(history.project)]["children_cost_usd"] == 0.307  # counted once
    finally:
        await other.close()


async def test_new_events_are_followed_live_and_waited_for(
    store: EventStore, usage: Usage, history: History
) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(usage.run)
        await record(store, history.lone, DAY3 + timedelta(hours=13), RecordUsage(
            "a", "run-a", "developer", "claude-sonnet", 1, 1, cost_usd=0.125))
        with anyio.fail_after(10):
            await usage.wait_for(await store.head_position())
        report = await usage.report(Period(DAY3, DAY3 + timedelta(days=1)), ("task",))
        tg.cancel_scope.cancel()
    assert report["totals"]["cost_usd"] == 0.375
    assert report["groups"][0]["titles"] == {"task": "A lone task"}


async def test_groups_past_the_limit_are_cut_and_said(usage: Usage, history: History) -> None:
    await usage.catch_up()

    report = await usage.report(TWO_DAYS, ("task",), limit=1)

    assert len(report["groups"]) == 1 and report["more"]
    # the most expensive first: the api child's 0.307 over the lone task's 0.301
    assert report["groups"][0]["key"]["task"] == str(history.child)
    assert report["totals"]["records"] == 6  # every record of the period, whatever the limit


async def test_analytics_that_cannot_open_says_why(store: EventStore) -> None:
    from ipa.eventstore import ConnectionParams

    broken = UsageTable(ConnectionParams("no_such_db", store.params.host, store.params.port,
                                         store.params.user, ""))
    usage = Usage(store, broken)
    await usage.open()

    assert usage.problem and "cannot reach the database" in usage.problem
    with pytest.raises(UsageUnavailable, match="analytics is off"):
        await usage.report(TWO_DAYS, ("day",))


# -- periods ----------------------------------------------------------------------------------


def test_a_period_takes_dates_as_whole_days_and_date_times_as_instants() -> None:
    assert period("2026-11-20", "2026-11-21", NOW) == Period(DAY1, DAY3)
    assert period("2026-11-20T09:30:00Z", "2026-11-21T00:00", NOW) == Period(
        DAY1 + timedelta(hours=9, minutes=30), DAY2)
    assert period("2026-11-20T10:00:00+02:00", None, NOW) == Period(
        DAY1 + timedelta(hours=8), NOW)
    assert period(None, None, NOW) == Period(NOW - timedelta(days=30), NOW)
    assert period(None, "2026-11-21", NOW) == Period(DAY3 - timedelta(days=30), DAY3)


@pytest.mark.parametrize(("start", "end", "keys", "problem"), [
    ("2026-13-01", None, (), "from='2026-13-01' is not an ISO 8601 date"),
    ("yesterday", None, (), "from='yesterday' is not an ISO 8601"),
    ("2026-11-20", "2026-11-20T25:00", (), "to='2026-11-20T25:00' is not an ISO 8601"),
    ("2026-11-20 ", None, (), "from='2026-11-20 ' is not"),
    ("２０２６-11-20", None, (), "is not an ISO 8601"),
    ("2026-11-20\x00", None, (), "is not an ISO 8601"),
    ("2026-11-20" + "0" * 100, None, (), "is not an ISO 8601"),
    ("2026-11-21", "2026-11-20", (), "is not after from"),
    ("2026-11-21T10:00Z", "2026-11-21T10:00Z", (), "an empty period"),
    ("2027-01-01", None, (), "to (now: "),
    ("1969-12-31", "2026-11-21", (), "before 1970"),
    ("1970-01-01", "9999-12-31", (), "not an ISO 8601"),  # its end overflows
    ("1970-01-01", "2026-11-21", (), "a period is at most 3660 days"),
    ("2026-10-01", "2026-11-21", ("hour",), "group_by=hour covers at most 31 days"),
])
def test_a_malformed_or_absurd_period_is_refused_naming_the_problem(
    start: str | None, end: str | None, keys: tuple[str, ...], problem: str
) -> None:
    with pytest.raises(BadPeriod) as refused:
        period(start, end, NOW, keys)
    assert problem in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(("text", "problem"), [
    ("week", "'week' is not one of day, hour, project, task, agent_type, model"),
    ("day,", "'' is not one of"),
    ("day,model,task", "at most 2 keys"),
    ("model,model", "a key named twice"),
    ("day,hour", "day and hour do not go together"),
    ("Day", "'Day' is not one of"),
])
def test_a_bad_grouping_is_refused_naming_the_problem(text: str, problem: str) -> None:
    with pytest.raises(BadPeriod, match=problem):
        group_keys(text)


def test_groupings_read() -> None:
    assert group_keys(None) == ("day",)
    assert group_keys("day,model") == ("day", "model")
    assert group_keys("agent_type") == ("agent_type",)
    assert instant("2026-11-20", "to", end=True) == DAY2


async def test_a_page_postgresql_refuses_stops_analytics_saying_where(
    store: EventStore, usage: Usage, history: History
) -> None:
    position = await usage.catch_up()
    usage_table, _ = usage.table.tables_of(usage.model)
    with psycopg.connect(store.params.conninfo(), autocommit=True) as conn:
        conn.execute(f"DROP TABLE {usage_table}")  # where the next page's rows would go
    await record(store, history.lone, DAY3, RecordUsage("a", "run-a", "developer", "m", 1, 1))

    assert await usage.catch_up() == position  # stopped before the refused page
    assert usage.problem is not None
    assert usage.problem.startswith(f"analytics stopped after log position {position}: usage: ")
    assert "does not exist" in usage.problem
    with anyio.fail_after(5):
        await usage.wait_for(position + 10)  # a waiter is not left hanging
    with pytest.raises(UsageUnavailable, match="analytics is off: analytics stopped"):
        await usage.report(TWO_DAYS, ("day",))
