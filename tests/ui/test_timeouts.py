"""Idle, header and body timeouts and the connection limit (:mod:`ipa.ui.connections`), with
real sockets against a real uvicorn; the timeouts are set short for these tests, and the slow
clients pause between bytes because being slow is what they test."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import anyio
import httpx
import pytest
from anyio.abc import SocketStream

from ipa.eventstore import ConnectionParams, EventStore
from ipa.ui.connections import Limits, QuietLog, Report

from .live import live_server
from .test_serve import served

pytestmark = pytest.mark.anyio

SHORT = 0.4


async def connect(url: str) -> SocketStream:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return await anyio.connect_tcp(host, int(port))


async def until_closed(conn: SocketStream, deadline: float = 10) -> bytes:
    """Everything the server sends until it closes the connection."""
    chunks = []
    with anyio.fail_after(deadline):
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
            while True:
                chunks.append(await conn.receive())
    return b"".join(chunks)


async def drip(conn: SocketStream, pieces: Iterator[bytes], every: float = 0.05) -> None:
    """Send one piece every ``every`` seconds until the server closes the connection."""
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        for piece in pieces:
            await conn.send(piece)
            await anyio.sleep(every)


def header_lines() -> Iterator[bytes]:
    n = 0
    while True:
        yield b"X-Slow-%d: y\r\n" % n
        n += 1


@contextlib.contextmanager
def uvicorn_log() -> Iterator[list[logging.LogRecord]]:
    """The records uvicorn's error logger emits meanwhile (after its filters)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("uvicorn.error")
    handler = Keep()
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


async def test_an_idle_connection_is_closed(store: EventStore, tmp_path) -> None:
    async with (live_server(store, tmp_path, limits=Limits(idle=SHORT)) as live,
                await connect(live.url) as silent, await connect(live.url) as used):
        await used.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")

        assert await until_closed(silent) == b""
        assert (await until_closed(used)).startswith(b"HTTP/1.1 200")


async def test_a_slowloris_client_is_cut_off_while_others_are_served(
    store: EventStore, tmp_path
) -> None:
    async with (live_server(store, tmp_path, limits=Limits(header=SHORT)) as live,
                contextlib.AsyncExitStack() as stack):
        slow = [await stack.enter_async_context(await connect(live.url)) for _ in range(20)]
        with uvicorn_log() as log:
            async with anyio.create_task_group() as tg:
                for conn in slow:
                    await conn.send(b"GET /api/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                    tg.start_soon(drip, conn, header_lines())
                others = [await live.client.get("/api/tasks") for _ in range(5)]
                answers = [await until_closed(conn) for conn in slow]

    assert [response.status_code for response in others] == [200] * 5
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"request_timeout"' in answer and b"headers did not arrive" in answer
    assert len([r for r in log if "closed slow" in r.getMessage()]) <= 1


async def test_a_slow_body_is_cut_off_and_writes_nothing(store: EventStore, tmp_path) -> None:
    async with live_server(store, tmp_path, limits=Limits(body=SHORT)) as live:
        before = await store.head_position()
        with uvicorn_log() as log:
            conn = await connect(live.url)
            await conn.send(b"POST /api/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                            b'{"title": "')
            async with anyio.create_task_group() as tg:
                tg.start_soon(drip, conn, iter(lambda: b"x", None))
                answer = await until_closed(conn)
            await conn.aclose()
            served_meanwhile = await live.client.get("/healthz")
        assert await store.head_position() == before

    assert answer.startswith(b"HTTP/1.1 408") and b"body did not arrive" in answer
    assert served_meanwhile.status_code == 200
    assert not [r for r in log if "Exception in ASGI application" in r.getMessage()]


async def test_a_request_head_too_large_is_431(store: EventStore, tmp_path) -> None:
    async with live_server(store, tmp_path) as live, await connect(live.url) as conn:
        await conn.send(b"GET /api/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
                        + b"a" * 70_000)
        answer = await until_closed(conn)

    assert answer.startswith(b"HTTP/1.1 431") and b"request_head_too_large" in answer


async def test_connections_over_the_limit_are_refused_until_one_closes(
    store: EventStore, tmp_path
) -> None:
    async with (live_server(store, tmp_path, limits=Limits(connections=3)) as live,
                contextlib.AsyncExitStack() as stack):
        held = []
        for _ in range(3):
            conn = await stack.enter_async_context(await connect(live.url))
            await conn.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            with anyio.fail_after(10):
                assert (await conn.receive()).startswith(b"HTTP/1.1 200")
            held.append(conn)

        async with await connect(live.url) as conn:
            surplus = await until_closed(conn)
        await held.pop().aclose()
        with anyio.fail_after(10):  # until the server has seen the close
            while True:
                try:
                    if (await live.client.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await anyio.sleep(0.02)

    assert surplus.startswith(b"HTTP/1.1 503") and b"too_many_connections" in surplus


async def test_an_sse_stream_outlives_every_timeout(store: EventStore, tmp_path) -> None:
    limits = Limits(idle=0.2, header=0.2, body=0.2)
    async with live_server(store, tmp_path, limits=limits, ping=0.1) as live:
        async with live.client.stream("GET", "/api/stream") as stream:
            lines = stream.aiter_lines()
            pings = 0
            with anyio.fail_after(20):
                while pings < 15:  # 1.5 s of pings: several times every timeout
                    pings += (await anext(lines)) == ": ping"
                created = await live.client.post("/api/tasks", json={"title": "t"})
                while await anext(lines) != "event: TaskCreated":
                    pass

    assert created.status_code == 201


async def test_serve_options_set_the_timeouts(database: ConnectionParams) -> None:
    async with served(database, "--timeout-idle", "0.3", "--timeout-header", "0.3",
                      "--limit-connections", "50") as server, \
            await connect(server.url) as idle, await connect(server.url) as slow:
        await slow.send(b"GET /api/tasks HTTP/1.1\r\n")
        async with anyio.create_task_group() as tg:
            tg.start_soon(drip, slow, header_lines())
            slow_answer = await until_closed(slow)
        idle_answer = await until_closed(idle)

    assert idle_answer == b""
    assert slow_answer.startswith(b"HTTP/1.1 408")


def test_repeated_log_lines_are_counted_not_written() -> None:
    now = [0.0]
    quiet = QuietLog(burst=3, interval=60, clock=lambda: now[0])

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1, message, None,
                                 None)

    passed = [quiet.filter(record("Invalid HTTP request received.")) for _ in range(1000)]
    other = quiet.filter(record("something else"))
    now[0] = 61
    later = record("Invalid HTTP request received.")

    assert passed.count(True) == 3 and other
    assert quiet.filter(later) and "997 more like this" in later.getMessage()


def test_refused_connections_are_reported_at_most_once_a_minute() -> None:
    now = [0.0]
    lines: list[str] = []

    class Logger:
        def warning(self, message: str, *args: object) -> None:
            lines.append(message % args)

    report = Report(interval=60, clock=lambda: now[0], logger=Logger())  # type: ignore[arg-type]
    for _ in range(500):
        report.count("header timeout")
    now[0] = 60
    report.count("body timeout")

    assert lines == ["ipa: closed slow or surplus connections: 1 header timeout",
                     "ipa: closed slow or surplus connections: 1 body timeout, "
                     "499 header timeout"]
    assert report.total["header timeout"] == 500
