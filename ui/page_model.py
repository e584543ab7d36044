"""What the pages show, shaped from a task's view (``task_state.view``) or its task-list row.

Pure functions over JSON-ready dicts, so the pages render whatever the view holds: keys that
later work adds (``usage``, ``questions``, ``artifacts``, ``learnings``, ``outbox``) are shown
when present and never required. Markdown is rendered here, with raw HTML escaped.
"""

from __future__ import annotations

import json
import re
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
FINISHED = ("completed", "failed", "cancelled")
"""The statuses of a task a person may archive (``domain/archive.py``)."""

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
        "attention": attention_kind(row),
        "archived": bool(row.get("archived", state.get("archived"))),
        "finished": (row.get("status") or state.get("status")) in FINISHED,
        "forked_from": row.get("forked_from", state.get("forked_from")),
        "cloned_from": row.get("cloned_from", state.get("cloned_from")),
    }


def attention_kind(row: dict[str, Any]) -> str | None:
    """What a task needs from a person, as its kind (``gate``, ``job_dead``...), or ``None``:
    a task-list row carries the kind, a task view the whole ``attention``."""
    found = row.get("attention", (row.get("state") or {}).get("attention"))
    if isinstance(found, dict):
        found = found.get("kind")
    return found if isinstance(found, str) and found else None


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
        columns.setdefault(job["status"], []).append(job)  # held, skipped...: when present
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
    """An ISO time as ``YYYY-MM-DD HH:MM:SS UTC`` (as stored); empty for none."""
    if not value:
        return ""
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return value


def stamp(value: str | None, relative: bool = True) -> Markup:
    """A ``<time>`` for an ISO time: UTC as rendered, the browser's zone and a relative age
    once ``ipa.js`` formats it."""
    if not value:
        return Markup("")
    rel = ' data-rel=""' if relative else ""
    return Markup('<time datetime="{}"{}>{}</time>').format(value, Markup(rel), when(value))


def duration(start: str | None, end: str | None) -> str:
    """How long from ``start`` to ``end`` (ISO times), e.g. ``4.2 s``, ``3 min 5 s``."""
    try:
        seconds = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except (TypeError, ValueError):
        return ""
    return seconds_text(seconds)


def seconds_text(seconds: float) -> str:
    if seconds < 60:
        return f"{max(seconds, 0):.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def money(value: float | int | None) -> str:
    return f"${(value or 0):,.4f}" if (value or 0) < 1 else f"${value:,.2f}"


def number(value: int | None) -> str:
    return f"{value or 0:,}"


# -- what the task's events tell beyond its view ------------------------------------------------

RUN_OUTCOMES = {
    "JobSucceeded": "succeeded",
    "JobRateLimited": "rate limited",
    "QuestionAsked": "asked a question",
}


def gate_review(events: list[dict[str, Any]], view: dict[str, Any]) -> dict[str, Any]:
    """What a person approves at the current phase's gate: the artifacts the phase produced
    (the newest of each name) and each job's latest verification in the phase (from the
    events since the phase was last entered)."""
    phase = view.get("phase")
    artifacts: dict[str, dict[str, Any]] = {}
    for artifact in items(view.get("artifacts")):
        if artifact.get("phase") == phase and artifact.get("name"):
            artifacts[artifact["name"]] = artifact
    entered = max((i for i, e in enumerate(events) if e["type"] == "PhaseEntered"
                   and (e.get("data") or {}).get("phase") == phase), default=-1)
    verified: dict[str, dict[str, Any]] = {}
    for event in events[entered + 1:]:
        if event["type"] in ("VerificationPassed", "VerificationFailed"):
            data = event.get("data") or {}
            verified[data.get("job_id", "")] = {
                "job_id": data.get("job_id", ""), "passed": event["type"] == "VerificationPassed",
                "checks": [c for c in items(data.get("checks")) if isinstance(c, dict)],
                "at": event["timestamp"],
            }
    return {"artifacts": list(artifacts.values()), "verifications": list(verified.values())}


