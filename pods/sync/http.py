"""REST calls to an outside system, with every answer classified into success or a
:class:`SyncError` (see the table in specs/sync): redirects followed as GitHub documents them,
lists read page by page (``Link: rel="next"``), conditional GETs by ETag, and rate limits told
apart from refusals by the signals GitHub documents."""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from ipa.domain import clean_text

from .errors import SyncError

NOT_MODIFIED = object()
"""What :meth:`RestApi.get` and :meth:`RestApi.get_all` return when nothing changed since the
last read."""

REDIRECTS = frozenset({301, 302, 307, 308})
"""Followed with the same method and body. GitHub documents 301 as "this and all future
requests go to Location" and 302/307 as "repeat the request verbatim at Location"; a PATCH
turned into a GET would report an update that never happened."""

MAX_REDIRECTS = 5
PER_PAGE = 100
"""GitHub's largest page: the fewest requests for a long list."""

MAX_PAGES = 100
"""A bound on one list (10,000 items at ``PER_PAGE``): a ``Link`` that never ends is an error."""

_RATE_LIMIT_WORDS = re.compile(r"rate.?limit|abuse detection", re.IGNORECASE)


@dataclass(frozen=True)
class _Page:
    """One page of a list as last read: its ETag, its items and the next page's URL."""

    etag: str | None
    items: list[Any]
    next: str | None


