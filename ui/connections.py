"""How long a client may take and how many may be connected: ``ipa serve``'s
``--timeout-idle``, ``--timeout-header``, ``--timeout-body`` and ``--limit-connections``.

uvicorn 0.54 with httptools closes a keep-alive connection that sends nothing for
``timeout_keep_alive`` seconds *after a response*, and nothing else: a connection that never
sends a request, a request head sent a byte at a time (slowloris) and a body that never ends
stay open for ever; llhttp buffers a head of any size; ``limit_concurrency`` answers requests
with 503 but leaves connections open (and counts the requesting connection itself, so it
refuses at one below its number). :class:`Protocol`, uvicorn's ``HttpToolsProtocol`` passed as
``Config(http=...)``, adds to it:

- **idle**: a new connection must start a request within ``idle`` seconds (uvicorn's
  keep-alive timer, armed at connect too; after a response it is uvicorn's own);
- **header**: a request head must be complete within ``header`` seconds of its first byte and
  hold at most ``max_head`` bytes; else 408 ``request_timeout`` / 431
  ``request_head_too_large``, and the connection closes;
- **body**: a request body must be complete within ``body`` seconds of its head; else 408
  (when nothing was answered yet) and the connection closes; the handler reading it sees a
  disconnect;
- **connections**: with ``connections`` open, a new one is answered 503
  ``too_many_connections`` and closed at once, so idle or slow clients cannot use up the
  process's file descriptors.

No timer runs while a response is being sent: an SSE stream lasts as long as it likes.

Logs stay small under attack: connections closed by these rules are counted and reported in
one line at most once a minute (:class:`Report`), and uvicorn's and asyncio's own warnings
("Invalid HTTP request received.", accept errors) pass through :class:`QuietLog`: a few of each
message a minute, then a count of the ones left out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

LOG = logging.getLogger("uvicorn.error")


@dataclass(frozen=True)
class Limits:
    """Seconds a client may take (idle, request head, request body) and connections open."""

    idle: float = 5.0
    header: float = 10.0
    body: float = 30.0
    connections: int = 1000
    max_head: int = 64 * 1024

    def __post_init__(self) -> None:
        for name in ("idle", "header", "body"):
            if not getattr(self, name) > 0:
                raise ValueError(f"the {name} timeout must be > 0 seconds")
        if self.connections < 1:
            raise ValueError("the connection limit must be at least 1")


class Report:
    """Counts of refused connections, logged with the first one and then at most once every
    ``interval`` seconds (with the next one after it)."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger = LOG) -> None:
        self.interval = interval
        self.clock = clock
        self.logger = logger
        self.counts: Counter[str] = Counter()
        self.total: Counter[str] = Counter()
        self._next = 0.0

    def count(self, what: str) -> None:
        self.counts[what] += 1
        self.total[what] += 1
        now = self.clock()
        if now >= self._next:
            shown = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))
            self.logger.warning("ipa: closed slow or surplus connections: %s", shown)
            self.counts.clear()
            self._next = now + self.interval


class Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of the module docstring."""

    limits: ClassVar[Limits] = Limits()
    report: ClassVar[Report] = Report()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._in_body = False
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.limits.connections:
            self._refuse(503, "too_many_connections",
                         f"this ipa server has {self.limits.connections} connections open "
                         "(its --limit-connections): try again shortly", "over the limit")
            return
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_timer = _cancel(self._head_timer)
        self._body_timer = _cancel(self._body_timer)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self.limits.header, self._head_late)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._in_head and self._head_bytes > self.limits.max_head:
            self._refuse(431, "request_head_too_large",
                         f"the request line and headers are over {self.limits.max_head} bytes",
                         "head too large")
        elif self._in_body and self._body_timer is None:
            self._body_timer = self.loop.call_later(self.limits.body, self._body_late)

    # httptools' callbacks (the parser calls them by name on this object).

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.limits.header, self._head_late)

    def on_headers_complete(self) -> None:
        self._in_head, self._in_body, self._head_bytes = False, True, 0
        self._head_timer = _cancel(self._head_timer)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._in_body = True, False
        self._body_timer = _cancel(self._body_timer)

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self._refuse(408, "request_timeout", "the request line and headers did not arrive "
                         f"within {self.limits.header:g} s", "header timeout")
        else:  # a pipelined head stalled behind a response still being sent
            self.transport.close()
            self.report.count("header timeout")

    def _body_late(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            # The handler waiting for the body sees a disconnect and answers nobody.
            cycle.disconnected = True
            cycle.message_event.set()
            self._refuse(408, "request_timeout", "the request body did not arrive within "
                         f"{self.limits.body:g} s", "body timeout")
        else:
            self.transport.close()
            self.report.count("body timeout")

    def _refuse(self, status: int, code: str, message: str, reason: str) -> None:
        """Answer ``status`` with a JSON error and close the connection."""
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        self.transport.write(b"".join([
            STATUS_LINE[status], b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body]))
        self.transport.close()
        self.report.count(reason)


def _cancel(timer: asyncio.TimerHandle | None) -> None:
    if timer is not None:
        timer.cancel()
    return None


def protocol_for(limits: Limits) -> type[Protocol]:
    """A :class:`Protocol` class bound to ``limits`` (uvicorn instantiates it per connection)."""
    return type("IpaHttpProtocol", (Protocol,), {"limits": limits, "report": Report()})


class QuietLog(logging.Filter):
    """At most ``burst`` records of one message (its format string) per ``interval`` seconds;
    the next one after that says how many were left out."""

    def __init__(self, burst: int = 5, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._seen: dict[tuple[str, str], list[float]] = {}  # [window start, seen, left out]

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self.clock()
        seen = self._seen.get(key)
        if seen is None or now >= seen[0] + self.interval:
            if len(self._seen) >= 1000:
                self._seen.clear()
            self._seen[key] = [now, 1, 0]
            if seen is not None and seen[2]:
                record.msg = (f"{record.msg} ({int(seen[2])} more like this in the previous "
                              f"{self.interval:g} s not logged)")
            return True
        seen[1] += 1
        if seen[1] <= self.burst:
            return True
        seen[2] += 1
        return False


def quiet_logs(*names: str) -> None:
    """Put a :class:`QuietLog` on uvicorn's and asyncio's loggers (once)."""
    for name in names or ("uvicorn.error", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietLog) for f in logger.filters):
            logger.addFilter(QuietLog())


def server_config(app: Any, limits: Limits | None = None, **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for ipa: :class:`Protocol` with ``limits``, no lifespan,
    warnings only, and no proxy headers (:mod:`.guard` decides whom to trust). ``options``
    go to ``uvicorn.Config`` as they are."""
    limits = limits or Limits()
    config = uvicorn.Config(app, **{
        "http": protocol_for(limits), "timeout_keep_alive": limits.idle, "lifespan": "off",
        "log_level": "warning", "proxy_headers": False, **options})
    quiet_logs()  # after Config, which (re)configures uvicorn's loggers
    return config


def raise_file_limit(wanted: int) -> int:
    """Raise the soft limit on open files to ``wanted`` if it is lower (at most to the hard
    limit); returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return wanted if soft == resource.RLIM_INFINITY else soft
    new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (ValueError, OSError):
        return soft
    return new
