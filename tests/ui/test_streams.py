"""SSE streams over a real socket to a real uvicorn: history then live, resume after a cut,
the all-tasks and run streams, slow clients and shutdown."""

from __future__ import annotations

import socket
import uuid
from pathlib import Path

import anyio
import pytest

from ipa.domain.runs import RunOutput, RunStarted
from ipa.eventstore import EventStore

from .live import T0, append_one_by_one, history, live_server, sse

pytestmark = pytest.mark.anyio


@pytest.fixture
async def live(store: EventStore, tmp_path: Path):
    async with live_server(store, tmp_path, ping=0.2) as server:
        yield server


async def run_event(store: EventStore, run_id: uuid.UUID, version: int, text: str) -> None:
    if version == 1:
        event = RunStarted(originator_id=run_id, originator_version=1, timestamp=T0,
                           actor="agent-run", correlation_id="c", causation_id=None,
                           task_id="t", job_id="j", attempt=1, agent="a", runner="command",
                           workspace="", pid=None)
    else:
        event = RunOutput(originator_id=run_id, originator_version=version, timestamp=T0,
                          actor="agent-run", correlation_id="c", causation_id=None,
                          lines=[{"seq": version, "stream": "stdout", "text": text}])
    await store.append(run_id, [event], version - 1)


async def test_task_stream_sends_history_then_live_events(live, store: EventStore) -> None:
    task_id, events = history(6)
    await store.append(task_id, events[:3], 0)

    async with sse(live.client, f"/api/tasks/{task_id}/stream") as stream:
        first = await stream.take(3)
        await append_one_by_one(store, task_id, events, 3)
        later = await stream.take(3)

    frames = first + later
    assert [f.id for f in frames] == ["1", "2", "3", "4", "5", "6"]
    assert [f.event for f in frames] == [e.__class__.__name__ for e in events]
    assert [f.data["version"] for f in frames] == [1, 2, 3, 4, 5, 6]
    assert frames[2].data["data"]["reason"] == "p2"
    assert frames[0].data["stream_id"] == str(task_id)


async def test_reconnect_with_last_event_id_gets_every_event_once_in_order(
    live, store: EventStore
) -> None:
    task_id, events = history(20)
    await store.append(task_id, events[:5], 0)
    async with sse(live.client, f"/api/tasks/{task_id}/stream") as stream:
        seen = await stream.take(4)  # then the connection is cut
    await append_one_by_one(store, task_id, events, 5)  # while the client is away

    async with sse(live.client, f"/api/tasks/{task_id}/stream",
                   headers={"Last-Event-ID": seen[-1].id}) as stream:
        seen += await stream.take(16)

    assert [int(f.id) for f in seen] == list(range(1, 21))


async def test_clients_joining_while_events_flow_get_each_event_once_in_order(
    store: EventStore, tmp_path: Path
) -> None:
    """With a tiny buffer, clients connect (history from the store, then live from the
    topic's frames, which drop old ones meanwhile) while events are appended; whatever each
    one is sent, overflows included, resuming from the last id gives every event once."""
    total = 150
    task_id, events = history(total)

    async def follow(after: int, got: list[int]) -> None:
        while after < total:
            async with sse(live.client, f"/api/tasks/{task_id}/stream",
                           headers={"Last-Event-ID": str(after)}) as stream:
                while after < total:
                    frame = await stream.next()
                    if frame.event == "overflow":
                        assert int(frame.id) == after
                        break
                    got.append(int(frame.id))
                    after = int(frame.id)

    async with live_server(store, tmp_path, client_buffer=2, ping=0) as live:
        await store.append(task_id, events[:1], 0)  # (a pod would recover an older task)
        followers: list[list[int]] = [[] for _ in range(6)]
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                for index, got in enumerate(followers):
                    tg.start_soon(follow, 0, got)
                    await append_one_by_one(store, task_id, events[: 1 + 25 * (index + 1)],
                                            1 + 25 * index)

    for got in followers:
        assert got == list(range(1, total + 1))


async def test_after_query_resumes_like_last_event_id(live, store: EventStore) -> None:
    task_id, events = history(6)
    await store.append(task_id, events, 0)

    async with sse(live.client, f"/api/tasks/{task_id}/stream", params={"after": 4}) as stream:
        frames = await stream.take(2)

    assert [f.id for f in frames] == ["5", "6"]


async def test_all_stream_carries_task_events_by_position_and_not_run_output(
    live, store: EventStore
) -> None:
    one, events_one = history(3)
    two, events_two = history(2)
    run_id = uuid.uuid4()
    await store.append(one, events_one, 0)
    await run_event(store, run_id, 1, "")
    await run_event(store, run_id, 2, "hello")
    await store.append(two, events_two, 0)

    async with sse(live.client, "/api/stream") as stream:
        frames = await stream.take(5)
        position = int(frames[-1].id)
        another, more = history(1)
        await store.append(another, more, 0)
        [live_frame] = await stream.take(1)

    assert [f.data["stream_id"] for f in frames] == [str(one)] * 3 + [str(two)] * 2
    assert [int(f.id) for f in frames] == [f.data["position"] for f in frames]
    assert [int(f.id) for f in frames] == [1, 2, 3, 6, 7]  # 4 and 5 are the run's
    assert live_frame.data["stream_id"] == str(another) and int(live_frame.id) > position


