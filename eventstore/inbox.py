"""Requests from one node to another, through PostgreSQL (DESIGN §6.1: no node talks to
another directly).

A node that gets a command for a task another live node owns puts the request in
``ipa_inbox`` (a row addressed to the owner, and a ``NOTIFY ipa_inbox`` naming it in the same
statement) and waits for the answer, which the owner writes into the row and announces with
``NOTIFY ipa_answers`` naming the request. Each node listens on both channels on a connection
of its own, and also looks at its inbox on every heartbeat (a notification is lost when a
listener reconnects).

**At most once.** The owner takes a request (``taken_at``) before it runs it; a caller that
gives up first withdraws it (only if nobody took it), so an unanswered request was either
never run or is being run. A request's id is derived from the client's ``X-Request-Id`` when
it gives one: the same request sent again (a retry after a timeout) gets the first one's
answer instead of running twice. Rows are kept an hour.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import anyio
import psycopg
from anyio.abc import TaskStatus
from psycopg.rows import dict_row
from psycopg.sql import SQL, Identifier

from .database import connected
from .errors import StoreError, StoreUnavailable, one_line

log = logging.getLogger(__name__)

INBOX_TABLE = "ipa_inbox"
REQUESTS = "ipa_inbox"
ANSWERS = "ipa_answers"
KEEP_SECONDS = 3600

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
"""Runs a request on this node (the owner) and returns its answer (JSON)."""


class OwnerUnreachable(StoreError):
    """The owner did not take the request in time (it may be dead, or its lease moving)."""

    def __init__(self, node_id: str, seconds: float) -> None:
        super().__init__(f"node {node_id}, which owns the task, did not answer within "
                         f"{seconds:g} s; nothing was applied: try again")
        self.node_id = node_id
        self.retry_after = 2


def create_statements(schema: str) -> list[SQL]:
    table = SQL("{}.{}").format(Identifier(schema), Identifier(INBOX_TABLE))
    return [
        SQL("CREATE TABLE IF NOT EXISTS {} ("
            "id uuid PRIMARY KEY, node_id text NOT NULL, task_id uuid NOT NULL, "
            "request jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), "
            "taken_at timestamptz, answer jsonb, answered_at timestamptz)").format(table),
        SQL("CREATE INDEX IF NOT EXISTS ipa_inbox_open ON {} (node_id) "
            "WHERE taken_at IS NULL").format(table),
    ]


def request_id(key: str | None) -> UUID:
    """The id of a request: from the client's own id for it (the same for a retry), else
    new."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"ipa-request:{key}") if key else uuid.uuid4()


