"""Why a task waits for a person, read from its state: the *attention* it needs.

A task needs a person when nothing ipa does on its own can move it on. :func:`attention` names
the one thing to look at first, in plain words, with the commands that solve it:

=============  ==============================================  ===================================
kind           when                                            actions
=============  ==============================================  ===================================
``crashed``    the task failed: its pod crashed and gave up     ``restart``
``budget``     paused because it reached its budget             ``set_budget``
``repository`` its repository could not be reached              ``retry_job``, ``cancel``
``gate``       waiting at a phase's approval gate               ``approve``, ``request_changes``,
                                                                ``return_to_phase``
``question``   an agent asked a question nobody answered yet    ``answer_question``
``job_dead``   a job used all its attempts                      ``retry_job``, ``skip_job``,
                                                                ``cancel_job``
``job_held``   a person interrupted a job, which waits          ``retry_job``, ``skip_job``,
                                                                ``cancel_job``
=============  ==============================================  ===================================

The first that applies, in that order, is the answer (a crash stops everything; a budget stop or
a missing repository is the cause of the failures after it). A finished task, and a task a
person paused, need nothing. Whether a pod crashed *right now* (before the task was recorded as
failed) is outside the state: the supervisor knows it and the API adds it (``crashed``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .state import JobStatus, TaskState
from .workflows import Status

ATTENTION_KINDS = ("crashed", "budget", "repository", "gate", "question", "job_dead", "job_held")
"""Every kind of attention, most pressing first."""


@dataclass(frozen=True)
class Attention:
    """What a person must do for a task: ``kind`` (one of :data:`ATTENTION_KINDS`), a
    ``message`` in plain words, the ``phase`` or ``job_id`` it is about, and the ``actions``
    (command or endpoint names) that solve it."""

    kind: str
    message: str
    actions: tuple[str, ...]
    phase: str | None = None
    job_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, "phase": self.phase,
                "job_id": self.job_id, "actions": list(self.actions)}


JOB_ACTIONS = ("retry_job", "skip_job", "cancel_job")


def crash_attention(reason: str | None) -> Attention:
    """The attention of a task whose pod crashed and stopped (``reason``: its last error)."""
    why = f" ({reason})" if reason else ""
    return Attention("crashed", f"ipa stopped working on this task after repeated errors{why}. "
                     "Restart it to go on.", ("restart",))


def attention(state: TaskState) -> Attention | None:
    """What the task needs from a person now, or ``None`` (see the module docstring)."""
    if state.status in (Status.completed, Status.cancelled):
        return None
    if state.status is Status.failed:
        return crash_attention(state.failure)
    if state.status is Status.paused and state.budget_paused:
        spent = f"${state.spent_usd:.2f}"
        if state.children_usage.children:  # a project: its children's spend counts too
            spent += (f" (${state.usage.total.cost_usd:.2f} itself, "
                      f"${state.children_usage.cost_usd:.2f} by its children)")
        limit = "" if state.budget_usd is None else f" of its ${state.budget_usd:.2f} budget"
        return Attention("budget", f"Paused: the task spent {spent}{limit}. Raise the budget "
                         "to go on.", ("set_budget",))
    if state.status is Status.paused:
        return None  # a person paused it and knows
    waiting = [job for job in state.jobs.values()
               if job.status in (JobStatus.dead, JobStatus.held, JobStatus.failed)
               and job.phase == state.phase]
    if state.repository_error is not None:
        job_id = waiting[0].job_id if waiting else None
        return Attention("repository", f"The repository {state.repo} cannot be used: "
                         f"{state.repository_error}. Fix it or point the task at another "
                         "repository, then retry the job.",
                         ("set_repo", "retry_job", "cancel"), phase=state.phase, job_id=job_id)
    if state.status is Status.waiting:
        return Attention("gate", f"The {_words(state.phase)} phase is done and waits for your "
                         "approval.", ("approve", "request_changes", "return_to_phase"),
                         phase=state.phase)
    for question in state.questions.values():
        job = state.jobs.get(question.job_id)
        if (question.answer is None and job is not None
                and job.awaiting == question.question_id and job.status is JobStatus.pending):
            return Attention("question", f"An agent asks: {question.question}",
                             ("answer_question",), phase=state.phase, job_id=question.job_id)
    for job in state.jobs.values():
        if job.status is JobStatus.dead:
            return Attention("job_dead", f"Job {job.job_id} gave up: {job.last_error}. "
                             "Retry, skip or cancel it.", JOB_ACTIONS, phase=job.phase,
                             job_id=job.job_id)
    for job in state.jobs.values():
        if job.status is JobStatus.held:
            return Attention("job_held", f"Job {job.job_id} was stopped ({job.last_error}) and "
                             "waits for you: retry, skip or cancel it.", JOB_ACTIONS,
                             phase=job.phase, job_id=job.job_id)
    return None


def _words(name: str) -> str:
    return name.replace("_", " ")
