"""Memory in the RARV cycle: what one task learned reaches a later task's prompt on the same
repository; a forgotten memory does not; each run records the memories it was given. On the
real store, pgvector, git and a fake Claude Code CLI."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from ipa.domain import ContextPrepared, QueueJob
from ipa.eventstore import EventStore
from ipa.pods import AgentSettings, ClaudeRunner, PodEnvironment
from ipa.projections import Memory, MemorySettings
from ipa.projections.transcript import transcript
from ipa.supervisor import Supervisor

from ..fakes.claude import FakeClaude
from .helpers import wait_for
from .test_agents import AGENT_JOB, git_repo

pytestmark = pytest.mark.anyio

CHECK = "grep -q fixed feature.py"


@pytest.fixture
async def memory(store: EventStore) -> AsyncIterator[Memory]:
    memory = Memory(store, store.memory_table())
    await memory.open()
    async with anyio.create_task_group() as tg:
        await tg.start(memory.run)
        yield memory
        tg.cancel_scope.cancel()
    await memory.close()


@pytest.fixture
async def supervisor(pod_env: PodEnvironment, memory: Memory, tmp_path: Path,
                     ) -> AsyncIterator[Supervisor]:
    fake = FakeClaude(tmp_path / "fake")
    settings = AgentSettings(runner=lambda: ClaudeRunner(cli_path=str(fake.cli)),
                             verify_timeout=5.0, memory=memory)
    supervisor = Supervisor(replace(pod_env, agents=settings))
    supervisor.fake = fake  # type: ignore[attr-defined]
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        yield supervisor
        tg.cancel_scope.cancel()


async def developer_job(supervisor: Supervisor, create_task: Callable, repo: Path, title: str,
                        memory: Memory) -> tuple:
    task_id = await create_task(title, repo=str(repo))
    pod = await supervisor.start(task_id)
    await pod.execute(QueueJob(job_id="dev", agent="developer",
                               spec={**AGENT_JOB, "verify": [CHECK]}, max_attempts=3))
    state = await wait_for(pod, lambda s: s.jobs["dev"].status.value in ("succeeded",
                                                                          "dead_lettered"),
                           timeout=60)
    with anyio.fail_after(20):
        await memory.wait_for(await supervisor.env.store.head_position())
    return task_id, state


async def test_a_fix_learned_in_one_task_reaches_the_next_task_on_the_repository(
    supervisor: Supervisor, create_task, memory: Memory, store: EventStore, tmp_path: Path,
) -> None:
    repo = git_repo(tmp_path / "repo", {"README": "x\n"})
    fake: FakeClaude = supervisor.fake  # type: ignore[attr-defined]
    fake.script({"developer": [
        {"write": {"feature.py": "broken\n"}, "text": "Wrote feature.py."},
        {"write": {"feature.py": "fixed\n"},
         "text": "Fixed it.\nLEARNED: feature.py must say fixed for the grep check"},
        {"write": {"other.py": "fixed\n", "feature.py": "fixed\n"}, "text": "Done."},
        {"write": {"third.py": "fixed\n", "feature.py": "fixed\n"}, "text": "Done again."},
    ]})

    first, state = await developer_job(supervisor, create_task, repo, "Add the feature",
                                       memory)
    assert state.jobs["dev"].attempts == 2
    second, _ = await developer_job(supervisor, create_task, repo, "Add the feature flag",
                                    memory)

    prompts = [run["prompt"] for run in fake.runs()]
    assert "## Memory" not in prompts[0]
    later = prompts[2]
    assert "## Memory" in later
    assert f"`{CHECK}` failed (exit status 1)" in later  # the failure, with its fix:
    assert "feature.py must say fixed for the grep check" in later
    assert "These checks pass on this work: `grep -q fixed feature.py`" in later

    # The run records which memories it was given, and its transcript names them.
    [context] = [r.event for r in await store.read(second) if isinstance(r.event,
                                                                           ContextPrepared)]
    assert context.memories and context.memory_problem is None
    given = await memory.rows(ids=context.memories)
    assert {row["id"] for row in given} == set(context.memories)
    assert all(row["uses"] >= 1 for row in given)
    shown = "\n".join(transcript(await store.read(context.run_id)))
    assert f"memories in the prompt: {', '.join(context.memories)}" in shown

    # Forgotten, a memory is in no later prompt.
    [fix] = [row for row in given if "What fixed it" in row["text"]]
    await memory.forget(fix["id"], actor="user:ann")
    await developer_job(supervisor, create_task, repo, "Add the feature again", memory)
    last = fake.runs()[-1]["prompt"]
    assert "## Memory" in last and "What fixed it" not in last


async def test_without_memory_the_agents_run_and_each_run_says_why(
    pod_env: PodEnvironment, store: EventStore, create_task, tmp_path: Path,
) -> None:
    memory = Memory(store, store.memory_table(),
                    MemorySettings(embedder="python:no_such_module:embedder"))
    await memory.open()
    assert "no_such_module" in (memory.problem or "")
    fake = FakeClaude(tmp_path / "fake")
    fake.script({"developer": [{"write": {"feature.py": "fixed\n"}, "text": "Done."}]})
    settings = AgentSettings(runner=lambda: ClaudeRunner(cli_path=str(fake.cli)),
                             verify_timeout=5.0, memory=memory)
    supervisor = Supervisor(replace(pod_env, agents=settings))
    repo = git_repo(tmp_path / "repo", {"README": "x\n"})
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        task_id, state = await developer_job(supervisor, create_task, repo, "Add it", memory)
        tg.cancel_scope.cancel()
    await memory.close()

    assert state.jobs["dev"].status.value == "succeeded"
    [context] = [r.event for r in await store.read(task_id) if isinstance(r.event,
                                                                           ContextPrepared)]
    assert context.memories == [] and "no_such_module" in (context.memory_problem or "")
