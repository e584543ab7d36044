"""``evolve`` copies the state without ``dataclasses.replace`` (``task._next_state``, for the
speed of every load): the copy must be the value ``replace`` would make, now and after any
change to ``TaskState``."""

from __future__ import annotations

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

from .helpers import TASK_ID, context, created, running, started

FIELDS = [f.name for f in fields(TaskState)]


def test_task_state_is_a_plain_record_of_its_fields():
    # What makes a copy of __dict__ the same as replace(): if any of these changes,
    # _next_state must change with it.
    assert "__post_init__" not in vars(TaskState)
    assert TaskState.__mro__[1:] == (object,)
    assert all(f.init for f in fields(TaskState))
    assert not [name for name, value in vars(TaskState).items()
                if isinstance(value, functools.cached_property)]
    assert not hasattr(TaskState, "__slots__")


VALUES = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.booleans(),
                   st.tuples(st.integers()))


# Derandomized, no deadline and no speed check: the same examples on every run, however
# loaded the machine (two workers beside browsers and servers).
@settings(max_examples=200, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=6))
def test_a_copy_with_changes_is_what_replace_makes(changes):
    state = started()
    copied = task_module._next_state(state, changes)
    expected = replace(state, **changes)
    assert copied == expected
    assert vars(copied) == vars(expected)  # no attribute more or less
    assert copied is not state and vars(state) == vars(started())  # the old state is untouched


def test_a_change_to_no_field_is_refused():
    with pytest.raises(TypeError, match="no field colour"):
        task_module._next_state(created(), {"colour": "red"})


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


def test_a_fold_is_the_fold_through_replace(monkeypatch):
    events = history()
    base = running()
    fast = [base]
    for event in events:
        fast.append(evolve(fast[-1], event))
    monkeypatch.setattr(task_module, "_next_state",
                        lambda state, changes: replace(state, **changes))
    reference = [base]
    for event in events:
        reference.append(evolve(reference[-1], event))
    assert len(fast) == 1 + 6
    assert [vars(s) for s in fast] == [vars(s) for s in reference]
