"""GitHub as it behaves (issue #13): long lists in pages, redirects, secondary rate limits,
retries that do not make things twice, body limits and forks; odd answers as clear errors."""

from __future__ import annotations

import re
import subprocess
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import anyio
import httpx
import pytest

from ipa.domain import (
    ConfigureSync,
    CreateTask,
    QueueUpdate,
    RecordDelivery,
    StartTask,
    SyncNow,
    UpdateStatus,
    payload_hash,
)
from ipa.domain.state import Branch
from ipa.eventstore import EventStore
from ipa.pods.sync import SyncError, desired
from ipa.pods.sync.http import RestApi
from ipa.pods.sync.plan import pull_request_body

from ..domain.helpers import run
from ..pods.helpers import wait_for
from .conftest import git
from .services import TOKEN, Services
from .test_delivery import delivered, events_of, failures, healthy, start

pytestmark = pytest.mark.anyio
COMMENTS = r"/repos/o/n/issues/1/comments"


async def with_pull_request(supervisor, create_task, services: Services, **config):
    """A pod whose task has pull request #1 of ``o/n`` (as if ipa had opened it)."""
    number = services.pull_request("o/n", "ipa/b") if not services.pulls else 1
    pod = await start(supervisor, create_task, github={"repo": "o/n", "approval": False},
                      **config)
    payload = {"title": "t"}
    await pod.execute(QueueUpdate(update_id="pr", connector="github", kind="pull_request",
                                  payload=payload))
    await pod.execute(RecordDelivery(update_id="pr", payload_hash=payload_hash(payload),
                                     result={"number": number, "commit": "c"}))
    return pod


def pull_request_update(task_id, repo: Path, remote: str, base: str | None = "main") -> dict:
    """The payload ``plan.desired`` makes for the task's pull request."""
    return {"title": "Add a feature", "body": "the change", "head": f"ipa/{task_id.hex[:8]}",
            "base": base, "commit": git(repo, "rev-parse", "HEAD"), "source": str(repo),
            "remote": remote}


# -- 1. paged lists ----------------------------------------------------------------------------


async def test_a_review_past_the_first_page_is_read(
    supervisor, create_task, services: Services
) -> None:
    pod = await with_pull_request(supervisor, create_task, services)
    for n in range(34):
        services.review(1, f"user{n}", "COMMENTED", body=f"comment {n}")
    services.review(1, "octo", "APPROVED", body="Ship it.", commit="c")  # the 35th

    state = await wait_for(pod, lambda s: s.outbox.reviews)

    (review,) = state.outbox.reviews
    assert (review.reviewer, review.verdict) == ("octo", "approved")
    asked = [p for _, p, _ in services.calls("GET", r"/repos/o/n/pulls/1/reviews\?.*")]
    assert "per_page=100" in asked[0]


async def test_every_comment_of_a_review_is_feedback(
    supervisor, create_task, services: Services
) -> None:
    pod = await with_pull_request(supervisor, create_task, services)
    services.review(1, "octo", "CHANGES_REQUESTED", body="Not quite.", commit="c", comments=[
        {"path": "f.py", "line": n, "body": f"fix line {n}"} for n in range(1, 46)])

    state = await wait_for(pod, lambda s: s.outbox.reviews)

    assert "- f.py:45: fix line 45" in state.outbox.reviews[0].feedback


async def test_a_review_added_after_a_full_last_page_is_seen(
    supervisor, create_task, services: Services
) -> None:
    services.pull_request("o/n", "ipa/b")
    for n in range(200):  # two full pages of 100
        services.review(1, f"user{n}", "COMMENTED")
    pod = await with_pull_request(supervisor, create_task, services)
    page_two = r"/repositories/\d+/pulls/1/reviews\?per_page=100&page=2"
    await anyio.to_thread.run_sync(services.wait_calls, "GET", page_two, 2)  # polled twice

    services.review(1, "octo", "APPROVED", commit="c")  # the first of page 3

    state = await wait_for(pod, lambda s: s.outbox.reviews)
    assert state.outbox.reviews[0].reviewer == "octo"
    first_pages = services.calls("GET", r"/repos/o/n/pulls/1/reviews\?per_page=100")
    assert 304 in [status for _, _, status in first_pages]  # unchanged pages cost a 304


# -- 2. redirects ------------------------------------------------------------------------------


