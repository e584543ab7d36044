"""A project's backlog in its task: proposed by ipa for the analyst's run, approved at the
gate, edited by a person, and asked which items may start.

**Proposing.** ``propose_backlog`` records the items ``backlog_contract.parse_backlog`` read
from the analyst's answer, for the latest run of its job. They are checked again (all but
their kinds: the catalog is not the domain's) and replace a backlog that no child task was
spawned from; the backlog waits at the gate of the phase it was proposed in, and approving
that gate approves it (``BacklogApproved`` after ``PhaseApproved``: its items may be spawned).

**Editing.** While the task is not over, a person adds, changes, drops and reorders items.
Each edit is checked on the backlog it would leave (no dangling dependency, no cycle, no
dependency on a later phase, no phase that is over) and refused whole, with every problem
(``BacklogInvalid``), if it breaks one: nothing is half-applied. An item whose child task was
spawned is neither changed nor dropped, which would orphan its work; that refusal, like
every refusal of the task's state, is a ``JobRejected``. An added item is approved when the
backlog is; a dropped one stays in the backlog, last on a reorder, for the record. A reorder
hands the backlog's own priorities out again in the new order. The kind of a person's item is
checked for its form only; the pod checks it against its catalog.

**Changing after a PRD edit.** An edit of an approved backlog's PRD is counted
(``prd_edits``); ``replan_due`` tells the pod to queue a re-plan job, whose answer — the whole
backlog as it should be now — ``propose_backlog_change`` compares with the backlog: new ids
are added, known ones changed, live items left out cancelled. Work that is done or running is
not changed (a running item may only be cancelled, which cancels its child); the change is
checked whole and waits for a person (``Backlog.pending``, a newer one replacing it), who
approves it (checked again, applied whole) or rejects it. Meanwhile the items it touches are
not spawned, and a phase it brings work to does not complete.

**Asking.** ``backlog_phases`` (the phases items may run in), ``plan_phases`` (those a
re-planned backlog's items may sit in), ``replan_due``, ``ready_items`` (what may be spawned in
a phase, highest priority first) and ``phase_items_done``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from .backlog_commands import (
    AddBacklogItem,
    ApproveBacklogChange,
    ChangeBacklogItem,
    DropBacklogItem,
    ProposeBacklog,
    ProposeBacklogChange,
    ProposeCycle,
    RejectBacklogChange,
    ReorderBacklog,
)
from .backlog_contract import FIELDS, BacklogInvalid, check_items, graph_problems, read_item
from .backlog_events import (
    BacklogApproved,
    BacklogChangeApproved,
    BacklogChangeProposed,
    BacklogChangeRejected,
    BacklogItemAdded,
    BacklogItemChanged,
    BacklogItemDropped,
    BacklogProposed,
    BacklogReordered,
    CycleProposed,
)
from .backlog_items import Backlog, BacklogChange, BacklogItem, BacklogItemStatus
from .commands import Command
from .decision import Draft, identifier, rejection, text, whole
from .errors import InvalidCommand, JobNotFound
from .events import TaskEvent
from .workflows import get_workflow

if TYPE_CHECKING:
    from .state import TaskState

_EDITABLE = FIELDS[1:]
"""What ``change_backlog_item`` may change: every field but the id."""


# -- decide --------------------------------------------------------------------------------------


def backlog_phases(state: TaskState) -> tuple[str, ...]:
    """The phases a backlog item of the task may run in: those after the phase the backlog was
    proposed in (the current phase while there is none), from the current phase on, but a
    final phase that completes the task. The pod passes them to ``parse_backlog``."""
    return _phases_after(state, state.phase if state.backlog is None else state.backlog.phase)


def _phases_after(state: TaskState, phase: str) -> tuple[str, ...]:
    workflow = get_workflow(state.workflow)
    names = [p.name for p in workflow.phases]
    start = max(names.index(phase) + 1, names.index(state.phase))
    return tuple(name for name in names[start:] if not workflow.completes_at(name))


def _order(state: TaskState) -> tuple[str, ...]:
    return tuple(phase.name for phase in get_workflow(state.workflow).phases)


def _open(state: TaskState, command: Command) -> Backlog:
    """The backlog a person's edit applies to; refused when the task is over or has none."""
    if state.status.terminal:
        raise rejection(state, command, f"the task is {state.status.value}")
    if state.backlog is None:
        raise rejection(state, command, "the task has no backlog yet")
    return state.backlog


