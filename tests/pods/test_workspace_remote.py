"""Task branches that survive a node: for a remote repository (a URL, or a bare repository
path) the task branch is pushed as ``refs/ipa/<task8>``, and a node whose cache lacks it
fetches it from there. Two managers with their own roots stand for two nodes' data dirs."""

from __future__ import annotations

import logging
import subprocess
import uuid
from pathlib import Path
from uuid import UUID

import pytest

from ipa.pods.workspace import WorkspaceManager, task_branch

from .test_workspace import git

pytestmark = pytest.mark.anyio

def shared(remote: Path, task_id: UUID) -> str | None:
    """Where the remote's ``refs/ipa/<task8>`` is, or None."""
    found = subprocess.run(
        ["git", "-C", str(remote), "rev-parse", "--verify", "--quiet",
         f"refs/ipa/{task_id.hex[:8]}"], capture_output=True, text=True)  # fmt: skip
    return found.stdout.strip() if found.returncode == 0 else None


@pytest.fixture(autouse=True)
def hermetic_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the machine's nor the user's git config reaches these tests."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A local, non-bare repository with one commit on main."""
    path = tmp_path / "work"
    git(tmp_path, "init", "--quiet", "-b", "main", str(path))
    (path / "README.md").write_text("hello\n")
    git(path, "add", "--all")
    git(path, "commit", "--quiet", "-m", "first")
    return path


@pytest.fixture
def remote(tmp_path: Path, work: Path) -> Path:
    """A bare repository standing in for a remote. The tests reach it by a file:// URL: a
    clone from a plain path would hard-link all its objects, hiding what a node lacks."""
    path = tmp_path / "remote.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(work), str(path))
    return path


@pytest.fixture
def node_b(tmp_path: Path) -> WorkspaceManager:
    """A second node: its own data dir, so its own cache (``manager`` is the first node)."""
    return WorkspaceManager(tmp_path / "node-b" / "workspaces")


async def run_commit(node: WorkspaceManager, task_id: UUID, repo: str, workspace_id: str,
                     base: str, files: dict[str, bytes]) -> tuple[str, str]:
    """A run from ``base`` that writes ``files``, commits and goes (commits kept); its start
    and its commit."""
    workspace = await node.create(task_id=task_id, workspace_id=workspace_id, repo=repo,
                                  base=base)
    for name, data in files.items():
        await workspace.write(name, data)
    commit = await workspace.commit(f"job {workspace_id}")
    assert commit is not None
    await node.remove(task_id, workspace_id, keep_commits=True)
    return workspace.info.base_commit, commit.sha


def refuse_pushes(remote: Path) -> None:
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'read-only' >&2\nexit 1\n")
    hook.chmod(0o755)


async def test_a_node_with_a_fresh_cache_continues_from_the_pushed_task_branch(
    manager: WorkspaceManager, node_b: WorkspaceManager, remote: Path, task_id: UUID
) -> None:
    repo = remote.as_uri()
    branch = await manager.make_branch(task_id=task_id, repo=repo, base=None)
    assert shared(remote, task_id) == branch.base_commit
    start, first = await run_commit(manager, task_id, repo, "a-1", branch.base_commit,
                                    {"a.txt": b"a\n"})
    head = await manager.land(task_id=task_id, repo=repo, commit=first, start=start,
                              head=branch.base_commit)
    assert shared(remote, task_id) == head == first

    # The task moves to node B, whose next run starts from the recorded head (a commit its
    # cache has never seen) and lands on it.
    workspace = await node_b.create(task_id=task_id, workspace_id="b-1", repo=repo, base=head)
    assert workspace.info.base_commit == head
    assert await workspace.read("a.txt") == b"a\n"
    await workspace.write("b.txt", b"b\n")
    commit = await workspace.commit("job b-1")
    assert commit is not None
    await node_b.remove(task_id, "b-1", keep_commits=True)
    second = await node_b.land(task_id=task_id, repo=repo, commit=commit.sha, start=head,
                               head=head)

    assert second == commit.sha
    assert git(remote, "rev-parse", f"{second}^") == first
    assert shared(remote, task_id) == second
    assert git(await node_b.git_dir(repo), "rev-parse", task_branch(task_id)) == second


