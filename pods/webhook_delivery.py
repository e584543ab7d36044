"""One attempt at a webhook delivery: where it may go, its signature, the HTTP request.

**Where** (:class:`AddressGuard`): a webhook must not become a way into the network ipa runs
in. Its host name is resolved and every address checked: loopback, private, link-local,
shared (CGNAT), reserved, multicast and unspecified addresses are refused, and so are IPv6
addresses that carry such an IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64). The check is
made when the webhook is registered and again before every attempt, and the HTTP client
resolves host names only through the guard (:meth:`AddressGuard.addresses`: the checked
addresses), so the request goes to an address that was checked (the URL's host kept in
``Host`` and TLS's server name and certificate check) and a DNS answer that changes in between
(DNS rebinding) cannot send it elsewhere. The operator can allow such addresses
(``IPA_WEBHOOK_ALLOW_PRIVATE=1``): then nothing is checked.

**How** (:class:`Courier`): a ``POST`` of the message's JSON with the Standard Webhooks headers
(``webhook-id``: the delivery id, the same on every retry; ``webhook-timestamp``: now;
``webhook-signature``: ``v1,`` + base64 HMAC-SHA256 by the ``standardwebhooks`` package),
through ``webhook_http.HttpClient`` (aiohttp: keep-alive, TLS checked against the URL's host
name), with a time limit on the whole attempt (resolution included), no redirect followed (a
3xx is a failure naming where it pointed), no proxy, and at most the first bytes of an answer
kept.
A 2xx is a delivery; anything else a failure.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import anyio
from standardwebhooks import Webhook
from yarl import URL

from ipa.domain import WebhookRefused
from ipa.eventstore.webhooks import Claimed

from .webhook_http import ExchangeFailed, HttpClient

USER_AGENT = "ipa-webhooks/1"

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(Exception):
    """A webhook's host resolves to an address ipa does not send to (or does not resolve)."""

    code = "webhook_address_refused"


