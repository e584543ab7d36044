"""A project's backlog: the contract of the analyst's answer, the edits of a person, approval at
the gate, the snapshot form, and which items may start."""

from __future__ import annotations

import json
from dataclasses import replace
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipa.domain import (
    AddBacklogItem,
    Approve,
    BacklogApproved,
    BacklogInvalid,
    BacklogItem,
    BacklogItemAdded,
    BacklogItemChanged,
    BacklogItemDropped,
    BacklogItemStatus,
    BacklogProposed,
    BacklogReordered,
    Cancel,
    ChangeBacklogItem,
    CompleteJob,
    CompletePhase,
    CreateTask,
    DropBacklogItem,
    InvalidCommand,
    JobNotFound,
    JobRejected,
    PhaseApproved,
    PhaseEntered,
    ProposeBacklog,
    QueueJob,
    ReorderBacklog,
    RequestApproval,
    RequestChanges,
    StartJob,
    StartTask,
    TaskState,
    backlog_phases,
    decide,
    fold,
    parse_backlog,
    phase_items_done,
    ready_items,
)
from ipa.domain.backlog_contract import MAX_BLOCK_CHARS, MAX_DEPTH, MAX_SHOWN

from .helpers import TASK_ID, context, run, types

KINDS = ("backend_developer", "frontend_developer", "database_engineer", "qa_engineer",
         "devops_engineer", "technical_writer")
PHASES = ("architecture", "infrastructure", "development", "qa", "deployment", "business",
          "growth", "perpetual")


def item(id: str, kind: str, phase: str, priority: int, *depends_on: str, **more: object) -> dict:
    return {"id": id, "title": f"Build {id}", "description": f"Make the {id} work.",
            "kind": kind, "phase": phase, "priority": priority, "depends_on": list(depends_on),
            "acceptance": [f"{id} has tests"], **more}


def backlog_items() -> list[dict]:
    """Eight items over three phases, with dependencies (one across phases)."""
    return [
        item("ci", "devops_engineer", "infrastructure", 5),
        item("schema", "database_engineer", "development", 9),
        item("api", "backend_developer", "development", 8, "schema", "ci"),
        item("auth", "backend_developer", "development", 7, "schema"),
        item("ui", "frontend_developer", "development", 6, "api", "auth"),
        item("docs", "technical_writer", "development", 1),
        item("e2e", "qa_engineer", "qa", 5, "ui"),
        item("load", "qa_engineer", "qa", 3, "api"),
    ]


def answer(items: object) -> str:
    """An analyst's final answer: prose, another fenced block, the backlog, more prose."""
    block = json.dumps({"items": items}, indent=2)
    return (f"Here is the backlog.\n\n```python\nprint('not the backlog')\n```\n\n```json\n"
            f"{block}\n```\n\nEach item runs as its own child task.")


def problems(items: object) -> str:
    with pytest.raises(BacklogInvalid) as caught:
        parse_backlog(answer(items), kinds=KINDS, phases=PHASES)
    return str(caught.value)


def mutated(position: int, **changes: object) -> list[dict]:
    items = backlog_items()
    items[position] = {**items[position], **changes}
    return items


# -- the contract --------------------------------------------------------------------------------


def test_a_valid_answer_gives_its_items_in_order() -> None:
    items = parse_backlog(answer(backlog_items()), kinds=KINDS, phases=PHASES)

    assert [i.id for i in items] == ["ci", "schema", "api", "auth", "ui", "docs", "e2e", "load"]
    assert items[2] == BacklogItem("api", "Build api", "Make the api work.", "backend_developer",
                                   "development", 8, ("schema", "ci"), ("api has tests",))
    assert {i.status for i in items} == {BacklogItemStatus.proposed}


def test_optional_lists_default_to_empty_and_titles_are_trimmed() -> None:
    bare = {k: v for k, v in item("ci", "devops_engineer", "infrastructure", 1).items()
            if k not in ("depends_on", "acceptance")}

    (parsed,) = parse_backlog(answer([{**bare, "title": "  Set up CI "}]), kinds=KINDS,
                              phases=PHASES)

    assert (parsed.title, parsed.depends_on, parsed.acceptance) == ("Set up CI", (), ())


