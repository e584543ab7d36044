"""The sync engine child of a pod: publishes the task's changes through its outbox, and turns
changes made outside (reviews, merges, issue moves) into events on the task.

Three loops share the pod's state, each waiting on its changes:

- **plan**: when what the outside should show (``plan.desired``) differs from what is unsent or
  delivered, wait ``batch_window`` seconds for more changes, then queue one update per target
  (``queue_update``): a burst of phase and status moves is one comment, not five;
- **deliver**: expire approvals that ran out, send every due update (``Outbox.due``) through its
  connector, record the outcome (``record_delivery`` / ``record_delivery_failure``), apply
  reviews that wait for the task to reach its review gate; wakes on every change and when a
  retry falls due or an approval expires;
- **poll**: every ``poll_interval`` seconds (and at once on ``sync_now``) ask each connector
  what changed outside, with conditional requests.

Errors never leave the engine: a connector's :class:`SyncError` becomes an ``UpdateFailed``
(with ``retry_at`` for transient ones: backoff with jitter, or the server's ``Retry-After`` /
rate-limit reset) and, for a missing repository, a refused token or a refused request, a
``SyncIncident``. A rate limit (of a delivery or a poll) is a ``SyncRateLimited``: nothing goes
to that connector until it is over, the wait being what the system said, else
``rate_limit_wait`` (a minute) doubling with each limit in a row. A repository that answers
with a permanent redirect to another name is a ``RemoteRepositoryRenamed``. Transient errors
of one connector only count; ``alert_after`` of them in a row make one ``transient_errors``
incident. An unexpected error is logged and counted the same way, so the pod stays healthy.
"""

from __future__ import annotations

import base64
import logging
import random
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
from anyio.abc import TaskStatus

from ipa.domain import (
    ApplyReview,
    Command,
    DomainError,
    ExpireApproval,
    OutboxEntry,
    QueueUpdate,
    RecordDelivery,
    RecordDeliveryFailure,
    RecordRepositoryRename,
    RecordSyncIncident,
    RecordSyncRateLimit,
    TaskState,
    applies,
    backoff_delay,
)

from ..state import Clock, PodState, utc_now
from ..workspace import RepositoryUnavailable, WorkspaceError, WorkspaceManager
from .errors import SyncError
from .git import GitConnector
from .github import GitHubConnector
from .http import RestApi
from .jira import JiraConnector
from .plan import desired, needed
from .settings import SyncSettings

log = logging.getLogger(__name__)

ACTOR = "sync"
"""The actor of what the engine records on its own."""


