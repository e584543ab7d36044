"""The HTML pages: the central task list (``/``) and the per-pod live page (``/pods/{id}``).

Server-rendered HTML (Jinja2, autoescaped; markdown through markdown-it with raw HTML escaped)
with small vanilla JS and no build step. The server renders every piece of a task's state —
the full pages, one list row (``/pods/{id}/row``) and the state panel of a pod page
(``/pods/{id}/state[?version=N]``, with what changed at N) — and the scripts swap those
fragments in when the SSE streams of :mod:`ipa.ui.app` say the task changed. Everything a page
does goes through the JSON API; the pages only read.

A pod page's memory panel (``/pods/{id}/memory[?memory_q=TEXT]``, :func:`memory_panel`) shows
the memories each run of the task was given and searches the task's scopes; it is rendered
apart from the state panel (it shows agent memory as it is now, not the task at a version),
again after a run is given memories and after a person pins or forgets one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ipa.domain import InvalidCommand, TaskState, scopes_of
from ipa.eventstore import StoreError, StreamNotFound
from ipa.projections import EmbedderError, Memory, MemoryUnavailable, TaskList, task_state
from ipa.supervisor import PodNotRunning, Supervisor

from . import analytics_page, backlog_graph, memory_page
from . import children as swarm
from . import page_model as model
from .api import node_items
from .errors import whole_number
from .lineage import derived

HERE = Path(__file__).resolve().parent
LIST_LIMIT = 2000
"""The most tasks the list page renders (newest first)."""
MEMORY_RESULTS = 10
"""The most memories a search of the memory panel shows."""
MEMORY_WAIT = 2.0
"""Seconds the memory panel waits for agent memory to have read the newest events
(``?fresh=1``: after a pin or a forget, or a run given memories)."""

templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(
    markdown=model.markdown, pretty=model.pretty, when=model.when, money=model.money,
    number=model.number, stamp=model.stamp, duration=model.duration,
)
templates.env.globals.update(job_notes=model.job_notes, requeue=model.requeue)


def routes(supervisor: Supervisor, task_list: TaskList) -> list[BaseRoute]:
    """The page routes (and their static files), mounted by ``create_app``."""
    store = supervisor.store
    swarm_of = swarm.swarm_of(supervisor.env.agents.catalog)

    async def current(task_id: UUID) -> TaskState:
        try:
            return supervisor.get(task_id).get_state()
        except (PodNotRunning, RuntimeError):  # no pod, or its state is still loading
            return await store.load(task_id)

    async def task_or_none(request: Request, version: int | None = None) -> TaskState | None:
        try:
            task_id = UUID(request.path_params["task_id"])
        except ValueError:
            return None
        try:
            if version is not None:
                return await store.load(task_id, version)
            return await current(task_id)
        except StreamNotFound:
            return None

    def view_of(state: TaskState) -> dict[str, Any]:
        """The task view, with ``attention`` ``crashed`` when its pod crashed and stopped (as
        the API shows it)."""
        return task_state.view(state, crashed=supervisor.attention(state.id))

    def list_row(row: dict[str, Any]) -> dict[str, Any]:
        shown = model.list_row(row)
        crashed = supervisor.attention(UUID(row["id"])) if row.get("id") else None
        return shown if crashed is None else {**shown, "attention": crashed.kind}

    def not_found(request: Request, what: str, kind: str = "task") -> Response:
        return templates.TemplateResponse(
            request, "not_found.html", {"what": what, "kind": kind}, status_code=404)

    async def events_of(task_id: UUID, upto: int | None = None) -> list[dict[str, Any]]:
        """The task's events up to ``upto`` (all by default), as JSON."""
        found: list[dict[str, Any]] = []
        while True:
            page = await store.read(task_id, after=len(found), upto=upto, limit=1000)
            found += [event.to_json() for event in page]
            if len(page) < 1000:
                return found

    async def render_state(request: Request, template: str, state: TaskState,
                           version: int | None, extra: dict[str, Any],
                           live: TaskState | None = None) -> Response:
        """A page or the state panel for ``state``; with ``version``, as time travel to it.
        ``live`` (the page): the task now, for its memory panel."""
        view = task_state.view(state) if version is not None else view_of(state)
        if state.backlog is not None:
            # Each child's own status and phase, from the task list (not in a past version:
            # where the children stood then is not recorded on the project).
            view["children"] = swarm.children(
                view, task_list.columns if version is None else lambda _: None)
            if version is None:  # what the children spent is not recorded on the project
                view["swarm_usage"] = swarm.swarm_usage(
                    view, task_list.children_of(str(state.id)), swarm_of)
        if version is None:  # what was made from it since (not recorded on the task)
            view.update(derived(task_list, str(state.id)))
        events = await events_of(state.id, version)
        context = {**panel(view, events), "log_position": task_list.position, **extra}
        if state.parent_id is not None:
            context["project"] = task_list.columns(str(state.parent_id))
        origin = state.forked_from or state.cloned_from
        if origin is not None:
            context["origin"] = task_list.columns(str(origin.task_id))
        if live is not None:
            context["memory"] = await memory_panel(
                memory_of(request), live, view if version is None else view_of(live),
                events if version is None else await events_of(live.id),
                memory_query(request))
        if version is not None:
            previous = await store.load(state.id, version - 1) if version > 1 else None
            before = task_state.view(previous) if previous else None
            context["travel"] = {
                "version": version,
                "head": await store.version(state.id),
                "changed": [
                    change for key, value in task_state.diff(before, view).items()
                    if key != "version"
                    for change in model.changes(None if before is None else before.get(key),
                                                value, key)
                ],
                "event": events[-1] if events else None,
            }
        return templates.TemplateResponse(request, template, context)

    async def nodes() -> list[dict[str, Any]] | None:
        """The store's nodes for the list's panel, as ``/api/nodes`` lists them (``None``: this
        server is no node, no panel; empty while the store does not answer: the page polls)."""
        if supervisor.node is None:
            return None
        try:
            return await node_items(supervisor)
        except StoreError:
            return []

    def version_param(request: Request) -> int | None | str:
        """``?version=N``: N, None without one, or the text of a malformed one."""
        text = request.query_params.get("version")
        if text is None:
            return None
        return whole_number(text) or text  # 0 and malformed alike: no such version

    async def task_list_page(request: Request) -> Response:
        # Read before the rows, so a change made while they are read is sent again, not lost.
        position = await store.read_model_position(task_list.model)
        archived = request.query_params.get("archived") == "1"  # else they are left out
        rows: list[dict[str, Any]] = []
        after = ""
        while len(rows) < LIST_LIMIT:
            page = await store.read_model_page(task_list.model, after=after, limit=500)
            rows += [list_row(row) for _, row in page if archived or not row.get("archived")]
            if len(page) < 500:
                break
            after = page[-1][0]
        rows.sort(key=lambda row: row["created_at"], reverse=True)
        return templates.TemplateResponse(request, "index.html", {
            "rows": rows[:LIST_LIMIT],
            "truncated": len(rows) > LIST_LIMIT,
            "statuses": model.STATUSES,
            "status": request.query_params.get("status", ""),
            "query": request.query_params.get("q", ""),
            "needs_me": request.query_params.get("attention") == "1",
            "archived": archived,
            "event_types": model.task_event_types(),
            "after": position,
            "nodes": await nodes(),
        })

    async def row(request: Request) -> Response:
        state = await task_or_none(request)
        if state is None:
            return not_found(request, request.path_params["task_id"])
        return templates.TemplateResponse(request, "_row.html", {
            "row": model.list_row(view_of(state))})

    async def pod_page(request: Request) -> Response:
        version = version_param(request)
        if isinstance(version, str):
            return not_found(request, f"version {version}", "version")
        live = await task_or_none(request)
        if live is None:
            return not_found(request, request.path_params["task_id"])
        state = live
        if version is not None:
            if version > state.version:
                return not_found(request, f"version {version}", "version")
            state = await store.load(state.id, version)
        return await render_state(request, "pod.html", state, version, {
            "head": await store.version(state.id) if version is not None else state.version,
            "task_event_types": model.task_event_types(),
            "run_event_types": model.run_event_types(),
        }, live)

    async def memory_fragment(request: Request) -> Response:
        state = await task_or_none(request)
        if state is None:
            return not_found(request, request.path_params["task_id"])
        memory = memory_of(request)
        if request.query_params.get("fresh") and memory is not None:
            with anyio.move_on_after(MEMORY_WAIT):
                try:
                    await memory.wait_for(await store.head_position())
                except StoreError:
                    pass  # the panel says so when memory cannot be read
        return templates.TemplateResponse(request, "_memory.html", {
            "memory": await memory_panel(memory, state, view_of(state),
                                         await events_of(state.id), memory_query(request))})

    async def state_fragment(request: Request) -> Response:
        version = version_param(request)
        if isinstance(version, str):
            return not_found(request, f"version {version}", "version")
        # ?after=N (the page saw a child's event at log position N): its row first.
        after = whole_number(request.query_params.get("after") or "")
        if after:
            with anyio.move_on_after(2):
                await task_list.wait_for(after)
        state = await task_or_none(request, version)
        if state is None:
            return not_found(request, request.path_params["task_id"])
        return await render_state(request, "_state.html", state, version, {})

    async def unknown_page(request: Request) -> Response:
        path = request.url.path
        if path.startswith(("/api/", "/static/")) or "text/html" not in request.headers.get(
                "accept", ""):
            raise HTTPException(404)
        return not_found(request, path, "page")

    return [
        Route("/", task_list_page),
        Route("/pods/{task_id}", pod_page),
        Route("/pods/{task_id}/row", row),
        Route("/pods/{task_id}/state", state_fragment),
        Route("/pods/{task_id}/memory", memory_fragment),
        *analytics_page.routes(),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        # Last: any other page a browser asks for is an HTML 404 (the API's stay JSON).
        Route("/{path:path}", unknown_page, methods=["GET", "HEAD"]),
    ]


