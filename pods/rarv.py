"""The RARV cycle of one attempt of an agent job: Reason, Act, Reflect, Verify.

- **Reason**: build the run's context from the task's state and the memories recalled for the
  job (:mod:`ipa.projections.memory`) within the agent type's budget
  (:mod:`ipa.pods.context`); record ``ContextPrepared`` (task stream) and the prompt
  (``RunPrompted``, the run's stream).
- **Act**: run the agent (Claude Code by default) in the workspace, its messages streamed to the
  run's stream; record its usage and cost (``UsageRecorded``) and commit its changes.
- **Reflect**: record what was done and learned (``ReflectionRecorded``) and the artifact its
  agent type makes (``ArtifactRecorded``: the spec, the plan, the review ...).
- **Verify**: run the agent type's checks in the workspace (``VerificationPassed`` /
  ``VerificationFailed``). A failure is a learning in the continuity log and fails the attempt,
  so the job's retry policy applies and the next attempt's *Reason* sees it; after the last
  attempt the job is dead-lettered.

Two endings are not failures: a **rate limit** (``JobRateLimited``: the job waits with
exponential backoff, its attempt kept) and a **question** to a person (``QuestionAsked``: the
job waits for the answer). Both return a result marked ``deferred``, which the scheduler does not
report as the job's outcome.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ipa.domain import (
    AskQuestion,
    BacklogInvalid,
    Job,
    ProposeBacklog,
    ProposeBacklogChange,
    ProposeCycle,
    RecordArtifact,
    RecordContext,
    RecordRateLimit,
    RecordReflection,
    RecordUsage,
    RecordVerification,
    backlog_phases,
    get_workflow,
    parse_backlog,
    plan_phases,
)
from ipa.domain.backlog_contract import NO_ITEMS
from ipa.domain.runs import RunPrompted
from ipa.projections import Memory

from .agent_types import (
    BACKLOG,
    PROMPTS,
    REPOSITORY,
    AgentCatalog,
    AgentConfigError,
    AgentType,
    repository_checks,
)
from .claude import ClaudeRunner
from .context import PromptError, Remembered, prepare, question_in
from .runners import AgentRunner, OnOutput, OnStarted, RunnerError, RunRequest, RunResult
from .state import PodState
from .verification import run_checks

SUMMARY_CHARS = 2000
REPLAN_PROMPT = PROMPTS / "replan.md"
"""The template of a re-plan job (``spec["replan"]``): the whole backlog again, for an edited
PRD, whatever template the agent type plans a first backlog with."""
_LEARNED = re.compile(r"^\s*LEARNED:\s*(.+)$", re.M)


@dataclass(frozen=True)
class AgentSettings:
    """How a process runs its agents (shared by its pods)."""

    catalog: AgentCatalog = field(default_factory=AgentCatalog)
    runner: Callable[[], AgentRunner] = ClaudeRunner
    """Makes the runner of agent jobs (Claude Code; tests may give it another CLI path)."""
    auto_queue: bool = False
    """Queue each phase's agent jobs when the task enters it (``ipa serve`` turns it on)."""
    rate_limit_base: float = 60.0
    rate_limit_cap: float = 3600.0
    verify_timeout: float = 600.0
    perpetual_interval: float = 3600.0
    """Seconds between the end of a round of an open-ended last phase (a project's
    ``perpetual``: the maintainer) and the next round (``ipa serve``: ``IPA_PERPETUAL_INTERVAL``).
    Only with ``auto_queue``; without it a person queues each round."""
    memory: Memory | None = None
    """Where *Reason* recalls memories from (``projections/memory.py``); ``None``: runs get
    none (tests, one-shot commands)."""
    watchdog: tuple[str, ...] = ()
    """On a node: the prefix that stops an agent once its node stops holding its leases
    (:mod:`.watchdog`; the supervisor sets it)."""


def is_replan(spec: dict[str, Any]) -> bool:
    """A re-plan job of an edited PRD: ``spec["replan"]`` names the edit it answers (see
    ``Scheduler._queue_replan``)."""
    return spec.get("replan") is not None


def is_agent_job(spec: dict[str, Any]) -> bool:
    """A job run through the RARV cycle: its spec names the agent runner
    (``{"runner": "claude", ...}``); other jobs run their runner (a command) as they are."""
    return spec.get("runner") == ClaudeRunner.name


