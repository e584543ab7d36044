"""The events of a project's children and of its gates' approval policy (see ``children.py``)."""

from __future__ import annotations

from .events import TaskEvent


class TaskLinked(TaskEvent):
    """The task is the child of item ``item_id`` of project ``parent_id``; an agent of type
    ``kind`` does its work. Follows its ``TaskCreated``."""

    parent_id: str
    item_id: str
    kind: str


class ChildSpawned(TaskEvent):
    """Item ``item_id`` (of ``phase``, done by a ``kind``) runs as the child task
    ``child_id``."""

    item_id: str
    child_id: str
    kind: str
    phase: str


class ChildFinished(TaskEvent):
    """The child task ``child_id`` of item ``item_id`` ended with ``outcome`` (``completed``,
    ``failed`` or ``cancelled``; ``reason`` says why when it did not complete). Its agents had
    used ``input_tokens`` and ``output_tokens`` and cost ``cost_usd`` US dollars, which the
    project's spend counts (version 1, from before: nothing counted)."""

    class_version = 2

    item_id: str
    child_id: str
    outcome: str
    reason: str
    input_tokens: int
    output_tokens: int
    cost_usd: float

    @staticmethod
    def upcast_v1_v2(state: dict) -> None:
        state["input_tokens"] = 0
        state["output_tokens"] = 0
        state["cost_usd"] = 0.0


class ChildMerged(TaskEvent):
    """The work of item ``item_id``'s child ``child_id`` (its branch at ``child_commit``) was
    merged into the project's branch: its head is ``commit`` now (was ``previous``)."""

    item_id: str
    child_id: str
    child_commit: str
    commit: str
    previous: str


class ChildConflicted(TaskEvent):
    """Item ``item_id``'s child ``child_id`` completed, but its branch (at ``child_commit``)
    conflicts with the project's in ``files``: the item is ``merging`` until the job
    ``merge_job`` (a developer, in a worktree holding the conflict) lands the merge."""

    item_id: str
    child_id: str
    child_commit: str
    files: list[str]
    merge_job: str


class MaxChildrenSet(TaskEvent):
    """At most ``max_children`` children of the project run at once from now on."""

    max_children: int


class ItemRetried(TaskEvent):
    """A person sent the failed item ``item_id`` back to work: a new child replaces
    ``previous_child``."""

    item_id: str
    previous_child: str


class ItemSkipped(TaskEvent):
    """A person counted the failed item ``item_id`` as done (its dependants may start)."""

    item_id: str
    reason: str


class ItemCancelled(TaskEvent):
    """A person dropped the failed item ``item_id`` and ``dropped``, the items waiting on it."""

    item_id: str
    reason: str
    dropped: list[str]


class ApprovalPolicySet(TaskEvent):
    """``policy`` (``person``, ``agent`` or ``auto``) decides at the gate of ``phase`` from
    now on."""

    phase: str
    policy: str
