"""A project's swarm: its backlog items run as child tasks, at most ``max_children`` at once.

The project's pod runs a :class:`Swarm` beside its scheduler. While the project runs in a phase
that has backlog items, the swarm spawns every ready item (approved, its dependencies done,
highest priority first) as a child task: it records ``ChildSpawned`` on the project first, then
creates the child's stream (``CreateChildTask``: workflow ``item``, its branch made from the
project's branch) and has the child's pod started. A crash between the two is healed when the
pod starts again: a spawned child without a stream is created then.

It follows its children through the store's log (no pod calls another): when a child's stream
records ``TaskCompleted``, ``TaskFailed`` or ``TaskCancelled``, the swarm records
``ChildFinished`` on the project. A completed child's work is merged into the project's branch
first (its branch from where it started to its head, replayed as one commit: ``ChildMerged``
in the same record); a merge that conflicts fails the item, naming the files, and a person
retries it (a new child starts from the project's branch as it is) or skips or cancels it.
At start the swarm reads each running child's status once, so nothing that ended while the
project's pod was away is missed.

An item dropped while its child still runs (a change of the backlog after a PRD edit, approved
by a person, cancelled it) has that child cancelled: ``Cancel`` on the child, through
``PodEnvironment.execute_task`` (the supervisor's), by ``project:<id>``. Its ``TaskCancelled``
records nothing on the project: the item is not spawned any more. At start the swarm asks the
same of every dropped item's child that has not ended.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ipa.domain import (
    BacklogItem,
    BacklogItemStatus,
    Cancel,
    Command,
    CommandRejected,
    Context,
    CreateChildTask,
    JobStatus,
    RecordChildConflict,
    RecordChildFinished,
    SpawnChild,
    Status,
    TaskState,
    decide,
    fold,
    ready_items,
    running_children,
)
from ipa.eventstore import EventStore, StreamNotFound, VersionConflict

from .state import Clock, PodState
from .workspace import BranchConflict, WorkspaceError, WorkspaceManager

log = logging.getLogger(__name__)

StartTask = Callable[[UUID, TaskState | None], Awaitable[Any]]
"""Has a task's pod started (the supervisor's ``start``), from the task's state when its
caller just recorded it (``None``: read from the store)."""

ExecuteTask = Callable[[UUID, Command, str], Awaitable[Any]]
"""Has another task's pod execute a command, by an actor (the supervisor's): a cancelled
item's child is cancelled through it."""

MERGE_CHECK = "! git diff HEAD^1 HEAD | grep -nE '^[+](<<<<<<<|=======|>>>>>>>)( |$)'"
"""A merge job's check: no line it added to the project's branch is a conflict marker."""

_ENDINGS = {"TaskCompleted": "completed", "TaskFailed": "failed", "TaskCancelled": "cancelled"}


