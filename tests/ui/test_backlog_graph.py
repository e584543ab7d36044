"""The backlog's dependency graph as the project page draws it (``ui/backlog_graph.py``): a
column per depth, rows by phase then priority, an arrow per dependency, and 200 items within a
bounded box."""

from __future__ import annotations

import re
from typing import Any

from ipa.ui import backlog_graph as graph
from ipa.ui.pages import templates

PITCH_X = graph.NODE_WIDTH + graph.COLUMN_GAP
PITCH_Y = graph.NODE_HEIGHT + graph.ROW_GAP


def item(id: str, *depends_on: str, phase: str = "development", priority: int = 5,
         status: str = "approved", kind: str = "backend_developer") -> dict[str, Any]:
    return {"id": id, "title": f"Build {id}", "description": "", "kind": kind, "phase": phase,
            "priority": priority, "depends_on": list(depends_on), "acceptance": [],
            "status": status, "child_id": None}


def view(*items: dict[str, Any], children: list[dict[str, Any]] | None = None) -> dict:
    return {"workflow": "project", "backlog": {"version": 1, "approved": True,
                                               "items": list(items)},
            "children": children or []}


def by_id(layout: dict) -> dict[str, dict]:
    return {node["id"]: node for node in layout["nodes"]}


def edges(layout: dict) -> set[tuple[str, str]]:
    return {(edge["source"], edge["target"]) for edge in layout["edges"]}


def test_an_items_column_is_its_longest_chain_of_dependencies() -> None:
    # c depends on a directly and through b: it goes after b, not beside it.
    laid = graph.layout(view(item("c", "a", "b"), item("b", "a"), item("a")))

    nodes = by_id(laid)
    assert {i: (n["depth"], n["column"]) for i, n in nodes.items()} == {
        "a": (0, 0), "b": (1, 1), "c": (2, 2)}
    assert edges(laid) == {("a", "b"), ("a", "c"), ("b", "c")}


