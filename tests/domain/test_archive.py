"""Archiving a finished task: only a finished one, never a workflow move, undone by unarchive
or by a retry."""

from __future__ import annotations

import pytest

from ipa.domain import (
    Archive,
    Cancel,
    CommandRejected,
    Fail,
    Retry,
    Status,
    TaskState,
    Unarchive,
    allowed_commands,
    decide,
    fold,
    get_workflow,
)

from .helpers import TASK_ID, context, created, run, running, types


@pytest.mark.parametrize("end", [Cancel(), Fail(reason="the build is broken")],
                         ids=["cancelled", "failed"])
def test_a_finished_task_is_archived_and_keeps_its_phase_and_status(end) -> None:
    finished = run(running(), end)

    events = decide(finished, Archive(), context(), TASK_ID)
    archived = fold(events, finished)

    assert types(events) == ["TaskArchived"]
    assert archived.archived and not finished.archived
    assert (archived.status, archived.phase) == (finished.status, finished.phase)
    assert archived.to_dict()["archived"] is True
    assert TaskState.from_dict(archived.to_dict()) == archived


def test_a_completed_task_is_archived() -> None:
    state = run(running(), Cancel())
    completed = TaskState.from_dict({**state.to_dict(), "status": "completed"})

    assert fold(decide(completed, Archive(), context(), TASK_ID), completed).archived


@pytest.mark.parametrize("make", [created, running], ids=["pending", "running"])
def test_an_unfinished_task_is_not_archived_and_the_refusal_says_why(make) -> None:
    state = make()

    with pytest.raises(CommandRejected, match=(
            rf"cannot archive: the task is {state.status.value}; only a finished task "
            r"\(completed, failed or cancelled\) is archived")):
        decide(state, Archive(), context(), TASK_ID)


def test_unarchive_brings_it_back_and_repeats_record_nothing() -> None:
    archived = run(running(), Cancel(), Archive())

    assert decide(archived, Archive(), context(), TASK_ID) == []
    back = run(archived, Unarchive())
    assert not back.archived and back.version == archived.version + 1
    assert decide(back, Unarchive(), context(), TASK_ID) == []


def test_a_retried_failed_task_leaves_the_archive() -> None:
    archived = run(running(), Fail(reason="flaky"), Archive())

    retried = run(archived, Retry())

    assert retried.status is Status.running and not retried.archived


def test_archive_is_never_a_workflow_move() -> None:
    for status in Status:
        allowed = allowed_commands(get_workflow("task"), "review", status)
        assert not {"archive", "unarchive"} & set(allowed)


def test_a_snapshot_from_before_archiving_loads_unarchived() -> None:
    data = run(running(), Cancel()).to_dict()
    for key in ("archived", "forked_from", "cloned_from"):
        del data[key]

    state = TaskState.from_dict(data)

    assert (state.archived, state.forked_from, state.cloned_from) == (False, None, None)