class Inbox:
    """This node's end of the channel: :meth:`ask` another node, :meth:`run` to answer."""

    def __init__(self, conninfo: str, describe: str, schema: str, node_id: str) -> None:
        self.node_id = node_id
        self._conninfo = conninfo
        self._describe = describe
        self._table = SQL("{}.{}").format(Identifier(schema), Identifier(INBOX_TABLE))
        self._waiting: dict[UUID, anyio.Event] = {}
        self._handler: Handler | None = None
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None  # for queries
        self._lock = anyio.Lock()
        self._tg: Any = None
        self._swept = -math.inf

    # -- asking -----------------------------------------------------------------------------

    async def ask(self, node_id: str, task_id: UUID, request: dict[str, Any], *,
                  key: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
        """Send ``request`` to ``node_id`` and return its answer. :class:`OwnerUnreachable`
        when it did not take the request within ``timeout`` seconds (the request is
        withdrawn: it will not run)."""
        rid = request_id(key)
        done = self._waiting.setdefault(rid, anyio.Event())
        try:
            sent = await self._query(SQL(
                "WITH sent AS (INSERT INTO {} (id, node_id, task_id, request) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING id) "
                "SELECT pg_notify(%s, %s) FROM sent").format(self._table),
                (rid, node_id, task_id, json.dumps(request), REQUESTS, node_id))
            if not sent:  # sent before (a retry): its answer, if there is one yet
                answer = await self._answer(rid)
                if answer is not None:
                    return answer
            else:  # the answer cannot be there yet: wait for its notification first
                done = await self._woken(rid, done)
            with anyio.move_on_after(timeout):
                while (answer := await self._answer(rid)) is None:
                    done = await self._woken(rid, done)
                return answer
            withdrawn = await self._query(SQL(
                "DELETE FROM {} WHERE id = %s AND taken_at IS NULL RETURNING id"
            ).format(self._table), (rid,))
            if withdrawn:
                raise OwnerUnreachable(node_id, timeout)
            # Taken: it runs (or ran) there; its answer follows (a run that is cut short by
            # its node's death is answered by nobody: wait a bounded while longer).
            with anyio.move_on_after(max(30.0, timeout)):
                while (answer := await self._answer(rid)) is None:
                    done = await self._woken(rid, done)
                return answer
            raise OwnerUnreachable(node_id, max(30.0, timeout) + timeout)
        finally:
            self._waiting.pop(rid, None)

    async def _woken(self, rid: UUID, done: anyio.Event) -> anyio.Event:
        """Wait for the answer's notification (or a quarter second: a notification is lost
        while this node's listener reconnects); the event to wait on next."""
        with anyio.move_on_after(0.25):
            await done.wait()
        if done.is_set():
            done = self._waiting[rid] = anyio.Event()
        return done

    async def _answer(self, rid: UUID) -> dict[str, Any] | None:
        rows = await self._query(SQL("SELECT answer FROM {} WHERE id = %s").format(self._table),
                                 (rid,))
        if rows and rows[0]["answer"] is not None:
            return rows[0]["answer"]
        return None

    # -- answering ----------------------------------------------------------------------------

    async def run(self, handler: Handler, *,
                  task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen for requests to this node and answers to its own, until cancelled."""
        self._handler = handler
        started = False
        async with anyio.create_task_group() as tg:
            self._tg = tg
            while True:
                try:
                    async with connected(
                            self._conninfo, autocommit=True) as listener:
                        await listener.execute(f"LISTEN {REQUESTS}")
                        await listener.execute(f"LISTEN {ANSWERS}")
                        if not started:
                            started = True
                            task_status.started()
                        await self.take()  # what came while nobody listened
                        async for note in listener.notifies():
                            if note.channel == REQUESTS and note.payload == self.node_id:
                                tg.start_soon(self.take)
                            elif note.channel == ANSWERS:
                                with contextlib.suppress(ValueError):
                                    event = self._waiting.get(UUID(note.payload))
                                    if event is not None:
                                        event.set()
                except (psycopg.Error, StoreError) as e:
                    log.warning("node %s: inbox listener: %s; listening again in 1 s",
                                self.node_id, one_line(e))
                    if not started:
                        started = True
                        task_status.started()
                    await anyio.sleep(1.0)

    async def take(self) -> None:
        """Take every request to this node that nobody took, and answer each (side by
        side); old rows go."""
        if self._handler is None or self._tg is None:
            return
        try:
            rows = await self._query(SQL(
                "UPDATE {} SET taken_at = now() WHERE node_id = %s AND taken_at IS NULL "
                "RETURNING id, task_id, request").format(self._table), (self.node_id,))
        except StoreError as e:
            log.warning("node %s: inbox not read: %s", self.node_id, e)
            return
        for row in rows:
            self._tg.start_soon(self._answer_one, row["id"], row["request"])
        if time.monotonic() - self._swept > 60:  # old rows go, once a minute at most
            self._swept = time.monotonic()
            with contextlib.suppress(StoreError):
                await self._query(SQL(
                    "DELETE FROM {} WHERE created_at < now() - make_interval(secs => %s)"
                ).format(self._table), (KEEP_SECONDS,))

    async def _answer_one(self, rid: UUID, request: dict[str, Any]) -> None:
        assert self._handler is not None
        try:
            answer = await self._handler(request)
        except Exception as e:  # the handler maps errors itself; this is a bug's last stop
            log.exception("node %s: request %s failed", self.node_id, rid)
            answer = {"status": 500, "body": {"error": {
                "code": "internal_error", "message": f"the owner failed: {one_line(e)}"}}}
        with anyio.CancelScope(shield=True):
            try:
                await self._query(SQL(
                    "WITH answered AS (UPDATE {} SET answer = %s, answered_at = now() "
                    "WHERE id = %s RETURNING id) SELECT pg_notify(%s, %s) FROM answered"
                ).format(self._table), (json.dumps(answer), rid, ANSWERS, str(rid)))
            except StoreError as e:
                log.warning("node %s: answer to request %s not recorded: %s", self.node_id,
                            rid, e)

    # -- plumbing -----------------------------------------------------------------------------

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with anyio.CancelScope(shield=True):
                await conn.close()

    async def _query(self, statement: Any, params: Any) -> list[dict[str, Any]]:
        async with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True, row_factory=dict_row)
                cursor = await self._conn.execute(statement, params)
                return await cursor.fetchall() if cursor.description else []
            except psycopg.OperationalError as e:
                if self._conn is not None:
                    await self._conn.close()
                    self._conn = None
                raise StoreUnavailable(f"node {self.node_id}: the database at "
                                       f"{self._describe}: {one_line(e)}") from e