def test_a_chain_runs_left_to_right_and_each_arrow_joins_two_boxes_sides() -> None:
    ids = [f"step{n}" for n in range(5)]
    laid = graph.layout(view(*(item(i, *ids[n - 1:n]) for n, i in enumerate(ids))))

    nodes = by_id(laid)
    assert [nodes[i]["x"] for i in ids] == [graph.MARGIN + n * PITCH_X for n in range(5)]
    assert {nodes[i]["y"] for i in ids} == {graph.MARGIN}
    assert (laid["columns"], laid["rows"]) == (5, 1)
    assert laid["width"] == 2 * graph.MARGIN + 5 * graph.NODE_WIDTH + 4 * graph.COLUMN_GAP
    assert laid["height"] == 2 * graph.MARGIN + graph.NODE_HEIGHT
    assert len(laid["edges"]) == 4
    for edge in laid["edges"]:
        source, target = nodes[edge["source"]], nodes[edge["target"]]
        assert (edge["x1"], edge["y1"]) == (source["x"] + graph.NODE_WIDTH,
                                            source["y"] + graph.NODE_HEIGHT // 2)
        assert (edge["x2"], edge["y2"]) == (target["x"], target["y"] + graph.NODE_HEIGHT // 2)
        assert edge["path"].startswith(f"M{edge['x1']},{edge['y1']} C")
        assert edge["path"].endswith(f" {edge['x2']},{edge['y2']}")


def test_a_diamond_puts_both_branches_in_one_column_higher_priority_first() -> None:
    laid = graph.layout(view(item("top"), item("left", "top", priority=2),
                             item("right", "top", priority=8), item("bottom", "left", "right")))

    nodes = by_id(laid)
    assert {i: (n["column"], n["row"]) for i, n in nodes.items()} == {
        "top": (0, 0), "right": (1, 0), "left": (1, 1), "bottom": (2, 0)}
    assert nodes["left"]["y"] == graph.MARGIN + PITCH_Y
    assert edges(laid) == {("top", "left"), ("top", "right"), ("left", "bottom"),
                           ("right", "bottom")}
    assert laid["rows"] == 2


def test_rows_go_by_the_workflows_phases_then_priority_then_backlog_order() -> None:
    laid = graph.layout(view(
        item("check", phase="qa", priority=9), item("low", priority=1),
        item("high", priority=7), item("also-high", priority=7),
        item("ci", phase="infrastructure", priority=0)))

    column = sorted(laid["nodes"], key=lambda n: n["row"])
    assert [n["id"] for n in column] == ["ci", "high", "also-high", "low", "check"]
    assert {n["column"] for n in column} == {0}


def test_a_node_links_to_its_childs_page_else_to_its_item_in_the_list() -> None:
    child = {"id": "0b6f3d1e-0000-4000-8000-000000000001", "item_id": "api",
             "child_status": "running"}
    laid = graph.layout(view(item("api", status="spawned"), item("ui", "api"),
                             children=[child]))

    nodes = by_id(laid)
    assert nodes["api"]["href"] == f"/pods/{child['id']}"
    assert nodes["api"]["child"]["child_status"] == "running"
    assert nodes["ui"]["href"] == "#item-ui" and nodes["ui"]["child"] is None


def test_a_dropped_item_keeps_its_box_and_its_arrows_are_marked_dropped() -> None:
    laid = graph.layout(view(item("a"), item("gone", "a", status="dropped"),
                             item("b", "a")))

    nodes = by_id(laid)
    assert nodes["gone"]["status"] == "dropped" and nodes["gone"]["column"] == 1
    assert {(e["source"], e["target"]): e["dropped"] for e in laid["edges"]} == {
        ("a", "gone"): True, ("a", "b"): False}


def test_long_ids_and_kinds_are_cut_to_fit_their_box() -> None:
    laid = graph.layout(view(item("a-rather-long-item-identifier",
                                  kind="a_very_long_agent_type_name")))

    [node] = laid["nodes"]
    assert node["label"] == "a-rather-long-ite…" and len(node["label"]) == graph.ID_CHARS
    assert node["sublabel"].endswith("…") and len(node["sublabel"]) == graph.KIND_CHARS
    assert node["id"] == "a-rather-long-item-identifier"


def test_a_wide_layer_takes_several_columns_of_at_most_max_rows() -> None:
    roots = [item(f"r{n:02}", priority=0) for n in range(graph.MAX_ROWS + 3)]
    laid = graph.layout(view(*roots, item("end", "r00", "r17")))

    nodes = by_id(laid)
    assert laid["rows"] == graph.MAX_ROWS
    assert (nodes["r00"]["column"], nodes["r14"]["column"], nodes["r15"]["column"]) == (0, 0, 1)
    assert (nodes["r15"]["row"], nodes["r17"]["row"]) == (0, 2)
    assert nodes["end"]["column"] == 2 and nodes["end"]["depth"] == 1


def test_200_items_stay_within_a_bounded_box_without_overlaps() -> None:
    # Four phases of 50; each item depends on one 7 and one 13 before it: about 30 layers.
    phases = ("infrastructure", "development", "qa", "deployment")
    items = [item(f"item-{n:03}", *(f"item-{n - k:03}" for k in (7, 13) if n >= k),
                  phase=phases[n // 50], priority=n % 10) for n in range(200)]
    laid = graph.layout(view(*items))

    layers = max(n["depth"] for n in laid["nodes"]) + 1
    assert len(laid["nodes"]) == 200
    assert len(laid["edges"]) == sum(len(i["depends_on"]) for i in items)
    assert laid["height"] <= 2 * graph.MARGIN + graph.MAX_ROWS * PITCH_Y
    assert laid["columns"] <= layers + 200 // graph.MAX_ROWS
    assert laid["width"] <= 2 * graph.MARGIN + laid["columns"] * PITCH_X
    assert len({(n["column"], n["row"]) for n in laid["nodes"]}) == 200
    for node in laid["nodes"]:
        assert node["x"] + graph.NODE_WIDTH <= laid["width"] - graph.MARGIN
        assert node["y"] + graph.NODE_HEIGHT <= laid["height"] - graph.MARGIN
    for edge in laid["edges"]:
        assert edge["x2"] > edge["x1"]  # every arrow points right
    # 200 items with no dependency: 14 columns of at most 15.
    flat = graph.layout(view(*(item(f"i{n}") for n in range(200))))
    assert (flat["columns"], flat["rows"]) == (14, graph.MAX_ROWS)
    assert flat["width"] < 2_600 and flat["height"] < 700


def test_a_chain_of_200_is_laid_out_without_recursion() -> None:
    items = [item(f"s{n}", *([f"s{n - 1}"] if n else [])) for n in range(200)]
    laid = graph.layout(view(*reversed(items)))

    assert by_id(laid)["s199"]["depth"] == 199 and laid["rows"] == 1


def test_a_view_without_a_backlog_has_an_empty_graph() -> None:
    laid = graph.layout({"workflow": "feature", "backlog": None})

    assert laid["nodes"] == [] and laid["edges"] == [] and laid["width"] == 2 * graph.MARGIN


def test_the_graph_renders_as_svg_with_classes_and_no_script_or_style_attribute() -> None:
    child = {"id": "0b6f3d1e-0000-4000-8000-000000000001", "item_id": "auth",
             "child_status": "waiting"}
    laid = graph.layout(view(item("schema", status="finished"),
                             item("auth", "schema", status="spawned"),
                             item("old", "schema", status="dropped"), children=[child]))

    html = templates.get_template("_backlog_graph.html").render(backlog_graph=laid)

    assert "<svg" in html and "<script" not in html and " style=" not in html
    assert re.search(r'class="gnode gnode-spawned gchild-waiting" data-item="auth"', html)
    assert re.search(r'class="gnode gnode-dropped" data-item="old"', html)
    assert f'href="/pods/{child["id"]}"' in html and 'href="#item-schema"' in html
    assert len(re.findall(r'<path class="gedge[^"]*" data-from="schema"', html)) == 2
    assert 'class="gedge gedge-dropped" data-from="schema" data-to="old"' in html
    assert "3 item(s) · 2 dependencies" in html
    legend = re.findall(r'<span class="glegend ([^"]+)">([^<]+)</span>', html)
    assert legend == [("gnode-dropped", "dropped"), ("gnode-finished", "finished"),
                      ("gnode-spawned", "spawned"),
                      ("gchild-waiting", "its child waits for a person")]
    assert templates.get_template("_backlog_graph.html").render(
        backlog_graph=graph.layout(view())).strip() == ""