async def test_a_renamed_repository_is_followed_and_recorded(
    supervisor, create_task, services: Services, repo: Path, remote: Path, store: EventStore
) -> None:
    services.rename("o/n", "o/renamed")
    pod = await start(supervisor, create_task, repo=str(repo),
                      github={"repo": "o/n", "approval": False})
    payload = pull_request_update(pod.task_id, repo, str(remote), base=None)
    await pod.execute(QueueUpdate(update_id="pr", connector="github", kind="pull_request",
                                  payload=payload))

    state = await wait_for(pod, lambda s: "github:pull_request" in s.outbox.delivered
                           and s.outbox.config["github"]["repo"] == "o/renamed")

    assert failures(state) == []
    assert services.pulls[1]["base"]["ref"] == "main" and services.pulls[1]["title"] == (
        "Add a feature")
    (renamed,) = await events_of(store, pod, "RemoteRepositoryRenamed")
    assert (renamed.data["old"], renamed.data["new"]) == ("o/n", "o/renamed")
    await wait_for(pod, delivered("github:status_comment"))  # made after the rename
    assert services.calls("POST", r"/repos/o/renamed/issues/1/comments")
    assert not services.calls("POST", r"/repos/o/n/issues/1/comments")
    assert healthy(pod)


async def test_a_request_answered_307_is_sent_again_with_its_body(
    supervisor, create_task, services: Services
) -> None:
    moved = f"{services.url}/repos/o/n/issues/1/comments"  # e.g. a load balancer's move
    services.fail("POST", COMMENTS, 307, headers={"location": moved},
                  body={"message": "Temporary Redirect"})
    pod = await start(supervisor, create_task, github={"repo": "o/n", "approval": False})
    await pod.execute(QueueUpdate(update_id="c1", connector="github", kind="status_comment",
                                  payload={"number": 1, "body": "hello"}))

    state = await wait_for(pod, delivered("github:status_comment"))

    assert failures(state) == []
    assert [c["body"] for c in services.issue_comments(1)] == ["hello"]


@asynccontextmanager
async def rest_api(services: Services, clock=lambda: datetime.now(UTC)):
    """ipa's REST adapter on the fake GitHub, as the engine makes it (``clock`` injected)."""
    async with httpx.AsyncClient(timeout=1.0) as client:
        yield RestApi("github", client, services.url, {"Authorization": f"Bearer {TOKEN}"},
                      clock)


@pytest.mark.parametrize(("status", "headers", "body", "said"), [
    (307, {"location": "/repos/o/n/loop"}, None, "redirected more than 5 times"),
    (301, {}, None, "without a Location to go to"),
    (302, {"location": "http://elsewhere.test/x"}, None, "to another host (elsewhere.test)"),
    (200, {}, b"<html>maintenance</html>", "with something that is not JSON"),
])
async def test_an_odd_answer_is_a_clear_error(
    services: Services, status: int, headers: dict, body, said: str
) -> None:
    services.fail("GET", r"/repos/o/n/loop", status, times=10, headers=headers, body=body)

    async with rest_api(services) as api:
        with pytest.raises(SyncError, match=re.escape(said)):
            await api.get("/repos/o/n/loop")


@pytest.mark.parametrize(("headers", "body", "said"), [
    ({"link": '</repos/o/n/pages?per_page=100>; rel="next"'}, [], "its pages do not end"),
    ({}, {"not": "a list"}, "answered dict, not a list"),
    ({"link": '<https://elsewhere.test/x>; rel="next"'}, [], "on another host"),
])
async def test_an_odd_list_is_a_clear_error(
    services: Services, headers: dict, body, said: str
) -> None:
    services.fail("GET", r"/repos/o/n/pages\?.*", 200, times=10, headers=headers, body=body)

    async with rest_api(services) as api:
        with pytest.raises(SyncError, match=re.escape(said)):
            await api.get_all("/repos/o/n/pages")


# -- 3. rate limits ----------------------------------------------------------------------------


