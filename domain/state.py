"""What a task is: the ``TaskState`` value that ``task.evolve`` folds from its events.

``TaskState`` is frozen and holds typed values (``UUID``, ``datetime``, ``Status``). Its JSON form
(``to_dict``/``from_dict``), used by snapshots and read models, is the one place where those become
strings, and it round-trips exactly.

A task's job queue and workspaces live in it as ``FrozenMap``s (id → ``Job``/``Workspace``, in the
order they were added): read-only mappings that compare and hash by their items in order, so
``TaskState`` stays a comparable, hashable value. In the JSON form they are lists in that order;
a snapshot from before the queue existed, without those keys, loads with an empty queue.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar
from uuid import UUID

from .backlog_items import Backlog
from .outbox import Outbox
from .workflows import Status

V = TypeVar("V")
R = TypeVar("R")

_FIELDS: dict[type, frozenset[str]] = {}


def changed(record: R, changes: Mapping[str, Any]) -> R:
    """``dataclasses.replace(record, **changes)``, several times as fast, for the state's
    plain frozen records (``TaskState``, ``Job``: no ``__post_init__``, no ``__slots__``, no
    field outside ``__init__``, no cached values; ``tests/domain/test_fold.py`` holds them to
    that): a copy of its fields with ``changes`` over them. A load folds every event through
    here (``replace`` passes each field to ``__init__`` by keyword: 28 against 4.7 µs for
    ``TaskState``'s 38 fields)."""
    cls = type(record)
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = frozenset(f.name for f in fields(cls))  # type: ignore[arg-type]
    unknown = changes.keys() - names
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {', '.join(sorted(unknown))}")
    new = object.__new__(cls)
    attributes = new.__dict__  # (a frozen dataclass refuses setattr, not its __dict__)
    attributes.update(record.__dict__)
    attributes.update(changes)
    return new


def json_copy(value: Any) -> Any:
    """A copy of a JSON value (dicts, lists, str, int, float, bool, None) that shares nothing
    mutable with it, as ``copy.deepcopy`` makes, at a third of its cost; anything else in it
    is deep-copied."""
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) in _ATOMS else json_copy(v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _ATOMS else json_copy(v) for v in value]
    if kind in _ATOMS:
        return value
    return copy.deepcopy(value)


_ATOMS = frozenset({str, int, float, bool, type(None)})


class FrozenMap(Mapping[str, V], Generic[V]):
    """A read-only mapping that keeps insertion order and compares (and hashes) by it.

    ``with_item`` returns a copy with one key added at the end or replaced in place.
    """

    __slots__ = ("_items",)
    _items: dict[str, V]

    def __init__(self, items: Mapping[str, V] | Iterable[tuple[str, V]] = ()) -> None:
        object.__setattr__(self, "_items", dict(items))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is read-only")

    def __getitem__(self, key: str) -> V:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FrozenMap):
            return NotImplemented
        return list(self._items.items()) == list(other._items.items())

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenMap, (list(self._items.items()),))

    def with_item(self, key: str, value: V) -> FrozenMap[V]:
        """A copy with ``key`` set to ``value`` (a new key goes last)."""
        items = dict(self._items)
        items[key] = value
        return FrozenMap(items)


class JobStatus(StrEnum):
    """Where a job is in the queue.

    ``failed`` waits for its ``retry_at``; ``dead`` used all its attempts and ``held`` was
    interrupted by a person: both wait for a person (``retry_job``, ``skip_job``,
    ``cancel_job``). ``succeeded``, ``skipped`` and ``cancelled`` are final; ``succeeded`` and
    ``skipped`` count as finished for their phase.
    """

    pending = "pending"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    dead = "dead"
    held = "held"
    skipped = "skipped"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        """True when the job counts as done for its phase (``succeeded`` or ``skipped``)."""
        return self in (JobStatus.succeeded, JobStatus.skipped)