@pytest.mark.parametrize(("text", "expected"), [
    ("No backlog today.", "holds no fenced ```json block"),
    ("```" + " " * 200_000 + "`", "holds no fenced ```json block"),  # read in one pass
    ("```\n{\"items\": []}\n```", "holds no fenced ```json block"),
    ("```json\n{}\n```\nand\n```json\n{}\n```", "holds 2 fenced ```json blocks (opened on lines "
                                                "1, 5); it must hold exactly one"),
    ("intro\n```json\n{\"items\": [", "the ```json block opened on line 2 is never closed"),
    ("```json\n{\"items\": [}\n```", "is not valid JSON: Expecting value (line 1, column 12"),
    ("```json\n[1, 2]\n```", 'the JSON must be an object {"items": [...]}, not a list'),
    ("```json\n{\"backlog\": []}\n```", "has no \"items\" (its keys: 'backlog')"),
    ("```json\n{\"items\": {}}\n```", '"items" must be a list of items, not an object'),
    ("```json\n{\"items\": []}\n```", "the backlog has no items"),
])  # fmt: skip
def test_an_answer_without_exactly_one_good_block_says_what_is_wrong(
    text: str, expected: str
) -> None:
    with pytest.raises(BacklogInvalid, match="the backlog is not valid") as caught:
        parse_backlog(text, kinds=KINDS, phases=PHASES)

    assert expected in str(caught.value)


def test_fences_of_tildes_longer_fences_and_crlf_are_read_as_markdown_does() -> None:
    block = json.dumps({"items": backlog_items()[:1]})
    text = f"~~~~ JSON\r\n{block}\r\n~~~~~\r\n"

    assert [i.id for i in parse_backlog(text, kinds=KINDS, phases=PHASES)] == ["ci"]


@pytest.mark.parametrize(("items", "expected"), [
    (mutated(2, title=None), "item 'api': title must be text, not null"),
    (mutated(2, title="  "), "item 'api': title is blank"),
    (mutated(2, title="two\nlines"), "item 'api': title must be a single line"),
    (mutated(2, title="x" * 201), "item 'api': title is 201 characters long; at most 200"),
    ([{k: v for k, v in i.items() if k != "kind"} if i["id"] == "api" else i
      for i in backlog_items()], "item 'api': has no kind"),
    (mutated(2, id="the api"), "item 3: id 'the api' is not a short identifier"),
    (mutated(2, id=7), "item 3: id a number is not a short identifier"),
    (mutated(2, priority="high"), "item 'api': priority must be a whole number"),
    (mutated(2, priority=True), "priority must be a whole number from -1,000,000 to 1,000,000, "
                                "not true or false"),
    (mutated(2, priority=10**9), "item 'api': priority must be a whole number"),
    (mutated(2, depends_on="schema"), "item 'api': depends_on must be a list of item ids, not "
                                      "text"),
    (mutated(2, acceptance=["ok", 1]), "item 'api': acceptance must hold non-blank text only"),
    (mutated(2, kind="backend_dev"), "item 'api': kind 'backend_dev' is not a known agent type; "
                                     "did you mean backend_developer?"),
    (mutated(2, phase="discovery"), "item 'api': phase 'discovery' is not a phase items run in"),
    (mutated(2, dependencies=["schema"]), "item 'api': unknown field 'dependencies'"),
    (mutated(3, id="api"), "item id 'api' is used by 2 items"),
    (mutated(2, depends_on=["cache"]), "item 'api' depends on 'cache', which is not an item of "
                                       "the backlog"),
    (mutated(2, depends_on=["api"]), "item 'api': depends on itself"),
    (mutated(1, depends_on=["ui"]), "items 'schema' → 'ui' → 'api' → 'schema' depend on each "
                                    "other in a cycle"),
    (mutated(2, depends_on=["e2e"]), "item 'api' (development) depends on 'e2e' of the later "
                                     "phase qa; it could never start"),
    (mutated(2, depends_on=["e2e"]), "items 'api' → 'e2e' → 'ui' → 'api'"),
    ([*backlog_items(), "api"], "item 9: must be an object with the fields id, title,"),
])  # fmt: skip
def test_each_invalid_item_is_named_with_its_problem(items: list, expected: str) -> None:
    assert expected in problems(items)