class SyncEngine:
    """Publishes a task's changes to its connectors and turns theirs into events."""

    def __init__(
        self,
        state: PodState,
        settings: SyncSettings | None = None,
        *,
        workspaces: WorkspaceManager | None = None,
        clock: Clock = utc_now,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._state = state
        self.settings = settings or SyncSettings()
        self._workspaces = workspaces
        self._clock = clock
        self._jitter = jitter
        self._client: httpx.AsyncClient | None = None
        self._connectors: dict[str, Any] = {}
        self.transient_errors: dict[str, int] = {}
        """Transient errors in a row, per connector (reset by a success)."""
        self._limits: dict[str, tuple[int, datetime]] = {}
        """Per connector, the rate limits in a row and when the last wait ends."""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        # Most tasks follow no outside system: their engine is one waiting task until one is
        # configured (pods are meant to be cheap by the thousand).
        async for state in self._state.changes():
            if state.outbox.config:
                break
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._plan_loop)
                tg.start_soon(self._deliver_loop)
                tg.start_soon(self._poll_loop)
        finally:
            with anyio.CancelScope(shield=True):
                await self._close()

    # -- connectors -------------------------------------------------------------------------

    def connector(self, name: str) -> Any:
        """The connector called ``name``, made on first use (an idle pod holds no client)."""
        if name not in self._connectors:
            settings = self.settings
            if self._client is None:
                self._client = httpx.AsyncClient(timeout=settings.request_timeout)
            if name == "github":
                headers = {"Accept": "application/vnd.github+json",
                           "X-GitHub-Api-Version": "2022-11-28", "User-Agent": "ipa"}
                if settings.github_token:
                    headers["Authorization"] = f"Bearer {settings.github_token}"
                api = RestApi("github", self._client, settings.github_url, headers, self._clock)
                self._connectors[name] = GitHubConnector(
                    api, token=settings.github_token, git_url=settings.git_url,
                    git_dir_of=self._git_dir, push_timeout=settings.push_timeout,
                    renamed=self._renamed)
            elif name == "jira":
                api = None
                if settings.jira_url and settings.jira_token:
                    api = RestApi("jira", self._client, settings.jira_url,
                                  _jira_headers(settings), self._clock)
                self._connectors[name] = JiraConnector(api)
            elif name == "git":
                self._connectors[name] = GitConnector(self._git_dir, settings.push_timeout)
            else:
                raise SyncError(name, "no such connector")
        return self._connectors[name]

    async def _git_dir(self, connector: str, repo: str) -> Path:
        if self._workspaces is None:
            raise SyncError(connector, "no workspace manager to push from")
        try:
            return await self._workspaces.git_dir(repo)
        except RepositoryUnavailable as e:
            raise SyncError(connector, f"cannot push from {e}") from None
        except WorkspaceError as e:
            raise SyncError(connector, str(e), transient=True) from None

    async def _renamed(self, old: str, new: str) -> None:
        await self._execute(RecordRepositoryRename(connector="github", old=old, new=new))

    async def _close(self) -> None:
        client, self._client = self._client, None
        self._connectors.clear()
        if client is not None:
            await client.aclose()

    # -- plan -------------------------------------------------------------------------------

    async def _plan_loop(self) -> None:
        async for state in self._state.changes():
            if not state.outbox.config or not _news(state):
                continue
            await anyio.sleep(self.settings.batch_window)  # let the burst settle
            await self._queue(self._state.current)

    async def _queue(self, state: TaskState) -> None:
        for update in desired(state):
            if not needed(self._state.current.outbox, update):
                continue
            await self._execute(QueueUpdate(update_id=uuid.uuid4().hex[:12],
                                            connector=update.connector, kind=update.kind,
                                            payload=update.payload))

    # -- deliver ----------------------------------------------------------------------------

    async def _deliver_loop(self) -> None:
        while True:
            seen = self._state.current.version
            await self._deliver_pass()
            if self._state.current.version != seen:
                continue
            await self._state.wait_changed(timeout=self._until_due())

    def _until_due(self) -> float | None:
        due = self._state.current.outbox.next_due()
        if due is None:
            return None
        # Never 0: an entry the domain will not take (e.g. rejected) must not make us spin.
        return max(0.01, (due - self._clock()).total_seconds())

    async def _deliver_pass(self) -> None:
        state = self._state.current
        now = self._clock()
        for entry in state.outbox.expired(now):
            await self._execute(ExpireApproval(update_id=entry.update_id))
        for review in state.outbox.reviews:
            if applies(self._state.current, review):
                await self._execute(ApplyReview(review_id=review.review_id),
                                    actor=f"{review.connector}:{review.reviewer}")
        for entry in self._state.current.outbox.due(self._clock()):
            await self._deliver(entry)

    async def _deliver(self, entry: OutboxEntry) -> None:
        state = self._state.current
        try:
            result = await self.connector(entry.connector).deliver(entry, state)
        except SyncError as e:
            await self._failed(entry, e)
            return
        except Exception as e:  # a bug or a surprise answer: recorded, never a crash
            log.exception("task %s: delivering %s failed", self._state.task_id, entry.update_id)
            await self._failed(entry, SyncError(entry.connector, f"{type(e).__name__}: {e}",
                                                transient=True))
            return
        self.transient_errors[entry.connector] = 0
        await self._execute(RecordDelivery(update_id=entry.update_id,
                                           payload_hash=entry.payload_hash, result=result))

    async def _failed(self, entry: OutboxEntry, error: SyncError) -> None:
        retry_at = None
        reason = str(error)
        waited = await self._rate_limited(error)
        if waited is not None:
            reason = f"{reason}; {waited[1]}"
        if error.transient:
            attempt = entry.attempts + 1
            if attempt >= self.settings.max_attempts:
                reason = f"{reason} (gave up after {attempt} attempts; sync_now tries again)"
            elif waited is not None:
                retry_at = waited[0].isoformat()
            else:
                delay = error.retry_after
                if delay is None:
                    delay = backoff_delay(attempt, self._jitter(), self.settings.retry_base,
                                          self.settings.retry_cap)
                retry_at = (self._clock() + timedelta(seconds=delay)).isoformat()
        await self._execute(RecordDeliveryFailure(update_id=entry.update_id, reason=reason,
                                                  retry_at=retry_at,
                                                  status_code=error.status_code))
        await self._count(error)

    async def _rate_limited(self, error: SyncError) -> tuple[datetime, str] | None:
        """For a rate limit: record the wait (``SyncRateLimited``) and return its end and the
        wait in words. GitHub's rule: the wait the system named (``retry-after``, the reset of
        a used-up limit); none named, at least ``rate_limit_wait``, doubling with each limit
        in a row: one that comes less than ``rate_limit_wait`` after the last wait ended (or
        before, when a person cut it short)."""
        if not error.rate_limited:
            return None
        now = self._clock()
        count, ended = self._limits.get(error.connector, (0, now))
        if now - ended > timedelta(seconds=self.settings.rate_limit_wait):
            count = 0
        count += 1
        if error.retry_after is not None:
            wait = error.retry_after
            why = f"waiting {wait:g} s, as the system said"
        else:
            settings = self.settings
            wait = min(settings.rate_limit_cap, settings.rate_limit_wait * 2.0 ** (count - 1))
            why = (f"waiting {wait:g} s: none was named, so at least {settings.rate_limit_wait:g}"
                   f" s, doubled for each limit in a row (this is limit {count})")
        state = await self._execute(RecordSyncRateLimit(connector=error.connector,
                                                        reason=f"{error.reason}; {why}",
                                                        wait_seconds=wait))
        until = None if state is None else state.outbox.rate_limited_until.get(error.connector)
        until = until or now + timedelta(seconds=wait)
        self._limits[error.connector] = (count, until)
        return until, why

    async def _count(self, error: SyncError) -> None:
        """Record the incident ``error`` names, or count it when it is transient."""
        if error.incident is not None:
            await self._execute(RecordSyncIncident(connector=error.connector,
                                                   kind=error.incident, reason=error.reason))
        if not error.transient:
            return
        count = self.transient_errors.get(error.connector, 0) + 1
        self.transient_errors[error.connector] = count
        if count == self.settings.alert_after:
            await self._execute(RecordSyncIncident(
                connector=error.connector, kind="transient_errors",
                reason=f"{count} transient errors in a row; the last: {error.reason}"))

    # -- poll -------------------------------------------------------------------------------

    async def _poll_loop(self) -> None:
        asked = self._state.current.outbox.sync_requested_at
        while True:
            with anyio.move_on_after(self.settings.poll_interval):
                async for state in self._state.changes():
                    if state.outbox.sync_requested_at != asked:
                        asked = state.outbox.sync_requested_at
                        break
            await self.poll()

    async def poll(self) -> None:
        """Ask every configured connector what changed outside, and record it."""
        for name in ("github", "jira"):
            state = self._state.current
            if name not in state.outbox.config:
                continue
            limited = state.outbox.rate_limited_until.get(name)
            if limited is not None and limited > self._clock():
                continue  # the system asked for quiet: asking again could get ipa banned
            try:
                found = await self.connector(name).poll(state)
            except SyncError as e:
                log.info("task %s: polling %s failed: %s", self._state.task_id, name, e)
                await self._rate_limited(e)
                await self._count(e)
                continue
            except Exception as e:
                log.exception("task %s: polling %s failed", self._state.task_id, name)
                await self._count(SyncError(name, f"{type(e).__name__}: {e}", transient=True))
                continue
            self.transient_errors[name] = 0
            for actor, command in found:
                await self._execute(command, actor=actor)

    # -- recording --------------------------------------------------------------------------

    async def _execute(self, command: Command, *, actor: str = ACTOR) -> TaskState | None:
        """Record ``command``; a refusal (the state moved on meanwhile) is logged, not raised."""
        try:
            return await self._state.execute(command, actor=actor)
        except DomainError as e:
            log.info("task %s: sync %s refused: %s", self._state.task_id, command.name, e)
            return None


def _news(state: TaskState) -> bool:
    return any(needed(state.outbox, update) for update in desired(state))


def _jira_headers(settings: SyncSettings) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "ipa"}
    if settings.jira_user:
        pair = f"{settings.jira_user}:{settings.jira_token}".encode()
        headers["Authorization"] = f"Basic {base64.b64encode(pair).decode()}"
    else:
        headers["Authorization"] = f"Bearer {settings.jira_token}"
    return headers

