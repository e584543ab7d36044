"""What the pages show, shaped from a task's view (``task_state.view``) or its task-list row.

Pure functions over JSON-ready dicts, so the pages render whatever the view holds: keys that
later work adds (``usage``, ``questions``, ``artifacts``, ``learnings``, ``outbox``) are shown
when present and never required. Markdown is rendered here, with raw HTML escaped.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup

from ipa.domain import Status, TaskEvent, UnknownWorkflow, get_workflow
from ipa.domain import allowed_commands as workflow_commands
from ipa.domain.runs import RunEvent

JOB_COLUMNS = ("pending", "running", "succeeded", "failed", "dead", "cancelled")
"""The job board's columns, in the order a job moves through them."""

STATUSES = ("pending", "running", "waiting", "paused", "completed", "failed", "cancelled")

# "commonmark" with html off: any HTML in task text or agent output is shown as text, and
# markdown-it's link validation drops javascript:/vbscript:/file:/data: links.
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")


def markdown(text: Any) -> Markup:
    """``text`` rendered as HTML; raw HTML in it is escaped. Other JSON is shown as a block."""
    if text is not None and not isinstance(text, str):
        text = "```json\n" + pretty(text) + "\n```"
    return Markup(_MARKDOWN.render(text or ""))


def event_types(base: type) -> list[str]:
    """The names of every subclass of ``base`` (the SSE ``event:`` names a page listens to)."""
    names: set[str] = set()
    todo = [base]
    while todo:
        for sub in todo.pop().__subclasses__():
            names.add(sub.__name__)
            todo.append(sub)
    return sorted(names)


def task_event_types() -> list[str]:
    return event_types(TaskEvent)


def run_event_types() -> list[str]:
    return event_types(RunEvent)


def items(value: Any) -> list[Any]:
    """A collection of the view as a list (a dict keyed by id gives its values)."""
    if isinstance(value, dict):
        return list(value.values())
    return list(value or [])


def usage_of(view: dict[str, Any]) -> dict[str, Any]:
    """Tokens and cost: the view's ``usage`` when present, zeros otherwise."""
    usage = view.get("usage") or {}
    return {
        "input_tokens": usage.get("input_tokens") or 0,
        "output_tokens": usage.get("output_tokens") or 0,
        "cost_usd": usage.get("cost_usd") or 0.0,
        "runs": usage.get("runs"),
        "by_agent": usage.get("by_agent") or {},
        "by_job": usage.get("by_job") or {},
    }


def list_row(row: dict[str, Any]) -> dict[str, Any]:
    """One line of the central list from a task-list row (with its ``state``) or a task view.

    The row's own ``jobs``, ``active_agents`` and token fields win when present; otherwise they
    are computed from the state.
    """
    state = row.get("state") or row
    jobs = items(state.get("jobs"))
    usage = usage_of(state)
    counts = row.get("jobs")
    if not isinstance(counts, dict):
        counts = dict(Counter(job["status"] for job in jobs))
    agents = row.get("active_agents")
    if agents is None:
        agents = sorted({job["agent"] for job in jobs if job["status"] == "running"})
    return {
        "id": row["id"],
        "title": row.get("title") or state.get("title", ""),
        "workflow": row.get("workflow") or state.get("workflow", ""),
        "phase": row.get("phase") or state.get("phase", ""),
        "status": row.get("status") or state.get("status", ""),
        "version": row.get("version") or state.get("version", 0),
        "created_at": row.get("created_at") or state.get("created_at", ""),
        "last_activity": row.get("last_activity") or state.get("updated_at", ""),
        "error": row.get("error") or state.get("failure"),
        "jobs": {status: counts[status] for status in JOB_COLUMNS if counts.get(status)},
        "active_agents": agents if isinstance(agents, list) else [],
        "input_tokens": row.get("input_tokens", usage["input_tokens"]) or 0,
        "output_tokens": row.get("output_tokens", usage["output_tokens"]) or 0,
        "cost_usd": row.get("cost_usd", usage["cost_usd"]) or 0.0,
        "allowed": set(allowed_commands(state)),
    }


