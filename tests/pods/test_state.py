"""A pod's state records commands on the real store: several commands in one append, all or
none; what follows from the state they leave decided in the same append."""

from __future__ import annotations

import pytest

from ipa.domain import CommandRejected, Pause, QueueJob, Resume, StartTask, Status
from ipa.eventstore import EventStore
from ipa.pods import PodState

from .helpers import python

pytestmark = pytest.mark.anyio


async def test_commands_recorded_together_share_one_append(create_task, store: EventStore) -> None:
    state = PodState(await create_task(), store)
    await state.load()

    after = await state.execute_all([StartTask(), QueueJob(job_id="a", agent="developer",
                                                           spec=python("pass"))])

    events = await store.read(state.task_id)
    assert [e.type for e in events] == ["TaskCreated", "TaskStarted", "JobQueued"]
    assert (events[1].timestamp, events[1].correlation_id) == (events[2].timestamp,
                                                              events[2].correlation_id)
    assert after.status is Status.running and "a" in after.jobs
    assert (await store.load(state.task_id)).version == after.version == 3


async def test_one_refused_command_records_none_of_them(create_task, store: EventStore) -> None:
    state = PodState(await create_task(), store)
    await state.load()

    with pytest.raises(CommandRejected):
        await state.execute_all([StartTask(), Resume()])  # a running task cannot resume

    assert [e.type for e in await store.read(state.task_id)] == ["TaskCreated"]
    assert state.current.version == 1 and state.current.status is Status.pending


async def test_what_follows_is_decided_on_the_state_the_commands_leave(
    create_task, store: EventStore
) -> None:
    state = PodState(await create_task(), store)
    await state.load()
    seen = []

    def then(after):
        seen.append(after.status)
        return [Pause(reason="then")] if after.status is Status.running else []

    after = await state.execute_all([StartTask()], then=then)

    assert seen == [Status.running]
    assert after.status is Status.paused
    assert [e.type for e in await store.read(state.task_id)] == [
        "TaskCreated", "TaskStarted", "TaskPaused"]
