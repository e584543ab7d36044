"""A project's children, and who decides at a gate.

**Children.** Each approved backlog item runs as a child task: an ordinary task with its own
stream, pod and workflow (``item``: its kind's agent develops, a reviewer reviews), linked to
its project (``TaskLinked`` after its ``TaskCreated``: ``parent_id``, ``item_id``, ``kind``).
The project is the single writer of its own stream: it records ``ChildSpawned`` when it
creates a child and ``ChildFinished`` when it sees the child end (it follows the children's
streams; no pod calls another). At most ``max_children`` children run at once
(``SetMaxChildren``; 4 by default). A child that failed or was cancelled leaves its item
``failed``: the items that depend on it wait, and a person retries it (a new child),
skips it (counted as done) or cancels it (dropped, with every item waiting on it).

**Spend.** ``ChildFinished`` carries what the child's agents used (tokens, cost): the project's
``children_usage`` sums it beside its own ``usage``, and its budget caps both. The child's end
that reaches the budget pauses the project (``BudgetReached``, see ``agents.py``): no child is
spawned while the project is paused, so no perpetual cycle's items start; children already
running go on to their end. What a child records after its end was seen (a cancelled run's
late usage) is not counted.

**Approval policy.** Who decides at a gate: ``person`` (the default of the ``task`` and
``project`` workflows), ``agent`` (the reviewer's verdict and the checks; the default of an
``item``'s review) or ``auto``. ``SetApprovalPolicy`` changes it for one gated phase of the
task. The pod applies it; every decision it takes is an ``approve`` or ``request_changes``
recorded with the deciding agent (or ``ipa:policy``) as actor and the reason as comment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from uuid import UUID

from .agents import charge
from .backlog_items import Backlog, BacklogItem, BacklogItemStatus
from .children_commands import (
    CancelItem,
    RecordChildConflict,
    RecordChildFinished,
    RetryItem,
    SetApprovalPolicy,
    SetMaxChildren,
    SkipItem,
    SpawnChild,
)
from .children_events import (
    ApprovalPolicySet,
    ChildConflicted,
    ChildFinished,
    ChildMerged,
    ChildSpawned,
    ItemCancelled,
    ItemRetried,
    ItemSkipped,
    MaxChildrenSet,
    TaskLinked,
)
from .commands import Command, QueueJob
from .decision import Draft, identifier, identifiers, number, rejection, text, whole
from .errors import InvalidCommand
from .events import TaskEvent
from .queue import queue_job
from .workflows import Status, get_workflow

if TYPE_CHECKING:
    from .state import TaskState

MAX_CHILDREN_DEFAULT = 4
MAX_CHILDREN_LIMIT = 200
MERGE_PRIORITY = 10
"""A merge job goes before the phase's other jobs: its item's dependants wait for it."""
POLICIES = ("person", "agent", "auto")
OUTCOMES = ("completed", "failed", "cancelled")


# -- queries -------------------------------------------------------------------------------------


def running_children(state: TaskState) -> tuple[BacklogItem, ...]:
    """The items whose child task runs now (spawned, not finished)."""
    if state.backlog is None:
        return ()
    return tuple(item for item in state.backlog.items
                 if item.status is BacklogItemStatus.spawned)


def approval_policy(state: TaskState, phase: str) -> str:
    """Who decides at the gate of ``phase``: the task's own choice, else its workflow's."""
    chosen = dict(state.approval_policies).get(phase)
    return chosen or get_workflow(state.workflow).phase(phase).approval


# -- decide --------------------------------------------------------------------------------------


def link(command: Any, draft: Draft) -> None:
    """The ``TaskLinked`` of a child task being created (``CreateChildTask``)."""
    parent = identifier(command.parent_id, "parent_id")
    try:
        UUID(parent)
    except ValueError:
        raise InvalidCommand(f"parent_id must be a task id, got {parent!r}") from None
    draft.add(TaskLinked, parent_id=parent, item_id=identifier(command.item_id, "item_id"),
              kind=identifier(command.kind, "kind"))


def _backlog(state: TaskState, command: Command) -> Backlog:
    if state.backlog is None or not state.backlog.approved:
        raise rejection(state, command, "the project has no approved backlog")
    return state.backlog


def _item(state: TaskState, command: Command, item_id: object) -> BacklogItem:
    backlog = _backlog(state, command)
    item = backlog.item(identifier(item_id, "item_id"))
    if item is None:
        raise InvalidCommand(f"the backlog has no item {item_id!r}")
    return item


def _spawn(state: TaskState, command: SpawnChild, draft: Draft) -> None:
    item = _item(state, command, command.item_id)
    child = identifier(command.child_id, "child_id")
    if item.status is BacklogItemStatus.spawned and str(item.child_id) == child:
        return  # recorded already
    if state.status.terminal:
        raise rejection(state, command, f"the project is {state.status.value}")
    if state.status is Status.paused:
        by = " by its budget" if state.budget_paused else ""
        raise rejection(state, command, f"the project is paused{by}")
    if item.status is not BacklogItemStatus.approved:
        raise rejection(state, command, f"item {item.id!r} is {item.status.value}")
    backlog = _backlog(state, command)
    waiting = [d for d in item.depends_on if not (backlog.item(d) or item).status.done]
    if waiting:
        raise rejection(state, command, f"item {item.id!r} waits for {', '.join(waiting)}")
    if len(running_children(state)) >= state.max_children:
        raise rejection(state, command, f"{state.max_children} children run already "
                                        "(max_children)")
    try:
        UUID(child)
    except ValueError:
        raise InvalidCommand(f"child_id must be a task id, got {child!r}") from None
    draft.add(ChildSpawned, item_id=item.id, child_id=child, kind=item.kind, phase=item.phase)


def _finished(state: TaskState, command: RecordChildFinished, draft: Draft) -> None:
    child = identifier(command.child_id, "child_id")
    outcome = text(command.outcome, "outcome", required=True)
    if outcome not in OUTCOMES:
        raise InvalidCommand(f"outcome must be one of {', '.join(OUTCOMES)}, got {outcome!r}")
    used = {what: whole(getattr(command, what), what, minimum=0)
            for what in ("input_tokens", "output_tokens")}
    cost = number(command.cost_usd, "cost_usd")
    if cost < 0:
        raise InvalidCommand(f"cost_usd must not be negative, got {cost}")
    items = state.backlog.items if state.backlog is not None else ()
    item = next((i for i in items if str(i.child_id) == child), None)
    if item is None:
        raise InvalidCommand(f"the project has no child {child}")
    if item.status not in (BacklogItemStatus.spawned, BacklogItemStatus.merging):
        return  # recorded already, or a person moved the item on
    if command.merged is not None:
        if outcome != "completed" or state.branch is None:
            raise InvalidCommand("only a completed child is merged, into the project's branch")
        commit = identifier(command.merged, "merged")
        previous = state.branch.head_commit or state.branch.base_commit
        # A merge job landed the merge already (its BranchAdvanced): recorded all the same.
        if commit != previous or item.status is BacklogItemStatus.merging:
            draft.add(ChildMerged, item_id=item.id, child_id=child, commit=commit,
                      child_commit=identifier(command.child_commit, "child_commit"),
                      previous=previous)
    draft.add(ChildFinished, item_id=item.id, child_id=child, outcome=outcome,
              reason=text(command.reason, "reason"), **used, cost_usd=cost)
    charge(state, cost, draft)


def _conflict(state: TaskState, command: RecordChildConflict, draft: Draft) -> None:
    child = identifier(command.child_id, "child_id")
    items = state.backlog.items if state.backlog is not None else ()
    item = next((i for i in items if str(i.child_id) == child), None)
    if item is None:
        raise InvalidCommand(f"the project has no child {child}")
    if item.status is not BacklogItemStatus.spawned:
        return
    job_id = identifier(command.merge_job, "merge_job")
    draft.add(ChildConflicted, item_id=item.id, child_id=child,
              child_commit=identifier(command.child_commit, "child_commit"),
              files=list(identifiers(command.files, "files")), merge_job=job_id)
    queue_job(state, QueueJob(job_id=job_id, agent=command.agent, spec=command.spec,
                              priority=MERGE_PRIORITY), draft)


def _set_max(state: TaskState, command: SetMaxChildren, draft: Draft) -> None:
    value = whole(command.max_children, "max_children")
    if not 1 <= value <= MAX_CHILDREN_LIMIT:
        raise InvalidCommand(f"max_children must be a whole number from 1 to "
                             f"{MAX_CHILDREN_LIMIT}, got {value}")
    if state.workflow != "project":
        raise rejection(state, command, "only a project has children")
    if value != state.max_children:
        draft.add(MaxChildrenSet, max_children=value)


def _failed_item(state: TaskState, command: Command, item_id: object) -> BacklogItem:
    if state.status.terminal:
        raise rejection(state, command, f"the project is {state.status.value}")
    item = _item(state, command, item_id)
    if item.status is not BacklogItemStatus.failed:
        raise rejection(state, command, f"item {item.id!r} is {item.status.value}; only an item "
                                        "whose child failed can be retried, skipped or cancelled")
    return item


def _retry(state: TaskState, command: RetryItem, draft: Draft) -> None:
    item = _failed_item(state, command, command.item_id)
    draft.add(ItemRetried, item_id=item.id, previous_child=str(item.child_id))


def _skip(state: TaskState, command: SkipItem, draft: Draft) -> None:
    item = _failed_item(state, command, command.item_id)
    draft.add(ItemSkipped, item_id=item.id, reason=text(command.reason, "reason"))


def _cancel(state: TaskState, command: CancelItem, draft: Draft) -> None:
    item = _failed_item(state, command, command.item_id)
    backlog = state.backlog
    assert backlog is not None
    gone = {item.id}
    changed = True
    while changed:  # every item waiting on a dropped one, however indirectly
        changed = False
        for other in backlog.live():
            if other.id not in gone and gone & set(other.depends_on):
                if other.status.has_child and other.status is not BacklogItemStatus.failed:
                    raise rejection(state, command, f"item {other.id!r} depends on {item.id!r} "
                                                    f"and is {other.status.value}")
                gone.add(other.id)
                changed = True
    dropped = [other.id for other in backlog.items if other.id in gone and other.id != item.id]
    draft.add(ItemCancelled, item_id=item.id, reason=text(command.reason, "reason"),
              dropped=dropped)


def _set_policy(state: TaskState, command: SetApprovalPolicy, draft: Draft) -> None:
    phase = identifier(command.phase, "phase")
    policy = text(command.policy, "policy", required=True)
    if policy not in POLICIES:
        raise InvalidCommand(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    workflow = get_workflow(state.workflow)
    gated = [p.name for p in workflow.phases if p.gated]
    if phase not in gated:
        raise InvalidCommand(f"{phase!r} is not a gated phase of the {workflow.name} workflow "
                             f"(gates: {', '.join(gated) or 'none'})")
    if approval_policy(state, phase) != policy:
        draft.add(ApprovalPolicySet, phase=phase, policy=policy)


DECIDERS: dict[type[Command], Callable[[TaskState, Any, Draft], None]] = {
    SpawnChild: _spawn,
    RecordChildFinished: _finished,
    RecordChildConflict: _conflict,
    SetMaxChildren: _set_max,
    RetryItem: _retry,
    SkipItem: _skip,
    CancelItem: _cancel,
    SetApprovalPolicy: _set_policy,
}
"""The handler of each command, for ``task.decide`` (``CreateChildTask`` is a creation: see
``task.decide``)."""


# -- evolve --------------------------------------------------------------------------------------


def _with(state: TaskState, item_id: str, **changes: Any) -> dict[str, Any]:
    backlog = state.backlog
    if backlog is None or backlog.item(item_id) is None:
        raise ValueError(f"no backlog item {item_id!r}")
    item = replace(backlog.item(item_id), **changes)  # type: ignore[type-var]
    return {"backlog": backlog.with_item(item)}


def _linked(event: TaskLinked, state: TaskState) -> dict[str, Any]:
    return {"parent_id": UUID(event.parent_id), "item_id": event.item_id, "kind": event.kind}


def _spawned(event: ChildSpawned, state: TaskState) -> dict[str, Any]:
    return _with(state, event.item_id, status=BacklogItemStatus.spawned,
                 child_id=UUID(event.child_id))


def _child_finished(event: ChildFinished, state: TaskState) -> dict[str, Any]:
    status = (BacklogItemStatus.finished if event.outcome == "completed"
              else BacklogItemStatus.failed)
    spent = state.children_usage.plus(event.input_tokens, event.output_tokens, event.cost_usd)
    return {**_with(state, event.item_id, status=status), "children_usage": spent}


def _merged(event: ChildMerged, state: TaskState) -> dict[str, Any]:
    if state.branch is None:
        raise ValueError("ChildMerged before BranchCreated")
    return {"branch": replace(state.branch, head_commit=event.commit)}


def _conflicted(event: ChildConflicted, state: TaskState) -> dict[str, Any]:
    return _with(state, event.item_id, status=BacklogItemStatus.merging)


def _max_set(event: MaxChildrenSet, state: TaskState) -> dict[str, Any]:
    return {"max_children": event.max_children}


def _retried(event: ItemRetried, state: TaskState) -> dict[str, Any]:
    return _with(state, event.item_id, status=BacklogItemStatus.approved, child_id=None)


def _skipped(event: ItemSkipped, state: TaskState) -> dict[str, Any]:
    return _with(state, event.item_id, status=BacklogItemStatus.skipped)


def _item_cancelled(event: ItemCancelled, state: TaskState) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for item_id in (event.item_id, *event.dropped):
        changes = _with(state, item_id, status=BacklogItemStatus.dropped)
        state = replace(state, **changes)
    return changes


def _policy_set(event: ApprovalPolicySet, state: TaskState) -> dict[str, Any]:
    policies = dict(state.approval_policies)
    policies[event.phase] = event.policy
    return {"approval_policies": tuple(sorted(policies.items()))}


FOLDS: dict[type[TaskEvent], Callable[[Any, TaskState], dict[str, Any]]] = {
    TaskLinked: _linked,
    ChildSpawned: _spawned,
    ChildFinished: _child_finished,
    ChildMerged: _merged,
    ChildConflicted: _conflicted,
    MaxChildrenSet: _max_set,
    ItemRetried: _retried,
    ItemSkipped: _skipped,
    ItemCancelled: _item_cancelled,
    ApprovalPolicySet: _policy_set,
}
"""The fold of each event, for ``task.evolve``: the state fields the event changes."""