def _editable(state: TaskState, backlog: Backlog, command: Command, item_id: object) -> BacklogItem:
    """The item ``item_id``, which must be in the backlog, not dropped and without a child."""
    item_id = identifier(item_id, "item_id")
    item = backlog.item(item_id)
    if item is None:
        raise InvalidCommand(f"cannot {command.name}: the backlog has no item {item_id!r}")
    if item.status is BacklogItemStatus.dropped:
        raise rejection(state, command, f"item {item_id!r} was dropped")
    if item.status.has_child:
        raise rejection(state, command, _has_child(item))
    return item


def _has_child(item: BacklogItem) -> str:
    child = f"child task {item.child_id}"
    if item.status is BacklogItemStatus.spawned:
        return (f"item {item.id!r} runs as {child}; changing or dropping it would orphan that "
                "work: wait for it to finish, or cancel it first")
    if item.status is BacklogItemStatus.finished:
        return f"item {item.id!r} has finished ({child}); its work is done"
    return f"item {item.id!r} failed ({child}); it waits for a person to retry, skip or cancel it"


def _items(ids: Sequence[str]) -> str:
    """``item 'a'`` or ``items 'a', 'b'``."""
    return ("item " if len(ids) == 1 else "items ") + ", ".join(map(repr, ids))


def _proposer(state: TaskState, command: Any) -> tuple[str, str]:
    """The job and run a proposal of items comes from (its latest run), its items checked to
    be ``BacklogItem``s (``parse_backlog``'s)."""
    job_id = identifier(command.job_id, "job_id")
    run_id = identifier(command.run_id, "run_id")
    if not isinstance(command.items, list | tuple) or not all(
        isinstance(item, BacklogItem) for item in command.items
    ):
        raise InvalidCommand("items must be a list of BacklogItem (see parse_backlog)")
    job = state.jobs.get(job_id)
    if job is None:
        raise JobNotFound(command.name, job_id)
    if job.run_id != run_id:
        problem = f"run {run_id!r} is not the latest run of job {job_id!r} ({job.run_id!r})"
        raise rejection(state, command, problem)
    return job_id, run_id


def _propose(state: TaskState, command: ProposeBacklog, draft: Draft) -> None:
    job_id, run_id = _proposer(state, command)
    if state.status.terminal:
        raise rejection(state, command, f"the task is {state.status.value}")
    if state.backlog is not None:
        spawned = [item.id for item in state.backlog.items if item.status.has_child]
        if spawned:
            raise rejection(state, command, f"{_items(spawned)} of the backlog already ran as "
                                            "child tasks; a new backlog would orphan their work")
    # The kinds were checked against the catalog by parse_backlog; the rest is checked again.
    items = check_items([item.fields() for item in command.items], kinds=None,
                        phases=_phases_after(state, state.phase), order=_order(state))
    version = 1 if state.backlog is None else state.backlog.version + 1
    draft.add(BacklogProposed, job_id=job_id, run_id=run_id, version=version,
              items=[item.to_dict() for item in items])


def _propose_cycle(state: TaskState, command: ProposeCycle, draft: Draft) -> None:
    workflow = get_workflow(state.workflow)
    if not workflow.open_ended or state.phase != workflow.final or state.status.terminal:
        raise rejection(state, command, "cycles belong to a running open-ended last phase")
    job_id, run_id = _proposer(state, command)
    items = check_items([item.fields() for item in command.items], kinds=None,
                        phases=(state.phase,), order=_order(state))
    taken = {item.id for item in state.backlog.items} if state.backlog is not None else set()
    again = [item.id for item in items if item.id in taken]
    if again:
        raise BacklogInvalid([f"item {i!r}: the backlog has an item {i!r} already"
                              for i in again])
    cycle = (state.backlog.cycles if state.backlog is not None else 0) + 1
    draft.add(CycleProposed, job_id=job_id, run_id=run_id, cycle=cycle,
              items=[replace(item, status=BacklogItemStatus.approved).to_dict()
                     for item in items])


