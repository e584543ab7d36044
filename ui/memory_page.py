"""What the task page's memory panel shows (``_memory.html``): the runs given memories and
each memory as a row of the read model (``projections/memory.py``) reads there."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from .page_model import items

MEMORY_RUNS = 20
"""The most runs the memory panel lists (the newest): what a run was given is in its events."""


def memory_runs(events: list[dict[str, Any]], view: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs of the task that were given memories, or none because memory could not be read
    (their ``ContextPrepared``), newest first: run, job, agent, attempt, when, the memory ids in
    prompt order (``ids``) and the ``problem``."""
    agents = {job["job_id"]: job.get("agent", "") for job in items(view.get("jobs"))}
    runs = []
    for event in events:
        if event["type"] != "ContextPrepared":
            continue
        data = event.get("data") or {}
        ids = [str(i) for i in data.get("memories") or []]
        if not ids and not data.get("memory_problem"):
            continue
        runs.append({"run_id": data.get("run_id", ""), "job_id": data.get("job_id", ""),
                     "agent": agents.get(data.get("job_id", ""), ""),
                     "attempt": data.get("attempt"), "at": event["timestamp"],
                     "version": event["version"], "ids": ids,
                     "problem": data.get("memory_problem")})
    return runs[::-1]


def memory_item(row: dict[str, Any], task_id: str) -> dict[str, Any]:
    """A memory as the panel of task ``task_id`` shows it, from its read-model row
    (``projections/memory.py``)."""
    def iso(value: Any) -> str | None:
        return value.isoformat() if isinstance(value, datetime) else value

    return {
        "id": row["id"], "kind": row.get("kind", ""), "scope": row.get("scope", ""),
        "where": scope_label(row.get("scope", ""), task_id),
        "text": row.get("text", ""), "pinned": bool(row.get("pinned")),
        "importance": float(row.get("importance") or 0.0),
        "score": float(row.get("score") or 0.0),
        "similarity": row.get("similarity"), "uses": row.get("uses") or 0,
        "created_at": iso(row.get("created_at")), "last_used_at": iso(row.get("last_used_at")),
        "forgotten": False,
    }


def scope_label(scope: str, task_id: str) -> str:
    """A memory's scope in a few words: ``repo <its last path part>``, ``this task``,
    ``project <id>`` or ``task <id>`` (ids shortened); the whole scope goes in a title."""
    kind, _, rest = scope.partition(":")
    if kind == "repo":
        name = re.split(r"[/:\\]", rest.rstrip("/\\"))[-1]
        return f"repo {name or rest}"
    if rest == task_id:
        return f"this {kind}"
    return f"{kind} {rest[:8]}" if rest else scope


def memories_given(runs: list[dict[str, Any]], rows: list[dict[str, Any]],
                   task_id: str) -> list[dict[str, Any]]:
    """Each run with the memories it was given (``memories``, in prompt order): a memory
    without a row (forgotten or evicted since) is its id alone, ``forgotten``."""
    kept = {row["id"]: memory_item(row, task_id) for row in rows}
    return [{**run, "memories": [kept.get(i) or {"id": i, "forgotten": True}
                                 for i in run["ids"]]} for run in runs]
