"""A project's backlog as its state holds it: the items, in order, and where each one is.

These are values only (``TaskState.backlog`` holds a ``Backlog``): how an analyst's answer
becomes items is in ``backlog_contract.py``, which edits are allowed and what may start in
``backlog.py``. They live apart from both because ``state.py`` imports them, and the
contract imports ``jobs.py`` (for ``dependency_cycle``), which imports ``state.py``.

An item's JSON form (``to_dict``) is the contract's item plus ``status`` and ``child_id``; it
is what the backlog events carry and what snapshots store, and it round-trips exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any
from uuid import UUID


class BacklogItemStatus(StrEnum):
    """Where a backlog item is.

    ``proposed`` waits for the backlog's approval at its gate; ``approved`` may be spawned once
    its dependencies are done; ``spawned`` runs as a child task (``child_id``), which ends
    ``finished`` or ``failed`` (a failed one waits for a person, who retries it, ``skipped``
    it — done without its work — or drops it); a completed child whose work conflicts with the
    project's branch is ``merging`` until its merge job lands it. ``dropped`` was taken out by
    a person (an edit, or an approved change after a PRD edit, which also cancels a running
    child); it stays in the backlog for the record.
    """

    proposed = "proposed"
    approved = "approved"
    spawned = "spawned"
    merging = "merging"
    finished = "finished"
    failed = "failed"
    skipped = "skipped"
    dropped = "dropped"

    @property
    def done(self) -> bool:
        """True when the item counts as done for its dependants and its phase."""
        return self in (BacklogItemStatus.finished, BacklogItemStatus.skipped)

    @property
    def has_child(self) -> bool:
        """True once a child task was spawned for the item: editing it would orphan its work."""
        return self in (BacklogItemStatus.spawned, BacklogItemStatus.merging,
                        BacklogItemStatus.finished, BacklogItemStatus.failed,
                        BacklogItemStatus.skipped)


@dataclass(frozen=True)
class BacklogItem:
    """One piece of a project's work, run later as a child task by an agent of type ``kind``
    in ``phase``: the contract's fields (see ``backlog.parse_backlog``), then its status.

    Higher ``priority`` starts first; ``depends_on`` names the items that must finish before
    it starts; ``acceptance`` lists the criteria its work is judged by.
    """

    id: str
    title: str
    description: str
    kind: str
    phase: str
    priority: int
    depends_on: tuple[str, ...] = ()
    acceptance: tuple[str, ...] = ()
    status: BacklogItemStatus = BacklogItemStatus.proposed
    child_id: UUID | None = None

    def fields(self) -> dict[str, Any]:
        """The contract's fields only, as JSON-ready data (what an analyst writes)."""
        return {
            "id": self.id,
            "title": self.title,
            "description": self.description,
            "kind": self.kind,
            "phase": self.phase,
            "priority": self.priority,
            "depends_on": list(self.depends_on),
            "acceptance": list(self.acceptance),
        }

    def to_dict(self) -> dict[str, Any]:
        """The item as JSON-ready data: its fields, ``status`` and ``child_id``."""
        child = None if self.child_id is None else str(self.child_id)
        return {**self.fields(), "status": self.status.value, "child_id": child}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BacklogItem:
        """The item ``to_dict`` produced (``status``/``child_id`` default to a new item's)."""
        child = data.get("child_id")
        return cls(
            id=data["id"],
            title=data["title"],
            description=data["description"],
            kind=data["kind"],
            phase=data["phase"],
            priority=data["priority"],
            depends_on=tuple(data["depends_on"]),
            acceptance=tuple(data["acceptance"]),
            status=BacklogItemStatus(data.get("status", BacklogItemStatus.proposed.value)),
            child_id=None if child is None else UUID(child),
        )


