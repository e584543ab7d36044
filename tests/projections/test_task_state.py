"""The pod state view: the same fold for live state and replay, JSON-able, with a diff."""

from __future__ import annotations

import json

from ipa.projections import task_state

from ..eventstore.helpers import task_history


def test_live_fold_one_by_one_equals_replay_of_all() -> None:
    _, events = task_history(9)
    live = None
    for event in events:
        live = task_state.apply(live, event)

    assert live == task_state.replay(events)


def test_replay_from_a_snapshot_state_equals_replay_from_nothing() -> None:
    _, events = task_history(9)
    halfway = task_state.replay(events[:4])

    assert task_state.replay(events[4:], halfway) == task_state.replay(events)


def test_view_is_json_and_lists_the_commands_allowed_now() -> None:
    _, events = task_history(3)  # created, started, paused
    view = task_state.view(task_state.replay(events))

    assert json.loads(json.dumps(view)) == view
    assert view["status"] == "paused"
    assert view["allowed_commands"] == ["cancel", "resume", "update_spec"]


def test_diff_names_only_what_changed_since_the_previous_version() -> None:
    _, events = task_history(3)
    before = task_state.view(task_state.replay(events[:2]))
    after = task_state.view(task_state.replay(events))

    changed = task_state.diff(before, after)

    assert changed["status"] == "paused" and changed["version"] == 3
    assert "title" not in changed
