"""The scheduler child of a pod: drives the task through its workflow.

On every change of the task's state (and when a retry falls due) it decides the next action
from the state and the workflow definition:

- a pending task is started;
- in a running task, jobs that are ready (dependencies met, retry time reached) are started,
  highest priority first, up to ``max_parallel`` at once, each in its own cancel scope;
- when every job of the current phase finished (succeeded or skipped), the phase asks for
  approval at its gate, or completes when it has none; an open-ended last phase (a project's
  ``perpetual``) never completes: with ``auto_queue`` its next round (the maintainer) is queued
  ``AgentSettings.perpetual_interval`` seconds after the last one ended;
- with ``auto_queue``, a project whose approved backlog's PRD was edited gets a re-plan job
  (``replan-<n>``: the product analyst, ``spec["replan"]`` = the edit it answers) in the
  current phase, whose answer becomes a change of the backlog for a person (``rarv.py``);
- a paused, waiting, failed or finished task starts nothing.

Each job runs through an :class:`~ipa.pods.runners.AgentRunner` in a workspace (a git worktree
of the task's repository, or a scratch directory when the task has none). The run's output goes
to the run's own stream; the task's stream gets the job's start, its workspace and commit, and
its outcome. A run cut short (a pause that interrupts, a task cancel, a budget stop, a
shutdown, or found in flight after a crash) is recorded as an interrupted failure, so the job's
retry policy applies: never silently lost, never run twice at once. A person's interrupt stops
the agent at once and holds the job (``HoldJob``: not a failed attempt); a ``cancel_job`` stops
it at once and the run's later reports record nothing for the job.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
from anyio.abc import TaskGroup, TaskStatus

from ipa.domain import (
    Command,
    CommandRejected,
    CompleteJob,
    CompletePhase,
    Context,
    FailJob,
    HoldJob,
    JobStatus,
    QueueJob,
    RecordBranch,
    RecordBranchConflict,
    RecordCommit,
    RecordRepositoryUnavailable,
    RecordWorkspace,
    RemoveWorkspace,
    RequestApproval,
    StartJob,
    StartTask,
    Status,
    TaskState,
    decide,
    fold,
    get_workflow,
    head_commit,
    job_commit,
    next_retry_at,
    perpetual_due,
    phase_items_done,
    phase_jobs_done,
    ready_jobs,
    replan_due,
    running_jobs,
)
from ipa.domain.runs import RunFinished, RunOutput, RunStarted
from ipa.eventstore import EventStore

from .approval import decide_gate
from .rarv import AgentAttempt, AgentSettings, is_agent_job
from .runners import AgentRunner, OutputLine, RunnerError, RunRequest, RunResult
from .state import Clock, PodState, utc_now
from .workspace import (
    BranchConflict,
    RepositoryUnavailable,
    UnknownRevision,
    WorkspaceError,
    WorkspaceManager,
)

log = logging.getLogger(__name__)


RunnerFor = Callable[[dict[str, Any]], AgentRunner]
REPLAN_AGENT = "product_analyst"
"""Who re-plans a project's backlog when its PRD is edited: the agent that planned it."""