@dataclass(frozen=True)
class BacklogChange:
    """A change of an approved backlog that waits for a person: what the product analyst's
    re-plan of an edited PRD (its run ``run_id`` of job ``job_id``) would add, change and
    cancel. ``number`` counts the changes proposed to the backlog (a newer one replaces one
    still waiting); ``change`` holds ``(item_id, {field: new value})`` pairs in the contract's
    JSON form; ``cancel`` names the items to drop (a spawned one's child is cancelled)."""

    number: int
    job_id: str
    run_id: str
    add: tuple[BacklogItem, ...] = ()
    change: tuple[tuple[str, dict[str, Any]], ...] = ()
    cancel: tuple[str, ...] = ()

    def touched(self) -> set[str]:
        """The ids of the backlog's items it would change or cancel."""
        return {item_id for item_id, _ in self.change} | set(self.cancel)

    def to_dict(self) -> dict[str, Any]:
        """The change as JSON-ready data (the backlog view's ``pending``)."""
        return {
            "number": self.number,
            "job_id": self.job_id,
            "run_id": self.run_id,
            "add": [item.to_dict() for item in self.add],
            "change": [{"item_id": item_id, "changes": dict(changes)}
                       for item_id, changes in self.change],
            "cancel": list(self.cancel),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> BacklogChange | None:
        """The change ``to_dict`` produced (``None`` stays ``None``)."""
        if data is None:
            return None
        return cls(
            number=data["number"],
            job_id=data["job_id"],
            run_id=data["run_id"],
            add=tuple(BacklogItem.from_dict(item) for item in data["add"]),
            change=tuple((entry["item_id"], dict(entry["changes"])) for entry in data["change"]),
            cancel=tuple(data["cancel"]),
        )


@dataclass(frozen=True)
class Backlog:
    """A project's backlog: ``items`` in order (priority order once reordered), the number of
    the proposal they came from (``version``: 1, then 2 after a request for changes ...; each
    approved change adds one), the ``phase`` it was proposed in (approving that phase's gate
    approves it) and whether it was approved; once approved, how often the PRD was edited
    (``prd_edits``) and the change a re-plan proposed that waits for a person (``pending``)."""

    items: tuple[BacklogItem, ...]
    version: int
    phase: str
    approved: bool = False
    cycles: int = 0  # cycles of the open-ended last phase proposed so far (their items added)
    prd_edits: int = 0  # PRD edits (SpecUpdated) since it was approved: each one is re-planned
    changes: int = 0  # changes proposed by re-plans so far (the next one's number - 1)
    pending: BacklogChange | None = None  # the change waiting for a person, if any

    def item(self, item_id: str) -> BacklogItem | None:
        """The item ``item_id`` (dropped or not); ``None`` if the backlog has none."""
        return next((item for item in self.items if item.id == item_id), None)

    def live(self) -> tuple[BacklogItem, ...]:
        """The items that were not dropped, in order."""
        return tuple(item for item in self.items if item.status is not BacklogItemStatus.dropped)

    def with_item(self, item: BacklogItem) -> Backlog:
        """A copy with ``item`` in place of the item of its id, or added last."""
        if self.item(item.id) is None:
            return replace(self, items=(*self.items, item))
        return replace(self, items=tuple(item if old.id == item.id else old
                                         for old in self.items))

    def to_dict(self) -> dict[str, Any]:
        """The backlog as JSON-ready data (the task view's ``backlog``)."""
        return {
            "items": [item.to_dict() for item in self.items],
            "version": self.version,
            "phase": self.phase,
            "approved": self.approved,
            "cycles": self.cycles,
            "prd_edits": self.prd_edits,
            "changes": self.changes,
            "pending": None if self.pending is None else self.pending.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Backlog | None:
        """The backlog ``to_dict`` produced (``None`` stays ``None``)."""
        if data is None:
            return None
        return cls(
            items=tuple(BacklogItem.from_dict(item) for item in data["items"]),
            version=data["version"],
            phase=data["phase"],
            approved=data["approved"],
            cycles=data.get("cycles", 0),
            prd_edits=data.get("prd_edits", 0),
            changes=data.get("changes", 0),
            pending=BacklogChange.from_dict(data.get("pending")),
        )
