"""The commands of a project's children and of its gates' approval policy (see
``children.py``).

``create_child_task``, ``spawn_child`` and ``record_child_finished`` are recorded by ipa: the
project's pod spawns an item as a child task and follows it to its end. A person steers:
``set_max_children``, ``retry_item`` / ``skip_item`` / ``cancel_item`` for an item whose child
failed, and ``set_approval_policy`` for a gate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .commands import Command


@dataclass(frozen=True)
class CreateChildTask(Command):
    """Create the child task of item ``item_id`` of project ``parent_id``: a task of workflow
    ``workflow`` whose work is done by an agent of type ``kind``, on a branch made from
    ``base_branch`` (the project's branch). The first command of the child's stream."""

    name: ClassVar[str] = "create_child_task"

    title: str
    description: str
    parent_id: str
    item_id: str
    kind: str
    workflow: str = "item"
    repo: str | None = None
    base_branch: str | None = None


@dataclass(frozen=True)
class SpawnChild(Command):
    """Record that item ``item_id`` runs as the child task ``child_id`` from now on."""

    name: ClassVar[str] = "spawn_child"

    item_id: str
    child_id: str


@dataclass(frozen=True)
class RecordChildFinished(Command):
    """Record that the child task ``child_id`` ended: ``outcome`` is ``completed``, ``failed``
    or ``cancelled``; ``reason`` says why when it did not complete. ``merged``: the project
    branch's new head once the child's branch (at ``child_commit``) was merged into it.
    ``input_tokens``, ``output_tokens`` and ``cost_usd`` (US dollars): what the child's agents
    used (its ``usage``), added to the project's spend and checked against its budget."""

    name: ClassVar[str] = "record_child_finished"

    child_id: str
    outcome: str
    reason: str = ""
    child_commit: str | None = None
    merged: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True)
class RecordChildConflict(Command):
    """Record that the completed child ``child_id``'s branch (at ``child_commit``) conflicts
    with the project's branch in ``files``, and queue the job ``merge_job`` (an ``agent`` with
    ``spec``) that merges it: one record, so no conflict is left without its merge job."""

    name: ClassVar[str] = "record_child_conflict"

    child_id: str
    child_commit: str
    files: Sequence[str]
    merge_job: str
    agent: str
    spec: dict[str, Any]


@dataclass(frozen=True)
class SetMaxChildren(Command):
    """Run at most ``max_children`` child tasks of the project at once."""

    name: ClassVar[str] = "set_max_children"

    max_children: int


@dataclass(frozen=True)
class RetryItem(Command):
    """Run a failed item again, as a new child task."""

    name: ClassVar[str] = "retry_item"

    item_id: str


@dataclass(frozen=True)
class SkipItem(Command):
    """Count a failed item as done, so the items that depend on it may start."""

    name: ClassVar[str] = "skip_item"

    item_id: str
    reason: str = ""


@dataclass(frozen=True)
class CancelItem(Command):
    """Drop a failed item, and every item waiting on it (they could never start)."""

    name: ClassVar[str] = "cancel_item"

    item_id: str
    reason: str = ""


@dataclass(frozen=True)
class SetApprovalPolicy(Command):
    """Who decides at the gate of ``phase``: ``person``, ``agent`` (the reviewer's verdict and
    the checks) or ``auto``."""

    name: ClassVar[str] = "set_approval_policy"

    phase: str
    policy: str


CHILD_COMMANDS: tuple[type[Command], ...] = (
    CreateChildTask, SpawnChild, RecordChildFinished, RecordChildConflict, SetMaxChildren,
    RetryItem, SkipItem, CancelItem, SetApprovalPolicy,
)
"""The commands of a project's children and of approval policies."""
