"""The HTTP API (JSON), built by :func:`create_app`.

What is here now: health, the task list, create a task, read a task and its events, and the
task commands of the contract (approve, pause, resume, cancel, plus the other workflow and
job commands). A new task gets its pod at once; every command goes to the task's pod, the
single writer of its stream (a task without a running pod answers 409 ``pod_not_running``).
``pause`` takes ``"interrupt": true`` to cut running agents short. Pages and SSE streams come
with issue #5.

Every error is ``{"error": {"code": ..., "message": ...}}`` with a 4xx/5xx status, from one
table (:data:`ERRORS`).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ipa.domain import (
    TASK_COMMANDS,
    CommandRejected,
    Context,
    CreateTask,
    DomainError,
    InvalidCommand,
    Pause,
    TaskNotFound,
    decide,
    fold,
)
from ipa.eventstore import StoreUnavailable, StreamNotFound, VersionConflict
from ipa.projections import TaskList, task_state
from ipa.supervisor import PodNotRunning, ShuttingDown, Supervisor

from . import pages

MAX_PAGE = 500
COMMANDS = {command.name: command for command in TASK_COMMANDS if command is not CreateTask}
"""The commands ``POST /api/tasks/{id}/{name}`` accepts, by name."""


class BadRequest(Exception):
    """The request itself is malformed (not JSON, wrong field types, bad query values)."""


# Exception type → (HTTP status, error code). The first matching entry wins.
ERRORS: list[tuple[type[Exception], int, str]] = [
    (BadRequest, 400, "bad_request"),
    (InvalidCommand, 400, "invalid_input"),
    (StreamNotFound, 404, "task_not_found"),
    (PodNotRunning, 409, "pod_not_running"),
    (ShuttingDown, 503, "shutting_down"),
    (TaskNotFound, 404, "task_not_found"),
    (VersionConflict, 409, "version_conflict"),
    (CommandRejected, 409, "command_not_allowed"),
    (DomainError, 400, "invalid_input"),
    (StoreUnavailable, 503, "store_unavailable"),
]


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status)


def create_app(supervisor: Supervisor, task_list: TaskList) -> Starlette:
    """The API: commands go to the tasks' pods through ``supervisor``; the list comes from
    ``task_list`` (both kept running by the caller)."""
    store = supervisor.store

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "log_position": store.tail.position})

    async def list_tasks(request: Request) -> JSONResponse:
        limit = _int_param(request, "limit", 50, 1, MAX_PAGE)
        cursor = request.query_params.get("cursor", "")
        page = await store.read_model_page("task_list", after=cursor, limit=limit + 1)
        items = [{k: v for k, v in row.items() if k != "state"} for _, row in page[:limit]]
        next_cursor = page[limit - 1][0] if len(page) > limit else None
        return JSONResponse({"items": items, "next_cursor": next_cursor})

    async def create_task(request: Request) -> JSONResponse:
        body = await _json_body(request)
        command = CreateTask(
            title=body.get("title"),
            description=body.get("description", ""),
            workflow=body.get("workflow", "task"),
            repo=body.get("repo"),
        )
        task_id = uuid.uuid4()
        events = decide(None, command, _context(request), task_id)
        await store.append(task_id, events, 0)
        await supervisor.start(task_id)
        return JSONResponse(task_state.view(fold(events)), 201)

    async def get_task(request: Request) -> JSONResponse:
        task_id = _task_id(request)
        if request.query_params.get("version") is not None:
            at = _int_param(request, "version", 0, 1, 2**62)
            return JSONResponse(task_state.view(await store.load(task_id, at)))
        try:
            state = supervisor.get(task_id).get_state()  # a running task: from memory
        except PodNotRunning:
            state = await store.load(task_id)
        return JSONResponse(task_state.view(state))

    async def task_events(request: Request) -> JSONResponse:
        task_id = _task_id(request)
        after = _int_param(request, "after", 0, 0, 2**62)
        limit = _int_param(request, "limit", 100, 1, MAX_PAGE)
        if await store.version(task_id) == 0:
            raise StreamNotFound(task_id)
        page = await store.read(task_id, after=after, limit=limit)
        return JSONResponse({"items": [recorded.to_json() for recorded in page]})

    async def task_command(request: Request) -> JSONResponse:
        task_id = _task_id(request)
        name = request.path_params["command"]
        command_type = COMMANDS.get(name)
        if command_type is None:
            known = ", ".join(sorted(COMMANDS))
            raise HTTPException(404, f"unknown command {name!r}; known: {known}")
        body = await _json_body(request, required=False)
        expected = body.pop("expected_version", None)
        interrupt = body.pop("interrupt", False) if command_type is Pause else False
        if not isinstance(interrupt, bool):
            raise BadRequest("interrupt must be true or false")
        if expected is not None and (not isinstance(expected, int) or expected < 1):
            raise BadRequest("expected_version must be a whole number ≥ 1")
        try:
            command = command_type(**body)
        except TypeError as e:
            raise BadRequest(f"{name}: {e}") from None
        context = _context(request)
        state = await supervisor.execute(
            task_id, command, actor=context.actor, correlation_id=context.correlation_id,
            expected_version=expected, interrupt=interrupt,
        )
        return JSONResponse(task_state.view(state))

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, VersionConflict):
            return error_response(409, "version_conflict", str(exc),
                                  current_version=exc.current)
        if isinstance(exc, CommandRejected):
            return error_response(409, "command_not_allowed", str(exc), allowed=exc.allowed)
        for exc_type, status, code in ERRORS:
            if isinstance(exc, exc_type):
                return error_response(status, code, str(exc))
        raise exc

    async def on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, "internal_error", f"{type(exc).__name__}: {exc}")

    handlers: dict[Any, Any] = {exc_type: on_error for exc_type, _, _ in ERRORS}
    handlers[HTTPException] = on_http_error
    handlers[Exception] = on_crash
    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/api/tasks", list_tasks, methods=["GET"]),
            Route("/api/tasks", create_task, methods=["POST"]),
            Route("/api/tasks/{task_id}", get_task),
            Route("/api/tasks/{task_id}/events", task_events),
            Route("/api/tasks/{task_id}/{command}", task_command, methods=["POST"]),
            *pages.routes(supervisor, task_list),
        ],
        exception_handlers=handlers,
    )


def _context(request: Request) -> Context:
    actor = request.headers.get("x-ipa-actor", "user:local")
    return Context(
        actor=actor,
        now=datetime.now(UTC),
        correlation_id=request.headers.get("x-request-id") or uuid.uuid4().hex,
    )


def _task_id(request: Request) -> UUID:
    text = request.path_params["task_id"]
    try:
        return UUID(text)
    except ValueError:
        raise BadRequest(f"{text!r} is not a task id (expected a UUID)") from None


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise BadRequest(f"query parameter {name}={text!r}: expected a whole number "
                         f"from {low} to {high}")
    return value


async def _json_body(request: Request, *, required: bool = True) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        if required:
            raise BadRequest("expected a JSON object body")
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadRequest(f"body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest("expected a JSON object body")
    return body
