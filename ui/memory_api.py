"""The memory API: what agents learned, as people see and steer it (``projections/memory.py``).

- ``GET /api/memories?q=TEXT&scope=S``: the memories of the scopes named (``scope`` repeats:
  ``repo:<repository>``, ``project:<task id>``, ``task:<task id>``) most useful for ``q``, best
  first, each with its ``similarity`` and ``score``; without ``scope``, of every scope.
- ``GET /api/memories`` without ``q``: memories by id, of ``scope``/``kind``/``ids`` when given
  (``ids``: comma-separated, e.g. the memories a run used), paged with ``cursor``.
- ``GET /api/memories/{memory_id}``: one memory; the id of a repeat that was merged into
  another memory finds that one.
- ``DELETE /api/memories/{memory_id}``: forget it (``reason`` in the body or the query), and
  ``POST /api/memories/{memory_id}/pin`` (``{"pinned": true|false}``, default true): events of
  the memory ledger, by the request's actor. The answer waits (at most :data:`APPLIED_WAIT`
  seconds) until the read model has applied the event, so the next read sees it.

Each memory is an :func:`item`. A memory id that is not one (malformed, never recorded,
forgotten) is a 404 ``memory_not_found``; memory that is off (this server runs none, or its
embedder did not load: :attr:`Memory.problem`) is a 503 ``memory_unavailable`` naming why.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ipa.domain import MemoryKind, parse_scope
from ipa.projections import Memory, MemoryUnavailable

from .auth import actor
from .errors import BadCursor, BadRequest, NotFound, int_param, json_body, uuid_or_none

MAX_PAGE = 100
QUERY_MAX = 2000
"""The longest ``q`` (characters) and ``reason`` accepted."""
APPLIED_WAIT = 5.0
"""Seconds a forget or pin waits for the read model to apply its event before answering."""
KINDS = tuple(kind.value for kind in MemoryKind)


def routes() -> list[Route]:
    return [
        Route("/api/memories", list_memories, methods=["GET"]),
        Route("/api/memories/{memory_id}", get_memory, methods=["GET"]),
        Route("/api/memories/{memory_id}", forget_memory, methods=["DELETE"]),
        Route("/api/memories/{memory_id}/pin", pin_memory, methods=["POST"]),
    ]


def item(memory: Memory, row: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A memory as the API shows it: ``importance`` is its importance now (decayed without
    use; 1 when pinned), ``recorded_importance`` the one its events gave it."""
    shown = {
        "id": row["id"], "kind": row["kind"], "text": row["text"], "scope": row["scope"],
        "importance": round(memory.importance(row, now), 6),
        "recorded_importance": round(float(row["importance"]), 6),
        "pinned": row["pinned"], "score": row["score"],
        "uses": row["uses"], "seen": row["seen"],
        "created_at": row["created_at"].isoformat(),
        "last_seen_at": row["last_seen_at"].isoformat(),
        "last_used_at": row["last_used_at"].isoformat() if row["last_used_at"] else None,
        "task_id": row["task_id"], "job_id": row["job_id"], "run_id": row["run_id"],
        "merged_ids": row["merged_ids"],
    }
    if "similarity" in row:
        shown["similarity"] = round(float(row["similarity"]), 6)
    return shown


async def list_memories(request: Request) -> JSONResponse:
    params = request.query_params
    q = params.get("q")
    scopes = [scope_param(value) for value in params.getlist("scope")]
    kind = kind_param(params.get("kind"))
    ids = ids_param(params.get("ids"))
    limit = int_param(request, "limit", 20, 1, MAX_PAGE)
    cursor = params.get("cursor")
    if q is not None:
        query = text_param("q", q)
        if ids is not None or cursor is not None:
            raise BadRequest("q searches by meaning: it takes no ids and no cursor")
        memory = running(request)
        found = await memory.search(query, scopes or None, limit=MAX_PAGE if kind else limit)
        rows = [row for row in found if kind is None or row["kind"] == kind][:limit]
        next_cursor = None
    else:
        after = ""
        if cursor is not None:
            after_id = uuid_or_none(cursor)
            if after_id is None:
                raise BadCursor(f"cursor {cursor[:40]!r} was not handed out by this API")
            after = str(after_id)
        memory = running(request)
        rows = await memory.rows(scopes=scopes or None, ids=ids, kind=kind, after=after,
                                 limit=limit + 1)
        next_cursor = rows[limit - 1]["id"] if len(rows) > limit else None
        rows = rows[:limit]
    now = datetime.now(UTC)
    return JSONResponse({"items": [item(memory, row, now) for row in rows],
                         "next_cursor": next_cursor})


