"""Who decides at a gate that waits, when it is not a person (``domain.approval_policy``).

- ``auto``: approved at once, by ``ipa:policy``.
- ``agent``: the phase's reviewer decides. Its review (the newest artifact of a job of the
  phase whose name ends in ``review``) must end with a line ``VERDICT: approve`` or
  ``VERDICT: changes needed``; an approval also needs every job of the phase to have
  succeeded (so every check passed: a failed check fails its attempt). "Changes needed" sends
  the task back to the phase before (``return_to_phase``, the review as its feedback). After
  :data:`MAX_AGENT_ROUNDS` such rounds in the task, without a clear verdict, or with a job of
  the phase skipped, the gate is left to a person (the task's ``attention`` says so).

Each decision is an ``approve``, ``return_to_phase`` or ``request_changes`` whose actor names
who decided (the reviewing job, or ``ipa:policy``) and whose comment or feedback says why, so
the history shows every automatic decision.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ipa.domain import (
    Approve,
    Command,
    JobStatus,
    RequestChanges,
    ReturnToPhase,
    Status,
    TaskState,
    approval_policy,
    get_workflow,
)

MAX_AGENT_ROUNDS = 3
_VERDICT = re.compile(r"^\W*VERDICT\W*:\s*(approve[sd]?|changes(?:\s+(?:needed|requested))?)\b",
                      re.I | re.M)


@dataclass(frozen=True)
class GateDecision:
    """What to do at the gate, and who decides."""

    command: Command
    actor: str


def decide_gate(state: TaskState) -> GateDecision | None:
    """The decision at the gate ``state`` waits at, or ``None``: a person decides."""
    if state.status is not Status.waiting:
        return None
    policy = approval_policy(state, state.phase)
    if policy == "auto":
        return GateDecision(Approve(comment=f"approved automatically: the {state.phase} gate's "
                                            "approval policy is auto"), "ipa:policy")
    if policy != "agent":
        return None
    visit = state.phase_history[-1].entered_at if state.phase_history else None
    jobs = [job for job in state.jobs.values() if job.phase == state.phase]
    if any(job.status is not JobStatus.succeeded for job in jobs):
        return None  # a job skipped or cancelled by a person: its checks never passed
    rounds = [f for f in state.feedback if f.actor.startswith("agent:")]
    if len(rounds) >= MAX_AGENT_ROUNDS:
        return None
    reviews = [a for a in state.artifacts.values() if a.phase == state.phase
               and a.name.endswith("review") and (visit is None or a.at >= visit)]
    if not reviews:
        return None
    review = max(reviews, key=lambda a: a.at)
    verdicts = _VERDICT.findall(review.content)
    if not verdicts:
        return None
    actor = f"agent:{review.job_id}"
    if verdicts[-1].lower().startswith("approve"):
        return GateDecision(Approve(comment=f"{review.job_id} approved the {state.phase} and "
                                            "every check of the phase passed"), actor)
    names = [phase.name for phase in get_workflow(state.workflow).phases]
    earlier = names[: names.index(state.phase)]
    if not earlier:
        return GateDecision(RequestChanges(feedback=review.content), actor)
    # The work is redone where it was made: the phase before the review.
    return GateDecision(ReturnToPhase(phase=earlier[-1], feedback=review.content), actor)