def panel(view: dict[str, Any], events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """What the state panel of a pod page shows, from the task's view and its events (up to
    the same version)."""
    spec = model.latest_artifact(view, "spec")
    plan = model.latest_artifact(view, "plan")
    allowed = set(model.allowed_commands(view))
    return {
        "task": view,
        "allowed": allowed,
        "forward": model.way_forward(view, allowed),
        "runs": model.runs_of(events or [], view),
        "review": model.gate_review(events or [], view),
        "spec_history": model.spec_history(events or [], view),
        "answered": model.answered_questions(view),
        "spec": spec["content"] if spec else view.get("description", ""),
        "spec_from": spec,
        "plan": plan,
        "timeline": model.timeline(view),
        "board": model.job_board(view),
        "usage": model.usage_of(view),
        "has_usage": bool((view.get("usage") or {}).get("runs")),
        "questions": model.open_questions(view),
        "updates": model.pending_updates(view),
        "workspaces": model.items(view.get("workspaces")),
        "learnings": model.items(view.get("learnings")),
        "artifacts": [a for a in model.items(view.get("artifacts"))
                      if a.get("name") not in ("spec", "plan")],
        "backlog_tree": swarm.tree(view),
        "children_board": swarm.board(view),
        "backlog_graph": backlog_graph.layout(view),
        "counts": swarm.counts(view),
        "agent_grid": swarm.agents(view),
        "swarm_usage": view.get("swarm_usage"),
        "project": None,
        "origin": None,
        "log_position": 0,
        "travel": None,
    }


def memory_of(request: Request) -> Memory | None:
    """The server's agent memory (``create_app(memory=...)``), or ``None`` without one."""
    return getattr(request.app.state, "memory", None)


def memory_query(request: Request) -> str:
    """``?memory_q=``: what the memory panel searches for (its first 500 characters)."""
    return request.query_params.get("memory_q", "").strip()[:500]


async def memory_panel(memory: Memory | None, state: TaskState, view: dict[str, Any],
                       events: list[dict[str, Any]], query: str) -> dict[str, Any]:
    """What the memory panel of ``state``'s page shows (``_memory.html``): the memories each
    of its runs was given (``events``: the task's, as JSON) and, with ``query``, the memories
    of its scopes most useful for it; or why agent memory is off (``off``)."""
    shown: dict[str, Any] = {
        "task_id": str(state.id), "version": state.version, "query": query,
        "scopes": scopes_of(state), "off": None, "runs": [], "earlier_runs": 0,
        "results": None, "problem": None,
    }
    if memory is None:
        return {**shown, "off": "Agent memory is off on this server: agents run without "
                                "it, and there is nothing to show or search."}
    if memory.problem is not None:
        return {**shown, "off": f"Agent memory is off: {memory.problem}. Agents run "
                                "without it until this is fixed."}
    runs = memory_page.memory_runs(events, view)
    shown["earlier_runs"] = max(0, len(runs) - memory_page.MEMORY_RUNS)
    runs = runs[:memory_page.MEMORY_RUNS]
    ids = sorted({i for run in runs for i in run["ids"]})
    try:
        rows = await memory.rows(ids=ids, limit=len(ids)) if ids else []
    except StoreError as e:
        return {**shown, "off": f"Agent memory cannot be read now: {e}"}
    shown["runs"] = memory_page.memories_given(runs, rows, shown["task_id"])
    if query:
        try:
            found = await memory.search(query, shown["scopes"], limit=MEMORY_RESULTS)
        except (MemoryUnavailable, EmbedderError, StoreError, InvalidCommand) as e:
            shown["problem"] = str(e)
        else:
            shown["results"] = [memory_page.memory_item(row, shown["task_id"]) for row in found]
    return shown
