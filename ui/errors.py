"""Errors of the HTTP API and the parsing of requests, in one place.

Every error answer is ``{"error": {"code": ..., "message": ...}}`` (plus fields that help, such
as ``current_version``) with a 4xx/5xx status. Exceptions map to statuses through one table,
:data:`ERRORS`; the request helpers below raise :class:`BadRequest` (400),
:class:`PayloadTooLarge` (413) or :class:`NotFound` (404) with a message naming what is wrong.

**Malformed input is a 4xx, never a 500.** Every number in a query, a path or a header (cursor,
``after``, ``Last-Event-ID``, version, limit) is read by :func:`whole_number`: ASCII digits only,
at most 19 of them. JSON bodies (:func:`json_body`) are at most :data:`MAX_BODY` bytes and
:data:`MAX_DEPTH` levels deep; their integers fit in 64 bits and their numbers are finite
(``NaN``/``Infinity`` are not JSON); their strings and keys are Unicode text: a lone surrogate
(``"\\ud800"``) cannot be stored or sent back as UTF-8, so it is a 400 naming where it is
(``title``, ``spec.command[1]``). A NUL (``"\\u0000"``) is text and is accepted: the store
keeps it. Whatever else reaches :func:`on_crash` is a bug: a 500, and uvicorn logs its traceback.
"""

from __future__ import annotations

import json
import math
import re
import typing
from collections.abc import Sequence
from dataclasses import MISSING, fields
from typing import Any
from uuid import UUID

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from ipa.domain import CommandRejected, DomainError, InvalidCommand, TaskNotFound
from ipa.eventstore import (
    LeaseLost,
    OwnerUnreachable,
    StoreUnavailable,
    StreamNotFound,
    VersionConflict,
)
from ipa.pods import RepositoryRefused, WorkspaceError
from ipa.pods.webhooks import TooManyWebhooks, WebhookNotFound, WebhooksUnavailable
from ipa.projections import EmbedderError, MemoryNotFound, MemoryUnavailable
from ipa.supervisor import (
    OwnedElsewhere,
    PodNotRunning,
    PodRunning,
    ShuttingDown,
    TaskFinished,
)

MAX_BODY = 1024 * 1024
"""The largest request body accepted, in bytes (413 above it)."""
MAX_DEPTH = 64
"""How deeply arrays and objects of a JSON body may nest (the body itself is level 1)."""
MAX_INT = 2**63 - 1
"""The largest integer magnitude a JSON body may hold (what PostgreSQL's bigint holds)."""
_WHOLE = re.compile(r"[0-9]{1,19}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


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


class Forbidden(ApiError):
    """The request is understood and refused (``code`` names why)."""

    status = 403
    code = "forbidden"


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
    (OwnedElsewhere, 409, "owned_elsewhere"),
    (LeaseLost, 409, "owned_elsewhere"),
    (PodRunning, 409, "pod_running"),
    (TaskFinished, 409, "task_finished"),
    (ShuttingDown, 503, "shutting_down"),
    (OwnerUnreachable, 503, "owner_unreachable"),
    (TaskNotFound, 404, "task_not_found"),
    (VersionConflict, 409, "version_conflict"),
    (CommandRejected, 409, "command_not_allowed"),
    (DomainError, 400, "invalid_input"),
    (RepositoryRefused, 422, "repository_refused"),  # message: "repo '...' refused: why"
    (WorkspaceError, 400, "workspace_error"),
    (StoreUnavailable, 503, "store_unavailable"),
    (MemoryNotFound, 404, "memory_not_found"),
    (MemoryUnavailable, 503, "memory_unavailable"),
    (EmbedderError, 503, "memory_unavailable"),  # the embedder failed on a search's text
    (WebhookNotFound, 404, "webhook_not_found"),
    (TooManyWebhooks, 409, "too_many_webhooks"),
    (WebhooksUnavailable, 503, "webhooks_unavailable"),
]


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message, **extra}}, status)


async def on_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.code, str(exc), **exc.extra)
    if isinstance(exc, VersionConflict):
        return error_response(409, "version_conflict", str(exc), current_version=exc.current)
    if isinstance(exc, OwnerUnreachable):
        response = error_response(503, "owner_unreachable", str(exc), node=exc.node_id)
        response.headers["retry-after"] = str(exc.retry_after)
        return response
    if isinstance(exc, OwnedElsewhere):
        return error_response(409, "owned_elsewhere", str(exc), node=exc.node_id,
                              address=exc.address or None)
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
    """A bug (bad input never gets here: the helpers below turn it into an :class:`ApiError`).
    Starlette raises ``exc`` again after this answer, so the server logs its traceback; the
    client learns its type only, not its text (which may quote the store or a secret)."""
    return error_response(500, "internal_error",
                          f"an unexpected error ({type(exc).__name__}); the server log has it")


def exception_handlers() -> dict[Any, Any]:
    handlers: dict[Any, Any] = {exc_type: on_error for exc_type, _, _ in ERRORS}
    handlers[ApiError] = on_error
    handlers[HTTPException] = on_http_error
    handlers[Exception] = on_crash
    return handlers


