"""Nodes and task leases: several ``ipa serve`` processes on one store (DESIGN §6.1).

PostgreSQL is the only channel between nodes. Two tables:

- ``ipa_nodes``: one row per node id (address, started, last heartbeat, pods, agents,
  status ``up`` / ``draining`` / ``dead`` / ``left``). A live node also holds a session-level
  advisory lock on its id, on a connection of its own, for as long as it lives: when the
  process dies (SIGKILL, a lost machine) the database drops its session and the lock, and the
  next node to look (:meth:`Node.find_dead`) takes the lock at once and marks it ``dead``. A
  node that hangs with its session open is marked dead once its heartbeat is older than the
  lease TTL. Times are the database's (``now()``), never a node's clock.
- ``ipa_leases``: ``(task_id, node_id, epoch)``, one row per leased task. Claiming a task bumps
  its epoch. A task is free when it has no row, no node, or a dead node.

**Fencing.** Every append a node makes to a task it holds carries ``(task, node, epoch)``
(:meth:`Fences.of`); the append's statement (:mod:`.recorder`) checks, in the append's own
transaction and under a share lock on the lease row, that the row still says so, and writes
nothing otherwise (the writer then raises :class:`LeaseLost`). A node that lost a lease
(paused past the TTL, cut off from the database) can therefore write nothing more to that task,
whatever it believes; a claim waits for an append in flight and bumps the epoch after it.

This module keeps the rows and the node's own session; what runs where is the supervisor's.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import anyio
import psycopg
from psycopg.rows import RowFactory, dict_row, tuple_row
from psycopg.sql import SQL, Identifier

from .database import ConnectionParams
from .errors import StoreError, StoreUnavailable, one_line
from .inbox import Inbox

log = logging.getLogger(__name__)

NODES_TABLE = "ipa_nodes"
LEASES_TABLE = "ipa_leases"
SESSIONS_TABLE = "ipa_sessions"
"""Log-in sessions every node honours (``ui/sessions.py`` keeps and checks them)."""

NODE_STATUSES = ("up", "draining", "dead", "left")


class NodeIdTaken(StoreError):
    """Another live process holds this node id."""

    def __init__(self, node_id: str) -> None:
        super().__init__(f"node id {node_id!r} is in use by a live ipa node on this store "
                         "(give this one another --node-id)")
        self.node_id = node_id


class LeaseLost(StoreError):
    """An append to a task whose lease this node no longer holds (another node claimed it)."""

    def __init__(self, task_id: UUID, node_id: str) -> None:
        super().__init__(f"task {task_id}: node {node_id} no longer holds its lease; "
                         "another node owns it now")
        self.task_id = task_id
        self.node_id = node_id


def create_statements(schema: str) -> list[SQL]:
    """The tables (created with the store's other tables)."""
    nodes = SQL("{}.{}").format(Identifier(schema), Identifier(NODES_TABLE))
    leases = SQL("{}.{}").format(Identifier(schema), Identifier(LEASES_TABLE))
    sessions = SQL("{}.{}").format(Identifier(schema), Identifier(SESSIONS_TABLE))
    return [
        SQL("CREATE TABLE IF NOT EXISTS {} (digest bytea PRIMARY KEY, name text NOT NULL, "
            "expires_at double precision NOT NULL, mac text NOT NULL)").format(sessions),
        SQL("CREATE TABLE IF NOT EXISTS {} ("
            "id text PRIMARY KEY, address text NOT NULL DEFAULT '', "
            "started_at timestamptz NOT NULL DEFAULT now(), "
            "heartbeat_at timestamptz NOT NULL DEFAULT now(), "
            "status text NOT NULL DEFAULT 'up', pods integer NOT NULL DEFAULT 0, "
            "agents integer NOT NULL DEFAULT 0, max_pods integer)").format(nodes),
        SQL("CREATE TABLE IF NOT EXISTS {} ("
            "task_id uuid PRIMARY KEY, node_id text, epoch bigint NOT NULL DEFAULT 0, "
            "claimed_at timestamptz NOT NULL DEFAULT now())").format(leases),
        SQL("CREATE INDEX IF NOT EXISTS ipa_leases_node ON {} (node_id)").format(leases),
    ]


@dataclass(frozen=True)
class NodeRow:
    """A node as the store records it (``alive``: its status is ``up`` or ``draining``)."""

    id: str
    address: str
    started_at: datetime
    heartbeat_at: datetime
    status: str
    pods: int
    agents: int
    max_pods: int | None
    leases: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "address": self.address,
                "started_at": self.started_at.isoformat(),
                "heartbeat_at": self.heartbeat_at.isoformat(), "status": self.status,
                "pods": self.pods, "agents": self.agents, "max_pods": self.max_pods,
                "leases": self.leases}


