"""A fork's branch (issue #17): made at the commit its source's branch had, in the repository
itself or in a node's cache, which fetches the commit when it lacks it."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from ipa.pods import WorkspaceError, WorkspaceManager
from ipa.pods.workspace import UnknownRevision, task_branch

from .test_workspace import git

pytestmark = pytest.mark.anyio


@pytest.fixture(autouse=True)
def hermetic_git(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def work(tmp_path: Path) -> tuple[Path, str, str]:
    """A local repository with two commits on main: (path, first, second)."""
    path = tmp_path / "work"
    git(tmp_path, "init", "--quiet", "-b", "main", str(path))
    for n in ("1", "2"):
        (path / "a.txt").write_text(n)
        git(path, "add", "--all")
        git(path, "commit", "--quiet", "-m", f"commit {n}")
    return path, git(path, "rev-parse", "main~1"), git(path, "rev-parse", "main")


async def test_a_fork_branch_is_made_at_the_commit_in_a_local_repository(
    manager: WorkspaceManager, work: tuple[Path, str, str]
) -> None:
    repo, first, _ = work
    task_id = uuid.uuid4()

    name = await manager.fork_branch(task_id=task_id, repo=str(repo), commit=first)

    assert name == task_branch(task_id)
    assert git(repo, "rev-parse", f"refs/heads/{name}") == first
    assert git(repo, "show", f"{name}:a.txt") == "1"
    with pytest.raises(WorkspaceError, match=f"cannot make branch {name}"):
        await manager.fork_branch(task_id=task_id, repo=str(repo), commit=first)
    with pytest.raises(UnknownRevision):
        await manager.fork_branch(task_id=uuid.uuid4(), repo=str(repo), commit="f" * 40)


async def test_a_node_whose_cache_lacks_the_commit_fetches_it_and_shares_the_branch(
    manager: WorkspaceManager, work: tuple[Path, str, str], tmp_path: Path
) -> None:
    repo, _, _ = work
    remote = tmp_path / "remote.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(repo), str(remote))
    # Another node's landing: a commit only on its task's shared ref, on no branch.
    (repo / "b.txt").write_text("b")
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "landed elsewhere")
    landed = git(repo, "rev-parse", "HEAD")
    git(repo, "push", "--quiet", str(remote), f"{landed}:refs/ipa/0000beef")
    url = f"file://{remote}"
    task_id = uuid.uuid4()

    name = await manager.fork_branch(task_id=task_id, repo=url, commit=landed)

    cache = await manager.git_dir(url)
    assert git(cache, "rev-parse", f"refs/heads/{name}") == landed
    assert git(remote, "rev-parse", f"refs/ipa/{task_id.hex[:8]}") == landed
