"""The process's Prometheus metrics (``prometheus_client``), served by ``GET /metrics``
(``ui/metrics.py``).

A leaf module like ``domain``: any layer may import it to count what it does, and it imports
nothing of ipa's. Every metric lives in :data:`REGISTRY`; names follow Prometheus conventions
(base units, ``_total`` on counters, ``_seconds`` on durations).

Each process counts what it does itself: the appends it commits (``eventstore/writer.py``) and
what the events it appended say (``projections/telemetry.py``), so the nodes of a cluster never
count one thing twice; the scrape target (``instance``) tells them apart, and
``ipa_node_info{node}`` names the node behind each target. Values read at scrape time (pods,
tasks, streams, the log's positions) are collected by ``ui/metrics.py``. The full list, with
labels and meaning: ``specs/ui/metrics.md``.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)

# No ``*_created`` series beside every counter and histogram: a third more lines per scrape,
# for a start time the process's own ``process_start_time_seconds`` already gives.
disable_created_metrics()

REGISTRY = CollectorRegistry(auto_describe=True)
"""ipa's metrics (not the library's global registry, so a test can read exactly ipa's)."""

ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes...
PlatformCollector(registry=REGISTRY)  # python_info
GCCollector(registry=REGISTRY)  # python_gc_*

WEBHOOK_DELIVERIES = Counter(
    "ipa_webhook_deliveries",
    "Webhook delivery attempts by this process, by outcome (delivered, failed, retrying).",
    ["outcome"],
    registry=REGISTRY,
)

# -- the event store's writer (group commit) ---------------------------------------------------

APPEND_COMMIT_SECONDS = Histogram(
    "ipa_append_commit_seconds",
    "Seconds one append transaction (a group-commit batch) of this process took to commit.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
    registry=REGISTRY,
)
APPEND_BATCH_EVENTS = Histogram(
    "ipa_append_batch_events",
    "Events per append transaction committed by this process (the batching achieved).",
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500),
    registry=REGISTRY,
)
EVENTS_APPENDED = Counter(
    "ipa_events_appended",
    "Events this process appended to the store (committed).",
    registry=REGISTRY,
)

# -- what the appended events say (projections/telemetry.py) -----------------------------------

_LONG = (1, 10, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 259200, 604800)
"""Buckets of work that takes seconds to a week (a task, a phase waiting for a person)."""

TASK_DURATION = Histogram(
    "ipa_task_duration_seconds",
    "Seconds from a task's creation to its completion, failure or cancellation "
    "(observed by the process that recorded the end).",
    ["workflow", "outcome"],
    buckets=_LONG,
    registry=REGISTRY,
)
PHASE_DURATION = Histogram(
    "ipa_phase_duration_seconds",
    "Seconds a task spent in a phase, gate included (observed when it left the phase).",
    ["workflow", "phase"],
    buckets=_LONG,
    registry=REGISTRY,
)
JOB_RUNS = Counter(
    "ipa_job_runs",
    "Attempts of jobs that ended, by agent type and outcome (succeeded, failed, interrupted, "
    "held, rate_limited, question).",
    ["agent", "outcome"],
    registry=REGISTRY,
)
AGENT_TOKENS = Counter(
    "ipa_agent_tokens",
    "Tokens agents used, by agent type, model and kind (input, output, cache_read, "
    "cache_write).",
    ["agent", "model", "kind"],
    registry=REGISTRY,
)
AGENT_COST = Counter(
    "ipa_agent_cost_usd",
    "What agents cost in US dollars, by agent type and model.",
    ["agent", "model"],
    registry=REGISTRY,
)
VERIFICATIONS = Counter(
    "ipa_verifications",
    "Verifications of agents' work, by agent type and outcome (passed, failed).",
    ["agent", "outcome"],
    registry=REGISTRY,
)
RATE_LIMIT_WAIT = Histogram(
    "ipa_rate_limit_wait_seconds",
    "Waits imposed by a rate limit, in seconds: source agent (name: the agent type) or sync "
    "(name: the connector).",
    ["source", "name"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400),
    registry=REGISTRY,
)
