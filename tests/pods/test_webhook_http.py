"""The webhooks' HTTP client (aiohttp, issue #17) against a raw local server that answers
exactly the bytes each test gives: status and ``Location`` seen and no redirect followed, the
body limit, keep-alive and its end, a connection closed before an answer sent once more, garbage,
the host name resolved only to the addresses given (and a private one refused), TLS checked
against the URL's host name, no proxy from the environment, and a server that never answers."""

from __future__ import annotations

import contextlib
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest
from anyio.abc import SocketStream
from anyio.streams.tls import TLSStream

from ipa.eventstore.webhooks import Claimed
from ipa.pods import AddressGuard, AddressRefused
from ipa.pods.webhook_delivery import Courier
from ipa.pods.webhook_http import BODY_LIMIT, KEPT_BYTES, Answer, ExchangeFailed, HttpClient

pytestmark = pytest.mark.anyio

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class Scripted:
    """Answers the n-th request it reads with ``answers[n]`` (``None``: close without an
    answer; ``...``: never answer); counts the connections it accepted."""

    def __init__(self, *answers: bytes | None, tls: ssl.SSLContext | None = None) -> None:
        self.answers = list(answers)
        self.tls = tls
        self.connections = 0
        self.ended: list[int] = []
        """A mark per connection that ended (the client closed it, or this server did)."""
        self.requests: list[bytes] = []
        self.port = 0

    async def _serve(self, stream: SocketStream | TLSStream) -> None:
        self.connections += 1
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(self.ended.append, self.connections)
            stack.push_async_callback(stream.aclose)
            if self.tls is not None:
                try:
                    stream = await TLSStream.wrap(stream, server_side=True,
                                                  ssl_context=self.tls,
                                                  standard_compatible=False)
                except (anyio.EndOfStream, anyio.BrokenResourceError, ssl.SSLError):
                    return  # the client refused the certificate
                stack.push_async_callback(stream.aclose)
            buffer = b""
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        buffer += await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError, ssl.SSLError):
                        return
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                while len(rest) < length:
                    rest += await stream.receive()
                self.requests.append(head + b"\r\n\r\n" + rest[:length])
                buffer = rest[length:]
                answer = self.answers.pop(0) if self.answers else OK
                if answer is None:
                    return
                if answer is ...:
                    await anyio.sleep_forever()
                await stream.send(answer)
                if b"Connection: close" in answer or b"HTTP/1.0" in answer:
                    return

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Scripted]:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, self._serve)
            yield self
            tg.cancel_scope.cancel()


async def post(client: HttpClient, server: Scripted, host: str = "127.0.0.1",
               scheme: str = "http") -> Answer:
    with anyio.fail_after(5):
        return await client.post(f"{scheme}://{host}:{server.port}/h", b"{}",
                                 {"Content-Type": "application/json"})