def _add(state: TaskState, command: AddBacklogItem, draft: Draft) -> None:
    backlog = _open(state, command)
    problems: list[str] = []
    hints: dict[str, None] = {}
    _, item = read_item(command.item, "the new item", None,
                        _phases_after(state, backlog.phase), problems, hints)
    if item is not None:
        taken = backlog.item(item.id)
        if taken is not None:
            by = " by a dropped item" if taken.status is BacklogItemStatus.dropped else ""
            problems.append(f"item id {item.id!r} is taken{by}")
        else:
            status = BacklogItemStatus.approved if backlog.approved else BacklogItemStatus.proposed
            item = replace(item, status=status)
            problems += graph_problems((*backlog.live(), item), _order(state),
                                       dropped=_dropped(backlog))
    if problems or item is None:
        raise BacklogInvalid(problems, list(hints))
    draft.add(BacklogItemAdded, item=item.to_dict())


def _change(state: TaskState, command: ChangeBacklogItem, draft: Draft) -> None:
    backlog = _open(state, command)
    item = _editable(state, backlog, command, command.item_id)
    changes = {name: getattr(command, name) for name in _EDITABLE
               if getattr(command, name) is not None}
    if not changes:
        raise InvalidCommand(f"cannot {command.name}: nothing to change; give one or more of "
                             f"{', '.join(_EDITABLE)}")
    # A phase that is over is refused only when it is the change: the item may sit in one.
    phases = _phases_after(state, backlog.phase) if "phase" in changes else (item.phase,)
    problems: list[str] = []
    hints: dict[str, None] = {}
    _, changed = read_item({**item.fields(), **changes}, f"item {item.id!r}", None, phases,
                           problems, hints)
    if changed is not None:
        changed = replace(changed, status=item.status, child_id=item.child_id)
        after = tuple(changed if other.id == item.id else other for other in backlog.live())
        problems += graph_problems(after, _order(state), dropped=_dropped(backlog))
    if problems or changed is None:
        raise BacklogInvalid(problems, list(hints))
    before = item.fields()
    diff = {name: value for name, value in changed.fields().items() if value != before[name]}
    if diff:  # the same values again are not worth a line in the audit trail
        draft.add(BacklogItemChanged, item_id=item.id, changes=diff)


def _drop(state: TaskState, command: DropBacklogItem, draft: Draft) -> None:
    reason = text(command.reason, "reason")
    backlog = _open(state, command)
    item = _editable(state, backlog, command, command.item_id)
    dependants = [other.id for other in backlog.live() if item.id in other.depends_on]
    if dependants:
        raise BacklogInvalid([f"item {other!r} depends on {item.id!r}; change its depends_on "
                              "or drop it first" for other in dependants])
    draft.add(BacklogItemDropped, item_id=item.id, reason=reason)


def _reorder(state: TaskState, command: ReorderBacklog, draft: Draft) -> None:
    if not isinstance(command.item_ids, list | tuple):
        raise InvalidCommand(f"item_ids must be a list of item ids, got "
                             f"{type(command.item_ids).__name__}")
    ids = [identifier(item_id, "item_ids item") for item_id in command.item_ids]
    backlog = _open(state, command)
    live = backlog.live()
    by_id = {item.id: item for item in backlog.items}
    named = Counter(ids)
    problems = [f"item {item_id!r} is named {count} times"
                for item_id, count in named.items() if count > 1]
    for item_id in named:
        if item_id not in by_id:
            problems.append(f"item {item_id!r} is not an item of the backlog")
        elif by_id[item_id].status is BacklogItemStatus.dropped:
            problems.append(f"item {item_id!r} was dropped")
    missing = [item.id for item in live if item.id not in named]
    if missing:
        problems.append(f"item_ids leaves out {_items(missing)}; it must name every item that "
                        "was not dropped")
    if problems:
        raise BacklogInvalid(problems)
    # The backlog's own priorities, handed out again highest first: the order is now theirs.
    priorities = sorted((item.priority for item in live), reverse=True)
    if [(item.id, item.priority) for item in live] != list(zip(ids, priorities, strict=True)):
        draft.add(BacklogReordered, item_ids=ids, priorities=priorities)


