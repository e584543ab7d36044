"""The webhook deliveries' HTTP client: ``aiohttp``, connecting only to addresses the caller
checked.

One :class:`HttpClient` per dispatcher: one ``aiohttp.ClientSession`` whose ``TCPConnector``
opens at most ``connections`` connections (the senders' concurrency), any number to one host,
and keeps each idle one :data:`IDLE_FOR` seconds. Why aiohttp: a kept library instead of the
HTTP/1.1 client ipa had written (which took about half the CPU per attempt; see "Speed" in
``specs/webhooks/README.md``), and not httpx, which the sync connectors use: on this project's
2-core machines httpx posts too few messages a second for the deliveries' load
(``bench/webhooks.py``).

Each ``POST``: no redirect followed (the caller sees the 3xx and its ``Location``); no proxy
nor ``.netrc`` (``trust_env=False``); no cookies kept; no compression asked for or undone;
TLS checking the certificate against the URL's host name, whatever address is connected to. A
body is read up to :data:`BODY_LIMIT` bytes (its first :data:`KEPT_BYTES` kept; a connection
whose body was not read to its end is closed, not kept). A request whose connection closes, or
breaks, before any answer is sent once more, on a new connection (the receiver closed a kept
one while it was idle); a second such end is an :class:`ExchangeFailed`. Time limits are the
caller's (``anyio.fail_after`` around :meth:`HttpClient.post`), connecting's within
``connect_timeout``.

**Addresses** (:class:`PinnedResolver`): a host name is resolved only by the caller's
``addresses(host, port)`` (the webhooks' ``AddressGuard``: every address checked), asked for
every new connection (aiohttp's DNS cache is off), so a connection goes to an address that was
checked, never to what another DNS answer says. An IP address in the URL is connected to as it
is (the caller checks it).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

BODY_LIMIT = 65_536
KEPT_BYTES = 300
IDLE_FOR = 2.0
"""Seconds an idle connection is kept (less than the 5 s after which uvicorn or Node close
theirs, so one is seldom used just as the receiver closes it)."""

Addresses = Callable[[str, int], Awaitable[Sequence[str]]]
"""``addresses(host, port)``: the IP addresses to connect to for ``host`` (raising when
there are none it may use)."""


class ExchangeFailed(Exception):
    """No answer: the connection failed, closed or broke before one, or it is not HTTP (the
    message says which, in one line)."""


class _Unanswered(ExchangeFailed):
    """The connection closed or broke after the request was sent (or as it was)."""


@dataclass(frozen=True)
class Answer:
    status: int
    location: str | None
    body: bytes
    """Its first :data:`KEPT_BYTES` bytes."""
    retry_after: str | None = None
    """Its ``Retry-After`` header as sent (seconds or an HTTP date), if any."""


class PinnedResolver(AbstractResolver):
    """aiohttp's resolver: a host's addresses are what ``addresses`` answers, nothing else."""

    def __init__(self, addresses: Addresses) -> None:
        self._addresses = addresses

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        found: list[ResolveResult] = []
        for address in await self._addresses(host, port):
            kind = socket.AF_INET6 if ":" in address else socket.AF_INET
            if family in (socket.AF_UNSPEC, kind):
                found.append({"hostname": host, "host": address, "port": port,
                              "family": kind, "proto": 0,
                              "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV})
        if not found:
            raise OSError(f"{host} has no address of the family asked for")
        return found

    async def close(self) -> None:
        pass


class HttpClient:
    """Keep-alive connections shared by every task that posts through it (see the module
    doc). ``addresses``: how host names resolve (``None``: by the system, unchecked);
    ``ssl_context``: the TLS settings (default: the system's CAs)."""

    def __init__(self, addresses: Addresses | None = None,
                 ssl_context: ssl.SSLContext | None = None, *, connections: int = 32,
                 connect_timeout: float = 5.0) -> None:
        self._addresses = addresses
        self._ssl = ssl_context or ssl.create_default_context()
        self._connections = connections
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        """The session (made on first use: aiohttp wants the running event loop)."""
        connector = aiohttp.TCPConnector(
            limit=self._connections, limit_per_host=0, keepalive_timeout=IDLE_FOR,
            use_dns_cache=False, ssl=self._ssl,
            resolver=None if self._addresses is None else PinnedResolver(self._addresses))
        self._session = aiohttp.ClientSession(
            connector=connector, trust_env=False, auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(), skip_auto_headers=("Accept-Encoding",),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout))
        return self._session

    async def post(self, url: URL | str, body: bytes, headers: Mapping[str, str]) -> Answer:
        """``POST`` ``body`` with ``headers`` to ``url``; its answer."""
        session = self._session or self._open()
        try:
            response = await self._send(session, url, body, headers)
        except _Unanswered:  # the receiver closed a kept connection while idle: once more
            response = await self._send(session, url, body, headers)
        try:
            return await _answer(response)
        finally:
            response.release()

    async def _send(self, session: aiohttp.ClientSession, url: URL | str, body: bytes,
                    headers: Mapping[str, str]) -> aiohttp.ClientResponse:
        try:
            return await session.post(url, data=body, headers=headers, allow_redirects=False)
        except aiohttp.ClientConnectorError as e:
            raise ExchangeFailed(_unreachable(e)) from None
        except aiohttp.ServerDisconnectedError:
            raise _Unanswered("the connection closed before an answer") from None
        except aiohttp.ClientOSError as e:
            raise _Unanswered(f"the connection broke ({e})"[:300]) from None
        except aiohttp.ConnectionTimeoutError:
            raise ExchangeFailed(f"cannot connect within {self._connect_timeout:g} s") from None
        except aiohttp.ClientResponseError as e:
            words = " ".join(str(e.message).split())
            raise ExchangeFailed(f"the answer is not HTTP ({words})"[:300]) from None
        except aiohttp.ClientError as e:
            raise ExchangeFailed(f"{type(e).__name__}: {e}"[:300]) from None

    async def aclose(self) -> None:
        """Close every connection kept."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()


async def _answer(response: aiohttp.ClientResponse) -> Answer:
    """The answer's status, ``Location`` and first bytes, its body read up to the limit (an
    answer cut short is what came of it)."""
    kept, size = bytearray(), 0
    try:
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if len(kept) < KEPT_BYTES:
                kept += chunk[:KEPT_BYTES - len(kept)]
            if size > BODY_LIMIT:
                break  # the rest is left unread: the connection is closed, not kept
    except aiohttp.ClientPayloadError:
        pass
    location = response.headers.get("Location")
    retry_after = response.headers.get("Retry-After")
    return Answer(response.status, None if location is None else location[:300], bytes(kept),
                  None if retry_after is None else retry_after[:100])


def _unreachable(e: aiohttp.ClientConnectorError) -> str:
    """What went wrong connecting, in one line."""
    if isinstance(e, aiohttp.ClientConnectorCertificateError):
        cause = e.certificate_error
        return f"TLS: {getattr(cause, 'verify_message', None) or cause}"[:300]
    if isinstance(e, aiohttp.ClientConnectorSSLError):
        return f"TLS: {getattr(e.os_error, 'reason', None) or e.os_error}"[:300]
    return f"cannot connect: {e.os_error.strerror or e.os_error}"[:300]