async def test_answers_with_a_length_or_chunks_keep_their_connection() -> None:
    chunked = (b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    client = HttpClient()
    async with Scripted(OK, chunked, OK).running() as server:
        answers = [await post(client, server) for _ in range(3)]
    await client.aclose()

    assert [(a.status, a.body) for a in answers] == [(200, b"ok"), (202, b"hello world"),
                                                     (200, b"ok")]
    assert server.connections == 1 and len(server.requests) == 3
    assert server.requests[0].startswith(b"POST /h HTTP/1.1\r\n")
    assert server.requests[0].endswith(b"\r\n\r\n{}")


async def test_a_redirect_is_seen_not_followed_and_a_body_may_end_with_the_connection() -> None:
    closing = b"HTTP/1.0 500 Internal Server Error\r\n\r\nit broke"
    moved = (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 301 Moved\r\nLocation: /there\r\n"
             b"Content-Length: 0\r\n\r\n")
    client = HttpClient()
    async with Scripted(closing, moved).running() as server:
        broke = await post(client, server)
        redirected = await post(client, server)
    await client.aclose()

    assert (broke.status, broke.body) == (500, b"it broke")
    assert (redirected.status, redirected.location) == (301, "/there")
    assert len(server.requests) == 2  # nothing asked of /there
    assert server.connections == 2


async def test_a_long_body_is_read_up_to_the_limit_its_first_bytes_kept() -> None:
    size = 4 * BODY_LIMIT
    long = b"HTTP/1.1 500 Oops\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
    client = HttpClient()
    async with Scripted(long, OK).running() as server:
        answer = await post(client, server)
        after = await post(client, server)
    await client.aclose()

    assert (answer.status, answer.body) == (500, b"x" * KEPT_BYTES)
    assert after.status == 200
    assert server.connections == 2  # the connection left mid-body is not used again


async def test_a_kept_connection_the_server_closed_is_replaced_once() -> None:
    client = HttpClient()
    async with Scripted(OK, None, OK).running() as server:
        first = await post(client, server)
        second = await post(client, server)  # its connection closes without an answer
    await client.aclose()

    assert (first.status, second.status) == (200, 200)
    assert server.connections == 2 and len(server.requests) == 3


async def test_no_answer_twice_or_garbage_is_an_exchange_failure() -> None:
    client = HttpClient()
    async with Scripted(None, None, b"SMTP ready\r\n\r\n").running() as server:
        with pytest.raises(ExchangeFailed, match="^the connection closed before an answer$"):
            await post(client, server)
        sent = len(server.requests)
        with pytest.raises(ExchangeFailed, match="^the answer is not HTTP"):
            await post(client, server)
    await client.aclose()

    assert sent == 2  # once more, then no more


async def test_connections_idle_too_long_are_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ipa.pods.webhook_http.IDLE_FOR", 0.1)
    client = HttpClient()
    async with Scripted().running() as server:
        await post(client, server)
        with anyio.fail_after(5):
            while not server.ended:
                await anyio.sleep(0.01)
    await client.aclose()

    assert server.ended == [1]


class Pinned:
    """``addresses(host, port)`` answering 127.0.0.1 for ``hooks.test``; remembers what it was
    asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        if host != "hooks.test":
            raise AddressRefused(f"{host} is not known here")
        return ["127.0.0.1"]


async def test_a_host_name_goes_only_to_the_addresses_given() -> None:
    pinned = Pinned()
    client = HttpClient(pinned)
    async with Scripted().running() as server:
        answer = await post(client, server, "hooks.test")  # no name server knows it
        with pytest.raises(AddressRefused, match="localhost is not known here"):
            await post(client, server, "localhost")  # the system would resolve it
    await client.aclose()

    assert answer.status == 200
    assert pinned.asked == [("hooks.test", server.port), ("localhost", server.port)]
    assert f"Host: hooks.test:{server.port}".encode() in server.requests[0]
    assert len(server.requests) == 1


async def test_the_guard_as_resolver_refuses_a_private_address_before_connecting() -> None:
    client = HttpClient(AddressGuard().addresses)
    async with Scripted().running() as server:
        with pytest.raises(AddressRefused, match="127.0.0.1 is a loopback address"):
            await post(client, server, "localhost")
    await client.aclose()

    assert server.connections == 0


async def test_no_proxy_is_taken_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    client = HttpClient()
    async with Scripted().running() as proxy, Scripted().running() as server:
        for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        answer = await post(client, server)
    await client.aclose()

    assert answer.status == 200 and proxy.connections == 0 and server.connections == 1


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    where = tmp_path_factory.mktemp("tls")
    key, cert = where / "key.pem", where / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=hooks.test",
                    "-addext", "subjectAltName=DNS:hooks.test"],
                   check=True, capture_output=True)
    return cert, key


async def test_tls_checks_the_certificate_against_the_url_s_host_name(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))

    async def everywhere(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    clients = [HttpClient(everywhere, trusting), HttpClient(everywhere, trusting),
               HttpClient(everywhere)]
    async with Scripted(OK, tls=served).running() as server:
        answer = await post(clients[0], server, "hooks.test", "https")
        with pytest.raises(ExchangeFailed, match="^TLS: .*elsewhere.test"):
            await post(clients[1], server, "elsewhere.test", "https")
        with pytest.raises(ExchangeFailed, match="^TLS: "):
            await post(clients[2], server, "hooks.test", "https")  # not a CA the system trusts
    for client in clients:
        await client.aclose()

    assert answer.status == 200
    assert len(server.requests) == 1


async def test_an_attempt_without_an_answer_ends_at_its_time_limit() -> None:
    courier = Courier(AddressGuard(allow_private=True), timeout=0.5)
    async with Scripted(...).running() as server:
        attempt = await courier.attempt(Claimed(
            "d-1", "w-1", f"http://127.0.0.1:{server.port}/h", "plain:x", "{}", 0),
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    await courier.aclose()

    assert not attempt.ok and attempt.error == "no answer within 0.5 s"
    assert attempt.duration_ms >= 500