def _dropped(backlog: Backlog) -> set[str]:
    return {item.id for item in backlog.items if item.status is BacklogItemStatus.dropped}


# -- a change after a PRD edit ------------------------------------------------------------------

_KEPT = (BacklogItemStatus.finished, BacklogItemStatus.skipped, BacklogItemStatus.merging)
"""Items whose work is done (or landing): a change neither changes nor cancels them."""


def plan_phases(state: TaskState) -> tuple[str, ...]:
    """The phases the items of a re-planned backlog may sit in: every phase after the one the
    backlog was proposed in, those that are over too (their items stay as they are; new and
    changed items must run in one of ``backlog_phases``). The pod passes them to
    ``parse_backlog`` for a re-plan's answer."""
    if state.backlog is None:
        return backlog_phases(state)
    workflow = get_workflow(state.workflow)
    names = [p.name for p in workflow.phases]
    return tuple(name for name in names[names.index(state.backlog.phase) + 1:]
                 if not workflow.completes_at(name))


def replan_due(state: TaskState) -> int | None:
    """The PRD edit a re-plan job should answer now: the newest (``Backlog.prd_edits``) when
    the approved backlog of a task that is not over saw an edit no job was queued for (a job's
    ``spec["replan"]`` names the edit it answers). ``None`` otherwise."""
    backlog = state.backlog
    if backlog is None or not backlog.approved or not backlog.prd_edits or state.status.terminal:
        return None
    answered = [job.spec.get("replan") for job in state.jobs.values()]
    newest = max((n for n in answered if isinstance(n, int) and not isinstance(n, bool)),
                 default=0)
    return backlog.prd_edits if backlog.prd_edits > newest else None


def spec_updated(state: TaskState) -> dict[str, Any]:
    """The backlog's part of ``SpecUpdated``'s fold: an edit of an approved backlog's PRD is
    counted, to be re-planned (``replan_due``); before approval the gate decides."""
    backlog = state.backlog
    if backlog is None or not backlog.approved:
        return {}
    return {"backlog": replace(backlog, prd_edits=backlog.prd_edits + 1)}


def _kept(item: BacklogItem) -> str:
    """Why a change leaves ``item`` as it is."""
    child = f"child task {item.child_id}"
    if item.status is BacklogItemStatus.spawned:
        return (f"item {item.id!r} runs as {child}: keep it as it is, or leave it out to "
                "cancel that child")
    if item.status is BacklogItemStatus.failed:
        return (f"item {item.id!r} failed ({child}) and waits for a person: keep it as it is, "
                "or leave it out to cancel it")
    if item.status is BacklogItemStatus.merging:
        return f"item {item.id!r} is being merged ({child}): keep it as it is"
    return f"item {item.id!r} is {item.status.value} ({child}): keep it as it is"


def _diff(backlog: Backlog, items: Sequence[BacklogItem],
          problems: list[str]) -> tuple[list[BacklogItem], list[tuple[str, dict]], list[str]]:
    """What turns ``backlog`` into ``items`` (the whole backlog as it should be): items to
    add, changes ``(item_id, {field: value})`` and ids to cancel (live items left out)."""
    add: list[BacklogItem] = []
    change: list[tuple[str, dict]] = []
    named: set[str] = set()
    for item in items:
        named.add(item.id)
        old = backlog.item(item.id)
        if old is None:
            add.append(replace(item, status=BacklogItemStatus.approved))
        elif old.status is BacklogItemStatus.dropped:
            problems.append(f"item {item.id!r} was dropped; new work needs a new id")
        else:
            before = old.fields()
            diff = {name: value for name, value in item.fields().items()
                    if value != before[name]}
            if diff:
                change.append((item.id, diff))
    cancel = [old.id for old in backlog.live() if old.id not in named]
    return add, change, cancel