def test_hints_say_which_kinds_phases_and_fields_are_right() -> None:
    message = problems(mutated(2, kind="x", phase="y", dependencies=[]))

    assert "\nknown kinds: backend_developer, database_engineer, devops_engineer," in message
    assert "\nphases items run in: architecture, infrastructure, development, qa," in message
    assert "\nan item's fields: id, title, description, kind, phase, priority, depends_on, " \
           "acceptance" in message


def test_every_problem_is_reported_at_once() -> None:
    items = backlog_items()
    items[0]["kind"] = "wizard"
    items[3]["priority"] = 1.5
    items[5]["depends_on"] = ["nothing"]
    items[7]["id"] = "e2e"

    with pytest.raises(BacklogInvalid) as caught:
        parse_backlog(answer(items), kinds=KINDS, phases=PHASES)

    assert caught.value.problems == (
        "item 'ci': kind 'wizard' is not a known agent type",
        "item 'auth': priority must be a whole number from -1,000,000 to 1,000,000, not a number",
        "item id 'e2e' is used by 2 items",
        "item 'docs' depends on 'nothing', which is not an item of the backlog",
    )
    assert str(caught.value).startswith("the backlog is not valid (4 problems):\n- item 'ci'")


def test_an_item_with_problems_is_not_an_unknown_dependency_of_the_others() -> None:
    assert problems(mutated(1, kind="wizard")).count("\n- ") == 1


def test_the_message_lists_the_first_problems_and_counts_the_rest() -> None:
    items = [item(f"i{n}", "wizard", "qa", 0) for n in range(MAX_SHOWN + 10)]

    with pytest.raises(BacklogInvalid) as caught:
        parse_backlog(answer(items), kinds=KINDS, phases=PHASES)

    assert len(caught.value.problems) == MAX_SHOWN + 10
    assert "- ... and 10 more\n" in str(caught.value)
    assert str(caught.value).count("is not a known agent type") == MAX_SHOWN


def test_nul_is_kept_and_lone_surrogates_become_replacement_characters() -> None:
    text = answer([item("ci", "devops_engineer", "infrastructure", 1)])
    text = text.replace('"Build ci"', '"Build \\ud800ci"').replace(
        '"Make the ci work."', '"Make\\u0000 it"')

    (parsed,) = parse_backlog(text, kinds=KINDS, phases=PHASES)

    assert (parsed.title, parsed.description) == ("Build \ufffdci", "Make\x00 it")


def test_an_id_with_nul_or_a_surrogate_is_refused_by_name() -> None:
    text = answer([item("ci", "devops_engineer", "infrastructure", 1)]).replace(
        '"id": "ci"', '"id": "c\\u0000\\udfffi"')

    with pytest.raises(BacklogInvalid, match="item 1: id 'c\\\\x00\ufffdi' is not a short"):
        parse_backlog(text, kinds=KINDS, phases=PHASES)


@pytest.mark.parametrize(("block", "expected"), [
    ("[" * 100_000 + "]" * 100_000, f"the JSON nests deeper than {MAX_DEPTH} levels"),
    ('"' + '\\"' * 400_000, "not valid JSON: Unterminated string"),  # read once, not per quote
    ('{"items": "' + "x" * MAX_BLOCK_CHARS + '"}', "characters long; at most 1,000,000 are read"),
    ('{"items": [{"priority": ' + "9" * 5000 + "}]}", "is not valid JSON: Exceeds the limit"),
    ('{"items": [{"priority": NaN}]}', "is not valid JSON: NaN is not a JSON number"),
    ('{"items": [{"priority": 1e999}]}', "priority must be a whole number"),
    ('{"items": ["' + "[" * 1000 + '"]}', "item 1: must be an object"),
])  # fmt: skip
def test_huge_deep_or_strange_json_is_refused_without_crashing(block: str, expected: str) -> None:
    with pytest.raises(BacklogInvalid) as caught:
        parse_backlog(f"```json\n{block}\n```", kinds=KINDS, phases=PHASES)

    assert expected in str(caught.value)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