async def test_a_node_whose_copy_is_stale_catches_up_when_the_task_comes_back(
    manager: WorkspaceManager, node_b: WorkspaceManager, remote: Path, task_id: UUID
) -> None:
    repo = remote.as_uri()
    branch = await manager.make_branch(task_id=task_id, repo=repo, base=None)
    start, first = await run_commit(manager, task_id, repo, "a-1", branch.name,
                                    {"a.txt": b"a\n"})
    head = await manager.land(task_id=task_id, repo=repo, commit=first, start=start,
                              head=branch.base_commit)
    start, second = await run_commit(node_b, task_id, repo, "b-1", branch.name,
                                     {"b.txt": b"b\n"})
    head = await node_b.land(task_id=task_id, repo=repo, commit=second, start=start, head=head)

    # Back on node A, whose task branch is still at its own landing.
    start, third = await run_commit(manager, task_id, repo, "a-2", branch.name,
                                    {"c.txt": b"c\n"})
    assert start == second
    head = await manager.land(task_id=task_id, repo=repo, commit=third, start=start, head=head)

    assert head == third == shared(remote, task_id)
    assert git(remote, "log", "--format=%s", head) == "job a-2\njob b-1\njob a-1\nfirst"


async def test_a_landing_on_a_node_whose_copy_is_stale_goes_on_the_remotes_head(
    manager: WorkspaceManager, node_b: WorkspaceManager, remote: Path, task_id: UUID
) -> None:
    repo = remote.as_uri()
    branch = await manager.make_branch(task_id=task_id, repo=repo, base=None)
    base = branch.base_commit
    _, first = await run_commit(manager, task_id, repo, "a-1", base, {"a.txt": b"a\n"})
    _, other = await run_commit(manager, task_id, repo, "a-2", base, {"c.txt": b"c\n"})
    head = await manager.land(task_id=task_id, repo=repo, commit=first, start=base, head=base)
    _, second = await run_commit(node_b, task_id, repo, "b-1", head, {"b.txt": b"b\n"})
    head = await node_b.land(task_id=task_id, repo=repo, commit=second, start=head, head=head)

    # Node A lands work it made before the task went away: on node B's landing.
    landed = await manager.land(task_id=task_id, repo=repo, commit=other, start=base,
                                head=head)

    assert git(remote, "rev-parse", f"{landed}^") == second
    assert shared(remote, task_id) == landed


async def test_a_remote_that_refuses_pushes_fails_no_landing(
    manager: WorkspaceManager, remote: Path, task_id: UUID, caplog: pytest.LogCaptureFixture
) -> None:
    repo = remote.as_uri()
    refuse_pushes(remote)
    with caplog.at_level(logging.WARNING, logger="ipa.pods.workspace"):
        branch = await manager.make_branch(task_id=task_id, repo=repo, base=None)
        start, first = await run_commit(manager, task_id, repo, "a-1", branch.name,
                                        {"a.txt": b"a\n"})
        head = await manager.land(task_id=task_id, repo=repo, commit=first, start=start,
                                  head=branch.base_commit)

    assert head == first == git(await manager.git_dir(repo), "rev-parse", branch.name)
    assert shared(remote, task_id) is None
    refused = [r.getMessage() for r in caplog.records if "not pushed" in r.getMessage()]
    assert len(refused) == 2
    assert "pre-receive hook declined" in refused[-1]


async def test_a_new_node_lands_on_the_base_when_a_read_only_remote_has_no_task_branch(
    manager: WorkspaceManager, node_b: WorkspaceManager, remote: Path, task_id: UUID
) -> None:
    repo = remote.as_uri()
    refuse_pushes(remote)
    branch = await manager.make_branch(task_id=task_id, repo=repo, base=None)
    base = branch.base_commit
    # The task moves before anything landed: node B has the base, not the branch.
    _, first = await run_commit(node_b, task_id, repo, "b-1", base, {"b.txt": b"b\n"})

    head = await node_b.land(task_id=task_id, repo=repo, commit=first, start=base, head=base)

    assert head == first == git(await node_b.git_dir(repo), "rev-parse", branch.name)


