"""Commands on any node: a write for a task another live node owns is answered by the owner.

The node that gets the request (a person's command, a job action, a restart) finds the task's
lease held by another live node and hands the request over through the store
(:mod:`ipa.eventstore.inbox`): the route, its path parameters, the body exactly as the client
sent it (base64), the actor the request was authenticated as and the client's
``X-Request-Id``. The owner runs it through the same handler a client's request would reach,
as that actor, and the caller answers with the owner's status and body unchanged: 200 with the
task, 409 with the current version, 422 with the allowed commands. A request the owner did
not take in time is 503 with ``Retry-After`` (nothing applied). A forwarded request is never
forwarded again: an owner that lost the task meanwhile answers 409 ``owned_elsewhere``.

The handlers run behind this process's own guard and authentication, never the client's
headers: the actor travels in the row, which only nodes of the store can write.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import Response

from ipa.supervisor import Supervisor

from .auth import actor
from .errors import on_crash, on_error

log = logging.getLogger(__name__)

FORWARDED = "ipa.forwarded"
"""Set in the scope of a request the owner runs for another node."""

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

Route = Callable[[Request], Awaitable[Response]]


async def elsewhere(supervisor: Supervisor, request: Request, task_id: UUID,
                    kind: str) -> Response | None:
    """The owner's answer when another live node owns the task; ``None``: answer here."""
    if request.scope.get(FORWARDED):
        return None
    owner = await supervisor.owned_elsewhere(task_id)
    if owner is None:
        return None
    given = request.headers.get("x-request-id", "")
    payload = {
        "kind": kind,
        "path": request.url.path,
        "path_params": {k: str(v) for k, v in request.path_params.items()},
        "body": base64.b64encode(await request.body()).decode("ascii"),
        "actor": actor(request),
        "request_id": given if _REQUEST_ID.fullmatch(given) else None,
    }
    answer = await supervisor.forward(owner, task_id, payload, key=payload["request_id"])
    text = answer["text"] if "text" in answer else json.dumps(answer["body"])
    return Response(text.encode(), answer["status"], media_type="application/json",
                    headers={"x-ipa-node": owner})


class Answerer:
    """The owner's side: runs another node's request through the route it names."""

    def __init__(self, routes: dict[str, Route]) -> None:
        self._routes = routes

    async def __call__(self, payload: dict[str, Any]) -> dict[str, Any]:
        route = self._routes.get(str(payload.get("kind")))
        if route is None:
            return _answer(400, "bad_request",
                           f"unknown forwarded request {payload.get('kind')!r}")
        try:
            body = base64.b64decode(str(payload.get("body") or ""), validate=True)
        except ValueError:
            return _answer(400, "bad_request", "a forwarded request's body is not base64")
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]
        if payload.get("request_id"):
            headers.append((b"x-request-id", str(payload["request_id"]).encode("ascii")))
        path = str(payload.get("path") or "/")
        scope = {
            "type": "http", "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": headers, "client": None, "server": None,
            "path_params": dict(payload.get("path_params") or {}),
            "state": {"actor": str(payload.get("actor") or "user:local")},
            FORWARDED: True,
        }
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        request = Request(scope, receive)
        try:
            response = await route(request)
        except Exception as e:  # the API's own errors, mapped as for a client
            try:
                response = await on_error(request, e)
            except Exception:
                log.exception("forwarded %s failed", payload.get("kind"))
                response = await on_crash(request, e)
        # The body as the owner wrote it, byte for byte (a JSON value would come back from
        # the database's jsonb with its keys reordered).
        return {"status": response.status_code, "text": bytes(response.body).decode()}


def _answer(status: int, code: str, message: str) -> dict[str, Any]:
    return {"status": status, "body": {"error": {"code": code, "message": message}}}