async def test_a_secondary_limit_is_a_wait_of_a_minute_growing_not_an_auth_incident(
    supervisor, create_task, services: Services, store: EventStore
) -> None:
    services.secondary_limit("POST", COMMENTS, times=2)
    pod = await start(supervisor, create_task, github={"repo": "o/n", "approval": False})
    await pod.execute(QueueUpdate(update_id="c1", connector="github", kind="status_comment",
                                  payload={"number": 1, "body": "hello"}))

    state = await wait_for(pod, lambda s: failures(s))
    (limited,) = await events_of(store, pod, "SyncRateLimited")
    (failed,) = await events_of(store, pod, "UpdateFailed")
    assert (limited.data["connector"], limited.data["wait_seconds"]) == ("github", 60.0)
    assert datetime.fromisoformat(limited.data["until"]) == limited.timestamp + timedelta(
        seconds=60)
    assert failed.data["retry_at"] == limited.data["until"]
    assert "secondary rate limit" in failed.data["reason"]
    assert "waiting 60 s" in failed.data["reason"] and "waiting 60 s" in limited.data["reason"]
    assert state.outbox.incidents == () and state.outbox.entry("c1").status is (
        UpdateStatus.pending)

    await pod.execute(SyncNow(), actor="user:alice")  # a person does not want to wait
    await wait_for(pod, lambda s: len(failures(s)) == 2)
    second = (await events_of(store, pod, "SyncRateLimited"))[-1]
    assert second.data["wait_seconds"] == 120.0  # the second limit in a row: twice as long

    await pod.execute(SyncNow(), actor="user:alice")
    await wait_for(pod, delivered("github:status_comment"))
    assert healthy(pod)


async def test_a_429_without_headers_waits_a_minute(
    supervisor, create_task, services: Services, store: EventStore
) -> None:
    services.fail("POST", COMMENTS, 429, body={"message": "Too Many Requests"})
    pod = await start(supervisor, create_task, github={"repo": "o/n", "approval": False})
    await pod.execute(QueueUpdate(update_id="c1", connector="github", kind="status_comment",
                                  payload={"number": 1, "body": "hello"}))

    await wait_for(pod, lambda s: failures(s))

    (limited,) = await events_of(store, pod, "SyncRateLimited")
    (failed,) = await events_of(store, pod, "UpdateFailed")
    assert limited.data["wait_seconds"] == 60.0  # not retried a second later
    assert failed.data["retry_at"] == limited.data["until"]


async def test_a_403_that_is_no_rate_limit_stays_an_auth_incident(
    supervisor, create_task, services: Services
) -> None:
    services.fail("POST", COMMENTS, 403, body={
        "message": "Resource not accessible by integration",
        "documentation_url": "https://docs.github.com/rest/issues/comments"})
    pod = await start(supervisor, create_task, github={"repo": "o/n", "approval": False})
    await pod.execute(QueueUpdate(update_id="c1", connector="github", kind="status_comment",
                                  payload={"number": 1, "body": "hello"}))

    state = await wait_for(pod, lambda s: s.outbox.incidents)

    assert [(i.kind, "not accessible" in i.reason) for i in state.outbox.incidents] == [
        ("auth", True)]
    assert state.outbox.entry("c1").status is UpdateStatus.held


async def test_a_rate_limited_poll_stops_polling_until_the_wait_is_over(
    supervisor, create_task, services: Services, store: EventStore
) -> None:
    services.secondary_limit("GET", r"/repos/o/n/pulls/1/reviews\?.*", status=429)
    pod = await with_pull_request(supervisor, create_task, services,
                                  jira={"issue": "KEY-1", "approval": True})

    state = await wait_for(pod, lambda s: "github" in s.outbox.rate_limited_until)

    (limited,) = await events_of(store, pod, "SyncRateLimited")
    assert limited.data["wait_seconds"] == 60.0 and state.outbox.incidents == ()
    asked = len(services.calls("GET", r"/repos/o/n/pulls/1.*"))
    polls = len(services.calls("GET", r"/rest/api/2/issue/KEY-1\?.*"))
    await anyio.to_thread.run_sync(services.wait_calls, "GET", r"/rest/api/2/issue/KEY-1\?.*",
                                   polls + 2)  # JIRA is polled twice more meanwhile
    assert len(services.calls("GET", r"/repos/o/n/pulls/1.*")) == asked