class Swarm:
    """Spawns a project's ready items as child tasks and follows them (see the module doc)."""

    def __init__(self, state: PodState, store: EventStore, workspaces: WorkspaceManager, *,
                 start_task: StartTask | None, ensure_branch: Callable[[], Awaitable[bool]],
                 landing: anyio.Lock, clock: Clock,
                 execute_task: ExecuteTask | None = None) -> None:
        self._state = state
        self._store = store
        self._workspaces = workspaces
        self._start_task = start_task
        self._ensure_branch = ensure_branch
        self._landing = landing
        self._clock = clock
        self._execute_task = execute_task
        self._cancelled: set[UUID] = set()  # children of dropped items asked to cancel
        self._starting: TaskGroup | None = None  # where new children's pods are started

    @property
    def task_id(self) -> UUID:
        return self._state.task_id

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        # Attached to the log before the first look at the children: nothing ends unseen.
        async with self._store.subscribe(after=await self._store.head_position()) as log_:
            async with anyio.create_task_group() as tg:
                self._starting = tg
                await self._heal()
                tg.start_soon(self._follow, log_, tg)
                task_status.started()
                await self._spawn_loop()
                tg.cancel_scope.cancel()

    async def _spawn_loop(self) -> None:
        async for state in self._state.changes():
            if state.status.terminal:
                return
            await self._spawn(state)

    async def _spawn(self, state: TaskState) -> None:
        if state.backlog is not None:
            await self._close_merges(state)
            await self._cancel_dropped(state)
        if not _ready(state):
            return
        if state.repo is not None and state.branch is None:
            if not await self._ensure_branch():
                return  # the repository's problem, recorded: a person fixes it first
        await self._record()

    async def _record(self, *commands: Command) -> None:
        """Record ``commands`` (a child's end) and, in the same append, the spawns of every
        item they leave ready: a free slot is taken in the round trip that freed it. The
        new children's pods start side by side, beside the swarm."""
        spawned: list[tuple[BacklogItem, UUID]] = []

        def spawns(state: TaskState) -> list[Command]:
            spawned.clear()  # a retry after a conflict decides again
            if state.repo is not None and state.branch is None:
                return []  # the spawn loop makes the branch first
            spawned.extend((item, uuid.uuid4()) for item in _ready(state))
            return [SpawnChild(item_id=item.id, child_id=str(child_id))
                    for item, child_id in spawned]

        await self._state.execute_all(commands, then=spawns)
        project = self._state.current
        assert self._starting is not None
        for item, child_id in spawned:
            self._starting.start_soon(self._create_child, project, item, child_id)

    async def _create_child(self, project: TaskState, item: BacklogItem, child_id: UUID) -> None:
        """The child's stream (if it does not exist yet) and its pod."""
        acceptance = "".join(f"\n- {line}" for line in item.acceptance)
        description = item.description + (f"\n\nAcceptance criteria:{acceptance}"
                                           if acceptance else "")
        command = CreateChildTask(
            title=item.title, description=description, parent_id=str(self.task_id),
            item_id=item.id, kind=item.kind, repo=project.repo,
            base_branch=project.branch.name if project.branch is not None else None,
        )
        ctx = Context(actor=f"project:{self.task_id}", now=self._clock(),
                      correlation_id=str(self.task_id))
        events = decide(None, command, ctx, child_id)
        created: TaskState | None
        try:
            await self._store.append(child_id, events, 0)
            created = fold(events, None)  # what its pod would read back
        except VersionConflict:
            created = None  # created before a crash: it keeps what it has
        if self._start_task is not None:
            await self._start_task(child_id, created)

    async def _merge_job(self, project: TaskState, child_id: UUID, commit: str,
                         files: list[str]) -> None:
        """A completed child whose branch conflicts with the project's: a developer merges
        it in a worktree of the project's branch that holds the conflict (``merge`` in the
        job's spec: see ``Scheduler._workspace`` and ``context.gather``); its commit lands as
        the merge."""
        assert project.backlog is not None
        item = next(i for i in project.backlog.items if i.child_id == child_id)
        taken = sum(1 for job_id in project.jobs if job_id.startswith(f"merge-{item.id}"))
        job_id = f"merge-{item.id}" + (f"-{taken + 1}" if taken else "")
        spec = {"runner": "claude", "verify": [MERGE_CHECK],
                "merge": {"item": item.id, "child": str(child_id), "commit": commit,
                          "files": files}}
        await self._state.execute(RecordChildConflict(
            child_id=str(child_id), child_commit=commit, files=files, merge_job=job_id,
            agent="developer", spec=spec))

    async def _close_merges(self, state: TaskState) -> None:
        """Items whose merge job ended: merged when it landed, failed when a person skipped
        it (its work is not on the branch)."""
        assert state.backlog is not None
        for item in state.backlog.items:
            if item.status is not BacklogItemStatus.merging:
                continue
            jobs = [j for j in state.jobs.values()
                    if (j.spec.get("merge") or {}).get("child") == str(item.child_id)]
            if not jobs:
                continue
            job = jobs[-1]
            if job.status is JobStatus.succeeded and state.branch is not None:
                used = (await self._store.load(item.child_id)).usage.total
                await self._record(RecordChildFinished(
                    child_id=str(item.child_id), outcome="completed",
                    child_commit=job.spec["merge"]["commit"],
                    merged=state.branch.head_commit or state.branch.base_commit,
                    input_tokens=used.input_tokens, output_tokens=used.output_tokens,
                    cost_usd=used.cost_usd))
            elif job.status in (JobStatus.skipped, JobStatus.cancelled):
                used = (await self._store.load(item.child_id)).usage.total
                await self._record(RecordChildFinished(
                    child_id=str(item.child_id), outcome="failed",
                    reason=f"its merge job {job.job_id} was {job.status.value}: its work is "
                           "not on the project's branch",
                    input_tokens=used.input_tokens, output_tokens=used.output_tokens,
                    cost_usd=used.cost_usd))

    async def _cancel_dropped(self, state: TaskState) -> None:
        """Cancel the child of each dropped item that may still run (once per pod: a child
        that ended records nothing, a refusal means it ended meanwhile)."""
        assert state.backlog is not None
        for item in state.backlog.items:
            child_id = item.child_id
            if (item.status is not BacklogItemStatus.dropped or child_id is None
                    or child_id in self._cancelled):
                continue
            self._cancelled.add(child_id)
            try:
                child = await self._store.load(child_id)
            except StreamNotFound:
                continue  # spawned, never created: nothing runs
            if child.status in (Status.completed, Status.cancelled):
                continue
            if self._execute_task is None:
                log.warning("project %s: child %s of dropped item %s not cancelled: no way to "
                            "reach its pod", self.task_id, child_id, item.id)
                continue
            reason = f"its item {item.id!r} was cancelled by a change of the project's backlog"
            try:
                await self._execute_task(child_id, Cancel(reason=reason),
                                         f"project:{self.task_id}")
            except CommandRejected:
                pass  # it ended meanwhile

    async def _heal(self) -> None:
        """At start: create the streams a crash left uncreated, and record the children that
        ended while nobody followed them."""
        state = self._state.current
        for item in running_children(state):
            assert item.child_id is not None
            try:
                child = await self._store.load(item.child_id)
            except StreamNotFound:
                await self._create_child(state, item, item.child_id)
                continue
            ending = {Status.completed: "completed", Status.failed: "failed",
                      Status.cancelled: "cancelled"}.get(child.status)
            if ending is not None:
                await self._finished(item.child_id, ending)
            elif self._start_task is not None:
                await self._start_task(item.child_id, None)

    async def _follow(self, log_: Any, finishing: TaskGroup) -> None:
        """Read on while a child's end is recorded (a merge takes a while): the log keeps
        moving, and several children's ends are handled side by side."""
        async for recorded in log_:
            outcome = _ENDINGS.get(recorded.type)
            if outcome is None:
                continue
            children = {item.child_id for item in running_children(self._state.current)}
            if recorded.stream_id in children:
                finishing.start_soon(self._finished, recorded.stream_id, outcome)

    async def _finished(self, child_id: UUID, outcome: str) -> None:
        child = await self._store.load(child_id)
        used = child.usage.total
        if outcome != "completed":
            reason = child.failure or f"the child task was {outcome}"
            await self._record(RecordChildFinished(child_id=str(child_id),
                                                          outcome=outcome, reason=reason,
                                                          input_tokens=used.input_tokens,
                                                          output_tokens=used.output_tokens,
                                                          cost_usd=used.cost_usd))
            return
        async with self._landing:
            project = self._state.current
            if child_id not in {item.child_id for item in running_children(project)}:
                return  # recorded meanwhile (a second ending event of the same child)
            branch = child.branch
            if branch is None or branch.head_commit is None or project.branch is None:
                await self._record(RecordChildFinished(child_id=str(child_id),
                                                              outcome="completed",
                                                              input_tokens=used.input_tokens,
                                                              output_tokens=used.output_tokens,
                                                              cost_usd=used.cost_usd))
                return
            head = project.branch.head_commit or project.branch.base_commit
            try:
                merged = await self._workspaces.land(
                    task_id=self.task_id, repo=project.repo or "", commit=branch.head_commit,
                    start=branch.base_commit, head=head)
            except BranchConflict as e:
                await self._merge_job(project, child_id, branch.head_commit, e.files)
                return
            except WorkspaceError as e:
                reason = f"its work could not be merged into the project's branch: {e}"
            else:
                await self._record(RecordChildFinished(
                    child_id=str(child_id), outcome="completed",
                    child_commit=branch.head_commit, merged=merged,
                    input_tokens=used.input_tokens, output_tokens=used.output_tokens,
                    cost_usd=used.cost_usd))
                return
            log.warning("project %s: child %s not merged: %s", self.task_id, child_id, reason)
            await self._record(RecordChildFinished(child_id=str(child_id),
                                                          outcome="failed", reason=reason,
                                                          input_tokens=used.input_tokens,
                                                          output_tokens=used.output_tokens,
                                                          cost_usd=used.cost_usd))


def _ready(state: TaskState) -> list[BacklogItem]:
    """The items to spawn now: ready ones of the project's phase, within ``max_children``."""
    if state.status is not Status.running or state.backlog is None:
        return []
    free = state.max_children - len(running_children(state))
    return ready_items(state, state.phase)[: max(0, free)]
