"""Task views kept while their state is the same object (``ui/views.py``)."""

from __future__ import annotations

from ipa.domain import crash_attention
from ipa.projections import task_state
from ipa.ui.views import Views

from ..eventstore.helpers import task_history


def test_a_state_is_rendered_once_and_each_reader_gets_its_own_copy() -> None:
    _, events = task_history(3)
    state = task_state.replay(events)
    views = Views()

    first = views.view(state)
    first["node"] = "added by one reader"
    second = views.view(state)

    assert second == task_state.view(state)
    assert "node" not in second
    assert (views.misses, views.hits) == (1, 1)


def test_a_new_state_of_the_task_is_rendered_anew() -> None:
    _, events = task_history(4)
    views = Views()
    paused = task_state.replay(events[:3])
    views.view(paused)

    resumed = task_state.replay(events[3:], paused)
    equal_but_another_object = task_state.replay(events[:3])

    assert views.view(resumed) == task_state.view(resumed)
    assert views.view(resumed)["status"] == "running"
    assert views.view(equal_but_another_object) == task_state.view(paused)
    assert views.misses == 3  # by identity of the state, never by its version alone


def test_a_crashed_pods_view_says_so_and_is_not_kept() -> None:
    _, events = task_history(2)
    state = task_state.replay(events)
    views = Views()
    views.view(state)
    crashed = crash_attention("boom")

    shown = views.view(state, crashed=crashed)

    assert shown == task_state.view(state, crashed=crashed)
    assert shown["attention"]["kind"] == "crashed"
    assert views.view(state)["attention"] is None


def test_at_most_size_tasks_are_kept() -> None:
    views = Views(size=2)
    states = [task_state.replay(task_history(2)[1]) for _ in range(3)]
    for state in states:
        views.view(state)

    views.view(states[0])  # pushed out by the third

    assert len(views) == 2 and views.misses == 4
