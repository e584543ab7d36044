"""The live tail: one reader of the store's log per process, fanned out in memory.

The tail follows the ``events`` table by global position. It wakes when this process commits
(a direct poke), when PostgreSQL NOTIFYs the ``events`` channel (commits by other processes,
through one LISTEN connection), and at least every ``poll_interval`` seconds; each time it reads
every new row once and hands it to the subscribers' bounded in-memory buffers.

A :class:`Subscription` starts from a position (a stream version, or a global position for the
all-streams log) and delivers every later event exactly once, in order: it attaches to the tail
first, reads the backlog from the store, then drains the live buffer skipping what the backlog
already gave. A subscriber whose buffer overflows (it reads slower than events arrive) is
detached; its subscription reads the missed events from the store and re-attaches, so a slow
reader never blocks the tail or other readers, and never misses an event.

An *observer* (:meth:`LiveTail.observe`) is the cheaper form for a fan-out of its own (the SSE
hub): a plain function the tail calls with every event it hands out, in log order, from the
tail's own task, and with ``None`` when the tail stops. It must be quick and never block.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from uuid import UUID

import anyio
import psycopg
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from psycopg.sql import SQL, Identifier

from .codec import RecordedEvent
from .database import connected
from .errors import StoreError

log = logging.getLogger(__name__)

ReadLog = Callable[[int, int], Awaitable[list[RecordedEvent]]]
ReadStream = Callable[[UUID, int, int], Awaitable[list[RecordedEvent]]]

_PAGE = 1000

Observer = Callable[[RecordedEvent | None], None]

_Channel = tuple[MemoryObjectSendStream[RecordedEvent], MemoryObjectReceiveStream[RecordedEvent]]


class LiveTail:
    """Follows the store's log and fans new events out to subscriptions."""

    def __init__(
        self,
        read_log: ReadLog,
        read_stream: ReadStream,
        *,
        start: Callable[[], Awaitable[int]],
        listen: tuple[str, str] | None = None,
        poll_interval: float = 1.0,
        buffer: int = 1000,
    ) -> None:
        self._read_log = read_log
        self._read_stream = read_stream
        self._start = start
        self._listen_on = listen  # (conninfo, channel)
        self._poll_interval = poll_interval
        self._buffer = buffer
        self._wakeup = anyio.Event()
        self._position = 0
        self._all: set[MemoryObjectSendStream[RecordedEvent]] = set()
        self._streams: dict[UUID, set[MemoryObjectSendStream[RecordedEvent]]] = {}
        self._observers: list[Observer] = []
        self._running = False

    @property
    def position(self) -> int:
        """The global position of the last event handed to subscribers."""
        return self._position

    @property
    def running(self) -> bool:
        """Whether the tail is following the log (events after :attr:`position` will come)."""
        return self._running

    def poke(self) -> None:
        """Wake the tail now (called after this process commits)."""
        self._wakeup.set()

    def subscribe(self, stream_id: UUID | None = None, *, after: int = 0) -> Subscription:
        """Events of ``stream_id`` after version ``after``, or of every stream after global
        position ``after`` when ``stream_id`` is None."""
        return Subscription(self, stream_id, after)

    def observe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer(recorded)`` for every event handed out from now on (every event
        after :attr:`position`, in log order), and ``observer(None)`` when the tail stops.
        It runs in the tail's task: it must be quick and must not block. Returns a function
        that ends the calls."""
        self._observers.append(observer)
        return lambda: self._observers.remove(observer) if observer in self._observers else None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow the log until cancelled; subscriptions end when it stops."""
        self._position = await self._start()
        self._running = True
        try:
            async with anyio.create_task_group() as tg:
                if self._listen_on is not None:
                    tg.start_soon(self._listen, *self._listen_on)
                task_status.started()
                while True:
                    with anyio.move_on_after(self._poll_interval):
                        await self._wakeup.wait()
                    self._wakeup = anyio.Event()
                    await self._drain()
        finally:
            self._running = False
            for observer in list(self._observers):
                _notify(observer, None)
            for send in [*self._all, *(s for ss in self._streams.values() for s in ss)]:
                send.close()
            self._all.clear()
            self._streams.clear()

    async def _drain(self) -> None:
        while True:
            try:
                page = await self._read_log(self._position, _PAGE)
            except StoreError as e:
                log.warning("live tail: cannot read the log after %s: %s", self._position, e)
                return
            for recorded in page:
                self._fan_out(recorded)
                self._position = recorded.position
            if len(page) < _PAGE:
                return

    def _fan_out(self, recorded: RecordedEvent) -> None:
        for observer in self._observers:
            _notify(observer, recorded)
        self._send(self._all, recorded)
        subscribers = self._streams.get(recorded.stream_id)
        if subscribers:
            self._send(subscribers, recorded)
            if not subscribers:
                del self._streams[recorded.stream_id]

    @staticmethod
    def _send(
        subscribers: set[MemoryObjectSendStream[RecordedEvent]], recorded: RecordedEvent
    ) -> None:
        for send in list(subscribers):
            try:
                send.send_nowait(recorded)
            except anyio.WouldBlock:
                # Too slow: detach; its subscription catches up from the store.
                send.close()
                subscribers.discard(send)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                subscribers.discard(send)

    async def _listen(self, conninfo: str, channel: str) -> None:
        delay = 0.5
        while True:
            try:
                async with connected(
                    conninfo, autocommit=True
                ) as conn:
                    await conn.execute(SQL("LISTEN {}").format(Identifier(channel)))
                    delay = 0.5
                    self._wakeup.set()  # whatever committed while we were not listening
                    async for _ in conn.notifies():
                        self._wakeup.set()
            except psycopg.Error as e:
                log.warning("live tail: LISTEN %s failed (%s); polling meanwhile", channel, e)
                await anyio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _attach(self, stream_id: UUID | None) -> _Channel | None:
        if not self._running:
            return None
        send, receive = anyio.create_memory_object_stream[RecordedEvent](self._buffer)
        if stream_id is None:
            self._all.add(send)
        else:
            self._streams.setdefault(stream_id, set()).add(send)
        return send, receive

    def _detach(self, stream_id: UUID | None, channel: _Channel) -> None:
        send, receive = channel
        subscribers = self._all if stream_id is None else self._streams.get(stream_id, set())
        subscribers.discard(send)
        if stream_id is not None and not subscribers:
            self._streams.pop(stream_id, None)
        send.close()
        receive.close()


