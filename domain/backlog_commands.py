"""The commands of a project's backlog: ipa's record of a proposed backlog, and a person's edits.

None is a workflow move (``allowed_commands`` does not list them; ``backlog.py`` says when each
is accepted). ``propose_backlog`` is recorded by ipa when the analyst's run returned a valid
backlog (``backlog.parse_backlog``), ``propose_backlog_change`` when its re-plan of an edited
PRD did; the four edits and the answer to a change are a person's, through the API and the
pages, and their fields are plain JSON so the API can build them from a request body.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .backlog_items import BacklogItem
from .commands import Command


@dataclass(frozen=True)
class ProposeBacklog(Command):
    """Record the backlog that the run ``run_id`` of job ``job_id`` returned: it replaces a
    backlog no child was spawned from, and waits for approval at the current phase's gate."""

    name: ClassVar[str] = "propose_backlog"

    items: Sequence[BacklogItem]
    job_id: str
    run_id: str


@dataclass(frozen=True)
class ProposeCycle(Command):
    """Record the items the run ``run_id`` of job ``job_id`` proposes for the next cycle of
    an open-ended last phase (a project's ``perpetual``): added to the backlog, approved (the
    phase has no gate; a person pauses or cancels the project to stop its cycles)."""

    name: ClassVar[str] = "propose_cycle"

    items: Sequence[BacklogItem]
    job_id: str
    run_id: str


@dataclass(frozen=True)
class ProposeBacklogChange(Command):
    """Record what the run ``run_id`` of a re-plan job ``job_id`` (the analyst, after a PRD
    edit) returned: ``items``, the whole backlog as it should be now. Compared with the
    approved backlog, it becomes a change (items to add, change and cancel) that waits for a
    person; a change still waiting is replaced; no difference records nothing."""

    name: ClassVar[str] = "propose_backlog_change"

    items: Sequence[BacklogItem]
    job_id: str
    run_id: str


@dataclass(frozen=True)
class ApproveBacklogChange(Command):
    """Apply the backlog's waiting change, whole (``number``, when given, must be the one
    waiting: a newer one may have replaced what was seen)."""

    name: ClassVar[str] = "approve_backlog_change"

    number: int | None = None
    comment: str = ""


@dataclass(frozen=True)
class RejectBacklogChange(Command):
    """Turn the backlog's waiting change down (``number`` as for ``approve_backlog_change``);
    ``reason`` says why."""

    name: ClassVar[str] = "reject_backlog_change"

    number: int | None = None
    reason: str = ""


@dataclass(frozen=True)
class AddBacklogItem(Command):
    """Add ``item`` to the backlog: an object with the contract's fields (``id``, ``title``,
    ``description``, ``kind``, ``phase``, ``priority``, ``depends_on``, ``acceptance``)."""

    name: ClassVar[str] = "add_backlog_item"

    item: dict[str, Any]


@dataclass(frozen=True)
class ChangeBacklogItem(Command):
    """Change the fields given (not ``None``) of the backlog item ``item_id``, which has no
    child task yet."""

    name: ClassVar[str] = "change_backlog_item"

    item_id: str
    title: str | None = None
    description: str | None = None
    kind: str | None = None
    phase: str | None = None
    priority: int | None = None
    depends_on: Sequence[str] | None = None
    acceptance: Sequence[str] | None = None


@dataclass(frozen=True)
class DropBacklogItem(Command):
    """Take the item ``item_id``, which has no child task and no item depending on it, out of
    the backlog; ``reason`` says why."""

    name: ClassVar[str] = "drop_backlog_item"

    item_id: str
    reason: str = ""


@dataclass(frozen=True)
class ReorderBacklog(Command):
    """Put the backlog in priority order: ``item_ids`` names every item not dropped, the one to
    start first first. The items keep the backlog's priorities, handed out again in this
    order."""

    name: ClassVar[str] = "reorder_backlog"

    item_ids: Sequence[str]


BACKLOG_COMMANDS: tuple[type[Command], ...] = (
    ProposeBacklog,
    ProposeCycle,
    AddBacklogItem,
    ChangeBacklogItem,
    DropBacklogItem,
    ReorderBacklog,
    ProposeBacklogChange,
    ApproveBacklogChange,
    RejectBacklogChange,
)
"""The commands of the backlog: never workflow moves."""
