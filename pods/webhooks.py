"""Webhooks: messages about tasks, sent to the URLs people registered, at least once.

:class:`Webhooks` is what a server runs and what the API calls:

- **Registering** (:meth:`Webhooks.register`, :meth:`~Webhooks.remove`,
  :meth:`~Webhooks.enable`): events of the webhook ledger (``domain/webhooks.py``), after the
  URL's form and address were checked. A secret not given is made (``whsec_`` + 32 random
  bytes); it is answered once and kept sealed (``eventstore/webhooks.py``).
- **Enqueueing**: the dispatcher follows the store's log from its saved position. A page of
  the log is one transaction (:meth:`WebhookTable.page`): the ledger's events change the
  webhooks, and each task event that makes a message (``messages``) adds one delivery per
  enabled webhook subscribed to its type, with a stable id (``delivery_id``). The position is
  saved with them, so after a crash or on another node nothing is enqueued twice or skipped.
- **Sending**: the deliveries a page enqueued are held by this node and go straight to its
  senders; others (retries, those a stopped node held) are claimed when due. At most
  ``concurrency`` attempts run at once (:class:`~ipa.pods.webhook_delivery.Courier`). A failed
  attempt is tried again after an exponential backoff with jitter (``backoff_base`` doubling up
  to ``backoff_cap``), or after the receiver's ``Retry-After`` when it asks for longer (up to
  ``backoff_cap``), until ``retry_for`` seconds after the event (a day), then the delivery
  is ``failed``. ``max_failures`` failed attempts in a row disable the webhook
  (``WebhookDisabled``, by ``ipa``) until a person enables it: events in between are not
  delivered to it. Outcomes are written in batches; each is counted in
  ``ipa_webhook_deliveries_total`` by outcome (``delivered``, ``retrying``, ``failed``).

A delivery is sent at least once: a node that dies between sending and recording leaves it to
be sent again when its hold runs out (``lease`` seconds), with the same ``webhook-id``.
Finished deliveries are kept ``history_days`` days.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import secrets
import ssl
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ipa.domain import (
    WEBHOOK_LEDGER,
    Message,
    TaskCreated,
    TaskEvent,
    TaskFacts,
    WebhookDisabled,
    WebhookEnabled,
    WebhookEvent,
    WebhookRegistered,
    WebhookRemoved,
    delivery_id,
    facts_of,
    messages,
    new_secret,
    observe,
    parse_events,
    parse_secret,
    parse_url,
    payload,
    retry_delay,
    subscribed,
)
from ipa.domain.webhooks import MESSAGE_EVENTS
from ipa.eventstore import (
    EventStore,
    PositionMoved,
    RecordedEvent,
    StoreError,
    StoreUnavailable,
)
from ipa.eventstore.webhooks import (
    Claimed,
    NewDelivery,
    Outcome,
    Page,
    SecretBox,
    SecretUnreadable,
    WebhookTable,
)
from ipa.projections.follow import follow
from ipa.telemetry import WEBHOOK_DELIVERIES

from .webhook_delivery import AddressGuard, Attempt, Courier

log = logging.getLogger(__name__)

_PAGE = 1000
FACTS_CACHED = 10_000
"""Tasks whose facts the dispatcher keeps between events (the least recent leave first)."""
STATUSES = ("pending", "delivered", "failed")


class WebhookNotFound(LookupError):
    """No webhook has this id (never registered, or removed)."""

    def __init__(self, webhook_id: str) -> None:
        super().__init__(f"no webhook {webhook_id!r}: never registered, or removed")
        self.webhook_id = webhook_id


class WebhooksUnavailable(Exception):
    """Webhooks do not run here now (the message says why)."""


class TooManyWebhooks(Exception):
    """The store has as many webhooks as it may (``max_webhooks``)."""


@dataclass(frozen=True)
class WebhookSettings:
    """How webhooks are delivered (``ipa serve``: :meth:`from_environment`)."""

    allow_private: bool = False
    """Send to loopback and private addresses too (``IPA_WEBHOOK_ALLOW_PRIVATE=1``)."""
    max_failures: int = 20
    """Failed attempts in a row that disable a webhook (``IPA_WEBHOOK_MAX_FAILURES``)."""
    retry_for: float = 86_400.0
    """Seconds after its event a delivery is retried (``IPA_WEBHOOK_RETRY_FOR``)."""
    backoff_base: float = 10.0
    """Seconds before the first retry, doubling per attempt (``IPA_WEBHOOK_BACKOFF_BASE``)."""
    backoff_cap: float = 3600.0
    """The longest wait between attempts (``IPA_WEBHOOK_BACKOFF_CAP``)."""
    timeout: float = 10.0
    """Seconds one attempt may take, name resolution included (``IPA_WEBHOOK_TIMEOUT``)."""
    concurrency: int = 64
    """Attempts at once on this node (``IPA_WEBHOOK_CONCURRENCY``)."""
    poll_interval: float = 1.0
    """Seconds between looks for due deliveries (``IPA_WEBHOOK_POLL_INTERVAL``)."""
    lease: float = 60.0
    """Seconds a node holds a delivery it enqueued or claimed (more than ``timeout``)."""
    history_days: float = 7.0
    """Days a finished delivery stays in the history (``IPA_WEBHOOK_HISTORY_DAYS``)."""
    max_webhooks: int = 100

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> WebhookSettings:
        """The settings the environment gives (see each field); a value that is not one is a
        ``ValueError`` naming it."""

        def number(name: str, default: float, kind: type = float) -> Any:
            text = environ.get(name)
            if text is None:
                return default
            try:
                value = kind(text)
            except ValueError:
                value = 0
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name}={text!r}: expected a number > 0")
            return value

        allow = environ.get("IPA_WEBHOOK_ALLOW_PRIVATE", "0").strip().lower()
        if allow not in ("1", "0", "true", "false", "yes", "no", "on", "off", ""):
            raise ValueError(f"IPA_WEBHOOK_ALLOW_PRIVATE={allow!r}: expected 1 or 0")
        timeout = number("IPA_WEBHOOK_TIMEOUT", cls.timeout)
        base = number("IPA_WEBHOOK_BACKOFF_BASE", cls.backoff_base)
        cap = number("IPA_WEBHOOK_BACKOFF_CAP", max(cls.backoff_cap, base))
        if cap < base:
            raise ValueError(f"IPA_WEBHOOK_BACKOFF_CAP ({cap:g}) is below "
                             f"IPA_WEBHOOK_BACKOFF_BASE ({base:g})")
        return cls(allow_private=allow in ("1", "true", "yes", "on"),
                   max_failures=number("IPA_WEBHOOK_MAX_FAILURES", cls.max_failures, int),
                   retry_for=number("IPA_WEBHOOK_RETRY_FOR", cls.retry_for),
                   backoff_base=base, backoff_cap=cap, timeout=timeout,
                   concurrency=number("IPA_WEBHOOK_CONCURRENCY", cls.concurrency, int),
                   poll_interval=number("IPA_WEBHOOK_POLL_INTERVAL", cls.poll_interval),
                   lease=max(cls.lease, 3 * timeout),
                   history_days=number("IPA_WEBHOOK_HISTORY_DAYS", cls.history_days))


class Webhooks:
    """Registering webhooks, and enqueueing and sending their deliveries (see the module
    doc). ``ssl_context``: the TLS settings of the deliveries (default: the system's CAs)."""

    def __init__(self, store: EventStore, table: WebhookTable | None = None,
                 settings: WebhookSettings | None = None, *, guard: AddressGuard | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._store = store
        self._table = table or store.webhook_table()
        self.settings = settings or WebhookSettings()
        self.guard = guard or AddressGuard(self.settings.allow_private)
        self._ssl_context = ssl_context
        self._box = SecretBox(store.audit_key)
        self._claim = f"{uuid.uuid4()}"
        """What this process's holds are marked with."""
        self.problem: str | None = None
        """Why webhooks do not run (``None``: they do)."""
        self._position = 0
        self._advanced = anyio.Event()
        self._facts: OrderedDict[UUID, TaskFacts] = OrderedDict()
        self._held: dict[str, float] = {}
        """Deliveries held here and not sent yet: until when (monotonic) each may start."""
        self._secrets: dict[str, str] = {}
        self._queue_in: MemoryObjectSendStream[Claimed] | None = None
        """Deliveries to send (while :meth:`run` runs)."""
        self._outcomes_in: MemoryObjectSendStream[Outcome] | None = None

    @property
    def position(self) -> int:
        return self._position

    @property
    def table(self) -> WebhookTable:
        return self._table

    # -- lifecycle --------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the tables and read the saved position; a problem is kept in
        :attr:`problem` (webhooks off) instead of raised."""
        try:
            await self._table.open()
            self._position = await self._table.position()
        except StoreError as e:
            self.problem = str(e)
            log.warning("webhooks are off: %s", e)

    async def close(self) -> None:
        await self._table.close()

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Open, enqueue what the log holds past the saved position, then follow the log and
        send deliveries until cancelled; the deliveries held and not sent are released, and
        the tables closed."""
        await self.open()
        if self.problem is not None:
            task_status.started()
            return
        try:
            await self._run(task_status)
        finally:
            with anyio.CancelScope(shield=True):
                await self.close()

    async def _run(self, task_status: TaskStatus[None]) -> None:
        courier = Courier(self.guard, timeout=self.settings.timeout,
                          ssl_context=self._ssl_context, connections=self.settings.concurrency)
        queue_in, queue = anyio.create_memory_object_stream[Claimed](math.inf)
        outcomes_in, outcomes = anyio.create_memory_object_stream[Outcome](math.inf)
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(self.settings.concurrency):
                    tg.start_soon(self._sender, courier, queue.clone())
                tg.start_soon(self._recorder, outcomes)
                tg.start_soon(self._poller)
                tg.start_soon(self._pruner)
                self._queue_in, self._outcomes_in = queue_in, outcomes_in
                await self._catch_up_logged()
                task_status.started()
                await follow(self._store, "webhooks", lambda: self._position, self.catch_up)
        finally:
            self._queue_in = self._outcomes_in = None
            with anyio.CancelScope(shield=True):
                done = []  # attempts made and not recorded yet: record them now
                with contextlib.suppress(anyio.WouldBlock):
                    while True:
                        done.append(outcomes.receive_nowait())
                await self._record(done)
                for stream in (queue_in, queue, outcomes_in, outcomes):
                    stream.close()
                await courier.aclose()
                held, self._held = list(self._held), {}
                try:
                    await self._table.release(held, self._claim)
                except StoreError as e:
                    log.warning("webhooks: %d held deliveries not released (sent once their "
                                "hold runs out): %s", len(held), e)

    async def _catch_up_logged(self) -> None:
        try:
            await self.catch_up()
        except StoreError as e:
            log.warning("webhooks: %s; catching up with the next event", e)

    async def wait_for(self, position: int) -> None:
        """Return once the log up to ``position`` is enqueued (bound it with a timeout)."""
        while self._position < position and self.problem is None:
            await self._advanced.wait()

    def _moved(self, position: int) -> None:
        self._position = position
        self._advanced.set()
        self._advanced = anyio.Event()

    # -- enqueueing -------------------------------------------------------------------------

    async def catch_up(self) -> int:
        """Enqueue the deliveries of every event after the saved position; return the new
        position."""
        while True:
            page = await self._store.read_log(self._position, _PAGE)
            if not page:
                return self._position
            try:
                async with self._table.page(self._position, self._claim,
                                            self.settings.lease) as writes:
                    await self._enqueue(writes, page)
            except PositionMoved:  # another node enqueued it: go on from where it is
                self._moved(await self._table.position())
                continue
            self._moved(page[-1].position)
            self._hand_over(writes.enqueued)

    def _hand_over(self, deliveries: list[Claimed]) -> None:
        """Give deliveries this node holds to its senders (when they run)."""
        if self._queue_in is None:
            return  # not sending: they are due again when the hold runs out
        deadline = self._hold_deadline()
        for delivery in deliveries:
            self._held[delivery.id] = deadline
            self._queue_in.send_nowait(delivery)

    async def _enqueue(self, writes: Page, page: list[RecordedEvent]) -> None:
        writes.position = page[-1].position
        if not writes.webhooks and not any(isinstance(r.event, WebhookEvent) for r in page):
            return  # nobody listens: nothing to work out
        for recorded in page:
            event = recorded.event
            if isinstance(event, WebhookEvent):
                await self._apply(writes, recorded, event)
            elif isinstance(event, TaskEvent) and writes.webhooks:
                facts = await self._facts_after(recorded, event)
                if facts is not None:
                    for message in messages(facts, event):
                        self._deliver(writes, recorded, message)

    async def _apply(self, writes: Page, recorded: RecordedEvent, event: WebhookEvent) -> None:
        if isinstance(event, WebhookRegistered):
            await writes.register(event.webhook_id, event.url, list(event.events),
                                  event.secret, event.timestamp, event.actor,
                                  recorded.position)
        elif isinstance(event, WebhookRemoved):
            await writes.remove(event.webhook_id)
        elif isinstance(event, WebhookDisabled):
            await writes.disable(event.webhook_id, event.reason, event.timestamp)
        elif isinstance(event, WebhookEnabled):
            await writes.enable(event.webhook_id)

    def _deliver(self, writes: Page, recorded: RecordedEvent, message: Message) -> None:
        body = None
        for hook in writes.webhooks.values():
            if hook["enabled"] and subscribed(hook["events"], message.type):
                body = body or json.dumps(payload(message), separators=(",", ":"))
                writes.add(NewDelivery(delivery_id(hook["id"], message), hook["id"],
                                       recorded.position, message.type, str(message.task_id),
                                       body, recorded.timestamp))

    async def _facts_after(self, recorded: RecordedEvent, event: TaskEvent) -> TaskFacts | None:
        """The task's facts once ``event`` happened: folded from the ones kept, or loaded from
        the store at the version before when this process missed events of the task (another
        node enqueued them, or it started since); ``None`` when no message needs them."""
        task_id, version = recorded.stream_id, recorded.version
        known = self._facts.pop(task_id, None)
        before: TaskFacts | None
        if isinstance(event, TaskCreated):
            before = None
        elif known is not None and known.version == version - 1:
            before = known
        elif type(event) not in MESSAGE_EVENTS:
            return None  # a gap, and nothing to say: load when a message needs it
        else:
            try:
                before = facts_of(await self._store.load(task_id, version - 1))
            except StoreUnavailable:
                raise
            except StoreError as e:  # a history this code cannot fold: say what is known
                log.warning("webhooks: task %s before version %s: %s", task_id, version, e)
                before = TaskFacts(task_id, version - 1, "", "", None, "")
        after = observe(before, event)
        if after is not None:
            self._facts[task_id] = after
            while len(self._facts) > FACTS_CACHED:
                self._facts.popitem(last=False)
        return after

    # -- sending ----------------------------------------------------------------------------

    async def _sender(self, courier: Courier,
                      queue: MemoryObjectReceiveStream[Claimed]) -> None:
        async with queue:
            async for delivery in queue:
                deadline = self._held.get(delivery.id)
                if deadline is not None and time.monotonic() > deadline:
                    del self._held[delivery.id]
                    continue  # held too long unsent: due again once the hold runs out
                try:
                    secret = self._secret(delivery)
                except SecretUnreadable as e:
                    outcome = Outcome(delivery.id, delivery.webhook_id, False, None, str(e),
                                      0.0, self._delay(delivery))
                else:
                    attempt = await courier.attempt(delivery, secret)
                    outcome = Outcome(delivery.id, delivery.webhook_id, attempt.ok,
                                      attempt.status_code, attempt.error, attempt.duration_ms,
                                      0.0 if attempt.ok else self._delay(delivery, attempt))
                if self._outcomes_in is not None:
                    self._outcomes_in.send_nowait(outcome)
                self._held.pop(delivery.id, None)  # until then a stop releases it

    def _hold_deadline(self) -> float:
        """Until when a delivery held now may start: early enough to end within its hold."""
        lease, timeout = self.settings.lease, self.settings.timeout
        return time.monotonic() + max(lease / 2, lease - timeout - 1)

    def _delay(self, delivery: Claimed, attempt: Attempt | None = None) -> float:
        """The wait before the next attempt: the backoff, or longer when the receiver asked
        for longer (``Retry-After``), though never more than the longest backoff."""
        backoff = retry_delay(delivery.attempts + 1, random.random(), self.settings.backoff_base,
                              self.settings.backoff_cap)
        asked = attempt.retry_after if attempt is not None else None
        return backoff if asked is None else max(backoff, min(asked, self.settings.backoff_cap))

    def _secret(self, delivery: Claimed) -> str:
        secret = self._secrets.get(delivery.secret)
        if secret is None:
            secret = self._secrets[delivery.secret] = self._box.open(delivery.secret)
        return secret

    async def _recorder(self, outcomes: MemoryObjectReceiveStream[Outcome]) -> None:
        """Write outcomes in batches (whatever arrived while the last batch was written)."""
        while True:
            batch = [await outcomes.receive()]
            while len(batch) < 1000:
                try:
                    batch.append(outcomes.receive_nowait())
                except anyio.WouldBlock:
                    break
            with anyio.CancelScope(shield=True):  # a stop waits for what was sent
                await self._record(batch)

    async def _record(self, batch: list[Outcome]) -> None:
        if not batch:
            return
        try:
            recorded = await self._table.record(
                batch, self._claim, retry_for=self.settings.retry_for,
                max_failures=self.settings.max_failures)
        except StoreError as e:
            log.warning("webhooks: %d outcomes not recorded (sent again once their hold runs "
                        "out): %s", len(batch), e)
            return
        for status in recorded.statuses.values():
            WEBHOOK_DELIVERIES.labels(outcome="retrying" if status == "pending"
                                      else status).inc()
        for webhook_id, failures, error in recorded.to_disable:
            try:
                await self._ledger(WebhookDisabled, "ipa", webhook_id=webhook_id,
                                   failures=failures, reason=error)
            except StoreError as e:
                log.warning("webhooks: webhook %s not disabled: %s", webhook_id, e)
                try:
                    await self._table.not_disabling(webhook_id)
                except StoreError:
                    pass

    async def _poller(self) -> None:
        """Claim due deliveries (retries, and those a stopped node held) while the senders
        have room."""
        limit = 4 * self.settings.concurrency
        while True:
            claimed: list[Claimed] = []
            if len(self._held) < self.settings.concurrency:
                try:
                    claimed = await self._table.claim(self._claim, limit, self.settings.lease)
                except StoreError as e:
                    log.warning("webhooks: due deliveries not claimed: %s", e)
            self._hand_over(claimed)
            if len(claimed) < limit:
                await anyio.sleep(self.settings.poll_interval)

    async def _pruner(self) -> None:
        while True:
            try:
                await self._table.prune(self.settings.history_days * 86_400)
            except StoreError as e:
                log.warning("webhooks: old deliveries not pruned: %s", e)
            await anyio.sleep(600)

    # -- what people do ---------------------------------------------------------------------

    def _ready(self) -> None:
        if self.problem is not None:
            raise WebhooksUnavailable(f"webhooks are off: {self.problem}")

    async def register(self, url: object, events: object, secret: object = None, *,
                       actor: str) -> tuple[dict[str, Any], str]:
        """Register a webhook (``WebhookRegistered``): its view and its secret (made when
        ``secret`` is ``None``), shown this once. Bad input is a ``WebhookRefused``, an
        address ipa does not send to an ``AddressRefused``; nothing is recorded then."""
        self._ready()
        url = parse_url(url)
        chosen = parse_events(events)
        secret = new_secret(secrets.token_bytes(32)) if secret is None else parse_secret(secret)
        await self.guard.check(url)
        if len(await self._table.webhooks()) >= self.settings.max_webhooks:
            raise TooManyWebhooks(f"this server has {self.settings.max_webhooks} webhooks, as "
                                  "many as it may: remove one first")
        webhook_id = str(uuid.uuid4())
        position = await self._ledger(WebhookRegistered, actor, webhook_id=webhook_id, url=url,
                                      events=chosen, secret=self._box.seal(secret))
        await self._applied(position)
        view = await self._table.webhook(webhook_id) or {
            "id": webhook_id, "url": url, "events": chosen, "enabled": True,
            "created_by": actor, "position": position, "failures": 0}
        return view, secret

    async def remove(self, webhook_id: str, *, actor: str) -> int:
        """Remove a webhook (``WebhookRemoved``); return the event's log position."""
        await self.get(webhook_id)
        position = await self._ledger(WebhookRemoved, actor, webhook_id=webhook_id)
        await self._applied(position)
        return position

    async def enable(self, webhook_id: str, *, actor: str) -> dict[str, Any]:
        """Enable a disabled webhook again (``WebhookEnabled``); one that is enabled stays as
        it is. Return its view."""
        view = await self.get(webhook_id)
        if view["enabled"]:
            return view
        position = await self._ledger(WebhookEnabled, actor, webhook_id=webhook_id)
        await self._applied(position)
        return await self.get(webhook_id)

    async def webhooks(self) -> list[dict[str, Any]]:
        """Every webhook, oldest first."""
        self._ready()
        return await self._table.webhooks()

    async def get(self, webhook_id: str) -> dict[str, Any]:
        """The webhook's view; :class:`WebhookNotFound` (after waiting a little for an event
        this node has not enqueued yet)."""
        self._ready()
        view = await self._table.webhook(webhook_id)
        if view is None:
            await self._applied(await self._store.head_position())
            view = await self._table.webhook(webhook_id)
        if view is None:
            raise WebhookNotFound(webhook_id)
        return view

    async def deliveries(self, webhook_id: str, *, status: str | None = None,
                         before: int | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """The webhook's deliveries, newest first (see ``WebhookTable.deliveries``)."""
        await self.get(webhook_id)
        return await self._table.deliveries(webhook_id, status=status, before=before,
                                            limit=limit)

    async def _applied(self, position: int, wait: float = 5.0) -> None:
        """Return once the log up to ``position`` is enqueued, or after ``wait`` seconds."""
        with anyio.move_on_after(wait):
            await self.wait_for(position)

    async def _ledger(self, event_type: type[WebhookEvent], actor: str, **fields: Any) -> int:
        """Append one event to the webhook ledger (again on a concurrent append)."""
        return await self._store.append_next(WEBHOOK_LEDGER, lambda version: event_type(
            originator_id=WEBHOOK_LEDGER, originator_version=version + 1, timestamp=_now(),
            actor=actor, correlation_id="", causation_id=None, **fields), what="the webhook ledger")


def _now() -> datetime:
    return datetime.now(UTC)