def _notify(observer: Observer, recorded: RecordedEvent | None) -> None:
    try:
        observer(recorded)
    except Exception:  # a broken observer must not stop the tail for everyone else
        where = "the tail's stop" if recorded is None else f"position {recorded.position}"
        log.exception("live tail: observer %r failed at %s", observer, where)


class Subscription:
    """An async iterator of recorded events after a starting point, with no gap and no
    duplicate; use as ``async with tail.subscribe(...) as events: async for e in events``."""

    def __init__(self, tail: LiveTail, stream_id: UUID | None, after: int) -> None:
        self._tail = tail
        self._stream_id = stream_id
        self._last = after
        self._backlog: deque[RecordedEvent] = deque()
        self._live: _Channel | None = None
        self._catching_up = True

    @property
    def last(self) -> int:
        """The version (or global position) of the last event delivered."""
        return self._last

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop following; safe to call more than once."""
        if self._live is not None:
            self._tail._detach(self._stream_id, self._live)
            self._live = None

    def __aiter__(self) -> Subscription:
        return self

    def _key(self, recorded: RecordedEvent) -> int:
        return recorded.position if self._stream_id is None else recorded.version

    async def __anext__(self) -> RecordedEvent:
        while True:
            if self._backlog:
                recorded = self._backlog.popleft()
                self._last = self._key(recorded)
                return recorded
            if self._live is None:
                # Attach before reading the backlog, so nothing committed in between is lost.
                self._live = self._tail._attach(self._stream_id)
                self._catching_up = True
            if self._catching_up:
                page = await self._read_backlog()
                if page:
                    self._backlog.extend(page)
                    continue
                self._catching_up = False
                if self._live is None:
                    raise StopAsyncIteration  # the tail is not running: history only
            assert self._live is not None
            try:
                recorded = await self._live[1].receive()
            except anyio.EndOfStream:
                # Detached for being slow, or the tail stopped: catch up from the store and
                # re-attach (or end after the backlog, when the tail is gone).
                self.close()
                continue
            if self._key(recorded) > self._last:
                self._last = self._key(recorded)
                return recorded

    async def _read_backlog(self) -> list[RecordedEvent]:
        if self._stream_id is None:
            return await self._tail._read_log(self._last, _PAGE)
        return await self._tail._read_stream(self._stream_id, self._last, _PAGE)