@pytest.mark.parametrize(("headers", "wait"), [
    ({"retry-after": "30"}, 30.0),
    ({"retry-after": "HTTP-DATE"}, 120.0),
    ({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "RESET"}, 90.0),
    ({}, None),  # none named: the engine waits at least a minute
])
async def test_the_wait_of_a_rate_limit_is_read_as_documented(
    services: Services, headers: dict, wait: float | None
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    given = {k: v.replace("HTTP-DATE", format_datetime(now + timedelta(seconds=120), usegmt=True))
             .replace("RESET", str(int(now.timestamp()) + 90)) for k, v in headers.items()}
    services.secondary_limit("GET", r"/repos/o/n", headers=given)

    async with rest_api(services, clock=lambda: now) as api:
        with pytest.raises(SyncError) as caught:
            await api.get("/repos/o/n")

    assert caught.value.rate_limited and caught.value.transient
    assert caught.value.retry_after == wait and caught.value.incident is None


# -- 4. idempotent delivery --------------------------------------------------------------------


async def test_a_pull_request_made_by_an_attempt_that_timed_out_is_not_made_twice(
    supervisor, create_task, services: Services, repo: Path, remote: Path
) -> None:
    services.slow("POST", r"/repos/o/n/pulls", 1.5)  # longer than the 1 s request timeout
    pod = await start(supervisor, create_task, repo=str(repo),
                      github={"repo": "o/n", "approval": False})
    await pod.execute(QueueUpdate(update_id="pr", connector="github", kind="pull_request",
                                  payload=pull_request_update(pod.task_id, repo, str(remote))))

    state = await wait_for(pod, delivered("github:pull_request"))

    assert ["timed out" in f.reason for f in failures(state)] == [True]
    assert list(services.pulls) == [1] and state.outbox.incidents == ()
    assert state.outbox.delivered["github:pull_request"]["result"]["number"] == 1
    assert healthy(pod)


async def test_a_422_already_exists_resolves_to_the_open_pull_request(
    supervisor, create_task, services: Services, repo: Path, remote: Path
) -> None:
    pod = await start(supervisor, create_task, repo=str(repo),
                      github={"repo": "o/n", "approval": False})
    payload = pull_request_update(pod.task_id, repo, str(remote))
    number = services.pull_request("o/n", payload["head"])  # made while ipa looked
    services.fail("GET", r"/repos/o/n/pulls\?.*", 200, body=[])
    await pod.execute(QueueUpdate(update_id="pr", connector="github", kind="pull_request",
                                  payload=payload))

    state = await wait_for(pod, delivered("github:pull_request"))

    assert failures(state) == [] and state.outbox.incidents == ()
    assert len(services.calls("POST", r"/repos/o/n/pulls")) == 1  # answered 422
    assert services.pulls[number]["title"] == "Add a feature" and len(services.pulls) == 1


async def test_a_status_comment_whose_first_attempt_timed_out_is_posted_once(
    supervisor, create_task, services: Services
) -> None:
    services.slow("POST", COMMENTS, 1.5)
    pod = await start(supervisor, create_task, github={"repo": "o/n", "approval": False})
    body = f"task t is running\n\n<!-- ipa:task:{pod.task_id} -->"
    await pod.execute(QueueUpdate(update_id="c1", connector="github", kind="status_comment",
                                  payload={"number": 1, "body": body}))

    state = await wait_for(pod, delivered("github:status_comment"))

    assert len(failures(state)) == 1
    (comment,) = services.issue_comments(1)
    assert state.outbox.delivered["github:status_comment"]["result"]["id"] == comment["id"]


def test_a_pull_request_body_over_githubs_limit_is_shortened_with_a_note() -> None:
    state = run(None, CreateTask(title="t", description="x" * 70_000),
                StartTask(), ConfigureSync(github={"repo": "o/n"}))
    state = replace(state, phase="review", repo="/r",
                    branch=Branch("ipa/1", "main", "a" * 40, "b" * 40))

    (pull,) = [u for u in desired(state) if u.kind == "pull_request"]

    body, full = pull.payload["body"], pull_request_body(state)
    assert len(body) == 65_536 and body.startswith("x" * 60_000)
    assert body.endswith(f"(shortened by ipa: the text has {len(full):,} characters, 65,536 "
                         "are allowed here)")


async def test_a_fork_remote_opens_the_pull_request_from_owner_and_branch(
    supervisor, create_task, services: Services, repo: Path, tmp_path: Path
) -> None:
    fork = tmp_path / "git" / "someone" / "n.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(fork)], check=True)
    services.git_remote = str(fork)
    pod = await start(supervisor, create_task, repo=str(repo),
                      github={"repo": "o/n", "approval": False})
    pod.sync.settings = replace(pod.sync.settings, github_git_url=f"file://{tmp_path}/git")
    pod.sync._connectors.clear()  # made again with the settings above
    payload = pull_request_update(pod.task_id, repo, f"file://{fork}")
    await pod.execute(QueueUpdate(update_id="pr", connector="github", kind="pull_request",
                                  payload=payload))

    state = await wait_for(pod, delivered("github:pull_request"))

    assert failures(state) == []
    assert services.pulls[1]["head"]["label"] == f"someone:{payload['head']}"
    assert services.head(1) == payload["commit"]

