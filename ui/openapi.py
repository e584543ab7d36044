"""``GET /openapi.json``: the API described in OpenAPI 3.1, written by hand here.

:data:`OPERATIONS` lists every route of the API (pages excepted) with its method; a test
checks it against the app's routes in both directions, so a route without a description (or a
description without a route) fails the suite. The command route ``/api/tasks/{task_id}/{command}``
is described once per command it accepts (``ipa.ui.api.COMMANDS``: a person's), each with its
body's fields, so the description lists exactly what is accepted.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from dataclasses import MISSING, fields
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from ipa.domain import Pause, SetRepo

from .analytics_api import MAX_GROUPS, MAX_TOP
from .api import COMMANDS
from .memory_api import KINDS, MAX_PAGE, QUERY_MAX
from .webhooks_api import DELIVERY_STATUSES, URL_MAX, WEBHOOK_EVENT_TYPES
from .webhooks_api import MAX_PAGE as WEBHOOK_PAGE

VERSION = "0.1.0"

_ERROR = {"$ref": "#/components/schemas/Error"}
_TASK = {"$ref": "#/components/schemas/Task"}
_EVENT = {"$ref": "#/components/schemas/Event"}
_MEMORY = {"$ref": "#/components/schemas/Memory"}
_ANALYTICS = {"$ref": "#/components/schemas/Analytics"}
_NODE_ID = {"type": ["string", "null"],
            "description": "the node that holds the task's lease now (null: none does)"}


def _page(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": ["items", "next_cursor"], "properties": {
        "items": {"type": "array", "items": item},
        "next_cursor": {"type": ["string", "null"],
                        "description": "pass back as ?cursor= for the next page"}}}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    words = {400: "bad input", 401: "no or wrong API key",
             403: "refused (a command ipa records itself; a request from another origin)",
             404: "not found",
             409: "conflict (stale expected_version, command not allowed now, no pod)",
             413: "body too large", 415: "not a JSON body", 422: "refused input",
             429: "too many attempts",
             503: "shutting down, store unavailable or memory off (memory_unavailable)"}
    return {str(s): _json(_ERROR, words[s]) for s in statuses}


def _query(name: str, description: str, kind: str | dict[str, Any] = "string") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": kind} if isinstance(kind, str) else kind}


def _path(name: str, description: str,
          schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or {"type": "string"}}


# Numbers in queries, paths and headers are ASCII digits (errors.whole_number): described as
# integers in their range, cursors as the digit strings the API hands out.
_UUID = {"type": "string", "format": "uuid"}
_ID = {"type": "integer", "minimum": 0, "maximum": 2**62}
_VERSION = {"type": "integer", "minimum": 1, "maximum": 2**62}
_UUID_TEXT = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_REASON = {"type": "string", "maxLength": QUERY_MAX}
TASK_ID = _path("task_id", "the task's id (a UUID)", _UUID)
MEMORY_ID = _path("memory_id", "the memory's id (a UUID)", _UUID)
RUN_ID = _path("run_id", "the run's id (a UUID)", _UUID)


def _limit(most: int, default: int) -> dict[str, Any]:
    return _query("limit", f"items per page (default {default})",
                  {"type": "integer", "minimum": 1, "maximum": most})


def _cursor(digits: int) -> dict[str, Any]:
    return _query("cursor", "from next_cursor",
                  {"type": "string", "pattern": f"^[0-9]{{1,{digits}}}$"})


PAGE = [_limit(500, 100), _cursor(12)]
EVENTS_PAGE = [_query("after", "after this version", _ID), _limit(500, 100), _cursor(18)]
SSE = {"description": "an SSE stream", "content": {"text/event-stream": {
    "schema": {"type": "object", "properties": {
        "id": {"type": "string"}, "event": {"type": "string"},
        "data": {"type": "string", "description": "the event's JSON (see Event)"}}}}}}
RESUME = [
    {"name": "Last-Event-ID", "in": "header", "required": False, "schema": _ID,
     "description": "resume right after this id"},
    _query("after", "resume right after this id (for clients that cannot set headers)", _ID),
]
_INTEGER = {"type": "integer", "minimum": -(2**63 - 1), "maximum": 2**63 - 1}
_SIMPLE: dict[Any, dict[str, Any]] = {bool: {"type": "boolean"}, int: _INTEGER,
                                      float: {"type": "number"}, str: {"type": "string"},
                                      dict: {"type": "object"}}


def _field(hint: Any) -> dict[str, Any]:
    """The JSON schema of a command field of type ``hint`` (what ``errors.build`` checks)."""
    args = typing.get_args(hint)
    if type(None) in args:
        inner = _field(next(a for a in args if a is not type(None)))
        return {**inner, "type": [inner["type"], "null"]} if "type" in inner else {}
    origin = typing.get_origin(hint) or hint
    if origin in _SIMPLE:
        return dict(_SIMPLE[origin])
    if origin in (list, tuple, Sequence):
        return {"type": "array", "items": _field(args[0]) if args else {}}
    return {}


EXPECTED_VERSION = {"type": ["integer", "null"], "minimum": 1, "maximum": 2**63 - 1,
                    "description": "refuse (409) if the task moved past it; null: no check"}


def command_body(command_type: type) -> dict[str, Any]:
    """A command's body: its fields (those without a default required), ``expected_version``
    and, for ``pause``, ``interrupt``; any other field is a 400."""
    hints = typing.get_type_hints(command_type)
    properties = {f.name: _field(hints[f.name]) for f in fields(command_type)}
    properties["expected_version"] = EXPECTED_VERSION
    if command_type is Pause:
        properties["interrupt"] = {"type": "boolean", "description": "cut running agents short"}
    required = [f.name for f in fields(command_type)
                if f.default is MISSING and f.default_factory is MISSING]
    body: dict[str, Any] = {"type": "object", "properties": properties,
                            "additionalProperties": False}
    if required:
        body["required"] = required
    return body


def _command(command_type: type) -> dict[str, Any]:
    summary = (command_type.__doc__ or command_type.name).strip().splitlines()[0]
    statuses = [400, 401, 403, 404, 409, 413, 415, 503]
    if command_type is SetRepo:
        statuses.append(422)  # the repository is refused, as at creation
    operation = _op(f"{command_type.name}: {summary}",
                    {"200": _json(_TASK), **_errors(*sorted(statuses))},
                    parameters=[TASK_ID], body=command_body(command_type))
    if any(f.default is MISSING and f.default_factory is MISSING
           for f in fields(command_type)):
        operation["requestBody"]["required"] = True
    return {"post": operation}


def _op(summary: str, responses: dict[str, Any], *, parameters: list | None = None,
        body: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": False,
                             "content": {"application/json": {"schema": body}}}
    return op


_GROUP = "(day|hour|project|task|agent_type|model)"


def _analytics_schema() -> dict[str, Any]:
    sums = {"records": {"type": "integer", "description": "UsageRecorded events"},
            "runs": {"type": "integer", "description": "distinct runs"},
            **{name: {"type": "integer"} for name in (
                "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")},
            "cost_usd": {"type": "number"}}
    nullable = {"type": ["string", "null"]}
    return {"type": "object", "required": ["from", "to", "group_by", "position", "totals",
                                           "groups", "more", "top_runs", "budgets"],
            "properties": {
                "from": {"type": "string", "format": "date-time"},
                "to": {"type": "string", "format": "date-time",
                       "description": "the period's end (not included)"},
                "group_by": {"type": "array", "items": {"type": "string"}},
                "position": {"type": "integer",
                             "description": "the log position the figures include"},
                "totals": {"type": "object", "required": list(sums), "properties": sums},
                "groups": {"type": "array", "items": {
                    "type": "object", "required": ["key", "titles", *sums],
                    "properties": {
                        "key": {"type": "object", "additionalProperties": nullable,
                                "description": "the value of each group_by key (day: "
                                               "YYYY-MM-DD; project null: lone tasks)"},
                        "titles": {"type": "object", "additionalProperties": nullable,
                                   "description": "the task's title of a project/task key"},
                        **sums}}},
                "more": {"type": "boolean", "description": "groups were cut at limit"},
                "top_runs": {"type": "array", "items": {
                    "type": "object", "required": ["task_id", "run_id", "job_id",
                                                   "agent_type", "model", "at", *sums],
                    "properties": {
                        "task_id": {"type": "string"}, "title": nullable,
                        "run_id": {"type": "string"}, "job_id": {"type": "string"},
                        "agent_type": {"type": "string"}, "model": {"type": "string"},
                        "at": {"type": "string", "format": "date-time",
                               "description": "its first usage record's time"},
                        "project_id": nullable, "project_title": nullable, **sums}}},
                "budgets": {"type": "array", "description": "tasks with a budget, the largest "
                            "share used first (their whole spend, not the period's)", "items": {
                                "type": "object",
                                "required": ["task_id", "title", "budget_usd", "spent_usd",
                                             "own_cost_usd", "children_cost_usd", "share"],
                                "properties": {
                                    "task_id": {"type": "string"}, "title": {"type": "string"},
                                    "workflow": {"type": "string"}, "parent_id": nullable,
                                    "budget_usd": {"type": "number"},
                                    "spent_usd": {"type": "number"},
                                    "own_cost_usd": {"type": "number"},
                                    "children_cost_usd": {"type": "number"},
                                    "share": {"type": ["number", "null"],
                                              "description": "spent / budget"}}}}}}


OPERATIONS: dict[str, dict[str, dict[str, Any]]] = {
    "/healthz": {"get": _op("Liveness and the log position", {"200": _json({
        "type": "object", "properties": {"status": {"type": "string"},
                                         "log_position": {"type": "integer"}}})})},
    "/metrics": {"get": _op("Prometheus metrics (text format)", {"200": {
        "description": "text/plain; version=0.0.4",
        "content": {"text/plain": {"schema": {"type": "string"}}}}, **_errors(401)})},
    "/openapi.json": {"get": _op("This description", {"200": _json({"type": "object"})})},
    "/login": {
        "get": _op("A small HTML form to log in with an API key", {"200": {
            "description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}),
        "post": _op("Log in with an API key: sets the session cookie",
                    {"200": _json({"type": "object"}), "303": {"description": "form: redirect"},
                     **_errors(400, 401, 403, 413, 415, 429)},
                    body={"type": "object", "required": ["key"],
                          "properties": {"key": {"type": "string", "minLength": 1}}}),
    },
    "/logout": {"post": _op("Drop the session cookie", {"200": _json({"type": "object"})})},
    "/api/tasks": {
        "get": _op("The task list (one summary row per task), by id",
                   {"200": _json(_page({"type": "object", "properties": {"node": _NODE_ID}})),
                    **_errors(400, 401)},
                   parameters=[_limit(500, 50), _query("cursor", "from next_cursor", _UUID),
                               _query("attention", "1: only the tasks that need a person",
                                      {"type": "string", "enum": ["0", "1"]}),
                               _query("parent", "only the child tasks of this project", _UUID),
                               _query("archived", "0 (default): leave archived tasks out; 1: "
                                      "list them too; only: only them",
                                      {"type": "string", "enum": ["0", "1", "only"]})]),
        "post": _op("Create a task; its pod starts at once (422: its repo is refused)",
                    {"201": _json(_TASK), **_errors(400, 401, 413, 422)},
                    body={"type": "object", "required": ["title"], "additionalProperties": False,
                          "properties": {"title": {"type": "string"},
                                         "description": {"type": "string"},
                                         "workflow": {"type": "string",
                                                      "enum": ["task", "project"]},
                                         "repo": {"type": ["string", "null"]},
                                         "base_branch": {"type": ["string", "null"]}}}),
    },
    "/api/tasks/{task_id}": {"get": _op(
        "The task's state (as of ?version=N when given)",
        {"200": _json(_TASK), **_errors(400, 401, 404)},
        parameters=[TASK_ID, _query("version", "a past version", _VERSION)])},
    "/api/tasks/{task_id}/restart": {"post": _op(
        "Restart a task whose pod crashed (a failed task goes back to work); 409 pod_running "
        "when its pod runs, task_finished when the task is over",
        {"200": _json(_TASK), **_errors(400, 401, 404, 409, 413, 415, 503)},
        parameters=[TASK_ID], body={"type": "object", "additionalProperties": False,
                                    "properties": {}})},
    "/api/tasks/{task_id}/events": {"get": _op(
        "The task's events in version order", {"200": _json(_page(_EVENT)),
                                               **_errors(400, 401, 404)},
        parameters=[TASK_ID, *EVENTS_PAGE])},
    "/api/tasks/{task_id}/versions/{version}": {"get": _op(
        "Time travel: the state as of a version, what changed from the one before, the event",
        {"200": _json({"type": "object", "properties": {
            "version": {"type": "integer"}, "state": _TASK, "changed": {"type": "object"},
            "event": _EVENT}}), **_errors(400, 401, 404)},
        parameters=[TASK_ID, _path("version", "a version ≥ 1", _VERSION)])},
    "/api/tasks/{task_id}/stream": {"get": _op(
        "SSE of the task's events: id = version, event = type, data = the event's JSON",
        {"200": SSE, **_errors(400, 401, 404)}, parameters=[TASK_ID, *RESUME])},
    "/api/tasks/{task_id}/jobs": {"get": _op(
        "The task's jobs, in queue order", {"200": _json(_page({"type": "object"})),
                                            **_errors(400, 401, 404)},
        parameters=[TASK_ID, _query("status", "only jobs in this status"), *PAGE])},
    "/api/tasks/{task_id}/jobs/{job_id}": {"get": _op(
        "One job", {"200": _json({"type": "object"}), **_errors(400, 401, 404)},
        parameters=[TASK_ID, _path("job_id", "the job's id")])},
    "/api/tasks/{task_id}/jobs/{job_id}/{action}": {"post": _op(
        "retry (a dead-lettered or held job), cancel ({reason}; stops its agent at once), "
        "skip ({reason}; a dead, held or queued job, then finished for its phase) or "
        "interrupt (stops its agent and holds the job for a person)",
        {"200": _json({"type": "object"}), **_errors(400, 401, 404, 409, 413)},
        parameters=[TASK_ID, _path("job_id", "the job's id"),
                    {**_path("action", "what to do"),
                     "schema": {"type": "string",
                                "enum": ["retry", "cancel", "interrupt", "skip"]}}],
        body={"type": "object", "properties": {"reason": {"type": "string"},
                                               "expected_version": EXPECTED_VERSION}})},
    "/api/tasks/{task_id}/runs": {"get": _op(
        "The task's agent runs (from its job events), in start order",
        {"200": _json(_page({"type": "object"})), **_errors(400, 401, 404)},
        parameters=[TASK_ID, *PAGE])},
    "/api/tasks/{task_id}/artifacts": {"get": _op(
        "The task's artifacts (spec, plan, review ...), when its state has them",
        {"200": _json(_page({"type": "object"})), **_errors(400, 401, 404)},
        parameters=[TASK_ID, _query("name", "only artifacts of this name"), *PAGE])},
    "/api/tasks/{task_id}/workspaces": {"get": _op(
        "The task's workspaces (repo, branch, base_commit, commits, removed)",
        {"200": _json(_page({"type": "object"})), **_errors(400, 401, 404)},
        parameters=[TASK_ID, *PAGE])},
    "/api/tasks/{task_id}/workspaces/{workspace_id}/files": {"get": _op(
        "A directory listing or a file of a workspace at one of its commits",
        {"200": _json({"type": "object"}), **_errors(400, 401, 404)},
        parameters=[TASK_ID, _path("workspace_id", "the workspace's id"),
                    _query("path", "inside the repository; '' is the root"),
                    _query("commit", "one of the workspace's commits (default: the newest)"),
                    _limit(5000, 500), _cursor(12)])},
    "/api/tasks/{task_id}/workspaces/{workspace_id}/diff": {"get": _op(
        "The diff of a workspace from its base commit (or ?base=) to a commit",
        {"200": _json({"type": "object"}), **_errors(400, 401, 404)},
        parameters=[TASK_ID, _path("workspace_id", "the workspace's id"),
                    _query("commit", "default: the newest"), _query("base", "default: base")])},
    "/api/tasks/{task_id}/diff": {"get": _op(
        "The task's branch against its base: diff (cut at a size limit), files and stat",
        {"200": _json({"type": "object", "required": ["base", "head", "diff", "truncated",
                                                      "files", "stat"]}),
         **_errors(400, 401, 404)},
        parameters=[TASK_ID])},
    "/api/tasks/{task_id}/patch": {"get": _op(
        "git format-patch of the task's branch since its base (text/x-patch, an attachment)",
        {"200": {"description": "the patch", "content": {"text/x-patch": {
            "schema": {"type": "string"}}}}, **_errors(400, 401, 404)},
        parameters=[TASK_ID])},
    "/api/runs/{run_id}/events": {"get": _op(
        "An agent run's own events (RunStarted, RunOutput, RunFinished ...)",
        {"200": _json(_page(_EVENT)), **_errors(400, 401, 404)},
        parameters=[RUN_ID, *EVENTS_PAGE])},
    "/api/runs/{run_id}/stream": {"get": _op(
        "SSE of an agent run's events (live output): id = version",
        {"200": SSE, **_errors(400, 401)},
        parameters=[RUN_ID, *RESUME])},
    "/api/nodes": {"get": _op(
        "The nodes of the store (each ipa serve on it), self: the one answering; never paged",
        {"200": _json(_page({"$ref": "#/components/schemas/Node"})), **_errors(401, 503)})},
    "/api/memories": {"get": _op(
        "Agents' memories. With q: those of the scopes named most useful for q, best first "
        "(a scope is needed; never paged). Without: by id, of scope/kind/ids when given",
        {"200": _json(_page(_MEMORY)), **_errors(400, 401, 503)},
        parameters=[
            {**_query("q", "what to look for (not blank)",
                      {"type": "string", "minLength": 1, "maxLength": QUERY_MAX}),
             "example": "how do I run the tests"},
            {**_query("scope", "repo:<repository>, project:<task id> or task:<task id> "
                      "(repeatable)", {"type": "array", "items": {"type": "string"}}),
             "style": "form", "explode": True, "example": ["repo:/src/app"]},
            _query("kind", "only memories of this kind",
                   {"type": "string", "enum": list(KINDS)}),
            _query("ids", f"only these memories: comma-separated ids (at most {MAX_PAGE})",
                   {"type": "string", "pattern": f"^({_UUID_TEXT}(,{_UUID_TEXT})*)?$"}),
            _limit(MAX_PAGE, 20), _query("cursor", "from next_cursor (not with q)", _UUID)])},
    "/api/memories/{memory_id}": {
        "get": _op("One memory (a merged repeat's id finds the memory it was merged into)",
                   {"200": _json(_MEMORY), **_errors(401, 404, 503)}, parameters=[MEMORY_ID]),
        "delete": _op(
            "Forget a memory (a MemoryForgotten event): it leaves search and later prompts",
            {"200": _json({"type": "object", "required": ["id", "forgotten", "position"],
                           "properties": {"id": {"type": "string"},
                                          "forgotten": {"type": "boolean"},
                                          "position": {"type": "integer",
                                                       "description": "the event's"}}}),
             **_errors(400, 401, 403, 404, 413, 415, 503)},
            parameters=[MEMORY_ID, _query("reason", "why (or in the body)", _REASON)],
            body={"type": "object", "additionalProperties": False,
                  "properties": {"reason": _REASON}})},
    "/api/memories/{memory_id}/pin": {"post": _op(
        "Pin a memory (it counts as most important, never decays nor is evicted) or unpin it",
        {"200": _json({"type": "object", "required": ["id", "pinned", "position"],
                       "properties": {"id": {"type": "string"}, "pinned": {"type": "boolean"},
                                      "position": {"type": "integer"}}}),
         **_errors(400, 401, 403, 404, 413, 415, 503)},
        parameters=[MEMORY_ID],
        body={"type": "object", "additionalProperties": False,
              "properties": {"pinned": {"type": "boolean", "default": True}}})},
    "/api/analytics": {"get": _op(
        "Cost and tokens: sums of the UsageRecorded events of a period, grouped; the most "
        "expensive runs; budget use per task (400 bad_period: a malformed or absurd period)",
        {"200": _json(_ANALYTICS), **_errors(400, 401, 503)},
        parameters=[
            {**_query("group_by", "day, hour (UTC), project, task, agent_type or model, or two "
                      "joined by a comma (e.g. day,model); default day",
                      {"type": "string", "pattern": f"^{_GROUP}(,{_GROUP})?$"}),
             "example": "day"},
            {**_query("from", "ISO 8601 date (its UTC day) or date-time; default: 30 days "
                      "before to", {"type": "string", "maxLength": 64}),
             "example": "2026-11-01"},
            {**_query("to", "ISO 8601 date (its whole UTC day included) or date-time (not "
                      "included); default: now", {"type": "string", "maxLength": 64}),
             "example": "2026-11-30"},
            _query("limit", "groups at most (default 100); more: true when cut",
                   {"type": "integer", "minimum": 1, "maximum": MAX_GROUPS}),
            _query("top", "the most expensive runs listed (default 10, 0: none)",
                   {"type": "integer", "minimum": 0, "maximum": MAX_TOP})])},
    "/api/stream": {"get": _op(
        "SSE of every task's events (not the agent runs'): id = global position",
        {"200": SSE, **_errors(400, 401)}, parameters=RESUME)},
}

OPERATIONS.update({f"/api/tasks/{{task_id}}/{name}": _command(command_type)
                   for name, command_type in COMMANDS.items()})

_TITLE = {"type": ["string", "null"], "description": "the new task's (default: the source's)"}
OPERATIONS.update({  # a new task from another (lineage_api.py)
    "/api/tasks/{task_id}/clone": {"post": _op(
        "Clone: a new task with the task's description and settings (workflow, repository, "
        "budget, approval policies, max_children, sync), none of its history; its pod starts",
        {"201": _json(_TASK), **_errors(400, 401, 403, 404, 409, 413, 415, 422, 503)},
        parameters=[TASK_ID], body={"type": "object", "additionalProperties": False,
                                    "properties": {"title": _TITLE}})},
    "/api/tasks/{task_id}/fork": {"post": _op(
        "Fork: a new task from the task's state at a version, its branch at the commit the "
        "task's branch had then; 422 version_out_of_range outside 1..the task's version, 409 "
        "at a version where it had ended or failed or a project's children were at work",
        {"201": _json(_TASK), **_errors(400, 401, 403, 404, 409, 413, 415, 422, 503)},
        parameters=[TASK_ID],
        body={"type": "object", "required": ["version"], "additionalProperties": False,
              "properties": {"version": {**_VERSION, "description": "the version to fork at"},
                             "title": _TITLE}})},
})
OPERATIONS["/api/tasks/{task_id}/fork"]["post"]["requestBody"]["required"] = True

_BUNDLE = {"type": "string", "format": "binary",
           "description": "a task bundle: what GET /api/tasks/{task_id}/export answers"}
_GIT = {"type": "string", "enum": ["include", "skip"]}
OPERATIONS.update({  # export and import of tasks (transfer_api.py)
    "/api/tasks/{task_id}/export": {"get": _op(
        "The task's bundle: its events, its children's and its agent runs' (each with a hash "
        "chain), each task's state, and its branches' commits as a git bundle (an attachment; "
        "409 not_exportable when the store's audit fails)",
        {"200": {"description": "application/gzip (X-IPA-Bundle-SHA256: its SHA-256)",
                 "content": {"application/gzip": {"schema": _BUNDLE}}},
         **_errors(400, 401, 404, 409)},
        parameters=[TASK_ID, _query("git", "skip: leave the commits out", _GIT)])},
    "/api/import": {"post": {
        "summary": "Import a task bundle (all or nothing, after every check; 400 not_a_bundle, "
                   "bundle_truncated, bundle_altered; 409 task_exists, branch_exists; 422 "
                   "bundle_too_new, repository_needed, repository_refused)",
        "parameters": [_query("repo", "a local repository to fetch the bundle's branches into"),
                       _query("git", "skip: leave the bundle's commits out", _GIT)],
        "requestBody": {"required": True, "content": {"application/gzip": {"schema": _BUNDLE}}},
        "responses": {"201": _json({"type": "object", "required": [
            "task_id", "tasks", "runs", "events", "positions", "branches", "started"],
            "properties": {
                "task_id": {"type": "string"}, "tasks": {"type": "array", "items": {
                    "type": "object"}},
                "runs": {"type": "integer"}, "events": {"type": "integer"},
                "positions": {"type": "array", "items": {"type": "integer"},
                              "description": "the first and last log position written"},
                "repo": {"type": ["string", "null"]},
                "branches": {"type": "object", "additionalProperties": {"type": "string"}},
                "signed": {"type": ["boolean", "null"], "description": "the exporter's MAC "
                           "verified with this store's key (null: not checkable)"},
                "sha256": {"type": "string"},
                "started": {"type": "array", "items": {"type": "string"},
                            "description": "the unfinished tasks whose pods started"}}},
            "Created"),
            **_errors(400, 401, 403, 409, 413, 415, 422, 503)}}},
})

COMPONENTS = {
    "schemas": {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string"}, "message": {"type": "string"},
                "current_version": {"type": "integer"},
                "allowed": {"type": "array", "items": {"type": "string"}}}}}},
        "Task": {"type": "object", "required": ["id", "title", "workflow", "phase", "status",
                                                "version"], "properties": {
            "id": {"type": "string"}, "title": {"type": "string"},
            "workflow": {"type": "string"}, "phase": {"type": "string"},
            "status": {"type": "string", "enum": ["pending", "running", "waiting", "paused",
                                                  "completed", "failed", "cancelled"]},
            "version": {"type": "integer"},
            "allowed_commands": {"type": "array", "items": {"type": "string"}},
            "branch": {"type": ["object", "null"], "properties": {
                "name": {"type": "string"}, "base": {"type": "string"},
                "base_commit": {"type": "string"},
                "head_commit": {"type": ["string", "null"]}}},
            "backlog": {"type": ["object", "null"], "description": "a project's backlog",
                        "properties": {
                            "items": {"type": "array", "items": {"$ref":
                                                                 "#/components/schemas/Item"}},
                            "version": {"type": "integer"}, "phase": {"type": "string"},
                            "approved": {"type": "boolean"}}},
            "max_children": {"type": "integer", "description": "a project's children that "
                                                               "run at once"},
            "children": {"type": "array", "items": {"$ref": "#/components/schemas/Child"},
                         "description": "a project's: one per backlog item with a child task "
                                        "(not in a past version's view)"},
            "swarm_usage": {"$ref": "#/components/schemas/SwarmUsage"},
            "children_usage": {
                "type": "object", "description": "a project's: what its finished children "
                                                 "spent, counted against its budget",
                "properties": {"input_tokens": {"type": "integer"},
                               "output_tokens": {"type": "integer"},
                               "cost_usd": {"type": "number"}, "children": {"type": "integer"}}},
            "parent_id": {"type": ["string", "null"], "description": "a child task's project"},
            "item_id": {"type": ["string", "null"], "description": "a child task's item"},
            "kind": {"type": ["string", "null"],
                     "description": "the agent type that does a child task's work"},
            "archived": {"type": "boolean",
                         "description": "a person archived the finished task"},
            "forked_from": {"$ref": "#/components/schemas/Origin"},
            "cloned_from": {"$ref": "#/components/schemas/Origin"},
            "forks": {"type": "array", "items": {"$ref": "#/components/schemas/Derived"},
                      "description": "the tasks forked from this one (not in a past "
                                     "version's view)"},
            "clones": {"type": "array", "items": {"$ref": "#/components/schemas/Derived"},
                       "description": "the tasks cloned from this one (not in a past "
                                      "version's view)"},
            "node": {**_NODE_ID, "description": "the node that holds the task's lease now "
                     "(null: none does); only in GET /api/tasks/{task_id} without ?version="}},
            "additionalProperties": True},
        "Origin": {"type": ["object", "null"], "required": ["task_id", "version"],
                   "description": "the task this one was made from, at that version (null: "
                                  "none)",
                   "properties": {"task_id": {"type": "string"},
                                  "version": {"type": "integer"}}},
        "Derived": {"type": "object", "required": ["id", "title", "status", "version"],
                    "properties": {"id": {"type": "string"}, "title": {"type": "string"},
                                   "status": {"type": "string"},
                                   "version": {"type": "integer", "description": "this task's "
                                               "version it was made from"}}},
        "Node": {"type": "object", "required": ["id", "address", "started_at", "heartbeat_at",
                                                "status", "pods", "agents", "max_pods",
                                                "leases", "self"], "properties": {
            "id": {"type": "string"},
            "address": {"type": "string", "description": "its URL ('' until it listens)"},
            "started_at": {"type": "string", "format": "date-time"},
            "heartbeat_at": {"type": "string", "format": "date-time",
                             "description": "its last heartbeat (the database's clock)"},
            "status": {"type": "string", "enum": ["up", "draining", "dead", "left"]},
            "pods": {"type": "integer", "description": "pods running, at its last heartbeat"},
            "agents": {"type": "integer",
                       "description": "agents running, at its last heartbeat"},
            "max_pods": {"type": ["integer", "null"]},
            "leases": {"type": "integer", "description": "the tasks leased to it"},
            "self": {"type": "boolean", "description": "the node that answered"}}},
        "Item": {"type": "object", "required": ["id", "title", "kind", "phase", "status"],
                 "properties": {
                     "id": {"type": "string"}, "title": {"type": "string"},
                     "description": {"type": "string"}, "kind": {"type": "string"},
                     "phase": {"type": "string"}, "priority": {"type": "integer"},
                     "depends_on": {"type": "array", "items": {"type": "string"}},
                     "acceptance": {"type": "array", "items": {"type": "string"}},
                     "status": {"type": "string", "enum": [
                         "proposed", "approved", "spawned", "merging", "finished", "failed",
                         "skipped", "dropped"]},
                     "child_id": {"type": ["string", "null"]}}},
        "Child": {"type": "object", "required": ["id", "item_id", "item_status"], "properties": {
            "id": {"type": "string", "description": "the child task's id"},
            "item_id": {"type": "string"}, "title": {"type": "string"},
            "kind": {"type": "string"}, "phase": {"type": "string",
                                                  "description": "the item's phase"},
            "item_status": {"type": "string"},
            "child_status": {"type": ["string", "null"],
                             "description": "the child task's own status (task list; null "
                                            "until listed)"},
            "child_phase": {"type": ["string", "null"]},
            "cost_usd": {"type": ["number", "null"], "description": "what the child's agents "
                                                                    "spent (null until listed)"},
            "tokens": {"type": ["integer", "null"], "description": "input + output tokens"},
            "running": {"type": "array", "description": "the child's runs in flight",
                        "items": {"$ref": "#/components/schemas/RunningAgent"}}}},
        "RunningAgent": {"type": "object", "required": ["job_id", "agent", "run_id", "step"],
                         "properties": {
                             "job_id": {"type": "string"}, "agent": {"type": "string"},
                             "run_id": {"type": ["string", "null"]},
                             "started_at": {"type": ["string", "null"]},
                             "step": {"type": "string",
                                      "enum": ["reason", "act", "reflect", "verify"],
                                      "description": "the run's RARV step"},
                             "tokens": {"type": "integer",
                                        "description": "recorded for the run so far"}}},
        "Spent": {"type": "object", "required": ["tokens", "cost_usd"], "properties": {
            "tokens": {"type": "integer"}, "cost_usd": {"type": "number"},
            "count": {"type": "integer"}}},
        "SwarmUsage": {"type": "object", "description": "a project's: what its own agents, "
                       "its child tasks and each swarm of agent types spent (not in a past "
                       "version's view)",
                       "required": ["project", "children", "total", "by_swarm"], "properties": {
                           "project": {"$ref": "#/components/schemas/Spent"},
                           "children": {"$ref": "#/components/schemas/Spent"},
                           "total": {"$ref": "#/components/schemas/Spent"},
                           "by_swarm": {"type": "object", "additionalProperties": {
                               "$ref": "#/components/schemas/Spent"}}}},
        "Memory": {"type": "object", "required": [
            "id", "kind", "text", "scope", "importance", "recorded_importance", "pinned",
            "score", "uses", "seen", "created_at", "last_seen_at", "last_used_at", "task_id",
            "job_id", "run_id", "merged_ids"], "properties": {
            "id": {"type": "string"}, "kind": {"type": "string", "enum": list(KINDS)},
            "text": {"type": "string"}, "scope": {"type": "string"},
            "importance": {"type": "number", "description": "now: halved per half-life "
                                                            "without use; 1 when pinned"},
            "recorded_importance": {"type": "number"}, "pinned": {"type": "boolean"},
            "score": {"type": "number", "description": "how useful: similarity (with q), "
                                                      "importance and recency"},
            "similarity": {"type": "number", "description": "to q (only with q)"},
            "uses": {"type": "integer", "description": "runs given it"},
            "seen": {"type": "integer", "description": "times recorded (repeats merged)"},
            "created_at": {"type": "string", "format": "date-time"},
            "last_seen_at": {"type": "string", "format": "date-time"},
            "last_used_at": {"type": ["string", "null"], "format": "date-time"},
            "task_id": {"type": ["string", "null"], "description": "the task it came from"},
            "job_id": {"type": "string"}, "run_id": {"type": "string"},
            "merged_ids": {"type": "array", "items": {"type": "string"},
                           "description": "ids of repeats merged into it"}}},
        "Analytics": _analytics_schema(),
        "Event": {"type": "object", "required": ["stream_id", "version", "position", "type",
                                                 "timestamp", "actor", "data"], "properties": {
            "stream_id": {"type": "string"}, "version": {"type": "integer"},
            "position": {"type": "integer"}, "type": {"type": "string"},
            "timestamp": {"type": "string"}, "actor": {"type": "string"},
            "correlation_id": {"type": "string"},
            "causation_id": {"type": ["string", "null"]}, "data": {"type": "object"}}},
    },
    "securitySchemes": {
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        "session": {"type": "apiKey", "in": "cookie", "name": "ipa_session"},
    },
}


# Webhooks (webhooks_api.py) ------------------------------------------------------------------

_WEBHOOK = {"$ref": "#/components/schemas/Webhook"}
WEBHOOK_ID = _path("webhook_id", "the webhook's id (a UUID)", _UUID)
_WEBHOOK_EVENTS = [*WEBHOOK_EVENT_TYPES, "*"]
OPERATIONS.update({
    "/api/webhooks": {
        "get": _op("The webhooks (never paged), without their secrets",
                   {"200": _json(_page(_WEBHOOK)), **_errors(401, 503)}),
        "post": _op(
            "Register a webhook: messages of the event types named go to url, signed the "
            "Standard Webhooks way with secret (made when not given; answered this once). 422 "
            "webhook_address_refused: a loopback or private address, unless the operator "
            "allows them",
            {"201": _json({"allOf": [_WEBHOOK, {"type": "object", "required": ["secret"],
                                                 "properties": {"secret": {"type": "string"}}}]}),
             **_errors(400, 401, 403, 409, 413, 415, 422, 503)},
            body={"type": "object", "required": ["url", "events"], "additionalProperties": False,
                  "properties": {
                      "url": {"type": "string", "maxLength": URL_MAX,
                              "description": "http(s), no credentials"},
                      "events": {"type": "array", "minItems": 1,
                                 "items": {"type": "string", "enum": _WEBHOOK_EVENTS}},
                      "secret": {"type": "string",
                                 "description": "whsec_ + base64 of 24 to 64 bytes"}}}),
    },
    "/api/webhooks/{webhook_id}": {
        "get": _op("One webhook", {"200": _json(_WEBHOOK), **_errors(401, 404, 503)},
                   parameters=[WEBHOOK_ID]),
        "delete": _op(
            "Remove a webhook (a WebhookRemoved event): nothing more is sent to it",
            {"200": _json({"type": "object", "required": ["id", "removed", "position"],
                           "properties": {"id": {"type": "string"},
                                          "removed": {"type": "boolean"},
                                          "position": {"type": "integer"}}}),
             **_errors(400, 401, 403, 404, 413, 415, 503)},
            parameters=[WEBHOOK_ID],
            body={"type": "object", "additionalProperties": False, "properties": {}}),
    },
    "/api/webhooks/{webhook_id}/enable": {"post": _op(
        "Enable a webhook ipa disabled after failed deliveries (its waiting deliveries go out)",
        {"200": _json(_WEBHOOK), **_errors(400, 401, 403, 404, 413, 415, 503)},
        parameters=[WEBHOOK_ID],
        body={"type": "object", "additionalProperties": False, "properties": {}})},
    "/api/webhooks/{webhook_id}/deliveries": {"get": _op(
        "The webhook's deliveries, newest first: status, attempts, last status code, error, "
        "duration and latency",
        {"200": _json(_page({"$ref": "#/components/schemas/Delivery"})),
         **_errors(400, 401, 404, 503)},
        parameters=[WEBHOOK_ID,
                    _query("status", "only deliveries in this status",
                           {"type": "string", "enum": list(DELIVERY_STATUSES)}),
                    _limit(WEBHOOK_PAGE, 50), _cursor(18)])},
})

_TIME = {"type": ["string", "null"], "format": "date-time"}
COMPONENTS["schemas"].update({
    "Webhook": {"type": "object", "required": [
        "id", "url", "events", "enabled", "status", "consecutive_failures"], "properties": {
        "id": {"type": "string"}, "url": {"type": "string"},
        "events": {"type": "array", "items": {"type": "string", "enum": _WEBHOOK_EVENTS}},
        "enabled": {"type": "boolean"},
        "status": {"type": "string", "enum": ["active", "disabled"]},
        "created_at": _TIME, "created_by": {"type": ["string", "null"]},
        "consecutive_failures": {"type": "integer",
                                 "description": "failed attempts in a row (disabled at a limit)"},
        "disabled_at": _TIME, "disabled_reason": {"type": ["string", "null"]},
        "last_attempt_at": _TIME, "last_success_at": _TIME,
        "last_error": {"type": ["string", "null"]}}},
    "Delivery": {"type": "object", "required": [
        "id", "webhook_id", "event_type", "status", "attempts", "payload"], "properties": {
        "id": {"type": "string", "description": "the webhook-id header: the same on retries"},
        "webhook_id": {"type": "string"}, "event_type": {"type": "string"},
        "task_id": {"type": ["string", "null"]},
        "position": {"type": "integer", "description": "the event's log position"},
        "status": {"type": "string", "enum": list(DELIVERY_STATUSES)},
        "attempts": {"type": "integer"},
        "last_status": {"type": ["integer", "null"], "description": "HTTP status code"},
        "last_error": {"type": ["string", "null"]},
        "last_duration_ms": {"type": ["number", "null"]},
        "latency_ms": {"type": ["number", "null"],
                       "description": "from the event to its delivery"},
        "event_at": _TIME, "created_at": _TIME, "first_attempt_at": _TIME,
        "last_attempt_at": _TIME, "finished_at": _TIME, "next_attempt_at": _TIME,
        "payload": {"type": "object", "description": "the JSON sent: type, timestamp, data"}}},
})


OPEN_PATHS = ("/healthz", "/login", "/logout")
"""The routes that need no key when keys are configured (``auth.OPEN_PATHS``)."""


def document(keys: bool = True) -> dict[str, Any]:
    """The description; ``keys``: whether this server requires API keys (without them no
    operation needs one, and the description says so)."""
    paths = {path: {method: {**op, "security": []} if path in OPEN_PATHS or not keys else op
                    for method, op in ops.items()}
             for path, ops in OPERATIONS.items()}
    return {
        "openapi": "3.1.0",
        "info": {"title": "ipa", "version": VERSION,
                 "description": "Drive software tasks to reviewed changes with AI agents. "
                 "Every error is {\"error\": {\"code\", \"message\"}}. With API keys "
                 "configured, every route but /healthz, /login and /logout needs one."},
        "paths": paths,
        "components": COMPONENTS,
        "security": [{"apiKey": []}, {"session": []}] if keys else [],
    }


async def openapi(request: Request) -> JSONResponse:
    keys = getattr(request.app.state, "api_keys", None)
    return JSONResponse(document(keys=bool(keys is not None and keys.enabled)))
