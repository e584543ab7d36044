"""``GET /metrics``: ipa's Prometheus metrics in the text format (version 0.0.4), written by
``prometheus_client`` (every metric, with its labels: ``specs/ui/metrics.md``).

Two sources. What this process counts as it works lives in :data:`ipa.telemetry.REGISTRY`:
the writer's commits, what the events it appended say (``projections/telemetry.py``, hooked
in by :func:`count_appends`), webhook deliveries, the process itself. What is read at scrape
time is collected here, from memory, plus one query (the log's head position):

- ``ipa_node_info{node}``: this process's node id (1);
- ``ipa_pods{status}``: pods this process holds, by pod status;
- ``ipa_agents_running{agent}``: jobs with an attempt in flight in this process's pods, by
  agent type;
- ``ipa_tasks{status}``: tasks in the task list, by status (the list's in-memory columns; the
  whole store's tasks, so every node reports the same);
- ``ipa_log_position``: the global position of the last event the live tail handed out;
- ``ipa_log_head_position``: the newest global position in the store (every process's);
- ``ipa_tail_lag_events``: head minus the tail's position (events not yet fanned out here);
- ``ipa_append_commits_total``: append transactions this process committed;
- ``ipa_sse_clients{stream}``: open SSE streams by kind (task, all, run);
- ``ipa_sse_overflows_total``: SSE streams ended because their client read too slowly.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from uuid import UUID

from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from starlette.requests import Request
from starlette.responses import Response

from ipa.domain import Status, TaskState, running_jobs
from ipa.eventstore import EventStore
from ipa.pods import Pod, PodStatus
from ipa.projections import TaskList
from ipa.projections.telemetry import EventMetrics
from ipa.supervisor import PodNotRunning, Supervisor
from ipa.telemetry import REGISTRY

from .streams import StreamHub


def count_appends(store: EventStore, supervisor: Supervisor) -> EventMetrics:
    """Count what every append of ``store`` says (:class:`EventMetrics`), reading a task's
    state before the append from its pod in ``supervisor``."""

    def state_of(task_id: UUID) -> TaskState | None:
        try:
            return supervisor.get(task_id).state.current
        except (PodNotRunning, RuntimeError):  # no pod here, or its state is not loaded yet
            return None

    metrics = EventMetrics(state_of)
    store.observe_appends(metrics.observe)
    return metrics


class Metrics:
    """The ``/metrics`` endpoint of one app."""

    def __init__(self, supervisor: Supervisor, task_list: TaskList, hub: StreamHub) -> None:
        self.supervisor = supervisor
        self.task_list = task_list
        self.hub = hub
        self._running: dict[Pod, tuple[TaskState, tuple[str, ...]]] = {}

    def pods(self) -> tuple[Counter[str], Counter[str]]:
        """(pods by status, jobs in flight in the ready ones by agent type). A pod's jobs are
        looked at again only when its state changed since the last scrape: a scrape of a
        thousand idle pods stays well under a millisecond."""
        pods = self.supervisor.pods()
        statuses = Counter({status.value: 0 for status in PodStatus})
        for status, count in Counter(pod.status for pod in pods).items():
            statuses[status.value] += count
        agents: Counter[str] = Counter()
        running: dict[Pod, tuple[TaskState, tuple[str, ...]]] = {}
        known = self._running
        for pod in pods:
            if pod.status is not PodStatus.ready:
                continue
            state = pod.state.current
            seen = known.get(pod)
            if seen is None or seen[0] is not state:
                seen = (state, tuple(job.agent for job in running_jobs(state)))
            running[pod] = seen
            if seen[1]:
                agents.update(seen[1])
        self._running = running
        return statuses, agents

    async def endpoint(self, request: Request) -> Response:
        return Response(await self.render(), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    async def render(self) -> bytes:
        """Every metric as Prometheus text."""
        head = await self.supervisor.store.head_position()
        return generate_latest(_Scrape(self, head))


class _Scrape:
    """One scrape: ipa's registry, then the values read now (a ``prometheus_client``
    collector; ``head`` was read from the store just before)."""

    def __init__(self, metrics: Metrics, head: int) -> None:
        self._metrics = metrics
        self._head = head

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
        supervisor = self._metrics.supervisor
        hub = self._metrics.hub
        store = supervisor.store
        if supervisor.node is not None:
            yield InfoMetricFamily("ipa_node", "The node this process is (its id).",
                                   value={"node": supervisor.node.id})
        pods, agents = self._metrics.pods()
        yield _gauge("ipa_pods", "Pods held by this process, by status.", "status", pods)
        yield _gauge("ipa_agents_running",
                     "Jobs with an attempt in flight in this process's pods, by agent type.",
                     "agent", agents)
        tasks = Counter({status.value: 0 for status in Status})
        tasks.update(self._metrics.task_list.statuses())  # from memory: a scrape reads no rows
        yield _gauge("ipa_tasks", "Tasks in the task list, by status.", "status", tasks)
        tail = store.tail.position
        yield GaugeMetricFamily("ipa_log_position",
                                "Global position of the last event the live tail fanned out.",
                                value=tail)
        yield GaugeMetricFamily("ipa_log_head_position",
                                "Newest global position in the store (every process's events).",
                                value=self._head)
        yield GaugeMetricFamily("ipa_tail_lag_events",
                                "Events in the store the live tail has not fanned out yet.",
                                value=max(0, self._head - tail))
        yield CounterMetricFamily("ipa_append_commits",
                                  "Append transactions committed by this process.",
                                  value=store.commits)
        yield _gauge("ipa_sse_clients", "Open SSE streams, by stream kind.", "stream",
                     hub.clients)
        yield CounterMetricFamily("ipa_sse_overflows",
                                  "SSE streams ended because the client read too slowly.",
                                  value=hub.overflows)


def _gauge(name: str, documentation: str, label: str, values: Counter[str]) -> Metric:
    family = GaugeMetricFamily(name, documentation, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family
