"""Pods whose sync engine talks to a local GitHub + JIRA (tests/sync/services.py) and pushes
to a local bare repository. Short windows and intervals instead of sleeps."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest

from ipa.eventstore import EventStore
from ipa.pods import CommandRunner, PodEnvironment, RestartPolicy, SyncSettings, WorkspaceManager
from ipa.supervisor import Supervisor

from ..pods.conftest import create_task  # noqa: F401  (a fixture)
from .services import TOKEN, Services, running_services

IDENTITY = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@t"}


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), *args], env={**os.environ, **IDENTITY},
                          capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture(autouse=True)
def hermetic_git(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    with running_services() as services:
        services.repos["o/n"] = {"default_branch": "main"}
        services.issues["KEY-1"] = {"status": "To Do",
                                    "flow": ["To Do", "In Progress", "In Review", "Done"]}
        yield services


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The task's repository: a local repository with one commit on main."""
    path = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    (path / "README").write_text("hello\n")
    git(path, "add", "--all")
    git(path, "commit", "-q", "-m", "first")
    return path


@pytest.fixture
def remote(tmp_path: Path, repo: Path, services: Services) -> Path:
    """The remote the task's branch is pushed to: a bare clone of the repository."""
    path = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(path)], check=True)
    services.git_remote = str(path)
    return path


@pytest.fixture
def sync_settings(services: Services) -> SyncSettings:
    return SyncSettings(github_token=TOKEN, github_url=services.url, jira_url=services.url,
                        jira_token=TOKEN, batch_window=0.05, poll_interval=0.1,
                        request_timeout=1.0, retry_base=0.05, retry_cap=0.2, max_attempts=4,
                        alert_after=3)


@pytest.fixture
def pod_env(store: EventStore, tmp_path: Path, sync_settings: SyncSettings) -> PodEnvironment:
    return PodEnvironment(
        store=store,
        workspaces=WorkspaceManager(tmp_path / "workspaces"),
        scratch=tmp_path / "scratch",
        runner_for=lambda spec: CommandRunner(),
        policy=RestartPolicy(max_crashes=3, crash_window=60.0, backoff_initial=0.01),
        sync=sync_settings,
    )


@pytest.fixture
async def supervisor(pod_env: PodEnvironment) -> AsyncIterator[Supervisor]:
    supervisor = Supervisor(pod_env)
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        yield supervisor
        tg.cancel_scope.cancel()


@pytest.fixture
def with_settings(pod_env: PodEnvironment) -> Callable[..., PodEnvironment]:
    def change(**fields) -> PodEnvironment:
        return replace(pod_env, sync=replace(pod_env.sync, **fields))
    return change