IDS = st.sampled_from(["a", "b", "c", "d"])
NEARLY_ITEMS = st.lists(st.fixed_dictionaries(
    {"id": IDS, "title": st.sampled_from(["T"] * 8 + [" ", "x\ny"]), "description": st.just("d"),
     "kind": st.sampled_from([*KINDS, "wizard"]),
     "phase": st.sampled_from(["qa", "development"] * 4 + ["discovery"]),
     "priority": st.sampled_from([-1, 0, 1, 2] * 2 + [True]),
     "depends_on": st.lists(st.sampled_from(["a", "b", "c", "d"] * 3 + ["e"]), max_size=3)},
    optional={"acceptance": st.lists(st.sampled_from(["ok", " "]), max_size=2), "x": JSON},
), max_size=6)
"""Items of mostly valid fields, so that many reach the checks of the graph (repeats, cycles,
unknown and later-phase dependencies)."""

EXAMPLES = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def _parses_or_says_why(text: str) -> None:
    try:
        items = parse_backlog(text, kinds=KINDS, phases=PHASES)
    except BacklogInvalid as e:
        assert e.problems and str(e).startswith("the backlog is not valid")
    else:
        assert items and len({i.id for i in items}) == len(items)


LINES = st.lists(st.sampled_from(["```json", "```", "````", "~~~ json", "~~~", " ```JSON x",
                                   "```python", '{"items": [', "]}", "{}", "", "text",
                                   json.dumps(backlog_items()[0])]), max_size=12)


@EXAMPLES
@given(st.text() | st.binary().map(lambda b: b.decode("utf-8", "surrogateescape"))
       | LINES.map("\n".join))
def test_any_text_parses_or_raises_backlog_invalid(text: str) -> None:
    _parses_or_says_why(text)
    _parses_or_says_why(f"```json\n{text}\n```")


@EXAMPLES
@given(JSON | NEARLY_ITEMS.map(lambda items: {"items": items}))
def test_any_json_parses_or_raises_backlog_invalid(value: object) -> None:
    _parses_or_says_why(f"```json\n{json.dumps(value)}\n```")


# -- proposing and approving ---------------------------------------------------------------------


def in_discovery() -> TaskState:
    """A project in discovery whose analyst runs as ``run-1`` of job ``analyst-1``."""
    state = run(None, CreateTask("Shop", "PRD: a shop", workflow="project"), StartTask(),
                CompletePhase(), QueueJob("analyst-1", "product_analyst"))
    return run(state, StartJob("analyst-1", "run-1"))


def proposed(state: TaskState | None = None) -> TaskState:
    items = parse_backlog(answer(backlog_items()), kinds=KINDS, phases=PHASES)
    return run(state or in_discovery(), ProposeBacklog(items, "analyst-1", "run-1"))


def approved() -> TaskState:
    return run(proposed(), CompleteJob("analyst-1", "run-1"), RequestApproval("backlog"),
               Approve("go"))


def with_status(state: TaskState, item_id: str, status: BacklogItemStatus) -> TaskState:
    """``state`` with the item in ``status`` (spawning is not modelled yet: its events come
    later), with a child task when the status has one."""
    assert state.backlog is not None
    child = UUID(int=100) if status.has_child else None
    changed = replace(state.backlog.item(item_id), status=status, child_id=child)
    return replace(state, backlog=state.backlog.with_item(changed))


def refused(state: TaskState, command: object, error: type[Exception] = BacklogInvalid) -> str:
    with pytest.raises(error) as caught:
        decide(state, command, context(), TASK_ID)  # type: ignore[arg-type]
    return str(caught.value)


def test_backlog_phases_are_the_later_phases_that_do_not_end_the_task() -> None:
    assert backlog_phases(in_discovery()) == PHASES
    task = run(None, CreateTask("Fix", "a bug"))
    assert backlog_phases(task) == ("planning", "development", "review")