class RestApi:
    """One outside system's REST API, as one connector uses it."""

    def __init__(self, connector: str, client: httpx.AsyncClient, base_url: str,
                 headers: dict[str, str], clock: Callable[[], datetime]) -> None:
        self.connector = connector
        self._client = client
        self._base = base_url.rstrip("/")
        self._origin = _origin(httpx.URL(self._base))
        self._base_path = httpx.URL(self._base).path.rstrip("/")
        self._headers = headers
        self._clock = clock
        self._etags: dict[str, str] = {}
        self._pages: dict[str, _Page] = {}
        self._moves: list[tuple[str, str]] = []

    def take_moves(self) -> list[tuple[str, str]]:
        """The permanent redirects (301, 308) followed since the last call, as (path asked,
        path it moved to), oldest first."""
        moves, self._moves = self._moves, []
        return moves

    async def get(self, path: str, *, params: dict[str, Any] | None = None,
                  conditional: bool = False) -> Any:
        """The JSON at ``path``; with ``conditional``, :data:`NOT_MODIFIED` when its ETag
        still matches the last read."""
        url = self._url(path, params or {})
        etag = self._etags.get(url) if conditional else None
        response = await self._send("GET", url, None, {"If-None-Match": etag} if etag else {})
        if response.status_code == 304:
            return NOT_MODIFIED
        if conditional and response.headers.get("etag"):
            self._etags[url] = response.headers["etag"]
        return self._json(response, "GET", url)

    async def get_all(self, path: str, *, params: dict[str, Any] | None = None,
                      conditional: bool = False) -> Any:
        """Every item of the list at ``path``, read ``PER_PAGE`` at a time following
        ``Link: rel="next"`` to the end.

        With ``conditional``, each page is asked with its ETag, except the last one, which is
        read again in full: an item added to a full last page changes none of the pages read
        before, only the last one's ``Link``. :data:`NOT_MODIFIED` when no page changed.
        """
        url: str | None = self._url(path, {**(params or {}), "per_page": PER_PAGE})
        items: list[Any] = []
        seen: set[str] = set()
        changed = not conditional
        while url is not None:
            if url in seen or len(seen) == MAX_PAGES:
                raise SyncError(self.connector, f"GET {path}: its pages do not end (page "
                                                f"{len(seen) + 1} is {self._path(url)})")
            seen.add(url)
            cached = self._pages.get(url) if conditional else None
            etag = cached.etag if cached is not None and cached.next is not None else None
            response = await self._send("GET", url, None,
                                        {"If-None-Match": etag} if etag else {})
            if response.status_code == 304 and cached is not None:
                page = cached
            else:
                data = self._json(response, "GET", url)
                if not isinstance(data, list):
                    raise SyncError(self.connector, f"GET {self._path(url)} answered "
                                                    f"{type(data).__name__}, not a list")
                page = _Page(response.headers.get("etag"), data, self._next(response))
                if conditional:
                    changed = changed or cached is None or (cached.items, cached.next) != (
                        page.items, page.next)
                    self._pages[url] = page
            items.extend(page.items)
            url = page.next
        return items if changed else NOT_MODIFIED

    def forget(self, path: str) -> None:
        """Drop what is remembered of the list at ``path``: the next read returns it whole,
        even when no page changed (its reader could not take it in the last time)."""
        self._pages.pop(self._url(path, {"per_page": PER_PAGE}), None)

    async def send(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """``method`` ``path`` with a JSON ``body``; the JSON answer (``None`` when empty)."""
        url = self._url(path, {})
        return self._json(await self._send(method, url, body, {}), method, url)

    # -- one request, its redirects and its answer --------------------------------------------

    async def _send(self, method: str, url: str, body: dict[str, Any] | None,
                    headers: dict[str, str]) -> httpx.Response:
        asked = self._path(url)
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._request(method, url, body, headers)
            if response.status_code not in REDIRECTS:
                break
            target = self._location(method, url, response)
            if response.status_code in (301, 308):
                self._moves.append((self._path(url), self._path(target)))
            url = target
        else:
            raise SyncError(self.connector, f"{method} {asked} was redirected more than "
                                            f"{MAX_REDIRECTS} times (a redirect loop?)")
        status = response.status_code
        if 200 <= status < 300 or (status == 304 and "If-None-Match" in headers):
            return response
        if status < 400:
            raise SyncError(self.connector, f"{method} {self._path(url)} answered {status}, "
                                            "which ipa does not follow", status_code=status)
        raise self._error(method, self._path(url), response)

    async def _request(self, method: str, url: str, body: dict[str, Any] | None,
                       headers: dict[str, str]) -> httpx.Response:
        try:
            return await self._client.request(method, url, json=body,
                                              headers={**self._headers, **headers})
        except httpx.TimeoutException:
            raise SyncError(self.connector, f"{method} {self._path(url)} timed out",
                            transient=True) from None
        except httpx.TransportError as e:
            raise SyncError(self.connector, f"cannot reach {self._base}: {e}",
                            transient=True) from None

    def _location(self, method: str, url: str, response: httpx.Response) -> str:
        """Where a redirect points, on this system's host only (the credentials go along)."""
        what = f"{method} {self._path(url)} answered {response.status_code}"
        location = response.headers.get("location")
        if not location:
            raise SyncError(self.connector, f"{what} without a Location to go to")
        try:
            target = httpx.URL(url).join(location)
        except httpx.InvalidURL:
            raise SyncError(self.connector, f"{what} to {location[:200]!r}, not a URL") from None
        if _origin(target) != self._origin:
            raise SyncError(self.connector, f"{what} to another host ({target.host}): not "
                                            "followed, the credentials would go with it")
        return str(target)

    def _next(self, response: httpx.Response) -> str | None:
        """The next page's URL from the ``Link`` header; ``None`` on the last page."""
        link = response.links.get("next", {}).get("url")
        if not link:
            return None
        url = str(response.request.url)
        try:
            target = httpx.URL(url).join(link)
        except httpx.InvalidURL:
            raise SyncError(self.connector, f"GET {self._path(url)}: its Link header names "
                                            f"{link[:200]!r}, not a URL") from None
        if _origin(target) != self._origin:
            raise SyncError(self.connector, f"GET {self._path(url)}: its next page is on "
                                            f"another host ({target.host}): not read")
        return str(target)

    def _json(self, response: httpx.Response, method: str, url: str) -> Any:
        """The answer's JSON (``None`` when empty); a 2xx that is not JSON is an error."""
        try:
            return _decoded(response)
        except ValueError:
            said = response.text[:100].strip()
            raise SyncError(self.connector, f"{method} {self._path(url)} answered "
                                            f"{response.status_code} with something that is "
                                            f"not JSON: {said!r}", transient=True) from None

    def _url(self, path: str, params: dict[str, Any]) -> str:
        url = httpx.URL(f"{self._base}{path}")
        return str(url.copy_merge_params(params) if params else url)

    def _path(self, url: str | httpx.URL) -> str:
        """``url`` as the path the connector asked for (after the base URL), for messages."""
        parsed = httpx.URL(url)
        path = parsed.path
        if self._base_path and path.startswith(f"{self._base_path}/"):
            path = path[len(self._base_path):]
        return path + (f"?{parsed.query.decode()}" if parsed.query else "")

    def _error(self, method: str, path: str, response: httpx.Response) -> SyncError:
        status = response.status_code
        said = _message(response)
        what = f"{method} {path} answered {status}{f': {said}' if said else ''}"
        now = self._clock()
        if _rate_limited(response, said):
            wait, source = _limit_wait(response, now)
            return SyncError(self.connector, f"rate limited, {source} ({what})", transient=True,
                             retry_after=wait, status_code=status, rate_limited=True)
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
                             retry_after=_retry_after(response.headers.get("retry-after"), now),
                             status_code=status)
        return SyncError(self.connector, what, status_code=status)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _decoded(response: httpx.Response) -> Any:
    """The answer's JSON, its lone surrogates (``"\\ud800"``) made U+FFFD: what a remote
    system says becomes events, which must be storable. Raises ``ValueError`` if not JSON."""
    if not response.content:
        return None
    return clean_text(response.json())