class Scheduler:
    """Starts the task's jobs and moves it through its phases."""

    def __init__(
        self,
        state: PodState,
        store: EventStore,
        *,
        runner_for: RunnerFor,
        workspaces: WorkspaceManager,
        scratch: Path,
        max_parallel: int = 4,
        cooldown: float = 0.02,
        clock: Clock = utc_now,
        jitter: Callable[[], float] = random.random,
        agents: AgentSettings | None = None,
    ) -> None:
        self._state = state
        self._store = store
        self._runner_for = runner_for
        self._workspaces = workspaces
        self._scratch = scratch
        self._max_parallel = max_parallel
        self._cooldown = cooldown
        self._clock = clock
        self._jitter = jitter
        self._agents = agents or AgentSettings()
        self._runs: dict[str, anyio.CancelScope] = {}
        self.landing = anyio.Lock()
        """Held while work lands on the task's branch (a job's commit, a child's merge)."""
        self._runs_ended = 0  # runs that left self._runs so far (see run())
        self._stops: dict[str, tuple[str, bool]] = {}  # job id → (why, hold it for a person)
        self.draining = False
        """When set, no new job starts (a graceful shutdown lets running ones finish)."""

    @property
    def task_id(self) -> UUID:
        return self._state.task_id

    @property
    def running(self) -> int:
        """How many runs are in flight."""
        return len(self._runs)

    def interrupt(self, reason: str, job_id: str | None = None, *, hold: bool = False) -> int:
        """Cut short one run (or all) at once: its agent is stopped and the run recorded as
        interrupted (a failed attempt), or with ``hold`` as held for a person (``HoldJob``: the
        attempt does not count). A job cancelled meanwhile records nothing. Returns how many."""
        if job_id is None:
            jobs = list(self._runs)
        else:
            jobs = [job_id] if job_id in self._runs else []
        for job in jobs:
            self._stops[job] = (reason, hold)
            self._runs[job].cancel()
        return len(jobs)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        await self._recover_interrupted()
        async with anyio.create_task_group() as runs:
            task_status.started()
            last_step = -self._cooldown
            while True:
                # At most one step per cooldown: a burst of changes is handled in one step,
                # and nothing can make the scheduler spin; a change after a quiet spell is
                # handled at once.
                await anyio.sleep(max(0.0, last_step + self._cooldown - time.monotonic()))
                last_step = time.monotonic()
                seen, ended = self._state.current.version, self._runs_ended
                try:
                    await self._step(runs)
                except CommandRejected as e:
                    # A person's command (a cancel, a pause) landed while this step decided:
                    # the task moved on, and the next step looks at it as it is now.
                    log.info("task %s: the scheduler's %s", self.task_id, e)
                # Else our own step moved the state on, or a run ended meanwhile (a run's last
                # event, e.g. CompleteJob, comes before it leaves self._runs: the step that
                # event woke may have seen it still running).
                if (self._state.current.version, self._runs_ended) == (seen, ended):
                    await self._state.wait_changed(timeout=self._until_next_retry())

    async def _recover_interrupted(self) -> None:
        """Runs the store says are in flight but nobody runs: the process stopped under them.
        Their workspaces go too (recorded): a workspace lives only as long as its run, and no
        run of this task runs before this scheduler starts one."""
        for job in running_jobs(self._state.current):
            await self._state.execute(FailJob(
                job_id=job.job_id, run_id=job.run_id or "",
                reason="interrupted: ipa stopped while this run was in flight",
                interrupted=True, jitter=self._jitter(),
            ))
        for workspace in list(self._state.current.workspaces.values()):
            if not workspace.removed:
                await self.remove_workspace(
                    workspace.workspace_id, "ipa stopped while its run was in flight")

    def _until_next_retry(self) -> float | None:
        """Seconds until a retry (or the next perpetual round) falls due; ``None``: none."""
        state = self._state.current
        due = [next_retry_at(state)]
        if self._agents.auto_queue:
            due.append(perpetual_due(state, self._agents.perpetual_interval))
        times = [t for t in due if t is not None]
        if not times:
            return None
        return max(0.0, (min(times) - self._clock()).total_seconds())

    async def _step(self, runs: TaskGroup) -> None:
        """Take the steps the task's state calls for. What it prepares (the task started, the
        phase's agents queued) and the jobs it starts go in one append: a new task's first
        job starts in one round trip."""
        state = self._state.current
        decision = decide_gate(state)
        if decision is not None:  # an agent or the policy decides at this gate
            await self._state.execute(decision.command, actor=decision.actor)
            return
        commands: list[Command] = []
        if state.status is Status.pending:
            commands.append(StartTask())
            state = self._after(state, commands[-1])
        if state.budget_paused and self._runs:
            # Only runs still spending: a run whose usage is recorded has stopped its agent
            # (its own usage may be what reached the budget) and is left to finish its steps.
            spending = [job_id for job_id in self._runs
                        if state.jobs[job_id].run_id not in state.usage.by_run]
            for job_id in spending:
                self.interrupt("interrupted: the task reached its budget", job_id)
            if spending:
                return
        if state.status is not Status.running or self.draining:
            if commands:
                await self._state.execute_all(commands)
            return
        if self._agents.auto_queue:
            for queue in self._phase_agent_jobs(state) or self._replan_jobs(state):
                commands.append(queue)
                state = self._after(state, queue)
        workflow = get_workflow(state.workflow)
        open_ended = workflow.open_ended and state.phase == workflow.final
        if not self._runs and not open_ended and _phase_done(state):
            # An open-ended last phase (project's perpetual) never completes: its rounds of
            # work end, and the next is queued (_phase_agent_jobs) or given by a person.
            if workflow.phase(state.phase).gated:
                commands.append(RequestApproval(summary=f"jobs of {state.phase} done"))
            else:
                commands.append(CompletePhase())
            await self._state.execute_all(commands)
            return
        free = self._max_parallel - len(self._runs)
        starts = [(job, str(uuid.uuid4()))
                  for job in ready_jobs(state, self._clock())[: max(0, free)]
                  if job.job_id not in self._runs]
        commands.extend(StartJob(job_id=job.job_id, run_id=run_id) for job, run_id in starts)
        if commands:
            await self._state.execute_all(commands)
        for job, run_id in starts:
            scope = anyio.CancelScope()
            self._runs[job.job_id] = scope
            runs.start_soon(self._run_job, job, run_id, scope)

    def _after(self, state: TaskState, command: Command) -> TaskState:
        """``state`` as ``command`` would leave it (what the step's next decision looks at;
        the append decides it again on the state it finds)."""
        ctx = Context(actor="system", now=self._clock(), correlation_id="scheduler")
        return fold(decide(state, command, ctx, self.task_id), state)

    def _phase_agent_jobs(self, state: TaskState) -> list[QueueJob]:
        """The phase's agent jobs to queue, one per agent type in turn, unless the phase
        already has jobs queued since the task last entered it (or since changes were last
        requested for it). In an open-ended last phase (``perpetual``) a new round is queued
        ``perpetual_interval`` seconds after the last one ended."""
        phase = get_workflow(state.workflow).phase(state.phase)
        # An item's development is done by the agent of its kind; a phase of a project whose
        # backlog has items in it is done by the children (pods/swarm.py), not by its agents.
        names = phase.agents or ((state.kind,) if state.kind and not phase.gated else ())
        workflow = get_workflow(state.workflow)
        cycles = workflow.open_ended and phase.name == workflow.final
        # In the open-ended last phase the agents propose each cycle's items: the next cycle
        # starts once this one's items are done.
        if not names or (_has_items(state, phase.name)
                         and not (cycles and phase_items_done(state, phase.name))):
            return []
        entered = [visit.entered_at for visit in state.phase_history
                   if visit.phase == phase.name]
        requested = [f.at for f in state.feedback if f.phase == phase.name]
        since = max([*entered, *requested])
        if any(job.phase == phase.name and job.queued_at >= since and "replan" not in job.spec
               for job in state.jobs.values()):
            due = perpetual_due(state, self._agents.perpetual_interval)
            if due is None or due > self._clock():
                return []
        jobs: list[QueueJob] = []
        for name in names:
            try:
                agent = self._agents.catalog.get(name)
            except KeyError:
                log.warning("task %s: phase %s names unknown agent type %r", self.task_id,
                            phase.name, name)
                continue
            taken = sum(1 for job_id in [*state.jobs, *(j.job_id for j in jobs)]
                        if job_id.startswith(name))
            jobs.append(QueueJob(
                job_id=f"{name}-{taken + 1}", agent=name,
                depends_on=[jobs[-1].job_id] if jobs else [],
                timeout_seconds=agent.timeout_seconds, max_attempts=agent.max_attempts,
                spec={"runner": "claude"},
            ))
        return jobs

    def _replan_jobs(self, state: TaskState) -> list[QueueJob]:
        """The product analyst's re-plan of an edited PRD (``replan_due``), if one is due: its
        answer, the whole backlog as it should be now, becomes a change for a person."""
        edit = replan_due(state)
        if edit is None:
            return []
        try:
            agent = self._agents.catalog.get(REPLAN_AGENT)
        except KeyError:
            log.warning("task %s: no %r agent type to re-plan its edited PRD", self.task_id,
                        REPLAN_AGENT)
            return []
        number = sum(1 for job_id in state.jobs if job_id.startswith("replan-")) + 1
        while f"replan-{number}" in state.jobs:  # a person's job may have taken the name
            number += 1
        return [QueueJob(
            job_id=f"replan-{number}", agent=REPLAN_AGENT,
            timeout_seconds=agent.timeout_seconds, max_attempts=agent.max_attempts,
            spec={"runner": "claude", "replan": edit},
        )]

    async def _run_job(self, job: Any, run_id: str, scope: anyio.CancelScope) -> None:
        try:
            with scope:
                try:
                    outcome = await self._attempt(job, run_id)
                except anyio.get_cancelled_exc_class():
                    reason, hold = self._stops.get(job.job_id, ("interrupted", False))
                    with anyio.CancelScope(shield=True):
                        if hold:
                            await self._state.execute(HoldJob(job_id=job.job_id, run_id=run_id,
                                                              reason=reason))
                        else:
                            await self._record_outcome(job, run_id, None, reason)
                    raise
                await self._record_outcome(job, run_id, outcome, None)
        finally:
            self._runs.pop(job.job_id, None)
            self._stops.pop(job.job_id, None)
            self._runs_ended += 1
            self._state.wake()

    async def _attempt(self, job: Any, run_id: str) -> RunResult:
        state = self._state.current
        if state.repo is not None and state.branch is None:
            if not await self._make_branch(state.repo, state.base_branch):
                return _failed(f"repository {state.repo} is unavailable")
            state = self._state.current
        base = head_commit(state)
        try:
            workspace_path, workspace_id = await self._workspace(job, run_id, state.repo, base)
        except WorkspaceError as e:  # e.g. a merge job's commit cannot be merged at all
            return _failed(str(e))
        if workspace_path is None:
            return _failed(f"repository {state.repo} is unavailable")
        recorder = RunRecorder(self._store, UUID(run_id), self._clock, self.task_id)
        try:
            request = RunRequest(run_id=run_id, job_id=job.job_id, agent=job.agent,
                                 spec=dict(job.spec), workspace=workspace_path,
                                 watchdog=self._agents.watchdog)
            agent_job = is_agent_job(dict(job.spec))
            try:
                runner_name = "claude" if agent_job else self._runner_for(dict(job.spec)).name
            except RunnerError as e:
                result = _failed(str(e))
                await self._finish(recorder, result)
                return result

            async def started(pid: int) -> None:
                await recorder.record(RunStarted, task_id=str(self.task_id), job_id=job.job_id,
                                      attempt=job.attempts + 1, agent=job.agent,
                                      runner=runner_name, workspace=str(workspace_path),
                                      pid=pid)

            async def commit() -> str | None:
                return None if workspace_id is None else await self._commit(job, workspace_id)

            try:
                with anyio.fail_after(job.timeout_seconds):
                    if agent_job:
                        attempt = AgentAttempt(self._state, self._agents, recorder.record, commit)
                        result = await attempt.run(
                            job, run_id, workspace_path, base or "",
                            on_output=recorder.output, on_started=started,
                        )
                    else:
                        runner = self._runner_for(dict(job.spec))
                        result = await runner.run(request, recorder.output, on_started=started)
            except TimeoutError:
                result = _failed(f"timed out after {job.timeout_seconds:g} s",
                                 job.timeout_seconds)
            except anyio.get_cancelled_exc_class():
                reason = self._stops.get(job.job_id, ("interrupted", False))[0]
                with anyio.CancelScope(shield=True):  # the run's stream says how it ended
                    await self._finish(recorder, _failed(reason))
                raise
            await self._finish(recorder, result)
            if not agent_job:
                await commit()
            return result
        finally:
            if workspace_id is not None:
                with anyio.CancelScope(shield=True):
                    await self.remove_workspace(workspace_id, "the run ended")

    async def _finish(self, recorder: RunRecorder, result: RunResult) -> None:
        await recorder.record(RunFinished, succeeded=result.succeeded,
                              exit_code=result.exit_code, reason=result.reason,
                              duration_seconds=result.duration_seconds, result=result.result)

    async def _workspace(
        self, job: Any, run_id: str, repo: str | None, base: str | None
    ) -> tuple[Path | None, str | None]:
        """The run's working directory: a worktree of the task's repo, or a scratch dir."""
        if repo is None:
            path = self._scratch / str(self.task_id) / run_id
            await anyio.Path(path).mkdir(parents=True, exist_ok=True)
            return path, None
        workspace_id = f"{job.job_id}-{run_id[:8]}"
        try:
            workspace = await self._workspaces.create(
                task_id=self.task_id, workspace_id=workspace_id, repo=repo, base=base
            )
        except RepositoryUnavailable as e:
            await self._state.execute(RecordRepositoryUnavailable(repo=repo, reason=str(e)))
            return None, None
        merge = job.spec.get("merge")
        if isinstance(merge, dict) and isinstance(merge.get("commit"), str):
            try:
                await workspace.merge(merge["commit"])  # a merge job: the conflict is its work
            except WorkspaceError:
                await self._workspaces.remove(self.task_id, workspace_id)
                raise
        info = workspace.info
        await self._state.execute(RecordWorkspace(
            workspace_id=workspace_id, job_id=job.job_id, path=str(info.path),
            branch=info.branch, repo=info.repo, base_commit=info.base_commit,
        ))
        return info.path, workspace_id

    async def ensure_branch(self) -> bool:
        """Make the task's branch if it has a repository and no branch yet; False when the
        repository cannot be used (recorded)."""
        state = self._state.current
        if state.repo is None or state.branch is not None:
            return True
        return await self._make_branch(state.repo, state.base_branch)

    async def _make_branch(self, repo: str, base: str | None) -> bool:
        """Make the task's branch at its base (recorded); False when the repository or the
        base branch cannot be found (recorded as the repository's problem)."""
        try:
            branch = await self._workspaces.make_branch(task_id=self.task_id, repo=repo,
                                                        base=base)
        except (RepositoryUnavailable, UnknownRevision) as e:
            await self._state.execute(RecordRepositoryUnavailable(repo=repo, reason=str(e)))
            return False
        await self._state.execute(RecordBranch(branch=branch.name, base=branch.base,
                                               base_commit=branch.base_commit))
        return True

    async def _complete(self, job: Any, run_id: str, result: RunResult) -> None:
        """Record a succeeded run: its commit lands on the task's branch first, and the job's
        success and the branch's new head are one record. Work that conflicts with what landed
        meanwhile fails the attempt instead (its retry starts from the branch as it is); a
        branch that cannot be moved fails it too, naming why."""
        async with self.landing:
            state = self._state.current
            found = job_commit(state, job.job_id)
            landed = None
            if found is not None and state.branch is not None:
                workspace, commit = found
                head = state.branch.head_commit or state.branch.base_commit
                try:
                    landed = await self._workspaces.land(
                        task_id=self.task_id, repo=workspace.repo, commit=commit,
                        start=workspace.base_commit, head=head)
                except BranchConflict as e:
                    await self._state.execute(RecordBranchConflict(
                        job_id=job.job_id, run_id=run_id, head=head, files=list(e.files),
                        jitter=self._jitter()))
                    return
                except WorkspaceError as e:
                    await self._state.execute(FailJob(
                        job_id=job.job_id, run_id=run_id, jitter=self._jitter(),
                        reason=f"its commit could not land on {state.branch.name}: {e}"))
                    return
            await self._state.execute(CompleteJob(job_id=job.job_id, run_id=run_id,
                                                  result=dict(result.result), landed=landed))

    async def _commit(self, job: Any, workspace_id: str) -> str | None:
        workspace = self._workspaces.open(self.task_id, workspace_id)
        message = (f"ipa: task {self.task_id} job {job.job_id} "
                   f"(task version {self._state.current.version})")
        commit = await workspace.commit(message)
        if commit is not None:
            await self._state.execute(RecordCommit(
                workspace_id=workspace_id, commit=commit.sha, message=message,
                files=list(commit.files),
            ))
            return commit.sha
        return None

    async def remove_workspace(
        self, workspace_id: str, reason: str, *, keep_branch: bool = True
    ) -> None:
        """Remove a workspace's worktree and run branch (recorded). The run's commits stay
        reachable unless ``keep_branch`` is false (a cancelled task)."""
        try:
            await self._workspaces.remove(self.task_id, workspace_id, keep_commits=keep_branch)
        except WorkspaceError as e:
            log.warning("task %s: workspace %s not removed: %s", self.task_id, workspace_id, e)
            return
        await self._state.execute(RemoveWorkspace(workspace_id=workspace_id, reason=reason))

    async def _record_outcome(
        self, job: Any, run_id: str, result: RunResult | None, interrupted: str | None
    ) -> None:
        if result is not None and result.result.get("deferred"):
            return  # a rate limit or a question: recorded, the job waits without a failure
        if result is not None and result.succeeded:
            await self._complete(job, run_id, result)
            return
        reason = interrupted or (result.reason if result else None) or "failed"
        await self._state.execute(FailJob(
            job_id=job.job_id, run_id=run_id, reason=reason,
            interrupted=interrupted is not None, jitter=self._jitter(),
        ))


