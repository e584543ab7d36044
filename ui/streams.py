"""Server-sent event streams of the store's events, for pages and any SSE client.

Three streams, each ``event:`` = the event's type and ``data:`` = its JSON
(``RecordedEvent.to_json()``):

- ``GET /api/tasks/{id}/stream``: one task's events, ``id:`` = version;
- ``GET /api/stream``: every *task*'s events, ``id:`` = global position. Agent-run streams
  (``RunStarted``, ``RunOutput``, ``RunFinished`` ...) are left out: they are long and only
  the page that shows one run wants them;
- ``GET /api/runs/{run_id}/stream``: one agent run's own events, ``id:`` = version (it may be
  opened before the run's first event: it waits for it).

**Resume**: ``Last-Event-ID`` (or ``?after=N`` for clients that cannot set headers) starts the
stream right after that id: the events after it are read from the store, however old, then the
stream goes live, with no gap and no duplicate. A malformed id is a 400 JSON error.

**One listener per process**: the history comes from paged reads at the client's pace; the live
part from ``EventStore.subscribe``, which fans the process's one tail out in memory.

**Slow clients**: each client has a bounded buffer of frames (``client_buffer``). History waits
for the client; live events never do: when a client's buffer is full, its stream ends with
``event: overflow`` (``id:`` and ``data.resume_after`` = the last id it was sent) after the
frames it already has, and the client reconnects with that id (``EventSource`` does so by
itself). So a slow client never slows the tail, other clients or the pods.

**Shutdown**: when the app's ``shutdown`` event is set (``ipa serve`` sets it on
SIGINT/SIGTERM), every open stream ends with ``event: shutdown`` and closes cleanly. Keep-alive
comments (``: ping``) go out every ``ping`` seconds.
"""

from __future__ import annotations

import json
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from uuid import UUID

import anyio
from anyio.streams.memory import MemoryObjectSendStream
from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.routing import Route

from ipa.domain import TaskEvent
from ipa.eventstore import EventStore, RecordedEvent, StreamNotFound

from .errors import BadRequest, task_id_param

HISTORY_PAGE = 500
MAX_ID = 2**62
Kind = str  # "task" | "all" | "run"


@dataclass
class _Client:
    last: int
    ended: str | None = None  # "overflow" | "shutdown"