def runs_of(events: list[dict[str, Any]], view: dict[str, Any]) -> list[dict[str, Any]]:
    """Every agent run of the task as of its last event in ``events`` (JSON events, in version
    order), newest first: its job, agent, attempt, start and end, and its own outcome
    (``running``, ``succeeded``, ``failed``, ``interrupted``, ``asked a question``,
    ``rate limited``, ``cancelled``), whatever its job did afterwards."""
    agents = {job["job_id"]: job.get("agent", "") for job in items(view.get("jobs"))}
    runs: dict[str, dict[str, Any]] = {}
    current: dict[str, str] = {}  # job id → its run that is still going
    for event in events:
        kind, data = event["type"], event.get("data") or {}
        job_id, run_id = data.get("job_id"), data.get("run_id")
        if kind == "JobQueued" and job_id:
            agents.setdefault(job_id, data.get("agent", ""))
        if kind == "JobStarted" and run_id:
            runs[run_id] = {
                "run_id": run_id, "job_id": job_id, "agent": agents.get(job_id, ""),
                "attempt": data.get("attempt"), "started_at": event["timestamp"],
                "ended_at": None, "outcome": "running", "reason": None,
                "version": event["version"],
            }
            current[job_id] = run_id
            continue
        if run_id is None and job_id in current and kind in (
                "JobCancelled", "JobHeld", "JobInterrupted", "JobSkipped"):
            run_id = current[job_id]
        if kind == "TaskCancelled":
            ended = list(current.values())
        elif run_id in runs and runs[run_id]["outcome"] == "running":
            ended = [run_id]
        else:
            continue
        for rid in ended:
            run = runs[rid]
            if kind == "JobFailed":
                outcome = "interrupted" if data.get("interrupted") else "failed"
            elif kind in ("JobCancelled", "TaskCancelled", "JobSkipped"):
                outcome = "cancelled"
            elif kind in ("JobHeld", "JobInterrupted"):
                outcome = "interrupted"
            elif kind in RUN_OUTCOMES:
                outcome = RUN_OUTCOMES[kind]
            else:
                continue  # usage, artifacts, verification...: the run goes on
            run.update(outcome=outcome, ended_at=event["timestamp"],
                       reason=data.get("reason") or data.get("question"))
            current.pop(run["job_id"], None)
    return sorted(runs.values(), key=lambda run: run["version"], reverse=True)


def spec_history(events: list[dict[str, Any]], view: dict[str, Any]) -> dict[str, Any]:
    """The description as created (with who and when) and each later edit (without the
    events, the view's description stands for the original)."""
    original: dict[str, Any] | None = None
    if view.get("description"):
        original = {"description": view["description"], "actor": view.get("created_by"),
                    "at": view.get("created_at"), "version": 1}
    edits: list[dict[str, Any]] = []
    for event in events:
        data = event.get("data") or {}
        if event["type"] == "TaskCreated":
            original = {"description": data.get("description", ""), "actor": event["actor"],
                        "at": event["timestamp"], "version": event["version"]}
        elif event["type"] == "SpecUpdated":
            edits.append({"description": data.get("description", ""), "actor": event["actor"],
                          "at": event["timestamp"], "version": event["version"]})
    return {"original": original, "edits": edits}


def answered_questions(view: dict[str, Any]) -> list[dict[str, Any]]:
    return [q for q in items(view.get("questions")) if q.get("answer") is not None]


STOPPED_JOBS = ("dead", "held", "cancelled")
"""Job statuses that wait for a person (or, cancelled, stop their phase's work)."""

JOB_ACTIONS = ("retry_job", "skip_job", "cancel_job")


