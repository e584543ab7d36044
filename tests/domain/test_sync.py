"""The outbox, its approval gate, deliveries and incoming reviews, decided and folded."""

from __future__ import annotations

import pytest

from ipa.domain import (
    ApplyReview,
    Approve,
    ApproveUpdate,
    CommandRejected,
    CompletePhase,
    ConfigureSync,
    CreateTask,
    ExpireApproval,
    InvalidCommand,
    QueueUpdate,
    RecordDelivery,
    RecordDeliveryFailure,
    RecordRepositoryRename,
    RecordReview,
    RecordSyncIncident,
    RecordSyncRateLimit,
    RequestApproval,
    ReturnToPhase,
    StartTask,
    Status,
    SyncNow,
    TaskState,
    UpdateStatus,
    decide,
    fold,
    payload_hash,
)

from .helpers import TASK_ID, at, context, run

PR = {"title": "t", "body": "b", "head": "ipa/00000000", "commit": "c1"}


def configured(approval: bool = True, ttl: float = 60) -> TaskState:
    return run(None, CreateTask(title="t", description="d"), StartTask(),
               ConfigureSync(github={"repo": "o/n", "approval": approval,
                                     "approval_ttl_seconds": ttl}))


def in_review(status: Status = Status.waiting) -> TaskState:
    state = run(configured(), RequestApproval(), Approve(), RequestApproval(), Approve(),
                CompletePhase())
    assert (state.phase, state.status) == ("review", Status.running)
    return run(state, RequestApproval()) if status is Status.waiting else state


def types(state: TaskState | None, command, now=None) -> list[str]:
    return [type(e).__name__ for e in decide(state, command, context(now or at(0)), TASK_ID)]


def queue(state: TaskState, update_id: str, payload: dict, kind: str = "pull_request"):
    return run(state, QueueUpdate(update_id=update_id, connector="github", kind=kind,
                                  payload=payload))


def test_an_update_is_bound_to_its_payload_and_waits_for_approval() -> None:
    state = queue(configured(), "u1", PR)

    entry = state.outbox.entry("u1")
    assert entry.status is UpdateStatus.awaiting_approval
    assert entry.payload == PR and entry.payload_hash == payload_hash(PR)
    assert state.outbox.due(at(0)) == []
    listed = state.to_dict()["outbox"][0]
    assert (listed["update_id"], listed["status"], listed["approval"]) == (
        "u1", "awaiting_approval", None)


def test_the_same_payload_twice_is_one_update_and_a_delivered_one_is_skipped() -> None:
    state = queue(configured(approval=False), "u1", PR)
    assert types(state, QueueUpdate(update_id="u2", connector="github", kind="pull_request",
                                    payload=dict(PR))) == []
    state = run(state, RecordDelivery(update_id="u1", payload_hash=payload_hash(PR),
                                      result={"number": 1}))

    state = queue(state, "u3", dict(PR))

    assert state.outbox.entry("u3") is None
    assert [d.outcome for d in state.outbox.deliveries] == ["delivered", "skipped"]
    assert state.to_dict()["deliveries"][1]["update_id"] == "u3"


def test_a_newer_payload_supersedes_the_approved_one_and_needs_approval_again() -> None:
    state = queue(configured(), "u1", PR)
    state = run(state, ApproveUpdate(update_id="u1"))
    assert state.outbox.entry("u1").status is UpdateStatus.pending

    changed = {**PR, "body": "changed"}
    state = queue(state, "u2", changed)

    assert state.outbox.entry("u1").status is UpdateStatus.superseded
    assert state.outbox.entry("u2").status is UpdateStatus.awaiting_approval
    with pytest.raises(CommandRejected, match="u2' is awaiting_approval"):
        decide(state, RecordDelivery(update_id="u2", payload_hash=payload_hash(changed)),
               context(), TASK_ID)
    with pytest.raises(CommandRejected, match="u1' is superseded"):
        decide(state, RecordDelivery(update_id="u1", payload_hash=payload_hash(PR)),
               context(), TASK_ID)