class Fences:
    """The leases this process holds, by task: what its appends are fenced with.

    A lease lost stays here with its old epoch until its pod has stopped (:meth:`drop`), so
    any append the pod still tries is refused by the database, not sent unfenced.
    """

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._epochs: dict[UUID, int] = {}

    def hold(self, task_id: UUID, epoch: int) -> None:
        self._epochs[task_id] = epoch

    def drop(self, task_id: UUID) -> None:
        self._epochs.pop(task_id, None)

    def epoch(self, task_id: UUID) -> int | None:
        return self._epochs.get(task_id)

    def held(self) -> dict[UUID, int]:
        return dict(self._epochs)

    def of(self, task_id: UUID) -> tuple[UUID, str, int] | None:
        """``(task, node, epoch)`` for an append fenced by ``task_id``'s lease, if held."""
        epoch = self._epochs.get(task_id)
        return None if epoch is None else (task_id, self.node_id, epoch)


class Node:
    """This process as a node of the store: its row, its advisory lock, its leases.

    One connection of its own (autocommit), used one statement at a time; :meth:`open` takes
    the node's lock on it and :meth:`close` gives it up (the database does so too when the
    process dies).
    """

    def __init__(self, params: ConnectionParams, schema: str, node_id: str, *,
                 address: str = "", max_pods: int | None = None) -> None:
        self.id = node_id
        self.address = address
        self.max_pods = max_pods
        self.fences = Fences(node_id)
        self._conninfo = params.conninfo()
        self._describe = params.describe()
        self._nodes = SQL("{}.{}").format(Identifier(schema), Identifier(NODES_TABLE))
        self._leases = SQL("{}.{}").format(Identifier(schema), Identifier(LEASES_TABLE))
        self._owners = SQL("SELECT task_id::text, node_id FROM {} WHERE node_id IS NOT NULL"
                           ).format(self._leases).as_bytes(None)
        self._sessions = SQL("{}.{}").format(Identifier(schema), Identifier(SESSIONS_TABLE))
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._lock = anyio.Lock()
        self._opened = False
        self.inbox = Inbox(self._conninfo, self._describe, schema, node_id)
        """Requests to and from the other nodes (:mod:`.inbox`)."""

    # -- the node's session -----------------------------------------------------------------

    async def open(self) -> None:
        """Connect, take the node id's lock (:class:`NodeIdTaken` if a live node has it) and
        mark the node ``up``."""
        try:
            self._conn = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, row_factory=dict_row)
        except psycopg.Error as e:
            raise StoreUnavailable(f"cannot reach the database at {self._describe}: "
                                   f"{one_line(e)}") from e
        try:
            row = await self._one("SELECT pg_try_advisory_lock(hashtextextended(%s, 0)) AS ok",
                                  (_lock_key(self.id),))
            if not row or not row["ok"]:
                raise NodeIdTaken(self.id)
            # A reconnection (the database restarted) keeps the node's start time and counts.
            again = self._opened
            await self._run(SQL(
                "INSERT INTO {} (id, address, started_at, heartbeat_at, status, max_pods) "
                "VALUES (%s, %s, now(), now(), 'up', %s) ON CONFLICT (id) DO UPDATE SET "
                "address = EXCLUDED.address, heartbeat_at = now(), status = 'up', "
                "max_pods = EXCLUDED.max_pods"
                + ("" if again else ", started_at = now(), pods = 0, agents = 0")
            ).format(self._nodes), (self.id, self.address, self.max_pods))
        except BaseException:
            await self.close()  # a node that did not open holds no connection
            raise
        self._opened = True

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):  # closed even by a cancelled caller
            await self.inbox.close()
            if self._conn is not None:
                conn, self._conn = self._conn, None
                # A closed socket frees the session lock only once the backend has noticed and
                # exited, a moment later; a node that leaves lets go of it itself, so a watcher
                # sees it gone at once (a crashed one is seen by the next sweep).
                with contextlib.suppress(psycopg.Error):
                    await conn.execute("SELECT pg_advisory_unlock_all()")
                await conn.close()

    async def heartbeat(self, *, pods: int, agents: int) -> str:
        """Record that this node lives (the database's time) with its counts; return the
        status the others see (``dead`` when they gave up on it: its leases are theirs)."""
        row = await self._one(SQL(
            "UPDATE {} SET heartbeat_at = now(), pods = %s, agents = %s, address = %s "
            "WHERE id = %s RETURNING status").format(self._nodes),
            (pods, agents, self.address, self.id))
        return row["status"] if row else "dead"

    async def set_status(self, status: str) -> None:
        assert status in NODE_STATUSES
        counts = ", pods = 0, agents = 0" if status == "left" else ""
        await self._run(SQL("UPDATE {} SET status = %s, heartbeat_at = now()" + counts +
                            " WHERE id = %s").format(self._nodes), (status, self.id))

    async def find_dead(self, ttl: float) -> list[str]:
        """Mark ``dead`` every other node that is gone: its session lock is free (it died)
        or its heartbeat is older than ``ttl`` seconds (it hangs). Returns their ids."""
        rows = await self._all(SQL(
            "SELECT id, heartbeat_at < now() - make_interval(secs => %s) AS stale FROM {} "
            "WHERE id <> %s AND status IN ('up', 'draining')").format(self._nodes),
            (ttl, self.id))
        dead = []
        for row in rows:
            if row["stale"]:
                dead.append(row["id"])
                continue
            key = _lock_key(row["id"])
            free = await self._one("SELECT pg_try_advisory_lock(hashtextextended(%s, 0)) AS ok",
                                   (key,))
            if free and free["ok"]:
                await self._run("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
                dead.append(row["id"])
        if dead:
            await self._run(SQL("UPDATE {} SET status = 'dead' WHERE id = ANY(%s) AND "
                                "status IN ('up', 'draining')").format(self._nodes), (dead,))
        return dead

    async def nodes(self) -> list[NodeRow]:
        rows = await self._all(SQL(
            "SELECT n.*, (SELECT count(*) FROM {} l WHERE l.node_id = n.id) AS leases "
            "FROM {} n ORDER BY n.id").format(self._leases, self._nodes))
        return [NodeRow(id=r["id"], address=r["address"], started_at=r["started_at"],
                        heartbeat_at=r["heartbeat_at"], status=r["status"], pods=r["pods"],
                        agents=r["agents"], max_pods=r["max_pods"], leases=r["leases"])
                for r in rows]

    # -- leases -------------------------------------------------------------------------------

    async def reclaim_own(self) -> dict[UUID, int]:
        """At start: the leases still in this node's name (its previous process died), each
        with a new epoch."""
        rows = await self._all(SQL(
            "UPDATE {} SET epoch = epoch + 1, claimed_at = now() WHERE node_id = %s "
            "RETURNING task_id, epoch").format(self._leases), (self.id,))
        return self._held(rows)

    async def claim(self, task_ids: list[UUID]) -> dict[UUID, int]:
        """Claim those of ``task_ids`` that are free (no lease, no node, or a dead node's);
        returns the ones claimed with their new epochs."""
        if not task_ids:
            return {}
        rows = await self._all(SQL(
            "INSERT INTO {leases} AS l (task_id, node_id, epoch, claimed_at) "
            "SELECT t, %s, 1, now() FROM unnest(%s::uuid[]) AS t "
            "ON CONFLICT (task_id) DO UPDATE SET node_id = EXCLUDED.node_id, "
            "epoch = l.epoch + 1, claimed_at = now() "
            "WHERE l.node_id IS NULL OR l.node_id IN "
            "(SELECT id FROM {nodes} WHERE status IN ('dead', 'left')) "
            "RETURNING task_id, epoch").format(leases=self._leases, nodes=self._nodes),
            (self.id, task_ids))
        return self._held(rows)

    async def assign(self, task_id: UUID, node_id: str) -> int:
        """A new task's lease, in ``node_id``'s name (this node's, or the least loaded
        one's); returns its epoch. The task must not have a lease yet."""
        row = await self._one(SQL(
            "INSERT INTO {} (task_id, node_id, epoch, claimed_at) VALUES (%s, %s, 1, now()) "
            "ON CONFLICT (task_id) DO NOTHING RETURNING epoch").format(self._leases),
            (task_id, node_id))
        if row is None:
            raise StoreError(f"task {task_id} has a lease already")
        if node_id == self.id:
            self.fences.hold(task_id, row["epoch"])
        return int(row["epoch"])

    async def claim_orphans(self) -> dict[UUID, int]:
        """This node's share of the leases of dead or departed nodes (and released ones):
        enough to bring it to an even share of all leases over the live nodes (rounded up),
        so survivors spread a dead node's tasks instead of the fastest taking them all."""
        counts = await self._one(SQL(
            "SELECT count(*) FILTER (WHERE l.node_id IS NULL OR n.status IN ('dead', 'left')) "
            "AS orphans, count(*) FILTER (WHERE n.status IN ('up', 'draining')) AS held, "
            "count(*) FILTER (WHERE l.node_id = %s) AS mine, "
            "(SELECT count(*) FROM {nodes} WHERE status = 'up') AS live "
            "FROM {leases} l LEFT JOIN {nodes} n ON n.id = l.node_id"
        ).format(leases=self._leases, nodes=self._nodes), (self.id,))
        if not counts or not counts["orphans"]:
            return {}
        total = counts["orphans"] + counts["held"]
        share = math.ceil(total / max(1, counts["live"])) - counts["mine"]
        if share <= 0:
            return {}
        rows = await self._all(SQL(
            "UPDATE {leases} SET node_id = %s, epoch = epoch + 1, claimed_at = now() "
            "WHERE task_id IN (SELECT task_id FROM {leases} WHERE node_id IS NULL OR node_id IN "
            "(SELECT id FROM {nodes} WHERE status IN ('dead', 'left')) "
            "ORDER BY task_id LIMIT %s FOR UPDATE SKIP LOCKED) "
            "RETURNING task_id, epoch").format(leases=self._leases, nodes=self._nodes),
            (self.id, share))
        return self._held(rows)

    async def mine(self) -> dict[UUID, int]:
        """The leases the store says this node holds now, with their epochs."""
        rows = await self._all(SQL("SELECT task_id, epoch FROM {} WHERE node_id = %s"
                                   ).format(self._leases), (self.id,))
        return {row["task_id"]: int(row["epoch"]) for row in rows}

    async def owner(self, task_id: UUID) -> tuple[str, str, str] | None:
        """``(node id, status, address)`` of the task's lease holder, or ``None`` if free."""
        row = await self._one(SQL(
            "SELECT n.id, n.status, n.address FROM {} l JOIN {} n ON n.id = l.node_id "
            "WHERE l.task_id = %s").format(self._leases, self._nodes), (task_id,))
        return None if row is None else (row["id"], row["status"], row["address"])

    async def owners(self) -> dict[str, str]:
        """Every leased task's node, by the task id's text (as the task list writes it).

        Read for every wave of API requests: the ids come as text from the database and the
        rows as tuples (dict rows and ``str(UUID)`` cost ~1 ms of Python per 600 leases)."""
        cursor = await self._execute(self._owners, None, tuple_row)
        return dict(await cursor.fetchall())

    async def least_loaded(self) -> str | None:
        """The live node with the fewest leases under its ``max_pods`` (``None``: all full)."""
        row = await self._one(SQL(
            "SELECT n.id FROM {nodes} n LEFT JOIN {leases} l ON l.node_id = n.id "
            "WHERE n.status = 'up' GROUP BY n.id, n.max_pods "
            "HAVING n.max_pods IS NULL OR count(l.task_id) < n.max_pods "
            "ORDER BY count(l.task_id), n.id LIMIT 1").format(
                nodes=self._nodes, leases=self._leases))
        return None if row is None else row["id"]

    async def leases_held(self) -> int:
        row = await self._one(SQL("SELECT count(*) AS n FROM {} WHERE node_id = %s"
                                  ).format(self._leases), (self.id,))
        return int(row["n"]) if row else 0

    async def release(self, task_ids: list[UUID]) -> None:
        """Give leases up (a drain): another node claims them at once."""
        if task_ids:
            await self._run(SQL("UPDATE {} SET node_id = NULL WHERE node_id = %s AND "
                                "task_id = ANY(%s)").format(self._leases), (self.id, task_ids))

    async def forget(self, task_id: UUID) -> None:
        """A finished task's lease (nothing runs for it any more)."""
        await self._run(SQL("DELETE FROM {} WHERE task_id = %s AND node_id = %s"
                            ).format(self._leases), (task_id, self.id))
        self.fences.drop(task_id)

    # -- log-in sessions shared by the nodes (ui/sessions.py) ---------------------------------

    async def put_session(self, digest: bytes, name: str, expires_at: float, mac: str) -> None:
        await self._run(SQL(
            "INSERT INTO {} (digest, name, expires_at, mac) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (digest) DO NOTHING").format(self._sessions),
            (digest, name, expires_at, mac))
        await self._run(SQL("DELETE FROM {} WHERE expires_at < extract(epoch FROM now())"
                            ).format(self._sessions))

    async def get_session(self, digest: bytes) -> tuple[str, float, str] | None:
        row = await self._one(SQL("SELECT name, expires_at, mac FROM {} WHERE digest = %s"
                                  ).format(self._sessions), (digest,))
        return None if row is None else (row["name"], float(row["expires_at"]), row["mac"])

    async def delete_session(self, digest: bytes) -> None:
        await self._run(SQL("DELETE FROM {} WHERE digest = %s").format(self._sessions),
                        (digest,))

    # -- plumbing -----------------------------------------------------------------------------

    def _held(self, rows: list[dict[str, Any]]) -> dict[UUID, int]:
        held = {row["task_id"]: int(row["epoch"]) for row in rows}
        for task_id, epoch in held.items():
            self.fences.hold(task_id, epoch)
        return held

    async def _run(self, statement: Any, params: Any = None) -> None:
        await self._execute(statement, params)

    async def _one(self, statement: Any, params: Any = None) -> dict[str, Any] | None:
        cursor = await self._execute(statement, params)
        return await cursor.fetchone() if cursor.description else None

    async def _all(self, statement: Any, params: Any = None) -> list[dict[str, Any]]:
        cursor = await self._execute(statement, params)
        return await cursor.fetchall() if cursor.description else []

    async def _execute(self, statement: Any, params: Any,
                       row_factory: RowFactory[Any] = dict_row) -> Any:
        async with self._lock:
            # Looked at under the lock: a close may have come while this waited for it.
            if self._conn is None:
                raise StoreUnavailable(f"node {self.id} is not connected to the store")
            try:
                return await self._conn.cursor(row_factory=row_factory).execute(
                    statement, params)
            except psycopg.OperationalError as e:
                raise StoreUnavailable(f"node {self.id}: the database at {self._describe}: "
                                       f"{one_line(e)}") from e


def _lock_key(node_id: str) -> str:
    return f"ipa-node:{node_id}"
