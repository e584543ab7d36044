"""The central supervisor: starts, stops and restarts pods, and brings every unfinished task
back after a restart.

It owns one task group; each pod runs in it under its own cancel scope, so stopping one pod
or a pod's crash never touches another. A registry maps task id to pod.

- **Recovery** (:meth:`Supervisor.recover`): every task whose status is not finished
  (completed, cancelled) gets its pod back, loaded from its newest snapshot; runs that were in
  flight when the process died are recorded as interrupted by the pod's scheduler and retried
  under their job's policy. Before any pod starts, :meth:`Supervisor.run` sweeps the
  workspaces a killed process left (``WorkspaceManager.sweep``): no run exists yet, so every
  worktree under the data dir is a leftover; git's records of them are dropped path by path,
  never the user's own worktrees.
- **Restart by a person** (:meth:`Supervisor.restart_task`): a task whose pod crashed and gave
  up (the task recorded ``failed``), or that has no pod, gets a new pod; a failed task is sent
  back to work (``retry``, by that person). A pod that runs is left alone (:class:`PodRunning`).
- **Graceful shutdown** (:meth:`Supervisor.shutdown`): stop accepting work, let running steps
  finish within a deadline (then interrupt them, recorded), snapshot every pod, stop.
- **A node of a cluster** (given a :class:`~ipa.eventstore.Node`; DESIGN §6.1): a pod runs
  only for a task whose lease this node holds. At start the node takes back its own leases
  (its previous process died) and claims the unfinished tasks nobody holds. Every
  ``heartbeat`` seconds it records that it lives, marks dead the nodes whose session lock is
  free or whose heartbeat is older than the lease TTL, claims its share of their tasks (and of
  released ones) and starts their pods; a pod whose lease it no longer holds is stopped at
  once (its agents killed): its appends were refused already (fencing in the append). A new
  task is leased to this node, or to the least loaded live node when this one has
  ``max_pods``. A shutdown is a drain: the node says ``draining``, stops its pods as above,
  releases their leases and says ``left``; the others take them on their next heartbeat.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ipa.domain import (
    ARCHIVE_COMMANDS,
    Attention,
    Command,
    Retry,
    Status,
    TaskEvent,
    TaskState,
    crash_attention,
    fold,
)
from ipa.eventstore import EventStore, Node, NodeRow, StoreError, StoreUnavailable
from ipa.eventstore.inbox import Handler
from ipa.pods import Pod, PodEnvironment, PodState, PodStatus, watchdog
from ipa.projections import TaskList
from ipa.projections.task_list import MODEL as TASK_LIST

log = logging.getLogger(__name__)

FINISHED = frozenset({Status.completed, Status.cancelled})


class SupervisorError(Exception):
    """Base of the supervisor's errors."""


class PodNotRunning(SupervisorError):
    """A command for a task that has no running pod."""

    def __init__(self, task_id: UUID, why: str = "has no running pod") -> None:
        super().__init__(f"task {task_id} {why}")
        self.task_id = task_id


class PodRunning(SupervisorError):
    """A restart of a task whose pod runs (nothing to restart)."""

    def __init__(self, task_id: UUID) -> None:
        super().__init__(f"task {task_id} has a running pod; there is nothing to restart")
        self.task_id = task_id


class TaskFinished(SupervisorError):
    """A restart of a task that is over (completed or cancelled)."""

    def __init__(self, task_id: UUID, status: Status) -> None:
        super().__init__(f"task {task_id} is {status.value}; a finished task has no pod to "
                         "restart")
        self.task_id = task_id


class ShuttingDown(SupervisorError):
    """The supervisor is stopping and takes no new work."""


class OwnedElsewhere(SupervisorError):
    """The task's lease is held by another live node: its pod runs there."""

    def __init__(self, task_id: UUID, node_id: str, address: str = "") -> None:
        where = f" ({address})" if address else ""
        super().__init__(f"task {task_id} runs on node {node_id}{where}; send its commands "
                         "there")
        self.task_id = task_id
        self.node_id = node_id
        self.address = address


@dataclass(frozen=True)
class Membership:
    """How a node keeps its place in the cluster: seconds between heartbeats and after
    which a silent node is dead (``lease_ttl``, measured on the database's clock)."""

    lease_ttl: float = 10.0
    heartbeat: float = 1.0


@dataclass
class _Slot:
    pod: Pod
    scope: anyio.CancelScope
    done: anyio.Event