def test_proposing_records_the_analysts_backlog_waiting_for_approval() -> None:
    items = parse_backlog(answer(backlog_items()), kinds=KINDS, phases=PHASES)

    events = decide(in_discovery(), ProposeBacklog(items, "analyst-1", "run-1"), context(),
                    TASK_ID)

    assert types(events) == ["BacklogProposed"]
    assert isinstance(events[0], BacklogProposed)
    assert (events[0].job_id, events[0].run_id, events[0].version) == ("analyst-1", "run-1", 1)
    backlog = proposed().backlog
    assert backlog is not None
    assert (backlog.items, backlog.version, backlog.phase, backlog.approved) == (
        items, 1, "discovery", False)


def test_a_proposal_must_come_from_the_latest_run_of_a_job() -> None:
    items = parse_backlog(answer(backlog_items()), kinds=KINDS, phases=PHASES)
    state = in_discovery()

    assert "no job 'analyst-9'" in refused(state, ProposeBacklog(items, "analyst-9", "run-1"),
                                           JobNotFound)
    assert "run 'run-0' is not the latest run of job 'analyst-1'" in refused(
        state, ProposeBacklog(items, "analyst-1", "run-0"), JobRejected)
    assert "is cancelled" in refused(run(state, Cancel()),
                                     ProposeBacklog(items, "analyst-1", "run-1"), JobRejected)


def test_a_proposal_is_checked_again_but_for_its_kinds() -> None:
    state = in_discovery()
    unknown_kind = BacklogItem("a", "A", "do a", "wizard", "qa", 1)
    bad = [unknown_kind, BacklogItem("b", "B", "do b", "qa_engineer", "discovery", 1, ("c",))]

    message = refused(state, ProposeBacklog(bad, "analyst-1", "run-1"))

    assert "item 'b': phase 'discovery' is not a phase items run in" in message
    assert "wizard" not in message
    assert "the backlog has no items" in refused(state, ProposeBacklog([], "analyst-1", "run-1"))
    assert "items must be a list of BacklogItem" in refused(
        state, ProposeBacklog([{"id": "a"}], "analyst-1", "run-1"), InvalidCommand)  # type: ignore[list-item]


def test_a_new_proposal_replaces_a_backlog_without_children() -> None:
    state = run(proposed(), CompleteJob("analyst-1", "run-1"), RequestApproval("backlog"),
                RequestChanges("split the api"), QueueJob("analyst-2", "product_analyst"),
                StartJob("analyst-2", "run-2"))
    items = parse_backlog(answer(backlog_items()[:2]), kinds=KINDS, phases=PHASES)

    again = run(state, ProposeBacklog(items, "analyst-2", "run-2"))

    assert again.backlog is not None
    assert (again.backlog.version, [i.id for i in again.backlog.items]) == (2, ["ci", "schema"])
    spawned = with_status(state, "ci", BacklogItemStatus.spawned)
    assert "item 'ci' of the backlog already ran as child tasks; a new backlog would orphan" in \
        refused(spawned, ProposeBacklog(items, "analyst-2", "run-2"), JobRejected)


def test_approving_the_gate_approves_the_backlog_and_its_items() -> None:
    state = run(proposed(), CompleteJob("analyst-1", "run-1"), RequestApproval("backlog"))

    events = decide(state, Approve("go"), context(), TASK_ID)

    assert [type(e) for e in events] == [PhaseApproved, BacklogApproved, PhaseEntered]
    backlog = approved().backlog
    assert backlog is not None and backlog.approved
    assert {i.status for i in backlog.items} == {BacklogItemStatus.approved}


def test_approving_another_gate_leaves_the_backlog_alone() -> None:
    state = run(approved(), RequestApproval("design"))

    assert types(decide(state, Approve(), context(), TASK_ID)) == ["PhaseApproved",
                                                                   "PhaseEntered"]


# -- a person's edits ----------------------------------------------------------------------------


