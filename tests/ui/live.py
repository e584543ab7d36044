"""A real uvicorn serving the real app on a real socket, in the test's event loop, and an SSE
reader for it."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
import httpx

from ipa.domain import Context, CreateTask, Pause, Resume, StartTask, TaskEvent, decide, fold
from ipa.eventstore import EventStore
from ipa.pods import PodEnvironment, WorkspaceManager, runner_for
from ipa.projections import TaskList
from ipa.supervisor import Supervisor
from ipa.ui.app import create_app
from ipa.ui.connections import Limits, server_config
from ipa.ui.serve import _Server, listen

T0 = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


@dataclass
class Live:
    url: str
    store: EventStore
    supervisor: Supervisor
    task_list: TaskList
    app: Any
    shutdown: anyio.Event
    client: httpx.AsyncClient

    @property
    def hub(self):
        return self.app.state.streams


@contextlib.asynccontextmanager
async def live_server(store: EventStore, tmp_path: Path, *, limits: Limits | None = None,
                      **options: Any) -> AsyncIterator[Live]:
    """``ipa serve``'s app and uvicorn configuration (``limits``: its timeouts and connection
    limit) on 127.0.0.1; ``options`` go to ``create_app``."""
    task_list = TaskList(store)
    supervisor = Supervisor(PodEnvironment(
        store=store, workspaces=WorkspaceManager(tmp_path / "workspaces"),
        scratch=tmp_path / "scratch", runner_for=runner_for))
    shutdown = anyio.Event()
    app = create_app(supervisor, task_list, shutdown=shutdown, **options)
    sock = listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = _Server(server_config(app, limits, timeout_graceful_shutdown=2))
    async with contextlib.AsyncExitStack() as stack, anyio.create_task_group() as tg:
        stack.callback(sock.close)
        await tg.start(task_list.run)
        await tg.start(supervisor.run)
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(10):
            while not server.started:
                await anyio.sleep(0.01)
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, timeout=20) as client:
            yield Live(url, store, supervisor, task_list, app, shutdown, client)
        shutdown.set()
        server.should_exit = True
        await supervisor.shutdown(deadline=1)
        with anyio.fail_after(10):
            while server.started and not server.should_exit:
                await anyio.sleep(0.01)
        tg.cancel_scope.cancel()


@dataclass
class Frame:
    id: str | None
    event: str
    data: Any


@dataclass
class SSE:
    """Frames read so far from one open stream."""

    response: httpx.Response
    lines: AsyncIterator[str]
    frames: list[Frame] = field(default_factory=list)

    async def next(self) -> Frame:
        fields: dict[str, str] = {}
        async for line in self.lines:
            if line == "":
                if "data" in fields or "event" in fields:
                    data = fields.get("data")
                    frame = Frame(fields.get("id"), fields.get("event", "message"),
                                  json.loads(data) if data else None)
                    self.frames.append(frame)
                    return frame
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        raise EOFError("the stream ended")

    async def take(self, n: int) -> list[Frame]:
        return [await self.next() for _ in range(n)]

    async def rest(self) -> list[Frame]:
        out = []
        with contextlib.suppress(EOFError):
            while True:
                out.append(await self.next())
        return out


@contextlib.asynccontextmanager
async def sse(client: httpx.AsyncClient, path: str, **kwargs: Any) -> AsyncIterator[SSE]:
    async with client.stream("GET", path, **kwargs) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SSE(response, response.aiter_lines())


def ctx(step: int, actor: str = "user:alice") -> Context:
    return Context(actor=actor, now=T0 + timedelta(seconds=step), correlation_id=f"req-{step}")


def history(n: int, task_id: UUID | None = None, *, reason_size: int = 1) -> tuple[
        UUID, list[TaskEvent]]:
    """A legal history of ``n`` events: created, started, then pause/resume alternating
    (each pause's reason ``reason_size`` characters long)."""
    task_id = task_id or uuid.uuid4()
    events: list[TaskEvent] = list(decide(None, CreateTask(title="t", description="d"), ctx(0),
                                          task_id))
    state = fold(events)
    step = 1
    while len(events) < n:
        if step == 1:
            command: Any = StartTask()
        elif step % 2 == 0:
            command = Pause(reason=f"p{step}".ljust(reason_size, "x"))
        else:
            command = Resume()
        new = decide(state, command, ctx(step), task_id)
        events.extend(new)
        state = fold(new, state)
        step += 1
    return task_id, events[:n]


async def append_one_by_one(store: EventStore, task_id: UUID, events: list[TaskEvent],
                            start: int) -> None:
    """Append ``events[start:]`` one append at a time."""
    for index in range(start, len(events)):
        await store.append(task_id, [events[index]], index)
