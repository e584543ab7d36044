"""A project's backlog as a drawn dependency graph: where each item's box and each arrow go.

Pure functions over a task view (``task_state.view``, with the ``children`` the pages add):
:func:`layout` places one box per backlog item and one arrow per dependency, and the project
page draws them as inline SVG (``_backlog_graph.html``), server-rendered like the rest of the
state panel, so the graph follows the project live when the panel is rendered again.

The layout is layered: an item's column is its depth (the longest chain of dependencies from
an item that depends on nothing), so every arrow points right, from a dependency to its
dependant. Within a column the boxes go by phase (the workflow's order), then priority (higher
first), then the backlog's order. Boxes have one fixed size and a column holds at most
:data:`MAX_ROWS` of them (a wider layer takes several columns side by side), so 200 items stay
readable: the graph grows sideways, and its card scrolls.
"""

from __future__ import annotations

from typing import Any

from .children import tree

NODE_WIDTH = 140
NODE_HEIGHT = 36
COLUMN_GAP = 44
"""Room between two columns, for the arrows."""
ROW_GAP = 10
MARGIN = 8
MAX_ROWS = 15
"""The most boxes a column holds: a layer with more takes further columns."""
ID_CHARS = 18
KIND_CHARS = 21
"""What fits of an item's id and kind in a box (longer ones end with ``…``; the box's tooltip
has them whole)."""


def layout(view: dict[str, Any]) -> dict[str, Any]:
    """The graph of the view's backlog: ``{"nodes", "edges", "width", "height", "columns",
    "rows", "node_width", "node_height"}``, sizes in pixels.

    Each node is the backlog's item (``id``, ``title``, ``kind``, ``phase``, ``priority``,
    ``status``, ``depends_on``), its ``child`` (its entry of the view's ``children``, or
    ``None``), ``href`` (its child's page, else its entry in the backlog list, ``#item-<id>``),
    ``label`` and ``sublabel`` (its id and kind, cut to fit), its ``depth``, ``column`` and
    ``row``, and its box's top left ``x``, ``y``. Each edge goes from a dependency
    (``source``) to its dependant (``target``): from the middle of the one's right side
    (``x1``, ``y1``) to the middle of the other's left side (``x2``, ``y2``), with ``path``, a
    curve between them for SVG's ``d``, and ``dropped`` when either end is.
    """
    phases = tree(view)
    items = [item for phase in phases for item in phase["items"]]
    depth = depths(items)
    phase_rank = {phase["phase"]: n for n, phase in enumerate(phases)}  # the workflow's order
    backlog_rank = {item["id"]: n for n, item in enumerate(
        (view.get("backlog") or {}).get("items") or [])}
    layers: dict[int, list[dict[str, Any]]] = {}
    for item in items:
        layers.setdefault(depth[item["id"]], []).append(item)
    nodes: dict[str, dict[str, Any]] = {}
    column = 0
    for level in sorted(layers):
        layer = sorted(layers[level], key=lambda i: (phase_rank[i["phase"]], -i["priority"],
                                                     backlog_rank[i["id"]]))
        for n, item in enumerate(layer):
            col, row = column + n // MAX_ROWS, n % MAX_ROWS
            nodes[item["id"]] = _node(item, depth[item["id"]], col, row)
        column += -(-len(layer) // MAX_ROWS)
    edges = [_edge(nodes[dep], node) for node in nodes.values()
             for dep in node["depends_on"] if dep in nodes]
    rows = min(max((len(layer) for layer in layers.values()), default=0), MAX_ROWS)
    return {
        "nodes": list(nodes.values()),
        "edges": edges,
        "columns": column,
        "rows": rows,
        "node_width": NODE_WIDTH,
        "node_height": NODE_HEIGHT,
        "width": 2 * MARGIN + column * NODE_WIDTH + max(column - 1, 0) * COLUMN_GAP,
        "height": 2 * MARGIN + rows * NODE_HEIGHT + max(rows - 1, 0) * ROW_GAP,
    }


def depths(items: list[dict[str, Any]]) -> dict[str, int]:
    """Each item's depth: 0 for one that depends on no item of ``items``, else one more than
    its deepest dependency's (the longest chain from a root)."""
    deps = {item["id"]: [d for d in item["depends_on"] if d != item["id"]] for item in items}
    found: dict[str, int] = {}
    for start in deps:
        # Depth first without recursion (a chain of 200 items is 200 frames deep). The domain
        # refuses cycles; one would end where it meets itself rather than loop.
        stack, on_path = [start], {start}
        while stack:
            item_id = stack[-1]
            pending = [d for d in deps[item_id]
                       if d in deps and d not in found and d not in on_path]
            if pending:
                stack.append(pending[0])
                on_path.add(pending[0])
                continue
            found[item_id] = max((found[d] + 1 for d in deps[item_id] if d in found),
                                 default=0)
            stack.pop()
            on_path.discard(item_id)
    return found


def _node(item: dict[str, Any], depth: int, column: int, row: int) -> dict[str, Any]:
    child = item.get("child")
    return {
        "id": item["id"], "title": item["title"], "kind": item["kind"],
        "phase": item["phase"], "priority": item["priority"], "status": item["status"],
        "depends_on": list(item["depends_on"]), "child": child,
        "href": f"/pods/{child['id']}" if child else f"#item-{item['id']}",
        "label": _cut(item["id"], ID_CHARS), "sublabel": _cut(item["kind"], KIND_CHARS),
        "depth": depth, "column": column, "row": row,
        "x": MARGIN + column * (NODE_WIDTH + COLUMN_GAP),
        "y": MARGIN + row * (NODE_HEIGHT + ROW_GAP),
    }


def _edge(source: dict[str, Any], target: dict[str, Any]) -> dict[str, Any]:
    x1, y1 = source["x"] + NODE_WIDTH, source["y"] + NODE_HEIGHT // 2
    x2, y2 = target["x"], target["y"] + NODE_HEIGHT // 2
    bend = max((x2 - x1) // 2, COLUMN_GAP // 2)
    return {
        "source": source["id"], "target": target["id"], "x1": x1, "y1": y1, "x2": x2, "y2": y2,
        "path": f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}",
        "dropped": "dropped" in (source["status"], target["status"]),
    }


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"
