"""API keys: who may use the API, and whose name goes on the events it writes.

Keys come from ``IPA_API_KEYS`` (``name1:key1,name2:key2``) or a keys file (one ``name:key``
a line; blank lines and ``#`` comments skipped; ``--api-keys-file`` / ``IPA_API_KEYS_FILE``).
When keys are configured, every request except ``/healthz``, ``/login`` and ``/logout`` needs
the header ``X-API-Key`` or the session cookie that ``POST /login`` sets (:mod:`.sessions`:
a random token that expires and that ``POST /logout`` revokes); ``/api/*`` and the other JSON
routes answer 401 without one (before any handler runs, so nothing is written), and an HTML
page redirects to ``/login``. Wrong keys are throttled per client (:class:`.sessions.Throttle`):
past the limit, 429 with ``Retry-After`` and the key is not checked.

The actor of every event written through the API is ``api-key:<name>`` with keys,
``user:local`` without; a trusted proxy (:mod:`.guard`) may name it with ``X-IPA-Actor``.
Keys are compared in constant time.
"""

from __future__ import annotations

import hmac
import html
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import BadRequest, error_response, json_object, read_body
from .sessions import Sessions, Throttle

COOKIE = "ipa_session"
OPEN_PATHS = frozenset({"/healthz", "/login", "/logout"})
DEFAULT_ACTOR = "user:local"
class ApiKeys:
    """The configured keys (maybe none) and the checks made with them."""

    def __init__(self, keys: Mapping[str, str] | None = None) -> None:
        self._keys = dict(keys or {})

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def name_for_key(self, key: str) -> str | None:
        """The name of ``key``, comparing it with every configured key in constant time."""
        found = None
        given = key.encode("utf-8", "replace")
        for name, candidate in self._keys.items():
            if hmac.compare_digest(given, candidate.encode()):
                found = name
        return found


def session_token(scope: Scope) -> str | None:
    """The ``ipa_session`` cookie of a request, if it sent one."""
    for name, value in scope.get("headers") or ():
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, _, token = part.strip().partition("=")
                if key == COOKIE and token:
                    return token
    return None


def client_address(scope: Scope) -> str | None:
    """The client's address (the one a trusted proxy forwarded for, see :mod:`.guard`)."""
    client = scope.get("client")
    return client[0] if client else None


def actor(request: Request) -> str:
    """Who a request acts as: the ``X-IPA-Actor`` of a trusted proxy, else ``api-key:<name>``
    with keys, else ``user:local``."""
    state = request.scope.get("state") or {}
    return state.get("forwarded_actor") or state.get("actor") or DEFAULT_ACTOR


def too_many_attempts(wait: int) -> Response:
    response = error_response(
        429, "too_many_attempts",
        f"too many wrong API keys from this address: try again in {wait} s")
    response.headers["retry-after"] = str(wait)
    return response