def test_an_added_item_waits_for_approval_or_is_approved_with_its_backlog() -> None:
    new = item("cache", "backend_developer", "development", 4, "schema")

    before = run(proposed(), AddBacklogItem(new))
    after = run(approved(), AddBacklogItem(new))

    assert before.backlog is not None and after.backlog is not None
    assert before.backlog.items[-1].status is BacklogItemStatus.proposed
    assert after.backlog.items[-1] == BacklogItem(
        "cache", "Build cache", "Make the cache work.", "backend_developer", "development", 4,
        ("schema",), ("cache has tests",), BacklogItemStatus.approved)
    assert types(decide(approved(), AddBacklogItem(new), context(), TASK_ID)) == [
        "BacklogItemAdded"]


@pytest.mark.parametrize(("new", "expected"), [
    (item("api", "backend_developer", "qa", 1), "item id 'api' is taken"),
    (item("cache", "backend_developer", "qa", 1, "redis"),
     "item 'cache' depends on 'redis', which is not an item of the backlog"),
    (item("cache", "backend_developer", "development", 1, "e2e"),
     "item 'cache' (development) depends on 'e2e' of the later phase qa"),
    (item("cache", "backend_developer", "discovery", 1),
     "item 'cache': phase 'discovery' is not a phase items run in"),
    (item("cache", "Backend Developer", "qa", 1),
     "item 'cache': kind 'Backend Developer' is not the name of an agent type"),
    ({"title": "no id"}, "the new item: has no id, description, kind, phase, priority"),
    ("cache", "the new item: must be an object"),
])  # fmt: skip
def test_an_added_item_is_refused_whole_naming_its_problem(new: object, expected: str) -> None:
    assert expected in refused(proposed(), AddBacklogItem(new))  # type: ignore[arg-type]


def test_an_item_may_not_be_added_in_a_phase_that_is_over() -> None:
    state = run(approved(), RequestApproval("design"), Approve(), CompletePhase())
    assert state.phase == "development"

    message = refused(state, AddBacklogItem(item("cache", "backend_developer", "infrastructure",
                                                 1)))

    assert "phase 'infrastructure' is not a phase items run in" in message
    assert "phases items run in: development, qa, deployment," in message


def test_edits_need_a_backlog_and_an_open_task() -> None:
    new = AddBacklogItem(item("cache", "backend_developer", "qa", 1))

    assert "the task has no backlog yet" in refused(in_discovery(), new, JobRejected)
    assert "the task is cancelled" in refused(run(proposed(), Cancel()), new, JobRejected)


def test_a_change_records_only_the_fields_that_change() -> None:
    state = proposed()

    events = decide(state, ChangeBacklogItem("api", title="Build the API", priority=8,
                                             depends_on=["schema"]), context(), TASK_ID)

    assert len(events) == 1 and isinstance(events[0], BacklogItemChanged)
    assert (events[0].item_id, events[0].changes) == (
        "api", {"title": "Build the API", "depends_on": ["schema"]})
    after = run(state, ChangeBacklogItem("api", title="Build the API", depends_on=["schema"]))
    assert after.backlog is not None
    changed = after.backlog.item("api")
    assert changed is not None
    assert (changed.title, changed.depends_on, changed.priority) == ("Build the API",
                                                                     ("schema",), 8)
    assert decide(after, ChangeBacklogItem("api", title="Build the API"), context(),
                  TASK_ID) == []


@pytest.mark.parametrize(("change", "expected"), [
    (ChangeBacklogItem("schema", depends_on=["ui"]),
     "items 'schema' → 'ui' → 'api' → 'schema' depend on each other in a cycle"),
    (ChangeBacklogItem("api", phase="qa"),
     "item 'ui' (development) depends on 'api' of the later phase qa"),
    (ChangeBacklogItem("api", title="ok", depends_on=["redis"]),
     "item 'api' depends on 'redis', which is not an item of the backlog"),
    (ChangeBacklogItem("api", priority=1.5),  # type: ignore[arg-type]
     "item 'api': priority must be a whole number"),
])  # fmt: skip
def test_a_change_is_checked_on_the_backlog_it_would_leave(
    change: ChangeBacklogItem, expected: str
) -> None:
    assert expected in refused(proposed(), change)


