"""JIRA (REST v2) as it behaves (issue #13): an issue already in the wanted status is left as it
stands, and comments arrive in the wiki markup v2 renders."""

from __future__ import annotations

import pytest

from ipa.eventstore import EventStore

from ..pods.helpers import wait_for
from .services import Services
from .test_delivery import delivered, events_of, failures, healthy, start

pytestmark = pytest.mark.anyio


async def test_an_issue_already_in_the_wanted_status_is_delivered_as_it_stands(
    supervisor, create_task, services: Services, store: EventStore
) -> None:
    services.issues["KEY-1"]["status"] = "In Progress"  # a person moved it first
    pod = await start(supervisor, create_task, jira={
        "issue": "KEY-1", "approval": False, "statuses": {"spec_clarification": "In Progress"}})

    state = await wait_for(pod, delivered("jira:issue_status"))

    assert failures(state) == [] and state.outbox.incidents == ()
    assert services.calls("GET", r"/rest/api/2/issue/KEY-1\?fields=status")
    assert not services.calls("POST", r"/rest/api/2/issue/KEY-1/transitions")
    assert services.issues["KEY-1"]["status"] == "In Progress"
    assert not await events_of(store, pod, "SyncIncident")
    assert healthy(pod)


async def test_an_issue_elsewhere_is_moved_by_its_transition(
    supervisor, create_task, services: Services
) -> None:
    pod = await start(supervisor, create_task, jira={
        "issue": "KEY-1", "approval": False, "statuses": {"spec_clarification": "In Review"}})

    await wait_for(pod, delivered("jira:issue_status"))

    assert services.issues["KEY-1"]["status"] == "In Review"
    assert len(services.calls("POST", r"/rest/api/2/issue/KEY-1/transitions")) == 1


async def test_a_comment_reaches_jira_in_wiki_markup(
    supervisor, create_task, services: Services
) -> None:
    pod = await start(supervisor, create_task, jira={"issue": "KEY-1", "approval": False})

    await wait_for(pod, delivered("jira:comment"))

    (comment,) = services.issues["KEY-1"]["comments"].values()
    assert comment == "*ipa*: task “t” is *running* in phase *spec_clarification*."
