"""Errors of the HTTP API and the parsing of requests, in one place.

Every error answer is ``{"error": {"code": ..., "message": ...}}`` (plus fields that help, such
as ``current_version``) with a 4xx/5xx status. Exceptions map to statuses through one table,
:data:`ERRORS`; the request helpers below raise :class:`BadRequest` (400),
:class:`PayloadTooLarge` (413) or :class:`NotFound` (404) with a message naming what is wrong.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Sequence
from dataclasses import fields
from typing import Any
from uuid import UUID

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from ipa.domain import CommandRejected, DomainError, InvalidCommand, TaskNotFound
from ipa.eventstore import StoreUnavailable, StreamNotFound, VersionConflict
from ipa.pods import WorkspaceError
from ipa.supervisor import PodNotRunning, ShuttingDown

MAX_BODY = 1024 * 1024
"""The largest request body accepted, in bytes (413 above it)."""


class ApiError(Exception):
    """An error the API answers with its own status and code."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.extra = extra


class BadRequest(ApiError):
    """The request itself is malformed (not JSON, wrong field types, bad query values)."""


class BadCursor(ApiError):
    """A pagination cursor this API did not hand out."""

    code = "bad_cursor"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class NotFound(ApiError):
    """No such thing (``code`` names which: ``job_not_found``, ``run_not_found`` ...)."""

    status = 404

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


# Exception type → (HTTP status, error code). The first matching entry wins.
ERRORS: list[tuple[type[Exception], int, str]] = [
    (InvalidCommand, 400, "invalid_input"),
    (StreamNotFound, 404, "task_not_found"),
    (PodNotRunning, 409, "pod_not_running"),
    (ShuttingDown, 503, "shutting_down"),
    (TaskNotFound, 404, "task_not_found"),
    (VersionConflict, 409, "version_conflict"),
    (CommandRejected, 409, "command_not_allowed"),
    (DomainError, 400, "invalid_input"),
    (WorkspaceError, 400, "workspace_error"),
    (StoreUnavailable, 503, "store_unavailable"),
]


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status)


async def on_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, str(exc), **exc.extra)
    if isinstance(exc, VersionConflict):
        return error_response(409, "version_conflict", str(exc), current_version=exc.current)
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


def exception_handlers() -> dict[Any, Any]:
    handlers: dict[Any, Any] = {exc_type: on_error for exc_type, _, _ in ERRORS}
    handlers[ApiError] = on_error
    handlers[HTTPException] = on_http_error
    handlers[Exception] = on_crash
    return handlers


# Request parsing -----------------------------------------------------------------------------


def task_id_param(request: Request, name: str = "task_id") -> UUID:
    text = request.path_params[name]
    try:
        return UUID(text)
    except ValueError:
        raise BadRequest(f"{text!r} is not a task id (expected a UUID)") from None


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
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


def offset_cursor(request: Request) -> int:
    """The position a list cursor of this API points at (cursors are opaque to clients)."""
    text = request.query_params.get("cursor")
    if text is None or text == "":
        return 0
    if not text.isdigit() or len(text) > 12:
        raise BadCursor(f"cursor {text!r} was not handed out by this API")
    return int(text)


def page_of(items: Sequence[Any], request: Request, *, limit_default: int = 100,
            limit_max: int = 500) -> dict[str, Any]:
    """``{"items", "next_cursor"}`` for an in-memory list that only ever grows at its end."""
    limit = int_param(request, "limit", limit_default, 1, limit_max)
    start = offset_cursor(request)
    if start > len(items):
        raise BadCursor(f"cursor {start} is past the end of the list ({len(items)} items)")
    end = start + limit
    return {"items": list(items[start:end]), "next_cursor": str(end) if end < len(items) else None}


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is larger than the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request, *, required: bool = True,
                    limit: int = MAX_BODY) -> dict[str, Any]:
    raw = await read_body(request, limit)
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


def build(command_type: type, body: dict[str, Any], what: str) -> Any:
    """``command_type(**body)`` after checking the body's fields: unknown fields, missing
    required ones and values of the wrong JSON type are a :class:`BadRequest` naming them."""
    known = {f.name: f for f in fields(command_type)}
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise BadRequest(f"{what}: unknown field(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(known) or 'none'}")
    hints = typing.get_type_hints(command_type)
    for name, value in body.items():
        expected = _json_type(hints.get(name))
        if expected is not None and not expected[0](value):
            raise BadRequest(f"{what}: field {name!r} must be {expected[1]}, "
                             f"not {json.dumps(value)[:80]}")
    try:
        return command_type(**body)
    except TypeError as e:  # a required field is missing
        raise BadRequest(f"{what}: {e}") from None


def _json_type(hint: Any) -> tuple[Any, str] | None:
    """A check and a description of the JSON values a field of type ``hint`` takes."""
    if hint is None or hint is Any:
        return None
    args = typing.get_args(hint)
    if type(None) in args:
        inner = _json_type(next(a for a in args if a is not type(None)))
        if inner is None:
            return None
        return (lambda v: v is None or inner[0](v)), f"{inner[1]} or null"
    origin = typing.get_origin(hint) or hint
    if origin is bool:
        return (lambda v: isinstance(v, bool)), "true or false"
    if origin is int:
        return (lambda v: isinstance(v, int) and not isinstance(v, bool)), "a whole number"
    if origin is float:
        return (lambda v: isinstance(v, int | float) and not isinstance(v, bool)), "a number"
    if origin is str:
        return (lambda v: isinstance(v, str)), "a string"
    if origin is dict:
        return (lambda v: isinstance(v, dict)), "an object"
    if origin in (list, tuple, Sequence, typing.Sequence):
        return (lambda v: isinstance(v, list) and all(isinstance(i, str) for i in v)), (
            "a list of strings")
    return None