def allowed_commands(view: dict[str, Any]) -> list[str]:
    """The view's ``allowed_commands`` (a task-list row's state lacks them: computed then)."""
    if "allowed_commands" in view:
        return list(view["allowed_commands"])
    try:
        workflow = get_workflow(view["workflow"])
        return workflow_commands(workflow, view["phase"], Status(view["status"]))
    except (KeyError, ValueError, UnknownWorkflow):
        return []


def timeline(view: dict[str, Any]) -> list[dict[str, Any]]:
    """The workflow's phases with when each was (last) entered and which one is current."""
    entered: dict[str, list[str]] = {}
    for visit in view.get("phase_history") or []:
        entered.setdefault(visit["phase"], []).append(visit["entered_at"])
    try:
        phases = [(p.name, p.gated) for p in get_workflow(view["workflow"]).phases]
    except UnknownWorkflow:
        phases = [(name, False) for name in entered]
    current = view.get("phase")
    names = [name for name, _ in phases]
    at = names.index(current) if current in names else -1
    return [
        {
            "phase": name,
            "gated": gated,
            "entered": entered.get(name, []),
            "state": "current" if i == at else ("done" if i < at or name in entered else "ahead"),
        }
        for i, (name, gated) in enumerate(phases)
    ]


def job_board(view: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The jobs by status, one column per status in :data:`JOB_COLUMNS` order."""
    columns: dict[str, list[dict[str, Any]]] = {status: [] for status in JOB_COLUMNS}
    for job in items(view.get("jobs")):
        columns.setdefault(job["status"], []).append(job)
    return list(columns.items())


def latest_artifact(view: dict[str, Any], name: str) -> dict[str, Any] | None:
    found = [a for a in items(view.get("artifacts")) if a.get("name") == name]
    return found[-1] if found else None


def open_questions(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [q for q in items(view.get("questions")) if q.get("answer") is None]


def pending_updates(view: dict[str, Any]) -> list[dict[str, Any]]:
    """Outbox entries waiting for a person's approval (issue #6; absent until it lands)."""
    return [
        entry
        for entry in items(view.get("outbox"))
        if entry.get("status") in ("pending_approval", "awaiting_approval", "needs_approval")
        or (entry.get("approval") == "required" and entry.get("status") == "pending")
    ]


_ID_KEYS = ("job_id", "workspace_id", "question_id", "update_id", "run_id", "name")
_MISSING = object()


def changes(before: Any, after: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """What differs between two JSON values, as (path, before, after) at the deepest level that
    still reads well: dicts by key, lists of records by their id (``jobs[build].status``),
    other lists by position. A side that has no value there is ``None``."""
    if before == after:
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in [*before, *(k for k in after if k not in before)]:
            found += changes(before.get(key, _MISSING), after.get(key, _MISSING),
                             f"{path}.{key}" if path else str(key))
        return found
    if isinstance(before, list) and isinstance(after, list):
        key = _record_key(before + after)
        if key is not None:
            old = {str(item[key]): item for item in before}
            new = {str(item[key]): item for item in after}
            found = []
            for name in [*old, *(n for n in new if n not in old)]:
                found += changes(old.get(name, _MISSING), new.get(name, _MISSING),
                                 f"{path}[{name}]")
            return found
        if len(before) == len(after) and before and all(
                isinstance(v, dict) for v in before + after):
            found = []
            for i, (a, b) in enumerate(zip(before, after, strict=True)):
                found += changes(a, b, f"{path}[{i}]")
            return found
        if after[: len(before)] == before:  # appended to
            return [(f"{path}[{i}]", None, value)
                    for i, value in enumerate(after[len(before):], len(before))]
    return [(path, None if before is _MISSING else before, None if after is _MISSING else after)]


def _record_key(items: list[Any]) -> str | None:
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    for key in _ID_KEYS:
        if all(key in item for item in items):
            return key
    return None


def pretty(value: Any) -> str:
    """``value`` as indented JSON (strings as they are)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def when(value: str | None) -> str:
    """An ISO time as ``YYYY-MM-DD HH:MM:SS`` (UTC as stored); empty for none."""
    if not value:
        return ""
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return value


def money(value: float | int | None) -> str:
    return f"${(value or 0):,.4f}" if (value or 0) < 1 else f"${value:,.2f}"


def number(value: int | None) -> str:
    return f"{value or 0:,}"