async def test_going_back_over_an_unrecorded_landing_replaces_it_on_the_remote(
    manager: WorkspaceManager, remote: Path, task_id: UUID
) -> None:
    repo = str(remote)  # a bare repository's path: pushed to as well
    branch = await manager.make_branch(task_id=task_id, repo=repo, base=None)
    base = branch.base_commit
    _, lost = await run_commit(manager, task_id, repo, "a-1", base, {"a.txt": b"a\n"})
    _, again = await run_commit(manager, task_id, repo, "a-2", base, {"a.txt": b"A\n"})
    # Landed and pushed, then the process died before the task recorded it.
    await manager.land(task_id=task_id, repo=repo, commit=lost, start=base, head=base)
    assert shared(remote, task_id) == lost

    head = await manager.land(task_id=task_id, repo=repo, commit=again, start=base, head=base)

    assert head == again == shared(remote, task_id)


async def test_a_stale_owners_landing_does_not_replace_the_new_owners_on_the_remote(
    manager: WorkspaceManager, node_b: WorkspaceManager, remote: Path, task_id: UUID,
    caplog: pytest.LogCaptureFixture,
) -> None:
    repo = remote.as_uri()
    branch = await manager.make_branch(task_id=task_id, repo=repo, base=None)
    base = branch.base_commit
    _, first = await run_commit(manager, task_id, repo, "a-1", base, {"a.txt": b"a\n"})
    head = await manager.land(task_id=task_id, repo=repo, commit=first, start=base, head=base)
    # Node A hangs; node B takes the task over and lands.
    _, second = await run_commit(node_b, task_id, repo, "b-1", head, {"b.txt": b"b\n"})
    newer = await node_b.land(task_id=task_id, repo=repo, commit=second, start=head, head=head)
    # Node A wakes and lands what it had (its append would be fenced; the push is refused).
    _, stale = await run_commit(manager, task_id, repo, "a-2", head, {"c.txt": b"c\n"})
    with caplog.at_level(logging.WARNING, logger="ipa.pods.workspace"):
        await manager.land(task_id=task_id, repo=repo, commit=stale, start=head, head=head)

    assert shared(remote, task_id) == newer
    assert "not pushed" in caplog.text


async def test_a_commit_made_on_another_node_is_fetched_to_land_it(
    manager: WorkspaceManager, node_b: WorkspaceManager, remote: Path
) -> None:
    # A child task ran on node A; its project merges the child's work on node B.
    repo = remote.as_uri()
    child, project = uuid.uuid4(), uuid.uuid4()
    branch = await manager.make_branch(task_id=child, repo=repo, base=None)
    base = branch.base_commit
    _, work = await run_commit(manager, child, repo, "c-1", base, {"a.txt": b"a\n"})
    done = await manager.land(task_id=child, repo=repo, commit=work, start=base, head=base)
    await node_b.make_branch(task_id=project, repo=repo, base=None)

    merged = await node_b.land(task_id=project, repo=repo, commit=done, start=base, head=base)

    assert merged == done == shared(remote, project)


async def test_a_local_repository_gets_no_shared_ref(
    manager: WorkspaceManager, work: Path, remote: Path, task_id: UUID
) -> None:
    git(work, "remote", "add", "origin", str(remote))
    repo = str(work)
    branch = await manager.make_branch(task_id=task_id, repo=repo, base=None)
    start, first = await run_commit(manager, task_id, repo, "a-1", branch.name,
                                    {"a.txt": b"a\n"})
    await manager.land(task_id=task_id, repo=repo, commit=first, start=start,
                       head=branch.base_commit)

    assert git(work, "rev-parse", branch.name) == first  # the branch is in the repository
    assert shared(work, task_id) is None
    assert shared(remote, task_id) is None
