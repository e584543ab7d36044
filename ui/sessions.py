"""Login sessions and the throttle on wrong keys.

A session is a random token (``secrets.token_urlsafe(32)``, 256 bits) that ``POST /login``
sets as the ``ipa_session`` cookie. The server keeps, in memory, a digest of each token with
the key name it stands for and when it expires (12 hours after the login by default,
``--session-ttl``); ``POST /logout`` forgets it, so the old cookie is refused at once.
At most ``limit`` sessions are kept in memory; past that the oldest is dropped.

**Shared by the nodes of a cluster** (``shared``: the node's store rows, ``ipa_sessions``): a
login is also recorded in the store (digest, key name, expiry, and a MAC of them keyed by a
secret the nodes derive from the audit key, which never goes into the database: whoever holds
the database alone cannot make a session). Another node that meets the cookie finds the row,
checks its MAC and expiry, and keeps it in memory; every node looks at the row again after
``recheck`` seconds (1 s), so a logout on one node ends the session on all of them within a
second (at once on the node that logged out). Without ``shared`` (one process, or no audit key)
sessions live in the process: a restart logs everyone out.

:class:`Throttle` counts wrong keys per client address (an IPv6 client by its /64 network, the
block one machine usually has): after ``limit`` failures within ``window`` seconds the client's
next key is not checked at all until the oldest failure leaves the window; the caller answers
429 with ``Retry-After``. Other clients are not affected; a right key clears the client's count.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

DEFAULT_TTL = 12 * 3600.0
"""Seconds a session lasts after its login."""


@dataclass(frozen=True)
class Session:
    name: str
    expires: float
    checked: float = math.inf  # when the store's row was last looked at (inf: local only)


class SharedSessions(Protocol):
    """Where the nodes of a cluster keep sessions (the node's store rows)."""

    async def put_session(self, digest: bytes, name: str, expires_at: float,
                          mac: str) -> None: ...

    async def get_session(self, digest: bytes) -> tuple[str, float, str] | None: ...

    async def delete_session(self, digest: bytes) -> None: ...


class Sessions:
    """Open sessions by token digest; expired ones are dropped when met or when one opens."""

    def __init__(self, ttl: float = DEFAULT_TTL, *, limit: int = 10_000,
                 clock: Callable[[], float] = time.monotonic,
                 shared: SharedSessions | None = None, secret: bytes = b"",
                 recheck: float = 1.0) -> None:
        if not ttl > 0:
            raise ValueError(f"a session's lifetime must be > 0 seconds, not {ttl!r}")
        if shared is not None and not secret:
            raise ValueError("shared sessions need a secret to sign their rows")
        self.ttl = ttl
        self.limit = limit
        self.clock = clock
        self.shared = shared
        self._secret = secret
        self._recheck = recheck
        self._open: dict[bytes, Session] = {}

    async def login(self, name: str) -> str:
        """A new session (recorded in the store too when shared); returns its token."""
        token = self.open(name)
        if self.shared is not None:
            digest = _digest(token)
            expires_at = time.time() + self.ttl
            await self.shared.put_session(digest, name, expires_at,
                                          self._mac(digest, name, expires_at))
            self._open[digest] = Session(name, self._open[digest].expires, self.clock())
        return token

    async def name_of(self, token: str) -> str | None:
        """The key name of a live session, looking in the store when shared (see the module
        doc), or None."""
        digest = _digest(token)
        session = self._open.get(digest)
        now = self.clock()
        if self.shared is None or (session is not None and now - session.checked < self._recheck):
            return self.name_for(token)
        row = await self.shared.get_session(digest)
        if row is None:
            self._open.pop(digest, None)
            return None
        name, expires_at, mac = row
        left = expires_at - time.time()
        if left <= 0 or not hmac.compare_digest(mac, self._mac(digest, name, expires_at)):
            self._open.pop(digest, None)
            return None
        while len(self._open) >= self.limit:
            del self._open[next(iter(self._open))]
        self._open[digest] = Session(name, now + left, now)
        return name

    async def logout(self, token: str) -> bool:
        """End a session everywhere; True if it was open here or in the store."""
        digest = _digest(token)
        known = self.revoke(token)
        if self.shared is not None:
            known = known or await self.shared.get_session(digest) is not None
            await self.shared.delete_session(digest)
        return known

    def _mac(self, digest: bytes, name: str, expires_at: float) -> str:
        message = digest + b"\0" + name.encode() + b"\0" + repr(expires_at).encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def __len__(self) -> int:
        return len(self._open)

    def open(self, name: str) -> str:
        """A new session for the key ``name``; returns its token (the cookie's value)."""
        now = self.clock()
        for digest in [d for d, s in self._open.items() if s.expires <= now]:
            del self._open[digest]
        while len(self._open) >= self.limit:
            del self._open[next(iter(self._open))]
        token = secrets.token_urlsafe(32)
        self._open[_digest(token)] = Session(name, now + self.ttl)
        return token

    def name_for(self, token: str) -> str | None:
        """The key name of a live session, or None (unknown, revoked or expired)."""
        digest = _digest(token)
        session = self._open.get(digest)
        if session is None:
            return None
        if session.expires <= self.clock():
            del self._open[digest]
            return None
        return session.name

    def revoke(self, token: str) -> bool:
        """Forget a session; True if it was open."""
        return self._open.pop(_digest(token), None) is not None


def _digest(token: str) -> bytes:
    # Kept by digest: the dict lookup then leaks nothing useful about a token through timing,
    # and a memory dump holds no usable cookie.
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


class Throttle:
    """Failed attempts per client within a sliding window."""

    def __init__(self, limit: int = 10, window: float = 60.0, *, clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clients = clients
        self.clock = clock
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, client: str | None) -> int | None:
        """Whole seconds ``client`` must wait before its next attempt is checked, or None."""
        failures = self._failures.get(_client_key(client))
        if failures is None or len(failures) < self.limit:
            return None
        wait = failures[0] + self.window - self.clock()
        if wait <= 0:
            return None
        return max(1, math.ceil(wait))

    def failed(self, client: str | None) -> None:
        key = _client_key(client)
        now = self.clock()
        failures = self._failures.pop(key, None) or deque(maxlen=self.limit)
        while failures and failures[0] + self.window <= now:
            failures.popleft()
        failures.append(now)
        self._failures[key] = failures  # re-inserted: the dict's order is least recent first
        while len(self._failures) > self.clients:
            del self._failures[next(iter(self._failures))]

    def succeeded(self, client: str | None) -> None:
        self._failures.pop(_client_key(client), None)


def _client_key(client: str | None) -> str:
    if not client:
        return ""
    try:
        ip = ipaddress.ip_address(client)
    except ValueError:
        return client
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