def way_forward(view: dict[str, Any], allowed: set[str]) -> dict[str, Any] | None:
    """What the page offers a task that needs a person: the view's ``attention`` when it has
    one, else one made up from its stopped jobs (dead, held or cancelled) and the task
    commands allowed now. ``None`` when nothing waits for a person."""
    status = view.get("status")
    if status in ("completed", "cancelled"):
        return None
    attention = view.get("attention")
    phases = earlier_phases(view)
    if isinstance(attention, dict):
        actions = list(attention.get("actions") or [])
        if attention.get("kind") in ("job_dead", "job_held", "repository"):
            actions += [name for name in ("return_to_phase", "request_approval")
                        if name in allowed and name not in actions
                        and (name != "return_to_phase" or phases)]
        return {
            "kind": attention.get("kind") or "attention",
            "message": attention.get("message") or "This task needs you.",
            "job_id": attention.get("job_id"),
            "phase": attention.get("phase"),
            "actions": actions,
            "phases": phases,
            "from_view": True,
        }
    stopped = [job for job in items(view.get("jobs")) if job.get("status") in STOPPED_JOBS]
    if not stopped:
        return None
    job = stopped[-1]
    actions = []
    if job["status"] in ("dead", "held"):
        actions += ["retry_job", "skip_job", "cancel_job"]
    actions += [name for name in ("return_to_phase", "request_approval")
                if name in allowed and (name != "return_to_phase" or phases)]
    what = {"dead": "gave up", "held": "is held for you", "cancelled": "was cancelled"}
    message = f"Job {job['job_id']} {what[job['status']]}"
    if job.get("last_error") and job["status"] != "cancelled":
        message += f": {job['last_error']}"
    return {"kind": f"job_{job['status']}", "message": message + ".", "job_id": job["job_id"],
            "phase": job.get("phase"), "actions": actions, "phases": phases,
            "from_view": False}


def earlier_phases(view: dict[str, Any]) -> list[str]:
    """The workflow's phases before the current one (where ``return_to_phase`` can go)."""
    names = [step["phase"] for step in timeline(view)]
    current = view.get("phase")
    return names[: names.index(current)] if current in names else []


def job_notes(job: dict[str, Any], task_status: str | None) -> dict[str, Any]:
    """What a job card says, true to the job's latest state only: the error only while the job
    is failed, dead or held; the retry time only while a running task waits for it."""
    status = job.get("status")
    return {
        "error": job.get("last_error") if status in ("failed", "dead", "held") else None,
        "retry_at": job.get("retry_at") if status == "failed" and task_status == "running"
        else None,
    }


def requeue(job: dict[str, Any], view: dict[str, Any]) -> dict[str, Any] | None:
    """The ``queue_job`` body that queues a cancelled job's work again, or ``None`` when it
    cannot be: the task is over, the job's phase is behind the task, a job it depends on is
    cancelled too, or its work is queued again already (a copy that is not cancelled).

    The domain never reopens a cancelled job (``retry_job`` takes dead and held jobs only),
    so this is a copy under a new id (``<id>-again``, ``<id>-again-2``...) with the same
    agent, phase, priority, dependencies, timeout, attempts and spec.
    """
    if job.get("status") != "cancelled" or view.get("status") in ("completed", "cancelled"):
        return None
    jobs = {j["job_id"]: j for j in items(view.get("jobs"))}
    if any((jobs.get(d) or {}).get("status") == "cancelled" for d in job.get("depends_on") or []):
        return None
    names = [step["phase"] for step in timeline(view)]
    phase, current = job.get("phase"), view.get("phase")
    if phase in names and current in names and names.index(phase) < names.index(current):
        return None
    base = re.sub(r"-again(-\d+)?$", "", job["job_id"])
    copy = re.compile(re.escape(base) + r"(-again(-\d+)?)?")
    if any(copy.fullmatch(other) and j["status"] != "cancelled" for other, j in jobs.items()):
        return None  # its work is queued again already
    job_id, n = f"{base}-again", 2
    while job_id in jobs:
        job_id, n = f"{base}-again-{n}", n + 1
    return {
        "job_id": job_id, "agent": job["agent"], "phase": phase,
        "priority": job.get("priority", 0), "depends_on": list(job.get("depends_on") or []),
        "timeout_seconds": job.get("timeout_seconds", 3600.0),
        "max_attempts": job.get("max_attempts", 5), "spec": job.get("spec") or {},
    }