def _applied(backlog: Backlog, change: BacklogChange) -> Backlog:
    """``backlog`` with ``change`` applied (not checked: see ``_change_problems``)."""
    changes = dict(change.change)
    cancel = set(change.cancel)
    items = []
    for item in backlog.items:
        if item.id in cancel:
            item = replace(item, status=BacklogItemStatus.dropped)
        elif item.id in changes:
            item = BacklogItem.from_dict({**item.to_dict(), **changes[item.id]})
        items.append(item)
    return replace(backlog, items=(*items, *change.add))


def _change_problems(state: TaskState, backlog: Backlog, change: BacklogChange) -> list[str]:
    """Why ``change`` cannot apply to ``backlog`` now, all of it (empty: it can)."""
    problems: list[str] = []
    open_phases = _phases_after(state, backlog.phase)
    for item in change.add:
        if backlog.item(item.id) is not None:
            problems.append(f"item id {item.id!r} is taken")
        if item.phase not in open_phases:
            problems.append(f"item {item.id!r}: its phase {item.phase} is over; a new item runs "
                            f"in one of {', '.join(open_phases) or 'none'}")
    for item_id, changes in change.change:
        item = backlog.item(item_id)
        if item is None or item.status is BacklogItemStatus.dropped:
            problems.append(f"item {item_id!r} is not in the backlog any more")
        elif item.status.has_child:
            problems.append(_kept(item))
        elif "phase" in changes and changes["phase"] not in open_phases:
            problems.append(f"item {item_id!r}: its new phase {changes['phase']} is over")
    for item_id in change.cancel:
        item = backlog.item(item_id)
        if item is None:
            problems.append(f"item {item_id!r} is not in the backlog")
        elif item.status in _KEPT:
            problems.append(_kept(item))
    if problems:
        return problems
    after = _applied(backlog, change)
    return graph_problems(after.live(), _order(state), dropped=_dropped(after))


def _propose_change(state: TaskState, command: ProposeBacklogChange, draft: Draft) -> None:
    if state.status.terminal:
        raise rejection(state, command, f"the task is {state.status.value}")
    backlog = state.backlog
    if backlog is None or not backlog.approved:
        raise rejection(state, command, "only an approved backlog is changed; before approval "
                                        "a new backlog is proposed instead")
    job_id, run_id = _proposer(state, command)
    # The kinds were checked against the catalog by parse_backlog; the rest is checked again.
    items = check_items([item.fields() for item in command.items], kinds=None,
                        phases=plan_phases(state), order=_order(state))
    problems: list[str] = []
    add, change, cancel = _diff(backlog, items, problems)
    proposed = BacklogChange(backlog.changes + 1, job_id, run_id, tuple(add), tuple(change),
                             tuple(cancel))
    problems += _change_problems(state, backlog, proposed) if not problems else []
    if problems:
        raise BacklogInvalid(problems)
    if not (add or change or cancel):
        return  # the backlog is what the PRD asks for already
    draft.add(BacklogChangeProposed, job_id=job_id, run_id=run_id, number=proposed.number,
              add=[item.to_dict() for item in add],
              change=[{"item_id": item_id, "changes": diff} for item_id, diff in change],
              cancel=cancel)


def _pending(state: TaskState, command: ApproveBacklogChange | RejectBacklogChange
             ) -> tuple[Backlog, BacklogChange]:
    if state.status.terminal:
        raise rejection(state, command, f"the task is {state.status.value}")
    backlog = state.backlog
    if backlog is None or backlog.pending is None:
        raise rejection(state, command, "the backlog has no change waiting for approval")
    if command.number is not None:
        number = whole(command.number, "number")
        if number != backlog.pending.number:
            raise rejection(state, command, f"change {backlog.pending.number} waits for "
                                            f"approval, not change {number} (it replaced it)")
    return backlog, backlog.pending


