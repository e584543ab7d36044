"""A project's budget counts its children (issue #14 item 7): each child's usage is added as
its end is recorded, and the child that reaches the budget pauses the project, so no new child
and no new perpetual cycle starts until a person raises it."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from ipa.domain import (
    BudgetReached,
    ChildFinished,
    CommandRejected,
    CompleteJob,
    InvalidCommand,
    Pause,
    ProposeCycle,
    QueueJob,
    RecordChildFinished,
    RecordUsage,
    SetBudget,
    SpawnChild,
    StartJob,
    Status,
    TaskState,
    attention,
    decide,
    fold,
    parse_backlog,
    perpetual_due,
)
from ipa.domain.state import ChildrenUsage
from ipa.eventstore.codec import GENESIS, EventCodec, Seal

from .helpers import TASK_ID, context, run, types
from .test_backlog import KINDS, answer, approved, item
from .test_children import child, in_development, rejected


def finished(n: int, cost: float, outcome: str = "completed") -> RecordChildFinished:
    """Child ``n`` ended, its agents having used 1000 tokens in, 100 out and ``cost``."""
    return RecordChildFinished(child(n), outcome, input_tokens=1000, output_tokens=100,
                               cost_usd=cost)


def own_usage(cost: float) -> RecordUsage:
    """The project's own analyst (``analyst-1``'s ``run-1``, ended) spent ``cost``."""
    return RecordUsage("analyst-1", "run-1", "product_analyst", "claude-sonnet",
                       input_tokens=10, output_tokens=5, cost_usd=cost)


def two_running(budget: float | None = None) -> TaskState:
    """The project in development with ``schema`` (child 2) and ``docs`` (child 3) running."""
    state = in_development()
    if budget is not None:
        state = run(state, SetBudget(budget))
    return run(state, SpawnChild("schema", child(2)), SpawnChild("docs", child(3)))


def test_the_childrens_spend_adds_up_beside_the_projects_own() -> None:
    state = run(two_running(), own_usage(0.25), finished(2, 0.5),
                finished(3, 1.0, outcome="failed"))

    assert state.usage.total.cost_usd == pytest.approx(0.25)  # its own agents' only
    assert state.usage.by_agent.keys() == {"product_analyst"}
    used = state.children_usage
    # ci (in_development: no usage recorded), schema and docs
    assert (used.input_tokens, used.output_tokens, used.children) == (2000, 200, 3)
    assert used.cost_usd == pytest.approx(1.5)  # a failed child's spend counts too
    assert state.spent_usd == pytest.approx(1.75)
    view = state.to_dict()
    assert view["usage"]["cost_usd"] == pytest.approx(0.25)
    assert view["children_usage"]["cost_usd"] == pytest.approx(1.5)
    assert TaskState.from_dict(json.loads(json.dumps(view))) == state


def test_a_child_recorded_twice_is_counted_once() -> None:
    state = run(two_running(), finished(2, 0.5))
    assert decide(state, finished(2, 0.5), context(), TASK_ID) == []
    assert state.children_usage.children == 2  # ci and schema


def test_a_child_finishing_past_the_budget_pauses_the_project_naming_the_total() -> None:
    state = run(two_running(budget=1.0), own_usage(0.25), finished(2, 0.5))
    assert state.status is Status.running

    events = decide(state, finished(3, 0.5), context(), TASK_ID)

    assert types(events) == ["ChildFinished", "BudgetReached", "TaskPaused"]
    reached = events[1]
    assert isinstance(reached, BudgetReached)
    assert (reached.limit_usd, reached.spent_usd) == (1.0, pytest.approx(1.25))
    state = fold(events, state)
    assert state.status is Status.paused and state.budget_paused
    needed = attention(state)
    assert needed is not None and needed.kind == "budget"
    assert "$1.25 ($0.25 itself, $1.00 by its children) of its $1.00 budget" in needed.message
    # Paused: no child is spawned; more spend records no second pause.
    assert "paused by its budget" in rejected(state, SpawnChild("api", child(4)))
    assert types(decide(state, own_usage(0.1), context(), TASK_ID)) == ["UsageRecorded"]


def test_the_projects_own_usage_reaching_the_budget_counts_the_children_too() -> None:
    state = run(two_running(budget=1.0), finished(2, 0.9))
    assert types(decide(state, own_usage(0.1), context(), TASK_ID)) == [
        "UsageRecorded", "BudgetReached", "TaskPaused"]


def test_raising_the_budget_above_the_total_resumes_the_project() -> None:
    state = run(two_running(budget=1.0), finished(2, 0.7), finished(3, 0.7))
    assert state.budget_paused

    assert types(decide(state, SetBudget(1.2), context(), TASK_ID)) == ["BudgetSet"]  # < 1.4
    state = run(state, SetBudget(2.0))

    assert state.status is Status.running and not state.budget_paused
    assert decide(state, SpawnChild("api", child(4)), context(), TASK_ID)  # spawns again


def test_a_budget_set_below_the_childrens_spend_pauses_at_once() -> None:
    state = run(two_running(), finished(2, 3.0))
    assert types(decide(state, SetBudget(2.0), context(), TASK_ID)) == [
        "BudgetSet", "BudgetReached", "TaskPaused"]


def test_a_project_a_person_paused_spawns_nothing_either() -> None:
    state = run(in_development(), Pause("lunch"))
    assert "the project is paused" in rejected(state, SpawnChild("schema", child(2)))


@pytest.mark.parametrize("usage", [{"cost_usd": -1.0}, {"cost_usd": float("nan")},
                                   {"input_tokens": -5}, {"output_tokens": 1.5}])
def test_a_childs_usage_must_be_counts_and_a_cost(usage: dict) -> None:
    command = replace(RecordChildFinished(child(2), "completed"), **usage)
    with pytest.raises(InvalidCommand):
        decide(two_running(), command, context(), TASK_ID)


def test_an_old_child_finished_without_usage_still_loads_and_folds() -> None:
    """A ChildFinished stored before it carried usage (version 1) is upcast on load: the
    child's end folds, and nothing is added to the project's spend."""
    state = two_running()
    [new] = decide(state, finished(2, 0.5), context(), TASK_ID)
    codec = EventCodec()
    [stored], _ = codec.seal([new], GENESIS)
    body = Seal.of(stored).body
    seal = stored.state[: len(stored.state) - len(body)]
    payload = codec.transcoder.decode(body)
    for key in ("class_version", "input_tokens", "output_tokens", "cost_usd"):
        del payload[key]  # the shape version 1 had
    old = replace(stored, state=seal + codec.transcoder.encode(payload))

    event = codec.to_domain_event(old)

    assert isinstance(event, ChildFinished)
    assert (event.input_tokens, event.output_tokens, event.cost_usd) == (0, 0, 0.0)
    state = fold([event], state)
    assert state.backlog.item("schema").status.value == "finished"  # type: ignore[union-attr]
    assert state.children_usage.children == 2 and state.spent_usd == 0.0  # ci and schema


def test_a_snapshot_from_before_children_usage_loads_with_none() -> None:
    state = run(two_running(), finished(2, 0.5))
    data = state.to_dict()
    del data["children_usage"]
    assert TaskState.from_dict(data) == replace(state, children_usage=ChildrenUsage())


# -- perpetual -----------------------------------------------------------------------------------


def in_cycle(n: int, state: TaskState) -> TaskState:
    """``state`` after the maintainer's run ``n`` proposed cycle ``n`` (item ``c<n>-fix``) and
    its job ended."""
    job = f"maintainer-{n}"
    items = parse_backlog(answer([item(f"c{n}-fix", "qa_engineer", "perpetual", 3)]),
                          kinds=KINDS, phases=("perpetual",))
    return run(state, QueueJob(job, "maintainer"), StartJob(job, f"run-{n}"),
               ProposeCycle(items, job, f"run-{n}"), CompleteJob(job, f"run-{n}"))


def test_a_perpetual_cycle_cannot_start_once_its_children_reached_the_budget() -> None:
    perpetual = run(replace(approved(), phase="perpetual"), SetBudget(1.0))
    state = run(in_cycle(1, perpetual), SpawnChild("c1-fix", child(11)))
    unlimited = run(state, SetBudget(None), finished(11, 1.0))
    assert perpetual_due(unlimited, 0.0) is not None  # without a budget: the next round

    state = run(state, finished(11, 1.0))

    assert state.status is Status.paused and state.budget_paused
    assert perpetual_due(state, 0.0) is None  # no next round is queued ...
    state = run(state, QueueJob("maintainer-2", "maintainer"))
    with pytest.raises(CommandRejected, match="not running|paused"):
        decide(state, StartJob("maintainer-2", "run-2"), context(), TASK_ID)  # ... nor started

    state = run(state, SetBudget(5.0))
    assert state.status is Status.running
    assert types(decide(state, StartJob("maintainer-2", "run-2"), context(), TASK_ID)) == [
        "JobStarted"]