def refused_address(ip: IPAddress) -> str | None:
    """Why ``ip`` may not receive webhooks (``None``: it may)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ()),
                    ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None]
        for inner in embedded:
            if inner is not None and (why := refused_address(inner)) is not None:
                return f"{why} (inside the IPv6 address {ip})"
    for test, words in ((ip.is_unspecified, "unspecified"), (ip.is_loopback, "loopback"),
                        (ip.is_link_local, "link-local"), (ip.is_multicast, "multicast"),
                        (ip.is_reserved, "reserved"), (ip.is_private, "private")):
        if test:
            return f"{ip} is a {words} address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


class AddressGuard:
    """Checks where a webhook may send (see the module doc)."""

    RESOLVED_FOR = 5.0
    """Seconds a host's checked addresses are used again (a burst of deliveries to one host
    resolves it once; the request still goes to an address that was checked)."""

    def __init__(self, allow_private: bool = False, *, resolve_timeout: float = 5.0) -> None:
        self.allow_private = allow_private
        self._timeout = resolve_timeout
        self._resolved: dict[tuple[str, int], tuple[float, list[IPAddress]]] = {}
        self._parsed: dict[str, URL] = {}

    async def check(self, url: str) -> None:
        """:class:`AddressRefused` naming the reason when ``url``'s host may not be sent to
        (``WebhookRefused`` when the HTTP client cannot use the URL at all)."""
        await self.target(url)

    async def target(self, url: str) -> URL:
        """``url`` to send a request to now, its host checked (:class:`AddressRefused` if it
        may not be sent to); the HTTP client connects to what :meth:`addresses` answers."""
        parsed = self._parsed.get(url) or self._parse(url)
        if self.allow_private:
            return parsed
        name = parsed.raw_host
        assert name is not None and parsed.port is not None
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            await self.addresses(name, parsed.port)
        else:
            self._refuse_any(name, [ip])
        return parsed

    async def addresses(self, host: str, port: int) -> list[str]:
        """The addresses ``host`` resolves to, every one checked (:class:`AddressRefused` if
        one may not be sent to); the answer is used again for :attr:`RESOLVED_FOR` seconds.
        The HTTP client's resolver: a connection goes only to these."""
        addresses = await self._addresses(host, port)
        if not self.allow_private:
            self._refuse_any(host, addresses)
        return [str(ip) for ip in addresses]

    def _refuse_any(self, name: str, addresses: list[IPAddress]) -> None:
        for ip in addresses:
            why = refused_address(ip)
            if why is not None:
                raise AddressRefused(
                    f"{name} refused: {why}; ipa sends webhooks to public addresses only "
                    "(the operator can allow others with IPA_WEBHOOK_ALLOW_PRIVATE=1)")

    def _parse(self, url: str) -> URL:
        """``url`` as the HTTP client reads it (kept: a webhook's URL is used again and
        again)."""
        try:
            parsed = URL(url)
            usable = parsed.scheme in ("http", "https") and bool(parsed.raw_host)
        except (ValueError, TypeError) as e:
            raise WebhookRefused("invalid_webhook_url", f"url {url[:100]!r} cannot be used: "
                                 f"{e}") from None
        if not usable:
            raise WebhookRefused("invalid_webhook_url", f"url {url[:100]!r} cannot be used: "
                                 "an http(s) URL with a host is needed")
        if len(self._parsed) > 1000:
            self._parsed.clear()
        self._parsed[url] = parsed
        return parsed

    async def _addresses(self, host: str, port: int) -> list[IPAddress]:
        now = time.monotonic()
        known = self._resolved.get((host, port))
        if known is not None and now - known[0] < self.RESOLVED_FOR:
            return known[1]
        addresses = await self._resolve(host, port)
        if len(self._resolved) > 1000:
            self._resolved.clear()
        self._resolved[(host, port)] = (now, addresses)
        return addresses

    async def _resolve(self, host: str, port: int) -> list[IPAddress]:
        try:
            with anyio.fail_after(self._timeout):
                found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise AddressRefused(f"{host} did not resolve within {self._timeout:g} s") from None
        except (OSError, UnicodeError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            raise AddressRefused(f"{host} does not resolve ({reason})") from None
        addresses = []
        for *_, sockaddr in found:
            ip = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
            if ip not in addresses:
                addresses.append(ip)
        if not addresses:
            raise AddressRefused(f"{host} resolves to no address")
        return addresses


@dataclass(frozen=True)
class Attempt:
    """How one attempt went: ``ok`` (a 2xx), the status code (``None``: no answer), the error
    in one line, how long it took, and how long the receiver asked us to wait before the next
    one (its ``Retry-After``, in seconds)."""

    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: float
    retry_after: float | None = None


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """A ``Retry-After`` header (RFC 9110 §10.2.3: delay-seconds or an HTTP date) in seconds
    from ``now``; ``None`` when absent or not one of the two forms (a date past is 0)."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        at = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if at.tzinfo is None:  # "-0000": UTC, as HTTP dates are
        at = at.replace(tzinfo=UTC)
    return max(0.0, (at - now).total_seconds())


def sign(secret: str, delivery_id: str, at: datetime, body: str) -> dict[str, str]:
    """The Standard Webhooks headers of ``body`` sent as ``delivery_id`` at ``at``."""
    return {"webhook-id": delivery_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": _signer(secret).sign(delivery_id, at, body)}


@functools.lru_cache(maxsize=256)
def _signer(secret: str) -> Webhook:
    return Webhook(secret)  # decodes the secret once, not per message


class Courier:
    """Sends deliveries over HTTP (``webhook_http.HttpClient``), one attempt at a time (see the
    module doc)."""

    def __init__(self, guard: AddressGuard, *, timeout: float = 10.0,
                 ssl_context: ssl.SSLContext | None = None, connections: int = 32) -> None:
        self._guard = guard
        self._timeout = timeout
        self._client = HttpClient(guard.addresses, ssl_context, connections=connections,
                                  connect_timeout=min(timeout, 5.0))

    async def aclose(self) -> None:
        await self._client.aclose()

    async def attempt(self, delivery: Claimed, secret: str) -> Attempt:
        """Send ``delivery`` once; never raises for what the receiver or the network does."""
        started = time.perf_counter()

        def done(ok: bool, code: int | None, error: str | None,
                 retry_after: float | None = None) -> Attempt:
            return Attempt(ok, code, error, (time.perf_counter() - started) * 1000, retry_after)

        try:
            with anyio.fail_after(self._timeout):
                url = await self._guard.target(delivery.url)
                answer = await self._client.post(url, delivery.body.encode(), {
                    "User-Agent": USER_AGENT, "Content-Type": "application/json",
                    **sign(secret, delivery.id, datetime.now(UTC), delivery.body)})
        except (AddressRefused, ExchangeFailed) as e:
            return done(False, None, str(e))
        except TimeoutError:
            return done(False, None, f"no answer within {self._timeout:g} s")
        except Exception as e:  # whatever else: the attempt failed, said
            return done(False, None, f"{type(e).__name__}: {e}"[:300])
        code = answer.status
        if 200 <= code < 300:
            return done(True, code, None)
        if 300 <= code < 400:
            return done(False, code, f"HTTP {code}: redirected to {answer.location or 'nowhere'}"
                        "; webhooks follow no redirects: register the final URL")
        text = " ".join(answer.body.decode("utf-8", "replace").split())
        return done(False, code, f"HTTP {code}: {text or 'no body'}",
                    retry_after_seconds(answer.retry_after, datetime.now(UTC)))