def _message(response: httpx.Response) -> str:
    try:
        data = _decoded(response)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return response.text[:200].strip()
    parts = [str(data.get("message") or "")]
    errors = data.get("errors")
    for error in errors if isinstance(errors, list) else []:  # GitHub's 422 details
        parts.append(str(error.get("message") or error) if isinstance(error, dict) else str(error))
    messages = data.get("errorMessages")
    parts += [str(m) for m in messages] if isinstance(messages, list) else []  # JIRA
    return "; ".join(p for p in parts if p)


def _rate_limited(response: httpx.Response, said: str) -> bool:
    """GitHub's documented signs of a rate limit: any 429; a 403 with ``retry-after``, with
    ``x-ratelimit-remaining: 0``, or whose message speaks of one ("You have exceeded a
    secondary rate limit", "API rate limit exceeded", formerly "abuse detection"). Any other
    403 is a permission the token lacks."""
    if response.status_code == 429:
        return True
    headers = response.headers
    return response.status_code == 403 and (
        "retry-after" in headers or headers.get("x-ratelimit-remaining") == "0"
        or bool(_RATE_LIMIT_WORDS.search(said)))


def _limit_wait(response: httpx.Response, now: datetime) -> tuple[float | None, str]:
    """Seconds a rate limit asks to wait (``None``: it does not say) and where that comes
    from, in GitHub's order: ``retry-after``; ``x-ratelimit-reset`` when
    ``x-ratelimit-remaining`` is 0."""
    headers = response.headers
    wait = _retry_after(headers.get("retry-after"), now)
    if wait is not None:
        return wait, f"retry-after {headers['retry-after'].strip()[:40]}"
    if headers.get("x-ratelimit-remaining") == "0":
        try:
            reset = float(headers.get("x-ratelimit-reset", ""))
            at = datetime.fromtimestamp(reset, UTC)
        except (ValueError, OverflowError, OSError):
            return None, "the limit is used up, with no readable x-ratelimit-reset"
        return max(0.0, reset - now.timestamp()), f"the limit is used up until {at.isoformat()}"
    return None, "no wait given"


def _retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` in seconds from ``now``: a number of seconds or an HTTP date (RFC 9110);
    ``None`` when absent or unreadable."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000": UTC, as RFC 5322 says
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - now).total_seconds())
    return max(0.0, seconds) if math.isfinite(seconds) else None
