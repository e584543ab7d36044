"""What a task is: the ``TaskState`` value that ``task.evolve`` folds from its events.

``TaskState`` is frozen and holds typed values (``UUID``, ``datetime``, ``Status``). Its JSON form
(``to_dict``/``from_dict``), used by snapshots and read models, is the one place where those become
strings, and it round-trips exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from .workflows import Status


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
class TaskState:
    """Everything known about one task after the events up to ``version``.

    ``paused_from`` is set only while the task is paused. ``failure`` is the reason of the last
    failure, cleared by a retry. ``feedback`` holds the change requests not yet answered by an
    approval of their phase.
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
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskState:
        """The state ``to_dict`` produced: ``TaskState.from_dict(s.to_dict()) == s``."""
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
        )