async def get_memory(request: Request) -> JSONResponse:
    memory_id = memory_id_param(request)
    memory = running(request)
    return JSONResponse(item(memory, await memory.get(memory_id), datetime.now(UTC)))


async def forget_memory(request: Request) -> JSONResponse:
    """Forget a memory (``MemoryForgotten``); answer its id and the event's log position."""
    memory_id = memory_id_param(request)
    body = only(await json_body(request, required=False), "forget", "reason")
    reason = body.get("reason", request.query_params.get("reason", ""))
    if not isinstance(reason, str):
        raise BadRequest("forget: reason must be a string")
    reason = text_param("reason", reason, blank=True)
    memory = running(request)
    row = await memory.get(memory_id)
    position = await memory.forget(row["id"], actor=actor(request), reason=reason)
    await applied(memory, position)
    return JSONResponse({"id": row["id"], "forgotten": True, "position": position})


def only(body: dict[str, Any], what: str, *known: str) -> dict[str, Any]:
    """``body``, refused (400 naming them) when it has fields other than ``known``."""
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise BadRequest(f"{what}: unknown field(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(map(repr, known))}")
    return body


async def pin_memory(request: Request) -> JSONResponse:
    """Pin (``{"pinned": true}``, the default) or unpin a memory (``MemoryPinned``)."""
    memory_id = memory_id_param(request)
    body = only(await json_body(request, required=False), "pin", "pinned")
    pinned = body.get("pinned", True)
    if not isinstance(pinned, bool):
        raise BadRequest("pin: pinned must be true or false")
    memory = running(request)
    row = await memory.get(memory_id)
    position = await memory.pin(row["id"], actor=actor(request), pinned=pinned)
    await applied(memory, position)
    return JSONResponse({"id": row["id"], "pinned": pinned, "position": position})


# Helpers -------------------------------------------------------------------------------------


def running(request: Request) -> Memory:
    """The app's memory, or :class:`MemoryUnavailable` (a 503) saying why there is none."""
    memory: Memory | None = getattr(request.app.state, "memory", None)
    if memory is None:
        raise MemoryUnavailable("agent memory does not run in this server")
    if memory.problem is not None:
        raise MemoryUnavailable(f"agent memory is off: {memory.problem}")
    return memory


async def applied(memory: Memory, position: int) -> None:
    """Return once the read model has applied the log up to ``position``, or after
    :data:`APPLIED_WAIT` seconds (the event is recorded either way; the model follows)."""
    with anyio.move_on_after(APPLIED_WAIT):
        await memory.wait_for(position)


def memory_id_param(request: Request) -> str:
    text = request.path_params["memory_id"]
    memory_id = uuid_or_none(text)
    if memory_id is None:
        raise NotFound("memory_not_found", f"{text[:80]!r} is not a memory id (expected a UUID)")
    return str(memory_id)


def scope_param(value: str) -> str:
    """A ``scope`` of the query, exactly as written (no spaces around it, no control
    characters, which no scope holds), then as :func:`parse_scope` reads it."""
    if value != value.strip() or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise BadRequest(f"scope {value[:80]!r}: spaces around it or control characters")
    return parse_scope(value)


def kind_param(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in KINDS:
        raise BadRequest(f"kind {value[:40]!r}: expected {', '.join(KINDS)}")
    return value


def ids_param(value: str | None) -> list[str] | None:
    """``ids`` (comma-separated memory ids, at most :data:`MAX_PAGE`; empty: none)."""
    if value is None:
        return None
    texts = value.split(",") if value else []
    if len(texts) > MAX_PAGE:
        raise BadRequest(f"ids: {len(texts)} ids; at most {MAX_PAGE} at once")
    ids = []
    for text in texts:
        memory_id = uuid_or_none(text)
        if memory_id is None:
            raise BadRequest(f"ids: {text[:80]!r} is not a memory id (expected a UUID)")
        ids.append(str(memory_id))
    return ids


def text_param(name: str, value: str, *, blank: bool = False) -> str:
    """``value`` when it is not blank (unless ``blank``) and at most :data:`QUERY_MAX`
    characters long."""
    if not blank and not value.strip():
        raise BadRequest(f"{name} is blank: say what to look for")
    if len(value) > QUERY_MAX:
        raise BadRequest(f"{name} is {len(value)} characters long; at most {QUERY_MAX}")
    return value
