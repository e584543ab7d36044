"""The outbox against a local GitHub/JIRA: batching, duplicate suppression, retries, rate
limits, and each kind of refusal as a clear event while the pod stays healthy."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from ipa.domain import (
    ApproveUpdate,
    ConfigureSync,
    Pause,
    QueueUpdate,
    Resume,
    Status,
    SyncNow,
    TaskState,
    UpdateSpec,
    UpdateStatus,
)
from ipa.eventstore import EventStore
from ipa.pods import PodStatus

from ..pods.helpers import wait_for
from .conftest import git
from .services import Services

pytestmark = pytest.mark.anyio
COMMENT = r"/rest/api/2/issue/KEY-1/comment"


async def start(supervisor, create_task, repo: str | None = None, **config):
    pod = await supervisor.start(await create_task(repo=repo))
    await wait_for(pod, lambda s: s.status is Status.running)
    await pod.execute(ConfigureSync(**config), actor="user:alice")
    return pod


def entries(state: TaskState, target: str):
    return [e for e in state.outbox.entries if e.target == target]


def delivered(target: str):
    return lambda s: any(e.status is UpdateStatus.delivered for e in entries(s, target))


def failures(state: TaskState):
    return [d for d in state.outbox.deliveries if d.outcome == "failed"]


def healthy(pod) -> bool:
    return pod.status is PodStatus.ready and not pod.crashes


async def events_of(store: EventStore, pod, kind: str):
    return [e for e in await store.read(pod.task_id) if e.type == kind]


async def test_changes_within_the_window_are_one_update_and_repeats_are_suppressed(
    supervisor, create_task, services: Services, store: EventStore
) -> None:
    pod = await start(supervisor, create_task, jira={"issue": "KEY-1", "approval": False})
    await wait_for(pod, delivered("jira:comment"))
    pod.sync.settings = replace(pod.sync.settings, batch_window=0.5)

    for command in (Pause(), Resume(), Pause(), Resume(), Pause()):
        await pod.execute(command)
    state = await wait_for(pod, lambda s: len(entries(s, "jira:comment")) == 2
                           and entries(s, "jira:comment")[1].status is UpdateStatus.delivered)

    assert "*paused*" in entries(state, "jira:comment")[1].payload["body"]  # wiki markup
    assert len(services.calls("POST", COMMENT)) == 1
    assert len(services.calls("PUT", COMMENT + r"/\d+")) == 1
    assert "*paused*" in next(iter(services.issues["KEY-1"]["comments"].values()))

    await pod.execute(UpdateSpec(description="a new description"))  # not shown outside
    await pod.execute(SyncNow())
    await wait_for(pod, lambda s: s.outbox.sync_requested_at is not None)
    assert len(entries(pod.get_state(), "jira:comment")) == 2
    assert len(await events_of(store, pod, "UpdateQueued")) == 2
    assert healthy(pod)


async def test_server_errors_and_timeouts_are_retried_with_backoff(
    supervisor, create_task, services: Services
) -> None:
    services.fail("POST", COMMENT, 503)
    services.fail("POST", COMMENT, 200, delay=1.5)  # longer than the 1 s request timeout
    pod = await start(supervisor, create_task, jira={"issue": "KEY-1", "approval": False})

    state = await wait_for(pod, delivered("jira:comment"))

    first, second = failures(state)
    assert first.status_code == 503 and "jira: server error" in first.reason
    assert "timed out" in second.reason and second.status_code is None
    (entry,) = entries(state, "jira:comment")
    assert entry.attempts == 3 and entry.last_error is None
    assert healthy(pod)


async def test_retry_after_and_the_github_rate_limit_reset_are_respected(
    supervisor, create_task, services: Services, store: EventStore
) -> None:
    reset = int(datetime.now().timestamp()) + 30
    services.fail("POST", COMMENT, 429, headers={"Retry-After": "20"})
    services.fail("POST", r"/repos/o/n/issues/1/comments", 403,
                  headers={"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
                  body={"message": "API rate limit exceeded"})
    pod = await start(supervisor, create_task, jira={"issue": "KEY-1", "approval": False},
                      github={"repo": "o/n", "approval": False})
    await pod.execute(QueueUpdate(update_id="c1", connector="github", kind="status_comment",
                                  payload={"number": 1, "body": "hello"}))

    await wait_for(pod, lambda s: len(failures(s)) == 2)

    failed = {e.data["connector"]: e for e in await events_of(store, pod, "UpdateFailed")}
    waited = datetime.fromisoformat(failed["jira"].data["retry_at"]) - failed["jira"].timestamp
    assert 19 <= waited.total_seconds() <= 21 and "rate limited" in failed["jira"].data["reason"]
    retry_at = datetime.fromisoformat(failed["github"].data["retry_at"])
    assert abs(retry_at.timestamp() - reset) <= 1
    assert "API rate limit exceeded" in failed["github"].data["reason"]
    assert len(services.calls("POST", COMMENT)) == 1  # nothing sent before the time given

    await pod.execute(SyncNow(), actor="user:alice")  # a person does not want to wait

    await wait_for(pod, lambda s: delivered("jira:comment")(s)
                   and delivered("github:status_comment")(s))
    assert healthy(pod)


async def test_a_wrong_token_is_a_clear_event_and_the_update_waits_for_a_person(
    supervisor, create_task, services: Services, with_settings
) -> None:
    pod = await start(supervisor, create_task, jira={"issue": "KEY-1", "approval": False})
    pod.sync.settings = replace(pod.sync.settings, jira_token="expired")
    pod.sync._connectors.clear()
    await pod.execute(Pause())  # a new comment, sent with the expired token

    state = await wait_for(pod, lambda s: any(f.status_code == 401 for f in failures(s))
                           and s.outbox.incidents)

    failure = next(f for f in failures(state) if f.status_code == 401)
    assert failure.connector == "jira"
    assert "jira: the token was refused (wrong or expired)" in failure.reason
    held = next(e for e in entries(state, "jira:comment") if e.update_id == failure.update_id)
    assert held.status is UpdateStatus.held
    assert [(i.connector, i.kind) for i in state.outbox.incidents] == [("jira", "auth")]

    await pod.execute(SyncNow(), actor="user:alice")
    state = await wait_for(pod, lambda s: len([f for f in failures(s) if f.status_code == 401])
                           == 2)
    assert healthy(pod)


async def test_a_repository_that_does_not_exist_is_an_incident(
    supervisor, create_task, services: Services
) -> None:
    pod = await start(supervisor, create_task, github={"repo": "o/gone", "approval": False})
    await pod.execute(QueueUpdate(update_id="c1", connector="github", kind="status_comment",
                                  payload={"number": 1, "body": "hello"}))

    state = await wait_for(pod, lambda s: s.outbox.incidents)

    (incident,) = state.outbox.incidents
    assert (incident.connector, incident.kind) == ("github", "repository_not_found")
    assert "404" in incident.reason
    assert state.outbox.entry("c1").status is UpdateStatus.held
    assert healthy(pod)


async def test_a_422_is_a_clear_event(supervisor, create_task, services: Services) -> None:
    services.fail("POST", r"/repos/o/n/issues/1/comments", 422,
                  body={"message": "Validation Failed",
                        "errors": [{"message": "body is too long"}]})
    pod = await start(supervisor, create_task, github={"repo": "o/n", "approval": False})
    await pod.execute(QueueUpdate(update_id="c1", connector="github", kind="status_comment",
                                  payload={"number": 1, "body": "hello"}))

    state = await wait_for(pod, lambda s: failures(s))

    (failure,) = failures(state)
    assert failure.status_code == 422 and "body is too long" in failure.reason
    assert "github: the request was refused as invalid" in failure.reason
    assert state.outbox.entry("c1").status is UpdateStatus.held
    assert healthy(pod)


async def test_a_push_the_remote_rejects_is_a_clear_event(
    supervisor, create_task, repo: Path, remote: Path
) -> None:
    head = git(repo, "rev-parse", "HEAD")
    theirs = git(repo, "commit-tree", "HEAD^{tree}", "-p", head, "-m", "someone else's work")
    git(repo, "push", "-q", str(remote), f"{theirs}:refs/heads/ipa/someone")
    pod = await start(supervisor, create_task, repo=str(repo),
                      git={"remote": str(remote), "approval": False})
    branch = "ipa/someone"  # already there, not pushed by ipa: never overwritten
    await pod.execute(QueueUpdate(update_id="p1", connector="git", kind="push", payload={
        "remote": str(remote), "branch": branch, "commit": head, "source": str(repo)}))

    state = await wait_for(pod, lambda s: failures(s))

    (failure,) = failures(state)
    assert failure.connector == "git" and "the remote rejected the push of ipa/someone" in (
        failure.reason)
    assert state.outbox.entry("p1").status is UpdateStatus.held
    assert git(remote, "rev-parse", "refs/heads/ipa/someone") == theirs
    assert healthy(pod)


async def test_transient_errors_only_count_until_n_in_a_row(
    supervisor, create_task, services: Services, store: EventStore
) -> None:
    services.fail("GET", r"/rest/api/2/issue/KEY-1\?.*", 502, times=5)
    pod = await start(supervisor, create_task, jira={"issue": "KEY-1", "approval": True})

    state = await wait_for(pod, lambda s: s.outbox.incidents)
    await wait_for(pod, lambda s: services.faults[0].times == 0)

    (incident,) = state.outbox.incidents
    assert incident.kind == "transient_errors" and "3 transient errors in a row" in incident.reason
    assert len(await events_of(store, pod, "SyncIncident")) == 1
    assert healthy(pod)


async def test_an_approval_that_expires_before_delivery_needs_approval_again(
    supervisor, create_task, services: Services, store: EventStore
) -> None:
    services.fail("POST", COMMENT, 503, headers={"Retry-After": "30"})
    pod = await start(supervisor, create_task,
                      jira={"issue": "KEY-1", "approval": True, "approval_ttl_seconds": 0.3})
    state = await wait_for(pod, lambda s: entries(s, "jira:comment"))
    (entry,) = entries(state, "jira:comment")
    await pod.execute(ApproveUpdate(update_id=entry.update_id), actor="user:alice")

    state = await wait_for(pod, lambda s: s.outbox.entry(entry.update_id).status
                           is UpdateStatus.awaiting_approval and failures(s))

    assert [e.type for e in await store.read(pod.task_id)][-1] == "ApprovalExpired"
    assert state.outbox.entry(entry.update_id).approval is None
    await pod.execute(ApproveUpdate(update_id=entry.update_id), actor="user:bob")
    await pod.execute(SyncNow(), actor="user:bob")
    state = await wait_for(pod, delivered("jira:comment"))
    assert state.outbox.entry(entry.update_id).approval.actor == "user:bob"
    assert healthy(pod)
