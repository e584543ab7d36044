"""A pod: one task's isolated unit, an anyio task group of four children (five for a project).

- **state** (:class:`~ipa.pods.state.PodState`): the task's state in memory, the single writer
  of its stream, telling the other children of every change;
- **scheduler** (:class:`~ipa.pods.scheduler.Scheduler`): starts jobs and moves phases;
- **sync engine** (:class:`~ipa.pods.sync.SyncEngine`): outside systems (none yet);
- **workspace keeper**: removes the task's workspaces when it is cancelled or finishes;
- **swarm** (:class:`~ipa.pods.swarm.Swarm`, a project's only): runs its backlog items as
  child tasks and follows them.

Children start with a readiness handshake (``await tg.start(...)``): :meth:`Pod.run` reports
ready only when all four are. When a child crashes, the task group cancels its siblings and
the pod starts them all again from the stored state, after a backoff; a pod that crashes
``max_crashes`` times within ``crash_window`` seconds records the task as failed and stops,
waiting for a person to restart it. A crash never leaves the pod's task group, so it never
touches another pod.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from uuid import UUID

import anyio
from anyio.abc import TaskStatus

from ipa.domain import (
    Cancel,
    CancelJob,
    Command,
    CommandRejected,
    Fail,
    Pause,
    Status,
    TaskState,
)
from ipa.eventstore import EventStore, LeaseLost

from .rarv import AgentSettings
from .repositories import RepositoryPolicy
from .runners import AgentRunner
from .scheduler import Scheduler
from .state import Clock, PodState, utc_now
from .swarm import ExecuteTask, StartTask, Swarm
from .sync import SyncEngine, SyncSettings
from .workspace import WorkspaceManager

log = logging.getLogger(__name__)


class PodStatus(StrEnum):
    starting = "starting"
    ready = "ready"
    restarting = "restarting"
    failed = "failed"
    stopped = "stopped"


@dataclass(frozen=True)
class RestartPolicy:
    """How a pod recovers from crashes of its children."""

    max_crashes: int = 5
    crash_window: float = 60.0
    backoff_initial: float = 0.1
    backoff_max: float = 10.0


@dataclass(frozen=True)
class PodEnvironment:
    """What every pod of a process shares."""

    store: EventStore
    workspaces: WorkspaceManager
    scratch: Path
    runner_for: Callable[[dict], AgentRunner]
    clock: Clock = utc_now
    policy: RestartPolicy = RestartPolicy()
    max_parallel: int = 4
    agents: AgentSettings = field(default_factory=AgentSettings)
    sync: SyncSettings = SyncSettings()  # GitHub/JIRA: URLs, credentials, timings
    repositories: RepositoryPolicy = RepositoryPolicy()  # what a new task's repo may be
    start_task: StartTask | None = None  # has a task's pod started (a project's children)
    execute_task: ExecuteTask | None = None  # a command to another task's pod (a child's cancel)


class Pod:
    """One task's state, scheduler, sync engine and workspace keeper, run together."""

    def __init__(self, task_id: UUID, env: PodEnvironment, *,
                 state: TaskState | None = None) -> None:
        self.task_id = task_id
        self._env = env
        self.state = PodState(task_id, env.store, clock=env.clock)
        self._given = state  # the state its creator just recorded: the first start's
        self.scheduler = self._new_scheduler()
        self.sync = SyncEngine(self.state, env.sync, workspaces=env.workspaces, clock=env.clock)
        self.status = PodStatus.starting
        self.crashes: deque[float] = deque()
        self.last_error: str | None = None
        self.lease_lost = False  # stopped because another node owns the task now
        self._ready = anyio.Event()  # set once its state is loaded and its children run
        self._group: anyio.CancelScope | None = None

    def _new_scheduler(self) -> Scheduler:
        return Scheduler(
            self.state, self._env.store, runner_for=self._env.runner_for,
            workspaces=self._env.workspaces, scratch=self._env.scratch,
            max_parallel=self._env.max_parallel, clock=self._env.clock,
            agents=self._env.agents,
        )

    def _swarm(self) -> Swarm:
        return Swarm(self.state, self._env.store, self._env.workspaces,
                     start_task=self._env.start_task, execute_task=self._env.execute_task,
                     ensure_branch=self.scheduler.ensure_branch,
                     landing=self.scheduler.landing, clock=self._env.clock)

    async def wait_ready(self) -> None:
        """Return once the pod has loaded its state and started (at once if it has)."""
        await self._ready.wait()

    def get_state(self) -> TaskState:
        """The task's state, from memory."""
        return self.state.current

    async def execute(self, command: Command, *, actor: str = "system",
                      correlation_id: str | None = None, interrupt: bool = False,
                      expected_version: int | None = None) -> TaskState:
        """Apply a person's or a system's command to the task.

        ``interrupt`` with a pause: running agents are cut short (recorded as interrupted)
        instead of being let finish. A cancel always interrupts them and removes the task's
        workspaces. A ``cancel_job`` stops the job's agent at once: the job is cancelled
        before its run ends, so nothing the run reports afterwards is the job's result.
        """
        state = await self.state.execute(command, actor=actor, correlation_id=correlation_id,
                                         expected_version=expected_version)
        if isinstance(command, Cancel) or (isinstance(command, Pause) and interrupt):
            self.scheduler.interrupt(f"interrupted: {command.name} by {actor}")
        elif isinstance(command, CancelJob):
            self.scheduler.interrupt(f"interrupted: cancel_job by {actor}", command.job_id)
        return state

    def interrupt(self, job_id: str | None = None, *, actor: str = "system") -> int:
        """Stop the agent of ``job_id`` (or of every run) at once and hold its job for a person
        (``retry_job``, ``skip_job``, ``cancel_job``): not a failed attempt, never a dead
        letter. Returns how many runs were interrupted."""
        return self.scheduler.interrupt(f"interrupted by {actor}", job_id, hold=True)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Run the children until cancelled, restarting them after a crash (see module doc).

        Raises if the very first start fails (e.g. the task does not exist): nobody sees a
        half-started pod.
        """
        policy = self._env.policy
        announced = False
        backoff = policy.backoff_initial
        while True:
            try:
                if self._given is not None:
                    self.state.use(self._given)
                    self._given = None
                else:
                    await self.state.load()
                async with anyio.create_task_group() as tg:
                    self._group = tg.cancel_scope
                    await tg.start(self.scheduler.run)
                    await tg.start(self.sync.run)
                    if self.state.current.workflow == "project":
                        await tg.start(self._swarm().run)
                    await tg.start(self._keep_workspaces)
                    self.status = PodStatus.ready
                    self._ready.set()
                    if not announced:
                        announced = True
                        task_status.started()
                    backoff = policy.backoff_initial
            except Exception as e:  # a child crashed: the group cancelled the others
                if _lease_lost(e):
                    # Another node claimed the task (this one was taken for dead): it is the
                    # owner now; this pod stops, its runs already cut short, and writes no
                    # more (the append refused it).
                    log.warning("pod %s stopped: %s", self.task_id, _describe(e))
                    self.lease_lost = True
                    self.status = PodStatus.stopped
                    if not announced:
                        raise
                    return
                if not announced:
                    raise
                error = _describe(e)
                self.last_error = error
                now = time.monotonic()
                self.crashes.append(now)
                while self.crashes and now - self.crashes[0] > policy.crash_window:
                    self.crashes.popleft()
                log.warning("pod %s crashed (%d in %.0f s): %s", self.task_id,
                            len(self.crashes), policy.crash_window, error)
                if len(self.crashes) >= policy.max_crashes:
                    await self._give_up(error)
                    return
                self.status = PodStatus.restarting
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, policy.backoff_max)
                self.scheduler = self._new_scheduler()
                continue
            # The group ended without a crash: the task finished (see _keep_workspaces).
            self.status = PodStatus.stopped
            if not announced:
                task_status.started()
            return

    async def _give_up(self, error: str) -> None:
        self.status = PodStatus.failed
        reason = (f"pod crashed {len(self.crashes)} times in "
                  f"{self._env.policy.crash_window:g} s; last: {error}")
        with anyio.CancelScope(shield=True):
            try:
                await self.state.load()
                await self.state.execute(Fail(reason=reason))
            except CommandRejected:
                log.error("pod %s failed (%s); the task is %s", self.task_id, reason,
                          self.state.current.status)
            except Exception as e:  # the store itself may be why it crashed
                log.error("pod %s failed (%s) and could not record it: %s", self.task_id,
                          reason, e)

    async def _keep_workspaces(
        self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Once the task is cancelled or finished: remove its workspaces, then end the pod
        (a finished task has no pod; its events stay)."""
        task_status.started()
        async for state in self.state.changes():
            if state.status in (Status.cancelled, Status.completed):
                while self.scheduler.running:  # interrupted runs record their outcome first
                    await self.state.wait_changed(timeout=0.1)
                for workspace in self.state.current.workspaces.values():
                    if not workspace.removed:
                        await self.scheduler.remove_workspace(
                            workspace.workspace_id, f"task {state.status.value}",
                            keep_branch=state.status is Status.completed,
                        )
                if state.status is Status.cancelled:
                    await self._env.workspaces.remove_task(self.task_id)
                assert self._group is not None
                self._group.cancel()
                return


def _lease_lost(error: BaseException) -> bool:
    if isinstance(error, LeaseLost):
        return True
    if isinstance(error, BaseExceptionGroup):
        return any(_lease_lost(e) for e in error.exceptions)
    return False


def _describe(error: BaseException) -> str:
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return f"{type(error).__name__}: {error}"
