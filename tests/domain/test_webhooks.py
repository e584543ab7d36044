"""Webhooks in the domain (issue #17): what a person may register, and which task events
become which messages, with what they say."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest

from ipa.domain import (
    Approve,
    AskQuestion,
    CompletePhase,
    CreateTask,
    Fail,
    FailJob,
    PhaseEntered,
    QueueJob,
    RequestApproval,
    StartJob,
    StartTask,
    WebhookRefused,
    decide,
    delivery_id,
    facts_of,
    fold,
    messages,
    new_secret,
    observe,
    parse_events,
    parse_secret,
    parse_url,
    payload,
)
from ipa.domain.webhooks import TaskFacts

from ..eventstore.helpers import ctx


@pytest.mark.parametrize("url", [
    "http://example.com/hook", "https://hooks.example.com:8443/a/b?team=7",
    "HTTPS://Example.com", "http://[2001:db8::1]/x", "https://bücher.example/h",
])
def test_an_http_or_https_url_is_accepted_as_given(url: str) -> None:
    assert parse_url(url) == url


@pytest.mark.parametrize(("url", "words"), [
    ("ftp://example.com/x", "http:// or https://"),
    ("file:///etc/passwd", "http:// or https://"),
    ("javascript:alert(1)", "http:// or https://"),
    ("example.com/hook", "http:// or https://"),
    ("http:///path", "names no host"),
    ("http://exa mple.com/", "spaces or control characters"),
    ("http://example.com/\x00", "spaces or control characters"),
    ("http://example.com/\ud800", "spaces or control characters"),
    ("http://example.com:99999/", "malformed"),
    ("http://[::1/", "malformed"),
    ("http://example.com:0/", "port 0"),
    ("http://example.com/#frag", "fragment"),
    ("https://user:pw@example.com/", "credentials"),
    ("https://token@example.com/", "credentials"),
    ("https://example.com/?access_token=abc", "credentials"),
    ("", "empty"),
    ("http://e.com/" + "a" * 3000, "at most 2048"),
])
def test_a_bad_url_is_refused_naming_the_problem(url: str, words: str) -> None:
    with pytest.raises(WebhookRefused) as refused:
        parse_url(url)

    assert refused.value.code == "invalid_webhook_url"
    assert words in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_url_that_is_not_text_is_refused() -> None:
    with pytest.raises(WebhookRefused, match="url must be text"):
        parse_url(["http://example.com"])


def test_events_are_known_names_or_star_in_the_order_given_without_repeats() -> None:
    assert parse_events(["task.failed", "*", "task.failed"]) == ["task.failed", "*"]


@pytest.mark.parametrize(("events", "words"), [
    (["task.exploded"], "unknown event type 'task.exploded'"),
    ([], "events is empty"),
    ("*", "must be a list"),
    ([7], "unknown event type int"),
])
def test_unknown_or_missing_events_are_refused(events: Any, words: str) -> None:
    with pytest.raises(WebhookRefused) as refused:
        parse_events(events)

    assert refused.value.code == "unknown_webhook_event"
    assert words in str(refused.value) and "task.completed" in str(refused.value)


def test_a_secret_is_whsec_and_base64_of_24_to_64_bytes() -> None:
    raw = bytes(range(32))
    encoded = base64.b64encode(raw).decode()

    assert parse_secret(encoded) == "whsec_" + encoded
    assert parse_secret("whsec_" + encoded) == "whsec_" + encoded
    assert new_secret(raw) == "whsec_" + encoded
    for bad in ("whsec_" + base64.b64encode(b"short").decode(), "whsec_not base64!",
                "whsec_" + base64.b64encode(bytes(65)).decode(), "ünïcode", 42):
        with pytest.raises(WebhookRefused) as refused:
            parse_secret(bad)
        assert refused.value.code == "invalid_webhook_secret"


# -- messages -------------------------------------------------------------------------------


class History:
    """A task driven by domain commands, with the messages each decision makes."""

    def __init__(self, workflow: str = "task") -> None:
        self.task_id = uuid.uuid4()
        self.state = None
        self.facts: TaskFacts | None = None
        self.step = 0
        self.workflow = workflow

    def run(self, command: Any) -> list[Any]:
        events = decide(self.state, command, ctx(self.step), self.task_id)
        self.step += 1
        made = []
        for event in events:
            self.facts = observe(self.facts, event)
            assert self.facts is not None
            made += messages(self.facts, event)
        self.state = fold(events, self.state)
        return made


def test_a_task_s_life_makes_the_messages_of_the_table() -> None:
    task = History()

    created = task.run(CreateTask("Add a limiter", "to login"))
    started = task.run(StartTask())
    waiting = task.run(RequestApproval("the spec is written"))
    approved = task.run(Approve())
    queued = task.run(QueueJob("j1", "planner"))
    spawned = task.run(StartJob("j1", "run-1"))
    crashed = task.run(FailJob("j1", "run-1", "exit 1", jitter=0.5))
    task.run(QueueJob("j2", "developer"))
    task.run(StartJob("j2", "run-2"))
    asked = task.run(AskQuestion("j2", "run-2", "q1", "Which database?"))
    failed = task.run(Fail("the repository is gone"))

    assert created == started == queued == []
    [gate] = waiting
    assert gate.type == "task.waiting"
    assert gate.data["waiting_for"] == "gate" and gate.data["summary"] == "the spec is written"
    [phase] = approved
    assert phase.type == "project.phase_changed"
    assert (phase.data["phase"], phase.data["previous_phase"]) == (
        "planning", "spec_clarification")
    [spawn] = spawned
    assert spawn.type == "agent.spawned"
    assert (spawn.data["agent"], spawn.data["job_id"], spawn.data["run_id"],
            spawn.data["attempt"]) == ("planner", "j1", "run-1", 1)
    [crash] = crashed
    assert crash.type == "agent.crashed"
    assert crash.data["reason"] == "exit 1" and crash.data["retry_at"] is not None
    assert [m.data["waiting_for"] for m in asked] == ["question"]
    assert asked[0].data["question"] == "Which database?"
    [fail] = failed
    assert fail.type == "task.failed" and fail.data["reason"] == "the repository is gone"
    assert fail.data["status"] == "failed" and fail.data["phase"] == "planning"
    for message in [gate, phase, spawn, crash, fail]:
        assert message.data["task_id"] == str(task.task_id)
        assert message.data["title"] == "Add a limiter"
        assert message.data["url"] == f"/pods/{task.task_id}"
        assert message.data["workflow"] == "task" and message.data["parent_id"] is None


def test_completing_a_task_is_task_completed_and_a_project_s_final_phase_project_completed(
) -> None:
    task = History()
    task.run(CreateTask("t", "d"))
    task.run(StartTask())
    made = []
    for _ in range(8):  # through every phase of the task workflow
        if task.state.status.value == "completed":
            break
        gated = task.state.status.value == "running" and task.state.phase in (
            "spec_clarification", "planning", "review")
        if gated:
            task.run(RequestApproval())
            made += task.run(Approve())
        else:
            made += task.run(CompletePhase())

    project = History()
    project.run(CreateTask("p", "a PRD", workflow="project"))
    final = []
    for phase in ("discovery", "architecture", "infrastructure", "development", "qa",
                  "deployment", "business", "growth", "perpetual"):
        facts = project.facts
        event = _phase_entered(project.task_id, facts.version + 1, phase, facts.phase)
        project.facts = observe(facts, event)
        final = messages(project.facts, event)

    assert made[-1].type == "task.completed"
    assert made[-1].data["status"] == "completed" and made[-1].data["phase"] == "completed"
    assert [m.type for m in final] == ["project.completed"]


def _phase_entered(task_id: uuid.UUID, version: int, phase: str, previous: str) -> Any:
    return PhaseEntered(originator_id=task_id, originator_version=version,
                        timestamp=ctx(version).now, actor="system", correlation_id="c",
                        causation_id=None, phase=phase, previous=previous)


def test_facts_from_a_state_are_the_ones_folded_from_its_events() -> None:
    task = History()
    task.run(CreateTask("t", "d"))
    task.run(StartTask())
    task.run(QueueJob("j1", "developer"))

    assert facts_of(task.state) == task.facts


def test_a_delivery_id_is_the_same_for_the_same_webhook_and_event_only() -> None:
    task = History()
    task.run(CreateTask("t", "d"))
    task.run(StartTask())
    [message] = task.run(RequestApproval())
    hook, other = str(uuid.uuid4()), str(uuid.uuid4())

    assert delivery_id(hook, message) == delivery_id(hook, message)
    assert delivery_id(hook, message) != delivery_id(other, message)
    assert str(uuid.UUID(delivery_id(hook, message))) == delivery_id(hook, message)
    body = payload(message)
    assert set(body) == {"type", "timestamp", "data"}
    assert body["timestamp"] == ctx(2).now.isoformat()


def test_a_task_first_seen_mid_history_has_no_facts_until_loaded() -> None:
    task = History()
    task.run(CreateTask("t", "d"))
    events = decide(task.state, StartTask(), ctx(1), task.task_id)

    assert observe(None, events[0]) is None
