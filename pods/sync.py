"""The sync engine child of a pod: the slot for outside systems (GitHub, JIRA).

No connector exists yet (issue #6 brings them), so the engine starts, reports ready, and waits
for the pod to stop; it records nothing.
"""

from __future__ import annotations

import anyio
from anyio.abc import TaskStatus

from .state import PodState


class SyncEngine:
    """Publishes a task's changes to its connectors and turns theirs into events."""

    def __init__(self, state: PodState, connectors: tuple[object, ...] = ()) -> None:
        self._state = state
        self.connectors = connectors

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await anyio.sleep_forever()
