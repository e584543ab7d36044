"""Pods on the real store, with real subprocesses and real git."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import anyio
import pytest

from ipa.domain import Context, CreateTask, decide
from ipa.eventstore import EventStore
from ipa.pods import CommandRunner, PodEnvironment, RestartPolicy, WorkspaceManager
from ipa.supervisor import Supervisor

from .helpers import git


@pytest.fixture
def pod_env(store: EventStore, tmp_path: Path) -> PodEnvironment:
    return PodEnvironment(
        store=store,
        workspaces=WorkspaceManager(tmp_path / "workspaces"),
        scratch=tmp_path / "scratch",
        runner_for=lambda spec: CommandRunner(),
        policy=RestartPolicy(max_crashes=3, crash_window=60.0, backoff_initial=0.01),
        max_parallel=4,
    )


@pytest.fixture
async def supervisor(pod_env: PodEnvironment) -> AsyncIterator[Supervisor]:
    supervisor = Supervisor(pod_env)
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        yield supervisor
        tg.cancel_scope.cancel()


@pytest.fixture
def create_task(store: EventStore) -> Callable:
    async def create(title: str = "t", repo: str | None = None, workflow: str = "task") -> UUID:
        task_id = uuid.uuid4()
        ctx = Context(actor="user:test", now=datetime.now(UTC), correlation_id="test")
        command = CreateTask(title=title, description="d", repo=repo, workflow=workflow)
        await store.append(task_id, decide(None, command, ctx, task_id), 0)
        return task_id

    return create


@pytest.fixture
def manager(tmp_path: Path) -> WorkspaceManager:
    """A workspace manager of its own under the test's data directory."""
    return WorkspaceManager(tmp_path / "data" / "workspaces")


@pytest.fixture
def task_id() -> UUID:
    return uuid.uuid4()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with one commit on ``main`` (a module may define its own)."""
    path = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    (path / "README").write_text("shop\n")
    git(path, "add", "README")
    git(path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    return path
