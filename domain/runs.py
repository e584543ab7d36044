"""The events of an agent run's own stream: what one attempt of one job did, line by line.

A run's output goes to its own stream (stream id = the run id) so a task's stream stays short:
the task records that a job started and how it ended; the run records everything in between.
"""

from __future__ import annotations

from eventsourcing.domain import DomainEvent


class RunEvent(DomainEvent):
    """Base of every event in a run's stream (``originator_id`` = the run id)."""

    actor: str
    correlation_id: str
    causation_id: str | None


class RunStarted(RunEvent):
    """The agent process of ``job_id`` (attempt ``attempt``) of ``task_id`` started."""

    task_id: str
    job_id: str
    attempt: int
    agent: str
    runner: str
    workspace: str
    pid: int | None


class RunPrompted(RunEvent):
    """The agent was given ``prompt`` (its *Reason* step's context), as ``agent`` on ``model``;
    ``memories``: the ids of the memories in it (``domain/memory.py``)."""

    class_version = 2

    agent: str
    model: str
    prompt: str
    memories: list[str]

    @staticmethod
    def upcast_v1_v2(state: dict) -> None:
        state["memories"] = []


class RunOutput(RunEvent):
    """Lines the agent printed, in order: ``{"seq", "stream", "text"}`` and, for an agent's
    messages, ``"kind"`` (``text``, ``tool_use``, ``tool_result`` ...). ``seq`` numbers them
    across the run; ``stream`` is ``stdout``/``stderr`` (a command), ``agent`` (an agent's
    messages) or ``verify`` (the verification's output)."""

    lines: list[dict]


class RunFinished(RunEvent):
    """The run ended: ``succeeded`` or not, with why (``reason``) and a JSON ``result``."""

    succeeded: bool
    exit_code: int | None
    reason: str | None
    duration_seconds: float
    result: dict
