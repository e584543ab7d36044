"""A project's backlog and children as people see them: the API's ``children`` and
``swarm_usage``, the tree of ``ipa task tree`` and the project page's backlog, board, agent
grid and totals.

Everything here reads JSON: a task view (``task_state.view``, whose ``backlog`` lists the items
with their ``status`` and ``child_id``) and the task list's rows of the child tasks (their own
status and phase, what they spent and their runs in flight, which the project's stream does not
carry). The project records only when a child is spawned and when it ends; in between, the
child's row says where it is.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ipa.domain import UnknownWorkflow, get_workflow

if TYPE_CHECKING:  # the CLI imports this module: it does not load the agents' SDK
    from ipa.pods import AgentCatalog

BOARD = ("queued", "running", "waiting", "failed", "finished")
"""The children board's columns: ``queued`` (approved, no child yet: its dependencies, its
phase or ``max_children`` hold it), ``running`` (the child, or its merge job), ``waiting``
(the child waits for a person or is paused), ``failed`` (waits for retry, skip or cancel) and
``finished`` (or skipped)."""

ITEM_ACTIONS = ("retry_item", "skip_item", "cancel_item")
"""What a person can do with an item whose child failed."""

Rows = Callable[[str], dict[str, Any] | None]


def children(view: dict[str, Any], row_of: Rows) -> list[dict[str, Any]]:
    """One entry per backlog item that has a child task (running or ended; a retried item has
    none until its new child is spawned), in backlog order: the child's ``id``, the item's
    ``item_id``, ``title``, ``kind``, ``phase`` and ``item_status``, and the child's own
    ``child_status`` and ``child_phase`` from its task-list row (``row_of(id)``; ``None`` while
    the list has no row for it), what it spent (``cost_usd``, ``tokens``: in + out) and its
    runs in flight (``running``: the row's, each with its RARV ``step``)."""
    found = []
    for item in _items(view):
        child_id = item.get("child_id")
        if not child_id:
            continue
        row = row_of(child_id) or {}
        found.append({
            "id": child_id, "item_id": item["id"], "title": item["title"],
            "kind": item["kind"], "phase": item["phase"], "item_status": item["status"],
            "child_status": row.get("status"), "child_phase": row.get("phase"),
            "cost_usd": None if row.get("cost_usd") is None else _money(row["cost_usd"]),
            "tokens": _tokens(row),
            "running": list(row.get("running") or []),
        })
    return found


def _tokens(row: dict[str, Any]) -> int | None:
    if "input_tokens" not in row:
        return None  # not listed yet, or a row from before the usage columns
    return (row.get("input_tokens") or 0) + (row.get("output_tokens") or 0)


def swarm_of(catalog: AgentCatalog) -> Callable[[str], str]:
    """The swarm of an agent type by its name (``other`` for a name the catalog lacks)."""
    def of(agent: str) -> str:
        found = catalog.types.get(agent)
        return found.swarm if found is not None else "other"
    return of


def swarm_usage(view: dict[str, Any], rows: list[dict[str, Any]],
                swarm: Callable[[str], str]) -> dict[str, Any]:
    """Tokens (in + out) and cost of a project's swarm: ``project`` (its own agents),
    ``children`` (every child task in ``rows``, the task list's, those of retried items too,
    with their ``count``), ``total`` (both) and ``by_swarm`` (the agent types' swarms, by
    name: ``{swarm: {tokens, cost_usd}}``; a child's usage goes by the agent that ran)."""
    usage = view.get("usage") or {}
    own = _sum([usage])
    kids = _sum(rows)
    by_swarm: dict[str, dict[str, Any]] = {}
    spent = [(agent, used.get("input_tokens", 0) + used.get("output_tokens", 0),
              used.get("cost_usd", 0.0)) for agent, used in (usage.get("by_agent") or {}).items()]
    spent += [(agent, used.get("tokens", 0), used.get("cost_usd", 0.0))
              for row in rows for agent, used in (row.get("usage_by_agent") or {}).items()]
    for agent, tokens, cost in spent:
        into = by_swarm.setdefault(swarm(agent), {"tokens": 0, "cost_usd": 0.0})
        into["tokens"] += tokens
        into["cost_usd"] += cost
    return {
        "project": own,
        "children": {**kids, "count": len(rows)},
        "total": {"tokens": own["tokens"] + kids["tokens"],
                  "cost_usd": _money(own["cost_usd"] + kids["cost_usd"])},
        "by_swarm": {name: {"tokens": by_swarm[name]["tokens"],
                            "cost_usd": _money(by_swarm[name]["cost_usd"])}
                     for name in sorted(by_swarm)},
    }


def _sum(usages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"tokens": sum((u.get("input_tokens") or 0) + (u.get("output_tokens") or 0)
                          for u in usages),
            "cost_usd": _money(sum(u.get("cost_usd") or 0.0 for u in usages))}


def _money(value: float) -> float:
    return round(value, 6)  # sums of floats: no 0.30000000000000004 dollars


def agents(view: dict[str, Any]) -> list[dict[str, Any]]:
    """The agent grid: every run in flight in the project's children (the view's
    ``children``), in backlog order: the child's ``child_id``, ``item_id`` and ``kind`` with
    the run's ``job_id``, ``agent``, ``run_id``, ``started_at``, ``step`` and ``tokens``."""
    return [{"child_id": child["id"], "item_id": child["item_id"], "kind": child["kind"], **run}
            for child in view.get("children") or [] for run in child.get("running") or []]


def column(item_status: str, child_status: str | None) -> str | None:
    """The board column of an item (``None``: not on the board, i.e. proposed or dropped).
    A spawned item goes by its child's own status, which moves before the project records
    the end."""
    if item_status == "approved":
        return "queued"
    if item_status == "spawned":
        if child_status in ("waiting", "paused"):
            return "waiting"
        if child_status in ("failed", "cancelled"):
            return "failed"
        return "finished" if child_status == "completed" else "running"
    if item_status == "merging":  # its child completed; a merge job brings its work in
        return "running"
    if item_status == "failed":
        return "failed"
    if item_status in ("finished", "skipped"):
        return "finished"
    return None


def tree(view: dict[str, Any]) -> list[dict[str, Any]]:
    """The backlog by phase, in the workflow's order: ``[{"phase", "items"}]``, each phase's
    items in dependency order (an item after the ones it depends on; among those free to go,
    higher priority first, then backlog order). Each item is the backlog's, plus ``child``
    (its entry of the view's ``children``, or ``None``) and ``column`` (see :func:`column`)."""
    by_item = {child["item_id"]: child for child in view.get("children") or []}
    grouped: dict[str, list[dict[str, Any]]] = {}
    for item in _items(view):
        child = by_item.get(item["id"])
        shown = {**item, "child": child,
                 "column": column(item["status"], child and child["child_status"])}
        grouped.setdefault(item["phase"], []).append(shown)
    order = _phase_order(view)
    phases = sorted(grouped, key=lambda p: (order.get(p, len(order)), p))
    return [{"phase": phase, "items": _dependency_order(grouped[phase])} for phase in phases]


def board(view: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The children board: each column of :data:`BOARD` with its items (tree order)."""
    columns: dict[str, list[dict[str, Any]]] = {name: [] for name in BOARD}
    for phase in tree(view):
        for item in phase["items"]:
            if item["column"] is not None:
                columns[item["column"]].append(item)
    return list(columns.items())


def counts(view: dict[str, Any]) -> dict[str, int]:
    """How many items stand in each board column (columns with none left out)."""
    return {name: len(items) for name, items in board(view) if items}


def tree_lines(view: dict[str, Any]) -> list[str]:
    """``ipa task tree``: the project, then its backlog by phase, one item a line: id, kind,
    item status, its child (short id, status/phase) and what it waits for (``after: ...``)."""
    title = (f"{view.get('title')}  {view.get('id')}  {view.get('workflow')} · "
             f"{view.get('phase')} · {view.get('status')}")
    phases = tree(view)
    if view.get("backlog") is None:
        if view.get("parent_id"):
            return [title, f"  item {view.get('item_id')} ({view.get('kind')}) of project "
                           f"{view['parent_id']}: ipa task tree {view['parent_id']}"]
        return [title, "  (no backlog)"]
    summary = ", ".join(f"{n} {name}" for name, n in counts(view).items()) or "nothing spawned"
    lines = [title, f"  backlog v{view['backlog'].get('version')} "
                    f"({'approved' if view['backlog'].get('approved') else 'proposed'}), "
                    f"max {view.get('max_children')} children at once: {summary}"]
    if view.get("swarm_usage"):
        lines.append(f"  {totals_line(view['swarm_usage'])}")
    items = [item for phase in phases for item in phase["items"]]
    width_id = max((len(item["id"]) for item in items), default=0)
    width_kind = max((len(item["kind"]) for item in items), default=0)
    for p, phase in enumerate(phases):
        last_phase = p == len(phases) - 1
        lines.append(f"{'└─' if last_phase else '├─'} {phase['phase']}")
        stem = "   " if last_phase else "│  "
        for i, item in enumerate(phase["items"]):
            branch = "└─" if i == len(phase["items"]) - 1 else "├─"
            child = item["child"]
            if child is None:
                ran = "-"
            else:
                where = "/".join(x for x in (child["child_status"], child["child_phase"]) if x)
                ran = f"child {child['id'][:8]} {where or '(not listed yet)'}"
                if child.get("tokens") or child.get("cost_usd"):
                    ran += f" {_spent(child)}"
                ran += "".join(f" [{run['agent']}: {run['step']}]"
                               for run in child.get("running") or [])
            after = f"  after: {', '.join(item['depends_on'])}" if item["depends_on"] else ""
            lines.append(f"{stem}{branch} {item['id']:<{width_id}}  {item['kind']:<{width_kind}}"
                         f"  {item['status']:<8}  {ran}{after}")
    return lines


def totals_line(usage: dict[str, Any]) -> str:
    """A project's :func:`swarm_usage` in one line (``ipa task tree`` and ``show``)."""
    kids = usage["children"]
    by_swarm = ", ".join(f"{name} {_spent(used)}" for name, used in usage["by_swarm"].items())
    return (f"spent {_spent(usage['total'])}: project {_spent(usage['project'])}, "
            f"children ({kids['count']}) {_spent(kids)}"
            + (f"; by swarm: {by_swarm}" if by_swarm else ""))


def _spent(used: dict[str, Any]) -> str:
    return f"${used.get('cost_usd') or 0.0:.2f} / {used.get('tokens') or 0:,} tokens"


def tree_json(view: dict[str, Any]) -> dict[str, Any]:
    """``ipa task tree --json``: the project's head, :func:`tree` and the swarm's usage."""
    head = {key: view.get(key) for key in ("id", "title", "workflow", "phase", "status",
                                           "version", "max_children", "parent_id",
                                           "swarm_usage")}
    backlog = view.get("backlog")
    return {**head, "backlog": None if backlog is None else {
        "version": backlog.get("version"), "approved": backlog.get("approved"),
        "phases": tree(view)}, "counts": counts(view)}


def _items(view: dict[str, Any]) -> list[dict[str, Any]]:
    return list((view.get("backlog") or {}).get("items") or [])


def _phase_order(view: dict[str, Any]) -> dict[str, int]:
    try:
        return {p.name: i for i, p in enumerate(get_workflow(view.get("workflow", "")).phases)}
    except UnknownWorkflow:
        return {}


def _dependency_order(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Kahn's order over the dependencies inside one phase (others are in earlier phases)."""
    index = {item["id"]: n for n, item in enumerate(items)}
    waiting = {item["id"]: {d for d in item["depends_on"] if d in index} for item in items}
    ready = [(-item["priority"], index[item["id"]]) for item in items if not waiting[item["id"]]]
    heapq.heapify(ready)
    ordered: list[dict[str, Any]] = []
    while ready:
        _, n = heapq.heappop(ready)
        ordered.append(items[n])
        for other, deps in waiting.items():
            if items[n]["id"] in deps:
                deps.discard(items[n]["id"])
                if not deps:
                    heapq.heappush(ready, (-items[index[other]]["priority"], index[other]))
    # A cycle cannot be recorded (the domain refuses it); keep any leftover in backlog order.
    seen = {item["id"] for item in ordered}
    return ordered + [item for item in items if item["id"] not in seen]