def test_an_approval_for_a_payload_the_person_did_not_see_is_refused() -> None:
    state = queue(configured(), "u1", PR)
    with pytest.raises(CommandRejected, match="changed"):
        decide(state, ApproveUpdate(update_id="u1", payload_hash=payload_hash({"x": 1})),
               context(), TASK_ID)
    state = run(state, ApproveUpdate(update_id="u1", payload_hash=payload_hash(PR)))
    approval = state.outbox.entry("u1").approval
    assert (approval.actor, approval.payload_hash) == ("system", payload_hash(PR))


def test_an_approval_expires() -> None:
    state = queue(configured(ttl=60), "u1", PR)
    state = run(state, ApproveUpdate(update_id="u1"), now=at(0))
    assert state.outbox.entry("u1").approval.expires_at == at(60)
    assert state.outbox.due(at(59)) and not state.outbox.due(at(60))
    assert state.outbox.next_due() == at(60)

    with pytest.raises(CommandRejected, match="not approved"):
        decide(state, RecordDelivery(update_id="u1", payload_hash=payload_hash(PR)),
               context(at(61)), TASK_ID)
    with pytest.raises(CommandRejected, match="holds until"):
        decide(state, ExpireApproval(update_id="u1"), context(at(30)), TASK_ID)
    state = run(state, ExpireApproval(update_id="u1"), now=at(61))

    assert state.outbox.entry("u1").status is UpdateStatus.awaiting_approval
    assert state.outbox.entry("u1").approval is None


def test_a_failure_with_a_retry_time_waits_and_one_without_is_held_until_sync_now() -> None:
    state = queue(configured(approval=False), "u1", PR)
    state = run(state, RecordDeliveryFailure(update_id="u1", reason="github: 503",
                                             retry_at=at(5).isoformat(), status_code=503))
    entry = state.outbox.entry("u1")
    assert (entry.status, entry.retry_at, entry.attempts) == (UpdateStatus.pending, at(5), 1)
    assert state.outbox.due(at(4)) == [] and state.outbox.due(at(5)) == [entry]

    state = run(state, RecordDeliveryFailure(update_id="u1", reason="github: 401 bad token",
                                             status_code=401))
    assert state.outbox.entry("u1").status is UpdateStatus.held
    assert state.outbox.deliveries[-1].reason == "github: 401 bad token"

    state = run(state, SyncNow())
    assert state.outbox.entry("u1").status is UpdateStatus.pending
    assert state.outbox.due(at(0))


def test_a_rate_limit_holds_every_update_of_its_connector_until_the_wait_is_over() -> None:
    state = queue(configured(approval=False), "u1", PR)
    (event,) = decide(state, RecordSyncRateLimit(connector="github", reason="403: slow down",
                                                 wait_seconds=60), context(at(10)), TASK_ID)
    assert (type(event).__name__, event.wait_seconds, event.until) == (
        "SyncRateLimited", 60.0, at(70).isoformat())
    state = fold([event], state)

    entry = state.outbox.entry("u1")
    assert state.outbox.due(at(69)) == [] and state.outbox.due(at(70)) == [entry]
    assert state.outbox.next_due() == at(70)
    assert TaskState.from_dict(state.to_dict()) == state
    assert run(state, SyncNow()).outbox.due(at(11)) == [entry]  # a person asked for now
    with pytest.raises(InvalidCommand, match="must not be negative"):
        decide(state, RecordSyncRateLimit(connector="github", reason="r", wait_seconds=-1),
               context(), TASK_ID)


def test_a_renamed_repository_is_used_from_then_on_and_recorded_once() -> None:
    state = run(configured(), RecordRepositoryRename(connector="github", old="O/N", new="o/m"))

    assert state.outbox.config["github"]["repo"] == "o/m"
    assert state.outbox.config["github"]["approval"] is True  # the rest of the options stay
    assert types(state, RecordRepositoryRename(connector="github", old="o/n", new="o/m")) == []
    with pytest.raises(CommandRejected, match="github.repo is 'o/m', not 'x/y'"):
        decide(state, RecordRepositoryRename(connector="github", old="x/y", new="x/z"),
               context(), TASK_ID)
    with pytest.raises(InvalidCommand, match="owner/name"):
        decide(state, RecordRepositoryRename(connector="github", old="o/m", new="nope"),
               context(), TASK_ID)