def test_an_item_may_move_to_the_phase_of_its_dependencies() -> None:
    state = run(proposed(), ChangeBacklogItem("e2e", phase="development"))

    assert state.backlog is not None
    assert state.backlog.item("e2e") == replace(state.backlog.items[6], phase="development")


def test_a_change_needs_a_field_and_an_item_of_the_backlog() -> None:
    state = proposed()

    assert "nothing to change; give one or more of title," in refused(
        state, ChangeBacklogItem("api"), InvalidCommand)
    assert "the backlog has no item 'redis'" in refused(
        state, ChangeBacklogItem("redis", title="x"), InvalidCommand)
    dropped = run(state, DropBacklogItem("docs"))
    assert "item 'docs' was dropped" in refused(dropped, ChangeBacklogItem("docs", title="x"),
                                                JobRejected)


@pytest.mark.parametrize(("status", "expected"), [
    (BacklogItemStatus.spawned, "item 'api' runs as child task 00000000-0000-0000-0000-000000000064"
                                "; changing or dropping it would orphan that work"),
    (BacklogItemStatus.finished, "item 'api' has finished (child task"),
    (BacklogItemStatus.failed, "item 'api' failed (child task"),
])  # fmt: skip
def test_an_item_with_a_child_task_is_neither_changed_nor_dropped(
    status: BacklogItemStatus, expected: str
) -> None:
    state = with_status(approved(), "api", status)

    assert expected in refused(state, ChangeBacklogItem("api", title="x"), JobRejected)
    assert expected in refused(state, DropBacklogItem("api"), JobRejected)


def test_a_dropped_item_stays_for_the_record_but_no_longer_counts() -> None:
    state = run(approved(), DropBacklogItem("docs", "not needed"))

    assert state.backlog is not None
    assert state.backlog.item("docs").status is BacklogItemStatus.dropped  # type: ignore[union-attr]
    assert "docs" not in [i.id for i in state.backlog.live()]
    assert "item 'docs' was dropped" in refused(state, DropBacklogItem("docs"), JobRejected)
    assert "item id 'docs' is taken by a dropped item" in refused(
        state, AddBacklogItem(item("docs", "technical_writer", "qa", 1)))
    assert "item 'x' depends on 'docs', which was dropped" in refused(
        state, AddBacklogItem(item("x", "technical_writer", "qa", 1, "docs")))


def test_an_item_others_depend_on_is_not_dropped() -> None:
    message = refused(proposed(), DropBacklogItem("schema"))

    assert "(2 problems)" in message
    assert "item 'api' depends on 'schema'; change its depends_on or drop it first" in message
    assert "item 'auth' depends on 'schema'" in message


def test_reordering_hands_the_priorities_out_again_in_the_new_order() -> None:
    state = proposed()
    order = ["docs", "ci", "schema", "api", "auth", "ui", "e2e", "load"]

    events = decide(state, ReorderBacklog(order), context(), TASK_ID)
    after = run(state, ReorderBacklog(order))

    assert isinstance(events[0], BacklogReordered)
    assert events[0].priorities == [9, 8, 7, 6, 5, 5, 3, 1]
    assert after.backlog is not None
    assert [(i.id, i.priority) for i in after.backlog.items] == list(
        zip(order, [9, 8, 7, 6, 5, 5, 3, 1], strict=True))
    assert decide(after, ReorderBacklog(order), context(), TASK_ID) == []


def test_dropped_items_stay_last_when_reordering() -> None:
    state = run(proposed(), DropBacklogItem("docs"))
    order = ["load", "e2e", "ui", "auth", "api", "schema", "ci"]

    after = run(state, ReorderBacklog(order))

    assert after.backlog is not None
    assert [i.id for i in after.backlog.items] == [*order, "docs"]
    assert after.backlog.items[-1].priority == 1


