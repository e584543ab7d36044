"""``telemetry.py``: a leaf any layer may import, whose metrics follow Prometheus's naming
conventions (base units, ``_total`` on counters)."""

from __future__ import annotations

import ast
from pathlib import Path

from ipa.telemetry import REGISTRY

ROOT = Path(__file__).resolve().parents[1]

UNITS = ("_seconds", "_events", "_usd")
"""The units ipa's histograms and counters are measured in (plain counts have none)."""


def test_telemetry_imports_nothing_of_ipa() -> None:
    tree = ast.parse((ROOT / "telemetry.py").read_text())
    modules = {node.module for node in ast.walk(tree)
               if isinstance(node, ast.ImportFrom) and node.module}
    modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}

    assert modules and not any(m == "ipa" or m.startswith("ipa.") for m in modules), modules
    assert not any(isinstance(node, ast.ImportFrom) and node.level for node in ast.walk(tree))


def test_ipa_metrics_are_named_as_prometheus_asks() -> None:
    families = [f for f in REGISTRY.collect() if f.name.startswith("ipa_")]

    assert len(families) >= 10
    for family in families:
        assert family.documentation, family.name
        names = {sample.name for sample in family.samples}  # none yet for labelled ones
        if family.type == "counter":
            assert all(name.endswith("_total") for name in names), (family.name, names)
        if family.type == "histogram":
            assert family.name.endswith(UNITS), family.name
        assert "_total" not in family.name, family.name  # the suffix belongs to samples
