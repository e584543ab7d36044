"""Helpers for pod tests."""

from __future__ import annotations

import sys
from collections.abc import Callable

import anyio

from ipa.domain import TaskState


def python(code: str) -> dict:
    """A job spec running ``code`` in this Python."""
    return {"command": [sys.executable, "-c", code]}


async def wait_for(pod, predicate: Callable[[TaskState], bool], timeout: float = 20) -> TaskState:
    """The pod's state once ``predicate`` holds (fails after ``timeout`` seconds)."""
    with anyio.fail_after(timeout):
        async for state in pod.state.changes():
            if predicate(state):
                return state
    raise AssertionError("unreachable")


def job(state: TaskState, job_id: str):
    """The job ``job_id`` of the task."""
    return state.jobs[job_id]
