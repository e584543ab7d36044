"""Agent memory: what runs did and learned, kept for later runs on the same work.

A memory is recorded by an event and kept in a read model (``projections/memory.py``) where
*Reason* finds it again. Three kinds:

- **episodic**: what a run did and how it ended (one per reflected run, from its summary);
- **semantic**: facts and learnings (an agent's ``LEARNED:`` lines, a verification failure
  together with the fix that made the checks pass, a reviewer's feedback);
- **procedural**: what worked (the checks that passed).

Each memory has a **scope**: ``repo:<repository>`` (shared by every task on it),
``project:<task id>`` (shared by a project and its children) or ``task:<task id>``.

``MemoryRecorded`` is a task event: :func:`remember` adds it to a decision beside the event it
comes from, in the same append, so a memory is never lost between the two. What people and the
scope cap do to memories afterwards (pin, forget, evict) goes to one stream of its own, the
memory ledger (:data:`LEDGER`): those are not any one task's history.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import DomainEvent

from .decision import Draft
from .errors import InvalidCommand
from .events import (
    ChangesRequested,
    ReflectionRecorded,
    TaskEvent,
    VerificationFailed,
    VerificationPassed,
)
from .state import TaskState


class MemoryKind(enum.StrEnum):
    episodic = "episodic"
    semantic = "semantic"
    procedural = "procedural"


SCOPE_KINDS = ("repo", "project", "task")
"""What a scope can be, in the order a run's scopes are listed (widest first)."""

LEDGER = uuid5(NAMESPACE_URL, "ipa:memory-ledger")
"""The stream of what people and the scope cap did to memories (pin, forget, evict)."""

TEXT_MAX = 2000
"""A memory's text is cut to this many characters (its beginning)."""

IMPORTANCE = {
    "episode": 0.3,
    "checks": 0.5,
    "learned": 0.7,
    "fix": 0.8,
    "feedback": 0.8,
}
"""The importance a new memory starts with, by where it comes from (0 to 1)."""

_SCOPE = re.compile(r"^(repo|project|task):(.+)$", re.S)


# -- events ---------------------------------------------------------------------------------


class MemoryRecorded(TaskEvent):
    """Run ``run_id`` of job ``job_id`` (empty: a person's feedback) taught ``text``, kept as a
    ``kind`` memory in ``scope`` with ``importance`` (0 to 1). ``memory_id`` is derived from the
    task and the event's version, so it is the same in every replay."""

    memory_id: str
    kind: str
    text: str
    scope: str
    importance: float
    job_id: str
    run_id: str


class MemoryEvent(DomainEvent):
    """Base of the events of the memory ledger (:data:`LEDGER`)."""

    actor: str
    correlation_id: str
    causation_id: str | None


class MemoryPinned(MemoryEvent):
    """A person pinned a memory: it counts as most important and never decays or is evicted
    (``pinned`` false: unpinned, back to its recorded importance)."""

    memory_id: str
    pinned: bool


class MemoryForgotten(MemoryEvent):
    """A person forgot a memory: it leaves the read model and later prompts."""

    memory_id: str
    reason: str


class MemoriesEvicted(MemoryEvent):
    """The least useful memories of ``scope`` left it because it held more than ``cap``."""

    scope: str
    cap: int
    memory_ids: list[str]


# -- scopes ---------------------------------------------------------------------------------


def parse_scope(value: object) -> str:
    """``value`` as a scope (``repo:...``, ``project:<uuid>``, ``task:<uuid>``), or
    :class:`InvalidCommand` naming what is wrong."""
    if not isinstance(value, str):
        raise InvalidCommand(f"scope must be text, got {type(value).__name__}")
    match = _SCOPE.match(value.strip())
    if match is None:
        raise InvalidCommand(f"unknown scope {value!r}: expected repo:<repository>, "
                             "project:<task id> or task:<task id>")
    kind, rest = match.groups()
    if kind != "repo":
        try:
            rest = str(UUID(rest))
        except ValueError:
            raise InvalidCommand(f"scope {value!r}: {rest!r} is not a task id") from None
    return f"{kind}:{rest}"