# Request parsing -----------------------------------------------------------------------------


def uuid_or_none(text: str) -> UUID | None:
    """``text`` as a UUID when it is one in its canonical form (``8-4-4-4-12`` hex digits, as
    this API hands ids out), else None. ``UUID()`` alone takes braces, ``urn:uuid:``, missing
    hyphens, underscores and non-ASCII digits too."""
    return UUID(text) if _UUID.fullmatch(text) else None


def task_id_param(request: Request, name: str = "task_id") -> UUID:
    text = request.path_params[name]
    task_id = uuid_or_none(text)
    if task_id is None:
        raise BadRequest(f"{text[:80]!r} is not a task id (expected a UUID)")
    return task_id


def run_id_param(request: Request) -> UUID:
    text = request.path_params["run_id"]
    run_id = uuid_or_none(text)
    if run_id is None:
        raise BadRequest(f"{text[:80]!r} is not a run id (expected a UUID)")
    return run_id


def whole_number(text: str, high: int = 2**62) -> int | None:
    """``text`` as a whole number when it is 1 to 19 ASCII digits and at most ``high``; else
    None. The one parser of numbers in queries, paths and headers: ``str.isdigit`` and ``int``
    take more than ASCII digits (``"²".isdigit()`` is true but ``int("²")`` fails; ``int("٣")``
    is 3 and ``int(" 1_0 ")`` is 10), and ``int`` refuses more than 4,300 digits."""
    if not _WHOLE.fullmatch(text):
        return None
    value = int(text)
    return value if value <= high else None


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    value = whole_number(text, high)
    if value is None or value < low:
        raise BadRequest(f"query parameter {name}={text!r}: expected a whole number "
                         f"from {low} to {high}")
    return value


def offset_cursor(request: Request) -> int:
    """The position a list cursor of this API points at (cursors are opaque to clients)."""
    text = request.query_params.get("cursor")
    if text is None or text == "":
        return 0
    position = whole_number(text, 10**12 - 1)
    if position is None:
        raise BadCursor(f"cursor {text[:40]!r} was not handed out by this API")
    return position


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
    if declared is not None and (whole_number(declared) or 0) > limit:
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
    return json_object(raw)


def json_object(raw: bytes) -> dict[str, Any]:
    """``raw`` parsed as a JSON object, within the limits above, else a :class:`BadRequest`."""
    try:
        body = json.loads(raw, parse_int=_integer, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        raise BadRequest(f"the body is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError (both ValueErrors)
        raise BadRequest(f"body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise BadRequest("expected a JSON object body")
    _check_json(body)
    return body


class _Refused:
    """A value :func:`json.loads` read that the API refuses; :func:`_check_json` says where."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


def _integer(text: str) -> int | _Refused:
    if len(text) > 20 or abs(value := int(text)) > MAX_INT:
        return _Refused(f"an integer of {len(text.lstrip('-'))} digits (at most ±{MAX_INT})")
    return value


def _float(text: str) -> float | _Refused:
    value = float(text)
    return value if math.isfinite(value) else _Refused(f"a number too large ({text[:20]}...)")


def _constant(text: str) -> _Refused:
    return _Refused(f"{text} (not a JSON number)")


def _check_json(body: Any) -> None:
    """Refuse what :func:`json.loads` let through but the API cannot take: nesting deeper than
    :data:`MAX_DEPTH`, a :class:`_Refused` number, a string or key that is not Unicode text
    (a lone surrogate). Iterative, so no input can exhaust the stack here."""
    stack: list[tuple[Any, str, int]] = [(body, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if not _is_text(value):
                raise BadRequest(f"{path or 'the body'}: not Unicode text (a lone surrogate "
                                 "such as \\ud800 cannot be stored)", code="invalid_text")
        elif isinstance(value, _Refused):
            raise BadRequest(f"{path or 'the body'}: {value.why}")
        elif isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise BadRequest(f"{path}: the body is nested deeper than {MAX_DEPTH} levels")
            if isinstance(value, dict):
                for key, item in value.items():
                    name = f"{path}.{key}" if path else key
                    if not _is_text(key):
                        raise BadRequest(f"{path or 'the body'}: a key that is not Unicode text "
                                         "(a lone surrogate)", code="invalid_text")
                    stack.append((item, name, depth + 1))
            else:
                stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))


def _is_text(value: str) -> bool:
    """Whether ``value`` encodes as UTF-8, i.e. holds no lone surrogate."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
    missing = [f.name for f in known.values() if f.name not in body and f.init
               and f.default is MISSING and f.default_factory is MISSING]
    if missing:
        raise BadRequest(f"{what}: {_plural(missing, 'the field', 'the fields')} "
                         f"{', '.join(map(repr, missing))} {'is' if len(missing) == 1 else 'are'} "
                         "required")
    try:
        return command_type(**body)
    except TypeError as e:  # a check of the command's own
        raise BadRequest(f"{what}: {e}") from None


def _plural(items: Sequence[Any], one: str, many: str) -> str:
    return one if len(items) == 1 else many


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