class RequireKey:
    """ASGI middleware: with keys configured, refuse requests without a valid key or session;
    throttle wrong keys per client."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, sessions: Sessions,
                 throttle: Throttle) -> None:
        self.app = app
        self.keys = keys
        self.sessions = sessions
        self.throttle = throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys.enabled:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path in OPEN_PATHS or path.startswith("/static/"):
            await self.app(scope, receive, send)
            return
        response: Response | None = None
        name = None
        key = dict(scope.get("headers") or []).get(b"x-api-key")
        if key is not None:
            client = client_address(scope)
            wait = self.throttle.retry_after(client)
            if wait is not None:
                response = too_many_attempts(wait)
            else:
                name = self.keys.name_for_key(key.decode("latin-1"))
                if name is None:
                    self.throttle.failed(client)
                else:
                    self.throttle.succeeded(client)
        else:
            token = session_token(scope)
            name = await self.sessions.name_of(token) if token else None
        if name is None and response is None:
            if _wants_page(scope, path):
                response = RedirectResponse(f"/login?next={_quote_next(path)}", 303)
            else:
                response = error_response(
                    401, "unauthorized",
                    "an API key is required: send the X-API-Key header (or log in at /login)",
                )
        if response is not None:
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["actor"] = f"api-key:{name}"
        await self.app(scope, receive, send)


def _wants_page(scope: Scope, path: str) -> bool:
    if path.startswith("/api/") or path in ("/metrics", "/openapi.json"):
        return False
    if scope["method"] not in ("GET", "HEAD"):
        return False
    accept = dict(scope.get("headers") or []).get(b"accept", b"").decode("latin-1")
    return "text/html" in accept


def _quote_next(path: str) -> str:
    from urllib.parse import quote

    return quote(path, safe="/")


def _safe_next(value: str | None) -> str:
    """Only a path on this site (no ``//host``, no scheme)."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ipa: log in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{{font-family:system-ui,sans-serif;max-width:24rem;margin:4rem auto;padding:0 1rem}}
input,button{{font:inherit;padding:.4rem;width:100%;box-sizing:border-box;margin:.3rem 0}}
.error{{color:#b00020}}</style></head>
<body><h1>ipa</h1>{message}
<form method="post" action="/login">
<input type="hidden" name="next" value="{next}">
<label for="key">API key</label>
<input id="key" name="key" type="password" autocomplete="current-password" autofocus required>
<button type="submit">Log in</button></form></body></html>
"""


def login_routes(keys: ApiKeys, sessions: Sessions, throttle: Throttle) -> list[Route]:
    """``GET /login`` (a small form), ``POST /login`` (form or JSON ``{"key"}``: opens a
    session), and ``POST /logout`` (revokes it)."""

    async def login_form(request: Request) -> HTMLResponse:
        if not keys.enabled:
            return HTMLResponse(LOGIN_PAGE.format(
                message="<p>No API keys are configured: nothing to log in to.</p>",
                next="/"))
        return HTMLResponse(LOGIN_PAGE.format(
            message="", next=html.escape(_safe_next(request.query_params.get("next")))))

    async def login(request: Request) -> Response:
        is_json = request.headers.get("content-type", "").startswith("application/json")
        client = client_address(request.scope)
        wait = throttle.retry_after(client) if keys.enabled else None
        if wait is not None:
            if is_json:
                return too_many_attempts(wait)
            page = LOGIN_PAGE.format(
                message=f'<p class="error">Too many wrong keys: try again in {wait} s.</p>',
                next="/")
            return HTMLResponse(page, 429, headers={"retry-after": str(wait)})
        raw = await read_body(request, 16 * 1024)
        fields: dict[str, Any]
        if is_json:
            fields = json_object(raw or b"{}")
        else:
            fields = dict(parse_qsl(raw.decode("utf-8", "replace")))
        key = fields.get("key")
        if not isinstance(key, str) or not key:
            raise BadRequest("login needs the field 'key'")
        name = keys.name_for_key(key) if keys.enabled else None
        if name is None:
            if keys.enabled:
                throttle.failed(client)
            if is_json:
                return error_response(401, "unauthorized", "wrong API key")
            page = LOGIN_PAGE.format(message='<p class="error">Wrong API key.</p>',
                                     next=html.escape(_safe_next(fields.get("next"))))
            return HTMLResponse(page, 401)
        throttle.succeeded(client)
        response: Response
        if is_json:
            response = JSONResponse({"name": name, "actor": f"api-key:{name}"})
        else:
            response = RedirectResponse(_safe_next(fields.get("next")), 303)
        response.set_cookie(COOKIE, await sessions.login(name), max_age=int(sessions.ttl),
                            httponly=True, samesite="lax",
                            secure=request.scope.get("scheme") == "https", path="/")
        return response

    async def logout(request: Request) -> Response:
        token = session_token(request.scope)
        revoked = token is not None and await sessions.logout(token)
        response = JSONResponse({"logged_out": True, "session_revoked": revoked})
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="lax",
                               secure=request.scope.get("scheme") == "https")
        return response

    return [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
