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

**One listener per process, one frame per event**: the history comes from paged reads at the
client's pace; the live part from the process's one tail, which the hub observes
(:meth:`~ipa.eventstore.tail.LiveTail.observe`). Each stream that has clients is a *topic*: the
hub encodes each new event of it once, appends the frame to the topic's ring and wakes the
topic's clients; each client sends every frame it has not sent yet in one write. So an event
costs one encoding plus one wake-up and one write per client, and a client that fell behind
catches up in one write, not one per event.

**Slow clients**: a client may fall ``client_buffer`` frames behind the newest of its topic.
History waits for the client; live events never do: a client further behind is dropped, its
stream ending with ``event: overflow`` (``id:`` and ``data.resume_after`` = the last id it was
sent) after the frames it already has, and the client reconnects with that id (``EventSource``
does so by itself, after the ``retry:`` delay each stream starts with). So a slow client never
slows the tail, other clients or the pods.

**Shutdown**: when the app's ``shutdown`` event is set (``ipa serve`` sets it on
SIGINT/SIGTERM), every open stream ends with ``event: shutdown`` and closes cleanly. Keep-alive
comments (``: ping``) go out every ``ping`` seconds.
"""


from __future__ import annotations

import json
from bisect import bisect_right
from collections import Counter, OrderedDict
from collections.abc import Callable
from operator import itemgetter
from uuid import UUID

import anyio
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from ipa.domain import TaskEvent
from ipa.eventstore import EventStore, RecordedEvent, StreamNotFound

from .errors import BadRequest, run_id_param, task_id_param, whole_number

HISTORY_PAGE = 500
MAX_ID = 2**62
RETRY_MS = 1000
"""What the ``retry:`` line asks an ``EventSource`` to wait before it reconnects."""

Kind = str  # "task" | "all" | "run"
Include = Callable[[RecordedEvent], bool] | None

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"x-accel-buffering", b"no"),  # proxies must not hold frames back
]
PING = b": ping\r\n\r\n"
_event_id = itemgetter(0)


class _Client:
    """One open stream: what it has been sent, and why it ended."""

    __slots__ = ("last", "seq", "live", "ended", "gone")

    def __init__(self, last: int) -> None:
        self.last = last  # the id of the last event sent
        self.seq = -1  # the topic sequence number of the last live frame sent
        self.live = False  # past the history: may be dropped for falling behind
        self.ended: str | None = None  # "overflow" | "shutdown" | "closed"
        self.gone = False  # the client disconnected


class _Topic:
    """The live frames of one stream (a task's, a run's, or every task's) while clients
    follow it.

    ``entries`` are (event id, global position, frame) in log order; ``entries[0]`` has the
    sequence number ``first``. Every event of the stream after global position ``base`` is in
    ``entries`` or still to come from the tail; ``base`` rises when old entries are dropped.
    """

    def __init__(self, base: int, buffer: int) -> None:
        self.base = base
        self.buffer = max(buffer, 1)
        self.entries: list[tuple[int, int, bytes]] = []
        self.first = 0
        self.clients: set[_Client] = set()
        self.changed = anyio.Event()

    @property
    def newest(self) -> int:
        """The sequence number of the newest entry (``first - 1`` when there is none)."""
        return self.first + len(self.entries) - 1

    def publish(self, event_id: int, position: int, frame: bytes) -> int:
        """Add a frame, drop the clients now too far behind; returns how many were dropped."""
        self.entries.append((event_id, position, frame))
        if len(self.entries) > 2 * self.buffer:  # trimmed in blocks: amortised O(1)
            drop = len(self.entries) - self.buffer
            self.base = self.entries[drop - 1][1]
            del self.entries[:drop]
            self.first += drop
        newest, dropped = self.newest, 0
        for client in self.clients:
            if client.live and newest - client.seq > self.buffer:
                client.live = False
                client.ended = "overflow"
                dropped += 1
        self.wake()
        return dropped

    def wake(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()


class StreamHub:
    """The SSE endpoints and what they share: the topics, client counts, shutdown."""

    def __init__(self, store: EventStore, *, shutdown: anyio.Event, client_buffer: int = 1000,
                 ping: float = 15.0) -> None:
        self.store = store
        self.shutdown = shutdown
        self.client_buffer = client_buffer
        self.ping = ping
        self.clients: Counter[str] = Counter({"task": 0, "all": 0, "run": 0})
        self.overflows = 0
        self._topics: dict[UUID | None, _Topic] = {}  # None: the all-tasks stream
        self._frames: OrderedDict[tuple[int, bool], bytes] = OrderedDict()
        store.tail.observe(self._observe)

    def routes(self) -> list[Route]:
        return [
            Route("/api/stream", self.all_stream, methods=["GET"]),
            Route("/api/tasks/{task_id}/stream", self.task_stream, methods=["GET"]),
            Route("/api/runs/{run_id}/stream", self.run_stream, methods=["GET"]),
        ]

    # Endpoints -------------------------------------------------------------------------------

    async def task_stream(self, request: Request) -> EventStream:
        task_id = task_id_param(request)
        after = resume_point(request)
        if await self.store.version(task_id) == 0:
            raise StreamNotFound(task_id)
        return EventStream(self, "task", task_id, after)

    async def run_stream(self, request: Request) -> EventStream:
        return EventStream(self, "run", run_id_param(request), resume_point(request))

    async def all_stream(self, request: Request) -> EventStream:
        return EventStream(self, "all", None, resume_point(request))

    # The live side: the tail's observer --------------------------------------------------------

    def _observe(self, recorded: RecordedEvent | None) -> None:
        if recorded is None:  # the tail stopped: live streams end (clients reconnect)
            for topic in self._topics.values():
                for client in topic.clients:
                    client.ended = client.ended or "closed"
                topic.wake()
            return
        topic = self._topics.get(recorded.stream_id)
        if topic is not None:
            self.overflows += topic.publish(recorded.version, recorded.position,
                                            self.frame(recorded, by_position=False))
        everything = self._topics.get(None)
        if everything is not None and is_task_event(recorded):
            self.overflows += everything.publish(recorded.position, recorded.position,
                                                 self.frame(recorded, by_position=True))

    def _attach(self, stream_id: UUID | None, client: _Client) -> _Topic:
        topic = self._topics.get(stream_id)
        if topic is None:
            topic = self._topics[stream_id] = _Topic(self.store.tail.position,
                                                     self.client_buffer)
        topic.clients.add(client)
        return topic

    def _detach(self, stream_id: UUID | None, topic: _Topic, client: _Client) -> None:
        topic.clients.discard(client)
        if not topic.clients and self._topics.get(stream_id) is topic:
            del self._topics[stream_id]

    # One stream ----------------------------------------------------------------------------

    async def serve(self, stream: EventStream, receive: Receive, send: Send) -> None:
        """Send ``stream`` until the client goes, falls too far behind, or ipa shuts down."""
        client = _Client(stream.after)
        topic = self._attach(stream.stream_id, client)
        self.clients[stream.kind] += 1
        try:
            await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
            await send(_body(b"retry: %d\r\n\r\n" % RETRY_MS))
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch, receive, send, client, tg.cancel_scope)
                tg.start_soon(self._until_shutdown, client, tg.cancel_scope)
                await self._history(send, client, topic, stream)
                if self.store.tail.running:
                    await self._live(send, client, topic)
                tg.cancel_scope.cancel()
        finally:
            self._detach(stream.stream_id, topic, client)
            self.clients[stream.kind] -= 1
        if client.gone:
            return
        if client.ended == "overflow":
            await send(_body(final_frame(
                "overflow", client.last,
                "this client read too slowly; reconnect with Last-Event-ID")))
        elif client.ended == "shutdown":
            await send(_body(final_frame("shutdown", client.last, "ipa is shutting down")))
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _history(self, send: Send, client: _Client, topic: _Topic,
                       stream: EventStream) -> None:
        """Everything after ``client.last`` the topic cannot give: read from the store, a
        page per write, at the client's pace. Read again when the topic dropped entries
        meanwhile (they may have been committed after the read)."""
        by_position = stream.stream_id is None
        while client.ended is None:
            base = topic.base
            while client.ended is None:
                if stream.stream_id is None:
                    page = await self.store.read_log(client.last, HISTORY_PAGE)
                else:
                    page = await self.store.read(stream.stream_id, after=client.last,
                                                 limit=HISTORY_PAGE)
                frames = [self.frame(recorded, by_position) for recorded in page
                          if stream.include is None or stream.include(recorded)]
                if frames:
                    await send(_body(b"".join(frames)))
                if page:
                    last = page[-1]
                    client.last = last.position if by_position else last.version
                if len(page) < HISTORY_PAGE:
                    break
            if topic.base == base:
                return

    async def _live(self, send: Send, client: _Client, topic: _Topic) -> None:
        """The topic's frames after ``client.last``, as they come, all pending ones per write."""
        client.seq = topic.first + bisect_right(topic.entries, client.last, key=_event_id) - 1
        client.live = True
        while client.ended is None:
            newest = topic.newest
            if newest > client.seq:
                batch = topic.entries[client.seq + 1 - topic.first:]
                if batch[0][0] <= client.last:  # the tail is behind what the history read
                    batch = batch[bisect_right(batch, client.last, key=_event_id):]
                    if not batch:
                        client.seq = newest
                        continue
                body = batch[0][2] if len(batch) == 1 else b"".join([e[2] for e in batch])
                await send({"type": "http.response.body", "body": body, "more_body": True})
                client.seq = newest
                client.last = batch[-1][0]
            else:
                await topic.changed.wait()

    async def _watch(self, receive: Receive, send: Send, client: _Client,
                     scope: anyio.CancelScope) -> None:
        """Until the client disconnects, with a keep-alive comment every ``ping`` seconds."""
        while True:
            with anyio.move_on_after(self.ping if self.ping > 0 else None):
                message = await receive()
                if message["type"] == "http.disconnect":
                    client.gone = True
                    scope.cancel()
                    return
                continue
            await send(_body(PING))

    async def _until_shutdown(self, client: _Client, scope: anyio.CancelScope) -> None:
        await self.shutdown.wait()
        client.ended = client.ended or "shutdown"
        scope.cancel()

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


class EventStream:
    """The ASGI response of one SSE stream (served by :meth:`StreamHub.serve`)."""

    def __init__(self, hub: StreamHub, kind: Kind, stream_id: UUID | None, after: int) -> None:
        self.hub = hub
        self.kind = kind
        self.stream_id = stream_id
        self.after = after
        self.include: Include = is_task_event if kind == "all" else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.hub.serve(self, receive, send)


def _body(data: bytes) -> dict:
    return {"type": "http.response.body", "body": data, "more_body": True}


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
    """Where a stream starts: after ``Last-Event-ID``, else ``?after=``, else 0. Both are
    checked when both are given (a malformed one is a 400 either way)."""
    header = request.headers.get("last-event-id")
    query = request.query_params.get("after")
    points = [_resume_id(text, where) for text, where in
              ((header.strip() if header is not None else None, "Last-Event-ID"),
               (query, "after")) if text is not None]
    return points[0] if points else 0


def _resume_id(text: str, where: str) -> int:
    after = whole_number(text, MAX_ID)
    if after is None:
        raise BadRequest(f"{where} {text[:40]!r}: expected an event id (a whole number ≥ 0) "
                         "from this stream", code="bad_last_event_id")
    return after
