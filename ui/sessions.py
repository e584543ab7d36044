"""Login sessions and the throttle on wrong keys.

A session is a random token (``secrets.token_urlsafe(32)``, 256 bits) that ``POST /login``
sets as the ``ipa_session`` cookie. The server keeps, in memory, a digest of each token with
the key name it stands for and when it expires (12 hours after the login by default,
``--session-ttl``); ``POST /logout`` forgets it, so the old cookie is refused at once.
Sessions live in the process: a restart logs everyone out (they log in again with their key),
which is the price of revocation without a database table. At most ``limit`` sessions are kept;
past that the oldest is dropped.

:class:`Throttle` counts wrong keys per client address (an IPv6 client by its /64 network, the
block one machine usually has): after ``limit`` failures within ``window`` seconds the client's
next key is not checked at all until the oldest failure leaves the window; the caller answers
429 with ``Retry-After``. Other clients are not affected; a right key clears the client's count.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_TTL = 12 * 3600.0
"""Seconds a session lasts after its login."""


@dataclass(frozen=True)
class Session:
    name: str
    expires: float


class Sessions:
    """Open sessions by token digest; expired ones are dropped when met or when one opens."""

    def __init__(self, ttl: float = DEFAULT_TTL, *, limit: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not ttl > 0:
            raise ValueError(f"a session's lifetime must be > 0 seconds, not {ttl!r}")
        self.ttl = ttl
        self.limit = limit
        self.clock = clock
        self._open: dict[bytes, Session] = {}

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
