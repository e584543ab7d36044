"""``GET /openapi.json``: the API described in OpenAPI 3.1, written by hand here.

:data:`OPERATIONS` lists every route of the API (pages excepted) with its method; a test
checks it against the app's routes in both directions, so a route without a description (or a
description without a route) fails the suite.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from ipa.domain import TASK_COMMANDS, CreateTask

VERSION = "0.1.0"

_ERROR = {"$ref": "#/components/schemas/Error"}
_TASK = {"$ref": "#/components/schemas/Task"}
_EVENT = {"$ref": "#/components/schemas/Event"}


def _page(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": ["items", "next_cursor"], "properties": {
        "items": {"type": "array", "items": item},
        "next_cursor": {"type": ["string", "null"],
                        "description": "pass back as ?cursor= for the next page"}}}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    words = {400: "bad input", 401: "no or wrong API key", 404: "not found",
             409: "conflict (stale expected_version, command not allowed now, no pod)",
             413: "body too large", 503: "shutting down or store unavailable"}
    return {str(s): _json(_ERROR, words[s]) for s in statuses}


def _query(name: str, description: str, kind: str = "string") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": kind}}


def _path(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": {"type": "string"}}


TASK_ID = _path("task_id", "the task's id (a UUID)")
PAGE = [_query("limit", "items per page", "integer"), _query("cursor", "from next_cursor")]
SSE = {"description": "an SSE stream", "content": {"text/event-stream": {
    "schema": {"type": "string"}}}}
RESUME = [
    {"name": "Last-Event-ID", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "resume right after this id"},
    _query("after", "resume right after this id (for clients that cannot set headers)",
           "integer"),
]
COMMAND_BODY = {"type": "object", "description": "the command's fields, plus optional "
                "expected_version (and interrupt for pause); unknown fields are a 400",
                "properties": {"expected_version": {"type": "integer", "minimum": 1}}}


def _op(summary: str, responses: dict[str, Any], *, parameters: list | None = None,
        body: dict[str, Any] | None = None) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": responses}
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": False,
                             "content": {"application/json": {"schema": body}}}
    return op


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
                     **_errors(400, 401, 413)},
                    body={"type": "object", "required": ["key"],
                          "properties": {"key": {"type": "string"}}}),
    },
    "/logout": {"post": _op("Drop the session cookie", {"200": _json({"type": "object"})})},
    "/api/tasks": {
        "get": _op("The task list (one summary row per task), by id",
                   {"200": _json(_page({"type": "object"})), **_errors(400, 401)},
                   parameters=PAGE),
        "post": _op("Create a task; its pod starts at once",
                    {"201": _json(_TASK), **_errors(400, 401, 413)},
                    body={"type": "object", "required": ["title"], "additionalProperties": False,
                          "properties": {"title": {"type": "string"},
                                         "description": {"type": "string"},
                                         "workflow": {"type": "string",
                                                      "enum": ["task", "project"]},
                                         "repo": {"type": ["string", "null"]}}}),
    },
    "/api/tasks/{task_id}": {"get": _op(
        "The task's state (as of ?version=N when given)",
        {"200": _json(_TASK), **_errors(400, 401, 404)},
        parameters=[TASK_ID, _query("version", "a past version", "integer")])},
    "/api/tasks/{task_id}/events": {"get": _op(
        "The task's events in version order", {"200": _json(_page(_EVENT)),
                                               **_errors(400, 401, 404)},
        parameters=[TASK_ID, _query("after", "after this version", "integer"), *PAGE])},
    "/api/tasks/{task_id}/versions/{version}": {"get": _op(
        "Time travel: the state as of a version, what changed from the one before, the event",
        {"200": _json({"type": "object", "properties": {
            "version": {"type": "integer"}, "state": _TASK, "changed": {"type": "object"},
            "event": _EVENT}}), **_errors(400, 401, 404)},
        parameters=[TASK_ID, _path("version", "a version ≥ 1")])},
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
        "retry (a dead-lettered job), cancel ({reason}) or interrupt (its running agent)",
        {"200": _json({"type": "object"}), **_errors(400, 401, 404, 409, 413)},
        parameters=[TASK_ID, _path("job_id", "the job's id"),
                    _path("action", "retry, cancel or interrupt")],
        body={"type": "object", "properties": {"reason": {"type": "string"},
                                               "expected_version": {"type": "integer"}}})},
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
                    *PAGE])},
    "/api/tasks/{task_id}/workspaces/{workspace_id}/diff": {"get": _op(
        "The diff of a workspace from its base commit (or ?base=) to a commit",
        {"200": _json({"type": "object"}), **_errors(400, 401, 404)},
        parameters=[TASK_ID, _path("workspace_id", "the workspace's id"),
                    _query("commit", "default: the newest"), _query("base", "default: base")])},
    "/api/tasks/{task_id}/{command}": {"post": _op(
        "Send a command to the task's pod: "
        + ", ".join(c.name for c in TASK_COMMANDS if c is not CreateTask),
        {"200": _json(_TASK), **_errors(400, 401, 404, 409, 413, 503)},
        parameters=[TASK_ID, _path("command", "the command's name")], body=COMMAND_BODY)},
    "/api/runs/{run_id}/events": {"get": _op(
        "An agent run's own events (RunStarted, RunOutput, RunFinished ...)",
        {"200": _json(_page(_EVENT)), **_errors(400, 401, 404)},
        parameters=[_path("run_id", "the run's id (a UUID)"),
                    _query("after", "after this version", "integer"), *PAGE])},
    "/api/runs/{run_id}/stream": {"get": _op(
        "SSE of an agent run's events (live output): id = version",
        {"200": SSE, **_errors(400, 401)},
        parameters=[_path("run_id", "the run's id (a UUID)"), *RESUME])},
    "/api/stream": {"get": _op(
        "SSE of every task's events (not the agent runs'): id = global position",
        {"200": SSE, **_errors(400, 401)}, parameters=RESUME)},
}

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
            "allowed_commands": {"type": "array", "items": {"type": "string"}}},
            "additionalProperties": True},
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


def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "ipa", "version": VERSION,
                 "description": "Drive software tasks to reviewed changes with AI agents. "
                 "Every error is {\"error\": {\"code\", \"message\"}}. With API keys "
                 "configured, every route but /healthz and /login needs one."},
        "paths": OPERATIONS,
        "components": COMPONENTS,
        "security": [{"apiKey": []}, {"session": []}],
    }


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(document())
