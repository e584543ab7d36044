"""API keys: who may use the API, and whose name goes on the events it writes.

Keys come from ``IPA_API_KEYS`` (``name1:key1,name2:key2``) or a keys file (one ``name:key``
a line; blank lines and ``#`` comments skipped; ``--api-keys-file`` / ``IPA_API_KEYS_FILE``).
When keys are configured, every request except ``/healthz`` and ``/login`` needs the header
``X-API-Key`` or the session cookie that ``POST /login`` sets; ``/api/*`` and the other JSON
routes answer 401 without one (before any handler runs, so nothing is written), and an HTML
page redirects to ``/login``. The actor of every event written through the API is then
``api-key:<name>``. Without keys, the ``X-IPA-Actor`` header names the actor (default
``user:local``) and ``ipa serve`` listens on a loopback address only.

The session cookie is ``<name>.<HMAC-SHA256(key, "ipa-session:" + name)>``: it outlives a
restart, and dies with its key. Keys and cookies are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import BadRequest, error_response, read_body

COOKIE = "ipa_session"
OPEN_PATHS = frozenset({"/healthz", "/login", "/logout"})
DEFAULT_ACTOR = "user:local"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class KeysError(ValueError):
    """The configured keys cannot be read (the message says where and why)."""


def parse_keys(text: str, where: str, *, separator: str = ",") -> dict[str, str]:
    """``name:key`` entries into {name: key}; a malformed entry is a :class:`KeysError`."""
    keys: dict[str, str] = {}
    entries = text.split(separator) if separator != "\n" else text.splitlines()
    for number, raw in enumerate(entries, start=1):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        name, colon, key = entry.partition(":")
        name, key = name.strip(), key.strip()
        if not colon or not _NAME.fullmatch(name) or len(key) < 8:
            raise KeysError(f"{where}: entry {number} is not name:key (a name of letters, "
                            "digits, '.', '_', '@', '-' and a key of at least 8 characters)")
        if name in keys:
            raise KeysError(f"{where}: the name {name!r} appears twice")
        keys[name] = key
    return keys


def load_keys(keys_file: str | None = None,
              environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The configured keys: ``keys_file`` (or ``IPA_API_KEYS_FILE``) and ``IPA_API_KEYS``."""
    environ = os.environ if environ is None else environ
    keys: dict[str, str] = {}
    path = keys_file or environ.get("IPA_API_KEYS_FILE")
    if path:
        try:
            text = Path(path).expanduser().read_text()
        except OSError as e:
            raise KeysError(f"cannot read the API keys file {path}: {e.strerror}") from None
        keys.update(parse_keys(text, f"API keys file {path}", separator="\n"))
    if environ.get("IPA_API_KEYS"):
        for name, key in parse_keys(environ["IPA_API_KEYS"], "IPA_API_KEYS").items():
            if name in keys:
                raise KeysError(f"the API key name {name!r} is in both IPA_API_KEYS and the "
                                "keys file")
            keys[name] = key
    return keys


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
        given = key.encode()
        for name, candidate in self._keys.items():
            if hmac.compare_digest(given, candidate.encode()):
                found = name
        return found

    def cookie_for(self, name: str) -> str:
        return f"{name}.{self._seal(name, self._keys[name])}"

    def name_for_cookie(self, cookie: str) -> str | None:
        name, dot, seal = cookie.partition(".")
        key = self._keys.get(name)
        if not dot or key is None:
            return None
        return name if hmac.compare_digest(seal.encode(), self._seal(name, key).encode()) else None

    @staticmethod
    def _seal(name: str, key: str) -> str:
        return hmac.new(key.encode(), f"ipa-session:{name}".encode(), hashlib.sha256).hexdigest()

    def identify(self, scope: Scope) -> str | None:
        """The key name of a request (header first, then cookie), or None."""
        headers = dict(scope.get("headers") or [])
        key = headers.get(b"x-api-key")
        if key is not None:
            return self.name_for_key(key.decode("latin-1"))
        cookie_header = headers.get(b"cookie", b"").decode("latin-1")
        for part in cookie_header.split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return self.name_for_cookie(value)
        return None


def actor(request: Request) -> str:
    """Who a request acts as: ``api-key:<name>``, or the ``X-IPA-Actor`` header without keys."""
    state = request.scope.get("state") or {}
    if "actor" in state:
        return state["actor"]
    return request.headers.get("x-ipa-actor") or DEFAULT_ACTOR


class RequireKey:
    """ASGI middleware: with keys configured, refuse requests without a valid key/cookie."""

    def __init__(self, app: ASGIApp, keys: ApiKeys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.keys.enabled:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path in OPEN_PATHS or path.startswith("/static/"):
            await self.app(scope, receive, send)
            return
        name = self.keys.identify(scope)
        if name is None:
            response: Response
            if _wants_page(scope, path):
                response = RedirectResponse(f"/login?next={_quote_next(path)}", 303)
            else:
                response = error_response(
                    401, "unauthorized",
                    "an API key is required: send the X-API-Key header (or log in at /login)",
                )
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


def login_routes(keys: ApiKeys) -> list[Route]:
    """``GET /login`` (a small form), ``POST /login`` (form or JSON ``{"key"}``), and
    ``POST /logout``."""

    async def login_form(request: Request) -> HTMLResponse:
        if not keys.enabled:
            return HTMLResponse(LOGIN_PAGE.format(
                message="<p>No API keys are configured: nothing to log in to.</p>",
                next="/"))
        return HTMLResponse(LOGIN_PAGE.format(
            message="", next=html.escape(_safe_next(request.query_params.get("next")))))

    async def login(request: Request) -> Response:
        raw = await read_body(request, 16 * 1024)
        is_json = request.headers.get("content-type", "").startswith("application/json")
        fields: dict[str, Any]
        if is_json:
            try:
                fields = json.loads(raw or b"{}")
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise BadRequest(f"body is not valid JSON: {e}") from None
            if not isinstance(fields, dict):
                raise BadRequest("expected a JSON object body")
        else:
            fields = dict(parse_qsl(raw.decode("utf-8", "replace")))
        key = fields.get("key")
        if not isinstance(key, str) or not key:
            raise BadRequest("login needs the field 'key'")
        name = keys.name_for_key(key) if keys.enabled else None
        if name is None:
            if is_json:
                return error_response(401, "unauthorized", "wrong API key")
            page = LOGIN_PAGE.format(message='<p class="error">Wrong API key.</p>',
                                     next=html.escape(_safe_next(fields.get("next"))))
            return HTMLResponse(page, 401)
        response: Response
        if is_json:
            response = JSONResponse({"name": name, "actor": f"api-key:{name}"})
        else:
            response = RedirectResponse(_safe_next(fields.get("next")), 303)
        response.set_cookie(COOKIE, keys.cookie_for(name), httponly=True, samesite="lax",
                            path="/")
        return response

    async def logout(request: Request) -> Response:
        response = JSONResponse({"logged_out": True})
        response.delete_cookie(COOKIE, path="/")
        return response

    return [
        Route("/login", login_form, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