@dataclass
class AgentAttempt:
    """One attempt of an agent job (see the module docstring)."""

    state: PodState
    settings: AgentSettings
    record_run: Callable[..., Awaitable[None]]
    """Appends an event to the run's stream: ``record_run(EventType, **fields)``."""
    commit: Callable[[], Awaitable[str | None]]
    """Commits the workspace's changes; returns the commit's sha (``None``: nothing changed)."""

    async def run(
        self, job: Job, run_id: str, workspace: Path, base_commit: str, *,
        on_output: OnOutput, on_started: OnStarted,
    ) -> RunResult:
        try:
            agent = self.settings.catalog.get(job.agent)
        except KeyError as e:
            return _failed(str(e.args[0]))
        # Reason
        state = self.state.current
        current = state.jobs[job.job_id]
        memories, memory_problem = [], None
        if self.settings.memory is not None:
            recalled = await self.settings.memory.recall(state, current)
            memories = [Remembered(m["id"], m["kind"], m["scope"], m["text"])
                        for m in recalled.memories]
            memory_problem = recalled.problem
        try:
            template = REPLAN_PROMPT if is_replan(current.spec) else agent.prompt_path()
            prepared = prepare(state, current, template=template, agent=agent.name,
                               budget_tokens=agent.context_tokens, base_commit=base_commit,
                               role=agent.role, kinds=self.settings.catalog.kinds_markdown(),
                               phases=", ".join(backlog_phases(state)), memories=memories)
        except PromptError as e:
            return _failed(str(e))
        await self.state.execute(RecordContext(
            job_id=job.job_id, run_id=run_id, sections=prepared.sections,
            dropped=prepared.dropped, tokens=prepared.tokens,
            budget_tokens=prepared.budget_tokens, memories=prepared.memories,
            memory_problem=memory_problem,
        ))
        await self.record_run(RunPrompted, agent=agent.name, model=agent.model or "",
                              prompt=prepared.prompt, memories=prepared.memories)
        # Act
        request = RunRequest(run_id=run_id, job_id=job.job_id, agent=agent.name,
                             spec=_spec(agent, job.spec, prepared.prompt), workspace=workspace,
                             env={n: os.environ[n] for n in agent.env if n in os.environ},
                             watchdog=self.settings.watchdog)
        try:
            runner = self.settings.runner()
            runner.check(request.spec)
        except RunnerError as e:
            return _failed(str(e))
        result = await runner.run(request, on_output, on_started=on_started)
        await self._usage(job, run_id, agent, result)
        commit = await self.commit()
        if result.result.get("error") == "rate_limit":
            await self.state.execute(RecordRateLimit(
                job_id=job.job_id, run_id=run_id, reason=result.reason or "rate limited",
                base_seconds=self.settings.rate_limit_base,
                cap_seconds=self.settings.rate_limit_cap,
                resets_at=result.result.get("resets_at"),
            ))
            return _deferred(result)
        if not result.succeeded:
            return result
        answer = str(result.result.get("text", ""))
        question = question_in(answer)
        if question is not None:
            await self.state.execute(AskQuestion(job_id=job.job_id, run_id=run_id,
                                                 question_id=uuid.uuid4().hex[:12],
                                                 question=question))
            return _deferred(result)
        # Reflect
        await self.state.execute(RecordReflection(
            job_id=job.job_id, run_id=run_id, summary=_summary(answer, commit),
            learnings=[m.strip() for m in _LEARNED.findall(answer)],
        ))
        if agent.artifact:
            await self.state.execute(RecordArtifact(job_id=job.job_id, artifact=agent.artifact,
                                                    content=answer))
        # Verify
        if agent.artifact == BACKLOG:
            problem = await self._propose_backlog(job, run_id, answer)
            if problem is not None:
                return RunResult(None, False, problem, result.duration_seconds, {"commit": commit})
        try:
            commands = self._checks(agent, job, workspace)
        except AgentConfigError as e:
            return _failed(f"verification: {e}")
        checks = await run_checks(commands, request, on_output,
                                  timeout=self.settings.verify_timeout)
        await self.state.execute(RecordVerification(job_id=job.job_id, run_id=run_id,
                                                    checks=checks))
        failed = [check for check in checks if not check["passed"]]
        if failed:
            status = failed[0]["exit_code"]
            how = "timed out" if status is None else f"exit status {status}"
            return RunResult(None, False, f"verification failed: `{failed[0]['command']}` ({how})",
                             result.duration_seconds, {"commit": commit})
        return RunResult(0, True, None, result.duration_seconds,
                         {"summary": _summary(answer, commit), "commit": commit,
                          "artifact": agent.artifact})

    async def _propose_backlog(self, job: Job, run_id: str, answer: str) -> str | None:
        """Read the backlog in the answer and propose it; an invalid one is a failed check,
        whose output (every problem, by item) the next attempt learns from. ``None``: proposed.
        """
        catalog = self.settings.catalog
        state = self.state.current
        workflow = get_workflow(state.workflow)
        replan = is_replan(job.spec)
        cycle = workflow.open_ended and state.phase == workflow.final and not replan
        kinds = [t.name for t in catalog.kinds()]
        try:
            if replan:
                # The whole backlog as it should be now: finished items stay in phases that
                # are over; the domain compares it with the backlog and checks the change.
                items = parse_backlog(answer, kinds=kinds, phases=plan_phases(state))
                await self.state.execute(ProposeBacklogChange(items=items, job_id=job.job_id,
                                                              run_id=run_id))
                return None
            items = parse_backlog(answer, kinds=kinds, phases=backlog_phases(state))
        except BacklogInvalid as e:
            if cycle and list(e.problems) == [NO_ITEMS]:
                return None  # nothing worth doing this cycle

            # The problems only: the kinds and phases are in the prompt already, and a learning
            # keeps the end of a check's output.
            shown = [f"- {problem}" for problem in e.problems[:20]]
            output = "\n".join([f"the backlog is not valid ({len(e.problems)} problems):", *shown])
            await self.state.execute(RecordVerification(job_id=job.job_id, run_id=run_id, checks=[
                {"command": "the backlog contract", "exit_code": 1, "passed": False,
                 "output": output, "duration_seconds": 0.0}]))
            return "verification failed: the backlog in the answer is not valid"
        if cycle:
            # The cycle's ids may repeat an earlier cycle's: each cycle gets its own prefix.
            number = (state.backlog.cycles if state.backlog is not None else 0) + 1
            items = tuple(replace(item, id=f"c{number}-{item.id}",
                                  depends_on=tuple(f"c{number}-{d}" for d in item.depends_on))
                          for item in items)
            await self.state.execute(ProposeCycle(items=items, job_id=job.job_id, run_id=run_id))
            return None
        await self.state.execute(ProposeBacklog(items=items, job_id=job.job_id, run_id=run_id))
        return None

    def _checks(self, agent: AgentType, job: Job, workspace: Path) -> tuple[str, ...]:
        verify = job.spec.get("verify", agent.verify)
        if verify == REPOSITORY:
            return repository_checks(workspace)
        if not isinstance(verify, list | tuple) or not all(isinstance(v, str) for v in verify):
            raise AgentConfigError(f"'verify' must be a list of commands, got {verify!r}")
        return tuple(verify)

    async def _usage(self, job: Job, run_id: str, agent: AgentType, result: RunResult) -> None:
        usage = result.result.get("usage")
        if not isinstance(usage, dict):
            return
        await self.state.execute(RecordUsage(
            job_id=job.job_id, run_id=run_id, agent=agent.name,
            model=str(result.result.get("model") or agent.model or ""),
            cost_usd=float(result.result.get("cost_usd") or 0.0), **usage,
        ))


def _spec(agent: AgentType, spec: dict[str, Any], prompt: str) -> dict[str, Any]:
    """The runner's spec: the agent type's options, the job's overrides, the prompt."""
    options = {
        "model": agent.model,
        "allowed_tools": list(agent.allowed_tools),
        "permission_mode": agent.permission_mode,
        "max_turns": agent.max_turns,
        "system_prompt": agent.system_prompt,
    }
    overrides = {k: v for k, v in spec.items() if k in options}
    return {**options, **overrides, "prompt": prompt}


def _summary(answer: str, commit: str | None) -> str:
    text = answer.strip()
    if len(text) > SUMMARY_CHARS:
        text = text[:SUMMARY_CHARS] + " [...]"
    return f"{text}\n\n(commit {commit[:12]})" if commit else text


def _failed(reason: str) -> RunResult:
    return RunResult(None, False, reason, 0.0, {})


def _deferred(result: RunResult) -> RunResult:
    return RunResult(result.exit_code, False, result.reason, result.duration_seconds,
                     {**result.result, "deferred": True})