def scopes_of(state: TaskState) -> list[str]:
    """The scopes a run of the task reads from: its repository's, its project's (a child's
    parent, or the project itself) and its own."""
    scopes = []
    if state.repo:
        scopes.append(f"repo:{state.repo}")
    project = state.parent_id if state.parent_id is not None else (
        state.id if state.workflow == "project" else None)
    if project is not None:
        scopes.append(f"project:{project}")
    scopes.append(f"task:{state.id}")
    return scopes


def _widest(state: TaskState) -> str:
    """Where a lesson about the work goes: the repository when the task has one, else the
    project, else the task."""
    return scopes_of(state)[0]


def _shared(state: TaskState) -> str:
    """Where what a run did goes: a child's project (its siblings read it), else the task."""
    scopes = scopes_of(state)
    return scopes[-2] if len(scopes) >= 2 and scopes[-2].startswith("project:") else scopes[-1]


# -- what a decision teaches ----------------------------------------------------------------


@dataclass(frozen=True)
class _Lesson:
    kind: MemoryKind
    text: str
    scope: str
    importance: float
    job_id: str = ""
    run_id: str = ""


def remember(state: TaskState, draft: Draft) -> None:
    """Add a ``MemoryRecorded`` for each lesson in the events ``draft`` holds (see the module
    doc); ``state`` is the task before them."""
    lessons = [lesson for event in list(draft.events) for lesson in _lessons(state, event)]
    for lesson in lessons:
        text = lesson.text.strip()
        if not text:
            continue
        draft.add(MemoryRecorded, memory_id=str(uuid5(draft.task_id, str(draft.version + 1))),
                  kind=lesson.kind.value, text=text[:TEXT_MAX], scope=lesson.scope,
                  importance=lesson.importance, job_id=lesson.job_id, run_id=lesson.run_id)


def _lessons(state: TaskState, event: TaskEvent) -> list[_Lesson]:
    if isinstance(event, ReflectionRecorded):
        job = state.jobs.get(event.job_id)
        who = job.agent if job is not None else "agent"
        summary = _first_lines(event.summary, 600)
        episode = _Lesson(MemoryKind.episodic,
                          f"In task {state.title!r} ({state.phase}), {who} did: {summary}",
                          _shared(state), IMPORTANCE["episode"], event.job_id, event.run_id)
        learned = [_Lesson(MemoryKind.semantic, item, _widest(state), IMPORTANCE["learned"],
                           event.job_id, event.run_id) for item in event.learnings]
        return [episode, *learned]
    if isinstance(event, VerificationPassed):
        commands = [str(c.get("command", "")) for c in event.checks if c.get("command")]
        lessons = []
        if commands:
            listed = ", ".join(f"`{c}`" for c in commands)
            lessons.append(_Lesson(MemoryKind.procedural, f"These checks pass on this work: "
                                   f"{listed}", _widest(state), IMPORTANCE["checks"],
                                   event.job_id, event.run_id))
        failures = [item.text for item in state.learnings
                    if item.job_id == event.job_id and "verification failed" in item.text]
        if failures:
            fixed_by = _fix_of(state, event)
            lessons.append(_Lesson(
                MemoryKind.semantic,
                f"{_first_lines(failures[-1], 700)}\nWhat fixed it: {fixed_by}",
                _widest(state), IMPORTANCE["fix"], event.job_id, event.run_id))
        return lessons
    if isinstance(event, VerificationFailed):
        return []  # a failure alone teaches little; its fix does (VerificationPassed above)
    if isinstance(event, ChangesRequested):
        return [_Lesson(MemoryKind.semantic,
                        f"A reviewer asked for changes to {state.title!r} ({event.phase}): "
                        f"{event.feedback}", _widest(state), IMPORTANCE["feedback"])]
    return []


def _fix_of(state: TaskState, event: VerificationPassed) -> str:
    """What the passing attempt learned (its ``LEARNED:`` lines), else which run it was."""
    learned = [item.text for item in state.learnings
               if item.job_id == event.job_id and item.attempt == event.attempt
               and "verification failed" not in item.text]
    if learned:
        return _first_lines("; ".join(learned), 500)
    return f"the changes of attempt {event.attempt} (run {event.run_id})"


def _first_lines(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rstrip() + " [...]"


def _nothing(event: TaskEvent, state: TaskState) -> dict[str, object]:
    return {}  # the read model keeps memories; the task's state does not


FOLDS = {MemoryRecorded: _nothing}
"""The fold of memory events for ``task.evolve``."""
