"""``evolve`` copies the state and its jobs without ``dataclasses.replace`` (``state.changed``,
for the speed of every load) and their JSON values without ``copy.deepcopy``
(``state.json_copy``): each copy must be the value the standard one makes, now and after any
change to ``TaskState`` or ``Job``."""

from __future__ import annotations

import copy
import functools
from dataclasses import fields, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipa.domain import (
    FailJob,
    Pause,
    QueueJob,
    Resume,
    StartJob,
    TaskEvent,
    TaskState,
    decide,
    evolve,
)
from ipa.domain import task as task_module
from ipa.domain.state import Job, changed, json_copy

from .helpers import TASK_ID, context, created, running, started

FIELDS = [f.name for f in fields(TaskState)]


@pytest.mark.parametrize("record", [TaskState, Job])
def test_the_records_copied_are_plain_records_of_their_fields(record):
    # What makes a copy of __dict__ the same as replace(): if any of these changes,
    # state.changed must change with it.
    assert "__post_init__" not in vars(record)
    assert record.__mro__[1:] == (object,)
    assert all(f.init for f in fields(record))
    assert not [name for name, value in vars(record).items()
                if isinstance(value, functools.cached_property)]
    assert not hasattr(record, "__slots__")


VALUES = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.booleans(),
                   st.tuples(st.integers()))


# Derandomized, no deadline and no speed check: the same examples on every run, however
# loaded the machine (two workers beside browsers and servers).
@settings(max_examples=200, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=6))
def test_a_copy_with_changes_is_what_replace_makes(changes):
    state = started()
    copied = changed(state, changes)
    expected = replace(state, **changes)
    assert copied == expected
    assert vars(copied) == vars(expected)  # no attribute more or less
    assert copied is not state and vars(state) == vars(started())  # the old state is untouched


JOB_FIELDS = [f.name for f in fields(Job)]


@settings(max_examples=100, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(JOB_FIELDS), VALUES, max_size=6))
def test_a_job_copied_with_changes_is_what_replace_makes(changes):
    job = next(iter(history_state().jobs.values()))
    before = dict(vars(job))
    copied = changed(job, changes)
    expected = replace(job, **changes)
    assert copied == expected
    assert vars(copied) == vars(expected)
    assert copied is not job and vars(job) == before


def test_a_change_to_no_field_is_refused():
    with pytest.raises(TypeError, match="TaskState has no field colour"):
        changed(created(), {"colour": "red"})
    with pytest.raises(TypeError, match="Job has no field colour"):
        changed(next(iter(history_state().jobs.values())), {"colour": "red"})


JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=5)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=3), inner, max_size=4)),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(value=JSON)
def test_a_json_copy_is_what_deepcopy_makes_and_shares_nothing_mutable(value):
    copied = json_copy(value)
    assert copied == copy.deepcopy(value)
    assert type(copied) is type(value)

    def containers(v):
        if isinstance(v, dict):
            yield v
            for x in v.values():
                yield from containers(x)
        elif isinstance(v, list):
            yield v
            for x in v:
                yield from containers(x)

    assert not {id(c) for c in containers(copied)} & {id(c) for c in containers(value)}


def test_anything_else_in_a_json_value_is_deep_copied():
    inner = [1, 2]
    value = {"a": (inner,), "b": {"c": {3}}}
    copied = json_copy(value)
    assert copied == value and copied["a"][0] is not inner and copied["b"]["c"] is not value[
        "b"]["c"]


def history() -> list[TaskEvent]:
    """A task with jobs, a failure and its retry, a pause and a resume."""
    state, events = None, []
    for command in [QueueJob("a", "spec_writer"), QueueJob("b", "developer", depends_on=["a"]),
                    StartJob("a", "run-1"), FailJob("a", "run-1", "exit 1"), Pause("lunch"),
                    Resume()]:
        state = state or running()
        new = decide(state, command, context(), TASK_ID)
        for event in new:
            state = evolve(state, event)
        events += new
    return events


def history_state() -> TaskState:
    state = running()
    for event in history():
        state = evolve(state, event)
    return state


def test_a_fold_is_the_fold_through_replace(monkeypatch):
    events = history()
    base = running()
    fast = [base]
    for event in events:
        fast.append(evolve(fast[-1], event))
    from ipa.domain import agents, queue

    monkeypatch.setattr(task_module, "changed", lambda record, changes: replace(record, **changes))
    monkeypatch.setattr(queue, "changed", lambda record, changes: replace(record, **changes))
    monkeypatch.setattr(agents, "changed", lambda record, changes: replace(record, **changes))
    monkeypatch.setattr(queue, "json_copy", copy.deepcopy)
    reference = [base]
    for event in events:
        reference.append(evolve(reference[-1], event))
    assert len(fast) == 1 + 6
    assert [vars(s) for s in fast] == [vars(s) for s in reference]