class RunRecorder:
    """Appends a run's events to the run's own stream, in order."""

    def __init__(self, store: EventStore, run_id: UUID, clock: Clock,
                 task_id: UUID | None = None) -> None:
        self._store = store
        self._run_id = run_id
        self._task_id = task_id  # whose lease fences the run's appends (on a node)
        self._clock = clock
        self._version = 0
        self._seq = 0
        self._lock = anyio.Lock()

    async def record(self, event_type: type, **fields: Any) -> None:
        async with self._lock:
            event = event_type(
                originator_id=self._run_id, originator_version=self._version + 1,
                timestamp=self._clock(), actor=f"agent-run:{self._run_id}",
                correlation_id=str(self._run_id), causation_id=None, **fields,
            )
            # Shielded: a run cut short while its event is being appended must still know
            # the event was recorded (the group commit records it anyway), or its last
            # event (RunFinished) would be appended at a version that is taken.
            with anyio.CancelScope(shield=True):
                await self._store.append(self._run_id, [event], self._version,
                                         fence=self._task_id)
                self._version += 1

    async def output(self, lines: list[OutputLine]) -> None:
        """Record ``lines``, numbered in the order they reach the run (across runners)."""
        if not lines:
            return
        recorded = []
        for line in lines:
            self._seq += 1
            entry = {"seq": self._seq, "stream": line.stream, "text": line.text}
            if line.kind is not None:
                entry["kind"] = line.kind
            recorded.append(entry)
        await self.record(RunOutput, lines=recorded)


def _has_items(state: Any, phase: str) -> bool:
    """True when the task's approved backlog has items (not dropped) in ``phase``."""
    backlog = state.backlog
    return backlog is not None and backlog.approved and any(
        item.phase == phase for item in backlog.live())


def _phase_done(state: Any) -> bool:
    """True when the current phase's work is done: its backlog items, when it has some (and
    any job a person queued in it), else its jobs (``phase_jobs_done``)."""
    if not _has_items(state, state.phase):
        return phase_jobs_done(state)
    return phase_items_done(state, state.phase) and all(
        job.status.finished or job.status is JobStatus.cancelled
        for job in state.jobs.values() if job.phase == state.phase)


def _failed(reason: str, duration_seconds: float = 0.0) -> RunResult:
    """The result of a run that failed before or around its process."""
    return RunResult(exit_code=None, succeeded=False, duration_seconds=duration_seconds,
                     result={}, reason=reason)