class StreamHub:
    """The SSE endpoints and what they share: the frame cache, client counts, shutdown."""

    def __init__(self, store: EventStore, *, shutdown: anyio.Event, client_buffer: int = 1000,
                 ping: float = 15.0) -> None:
        self.store = store
        self.shutdown = shutdown
        self.client_buffer = client_buffer
        self.ping = ping
        self.clients: Counter[str] = Counter({"task": 0, "all": 0, "run": 0})
        self.overflows = 0
        self._frames: OrderedDict[tuple[int, bool], bytes] = OrderedDict()

    def routes(self) -> list[Route]:
        return [
            Route("/api/stream", self.all_stream, methods=["GET"]),
            Route("/api/tasks/{task_id}/stream", self.task_stream, methods=["GET"]),
            Route("/api/runs/{run_id}/stream", self.run_stream, methods=["GET"]),
        ]

    # Endpoints -------------------------------------------------------------------------------

    async def task_stream(self, request: Request) -> EventSourceResponse:
        task_id = task_id_param(request)
        after = resume_point(request)
        if await self.store.version(task_id) == 0:
            raise StreamNotFound(task_id)
        return self._response("task", task_id, after, by_position=False,
                              include=None)

    async def run_stream(self, request: Request) -> EventSourceResponse:
        text = request.path_params["run_id"]
        try:
            run_id = UUID(text)
        except ValueError:
            raise BadRequest(f"{text!r} is not a run id (expected a UUID)") from None
        return self._response("run", run_id, resume_point(request), by_position=False,
                              include=None)

    async def all_stream(self, request: Request) -> EventSourceResponse:
        return self._response("all", None, resume_point(request), by_position=True,
                              include=is_task_event)

    # The stream ------------------------------------------------------------------------------

    def _response(self, kind: Kind, stream_id: UUID | None, after: int, *, by_position: bool,
                  include: Callable[[RecordedEvent], bool] | None) -> EventSourceResponse:
        send, receive = anyio.create_memory_object_stream[bytes](self.client_buffer)
        client = _Client(last=after)

        async def feed() -> None:
            self.clients[kind] += 1
            try:
                async with send, anyio.create_task_group() as tg:
                    tg.start_soon(self._end_on_shutdown, client, tg.cancel_scope)
                    try:
                        await self._feed(send, client, stream_id, by_position, include)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        pass  # the client went away: its response is ending
                    tg.cancel_scope.cancel()
            finally:
                self.clients[kind] -= 1

        async def content() -> AsyncIterator[bytes]:
            async with receive:
                async for frame in receive:
                    yield frame
            if client.ended == "overflow":
                yield final_frame("overflow", client.last,
                                  "this client read too slowly; reconnect with Last-Event-ID")
            elif client.ended == "shutdown":
                yield final_frame("shutdown", client.last, "ipa is shutting down")

        return EventSourceResponse(content(), data_sender_callable=feed, ping=self.ping,
                                   headers={"Cache-Control": "no-store"})

    async def _end_on_shutdown(self, client: _Client, scope: anyio.CancelScope) -> None:
        await self.shutdown.wait()
        if client.ended is None:
            client.ended = "shutdown"
        scope.cancel()

    async def _feed(self, send: MemoryObjectSendStream[bytes], client: _Client,
                    stream_id: UUID | None, by_position: bool,
                    include: Callable[[RecordedEvent], bool] | None) -> None:
        # History: at the client's pace (a blocking send), straight from the store.
        while True:
            if stream_id is None:
                page = await self.store.read_log(client.last, HISTORY_PAGE)
            else:
                page = await self.store.read(stream_id, after=client.last, limit=HISTORY_PAGE)
            for recorded in page:
                if include is None or include(recorded):
                    await send.send(self.frame(recorded, by_position))
                client.last = recorded.position if by_position else recorded.version
            if len(page) < HISTORY_PAGE:
                break
        # Live: never wait for the client; a full buffer ends its stream.
        async with self.store.subscribe(stream_id, after=client.last) as live:
            async for recorded in live:
                if include is None or include(recorded):
                    try:
                        send.send_nowait(self.frame(recorded, by_position))
                    except anyio.WouldBlock:
                        client.ended = "overflow"
                        self.overflows += 1
                        return
                client.last = recorded.position if by_position else recorded.version

    def frame(self, recorded: RecordedEvent, by_position: bool) -> bytes:
        """The SSE frame of an event, made once per event however many clients get it."""
        key = (recorded.position, by_position)
        frame = self._frames.get(key)
        if frame is None:
            event_id = recorded.position if by_position else recorded.version
            data = json.dumps(recorded.to_json(), separators=(",", ":"))
            frame = f"id: {event_id}\r\nevent: {recorded.type}\r\ndata: {data}\r\n\r\n".encode()
            self._frames[key] = frame
            if len(self._frames) > 4096:
                self._frames.popitem(last=False)
        return frame


def is_task_event(recorded: RecordedEvent) -> bool:
    """Whether an event belongs on the all-tasks stream: a task's event, or one whose type
    this code does not know but that names no run (so nothing new is hidden)."""
    if recorded.event is not None:
        return isinstance(recorded.event, TaskEvent)
    return "task_id" not in recorded.data and not recorded.type.startswith("Run")


def final_frame(event: str, last: int, message: str) -> bytes:
    data = json.dumps({"resume_after": last, "message": message})
    return f"id: {last}\r\nevent: {event}\r\ndata: {data}\r\n\r\n".encode()


def resume_point(request: Request) -> int:
    """Where a stream starts: after ``Last-Event-ID``, else ``?after=``, else 0."""
    header = request.headers.get("last-event-id")
    if header is not None:
        text, where = header.strip(), "Last-Event-ID"
    else:
        text, where = request.query_params.get("after", "0"), "after"
    if not text.isdigit() or int(text) > MAX_ID:
        raise BadRequest(f"{where} {text!r}: expected an event id (a whole number ≥ 0) "
                         "from this stream", code="bad_last_event_id")
    return int(text)

