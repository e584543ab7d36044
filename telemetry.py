"""The process's Prometheus metrics (``prometheus_client``), served by ``GET /metrics``
(``ui/metrics.py``).

A leaf module like ``domain``: any layer may import it to count what it does, and it imports
nothing of ipa's. Every metric lives in :data:`REGISTRY`; names follow Prometheus conventions
(base units, ``_total`` on counters, ``_seconds`` on durations).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

REGISTRY = CollectorRegistry(auto_describe=True)
"""ipa's metrics (not the library's global registry, so a test can read exactly ipa's)."""

WEBHOOK_DELIVERIES = Counter(
    "ipa_webhook_deliveries",
    "Webhook delivery attempts by this process, by outcome (delivered, failed, retrying).",
    ["outcome"],
    registry=REGISTRY,
)
