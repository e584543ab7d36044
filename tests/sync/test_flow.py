"""The issue's "done means": a task's change reaches a pull request through the approval gate,
a review requesting changes sends it back to development, an approval completes it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipa.domain import (
    Approve,
    ApproveUpdate,
    ConfigureSync,
    QueueJob,
    Status,
    TaskState,
    UpdateStatus,
)
from ipa.eventstore import EventStore

from ..pods.helpers import python, wait_for
from .conftest import git
from .services import Services

pytestmark = pytest.mark.anyio


def write(name: str, text: str) -> dict:
    return python(f"open({name!r}, 'w').write({text!r})")


def unsent(state: TaskState, target: str):
    return next((e for e in state.outbox.entries
                 if e.target == target and e.status.unsent), None)


def awaiting(target: str):
    def check(state: TaskState) -> bool:
        entry = unsent(state, target)
        return entry is not None and entry.status is UpdateStatus.awaiting_approval
    return check


async def test_a_task_goes_through_a_pull_request_review_and_completes(
    supervisor, create_task, services: Services, remote: Path, repo: Path, store: EventStore
) -> None:
    pod = await supervisor.start(await create_task(title="Add a feature", repo=str(repo)))
    await pod.execute(ConfigureSync(github={"repo": "o/n", "approval": True},
                                    git={"remote": str(remote)}), actor="user:alice")
    for phase, agent in (("spec_clarification", "spec_writer"), ("planning", "planner")):
        await pod.execute(QueueJob(job_id=phase, agent=agent, spec=python("pass")))
        await wait_for(pod, lambda s, p=phase: s.phase == p and s.status is Status.waiting)
        await pod.execute(Approve(), actor="user:alice")
    await pod.execute(QueueJob(job_id="dev1", agent="developer", spec=write("feature.txt", "v1")))

    state = await wait_for(pod, awaiting("github:pull_request"))

    assert (state.phase, state.status) == ("review", Status.running)
    entry = unsent(state, "github:pull_request")
    branch = f"ipa/{pod.task_id.hex[:8]}"
    assert entry.payload["title"] == "Add a feature" and entry.payload["head"] == branch
    assert services.pulls == {} and branch not in git(remote, "branch", "--list")

    await pod.execute(ApproveUpdate(update_id=entry.update_id, payload_hash=entry.payload_hash),
                      actor="user:alice")

    state = await wait_for(pod, lambda s: "github:pull_request" in s.outbox.delivered)
    first = entry.payload["commit"]
    assert services.pulls[1]["head"]["ref"] == branch and services.pulls[1]["base"]["ref"] == "main"
    assert git(remote, "rev-parse", f"refs/heads/{branch}") == first
    assert git(remote, "show", f"{branch}:feature.txt") == "v1"
    approval = state.outbox.entry(entry.update_id).approval
    assert (approval.actor, approval.payload_hash) == ("user:alice", entry.payload_hash)

    await pod.execute(QueueJob(job_id="review1", agent="reviewer", spec=python("pass")))
    await wait_for(pod, lambda s: s.phase == "review" and s.status is Status.waiting)
    services.review(1, "octo", "CHANGES_REQUESTED", body="Not quite.",
                    comments=[{"path": "feature.txt", "line": 1, "body": "it should say v2"}])

    state = await wait_for(pod, lambda s: s.phase == "development")

    assert state.status is Status.running
    (feedback,) = [f for f in state.feedback if f.phase == "development"]
    assert feedback.actor == "github:octo"
    assert "Not quite." in feedback.feedback and "feature.txt:1: it should say v2" in (
        feedback.feedback)

    await pod.execute(QueueJob(job_id="dev2", agent="developer", spec=write("feature.txt", "v2")))
    state = await wait_for(pod, lambda s: s.phase == "review" and awaiting("github:pull_request")(s)
                           and unsent(s, "github:pull_request").payload["commit"] != first)
    entry = unsent(state, "github:pull_request")
    await pod.execute(ApproveUpdate(update_id=entry.update_id), actor="user:alice")
    await wait_for(pod, lambda s: s.outbox.entry(entry.update_id).status
                   is UpdateStatus.delivered)
    assert git(remote, "show", f"{branch}:feature.txt") == "v2"
    assert len(services.pulls) == 1 and services.calls("PATCH", r"/repos/o/n/pulls/1")
    if pod.get_state().status is Status.running:
        await pod.execute(QueueJob(job_id="review2", agent="reviewer", spec=python("pass")))
    await wait_for(pod, lambda s: s.status is Status.waiting)

    services.review(1, "octo", "APPROVED", body="Ship it.")

    state = await wait_for(pod, lambda s: s.status is Status.completed)
    events = await store.read(pod.task_id)
    approved = [e for e in events if e.type == "PhaseApproved"][-1]
    assert (approved.actor, approved.data["phase"]) == ("github:octo", "review")
    assert [e.type for e in events].count("PullRequestApproved") == 1
    assert not any("token" in str(e.data).lower() for e in events)