def _approve_change(state: TaskState, command: ApproveBacklogChange, draft: Draft) -> None:
    comment = text(command.comment, "comment")
    backlog, change = _pending(state, command)
    problems = _change_problems(state, backlog, change)
    if problems:
        raise BacklogInvalid(problems, [f"the backlog moved on since change {change.number} was "
                                        "proposed: reject it, and edit the PRD or the backlog"])
    draft.add(BacklogChangeApproved, number=change.number, comment=comment)


def _reject_change(state: TaskState, command: RejectBacklogChange, draft: Draft) -> None:
    reason = text(command.reason, "reason")
    _, change = _pending(state, command)
    draft.add(BacklogChangeRejected, number=change.number, reason=reason)


def approve_at_gate(state: TaskState, draft: Draft) -> None:
    """Approve the backlog when its phase's gate is approved (``task`` calls it after
    ``PhaseApproved``): a backlog is approved where it was proposed, once."""
    backlog = state.backlog
    if backlog is not None and not backlog.approved and backlog.phase == state.phase:
        draft.add(BacklogApproved, version=backlog.version)


DECIDERS: dict[type[Command], Callable[[TaskState, Any, Draft], None]] = {
    ProposeBacklog: _propose,
    ProposeCycle: _propose_cycle,
    AddBacklogItem: _add,
    ChangeBacklogItem: _change,
    DropBacklogItem: _drop,
    ReorderBacklog: _reorder,
    ProposeBacklogChange: _propose_change,
    ApproveBacklogChange: _approve_change,
    RejectBacklogChange: _reject_change,
}
"""The handler of each backlog command, for ``task.decide``."""


# -- evolve --------------------------------------------------------------------------------------


def _backlog(state: TaskState, event: TaskEvent) -> Backlog:
    if state.backlog is None:
        raise ValueError(f"{type(event).__name__} before any BacklogProposed")
    return state.backlog


def _item(backlog: Backlog, event: TaskEvent, item_id: str) -> BacklogItem:
    item = backlog.item(item_id)
    if item is None:
        raise ValueError(f"{type(event).__name__} of item {item_id!r}, which is not in the backlog")
    return item


def _proposed(event: BacklogProposed, state: TaskState) -> dict[str, Any]:
    items = tuple(BacklogItem.from_dict(item) for item in event.items)
    return {"backlog": Backlog(items, event.version, state.phase)}


def _cycle_proposed(event: CycleProposed, state: TaskState) -> dict[str, Any]:
    items = tuple(BacklogItem.from_dict(item) for item in event.items)
    if state.backlog is None:
        return {"backlog": Backlog(items, 1, state.phase, approved=True, cycles=event.cycle)}
    return {"backlog": replace(state.backlog, items=(*state.backlog.items, *items),
                               cycles=event.cycle)}


def _approved(event: BacklogApproved, state: TaskState) -> dict[str, Any]:
    backlog = _backlog(state, event)
    items = tuple(replace(item, status=BacklogItemStatus.approved)
                  if item.status is BacklogItemStatus.proposed else item
                  for item in backlog.items)
    return {"backlog": replace(backlog, items=items, approved=True)}


def _added(event: BacklogItemAdded, state: TaskState) -> dict[str, Any]:
    backlog = _backlog(state, event)
    item = BacklogItem.from_dict(event.item)
    if backlog.item(item.id) is not None:
        raise ValueError(f"item {item.id!r} is added twice")
    return {"backlog": backlog.with_item(item)}


def _changed(event: BacklogItemChanged, state: TaskState) -> dict[str, Any]:
    backlog = _backlog(state, event)
    item = _item(backlog, event, event.item_id)
    return {"backlog": backlog.with_item(BacklogItem.from_dict({**item.to_dict(),
                                                                **event.changes}))}


