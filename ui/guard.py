"""What a request must be before ipa looks at it: for a known Host, from this site when it
changes something, with a JSON body on a JSON route, and who forwarded it.

:class:`Guard` is the app's outermost middleware. In order:

1. **Trusted proxies.** Only a peer listed in ``trusted_proxies`` (addresses or networks) may
   speak for someone else: from it, ``X-Forwarded-For`` names the client (the rightmost address
   that is not a trusted proxy), ``X-Forwarded-Proto`` the scheme (``https`` makes the session
   cookie ``Secure``) and ``X-IPA-Actor`` the actor of what the request writes. From any other
   peer these headers are ignored.
2. **Host allow-list** (against DNS rebinding): the ``Host`` must be a loopback name
   (``localhost``, ``127.0.0.1``, ``[::1]``) or one of ``allowed_hosts`` (a name, ``*.suffix``,
   or ``*`` for any), with any port; otherwise 400 ``host_not_allowed``. ``GET /healthz`` is
   answered for any Host (it tells nothing), so health probes need no configuration.
3. **Origin check** on POST, PUT, PATCH and DELETE: ``Origin`` (else the ``Referer``'s origin)
   must be this server's own (the request's scheme and Host) or one of ``allowed_origins``;
   otherwise 403 ``origin_not_allowed``. A request with neither header (curl, ``ipa task``,
   scripts) is not a browser's and passes: browsers send ``Origin`` on every cross-origin POST.
4. **JSON only**: a state-changing request's ``Content-Type`` must be ``application/json``
   (``POST /login`` also takes ``application/x-www-form-urlencoded``, the login form, and
   ``POST /api/import`` ``application/gzip``, a task bundle); a body
   without a content type, or any other type (``text/plain``, forms, multipart: what another
   site can send without a CORS preflight) is 415 ``unsupported_media_type``. A request with no
   body and no content type (``approve`` with nothing to say) passes.

A client that goes away in the middle of its request gets no answer and leaves no traceback in
the log (Starlette raises ``ClientDisconnect``; nobody is left to tell).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_response

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
FORM_ROUTES = frozenset({"/login"})
"""Routes that also take a urlencoded form (what an HTML ``<form>`` posts)."""
BUNDLE = "application/gzip"
BUNDLE_ROUTES = frozenset({"/api/import"})
"""Routes that take a task bundle instead (``ipa export``'s file; not a type another site
can send without a CORS preflight)."""
MAX_ACTOR = 200
_DEFAULT_PORTS = {"http": 80, "https": 443}


def split_list(values: Iterable[str] | None) -> list[str]:
    """Repeated options and comma lists as one list (``["a,b", "c"]`` → ``[a, b, c]``)."""
    return [item.strip() for value in values or () for item in value.split(",") if item.strip()]


def host_name(host: str) -> str:
    """A Host header's (or an allow-list entry's) name without its port, lower case; an IPv6
    address in brackets, as it appears in a URL."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    if host.count(":") > 1:  # a bare IPv6 address (an entry such as ::1)
        return f"[{host}]"
    return host.partition(":")[0]


class HostPolicy:
    """The names a request's Host may carry: loopback ones and ``extra`` (names, ``*.suffix``,
    or ``*`` for any)."""

    def __init__(self, extra: Iterable[str] = ()) -> None:
        names = {host_name(entry) for entry in (*LOOPBACK_HOSTS, *extra)}
        self.any = "*" in names
        self.suffixes = tuple(name[1:] for name in names if name.startswith("*."))
        self.names = frozenset(name for name in names if not name.startswith("*"))

    def allows(self, host: str) -> bool:
        name = host_name(host)
        if not name:
            return False
        return self.any or name in self.names or name.endswith(self.suffixes)

    def describe(self) -> str:
        if self.any:
            return "any host"
        return ", ".join(sorted(self.names) + [f"*{suffix}" for suffix in self.suffixes])


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL (default ports left out), lower case; None when the
    URL has no scheme or host (``null``, a relative path)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" + (f":{port}" if port and port != _DEFAULT_PORTS[scheme] else "")