def test_a_reorder_must_name_every_item_not_dropped_once() -> None:
    state = run(proposed(), DropBacklogItem("docs"))

    message = refused(state, ReorderBacklog(["api", "api", "redis", "docs", "ci"]))

    assert "item 'api' is named 2 times" in message
    assert "item 'redis' is not an item of the backlog" in message
    assert "item 'docs' was dropped" in message
    assert "item_ids leaves out items 'schema', 'auth', 'ui', 'e2e', 'load'" in message
    assert "item_ids must be a list of item ids, got str" in refused(
        state, ReorderBacklog("api"), InvalidCommand)


# -- the snapshot form ---------------------------------------------------------------------------


def test_the_backlog_round_trips_through_json() -> None:
    state = with_status(run(approved(), DropBacklogItem("docs"),
                            AddBacklogItem(item("cache", "backend_developer", "qa", 2))),
                        "ci", BacklogItemStatus.spawned)

    data = json.loads(json.dumps(state.to_dict()))

    assert TaskState.from_dict(data) == state
    assert data["backlog"]["items"][0]["child_id"] == str(UUID(int=100))


def test_a_snapshot_from_before_the_backlog_loads_without_one() -> None:
    data = in_discovery().to_dict()
    del data["backlog"]

    assert TaskState.from_dict(data).backlog is None


def test_the_backlog_events_fold_the_same_on_replay() -> None:
    commands = [ChangeBacklogItem("api", title="API"), DropBacklogItem("docs"),
                AddBacklogItem(item("cache", "backend_developer", "qa", 2, "api")),
                ReorderBacklog(["cache", "ci", "schema", "api", "auth", "ui", "e2e", "load"])]
    state = proposed()
    events = []
    for command in commands:
        new = decide(state, command, context(), TASK_ID)
        events += new
        state = fold(new, state)

    assert types(events) == ["BacklogItemChanged", "BacklogItemDropped", "BacklogItemAdded",
                             "BacklogReordered"]
    assert isinstance(events[1], BacklogItemDropped) and isinstance(events[2], BacklogItemAdded)
    assert fold(events, proposed()) == state


# -- what may start ------------------------------------------------------------------------------


def test_ready_items_wait_for_approval_and_their_dependencies() -> None:
    assert ready_items(proposed(), "development") == []
    state = approved()

    def ready(phase: str = "development") -> list[str]:
        return [i.id for i in ready_items(state, phase)]

    assert ready() == ["schema", "docs"]
    assert ready("infrastructure") == ["ci"]
    state = with_status(state, "schema", BacklogItemStatus.finished)
    assert ready() == ["auth", "docs"]  # api also waits for ci (infrastructure)
    state = with_status(state, "ci", BacklogItemStatus.finished)
    assert ready() == ["api", "auth", "docs"]
    state = with_status(state, "api", BacklogItemStatus.spawned)
    state = with_status(state, "auth", BacklogItemStatus.failed)
    assert ready() == ["docs"]
    assert ready("qa") == []


def test_ready_items_of_a_priority_keep_the_backlog_order() -> None:
    state = run(approved(), ChangeBacklogItem("docs", priority=9))

    assert [i.id for i in ready_items(state, "development")] == ["schema", "docs"]
    state = run(state, ReorderBacklog(["docs", "schema", "ci", "api", "auth", "ui", "e2e",
                                       "load"]))
    assert [i.id for i in ready_items(state, "development")] == ["docs", "schema"]


def test_a_phase_is_done_when_every_item_not_dropped_has_finished() -> None:
    assert not phase_items_done(proposed(), "qa")
    state = approved()
    assert phase_items_done(state, "deployment")  # no items there
    assert not phase_items_done(state, "qa")
    state = with_status(state, "e2e", BacklogItemStatus.finished)
    assert not phase_items_done(state, "qa")
    state = with_status(state, "load", BacklogItemStatus.failed)
    assert not phase_items_done(state, "qa")
    state = with_status(state, "load", BacklogItemStatus.finished)
    assert phase_items_done(state, "qa")
    assert phase_items_done(run(approved(), DropBacklogItem("e2e"), DropBacklogItem("load")),
                            "qa")
