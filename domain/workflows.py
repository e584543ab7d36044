"""Workflows as data, and the state machines that say which command may move a task where.

A task stands at a *position*: a phase of its workflow and a lifecycle ``Status``. Two kinds of
``transitions`` machine, each built once when this module is imported, decide its moves:

- the **lifecycle machine** (one, shared by every workflow) holds the status moves. Its states
  are ``Status`` members and its triggers are the command names (``commands.py``). Where a move
  depends on a fact outside the status, the transition carries a named condition:
  ``finishes_workflow`` (does ``approve``/``complete_phase`` reach a final phase that ends the
  task?) and ``paused_from_<status>`` (where ``resume`` returns to);
- a **phase machine** per workflow holds the phase moves of the four phase-bound commands: a
  gated phase allows ``request_approval`` and ``request_changes`` (staying put) and ``approve``
  (to the next phase); a phase without a gate allows ``complete_phase`` (to the next phase).

A command is allowed at a position when the lifecycle machine allows it from the status and, if
it is phase-bound, the phase machine allows it from the phase. The machines are only ever
*queried* ("which triggers leave S", "where does T go from S"); no model is attached and no
trigger is fired, so a task's machine is never rebuilt by replaying its history.

The three workflows:

- ``task``: spec_clarification → planning → development → review → completed. Every working
  phase but development has a gate: a person confirms the spec, the plan and the review; the
  code itself is judged in review. Approving review enters ``completed`` and completes the task.
- ``project``: bootstrap → discovery → architecture → infrastructure → development → qa →
  deployment → business → growth → perpetual. Gates sit where a mistake is expensive to undo:
  discovery (the PRD a person signs off), architecture (the design everything else builds on)
  and deployment (it reaches production). The other phases move on by ``complete_phase``.

- ``item``: development → review → completed: a project's backlog item run as a child task
  (``children.py``). The item's kind does the development; the reviewer's verdict decides at
  the review gate (its ``approval`` is ``agent``).

**What "complete" means for a project.** ``perpetual`` is its last phase and it is *open-ended*:
the project enters it running and stays there (agents keep operating and improving the product)
until a person cancels it. It has no gate, and ``request_approval``, ``approve`` and
``complete_phase`` are refused there; ``pause``/``resume``, ``fail``/``retry``, ``update_spec``
and ``cancel`` work as in any phase. So a project never reaches ``Status.completed``: reaching
``perpetual`` is its success, and ``cancel`` is how it ends.

Phase names are plain strings because each workflow has its own; statuses are an enum.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

from transitions import Machine

from .commands import (
    Approve,
    Cancel,
    CompletePhase,
    Fail,
    Pause,
    RequestApproval,
    RequestChanges,
    Resume,
    Retry,
    StartTask,
    UpdateSpec,
)
from .errors import CommandRejected, UnknownWorkflow
from .sync_commands import ReturnToPhase


class Status(StrEnum):
    """Where a task is in its lifecycle, whatever its phase."""

    pending = "pending"
    running = "running"
    waiting = "waiting"
    paused = "paused"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        """True when no command can move the task any more (``failed`` can still be retried)."""
        return self in (Status.completed, Status.cancelled)


@dataclass(frozen=True)
class Phase:
    """One step of a workflow: whether it has a gate, which agents run in it, and who decides
    at its gate by default (``approval``: ``person``, ``agent`` or ``auto``; see
    ``children.py``)."""

    name: str
    gated: bool
    agents: tuple[str, ...] = ()
    approval: str = "person"


@dataclass(frozen=True)
class Workflow:
    """An ordered list of phases; the last one is the workflow's ``final`` phase.

    When ``open_ended`` is false, reaching the final phase completes the task (``task`` ends in
    ``completed``, a phase with no work). When it is true, the final phase is ongoing work that
    never completes on its own (``project`` ends in ``perpetual``; see the module docstring).
    """

    name: str
    phases: tuple[Phase, ...]
    open_ended: bool = False
    _machine: Machine = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [phase.name for phase in self.phases]
        if len(names) < 2:
            raise ValueError(f"workflow {self.name!r} needs at least two phases")
        if len(set(names)) != len(names):
            raise ValueError(f"workflow {self.name!r} repeats a phase name: {names}")
        if self.phases[-1].gated:
            # A gate on the final phase would allow request_approval with nowhere to approve to.
            raise ValueError(f"workflow {self.name!r}: the final phase cannot be gated")
        # Built here, once per workflow, so every Workflow value carries a ready machine.
        object.__setattr__(self, "_machine", _phase_machine(self))

    @property
    def first(self) -> str:
        """The phase a new task starts in."""
        return self.phases[0].name

    @property
    def final(self) -> str:
        """The last phase: ``completed`` for ``task``, ``perpetual`` for ``project``."""
        return self.phases[-1].name

    def phase(self, name: str) -> Phase:
        """The phase called ``name``; ``ValueError`` if this workflow has none."""
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise ValueError(f"workflow {self.name!r} has no phase {name!r}")

    def completes_at(self, phase: str) -> bool:
        """True when entering ``phase`` completes the task."""
        return phase == self.final and not self.open_ended


@dataclass(frozen=True)
class Position:
    """A phase and a status: where a task stands, or will stand after a command."""

    phase: str
    status: Status


# -- the machines -------------------------------------------------------------------------------

# Commands whose meaning depends on the phase; the others (start, pause, ...) mean the same in
# every phase and are governed by the status alone.
_PHASE_BOUND = frozenset(
    {RequestApproval.name, RequestChanges.name, Approve.name, CompletePhase.name,
     ReturnToPhase.name}
)

_FINISHES = "finishes_workflow"
_PAUSABLE = (Status.pending, Status.running, Status.waiting)
_NON_TERMINAL = [status for status in Status if not status.terminal]


def _paused_from(status: Status) -> str:
    return f"paused_from_{status.value}"


def _facts(*, finishes: bool, paused_from: Status | None) -> dict[str, bool]:
    """The truth of every condition named in the lifecycle machine, for one move."""
    facts = {_FINISHES: finishes}
    facts.update({_paused_from(status): status is paused_from for status in _PAUSABLE})
    return facts


_LIFECYCLE_TRANSITIONS: list[dict[str, Any]] = [
    dict(trigger=StartTask.name, source=Status.pending, dest=Status.running),
    dict(trigger=RequestApproval.name, source=Status.running, dest=Status.waiting),
    dict(trigger=Approve.name, source=Status.waiting, dest=Status.completed, conditions=_FINISHES),
    dict(trigger=Approve.name, source=Status.waiting, dest=Status.running, unless=_FINISHES),
    dict(trigger=RequestChanges.name, source=Status.waiting, dest=Status.running),
    dict(
        trigger=CompletePhase.name, source=Status.running, dest=Status.completed,
        conditions=_FINISHES,
    ),
    dict(trigger=CompletePhase.name, source=Status.running, dest=Status.running, unless=_FINISHES),
    dict(trigger=Pause.name, source=list(_PAUSABLE), dest=Status.paused),
    *(
        dict(trigger=Resume.name, source=Status.paused, dest=was, conditions=_paused_from(was))
        for was in _PAUSABLE
    ),
    dict(trigger=Cancel.name, source=_NON_TERMINAL, dest=Status.cancelled),
    dict(trigger=Fail.name, source=list(_PAUSABLE), dest=Status.failed),
    dict(trigger=Retry.name, source=Status.failed, dest=Status.running),
    dict(trigger=UpdateSpec.name, source=_NON_TERMINAL, dest="="),
    dict(trigger=ReturnToPhase.name, source=[Status.running, Status.waiting], dest=Status.running),
]

_LIFECYCLE = Machine(
    model=None,
    states=Status,
    transitions=_LIFECYCLE_TRANSITIONS,
    initial=Status.pending,
    auto_transitions=False,
)


def _phase_transitions(workflow: Workflow) -> Iterator[dict[str, Any]]:
    for index, (phase, following) in enumerate(
        zip(workflow.phases, workflow.phases[1:], strict=False)
    ):
        if phase.gated:
            if index > 0:  # back to an earlier phase: the command names which one
                yield dict(trigger=ReturnToPhase.name, source=phase.name, dest="=")
            yield dict(trigger=RequestApproval.name, source=phase.name, dest="=")
            yield dict(trigger=RequestChanges.name, source=phase.name, dest="=")
            yield dict(trigger=Approve.name, source=phase.name, dest=following.name)
        else:
            yield dict(trigger=CompletePhase.name, source=phase.name, dest=following.name)


def _phase_machine(workflow: Workflow) -> Machine:
    return Machine(
        model=None,
        states=[phase.name for phase in workflow.phases],
        transitions=list(_phase_transitions(workflow)),
        initial=workflow.first,
        auto_transitions=False,
    )


def _follow(machine: Machine, trigger: str, source: str, facts: dict[str, bool]) -> str:
    """The destination of the first ``trigger`` transition from ``source`` whose conditions hold.

    Conditions are named strings, judged against ``facts`` instead of being called on a model.
    """
    for transition in machine.get_transitions(trigger=trigger, source=source):
        if all(facts[condition.func] == condition.target for condition in transition.conditions):
            return transition.dest
    # Only reachable when the state is inconsistent, e.g. a paused task without paused_from.
    raise ValueError(f"no {trigger!r} transition from {source!r} fits {facts}")


# -- the workflows ----------------------------------------------------------------------------

TASK = Workflow(
    name="task",
    phases=(
        Phase("spec_clarification", gated=True, agents=("spec_writer",)),
        Phase("planning", gated=True, agents=("planner",)),
        Phase("development", gated=False, agents=("developer",)),
        Phase("review", gated=True, agents=("reviewer",)),
        Phase("completed", gated=False),
    ),
)

# The agent names are the roles later issues will implement; a phase may run several in turn.
PROJECT = Workflow(
    name="project",
    phases=(
        Phase("bootstrap", gated=False, agents=("bootstrapper",)),
        Phase("discovery", gated=True, agents=("product_analyst", "spec_writer")),
        Phase("architecture", gated=True, agents=("architect",)),
        Phase("infrastructure", gated=False, agents=("infrastructure_engineer",)),
        Phase("development", gated=False, agents=("planner", "developer", "reviewer")),
        Phase("qa", gated=False, agents=("tester",)),
        Phase("deployment", gated=True, agents=("deployer",)),
        Phase("business", gated=False, agents=("business_analyst",)),
        Phase("growth", gated=False, agents=("growth_analyst",)),
        Phase("perpetual", gated=False, agents=("maintainer",)),
    ),
    open_ended=True,
)

# A project's backlog item, run as a child task: the agent of the item's kind does the work
# (the task's ``kind``: the phase names no agent), then a reviewer, whose verdict decides.
ITEM = Workflow(
    name="item",
    phases=(
        Phase("development", gated=False),
        Phase("review", gated=True, agents=("reviewer",), approval="agent"),
        Phase("completed", gated=False),
    ),
)

WORKFLOWS: dict[str, Workflow] = {
    workflow.name: workflow for workflow in (TASK, PROJECT, ITEM)
}
"""Every workflow a task can follow, by name."""


def get_workflow(name: str) -> Workflow:
    """The workflow called ``name``; ``UnknownWorkflow`` (naming the known ones) otherwise."""
    try:
        return WORKFLOWS[name]
    except KeyError:
        raise UnknownWorkflow(name, WORKFLOWS) from None


def allowed_commands(workflow: Workflow, phase: str, status: Status) -> list[str]:
    """The names of the commands accepted at ``(phase, status)``, sorted.

    ``create_task`` is never among them: it is only for a task that does not exist yet.
    """
    return list(_allowed_commands(workflow, phase, status))


@lru_cache(maxsize=1024)
def _allowed_commands(workflow: Workflow, phase: str, status: Status) -> tuple[str, ...]:
    # A pure function of a (frozen) workflow, a phase and a status, asked by every task view:
    # the state machines' trigger lookups took ~20 us of a ~50 us view.
    workflow.phase(phase)  # an unknown phase would otherwise just allow nothing
    phase_triggers = set(workflow._machine.get_triggers(phase))
    return tuple(sorted(
        trigger
        for trigger in set(_LIFECYCLE.get_triggers(status.name))
        if trigger not in _PHASE_BOUND or trigger in phase_triggers
    ))


def destination(
    workflow: Workflow,
    phase: str,
    status: Status,
    command: str,
    *,
    paused_from: Status | None = None,
) -> Position:
    """Where ``command`` moves a task that stands at ``(phase, status)``.

    Raises ``CommandRejected`` (with the allowed commands) when the command is not allowed there.
    ``paused_from`` is the status a paused task returns to on ``resume``.
    """
    allowed = allowed_commands(workflow, phase, status)
    if command not in allowed:
        raise CommandRejected(command, phase, status, allowed)
    next_phase = phase
    if command in _PHASE_BOUND:
        next_phase = _follow(workflow._machine, command, phase, {})
    facts = _facts(
        finishes=next_phase != phase and workflow.completes_at(next_phase),
        paused_from=paused_from,
    )
    return Position(next_phase, Status[_follow(_LIFECYCLE, command, status.name, facts)])