class TrustedProxies:
    """The peers (addresses or networks, e.g. ``10.0.0.0/8``) whose forwarding headers count."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.networks: list[Any] = []
        for entry in entries:
            try:
                self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                raise ValueError(f"trusted proxy {entry!r} is not an IP address or network "
                                 "(e.g. 127.0.0.1, 10.0.0.0/8, ::1)") from None

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, address: str | None) -> bool:
        if not self.networks or not address:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client(self, peer: str, forwarded_for: str) -> str:
        """The client a trusted ``peer`` forwarded for: the rightmost address of
        ``X-Forwarded-For`` that is not itself a trusted proxy."""
        for hop in reversed([hop.strip() for hop in forwarded_for.split(",") if hop.strip()]):
            if not self.trusts(hop):
                return hop
        return peer


@dataclass(frozen=True)
class GuardPolicy:
    """What :class:`Guard` lets through (each empty by default: loopback hosts, same-origin
    writes, no proxy)."""

    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()

    def checked(self) -> GuardPolicy:
        """The policy, or a ``ValueError`` naming a malformed entry."""
        for origin in self.allowed_origins:
            if origin_of(origin) != origin.strip().lower().rstrip("/"):
                raise ValueError(f"allowed origin {origin!r} is not scheme://host[:port] "
                                 "(e.g. https://ipa.example.com)")
        TrustedProxies(self.trusted_proxies)
        return self


class Guard:
    """ASGI middleware: the checks of the module docstring, before anything else runs."""

    def __init__(self, app: ASGIApp, policy: GuardPolicy | None = None) -> None:
        self.app = app
        policy = (policy or GuardPolicy()).checked()
        self.hosts = HostPolicy(policy.allowed_hosts)
        self.origins = frozenset(origin_of(origin) for origin in policy.allowed_origins)
        self.proxies = TrustedProxies(policy.trusted_proxies)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            headers.setdefault(name, value)
        state = scope.setdefault("state", {})
        if self.proxies:
            self._forwarded(scope, headers, state)
        if "forwarded_actor" in state and not _printable(state["forwarded_actor"]):
            await error_response(400, "bad_request",
                                 f"X-IPA-Actor must be printable text of at most {MAX_ACTOR} "
                                 "characters")(scope, receive, send)
            return
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        except ClientDisconnect:
            pass

    def _forwarded(self, scope: Scope, headers: dict[bytes, bytes], state: dict) -> None:
        peer = (scope.get("client") or ("", 0))[0]
        if not self.proxies.trusts(peer):
            return
        forwarded_for = headers.get(b"x-forwarded-for")
        if forwarded_for:
            scope["client"] = (self.proxies.client(peer, forwarded_for.decode("latin-1")), 0)
        proto = headers.get(b"x-forwarded-proto", b"").decode("latin-1").strip().lower()
        if proto in ("http", "https"):
            scope["scheme"] = proto
        forwarded_actor = headers.get(b"x-ipa-actor")
        if forwarded_actor is not None:
            state["forwarded_actor"] = forwarded_actor.decode("utf-8", "replace").strip()

    def _refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> Any:
        method, path = scope["method"], scope["path"]
        host = headers.get(b"host", b"").decode("latin-1")
        if not self.hosts.allows(host) and not (path == "/healthz" and method == "GET"):
            shown = host[:100] or "(none)"
            return error_response(
                400, "host_not_allowed",
                f"this ipa server does not answer for the host {shown!r} (it answers "
                f"{self.hosts.describe()}); to serve it, add the name with --allowed-hosts "
                "or IPA_ALLOWED_HOSTS")
        if method not in STATE_CHANGING:
            return None
        sent = headers.get(b"origin")
        if sent is None and b"referer" in headers:
            sent = headers[b"referer"]
        if sent is not None:
            text = sent.decode("latin-1")
            origin = origin_of(text)
            own = origin_of(f"{scope.get('scheme', 'http')}://{host}")
            if origin is None or (origin != own and origin not in self.origins):
                return error_response(
                    403, "origin_not_allowed",
                    f"refused a {method} from another site ({text[:100]!r}): ipa takes changes "
                    f"only from its own pages ({own}); add a site you trust with "
                    "--allowed-origins or IPA_ALLOWED_ORIGINS")
        content_type = headers.get(b"content-type")
        if content_type is None:
            if _has_body(headers):
                return error_response(
                    415, "unsupported_media_type",
                    f"{method} {path[:100]} has a body without a Content-Type: send JSON "
                    "with Content-Type: application/json")
            return None
        media = content_type.decode("latin-1").partition(";")[0].strip().lower()
        if media == JSON or (media == FORM and path in FORM_ROUTES) or (
                media == BUNDLE and path in BUNDLE_ROUTES):
            return None
        wanted = f"a task bundle (Content-Type: {BUNDLE})" if path in BUNDLE_ROUTES else (
            f"a JSON body (Content-Type: {JSON})")
        return error_response(
            415, "unsupported_media_type",
            f"{method} {path[:100]} takes {wanted}, not {media[:100]!r}")


def _has_body(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length", b"0").strip()
    return b"transfer-encoding" in headers or length not in (b"", b"0")


def _printable(text: str) -> bool:
    return 0 < len(text) <= MAX_ACTOR and text.isprintable()
