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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from uuid import UUID

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ipa.domain import Attention, Command, Retry, Status, TaskState, crash_attention
from ipa.eventstore import EventStore, StoreError
from ipa.pods import Pod, PodEnvironment, PodStatus
from ipa.projections import TaskList

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


@dataclass
class _Slot:
    pod: Pod
    scope: anyio.CancelScope
    done: anyio.Event


class Supervisor:
    """Runs a pod per unfinished task; use inside ``async with`` or via :meth:`run`."""

    def __init__(self, env: PodEnvironment) -> None:
        # A project's pod has its children's pods started, and commands given to them (a
        # cancelled item's child), through the supervisor.
        self.env = replace(env, start_task=self._start_child, execute_task=self._execute_child)
        self._slots: dict[UUID, _Slot] = {}
        self._tg: TaskGroup | None = None
        self._accepting = True

    @property
    def store(self) -> EventStore:
        return self.env.store

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Own the pods until cancelled; recover unfinished tasks first."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                await self._sweep_workspaces()
                await self.recover()
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
        task_list = TaskList(self.store)
        await task_list.catch_up()
        unfinished = [
            UUID(row["id"]) for row in await task_list.rows()
            if Status(row["status"]) not in FINISHED and UUID(row["id"]) not in self._slots
        ]
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
        pod = Pod(task_id, self.env, state=state)
        scope = anyio.CancelScope()
        done = anyio.Event()
        self._slots[task_id] = _Slot(pod, scope, done)
        try:
            await self._tg.start(self._supervise, pod, scope, done)
        except BaseException:
            self._slots.pop(task_id, None)
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
                del self._slots[pod.task_id]
            if pod.status is not PodStatus.failed:
                pod.status = PodStatus.stopped

    async def stop(self, task_id: UUID) -> None:
        """Stop the task's pod (its running steps are interrupted, recorded) and wait."""
        slot = self._slots.get(task_id)
        if slot is None:
            raise PodNotRunning(task_id)
        slot.scope.cancel()
        await slot.done.wait()
        self._slots.pop(task_id, None)

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
        slot = self._slots.get(task_id)
        if slot is not None and slot.pod.status is PodStatus.failed:
            return crash_attention(slot.pod.last_error)
        return None

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
        """Send a command to the task's pod."""
        if not self._accepting:
            raise ShuttingDown("ipa is shutting down and takes no command")
        return await self.get(task_id).execute(command, **options)  # type: ignore[arg-type]

    def interrupt(self, task_id: UUID, job_id: str | None = None, *, actor: str = "system") -> int:
        """Interrupt the running agent of ``job_id`` (or all) in the task's pod; how many."""
        if not self._accepting:
            raise ShuttingDown("ipa is shutting down and takes no command")
        return self.get(task_id).interrupt(job_id, actor=actor)

    async def shutdown(self, deadline: float = 10.0) -> None:
        """Stop taking work; let running steps finish within ``deadline`` seconds (then
        interrupt them, which is recorded); snapshot every pod; stop every pod."""
        self._accepting = False
        pods = [slot.pod for slot in self._slots.values()]
        for pod in pods:
            pod.scheduler.draining = True
        with anyio.move_on_after(deadline):
            while any(pod.scheduler.running for pod in pods):
                await anyio.sleep(0.05)
        for task_id in list(self._slots):
            with anyio.CancelScope(shield=True):
                await self.stop(task_id)
        for pod in pods:
            with anyio.CancelScope(shield=True):
                try:
                    await self.store.take_snapshot(pod.task_id)
                except StoreError as e:
                    log.warning("shutdown: no snapshot of %s: %s", pod.task_id, e)
