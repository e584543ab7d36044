"""A webhook receiver for tests: a real HTTP server on 127.0.0.1 in a thread that checks each
message's signature with the ``standardwebhooks`` package and counts messages by delivery id
(``webhook-id``). It can answer failures first (``fail_first``), or always (``status``), with a
``Retry-After`` (``retry_after``), and be told to recover (:meth:`Receiver.recover`)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
from standardwebhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Received:
    delivery_id: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    answered: int
    at: float = 0.0
    """When it came (``time.monotonic()``)."""

    @property
    def message(self) -> dict[str, Any]:
        return json.loads(self.body)


class Receiver:
    """Answers ``status`` (200 by default) after ``fail_first`` answers of ``fail_status``;
    ``secret``: verify signatures with it (set it once the webhook's secret is known)."""

    def __init__(self, *, fail_first: int = 0, fail_status: int = 500, status: int = 200,
                 secret: str | None = None, port: int = 0,
                 retry_after: str | None = None) -> None:
        self.port = port
        self.retry_after = retry_after  # sent with every failure
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.status = status
        self.secret = secret
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def recover(self) -> None:
        with self._lock:
            self.fail_first = 0
            self.status = 200

    def ok(self) -> list[Received]:
        """The messages answered with a 2xx."""
        with self._lock:
            return [r for r in self.received if 200 <= r.answered < 300]

    def counts(self) -> Counter[str]:
        """Messages answered with a 2xx, by delivery id."""
        return Counter(r.delivery_id for r in self.ok())

    def _answer(self, headers: dict[str, str], body: bytes) -> int:
        verified = False
        if self.secret is not None:
            try:
                Webhook(self.secret).verify(body, headers)
                verified = True
            except WebhookVerificationError:
                verified = False
        with self._lock:
            failed_so_far = sum(1 for r in self.received if r.answered >= 300)
            answer = self.fail_status if failed_so_far < self.fail_first else self.status
            self.received.append(Received(headers.get("webhook-id", ""), headers, body,
                                          verified, answer, time.monotonic()))
        return answer

    @contextlib.contextmanager
    def running(self) -> Iterator[Receiver]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                status = receiver._answer(headers, body)
                self.send_response(status)
                if status >= 300 and receiver.retry_after is not None:
                    self.send_header("retry-after", receiver.retry_after)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(5)


async def until(check: Any, timeout: float = 20.0) -> Any:
    """Poll ``check()`` until it returns something true (the state the test waits for)."""
    with anyio.fail_after(timeout):
        while True:
            value = check()
            if hasattr(value, "__await__"):
                value = await value
            if value:
                return value
            await anyio.sleep(0.02)
