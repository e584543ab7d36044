"""The events of a project's backlog in its task's stream (see ``backlog.py``).

Items travel as their JSON form (``BacklogItem.to_dict``: the contract's fields, ``status``
and ``child_id``), so an event says exactly what the backlog holds after it.
"""

from __future__ import annotations

from .events import TaskEvent


class BacklogProposed(TaskEvent):
    """The run ``run_id`` of job ``job_id`` returned a valid backlog: ``items``, in order, are
    the backlog now (proposal number ``version``), waiting for approval at the phase's gate."""

    job_id: str
    run_id: str
    version: int
    items: list[dict]


class CycleProposed(TaskEvent):
    """The run ``run_id`` of job ``job_id`` proposed the items of cycle ``cycle`` of the
    open-ended last phase: ``items`` join the backlog, approved."""

    job_id: str
    run_id: str
    cycle: int
    items: list[dict]


class BacklogApproved(TaskEvent):
    """A person (``actor``) approved the gate the backlog waited at: its proposed items may be
    spawned. Follows the ``PhaseApproved`` of that gate."""

    version: int


class BacklogItemAdded(TaskEvent):
    """A person added ``item`` at the end of the backlog."""

    item: dict


class BacklogItemChanged(TaskEvent):
    """A person changed the item ``item_id``: ``changes`` holds the new value of each field
    that changed."""

    item_id: str
    changes: dict


class BacklogItemDropped(TaskEvent):
    """A person took the item ``item_id`` out of the backlog; ``reason`` says why."""

    item_id: str
    reason: str


class BacklogReordered(TaskEvent):
    """A person put the items not dropped in the order ``item_ids``; ``priorities[i]`` is the
    new priority of ``item_ids[i]`` (the backlog's priorities, highest first)."""

    item_ids: list[str]
    priorities: list[int]


class BacklogChangeProposed(TaskEvent):
    """The re-plan run ``run_id`` of job ``job_id`` (after a PRD edit) proposed change
    ``number`` of the approved backlog, which waits for a person (replacing one that waited):
    ``add`` the new items (JSON form, approved once it is), ``change`` ``[{"item_id",
    "changes"}]`` (each field's new value), ``cancel`` the ids of the items to drop."""

    job_id: str
    run_id: str
    number: int
    add: list[dict]
    change: list[dict]
    cancel: list[str]


class BacklogChangeApproved(TaskEvent):
    """A person (``actor``) approved change ``number``: it applies whole, and the backlog's
    ``version`` is one more. A cancelled item whose child runs has that child cancelled by
    the project's pod."""

    number: int
    comment: str


class BacklogChangeRejected(TaskEvent):
    """A person (``actor``) turned change ``number`` down; the backlog stays as it was."""

    number: int
    reason: str