async def test_all_stream_resumes_after_a_global_position(live, store: EventStore) -> None:
    one, events = history(4)
    await store.append(one, events, 0)

    async with sse(live.client, "/api/stream", headers={"Last-Event-ID": "2"}) as stream:
        frames = await stream.take(2)

    assert [f.id for f in frames] == ["3", "4"]


async def test_run_stream_follows_an_agent_run_from_before_its_first_event(
    live, store: EventStore
) -> None:
    run_id = uuid.uuid4()

    async with sse(live.client, f"/api/runs/{run_id}/stream") as stream:
        await run_event(store, run_id, 1, "")
        await run_event(store, run_id, 2, "compiling")
        frames = await stream.take(2)

    assert [(f.id, f.event) for f in frames] == [("1", "RunStarted"), ("2", "RunOutput")]
    assert frames[1].data["data"]["lines"][0]["text"] == "compiling"


@pytest.mark.parametrize("header", ["x", "-1", "1.5", "99999999999999999999999"])
async def test_a_malformed_last_event_id_is_a_400_json_error(live, header: str) -> None:
    task_id, events = history(1)
    await live.store.append(task_id, events, 0)

    for path in (f"/api/tasks/{task_id}/stream", "/api/stream", f"/api/runs/{uuid.uuid4()}/stream"):
        response = await live.client.get(path, headers={"Last-Event-ID": header})

        assert response.status_code == 400
        assert response.json()["error"]["code"] == "bad_last_event_id"


async def test_stream_of_an_unknown_task_is_404(live) -> None:
    response = await live.client.get(f"/api/tasks/{uuid.uuid4()}/stream")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "task_not_found"


async def test_a_stream_starts_with_a_retry_delay_and_pings_while_idle(
    live, store: EventStore
) -> None:
    task_id, events = history(1)
    await store.append(task_id, events, 0)

    async with live.client.stream("GET", f"/api/tasks/{task_id}/stream") as response:
        lines = response.aiter_lines()
        seen = []
        with anyio.fail_after(10):
            async for line in lines:
                seen.append(line)
                if line.startswith(": ping"):
                    break

    assert seen[:2] == ["retry: 1000", ""]  # EventSource reconnects after 1 s, not 3 s
    assert seen[2] == "id: 1"


async def test_shutdown_ends_open_streams_with_a_final_event(live, store: EventStore) -> None:
    task_id, events = history(2)
    await store.append(task_id, events, 0)

    async with sse(live.client, f"/api/tasks/{task_id}/stream") as stream:
        await stream.take(2)
        assert live.hub.clients["task"] == 1
        live.shutdown.set()
        with anyio.fail_after(10):
            rest = await stream.rest()

    assert [(f.event, f.id, f.data["resume_after"]) for f in rest] == [("shutdown", "2", 2)]


async def test_a_slow_client_is_dropped_with_overflow_and_resumes_without_loss(
    store: EventStore, tmp_path: Path
) -> None:
    total = 60
    task_id, events = history(total, reason_size=200_000)
    async with live_server(store, tmp_path, client_buffer=4, ping=0) as live:
        await store.append(task_id, events[:1], 0)
        slow = socket.create_connection(("127.0.0.1", int(live.url.rsplit(":", 1)[1])))
        slow.sendall(f"GET /api/tasks/{task_id}/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Connection: close\r\n\r\n".encode())
        async with sse(live.client, f"/api/tasks/{task_id}/stream") as fast:
            await fast.take(1)
            with anyio.fail_after(30):
                while live.hub.clients["task"] < 2:
                    await anyio.sleep(0.01)
            fast_frames = []
            for index in range(1, total):  # the slow client reads nothing meanwhile
                await store.append(task_id, [events[index]], index)
                with anyio.fail_after(30):
                    fast_frames.append(await fast.next())
            assert live.hub.overflows == 1
        # The slow client now reads what it was sent: a prefix, then the overflow event.
        raw = await anyio.to_thread.run_sync(read_all, slow)
        slow_frames = parse_frames(raw.split(b"\r\n\r\n", 1)[1].decode())
        assert slow_frames[-1][1] == "overflow"
        resume = slow_frames[-1][0]
        async with sse(live.client, f"/api/tasks/{task_id}/stream",
                       headers={"Last-Event-ID": resume}) as again:
            rest = await again.take(total - int(resume))

    got = [int(i) for i, event in slow_frames[:-1]] + [int(f.id) for f in rest]
    assert got == list(range(1, total + 1))
    assert [int(f.id) for f in fast_frames] == list(range(2, total + 1))


def read_all(sock: socket.socket) -> bytes:
    sock.settimeout(20)
    chunks = []
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


def parse_frames(body: str) -> list[tuple[str, str]]:
    """(id, event) of every frame in a chunked SSE body (chunk sizes are skipped)."""
    out = []
    current: dict[str, str] = {}
    for line in body.replace("\r\n", "\n").split("\n"):
        if line.startswith(("id: ", "event: ")):
            name, _, value = line.partition(": ")
            current[name] = value
            if name == "event":
                out.append((current.get("id", ""), value))
                current = {}
    return out