def _crashed(slot: _Slot | None) -> Attention | None:
    """The crash attention of a slot whose pod crashed and gave up, else ``None``."""
    if slot is not None and slot.pod.status is PodStatus.failed:
        return crash_attention(slot.pod.last_error)
    return None


class Supervisor:
    """Runs a pod per unfinished task; use inside ``async with`` or via :meth:`run`."""

    def __init__(self, env: PodEnvironment, *, node: Node | None = None,
                 membership: Membership = Membership()) -> None:
        # A project's pod has its children's pods started, and commands given to them (a
        # cancelled item's child), through the supervisor.
        self.env = replace(env, start_task=self._start_child, execute_task=self._execute_child)
        self._alive: Path | None = None
        if node is not None:
            # Its agents stop a little before a silent node's leases can be claimed.
            self._alive = env.scratch / f"node-alive-{node.id}"
            ttl = max(2 * membership.heartbeat, membership.lease_ttl - membership.heartbeat)
            self.env = replace(self.env, agents=replace(
                self.env.agents, watchdog=watchdog.command(self._alive, ttl)))
        self.node = node
        """This process as a node of the store (``None``: alone, nothing leased)."""
        self.task_list_model = TASK_LIST if node is None else f"{TASK_LIST}@{node.id}"
        """The task list read model this process keeps: each node its own, so that nodes
        never race (or deadlock) saving the same rows."""
        self.membership = membership
        self._slots: dict[UUID, _Slot] = {}
        self._slots_by_text: dict[str, _Slot] = {}  # the same, by the id's text (the list's)
        self._tg: TaskGroup | None = None
        self._accepting = True
        self._lost: set[UUID] = set()  # pods being stopped because their lease was lost
        # The heartbeat loop, while it runs: a drain ends it before the node lets go.
        self._leaving: anyio.Event | None = None
        self._beating: anyio.Event | None = None  # set when the loop has ended
        self._creating: set[UUID] = set()  # tasks being created here (leased, no event yet)

    @property
    def store(self) -> EventStore:
        return self.env.store

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the pods until cancelled; recover unfinished tasks first."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                await self._sweep_workspaces()
                if self._alive is not None:
                    watchdog.beat(self._alive)
                await self.recover()
                if self.node is not None:
                    self._leaving, self._beating = anyio.Event(), anyio.Event()
                    tg.start_soon(self._keep_membership)
                task_status.started()
                await anyio.sleep_forever()
            finally:
                self._tg = None

    async def _sweep_workspaces(self) -> None:
        """Remove the worktrees of runs that no longer exist: at start, before any pod (and
        so any run) of this process, that is all of them but those of pods already here."""
        try:
            removed = await self.env.workspaces.sweep(skip=set(self._slots))
        except OSError as e:  # the data dir itself; the pods report their own trouble
            log.error("recovery: workspaces not swept: %s", e)
            return
        if removed:
            log.info("recovery: removed %d workspaces left by a stopped process: %s",
                     len(removed), ", ".join(removed[:10]))

    async def recover(self, concurrency: int = 8) -> int:
        """Start a pod for every unfinished task without one, ``concurrency`` at a time (their
        loads overlap their waits on the database); return how many started."""
        task_list = TaskList(self.store, model=self.task_list_model)
        await task_list.catch_up()
        unfinished = [
            UUID(row["id"]) for row in await task_list.rows()
            if Status(row["status"]) not in FINISHED and UUID(row["id"]) not in self._slots
        ]
        if self.node is not None:
            # Only this node's tasks: its own leases back (its last process died holding
            # them) and the unfinished tasks nobody holds.
            held = await self.node.reclaim_own()
            held.update(await self.node.claim(unfinished))
            unfinished = [task_id for task_id in held if task_id not in self._slots]
        limiter = anyio.CapacityLimiter(concurrency)
        started = 0

        async def start(task_id: UUID) -> None:
            nonlocal started
            async with limiter:
                try:
                    await self.start(task_id)
                    started += 1
                except (StoreError, SupervisorError) as e:
                    log.error("recovery: task %s not started: %s", task_id, e)

        async with anyio.create_task_group() as tg:
            for task_id in unfinished:
                tg.start_soon(start, task_id)
        return started

    async def create_task(self, task_id: UUID, events: list[TaskEvent]) -> TaskState:
        """Record a new task (its first events) and start its pod. On a node, the task is
        leased first: to this node, or, when it holds ``max_pods`` already, to the least loaded
        live node, whose next heartbeat starts it."""
        self._creating.add(task_id)  # leased before its first event: not a pod to start yet
        try:
            return await self._create(task_id, events)
        finally:
            self._creating.discard(task_id)

    async def _create(self, task_id: UUID, events: list[TaskEvent]) -> TaskState:
        here = True
        if self.node is not None:
            target = self.node.id
            if (self.node.max_pods is not None
                    and await self.node.leases_held() >= self.node.max_pods):
                target = await self.node.least_loaded() or self.node.id
            await self.node.assign(task_id, target)
            here = target == self.node.id
        await self.store.append(task_id, events, 0)
        state = fold(events)
        if here:
            await self.start(task_id, state=state)
        return state

    async def _lease(self, task_id: UUID) -> None:
        """On a node: make sure this node holds the task's lease before a pod runs for it
        (claimed if free); :class:`OwnedElsewhere` when a live node holds it."""
        node = self.node
        if node is None:
            return
        if task_id in self._lost:
            raise OwnedElsewhere(task_id, "another node")
        if node.fences.epoch(task_id) is not None:
            return
        if task_id in await node.claim([task_id]):
            return
        owner = await node.owner(task_id)
        if owner is not None and owner[0] == node.id:  # leased to it by another node
            epoch = (await node.mine()).get(task_id)
            if epoch is not None:
                node.fences.hold(task_id, epoch)
                return
        raise OwnedElsewhere(task_id, *(owner[0], owner[2]) if owner else ("another node", ""))

    async def _pod_ended(self, pod: Pod) -> None:
        """A node's bookkeeping once a pod has stopped: a finished task's lease goes; a
        lost lease's fence is dropped (nothing of this pod appends any more)."""
        assert self.node is not None
        task_id = pod.task_id
        try:
            if task_id in self._lost or pod.lease_lost:
                self._lost.discard(task_id)
                self.node.fences.drop(task_id)
            elif pod.state.current.status in FINISHED:
                await self.node.forget(task_id)
        except (StoreError, RuntimeError) as e:  # RuntimeError: its state never loaded
            log.warning("node %s: lease of %s not updated after its pod stopped: %s",
                        self.node.id, task_id, e)

    async def _keep_membership(self) -> None:
        """Heartbeat, failure detection, claims and lease checks, every ``heartbeat``
        seconds until cancelled or until a drain's end (see the module doc). A database that
        went away is retried on the next beat; the node reconnects (its lock and row are
        taken again), unless it is leaving."""
        assert self.node is not None and self._leaving is not None
        assert self._beating is not None
        try:
            while True:
                with anyio.move_on_after(self.membership.heartbeat):
                    await self._leaving.wait()
                if self._leaving.is_set():
                    return
                try:
                    await self._beat()
                except StoreUnavailable as e:
                    if self._leaving.is_set():
                        return
                    log.warning("node %s: %s; reconnecting", self.node.id, e)
                    await self._reconnect()
                except StoreError as e:
                    log.warning("node %s: heartbeat: %s", self.node.id, e)
        finally:
            self._beating.set()

    async def _beat(self) -> None:
        node = self.node
        assert node is not None and self._tg is not None
        agents = sum(slot.pod.scheduler.running for slot in self._slots.values())
        status = await node.heartbeat(pods=len(self._slots), agents=agents)
        if status != "dead" and self._alive is not None:
            watchdog.beat(self._alive)  # its agents may go on (pods/watchdog.py)
        if status == "dead":
            log.warning("node %s: the other nodes gave it up (no heartbeat within %g s): "
                        "its tasks are theirs now", node.id, self.membership.lease_ttl)
            await node.set_status("up" if self._accepting else "draining")
        dead = await node.find_dead(self.membership.lease_ttl)
        if dead:
            log.warning("node %s: node(s) %s dead: claiming their tasks", node.id,
                        ", ".join(dead))
        # Only leases held before the look: one taken meanwhile (a task created or claimed
        # here while the query ran) is not in the answer, and is not lost.
        held = node.fences.held()
        mine = await node.mine()
        for task_id in list(self._slots):
            if task_id in self._lost or task_id not in held:
                continue
            if mine.get(task_id) != held[task_id]:
                log.warning("node %s: lease of task %s lost to another node: stopping its "
                            "pod and its agents", node.id, task_id)
                self._lost.add(task_id)
                self._tg.start_soon(self._stop_lost, task_id)
        await node.inbox.take()  # a request whose notification was missed
        if not self._accepting:
            return
        claimed = await node.claim_orphans()
        for task_id, epoch in mine.items():  # leased to it by another node's create_task
            if (task_id not in self._slots and task_id not in self._lost
                    and task_id not in self._creating):
                node.fences.hold(task_id, epoch)
                claimed.setdefault(task_id, epoch)
        for task_id in claimed:
            if task_id not in self._slots:
                self._tg.start_soon(self._start_claimed, task_id)

    async def _start_claimed(self, task_id: UUID) -> None:
        try:
            pod = await self.start(task_id)
        except (StoreError, SupervisorError) as e:
            log.error("node: claimed task %s not started: %s", task_id, e)
            return
        try:
            repo = pod.get_state().repo
        except RuntimeError:
            return
        if repo and "://" not in repo and not Path(repo).expanduser().exists():
            # A local repository works only for nodes that see the same path.
            log.warning("node %s took over task %s, whose repository %s does not exist here: "
                        "nodes must share the disk for it (or use a URL)",
                        self.node.id if self.node else "?", task_id, repo)

    async def _stop_lost(self, task_id: UUID) -> None:
        if task_id in self._slots:
            with anyio.CancelScope(shield=True):
                await self.stop(task_id)
        self._lost.discard(task_id)
        if self.node is not None:
            self.node.fences.drop(task_id)

    async def _reconnect(self) -> None:
        assert self.node is not None
        with contextlib.suppress(StoreError):
            await self.node.close()
        try:
            await self.node.open()
        except StoreError as e:
            log.warning("node %s: not reconnected yet: %s", self.node.id, e)

    def answer_with(self, handler: Handler) -> None:
        """On a node: run the other nodes' requests for this node's tasks with ``handler``
        (the API's, which answers as it would answer a client)."""
        if self.node is None or self._tg is None:
            return
        self._tg.start_soon(self.node.inbox.run, handler)

    async def owned_elsewhere(self, task_id: UUID) -> str | None:
        """The id of the live node that owns the task, when it is not this one (``None``:
        this node runs it or may take it on)."""
        if self.node is None or task_id in self._slots:
            return None
        owner = await self.node.owner(task_id)
        if owner is None or owner[0] == self.node.id or owner[1] not in ("up", "draining"):
            return None
        return owner[0]

    async def forward(self, node_id: str, task_id: UUID, request: dict[str, Any], *,
                      key: str | None = None) -> dict[str, Any]:
        """Have the node that owns the task answer ``request`` (see :mod:`ipa.eventstore.inbox`);
        :class:`~ipa.eventstore.OwnerUnreachable` when it does not take it in time."""
        assert self.node is not None
        return await self.node.inbox.ask(node_id, task_id, request, key=key,
                                         timeout=max(2.0, self.membership.lease_ttl / 2))

    async def nodes(self) -> list[NodeRow]:
        """Every node of the store, as recorded (empty when this process is not a node)."""
        return [] if self.node is None else await self.node.nodes()

    async def owner_of(self, task_id: UUID) -> str | None:
        """The id of the node that holds the task's lease now (``None``: not leased)."""
        if self.node is None:
            return None
        owner = await self.node.owner(task_id)
        return None if owner is None else owner[0]

    async def _start_child(self, task_id: UUID, state: TaskState | None = None) -> None:
        try:
            await self.start(task_id, state=state)
        except ShuttingDown:
            pass  # recovered with the others when ipa starts again

    async def _execute_child(self, task_id: UUID, command: Command, actor: str) -> None:
        """A command to a child task from its project's pod: its pod runs (started for it if
        it has none, or a failed one), then executes it. The domain's refusal reaches the
        caller; a shutdown leaves it to the project's pod when ipa starts again."""
        try:
            pod = await self.start(task_id)
        except ShuttingDown:
            return
        await pod.execute(command, actor=actor)

    async def start(self, task_id: UUID, *, state: TaskState | None = None) -> Pod:
        """Start the task's pod and return it once ready (its children all started).
        ``state``: the task's state as its creator just recorded it (a project's new child),
        which the pod's first start uses instead of reading the store."""
        if not self._accepting:
            raise ShuttingDown("ipa is shutting down and starts no pod")
        if self._tg is None:
            raise SupervisorError("the supervisor is not running")
        slot = self._slots.get(task_id)
        if slot is not None and slot.pod.status is not PodStatus.failed:
            return slot.pod
        await self._lease(task_id)
        pod = Pod(task_id, self.env, state=state)
        scope = anyio.CancelScope()
        done = anyio.Event()
        self._put_slot(task_id, _Slot(pod, scope, done))
        try:
            await self._tg.start(self._supervise, pod, scope, done)
        except BaseException:
            self._drop_slot(task_id)
            raise
        return pod

    async def _supervise(
        self, pod: Pod, scope: anyio.CancelScope, done: anyio.Event,
        *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            with scope:
                await pod.run(task_status=task_status)
        except Exception as e:  # only a first start can raise; pod.run handles the rest
            log.error("pod %s did not start: %s", pod.task_id, e)
            raise
        finally:
            done.set()
            slot = self._slots.get(pod.task_id)
            if slot is not None and slot.pod is pod and pod.status is not PodStatus.failed:
                self._drop_slot(pod.task_id)
            if pod.status is not PodStatus.failed:
                pod.status = PodStatus.stopped
            if self.node is not None and pod.status is PodStatus.stopped:
                with anyio.CancelScope(shield=True):
                    await self._pod_ended(pod)

    async def stop(self, task_id: UUID) -> None:
        """Stop the task's pod (its running steps are interrupted, recorded) and wait."""
        slot = self._slots.get(task_id)
        if slot is None:
            raise PodNotRunning(task_id)
        await self._stop(task_id, slot)

    async def _stop(self, task_id: UUID, slot: _Slot) -> None:
        """Cancel ``slot``'s pod and wait for it; a pod that ended meanwhile returns at once,
        and a slot put in its place since (a restart) is left alone."""
        slot.scope.cancel()
        await slot.done.wait()
        if self._slots.get(task_id) is slot:
            self._drop_slot(task_id)

    async def wait_stopped(self, task_id: UUID) -> None:
        """Return once the task's pod has ended (at once if it has none)."""
        slot = self._slots.get(task_id)
        if slot is not None:
            await slot.done.wait()

    async def restart(self, task_id: UUID) -> Pod:
        """Stop the pod if it runs (or clear a failed one) and start it again."""
        if task_id in self._slots:
            await self.stop(task_id)
        return await self.start(task_id)

    async def restart_task(self, task_id: UUID, *, actor: str = "system") -> TaskState:
        """A person's way forward for a task whose pod crashed: start a new pod and, if the
        task was recorded as failed, send it back to work (``retry`` by ``actor``). Raises
        :class:`PodRunning` when its pod runs, :class:`TaskFinished` for a finished task and
        the store's ``StreamNotFound`` for an unknown one."""
        if not self._accepting:
            raise ShuttingDown("ipa is shutting down and starts no pod")
        slot = self._slots.get(task_id)
        if slot is not None and slot.pod.status is not PodStatus.failed:
            raise PodRunning(task_id)
        state = await self.store.load(task_id)
        if state.status in FINISHED:
            raise TaskFinished(task_id, state.status)
        pod = await self.start(task_id)
        if pod.get_state().status is Status.failed:
            return await pod.execute(Retry(), actor=actor)
        return pod.get_state()

    def attention(self, task_id: UUID) -> Attention | None:
        """What the supervisor knows and the task's state cannot: its pod crashed and gave up
        (``crashed``), even when the failure could not be recorded. ``None`` otherwise."""
        return _crashed(self._slots.get(task_id))

    def attention_of_each(self, task_ids: Sequence[str]) -> list[Attention | None]:
        """:meth:`attention` of each task whose id is written as in ``task_ids`` (as the task
        list writes them): for every row of a list page on every request, so one lookup by
        text per row and no call."""
        slots, failed = self._slots_by_text, PodStatus.failed
        return [crash_attention(slot.pod.last_error)
                if (slot := slots.get(task_id)) is not None and slot.pod.status is failed
                else None for task_id in task_ids]

    def _put_slot(self, task_id: UUID, slot: _Slot) -> None:
        self._slots[task_id] = slot
        self._slots_by_text[str(task_id)] = slot

    def _drop_slot(self, task_id: UUID) -> None:
        self._slots.pop(task_id, None)
        self._slots_by_text.pop(str(task_id), None)

    def get(self, task_id: UUID) -> Pod:
        """The task's running pod, or :class:`PodNotRunning`."""
        slot = self._slots.get(task_id)
        if slot is None:
            raise PodNotRunning(task_id)
        if slot.pod.status is PodStatus.failed:
            raise PodNotRunning(task_id, f"has a failed pod ({slot.pod.last_error}); restart it")
        return slot.pod

    def pods(self) -> list[Pod]:
        """Every pod the supervisor holds, failed ones included."""
        return [slot.pod for slot in self._slots.values()]

    async def execute(self, task_id: UUID, command: Command, **options: object) -> TaskState:
        """Send a command to the task's pod. On a node, a task without a pod here is
        taken on when its lease is free (:class:`OwnedElsewhere` when a live node holds it).
        ``archive`` and ``unarchive`` of a task without a pod are recorded without one."""
        if not self._accepting:
            raise ShuttingDown("ipa is shutting down and takes no command")
        try:
            pod = self.get(task_id)
        except PodNotRunning:
            if isinstance(command, ARCHIVE_COMMANDS):
                return await self._record(task_id, command, **options)
            if self.node is None or task_id in self._slots:
                raise
            state = await self.store.load(task_id)
            if state.status in FINISHED:
                raise
            pod = await self.start(task_id)
        if pod.status is PodStatus.starting:  # its state is still loading (a claim, a start)
            with anyio.move_on_after(10):
                await pod.wait_ready()
            if pod.status is PodStatus.starting:
                raise PodNotRunning(task_id, "is still starting; try again in a moment")
        return await pod.execute(command, **options)  # type: ignore[arg-type]

    async def _record(self, task_id: UUID, command: Command, *, actor: str = "system",
                      correlation_id: str | None = None, expected_version: int | None = None,
                      **_: object) -> TaskState:
        """Record ``command`` on a task without a pod here (archiving a finished task, whose
        pod has ended): decided on its stored state and appended at that state's version, so
        a writer that came first is a conflict, never overwritten."""
        state = PodState(task_id, self.store, clock=self.env.clock)
        await state.load()
        return await state.execute(command, actor=actor, correlation_id=correlation_id,
                                   expected_version=expected_version)

    def interrupt(self, task_id: UUID, job_id: str | None = None, *, actor: str = "system") -> int:
        """Interrupt the running agent of ``job_id`` (or all) in the task's pod; how many."""
        if not self._accepting:
            raise ShuttingDown("ipa is shutting down and takes no command")
        return self.get(task_id).interrupt(job_id, actor=actor)

    async def shutdown(self, deadline: float = 10.0) -> None:
        """Stop taking work; let running steps finish within ``deadline`` seconds (then
        interrupt them, which is recorded); snapshot every pod; stop every pod."""
        self._accepting = False
        if self.node is not None:
            with anyio.CancelScope(shield=True), contextlib.suppress(StoreError):
                await self.node.set_status("draining")
        pods = [slot.pod for slot in self._slots.values()]
        for pod in pods:
            pod.scheduler.draining = True
        with anyio.move_on_after(deadline):
            while any(pod.scheduler.running for pod in pods):
                await anyio.sleep(0.05)
        # Pods may end on their own while others are being stopped (a task just cancelled):
        # each slot is stopped as it was listed.
        for task_id, slot in list(self._slots.items()):
            with anyio.CancelScope(shield=True):
                await self._stop(task_id, slot)
        for pod in pods:
            with anyio.CancelScope(shield=True):
                try:
                    await self.store.take_snapshot(pod.task_id)
                except StoreError as e:
                    log.warning("shutdown: no snapshot of %s: %s", pod.task_id, e)
        if self.node is not None:
            # The drain's end: the heartbeat stops (a beat under way finishes first: none
            # may run on, or reconnect, once the node has let go); the leases go back; the
            # other nodes take them at once.
            with anyio.CancelScope(shield=True):
                if self._leaving is not None and self._beating is not None:
                    self._leaving.set()
                    with anyio.move_on_after(5):  # else the close below ends the beat
                        await self._beating.wait()
                try:
                    await self.node.release(list(self.node.fences.held()))
                    await self.node.set_status("left")
                except StoreError as e:
                    log.warning("node %s: leases not released: %s (the others take them "
                                "once its lock is free)", self.node.id, e)
                await self.node.close()
