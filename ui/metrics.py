"""``GET /metrics``: Prometheus text format (version 0.0.4).

- ``ipa_pods{status}``: pods this process holds, by pod status;
- ``ipa_tasks{status}``: tasks in the task list, by task status (read from the list's rows);
- ``ipa_log_position``: the global position of the last event the live tail handed out;
- ``ipa_events_appended_total``: the newest global position in the store (every event ever
  appended, by any process; conflicting appends can leave gaps, so it may run ahead a little);
- ``ipa_append_commits_total``: append transactions this process committed;
- ``ipa_sse_clients{stream}``: open SSE streams by kind (task, all, run);
- ``ipa_sse_overflows_total``: SSE streams ended because their client read too slowly.
"""

from __future__ import annotations

from collections import Counter

from starlette.requests import Request
from starlette.responses import Response

from ipa.domain import Status
from ipa.pods import PodStatus
from ipa.projections import TaskList
from ipa.supervisor import Supervisor

from .streams import StreamHub


class Metrics:
    def __init__(self, supervisor: Supervisor, task_list: TaskList, hub: StreamHub) -> None:
        self.supervisor = supervisor
        self.task_list = task_list
        self.hub = hub

    async def endpoint(self, request: Request) -> Response:
        return Response(await self.render(), media_type="text/plain; version=0.0.4")

    async def render(self) -> str:
        store = self.supervisor.store
        pods = Counter({status.value: 0 for status in PodStatus})
        pods.update(pod.status.value for pod in self.supervisor.pods())
        tasks = Counter({status.value: 0 for status in Status})
        tasks.update(self.task_list.statuses())  # from memory: a scrape reads no rows
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: dict[str, int],
                   label: str | None = None) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for key, value in samples.items():
                labels = f'{{{label}="{key}"}}' if label else ""
                lines.append(f"{name}{labels} {value}")

        metric("ipa_pods", "gauge", "Pods held by this process, by status.", dict(pods),
               "status")
        metric("ipa_tasks", "gauge", "Tasks in the task list, by status.", dict(tasks),
               "status")
        metric("ipa_log_position", "gauge", "Global position of the last event fanned out.",
               {"": store.tail.position})
        metric("ipa_events_appended_total", "counter",
               "Newest global position in the store (events appended by all processes).",
               {"": await store.head_position()})
        metric("ipa_append_commits_total", "counter",
               "Append transactions committed by this process.", {"": store.commits})
        metric("ipa_sse_clients", "gauge", "Open SSE streams, by stream kind.",
               dict(self.hub.clients), "stream")
        metric("ipa_sse_overflows_total", "counter",
               "SSE streams ended because the client read too slowly.",
               {"": self.hub.overflows})
        return "\n".join(lines) + "\n"
