"""REST calls to an outside system, with every answer classified into success or a
:class:`SyncError` (see the table in specs/sync), and conditional GETs by ETag."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from ipa.domain import clean_text

from .errors import SyncError

NOT_MODIFIED = object()
"""What :meth:`RestApi.get` returns when the resource did not change since the last read."""


class RestApi:
    """One outside system's REST API, as one connector uses it."""

    def __init__(self, connector: str, client: httpx.AsyncClient, base_url: str,
                 headers: dict[str, str], clock: Callable[[], datetime]) -> None:
        self.connector = connector
        self._client = client
        self._base = base_url.rstrip("/")
        self._headers = headers
        self._clock = clock
        self._etags: dict[str, str] = {}

    async def get(self, path: str, *, conditional: bool = False) -> Any:
        """The JSON at ``path``; with ``conditional``, :data:`NOT_MODIFIED` when its ETag
        still matches the last read."""
        headers = {}
        if conditional and path in self._etags:
            headers["If-None-Match"] = self._etags[path]
        response = await self._send("GET", path, None, headers)
        if response.status_code == 304:
            return NOT_MODIFIED
        if conditional and response.headers.get("etag"):
            self._etags[path] = response.headers["etag"]
        return _json(response)

    async def send(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """``method`` ``path`` with a JSON ``body``; the JSON answer (``None`` when empty)."""
        return _json(await self._send(method, path, body, {}))

    async def _send(self, method: str, path: str, body: dict[str, Any] | None,
                    headers: dict[str, str]) -> httpx.Response:
        url = f"{self._base}{path}"
        try:
            response = await self._client.request(method, url, json=body,
                                                  headers={**self._headers, **headers})
        except httpx.TimeoutException:
            raise SyncError(self.connector, f"{method} {path} timed out", transient=True) from None
        except httpx.TransportError as e:
            raise SyncError(self.connector, f"cannot reach {self._base}: {e}",
                            transient=True) from None
        if response.status_code < 400:
            return response
        raise self._error(method, path, response)

    def _error(self, method: str, path: str, response: httpx.Response) -> SyncError:
        status = response.status_code
        said = _message(response)
        what = f"{method} {path} answered {status}{f': {said}' if said else ''}"
        limited = _rate_limit_wait(response, self._clock())
        if status == 429 or (status == 403 and limited is not None):
            return SyncError(self.connector, f"rate limited ({what})", transient=True,
                             retry_after=limited, status_code=status)
        if status == 401:
            return SyncError(self.connector, f"the token was refused (wrong or expired): {what}",
                             status_code=status, incident="auth")
        if status == 403:
            return SyncError(self.connector, f"the token may not do this: {what}",
                             status_code=status, incident="auth")
        if status == 404:
            return SyncError(self.connector, f"not found: {what}", status_code=status,
                             incident="repository_not_found")
        if status == 422:
            return SyncError(self.connector, f"the request was refused as invalid: {what}",
                             status_code=status, incident="rejected")
        if status >= 500:
            return SyncError(self.connector, f"server error: {what}", transient=True,
                             retry_after=limited, status_code=status)
        return SyncError(self.connector, what, status_code=status)


def _json(response: httpx.Response) -> Any:
    """The answer's JSON, its lone surrogates (``"\\ud800"``) made U+FFFD: what a remote
    system says becomes events, which must be storable."""
    if not response.content:
        return None
    try:
        return clean_text(response.json())
    except ValueError:
        return None


def _message(response: httpx.Response) -> str:
    data = _json(response)
    if not isinstance(data, dict):
        return response.text[:200].strip()
    parts = [str(data.get("message") or "")]
    for error in data.get("errors") or []:  # GitHub's 422 details
        parts.append(str(error.get("message") or error) if isinstance(error, dict) else str(error))
    parts += [str(m) for m in data.get("errorMessages") or []]  # JIRA
    return "; ".join(p for p in parts if p)


def _rate_limit_wait(response: httpx.Response, now: datetime) -> float | None:
    """Seconds the server asks to wait: ``Retry-After`` (seconds), or GitHub's reset time
    when ``x-ratelimit-remaining`` is 0; ``None`` when it says nothing."""
    retry_after = response.headers.get("retry-after")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            pass
    if response.headers.get("x-ratelimit-remaining") == "0":
        try:
            reset = float(response.headers["x-ratelimit-reset"])
        except (KeyError, ValueError):
            return None
        return max(0.0, reset - now.timestamp())
    return None
