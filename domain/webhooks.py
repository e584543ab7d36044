"""Webhooks: what ipa tells other systems, and how a person subscribes them.

A webhook is a URL that receives a message, signed the Standard Webhooks way, for each event of
the types it subscribed to (:data:`EVENT_TYPES`, or ``*`` for all). People register, remove and
re-enable webhooks, and ipa disables one after too many failed deliveries in a row: those are
events of one stream of their own, the webhook ledger (:data:`LEDGER`), not of any task.

Which task events become which messages (:func:`messages`), from the event and a few facts of
its task (:class:`TaskFacts`, folded by :func:`observe`):

=========================  ========================================================================
message type               task event
=========================  ========================================================================
``project.phase_changed``  ``PhaseEntered``: a task (of any workflow) moved to its next phase (a
                           task's phases are those of a small project: ``workflow`` says which)
``task.waiting``           ``ApprovalRequested`` (``waiting_for: gate``: a phase waits at its
                           gate) or ``QuestionAsked`` (``waiting_for: question``)
``task.completed``         ``TaskCompleted`` of a task or a project's child (``item``)
``project.completed``      a project reached its last phase: ``TaskCompleted``, or
                           ``PhaseEntered`` of its open-ended final phase (``perpetual``: the
                           project is delivered; its maintenance goes on)
``task.failed``            ``TaskFailed``
``agent.spawned``          ``JobStarted``: an agent run began
``agent.crashed``          ``JobFailed``: an agent run failed or was interrupted
=========================  ========================================================================

The URL of a webhook is checked here for its form (:func:`parse_url`: http or https, a host, no
credentials); whether its address may be reached is the delivery's business (``pods``), which
resolves the host name.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import DomainEvent

from .children_events import TaskLinked
from .credentials import refuse_credentials
from .errors import CredentialsInUrl, InvalidCommand
from .events import (
    ApprovalRequested,
    JobFailed,
    JobQueued,
    JobStarted,
    PhaseEntered,
    QuestionAsked,
    TaskCompleted,
    TaskCreated,
    TaskEvent,
    TaskFailed,
)
from .jobs import backoff_delay
from .state import TaskState
from .workflows import WORKFLOWS

LEDGER = uuid5(NAMESPACE_URL, "ipa:webhook-ledger")
"""The stream of what people and ipa did to webhooks (registered, removed, disabled, enabled)."""

EVENT_TYPES = ("project.phase_changed", "project.completed", "task.waiting", "task.completed",
               "task.failed", "agent.spawned", "agent.crashed")
"""Every message type a webhook can subscribe to (see the module doc)."""

ALL = "*"
"""Subscribes to every message type, those added later too."""

URL_MAX = 2048
SECRET_PREFIX = "whsec_"
SECRET_BYTES = (24, 64)
"""How many bytes a secret holds, at least and at most (Standard Webhooks)."""

_CONTROL = re.compile(r"[\x00-\x20\x7f-\x9f]")


class WebhookRefused(InvalidCommand):
    """A webhook's URL, event types or secret are not acceptable; ``code`` names which
    (``invalid_webhook_url``, ``unknown_webhook_event``, ``invalid_webhook_secret``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# -- the webhook ledger ---------------------------------------------------------------------


class WebhookEvent(DomainEvent):
    """Base of the events of the webhook ledger (:data:`LEDGER`)."""

    actor: str
    correlation_id: str
    causation_id: str | None


class WebhookRegistered(WebhookEvent):
    """A person registered webhook ``webhook_id``: messages of ``events`` go to ``url``, signed
    with a secret kept sealed in ``secret`` (only the nodes, which hold the audit key, can
    open it: see ``eventstore/webhooks.py``)."""

    webhook_id: str
    url: str
    events: list[str]
    secret: str


class WebhookRemoved(WebhookEvent):
    """A person removed the webhook: nothing more is sent to it, and its history is gone."""

    webhook_id: str


class WebhookDisabled(WebhookEvent):
    """ipa stopped sending to the webhook after ``failures`` failed attempts in a row (the last
    one: ``reason``); nothing is sent to it until a person enables it again."""

    webhook_id: str
    failures: int
    reason: str


class WebhookEnabled(WebhookEvent):
    """A person enabled the disabled webhook again: its waiting deliveries go out now."""

    webhook_id: str


# -- what a person gives --------------------------------------------------------------------


def parse_url(value: object) -> str:
    """``value`` as a webhook URL: ``http`` or ``https``, a host, no credentials, no fragment,
    no spaces or control characters, at most :data:`URL_MAX` characters; else
    :class:`WebhookRefused` naming what is wrong."""
    if not isinstance(value, str):
        raise WebhookRefused("invalid_webhook_url", f"url must be text, got "
                             f"{type(value).__name__}")
    shown = value[:100]
    if not value:
        raise WebhookRefused("invalid_webhook_url", "url is empty: give the http(s) URL that "
                             "receives the messages")
    if len(value) > URL_MAX:
        raise WebhookRefused("invalid_webhook_url", f"url is {len(value)} characters long; at "
                             f"most {URL_MAX}")
    if _CONTROL.search(value) or not value.isascii() and not _is_text(value):
        raise WebhookRefused("invalid_webhook_url", f"url {shown!r} holds spaces or control "
                             "characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as e:
        raise WebhookRefused("invalid_webhook_url", f"url {shown!r} is malformed: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise WebhookRefused("invalid_webhook_url", f"url {shown!r}: a webhook URL must start "
                             "with http:// or https://")
    if not parts.hostname:
        raise WebhookRefused("invalid_webhook_url", f"url {shown!r} names no host")
    if port == 0:
        raise WebhookRefused("invalid_webhook_url", f"url {shown!r}: port 0 cannot be reached")
    if "#" in value:
        raise WebhookRefused("invalid_webhook_url", f"url {shown!r} has a fragment (#...), "
                             "which is never sent: leave it out")
    try:
        refuse_credentials(value, "url")
    except CredentialsInUrl as e:
        raise WebhookRefused("invalid_webhook_url", str(e)) from None
    return value


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse_events(value: object) -> list[str]:
    """``value`` as the message types a webhook subscribes to: a non-empty list of names of
    :data:`EVENT_TYPES` or ``*``, repeats dropped, in the order given."""
    if not isinstance(value, list):
        raise WebhookRefused("unknown_webhook_event", "events must be a list of event types, "
                             f"e.g. [\"task.completed\"] or [\"*\"]; known: {_known()}")
    if not value:
        raise WebhookRefused("unknown_webhook_event", "events is empty: name at least one "
                             f"event type, or \"*\" for all; known: {_known()}")
    chosen: list[str] = []
    for name in value:
        if not isinstance(name, str) or (name != ALL and name not in EVENT_TYPES):
            shown = repr(name[:60]) if isinstance(name, str) else type(name).__name__
            raise WebhookRefused("unknown_webhook_event", f"unknown event type {shown}; "
                                 f"known: {_known()}")
        if name not in chosen:
            chosen.append(name)
    return chosen


def _known() -> str:
    return ", ".join([*EVENT_TYPES, ALL])


def parse_secret(value: object) -> str:
    """``value`` as a signing secret: ``whsec_`` (optional) and the base64 of
    :data:`SECRET_BYTES` bytes; returned with the prefix."""
    if not isinstance(value, str):
        raise WebhookRefused("invalid_webhook_secret", f"secret must be text, got "
                             f"{type(value).__name__}")
    encoded = value.removeprefix(SECRET_PREFIX)
    low, high = SECRET_BYTES
    try:
        if not encoded.isascii():
            raise ValueError("not ASCII")
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookRefused("invalid_webhook_secret", "secret must be whsec_ followed by "
                             f"base64 ({low} to {high} random bytes); leave it out and ipa "
                             "makes one") from None
    if not low <= len(raw) <= high:
        raise WebhookRefused("invalid_webhook_secret", f"secret holds {len(raw)} bytes; "
                             f"{low} to {high} are needed (leave it out and ipa makes one)")
    return SECRET_PREFIX + base64.b64encode(raw).decode()


def new_secret(random: bytes) -> str:
    """A secret made of ``random`` (at least 24 bytes the caller drew)."""
    return parse_secret(SECRET_PREFIX + base64.b64encode(random).decode())


def subscribed(events: list[str] | tuple[str, ...], message_type: str) -> bool:
    return ALL in events or message_type in events


def retry_delay(attempt: int, jitter: float, base: float, cap: float) -> float:
    """Seconds before the next attempt after failed attempt ``attempt`` (from 1): an
    exponential from ``base`` capped at ``cap``, with equal jitter (``jobs.backoff_delay``)."""
    return backoff_delay(attempt, jitter, base, cap)


# -- from task events to messages -----------------------------------------------------------


@dataclass(frozen=True)
class TaskFacts:
    """What the messages of a task say about it, as of its event ``version``."""

    task_id: UUID
    version: int
    title: str
    workflow: str
    parent_id: str | None
    phase: str
    agents: Mapping[str, str] = field(default_factory=dict)
    """The agent of each job, by job id."""


def facts_of(state: TaskState) -> TaskFacts:
    return TaskFacts(state.id, state.version, state.title, state.workflow,
                     None if state.parent_id is None else str(state.parent_id), state.phase,
                     {job_id: job.agent for job_id, job in state.jobs.items()})


def observe(facts: TaskFacts | None, event: TaskEvent) -> TaskFacts | None:
    """``facts`` once ``event`` (the task's next event) happened; ``None`` for a task whose
    first event was not seen (the caller loads its state instead)."""
    version = event.originator_version
    if isinstance(event, TaskCreated):
        return TaskFacts(event.originator_id, version, event.title, event.workflow, None,
                         event.phase)
    if facts is None:
        return None
    if isinstance(event, TaskLinked):
        return replace(facts, version=version, parent_id=event.parent_id)
    if isinstance(event, PhaseEntered):
        return replace(facts, version=version, phase=event.phase)
    if isinstance(event, TaskCompleted):
        workflow = WORKFLOWS.get(facts.workflow)
        return replace(facts, version=version,
                       phase=workflow.final if workflow is not None else facts.phase)
    if isinstance(event, JobQueued):
        return replace(facts, version=version, agents={**facts.agents, event.job_id: event.agent})
    return replace(facts, version=version)


@dataclass(frozen=True)
class Message:
    """One message to send: its ``type``, the task event it comes from (task, version) and
    what it says (:func:`payload`)."""

    type: str
    task_id: UUID
    version: int
    timestamp: str
    data: dict[str, Any]


def messages(facts: TaskFacts, event: TaskEvent) -> list[Message]:
    """The messages ``event`` makes, ``facts`` being its task's once it happened (see the
    module doc); most events make none."""
    found = _MESSAGES.get(type(event))
    if found is None:
        return []
    made = found(facts, event)
    if made is None:
        return []
    kind, extra = made
    data = {
        "task_id": str(facts.task_id), "title": facts.title, "workflow": facts.workflow,
        "parent_id": facts.parent_id, "phase": facts.phase, "url": f"/pods/{facts.task_id}",
        "version": event.originator_version, "event": type(event).__name__,
        "actor": event.actor, **extra,
    }
    return [Message(kind, facts.task_id, event.originator_version,
                    event.timestamp.isoformat(), data)]


def payload(message: Message) -> dict[str, Any]:
    """The JSON body of a message (Standard Webhooks: ``type``, ``timestamp``, ``data``)."""
    return {"type": message.type, "timestamp": message.timestamp, "data": message.data}


def delivery_id(webhook_id: str, message: Message) -> str:
    """The id of ``message``'s delivery to ``webhook_id`` (its ``webhook-id`` header): the same
    every time it is made, so a receiver can tell a retry from a new message."""
    return str(uuid5(UUID(webhook_id), f"{message.task_id}:{message.version}:{message.type}"))


_Made = tuple[str, dict[str, Any]] | None


def _phase_changed(facts: TaskFacts, event: PhaseEntered) -> _Made:
    workflow = WORKFLOWS.get(facts.workflow)
    if (facts.workflow == "project" and workflow is not None and workflow.open_ended
            and event.phase == workflow.final):
        return "project.completed", {"status": "running", "previous_phase": event.previous}
    return "project.phase_changed", {"status": "running", "previous_phase": event.previous}


def _completed(facts: TaskFacts, event: TaskCompleted) -> _Made:
    kind = "project.completed" if facts.workflow == "project" else "task.completed"
    return kind, {"status": "completed"}


def _failed(facts: TaskFacts, event: TaskFailed) -> _Made:
    return "task.failed", {"status": "failed", "reason": event.reason}


def _gate(facts: TaskFacts, event: ApprovalRequested) -> _Made:
    return "task.waiting", {"status": "waiting", "waiting_for": "gate",
                            "summary": event.summary}


def _question(facts: TaskFacts, event: QuestionAsked) -> _Made:
    return "task.waiting", {"waiting_for": "question", "question": event.question,
                            "question_id": event.question_id, "job_id": event.job_id,
                            "run_id": event.run_id}


def _spawned(facts: TaskFacts, event: JobStarted) -> _Made:
    return "agent.spawned", {"job_id": event.job_id, "run_id": event.run_id,
                             "agent": facts.agents.get(event.job_id), "attempt": event.attempt}


def _crashed(facts: TaskFacts, event: JobFailed) -> _Made:
    return "agent.crashed", {"job_id": event.job_id, "run_id": event.run_id,
                             "agent": facts.agents.get(event.job_id), "attempt": event.attempt,
                             "reason": event.reason, "interrupted": event.interrupted,
                             "retry_at": event.retry_at}


_MESSAGES: dict[type[TaskEvent], Any] = {
    PhaseEntered: _phase_changed,
    TaskCompleted: _completed,
    TaskFailed: _failed,
    ApprovalRequested: _gate,
    QuestionAsked: _question,
    JobStarted: _spawned,
    JobFailed: _crashed,
}
"""The task events that make a message, and how (dispatch on the event's type)."""

MESSAGE_EVENTS = tuple(_MESSAGES)
"""The task event types that can make a message."""