def _item_dropped(event: BacklogItemDropped, state: TaskState) -> dict[str, Any]:
    backlog = _backlog(state, event)
    item = _item(backlog, event, event.item_id)
    return {"backlog": backlog.with_item(replace(item, status=BacklogItemStatus.dropped))}


def _reordered(event: BacklogReordered, state: TaskState) -> dict[str, Any]:
    backlog = _backlog(state, event)
    ordered = tuple(replace(_item(backlog, event, item_id), priority=priority)
                    for item_id, priority in zip(event.item_ids, event.priorities, strict=True))
    named = set(event.item_ids)
    rest = tuple(item for item in backlog.items if item.id not in named)
    return {"backlog": replace(backlog, items=(*ordered, *rest))}


def _change_proposed(event: BacklogChangeProposed, state: TaskState) -> dict[str, Any]:
    backlog = _backlog(state, event)
    change = BacklogChange(
        event.number, event.job_id, event.run_id,
        add=tuple(BacklogItem.from_dict(item) for item in event.add),
        change=tuple((entry["item_id"], dict(entry["changes"])) for entry in event.change),
        cancel=tuple(event.cancel))
    return {"backlog": replace(backlog, pending=change, changes=event.number)}


def _change_approved(event: BacklogChangeApproved, state: TaskState) -> dict[str, Any]:
    backlog = _backlog(state, event)
    if backlog.pending is None or backlog.pending.number != event.number:
        raise ValueError(f"BacklogChangeApproved of change {event.number}, which does not wait")
    after = _applied(backlog, backlog.pending)
    return {"backlog": replace(after, version=backlog.version + 1, pending=None)}


def _change_rejected(event: BacklogChangeRejected, state: TaskState) -> dict[str, Any]:
    return {"backlog": replace(_backlog(state, event), pending=None)}


FOLDS: dict[type[TaskEvent], Callable[[Any, TaskState], dict[str, Any]]] = {
    BacklogProposed: _proposed,
    CycleProposed: _cycle_proposed,
    BacklogApproved: _approved,
    BacklogItemAdded: _added,
    BacklogItemChanged: _changed,
    BacklogItemDropped: _item_dropped,
    BacklogReordered: _reordered,
    BacklogChangeProposed: _change_proposed,
    BacklogChangeApproved: _change_approved,
    BacklogChangeRejected: _change_rejected,
}
"""The fold of each backlog event, for ``task.evolve``: the state fields the event changes."""


# -- queries -------------------------------------------------------------------------------------


def ready_items(state: TaskState, phase: str) -> list[BacklogItem]:
    """The items of ``phase`` that may be spawned now: approved, no child yet, every
    dependency finished, not touched by a change waiting for a person; highest priority
    first, then in backlog order. Whether the task may
    spawn at all (its status, ``max_children``) is the scheduler's question."""
    if state.backlog is None:
        return []
    finished = {item.id for item in state.backlog.items if item.status.done}
    # An item a waiting change would change or cancel waits for the person's answer.
    held = state.backlog.pending.touched() if state.backlog.pending is not None else set()
    ready = [item for item in state.backlog.items
             if item.phase == phase and item.status is BacklogItemStatus.approved
             and item.id not in held
             and all(dependency in finished for dependency in item.depends_on)]
    return sorted(ready, key=lambda item: -item.priority)  # stable: backlog order in a priority


def phase_items_done(state: TaskState, phase: str) -> bool:
    """True when the backlog is approved, no waiting change brings ``phase`` items, and every
    item of ``phase`` that was not dropped has finished (a phase without items has none to
    wait for). ``False`` without an approved
    backlog: nothing of it may have run yet."""
    backlog = state.backlog
    if backlog is None or not backlog.approved:
        return False
    pending = backlog.pending
    if pending is not None and (any(item.phase == phase for item in pending.add)
                                or any(changes.get("phase") == phase
                                       for _, changes in pending.change)):
        return False  # a waiting change brings the phase more work
    return all(item.status.done for item in backlog.live() if item.phase == phase)
