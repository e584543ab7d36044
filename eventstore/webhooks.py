"""Webhooks' storage: the webhooks, their deliveries and the dispatcher's log position.

Three tables, shared by every node of the store:

- ``ipa_webhooks``: one row per registered webhook, folded from the webhook ledger (URL,
  event types, sealed secret, enabled), plus what deliveries learn (``failures``: failed
  attempts in a row);
- ``ipa_webhook_deliveries``: one row per webhook × message, its id the message's delivery id
  (stable: the ``webhook-id`` a receiver deduplicates by), its JSON body, ``pending`` until
  ``delivered`` or ``failed``, with its attempts, next attempt time, last status code, error and
  duration;
- ``ipa_webhook_state``: the log position up to which deliveries were made.

A page of the log becomes deliveries in one transaction that first locks the position row
``FOR UPDATE`` and checks the position it started from, so two nodes never enqueue a page
twice (:meth:`WebhookTable.page`). A delivery is sent by one node at a time: the node that
enqueued it holds it (``claim``, until ``next_attempt_at``), and a due one is claimed with
``FOR UPDATE SKIP LOCKED`` (:meth:`WebhookTable.claim`); a claim that outlives its node runs
out and the delivery is due again. Times are the database's clock (``now()``), so nodes with
different clocks agree on what is due.

**Secrets** (:class:`SecretBox`): a webhook's signing secret is kept in its ledger event and
row sealed with AES-GCM (``cryptography``) under a key derived from the audit key, which
every node holds and the database never does: whoever reads the database alone cannot sign
messages a receiver would trust. A store without an audit key (tests, benchmarks) keeps them
marked ``plain:``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg.sql import SQL

from .audit_key import AuditKey
from .database import ConnectionParams
from .errors import StoreError
from .side_tables import SideTables

WEBHOOKS = "ipa_webhooks"
DELIVERIES = "ipa_webhook_deliveries"
STATE = "ipa_webhook_state"
DISPATCHER = "webhooks"


class SecretUnreadable(StoreError):
    """A sealed secret cannot be opened: sealed with another audit key, or edited."""


class SecretBox:
    """Seals webhook secrets with AES-GCM under a key derived from the audit key (see the
    module doc)."""

    _CONTEXT = b"ipa webhook secret"  # bound to every sealed secret (associated data)

    def __init__(self, key: AuditKey | None) -> None:
        self._aead = None if key is None else AESGCM(bytes.fromhex(key.mac(b"ipa webhook "
                                                                             b"secrets")))

    def seal(self, secret: str) -> str:
        if self._aead is None:
            return "plain:" + secret
        nonce = secrets.token_bytes(12)
        sealed = self._aead.encrypt(nonce, secret.encode(), self._CONTEXT)
        return "v1:" + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, sealed: str) -> str:
        if sealed.startswith("plain:"):
            return sealed.removeprefix("plain:")
        if self._aead is None:
            raise SecretUnreadable("the webhook's secret is sealed with an audit key, and this "
                                   "store was opened without one")
        try:
            if not sealed.startswith("v1:"):
                raise ValueError(sealed[:8])
            raw = base64.urlsafe_b64decode(sealed.removeprefix("v1:"))
        except ValueError:
            raise SecretUnreadable("the webhook's secret is not sealed the way ipa seals "
                                   "it") from None
        try:
            return self._aead.decrypt(raw[:12], raw[12:], self._CONTEXT).decode()
        except (InvalidTag, ValueError):
            raise SecretUnreadable("the webhook's secret was sealed with another audit key "
                                   "(or edited): remove the webhook and register it again"
                                   ) from None


@dataclass(frozen=True)
class NewDelivery:
    """A delivery to enqueue: ``id`` (the message's delivery id), its webhook, the log
    position and task of the event it tells, its type and JSON body."""

    id: str
    webhook_id: str
    position: int
    event_type: str
    task_id: str
    body: str
    event_at: datetime


@dataclass(frozen=True)
class Claimed:
    """A delivery this node holds: send it to ``url`` signed with the sealed ``secret``."""

    id: str
    webhook_id: str
    url: str
    secret: str
    body: str
    attempts: int


@dataclass(frozen=True)
class Outcome:
    """How an attempt at a claimed delivery went: ``ok`` (a 2xx), the status code (``None``:
    no answer), the error, how long it took, and ``delay``: seconds until the next attempt
    if it failed."""

    id: str
    webhook_id: str
    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: float
    delay: float


@dataclass(frozen=True)
class Recorded:
    """What became of the outcomes written by :meth:`WebhookTable.record`: each delivery's new
    status (``delivered``, ``failed`` or ``pending``) by id, and the webhooks that reached the
    failure limit (``(webhook id, failures, last error)``), to disable."""

    statuses: dict[str, str]
    to_disable: list[tuple[str, int, str]]


class WebhookTable(SideTables):
    """The webhook tables of one database (see the module doc)."""

    name = "webhooks"

    def __init__(self, params: ConnectionParams, schema: str = "public", *,
                 pool_size: int = 4) -> None:
        super().__init__(params, schema, pool_size=pool_size)

    async def _create(self, conn: psycopg.AsyncConnection[Any]) -> None:
        for statement in _SCHEMA:
            await conn.execute(SQL(statement).format(
                webhooks=self._t(WEBHOOKS), deliveries=self._t(DELIVERIES),
                state=self._t(STATE)))

    # -- the dispatcher's position and its pages ---------------------------------------------

    async def position(self, name: str = DISPATCHER) -> int:
        """The log position up to which ``name`` enqueued deliveries (0 before its first)."""
        async with self._conn() as conn:
            await conn.execute(SQL("INSERT INTO {} (name, position) VALUES (%s, 0) ON CONFLICT "
                                   "(name) DO NOTHING").format(self._t(STATE)), (name,))
            row = await (await conn.execute(SQL("SELECT position FROM {} WHERE name = %s")
                                            .format(self._t(STATE)), (name,))).fetchone()
        return 0 if row is None else int(row["position"])

    @contextlib.asynccontextmanager
    async def page(self, start: int, claim: str, lease: float,
                   name: str = DISPATCHER) -> AsyncIterator[Page]:
        """A transaction that enqueues one page of the log after position ``start``; the
        deliveries it inserts are held by ``claim`` for ``lease`` seconds. Raises
        :class:`PositionMoved` when the position is no longer ``start``."""
        async with self._held(STATE, "name", name, start) as held:
            hooks = await (await held.conn.execute(SQL(
                "SELECT id::text AS id, url, events, secret, enabled FROM {}"
            ).format(self._t(WEBHOOKS)))).fetchall()
            page = Page(held.conn, self._t, {h["id"]: h for h in hooks}, claim, lease)
            yield page
            await page.flush()
            held.position = page.position or start

    # -- sending ----------------------------------------------------------------------------

    async def claim(self, claim: str, limit: int, lease: float) -> list[Claimed]:
        """Hold up to ``limit`` due deliveries of enabled webhooks (not being disabled) for
        ``lease`` seconds, the longest due first; skip those another node is claiming now."""
        async with self._conn() as conn:
            rows = await (await conn.execute(SQL(
                "WITH due AS (SELECT d.id FROM {d} d WHERE d.status = 'pending' AND "
                "d.next_attempt_at <= now() AND EXISTS (SELECT 1 FROM {w} w WHERE "
                "w.id = d.webhook_id AND w.enabled AND NOT w.disabling) ORDER BY "
                "d.next_attempt_at LIMIT %s "
                "FOR UPDATE OF d SKIP LOCKED) "
                "UPDATE {d} d SET claim = %s, next_attempt_at = now() + %s * interval "
                "'1 second' FROM due, {w} w WHERE d.id = due.id AND w.id = d.webhook_id "
                "RETURNING d.id::text AS id, d.webhook_id::text AS webhook_id, w.url, "
                "w.secret, d.body, d.attempts").format(
                    d=self._t(DELIVERIES), w=self._t(WEBHOOKS)),
                (limit, claim, lease))).fetchall()
        return [Claimed(**row) for row in rows]

    async def release(self, ids: Sequence[str], claim: str) -> None:
        """Make deliveries held by ``claim`` and not sent due at once (a node stopping)."""
        if not ids:
            return
        async with self._conn() as conn:
            await conn.execute(SQL(
                "UPDATE {} SET claim = NULL, next_attempt_at = now() WHERE id = ANY(%s::uuid[]) "
                "AND claim = %s AND status = 'pending'").format(self._t(DELIVERIES)),
                (list(ids), claim))

    async def record(self, outcomes: Sequence[Outcome], claim: str, *, retry_for: float,
                     max_failures: int) -> Recorded:
        """Write ``outcomes`` of deliveries held by ``claim`` (others are ignored: the claim ran
        out and another node has them) in one transaction: a 2xx is ``delivered``; a failure
        is due again after its ``delay``, or ``failed`` when that is more than ``retry_for``
        seconds after it was enqueued. Each webhook's failures in a row are counted; those
        that reach ``max_failures`` are marked as being disabled and returned."""
        if not outcomes:
            return Recorded({}, [])
        async with self._conn() as conn, conn.transaction():
            rows = await (await conn.execute(SQL(
                "WITH o AS (SELECT * FROM unnest(%s::uuid[], %s::boolean[], %s::int[], "
                "%s::text[], %s::real[], %s::float8[]) AS o(id, ok, code, error, ms, delay)), "
                "n AS (SELECT o.*, CASE WHEN o.ok THEN 'delivered' WHEN now() + o.delay * "
                "interval '1 second' > d.created_at + %s * interval '1 second' THEN 'failed' "
                "ELSE 'pending' END AS status FROM o JOIN {d} d ON d.id = o.id AND d.claim = %s) "
                "UPDATE {d} d SET status = n.status, attempts = d.attempts + 1, claim = NULL, "
                "next_attempt_at = CASE WHEN n.status = 'pending' THEN now() + n.delay * "
                "interval '1 second' ELSE d.next_attempt_at END, last_status = n.code, "
                "last_error = n.error, last_duration_ms = n.ms, last_attempt_at = now(), "
                "first_attempt_at = coalesce(d.first_attempt_at, now()), finished_at = CASE "
                "WHEN n.status <> 'pending' THEN now() END FROM n WHERE d.id = n.id "
                "RETURNING d.id::text AS id, d.status").format(d=self._t(DELIVERIES)),
                ([o.id for o in outcomes], [o.ok for o in outcomes],
                 [o.status_code for o in outcomes], [o.error for o in outcomes],
                 [o.duration_ms for o in outcomes], [o.delay for o in outcomes],
                 retry_for, claim))).fetchall()
            statuses = {row["id"]: row["status"] for row in rows}
            streaks = _streaks([o for o in outcomes if o.id in statuses])
            if not streaks:
                return Recorded(statuses, [])
            ids = list(streaks)
            errors = {o.webhook_id: o.error or "" for o in outcomes if not o.ok}
            await conn.execute(SQL(
                "UPDATE {} w SET failures = CASE WHEN x.reset THEN x.after ELSE w.failures + "
                "x.after END, last_attempt_at = now(), last_success_at = CASE WHEN x.reset "
                "THEN now() ELSE w.last_success_at END, last_error = coalesce(x.error, "
                "w.last_error) FROM unnest(%s::uuid[], %s::boolean[], %s::int[], %s::text[]) "
                "AS x(id, reset, after, error) WHERE w.id = x.id").format(self._t(WEBHOOKS)),
                (ids, [streaks[i][0] for i in ids], [streaks[i][1] for i in ids],
                 [errors.get(i) for i in ids]))
            disabling = await (await conn.execute(SQL(
                "UPDATE {} SET disabling = true WHERE id = ANY(%s::uuid[]) AND enabled AND "
                "NOT disabling AND failures >= %s RETURNING id::text AS id, failures, "
                "coalesce(last_error, '') AS error").format(self._t(WEBHOOKS)),
                (ids, max_failures))).fetchall()
        return Recorded(statuses, [(r["id"], r["failures"], r["error"]) for r in disabling])

    async def not_disabling(self, webhook_id: str) -> None:
        """Undo :meth:`record`'s mark (the ``WebhookDisabled`` could not be recorded)."""
        async with self._conn() as conn:
            await conn.execute(SQL("UPDATE {} SET disabling = false WHERE id = %s").format(
                self._t(WEBHOOKS)), (webhook_id,))

    async def prune(self, older_than: float, limit: int = 10_000) -> int:
        """Forget up to ``limit`` finished deliveries finished more than ``older_than``
        seconds ago; return how many."""
        async with self._conn() as conn:
            cursor = await conn.execute(SQL(
                "DELETE FROM {d} WHERE id IN (SELECT id FROM {d} WHERE status <> 'pending' AND "
                "finished_at < now() - %s * interval '1 second' LIMIT %s)").format(
                    d=self._t(DELIVERIES)), (older_than, limit))
            return cursor.rowcount

    # -- reading ----------------------------------------------------------------------------

    async def webhooks(self) -> list[dict[str, Any]]:
        """Every webhook, oldest first."""
        async with self._conn() as conn:
            rows = await (await conn.execute(SQL(
                "SELECT " + _WEBHOOK_COLUMNS + " FROM {} ORDER BY created_at, id"
            ).format(self._t(WEBHOOKS)))).fetchall()
        return [_webhook(row) for row in rows]

    async def webhook(self, webhook_id: str) -> dict[str, Any] | None:
        async with self._conn() as conn:
            row = await (await conn.execute(SQL(
                "SELECT " + _WEBHOOK_COLUMNS + " FROM {} WHERE id = %s"
            ).format(self._t(WEBHOOKS)), (webhook_id,))).fetchone()
        return None if row is None else _webhook(row)

    async def deliveries(self, webhook_id: str, *, status: str | None = None,
                         before: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The webhook's deliveries, newest first (``seq`` below ``before`` when given)."""
        where, params = ["webhook_id = %s"], [webhook_id]
        if status is not None:
            where.append("status = %s")
            params.append(status)
        if before is not None:
            where.append("seq < %s")
            params.append(before)
        async with self._conn() as conn:
            rows = await (await conn.execute(SQL(
                "SELECT seq, id::text AS id, webhook_id::text AS webhook_id, position, "
                "event_type, task_id::text AS task_id, body, status, attempts, event_at, "
                "created_at, first_attempt_at, last_attempt_at, finished_at, next_attempt_at, "
                "last_status, last_error, last_duration_ms FROM {} WHERE " + " AND ".join(where)
                + " ORDER BY seq DESC LIMIT %s").format(self._t(DELIVERIES)),
                (*params, limit))).fetchall()
        return [_delivery(row) for row in rows]

    async def counts(self, webhook_id: str | None = None) -> dict[str, int]:
        """Deliveries by status (of one webhook, or of all)."""
        async with self._conn() as conn:
            rows = await (await conn.execute(SQL(
                "SELECT status, count(*) AS n FROM {} WHERE %s::uuid IS NULL OR webhook_id = %s "
                "GROUP BY status").format(self._t(DELIVERIES)),
                (webhook_id, webhook_id))).fetchall()
        return {row["status"]: int(row["n"]) for row in rows}


class Page:
    """The writes of one page of the log, in its transaction (:meth:`WebhookTable.page`).

    ``webhooks`` holds each webhook's row as of the page's position, kept up to date as the
    page's ledger events are applied, so a message goes to the webhooks registered before
    its event."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], t: Any,
                 webhooks: dict[str, dict[str, Any]], claim: str, lease: float) -> None:
        self._conn = conn
        self._t = t
        self.webhooks = webhooks
        self._claim = claim
        self._lease = lease
        self._new: list[NewDelivery] = []
        self.position = 0
        self.enqueued: list[Claimed] = []
        """The deliveries this page inserted (held by its claim), once flushed."""

    async def register(self, webhook_id: str, url: str, events: list[str], secret: str,
                       at: datetime, actor: str, position: int) -> None:
        await self.flush()
        await self._conn.execute(SQL(
            "INSERT INTO {} (id, url, events, secret, created_at, created_by, position) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING").format(
                self._t(WEBHOOKS)), (webhook_id, url, events, secret, at, actor, position))
        self.webhooks[webhook_id] = {"id": webhook_id, "url": url, "events": events,
                                     "secret": secret, "enabled": True}

    async def remove(self, webhook_id: str) -> None:
        await self.flush()
        await self._conn.execute(SQL("DELETE FROM {} WHERE webhook_id = %s").format(
            self._t(DELIVERIES)), (webhook_id,))
        await self._conn.execute(SQL("DELETE FROM {} WHERE id = %s").format(
            self._t(WEBHOOKS)), (webhook_id,))
        self.webhooks.pop(webhook_id, None)

    async def disable(self, webhook_id: str, reason: str, at: datetime) -> None:
        await self.flush()
        await self._conn.execute(SQL(
            "UPDATE {} SET enabled = false, disabling = false, disabled_at = %s, "
            "disabled_reason = %s WHERE id = %s").format(self._t(WEBHOOKS)),
            (at, reason, webhook_id))
        if webhook_id in self.webhooks:
            self.webhooks[webhook_id] = {**self.webhooks[webhook_id], "enabled": False}

    async def enable(self, webhook_id: str) -> None:
        await self.flush()
        await self._conn.execute(SQL(
            "UPDATE {} SET enabled = true, disabling = false, failures = 0, disabled_at = NULL, "
            "disabled_reason = NULL WHERE id = %s").format(self._t(WEBHOOKS)), (webhook_id,))
        await self._conn.execute(SQL(
            "UPDATE {} SET next_attempt_at = now(), claim = NULL WHERE webhook_id = %s AND "
            "status = 'pending'").format(self._t(DELIVERIES)), (webhook_id,))
        if webhook_id in self.webhooks:
            self.webhooks[webhook_id] = {**self.webhooks[webhook_id], "enabled": True}

    def add(self, delivery: NewDelivery) -> None:
        self._new.append(delivery)

    async def flush(self) -> None:
        """Insert the deliveries added so far, held by the page's claim."""
        if not self._new:
            return
        new, self._new = self._new, []
        rows = await (await self._conn.execute(SQL(
            "INSERT INTO {} (id, webhook_id, position, event_type, task_id, body, event_at, "
            "created_at, next_attempt_at, claim) SELECT n.*, now(), now() + %s * interval "
            "'1 second', %s FROM unnest(%s::uuid[], %s::uuid[], %s::bigint[], %s::text[], "
            "%s::uuid[], %s::text[], %s::timestamptz[]) AS n ON CONFLICT (id) DO NOTHING "
            "RETURNING id::text AS id").format(self._t(DELIVERIES)),
            (self._lease, self._claim, [d.id for d in new], [d.webhook_id for d in new],
             [d.position for d in new], [d.event_type for d in new],
             [d.task_id for d in new], [d.body for d in new],
             [d.event_at for d in new]))).fetchall()
        inserted = {row["id"] for row in rows}
        for d in new:
            if d.id in inserted:
                hook = self.webhooks[d.webhook_id]
                self.enqueued.append(Claimed(d.id, d.webhook_id, hook["url"], hook["secret"],
                                             d.body, 0))


def _streaks(outcomes: Sequence[Outcome]) -> dict[str, tuple[bool, int]]:
    """For each webhook, in the order of ``outcomes``: whether one succeeded (the count starts
    again), and the failures after the last success (or all of them)."""
    streaks: dict[str, tuple[bool, int]] = {}
    for o in outcomes:
        reset, after = streaks.get(o.webhook_id, (False, 0))
        streaks[o.webhook_id] = (True, 0) if o.ok else (reset, after + 1)
    return streaks


_WEBHOOK_COLUMNS = ("id::text AS id, url, events, created_at, created_by, position, enabled, "
                    "disabled_at, disabled_reason, failures, last_attempt_at, last_success_at, "
                    "last_error")


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _webhook(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "events": list(row["events"]),
            **{k: _iso(row[k]) for k in ("created_at", "disabled_at", "last_attempt_at",
                                         "last_success_at")}}


def _delivery(row: dict[str, Any]) -> dict[str, Any]:
    out = {**row, **{k: _iso(row[k]) for k in ("event_at", "created_at", "first_attempt_at",
                                               "last_attempt_at", "finished_at",
                                               "next_attempt_at")}}
    out["payload"] = json.loads(out.pop("body"))
    finished, event_at = row["finished_at"], row["event_at"]
    out["latency_ms"] = (None if row["status"] != "delivered" or finished is None
                         else round((finished - event_at).total_seconds() * 1000, 1))
    if out["last_duration_ms"] is not None:
        out["last_duration_ms"] = round(float(out["last_duration_ms"]), 1)
    return out


_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS {webhooks} (id uuid PRIMARY KEY, url text NOT NULL, "
    "events text[] NOT NULL, secret text NOT NULL, created_at timestamptz NOT NULL, "
    "created_by text NOT NULL, position bigint NOT NULL, enabled boolean NOT NULL DEFAULT true, "
    "disabling boolean NOT NULL DEFAULT false, disabled_at timestamptz, disabled_reason text, "
    "failures integer NOT NULL DEFAULT 0, last_attempt_at timestamptz, last_success_at "
    "timestamptz, last_error text)",
    "CREATE TABLE IF NOT EXISTS {deliveries} (seq bigserial, id uuid PRIMARY KEY, "
    "webhook_id uuid NOT NULL, position bigint NOT NULL, event_type text NOT NULL, "
    "task_id uuid, body text NOT NULL, status text NOT NULL DEFAULT 'pending', attempts "
    "integer NOT NULL DEFAULT 0, event_at timestamptz NOT NULL, created_at timestamptz NOT "
    "NULL, next_attempt_at timestamptz NOT NULL, claim text, first_attempt_at timestamptz, "
    "last_attempt_at timestamptz, finished_at timestamptz, last_status integer, last_error "
    "text, last_duration_ms real)",
    "CREATE INDEX IF NOT EXISTS ipa_webhook_deliveries_due ON {deliveries} (next_attempt_at) "
    "WHERE status = 'pending'",
    "CREATE INDEX IF NOT EXISTS ipa_webhook_deliveries_webhook ON {deliveries} "
    "(webhook_id, seq)",
    "CREATE INDEX IF NOT EXISTS ipa_webhook_deliveries_finished ON {deliveries} (finished_at) "
    "WHERE status <> 'pending'",
    "CREATE TABLE IF NOT EXISTS {state} (name text PRIMARY KEY, position bigint NOT NULL)",
]
