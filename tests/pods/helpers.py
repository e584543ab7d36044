"""Helpers for pod tests."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio

from ipa.domain import TaskState


def python(code: str) -> dict:
    """A job spec running ``code`` in this Python."""
    return {"command": [sys.executable, "-c", code]}


async def wait_for(pod, predicate: Callable[[TaskState], bool], timeout: float = 20) -> TaskState:
    """The pod's state once ``predicate`` holds (fails after ``timeout`` seconds)."""
    with anyio.fail_after(timeout):
        async for state in pod.state.changes():
            if predicate(state):
                return state
    raise AssertionError("unreachable")


def job(state: TaskState, job_id: str):
    """The job ``job_id`` of the task."""
    return state.jobs[job_id]


def git(repo: Path, *args: str) -> str:
    """``git -C repo ARGS``'s output (raises if it fails)."""
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


def registered(repo: Path) -> set[str]:
    """The worktrees git has registered in ``repo`` (its main one left out)."""
    lines = git(repo, "worktree", "list", "--porcelain").splitlines()
    return {line.removeprefix("worktree ") for line in lines
            if line.startswith("worktree ")} - {str(repo)}


def repo_with_users_worktrees(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A repository with two worktrees of the user's own: ``mine`` (live) and ``gone`` (its
    directory deleted: a stale record ``git worktree prune`` would drop). (repo, mine, gone)."""
    repo = tmp_path / "repo"
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty",
        "-m", "init")
    mine, gone = tmp_path / "mine", tmp_path / "gone"
    git(repo, "worktree", "add", "-q", "-b", "mine", str(mine))
    git(repo, "worktree", "add", "-q", "-b", "gone", str(gone))
    subprocess.run(["rm", "-rf", str(gone)], check=True)
    return repo, mine, gone
