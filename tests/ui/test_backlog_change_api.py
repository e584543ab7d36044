"""A change of a project's backlog after a PRD edit (issue #14 item 6), through the API and the
project page: the waiting change is in the task view's ``backlog.pending`` and on the page
with Approve / Reject, and a person's ``approve_backlog_change`` applies it.

The project is seeded as in ``test_children_api`` (paused: its pod spawns nothing), then its
re-plan is recorded as ipa's pod would: the edit, the re-plan job, the change it proposed."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import anyio
import pytest

from ipa.domain import (
    BacklogItem,
    Context,
    Pause,
    ProposeBacklogChange,
    QueueJob,
    Resume,
    StartJob,
    UpdateSpec,
    decide,
)
from ipa.eventstore import EventStore

from .test_api import assert_error
from .test_children_api import ITEMS, Swarm, api, seed_project  # noqa: F401 (a fixture)

pytestmark = pytest.mark.anyio

SEARCH = BacklogItem("search", "Build search", "Find products.", "backend_developer",
                     "development", 4, ("schema",), ("search has tests",))


async def record(store: EventStore, swarm: Swarm, *commands) -> None:
    for command in commands:
        state = await store.load(swarm.project)
        ctx = Context(actor="ipa:test", now=datetime.now(UTC), correlation_id="seed")
        await store.append(swarm.project, decide(state, command, ctx, swarm.project),
                           state.version)


@pytest.fixture
async def changed(api, store: EventStore) -> Swarm:  # noqa: F811
    """The seeded project after a PRD edit whose re-plan adds ``search`` and retitles
    ``ui``."""
    swarm = await seed_project(store)
    items = [*(replace(i, title="Build the shop UI") if i.id == "ui" else i for i in ITEMS),
             SEARCH]
    await record(store, swarm, UpdateSpec("PRD: a shop with search"), Resume(),
                 QueueJob("replan-1", "product_analyst", spec={"replan": 1}),
                 StartJob("replan-1", "run-r1"), ProposeBacklogChange(items, "replan-1", "run-r1"),
                 Pause("seeded by the test"))
    with anyio.fail_after(10):
        await api.task_list.wait_for(await store.head_position())
    return swarm


async def test_the_waiting_change_is_shown_and_a_person_approves_it(
    api, changed: Swarm  # noqa: F811
) -> None:
    await api.supervisor.start(changed.project)
    view = (await api.get(changed.url)).json()
    pending = view["backlog"]["pending"]
    assert [i["id"] for i in pending["add"]] == ["search"]
    assert pending["change"] == [{"item_id": "ui", "changes": {"title": "Build the shop UI"}}]
    page = (await api.get(f"/pods/{changed.project}")).text
    assert "Change 1 waits for approval" in page and 'data-command="approve_backlog_change"' in page
    assert "Build the shop UI" in page

    stale = await api.post(f"{changed.url}/approve_backlog_change", json={"number": 2})
    approved = await api.post(f"{changed.url}/approve_backlog_change", json={"number": 1},
                              headers={"X-IPA-Actor": "user:ann"})

    assert "change 1 waits for approval, not change 2" in assert_error(
        stale, 409, "command_not_allowed")["message"]
    assert approved.status_code == 200, approved.text
    backlog = approved.json()["backlog"]
    assert backlog["pending"] is None and backlog["version"] == 2
    items = {i["id"]: i for i in backlog["items"]}
    assert items["search"]["status"] == "approved"
    assert items["ui"]["title"] == "Build the shop UI"
    again = await api.post(f"{changed.url}/reject_backlog_change", json={"reason": "no"})
    assert "no change waiting" in assert_error(again, 409, "command_not_allowed")["message"]