def test_configuration_refuses_credentials_and_bad_names() -> None:
    state = configured()
    with pytest.raises(InvalidCommand, match="credentials are never part of a task"):
        decide(state, ConfigureSync(github={"repo": "o/n", "token": "x"}), context(), TASK_ID)
    with pytest.raises(InvalidCommand, match="owner/name"):
        decide(state, ConfigureSync(github={"repo": "nope"}), context(), TASK_ID)
    with pytest.raises(InvalidCommand, match="not a phase"):
        decide(state, ConfigureSync(jira={"issue": "K-1", "statuses": {"x": "Done"}}),
               context(), TASK_ID)
    with pytest.raises(CommandRejected, match="jira is not configured"):
        decide(state, QueueUpdate(update_id="j", connector="jira", kind="comment"),
               context(), TASK_ID)


def test_an_incident_is_recorded_once_while_open() -> None:
    state = run(configured(), RecordSyncIncident(connector="github",
                                                 kind="repository_not_found", reason="404"))
    assert types(state, RecordSyncIncident(connector="github", kind="repository_not_found",
                                           reason="404")) == []
    assert state.to_dict()["sync"]["incidents"][0]["open"] is True


def test_return_to_phase_sends_a_gated_phase_back_with_feedback() -> None:
    state = run(in_review(), ReturnToPhase(phase="development", feedback="fix the tests"))

    assert (state.phase, state.status) == ("development", Status.running)
    assert [(f.phase, f.feedback) for f in state.feedback] == [("development", "fix the tests")]
    assert state.phase_history[-1].phase == "development"
    with pytest.raises(InvalidCommand, match="not an earlier phase"):
        decide(in_review(), ReturnToPhase(phase="completed", feedback="x"), context(), TASK_ID)
    with pytest.raises(CommandRejected):
        decide(state, ReturnToPhase(phase="planning", feedback="x"), context(), TASK_ID)


def review(review_id: str, verdict: str, commit: str | None = None, **more) -> RecordReview:
    return RecordReview(connector="github", review_id=review_id, reviewer="octo",
                        verdict=verdict, commit=commit, url="http://pr/1", **more)


def test_changes_requested_on_the_pull_request_return_the_task_to_development() -> None:
    comments = [{"path": "a.py", "line": 3, "body": "rename this"}]
    state = run(in_review(), review("r1", "changes_requested", body="Not yet.",
                                    comments=comments))

    assert (state.phase, state.status) == ("development", Status.running)
    (feedback,) = state.feedback
    assert feedback.phase == "development"
    assert "Not yet." in feedback.feedback and "- a.py:3: rename this" in feedback.feedback
    assert state.outbox.review("r1").applied
    assert types(state, review("r1", "changes_requested")) == []


def test_an_approval_completes_the_task_only_at_the_review_gate() -> None:
    running = run(in_review(Status.running), review("r1", "approved"))
    assert (running.phase, running.status) == ("review", Status.running)
    assert not running.outbox.review("r1").applied
    with pytest.raises(CommandRejected, match="does not apply now"):
        decide(running, ApplyReview(review_id="r1"), context(), TASK_ID)

    waiting = run(running, RequestApproval(), ApplyReview(review_id="r1"))

    assert waiting.status is Status.completed
    assert waiting.approvals[-1].phase == "review"


def test_a_review_of_an_older_commit_does_not_apply() -> None:
    state = queue(in_review(), "u1", PR)
    state = run(state, ApproveUpdate(update_id="u1"),
                RecordDelivery(update_id="u1", payload_hash=payload_hash(PR),
                               result={"number": 1, "commit": "c1"}))

    stale = run(state, review("r1", "approved", commit="c0"))
    fresh = run(state, review("r1", "approved", commit="c1"))

    assert stale.status is Status.waiting
    assert fresh.status is Status.completed


def test_the_outbox_round_trips_through_json_and_old_snapshots_load_empty() -> None:
    state = queue(configured(), "u1", PR)
    state = run(state, ApproveUpdate(update_id="u1"), review("r1", "approved"),
                RecordSyncIncident(connector="github", kind="auth", reason="401"))
    assert TaskState.from_dict(state.to_dict()) == state

    old = {k: v for k, v in state.to_dict().items()
           if k not in ("outbox", "deliveries", "sync")}
    assert TaskState.from_dict(old).outbox.entries == ()