@dataclass(frozen=True)
class Job:
    """One job of the task's queue, as its events left it.

    ``queued_seq`` is the task version of its ``JobQueued`` event (first in, first out within a
    priority). ``rate_limits`` counts the rate limits met in a row (reset by an attempt that
    ends otherwise); ``awaiting`` is the id of the question its agent asked, until answered.
    ``attempts`` counts the attempts started since it was queued or requeued;
    ``run_id`` and ``started_at`` are those of the current or last one, ``finished_at`` when
    the last one ended (``None`` while one runs). ``spec`` and ``result``
    are JSON objects; they take part in equality but not in the hash (dicts have none).
    """

    job_id: str
    agent: str
    phase: str
    priority: int
    depends_on: tuple[str, ...]
    timeout_seconds: float
    max_attempts: int
    spec: dict[str, Any] = field(hash=False)
    queued_seq: int
    queued_at: datetime
    status: JobStatus = JobStatus.pending
    attempts: int = 0
    run_id: str | None = None
    started_at: datetime | None = None
    retry_at: datetime | None = None
    last_error: str | None = None
    result: dict[str, Any] | None = field(default=None, hash=False)
    rate_limits: int = 0
    awaiting: str | None = None
    finished_at: datetime | None = None

    @property
    def deadline(self) -> datetime | None:
        """When the running attempt times out; ``None`` unless the job is running."""
        if self.status is not JobStatus.running or self.started_at is None:
            return None
        return self.started_at + timedelta(seconds=self.timeout_seconds)

    def to_dict(self) -> dict[str, Any]:
        """The job as JSON-ready data."""
        return {
            "job_id": self.job_id,
            "agent": self.agent,
            "phase": self.phase,
            "priority": self.priority,
            "depends_on": list(self.depends_on),
            "timeout_seconds": self.timeout_seconds,
            "max_attempts": self.max_attempts,
            "spec": json_copy(self.spec),
            "queued_seq": self.queued_seq,
            "queued_at": self.queued_at.isoformat(),
            "status": self.status.value,
            "attempts": self.attempts,
            "run_id": self.run_id,
            "started_at": _iso(self.started_at),
            "retry_at": _iso(self.retry_at),
            "last_error": self.last_error,
            "result": json_copy(self.result),
            "rate_limits": self.rate_limits,
            "awaiting": self.awaiting,
            "finished_at": _iso(self.finished_at),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """The job ``to_dict`` produced."""
        return cls(
            job_id=data["job_id"],
            agent=data["agent"],
            phase=data["phase"],
            priority=data["priority"],
            depends_on=tuple(data["depends_on"]),
            timeout_seconds=float(data["timeout_seconds"]),
            max_attempts=data["max_attempts"],
            spec=json_copy(data["spec"]),
            queued_seq=data["queued_seq"],
            queued_at=datetime.fromisoformat(data["queued_at"]),
            status=JobStatus(data["status"]),
            attempts=data["attempts"],
            run_id=data["run_id"],
            started_at=_from_iso(data["started_at"]),
            retry_at=_from_iso(data["retry_at"]),
            last_error=data["last_error"],
            result=json_copy(data["result"]),
            rate_limits=data.get("rate_limits", 0),
            awaiting=data.get("awaiting"),
            finished_at=_from_iso(data.get("finished_at")),
        )


@dataclass(frozen=True)
class Workspace:
    """A working copy of ``repo`` made for ``job_id`` (or for the task, when ``None``).

    ``commits`` are the shas recorded in it, oldest first; ``removed`` is set once its working
    copy is gone (the record stays, for the audit trail).
    """

    workspace_id: str
    job_id: str | None
    path: str
    branch: str
    repo: str
    base_commit: str
    commits: tuple[str, ...] = ()
    removed: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The workspace as JSON-ready data."""
        return {
            "workspace_id": self.workspace_id,
            "job_id": self.job_id,
            "path": self.path,
            "branch": self.branch,
            "repo": self.repo,
            "base_commit": self.base_commit,
            "commits": list(self.commits),
            "removed": self.removed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Workspace:
        """The workspace ``to_dict`` produced."""
        return cls(
            workspace_id=data["workspace_id"],
            job_id=data["job_id"],
            path=data["path"],
            branch=data["branch"],
            repo=data["repo"],
            base_commit=data["base_commit"],
            commits=tuple(data["commits"]),
            removed=data["removed"],
        )


@dataclass(frozen=True)
class Branch:
    """The task's branch ``name`` (``ipa/<task8>``), made at ``base_commit`` of ``base``;
    ``head_commit`` is its newest commit, ``None`` until a job's work lands on it."""

    name: str
    base: str
    base_commit: str
    head_commit: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The branch as JSON-ready data (the task view's ``branch``)."""
        return {"name": self.name, "base": self.base, "base_commit": self.base_commit,
                "head_commit": self.head_commit}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Branch | None:
        """The branch ``to_dict`` produced (``None`` stays ``None``)."""
        if data is None:
            return None
        return cls(data["name"], data["base"], data["base_commit"], data["head_commit"])


@dataclass(frozen=True)
class Origin:
    """Where a task came from: the task ``task_id`` at its version ``version`` (a fork starts
    from the state it had then; a clone copies the settings it had then)."""

    task_id: UUID
    version: int

    def to_dict(self) -> dict[str, Any]:
        """The origin as JSON-ready data (the task view's ``forked_from`` / ``cloned_from``)."""
        return {"task_id": str(self.task_id), "version": self.version}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Origin | None:
        """The origin ``to_dict`` produced (``None`` stays ``None``)."""
        if data is None:
            return None
        return cls(UUID(data["task_id"]), data["version"])


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _from_iso(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


@dataclass(frozen=True)
class Approval:
    """A person approved ``phase`` at its gate."""

    phase: str
    actor: str
    comment: str
    at: datetime


@dataclass(frozen=True)
class ChangeRequest:
    """A person sent ``phase`` back with ``feedback``; pending until the phase is approved."""

    phase: str
    actor: str
    feedback: str
    at: datetime


@dataclass(frozen=True)
class PhaseVisit:
    """The task entered ``phase`` at ``entered_at``."""

    phase: str
    entered_at: datetime


@dataclass(frozen=True)
class UsageTotals:
    """Tokens and cost summed over ``runs`` agent runs."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float = 0.0
    runs: int = 0

    def plus(self, other: UsageTotals) -> UsageTotals:
        return UsageTotals(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
            self.cost_usd + other.cost_usd,
            self.runs + other.runs,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cost_usd": self.cost_usd,
            "runs": self.runs,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UsageTotals:
        return cls(**data)


@dataclass(frozen=True)
class Usage:
    """What the task's agents used: in all, and per agent type, job and run."""

    total: UsageTotals = UsageTotals()
    by_agent: FrozenMap[UsageTotals] = field(default_factory=FrozenMap)
    by_job: FrozenMap[UsageTotals] = field(default_factory=FrozenMap)
    by_run: FrozenMap[UsageTotals] = field(default_factory=FrozenMap)

    def add(self, agent: str, job_id: str, run_id: str, used: UsageTotals) -> Usage:
        def grow(totals: FrozenMap[UsageTotals], key: str) -> FrozenMap[UsageTotals]:
            return totals.with_item(key, totals.get(key, UsageTotals()).plus(used))

        return Usage(
            self.total.plus(used),
            grow(self.by_agent, agent),
            grow(self.by_job, job_id),
            grow(self.by_run, run_id),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.total.to_dict(),
            "by_agent": {key: value.to_dict() for key, value in self.by_agent.items()},
            "by_job": {key: value.to_dict() for key, value in self.by_job.items()},
            "by_run": {key: value.to_dict() for key, value in self.by_run.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        def totals(key: str) -> FrozenMap[UsageTotals]:
            return FrozenMap((k, UsageTotals.from_dict(v)) for k, v in data[key].items())

        total = {k: v for k, v in data.items() if not k.startswith("by_")}
        return cls(UsageTotals.from_dict(total), totals("by_agent"), totals("by_job"),
                   totals("by_run"))


@dataclass(frozen=True)
class ChildrenUsage:
    """What a project's children used, summed as each one's end was recorded
    (``ChildFinished``): tokens in and out, cost, and how many children it counts. Apart from
    ``usage``, which stays the project's own agents'."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    children: int = 0

    def plus(self, input_tokens: int, output_tokens: int, cost_usd: float) -> ChildrenUsage:
        return ChildrenUsage(self.input_tokens + input_tokens,
                             self.output_tokens + output_tokens,
                             self.cost_usd + cost_usd, self.children + 1)

    def to_dict(self) -> dict[str, Any]:
        return {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                "cost_usd": self.cost_usd, "children": self.children}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ChildrenUsage:
        return cls() if data is None else cls(**data)


@dataclass(frozen=True)
class Learning:
    """An entry of the continuity log: what attempt ``attempt`` of ``job_id`` taught."""

    job_id: str
    attempt: int
    text: str
    at: datetime


@dataclass(frozen=True)
class Question:
    """A question an agent asked a person; ``answer`` is ``None`` while it is open."""

    question_id: str
    job_id: str
    run_id: str
    question: str
    asked_at: datetime
    answer: str | None = None
    answered_by: str | None = None
    answered_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "question_id": self.question_id,
            "job_id": self.job_id,
            "run_id": self.run_id,
            "question": self.question,
            "asked_at": self.asked_at.isoformat(),
            "answer": self.answer,
            "answered_by": self.answered_by,
            "answered_at": _iso(self.answered_at),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Question:
        return cls(
            question_id=data["question_id"],
            job_id=data["job_id"],
            run_id=data["run_id"],
            question=data["question"],
            asked_at=datetime.fromisoformat(data["asked_at"]),
            answer=data["answer"],
            answered_by=data["answered_by"],
            answered_at=_from_iso(data["answered_at"]),
        )


@dataclass(frozen=True)
class Artifact:
    """The newest version of a named piece of the task's work (``spec``, ``plan``, ...)."""

    name: str
    job_id: str
    phase: str
    content: str
    at: datetime


@dataclass(frozen=True)
class TaskState:
    """Everything known about one task after the events up to ``version``.

    ``paused_from`` is set only while the task is paused. ``failure`` is the reason of the last
    failure, cleared by a retry. ``feedback`` holds the change requests not yet answered by an
    approval of their phase. ``jobs`` is the job queue and ``workspaces`` the working copies made
    for it, by id in the order they were added; ``repository_error`` says why the task's
    repository could not be reached, until a workspace of it is made again. ``base_branch`` is
    the branch the task asked to start from (``None``: the repository's default); ``branch`` is
    the task's own branch, once made (see ``workspaces.py``).

    From the agents: ``usage`` sums tokens and cost; ``children_usage`` is what a project's
    finished children used; ``budget_usd`` caps the cost of both (``spent_usd``;
    ``budget_paused`` while the task is paused because it reached it); ``learnings`` is the
    continuity log of what earlier attempts taught; ``questions`` are the agents' questions to
    people, by id; ``artifacts`` the newest spec, plan, review ... by name.

    ``archived``: a person put the finished task away (it leaves the default task list);
    ``forked_from`` / ``cloned_from``: the task it was forked or cloned from (``lineage.py``).
    """

    id: UUID
    version: int
    title: str
    description: str
    workflow: str
    repo: str | None
    phase: str
    status: Status
    paused_from: Status | None
    created_at: datetime
    updated_at: datetime
    created_by: str
    approvals: tuple[Approval, ...] = ()
    feedback: tuple[ChangeRequest, ...] = ()
    failure: str | None = None
    phase_history: tuple[PhaseVisit, ...] = ()
    jobs: FrozenMap[Job] = field(default_factory=FrozenMap)
    workspaces: FrozenMap[Workspace] = field(default_factory=FrozenMap)
    repository_error: str | None = None
    base_branch: str | None = None
    branch: Branch | None = None
    usage: Usage = Usage()
    children_usage: ChildrenUsage = ChildrenUsage()  # a project's (children.py)
    budget_usd: float | None = None
    budget_paused: bool = False
    learnings: tuple[Learning, ...] = ()
    questions: FrozenMap[Question] = field(default_factory=FrozenMap)
    artifacts: FrozenMap[Artifact] = field(default_factory=FrozenMap)
    outbox: Outbox = field(default_factory=Outbox)  # the sync engine's (outbox.py)
    backlog: Backlog | None = None  # a project's (backlog.py); None until proposed
    max_children: int = 4  # a project's: children that run at once (children.py)
    approval_policies: tuple[tuple[str, str], ...] = ()  # (phase, policy) a person chose
    parent_id: UUID | None = None  # a child task's project (children.py)
    item_id: str | None = None  # ... and its backlog item
    kind: str | None = None  # ... and the agent type that does its work
    archived: bool = False  # a finished task put away by a person (archive.py)
    forked_from: Origin | None = None  # a fork's source and version (lineage.py)
    cloned_from: Origin | None = None  # a clone's source and version (lineage.py)

    @property
    def spent_usd(self) -> float:
        """What the task spent in US dollars, its budget's measure: its own agents' cost and,
        a project's, its finished children's."""
        return self.usage.total.cost_usd + self.children_usage.cost_usd

    def to_dict(self) -> dict[str, Any]:
        """The state as JSON-ready data (str, int, bool, None, lists and dicts only)."""
        return {
            "id": str(self.id),
            "version": self.version,
            "title": self.title,
            "description": self.description,
            "workflow": self.workflow,
            "repo": self.repo,
            "phase": self.phase,
            "status": self.status.value,
            "paused_from": None if self.paused_from is None else self.paused_from.value,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "created_by": self.created_by,
            "approvals": [
                {"phase": a.phase, "actor": a.actor, "comment": a.comment, "at": a.at.isoformat()}
                for a in self.approvals
            ],
            "feedback": [
                {"phase": f.phase, "actor": f.actor, "feedback": f.feedback, "at": f.at.isoformat()}
                for f in self.feedback
            ],
            "failure": self.failure,
            "phase_history": [
                {"phase": v.phase, "entered_at": v.entered_at.isoformat()}
                for v in self.phase_history
            ],
            "jobs": [job.to_dict() for job in self.jobs.values()],
            "workspaces": [workspace.to_dict() for workspace in self.workspaces.values()],
            "repository_error": self.repository_error,
            "base_branch": self.base_branch,
            "branch": None if self.branch is None else self.branch.to_dict(),
            "usage": self.usage.to_dict(),
            "children_usage": self.children_usage.to_dict(),
            "budget_usd": self.budget_usd,
            "budget_paused": self.budget_paused,
            "learnings": [
                {"job_id": x.job_id, "attempt": x.attempt, "text": x.text,
                 "at": x.at.isoformat()}
                for x in self.learnings
            ],
            "questions": [question.to_dict() for question in self.questions.values()],
            "artifacts": [
                {"name": a.name, "job_id": a.job_id, "phase": a.phase, "content": a.content,
                 "at": a.at.isoformat()}
                for a in self.artifacts.values()
            ],
            **self.outbox.to_dict(),
            "backlog": None if self.backlog is None else self.backlog.to_dict(),
            "max_children": self.max_children,
            "approval_policies": dict(self.approval_policies),
            "parent_id": None if self.parent_id is None else str(self.parent_id),
            "item_id": self.item_id,
            "kind": self.kind,
            "archived": self.archived,
            "forked_from": None if self.forked_from is None else self.forked_from.to_dict(),
            "cloned_from": None if self.cloned_from is None else self.cloned_from.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskState:
        """The state ``to_dict`` produced: ``TaskState.from_dict(s.to_dict()) == s``.

        Data from before the job queue (no ``jobs``, ``workspaces``, ``repository_error``) loads
        with none of them.
        """
        paused_from = data["paused_from"]
        return cls(
            id=UUID(data["id"]),
            version=data["version"],
            title=data["title"],
            description=data["description"],
            workflow=data["workflow"],
            repo=data["repo"],
            phase=data["phase"],
            status=Status(data["status"]),
            paused_from=None if paused_from is None else Status(paused_from),
            created_at=datetime.fromisoformat(data["created_at"]),
            updated_at=datetime.fromisoformat(data["updated_at"]),
            created_by=data["created_by"],
            approvals=tuple(
                Approval(a["phase"], a["actor"], a["comment"], datetime.fromisoformat(a["at"]))
                for a in data["approvals"]
            ),
            feedback=tuple(
                ChangeRequest(
                    f["phase"], f["actor"], f["feedback"], datetime.fromisoformat(f["at"])
                )
                for f in data["feedback"]
            ),
            failure=data["failure"],
            phase_history=tuple(
                PhaseVisit(v["phase"], datetime.fromisoformat(v["entered_at"]))
                for v in data["phase_history"]
            ),
            jobs=FrozenMap(
                (job["job_id"], Job.from_dict(job)) for job in data.get("jobs", ())
            ),
            workspaces=FrozenMap(
                (w["workspace_id"], Workspace.from_dict(w)) for w in data.get("workspaces", ())
            ),
            repository_error=data.get("repository_error"),
            base_branch=data.get("base_branch"),
            branch=Branch.from_dict(data.get("branch")),
            usage=Usage.from_dict(data["usage"]) if "usage" in data else Usage(),
            children_usage=ChildrenUsage.from_dict(data.get("children_usage")),
            budget_usd=data.get("budget_usd"),
            budget_paused=data.get("budget_paused", False),
            learnings=tuple(
                Learning(x["job_id"], x["attempt"], x["text"], datetime.fromisoformat(x["at"]))
                for x in data.get("learnings", ())
            ),
            questions=FrozenMap(
                (q["question_id"], Question.from_dict(q)) for q in data.get("questions", ())
            ),
            artifacts=FrozenMap(
                (a["name"], Artifact(a["name"], a["job_id"], a["phase"], a["content"],
                                     datetime.fromisoformat(a["at"])))
                for a in data.get("artifacts", ())
            ),
            outbox=Outbox.from_dict(data),
            backlog=Backlog.from_dict(data.get("backlog")),
            max_children=data.get("max_children", 4),
            approval_policies=tuple(sorted((data.get("approval_policies") or {}).items())),
            parent_id=UUID(data["parent_id"]) if data.get("parent_id") else None,
            item_id=data.get("item_id"),
            kind=data.get("kind"),
            archived=data.get("archived", False),
            forked_from=Origin.from_dict(data.get("forked_from")),
            cloned_from=Origin.from_dict(data.get("cloned_from")),
        )
