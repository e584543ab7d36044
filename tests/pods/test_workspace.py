"""Workspaces: worktrees and clones of real git repositories, confined file access, diff,
commit and clean-up."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from uuid import UUID, uuid4

import anyio
import pytest

from ipa.pods.workspace import (
    BranchConflict,
    PathOutsideWorkspace,
    RepositoryUnavailable,
    UnknownRevision,
    Workspace,
    WorkspaceError,
    WorkspaceManager,
    WorkspaceNotFound,
)

pytestmark = pytest.mark.anyio

IDENTITY = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


def git(cwd: Path, *args: str) -> str:
    result = subprocess.run(
        ["git", "-C", str(cwd), *args],
        env={**os.environ, **IDENTITY},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def add_commit(repo: Path, name: str, content: str) -> str:
    (repo / name).write_text(content)
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", f"add {name}")
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture(autouse=True)
def hermetic_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the machine's nor the user's git config reaches these tests."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(path)], check=True)
    (path / "src").mkdir()
    (path / "src" / "app.py").write_text("print('hi')\n")
    add_commit(path, "README.md", "hello\n")
    return path


@pytest.fixture
def remote(tmp_path: Path, repo: Path) -> Path:
    """A bare repository standing in for a remote, reached through a file:// URL."""
    path = tmp_path / "remote.git"
    subprocess.run(["git", "clone", "--quiet", "--bare", str(repo), str(path)], check=True)
    return path


@pytest.fixture
async def workspace(manager: WorkspaceManager, repo: Path, task_id: UUID) -> Workspace:
    return await manager.create(task_id=task_id, workspace_id="run-1", repo=str(repo))


# Making workspaces


async def test_create_adds_a_worktree_on_its_own_branch_at_the_base_commit(
    manager: WorkspaceManager, repo: Path, task_id: UUID
) -> None:
    head = git(repo, "rev-parse", "HEAD")

    workspace = await manager.create(task_id=task_id, workspace_id="run-1", repo=str(repo))

    info = workspace.info
    assert info.path == manager.root / str(task_id) / "run-1"
    assert info.branch == f"ipa/{task_id.hex[:8]}-runs/run-1"
    assert info.base_commit == head
    assert git(info.path, "rev-parse", "HEAD") == head
    assert git(info.path, "symbolic-ref", "--short", "HEAD") == info.branch
    assert git(repo, "branch", "--list", info.branch) != ""
    assert (info.path / "README.md").read_text() == "hello\n"


async def test_create_starts_at_a_named_base(
    manager: WorkspaceManager, repo: Path, task_id: UUID
) -> None:
    first = git(repo, "rev-parse", "HEAD")
    add_commit(repo, "later.txt", "later\n")

    workspace = await manager.create(
        task_id=task_id, workspace_id="run-1", repo=str(repo), base=first
    )

    assert workspace.info.base_commit == first
    assert not (workspace.info.path / "later.txt").exists()


async def test_create_clones_a_repository_given_by_url(
    manager: WorkspaceManager, remote: Path, task_id: UUID
) -> None:
    url = remote.as_uri()

    workspace = await manager.create(task_id=task_id, workspace_id="run-1", repo=url)

    path = workspace.info.path
    assert workspace.info.base_commit == git(remote, "rev-parse", "main")
    assert git(path, "rev-parse", "HEAD") == workspace.info.base_commit
    assert git(path, "symbolic-ref", "--short", "HEAD") == workspace.info.branch
    assert git(path, "remote", "get-url", "origin") == url
    assert (path / "README.md").read_text() == "hello\n"


async def test_create_from_a_url_fetches_commits_made_since_the_first_clone(
    manager: WorkspaceManager, repo: Path, remote: Path, task_id: UUID
) -> None:
    await manager.create(task_id=task_id, workspace_id="run-1", repo=remote.as_uri())
    newer = add_commit(repo, "newer.txt", "newer\n")
    git(repo, "push", "--quiet", str(remote), "main")

    second = await manager.create(task_id=task_id, workspace_id="run-2", repo=remote.as_uri())

    assert second.info.base_commit == newer
    assert (second.info.path / "newer.txt").exists()


async def test_create_from_a_url_takes_a_remote_branch_as_base(
    manager: WorkspaceManager, repo: Path, remote: Path, task_id: UUID
) -> None:
    git(repo, "switch", "--quiet", "-c", "feature")
    feature = add_commit(repo, "feature.txt", "feature\n")
    git(repo, "push", "--quiet", str(remote), "feature")

    workspace = await manager.create(
        task_id=task_id, workspace_id="run-1", repo=remote.as_uri(), base="feature"
    )

    assert workspace.info.base_commit == feature


async def test_a_local_bare_repository_is_cloned_not_worked_in(
    manager: WorkspaceManager, remote: Path, task_id: UUID
) -> None:
    workspace = await manager.create(task_id=task_id, workspace_id="run-1", repo=str(remote))

    assert git(remote, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert git(remote, "branch", "--list", workspace.info.branch) == ""
    assert (workspace.info.path / "README.md").exists()


async def test_two_workspaces_of_one_repository_can_be_created_at_once(
    manager: WorkspaceManager, repo: Path, task_id: UUID
) -> None:
    made: list[Workspace] = []

    async def create(workspace_id: str) -> None:
        made.append(
            await manager.create(task_id=task_id, workspace_id=workspace_id, repo=str(repo))
        )

    async with anyio.create_task_group() as tg:
        for n in range(4):
            tg.start_soon(create, f"run-{n}")

    assert len({w.info.branch for w in made}) == 4
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 5


async def test_two_workspaces_of_one_url_can_be_created_at_once(
    manager: WorkspaceManager, remote: Path, task_id: UUID
) -> None:
    made: list[Workspace] = []

    async def create(workspace_id: str) -> None:
        made.append(
            await manager.create(task_id=task_id, workspace_id=workspace_id, repo=remote.as_uri())
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(create, "run-1")
        tg.start_soon(create, "run-2")

    assert all((w.info.path / "README.md").exists() for w in made)
    assert len(list((manager.root / ".cache").iterdir())) == 1


async def test_creating_an_existing_workspace_again_is_refused(
    manager: WorkspaceManager, repo: Path, workspace: Workspace, task_id: UUID
) -> None:
    with pytest.raises(WorkspaceError, match="already exists"):
        await manager.create(task_id=task_id, workspace_id="run-1", repo=str(repo))


@pytest.mark.parametrize("workspace_id", ["", "../x", "a/b", ".hidden", "x..y", "x.lock"])
async def test_a_workspace_id_unfit_for_a_path_or_branch_is_refused(
    manager: WorkspaceManager, repo: Path, task_id: UUID, workspace_id: str
) -> None:
    with pytest.raises(WorkspaceError, match="workspace id"):
        await manager.create(task_id=task_id, workspace_id=workspace_id, repo=str(repo))


# Repositories that cannot be used


async def test_a_repository_that_does_not_exist_is_unavailable(
    manager: WorkspaceManager, tmp_path: Path, task_id: UUID
) -> None:
    missing = str(tmp_path / "missing")

    with pytest.raises(RepositoryUnavailable, match="no such directory") as raised:
        await manager.create(task_id=task_id, workspace_id="run-1", repo=missing)

    assert raised.value.repo == missing
    assert missing in str(raised.value)


async def test_a_directory_that_is_not_a_repository_is_unavailable(
    manager: WorkspaceManager, tmp_path: Path, task_id: UUID
) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()

    with pytest.raises(RepositoryUnavailable, match="not a git repository"):
        await manager.create(task_id=task_id, workspace_id="run-1", repo=str(plain))


async def test_a_directory_inside_a_repository_is_not_taken_for_it(
    manager: WorkspaceManager, repo: Path, task_id: UUID
) -> None:
    with pytest.raises(RepositoryUnavailable, match="not a git repository"):
        await manager.create(task_id=task_id, workspace_id="run-1", repo=str(repo / "src"))


async def test_a_relative_path_is_unavailable(manager: WorkspaceManager, task_id: UUID) -> None:
    with pytest.raises(RepositoryUnavailable, match="absolute"):
        await manager.create(task_id=task_id, workspace_id="run-1", repo="some/repo")


async def test_an_unreachable_url_is_unavailable_with_gits_reason_and_leaves_nothing(
    manager: WorkspaceManager, task_id: UUID
) -> None:
    url = "file:///nonexistent/repo.git"

    with pytest.raises(RepositoryUnavailable) as raised:
        await manager.create(task_id=task_id, workspace_id="run-1", repo=url)

    assert url in str(raised.value)
    assert "does not appear to be a git repository" in str(raised.value)
    assert list((manager.root / ".cache").iterdir()) == []
    assert not (manager.root / str(task_id)).exists()


async def test_a_base_that_names_no_commit_is_an_unknown_revision(
    manager: WorkspaceManager, repo: Path, task_id: UUID
) -> None:
    with pytest.raises(UnknownRevision, match="no-such-branch"):
        await manager.create(
            task_id=task_id, workspace_id="run-1", repo=str(repo), base="no-such-branch"
        )

    assert not (manager.root / str(task_id)).exists()


async def test_a_git_that_hangs_is_stopped_by_the_timeout(
    tmp_path: Path, repo: Path, task_id: UUID
) -> None:
    hanging = tmp_path / "hanging-git"
    hanging.write_text("#!/bin/sh\nexec sleep 60\n")
    hanging.chmod(0o755)
    manager = WorkspaceManager(tmp_path / "workspaces", git=str(hanging), timeout=0.2)

    with pytest.raises(WorkspaceError, match="took longer than 0.2 s"):
        await manager.create(task_id=task_id, workspace_id="run-1", repo=str(repo))


async def test_the_callers_git_variables_do_not_redirect_git(
    manager: WorkspaceManager, repo: Path, tmp_path: Path, task_id: UUID,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("GIT_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(tmp_path / "elsewhere-index"))

    workspace = await manager.create(task_id=task_id, workspace_id="run-1", repo=str(repo))

    assert (workspace.info.path / "README.md").exists()


async def test_the_repositorys_hooks_do_not_run(
    manager: WorkspaceManager, repo: Path, tmp_path: Path, task_id: UUID
) -> None:
    marker = tmp_path / "hook-ran"
    for hook in ("post-checkout", "pre-commit", "commit-msg", "post-commit"):
        script = repo / ".git" / "hooks" / hook
        script.write_text(f"#!/bin/sh\ntouch {marker}\nexit 1\n")
        script.chmod(0o755)

    workspace = await manager.create(task_id=task_id, workspace_id="run-1", repo=str(repo))
    await workspace.write("new.txt", b"new\n")
    commit = await workspace.commit("a commit")

    assert commit is not None
    assert not marker.exists()


# Files


async def test_write_then_read_returns_the_same_bytes(workspace: Workspace) -> None:
    data = bytes(range(256))

    await workspace.write("deep/new/dir/blob.bin", data)

    assert await workspace.read("deep/new/dir/blob.bin") == data
    assert (workspace.info.path / "deep/new/dir/blob.bin").read_bytes() == data


async def test_list_is_sorted_and_hides_git(workspace: Workspace) -> None:
    await workspace.write("b.txt", b"bb")

    entries = await workspace.list()

    assert [(e.path, e.is_dir, e.size) for e in entries] == [
        ("README.md", False, 6),
        ("b.txt", False, 2),
        ("src", True, 0),
    ]


async def test_list_of_a_subdirectory_gives_paths_from_the_root(workspace: Workspace) -> None:
    entries = await workspace.list("src")

    assert [e.path for e in entries] == ["src/app.py"]


async def test_list_recursive_walks_every_directory(workspace: Workspace) -> None:
    await workspace.write("src/pkg/mod.py", b"")

    entries = await workspace.list(recursive=True)

    assert [e.path for e in entries] == [
        "README.md",
        "src",
        "src/app.py",
        "src/pkg",
        "src/pkg/mod.py",
    ]


async def test_list_shows_a_symlink_without_following_it(workspace: Workspace) -> None:
    (workspace.info.path / "etc").symlink_to("/etc")

    entries = {e.path: e for e in await workspace.list()}

    assert entries["etc"].is_symlink
    assert not entries["etc"].is_dir


async def test_reading_a_missing_file_names_it(workspace: Workspace) -> None:
    with pytest.raises(WorkspaceError, match="'nothing.txt'.*No such file"):
        await workspace.read("nothing.txt")


async def test_reading_a_file_above_the_limit_is_refused(
    tmp_path: Path, repo: Path, task_id: UUID
) -> None:
    manager = WorkspaceManager(tmp_path / "workspaces", read_limit=10)
    workspace = await manager.create(task_id=task_id, workspace_id="run-1", repo=str(repo))
    await workspace.write("big.txt", b"x" * 11)

    with pytest.raises(WorkspaceError, match="larger than the read limit"):
        await workspace.read("big.txt")


async def test_reading_a_fifo_is_refused_without_blocking(workspace: Workspace) -> None:
    os.mkfifo(workspace.info.path / "pipe")

    with pytest.raises(WorkspaceError, match="not a regular file"):
        await workspace.read("pipe")


async def test_a_symlink_within_the_workspace_is_followed(workspace: Workspace) -> None:
    (workspace.info.path / "readme-link").symlink_to("README.md")

    assert await workspace.read("readme-link") == b"hello\n"


# Confinement


@pytest.mark.parametrize(
    "path",
    ["../x", "/etc/passwd", "a/../../x", "src/../README.md", ".git", ".git/config",
     "src/.GIT/x", "x\0y"],
)  # fmt: skip
async def test_a_path_that_could_leave_the_workspace_is_refused(
    workspace: Workspace, path: str
) -> None:
    with pytest.raises(PathOutsideWorkspace) as raised:
        await workspace.read(path)

    assert raised.value.path == path
    assert repr(path) in str(raised.value)


async def test_reading_through_a_symlink_to_outside_is_refused(workspace: Workspace) -> None:
    (workspace.info.path / "etc").symlink_to("/etc")

    with pytest.raises(PathOutsideWorkspace, match="'etc/passwd'"):
        await workspace.read("etc/passwd")


async def test_writing_through_a_symlinked_directory_outside_is_refused(
    workspace: Workspace, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace.info.path / "out").symlink_to(outside)

    with pytest.raises(PathOutsideWorkspace, match="'out/x'"):
        await workspace.write("out/x", b"escaped")

    assert list(outside.iterdir()) == []


async def test_writing_through_a_dangling_symlink_outside_is_refused(
    workspace: Workspace, tmp_path: Path
) -> None:
    target = tmp_path / "not-yet"
    (workspace.info.path / "dangling").symlink_to(target)

    with pytest.raises(PathOutsideWorkspace, match="'dangling'"):
        await workspace.write("dangling", b"escaped")

    assert not target.exists()


async def test_a_symlink_into_git_is_refused(workspace: Workspace) -> None:
    (workspace.info.path / "g").symlink_to(".git")

    with pytest.raises(PathOutsideWorkspace, match="into .git"):
        await workspace.write("g", b"gitdir: /elsewhere\n")


# Diff and commit


async def test_diff_shows_new_and_modified_files(workspace: Workspace) -> None:
    await workspace.write("README.md", b"changed\n")
    await workspace.write("docs/new.md", b"new file\n")

    diff = await workspace.diff()

    assert "+++ b/docs/new.md" in diff
    assert "+new file" in diff
    assert "-hello" in diff
    assert "+changed" in diff


async def test_diff_leaves_the_index_untouched(workspace: Workspace) -> None:
    await workspace.write("new.txt", b"new\n")

    await workspace.diff()

    assert git(workspace.info.path, "status", "--porcelain") == "?? new.txt"


async def test_diff_includes_commits_made_since_the_base(workspace: Workspace) -> None:
    await workspace.write("committed.txt", b"kept\n")
    await workspace.commit("first step")

    assert "+++ b/committed.txt" in await workspace.diff()


async def test_commit_returns_the_sha_and_the_changed_files(workspace: Workspace) -> None:
    await workspace.write("README.md", b"changed\n")
    await workspace.write("docs/new.md", b"new\n")

    commit = await workspace.commit("task t: step")

    assert commit is not None
    assert commit.sha == git(workspace.info.path, "rev-parse", "HEAD")
    assert commit.files == ["README.md", "docs/new.md"]


async def test_commit_keeps_the_message(workspace: Workspace, task_id: UUID) -> None:
    message = f"ipa: task {task_id} (event version 7)\n\n# not a comment\nbody line"
    await workspace.write("new.txt", b"new\n")

    await workspace.commit(message)

    assert git(workspace.info.path, "log", "-1", "--format=%B") == message


async def test_commit_is_made_by_ipa_on_the_workspace_branch(
    workspace: Workspace, repo: Path
) -> None:
    await workspace.write("new.txt", b"new\n")

    commit = await workspace.commit("a step")

    assert commit is not None
    who = git(workspace.info.path, "log", "-1", "--format=%an <%ae> / %cn <%ce>")
    assert who == "ipa <ipa@localhost> / ipa <ipa@localhost>"
    assert git(repo, "rev-parse", workspace.info.branch) == commit.sha


async def test_commit_with_nothing_to_commit_returns_none(workspace: Workspace) -> None:
    assert await workspace.commit("nothing changed") is None


# Clean-up and restart


async def test_remove_deletes_the_worktree_and_its_branch(
    manager: WorkspaceManager, workspace: Workspace, repo: Path, task_id: UUID
) -> None:
    await manager.remove(task_id, "run-1")

    assert not workspace.info.path.exists()
    assert git(repo, "branch", "--list", workspace.info.branch) == ""
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert not (manager.root / str(task_id)).exists()


async def test_remove_twice_is_harmless(
    manager: WorkspaceManager, workspace: Workspace, task_id: UUID
) -> None:
    await manager.remove(task_id, "run-1")
    await manager.remove(task_id, "run-1")

    assert not workspace.info.path.exists()


async def test_remove_can_keep_the_runs_commits_but_not_its_branch(
    manager: WorkspaceManager, workspace: Workspace, repo: Path, task_id: UUID
) -> None:
    await workspace.write("new.txt", b"new\n")
    commit = await workspace.commit("keep me")
    assert commit is not None

    await manager.remove(task_id, "run-1", keep_commits=True)

    assert not workspace.info.path.exists()
    assert git(repo, "branch", "--list", workspace.info.branch) == ""
    assert git(repo, "rev-parse", f"refs/ipa/runs/{task_id.hex[:8]}/run-1") == commit.sha


async def test_remove_task_removes_all_of_its_workspaces_and_no_other(
    manager: WorkspaceManager, repo: Path, remote: Path, task_id: UUID
) -> None:
    ours = [
        await manager.create(task_id=task_id, workspace_id="run-1", repo=str(repo)),
        await manager.create(task_id=task_id, workspace_id="run-2", repo=remote.as_uri()),
    ]
    other = await manager.create(task_id=uuid4(), workspace_id="run-1", repo=str(repo))

    await manager.remove_task(task_id)

    assert not any(w.info.path.exists() for w in ours)
    assert not (manager.root / str(task_id)).exists()
    assert (other.info.path / "README.md").exists()
    assert git(repo, "branch", "--list", "--format=%(refname:short)", "ipa/*") == other.info.branch


def registered(repo: Path) -> set[str]:
    """The worktrees git has on record for ``repo`` (its own checkout left out)."""
    listed = git(repo, "worktree", "list", "--porcelain").splitlines()
    paths = {line.removeprefix("worktree ") for line in listed if line.startswith("worktree ")}
    return paths - {str(repo)}


def users_worktrees(repo: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The user's own worktrees of ``repo``: one in use, one whose directory is gone (what
    ``git worktree prune`` would drop)."""
    mine, gone = tmp_path / "mine", tmp_path / "gone"
    git(repo, "worktree", "add", "--quiet", "-b", "mine", str(mine))
    git(repo, "worktree", "add", "--quiet", "-b", "gone", str(gone))
    subprocess.run(["rm", "-rf", str(gone)], check=True)
    return mine, gone


async def test_remove_drops_only_its_own_worktree_record_never_the_users(
    manager: WorkspaceManager, workspace: Workspace, repo: Path, task_id: UUID, tmp_path: Path
) -> None:
    mine, gone = users_worktrees(repo, tmp_path)

    await manager.remove(task_id, "run-1")

    assert registered(repo) == {str(mine), str(gone)}


async def test_sweep_removes_what_a_killed_process_left_and_nothing_of_the_users(
    manager: WorkspaceManager, repo: Path, remote: Path, tmp_path: Path
) -> None:
    mine, gone = users_worktrees(repo, tmp_path)
    left, vanished, cloned, kept = uuid4(), uuid4(), uuid4(), uuid4()
    intact = await manager.create(task_id=left, workspace_id="run-1", repo=str(repo))
    await intact.write("half.txt", b"work in progress\n")
    await intact.commit("a run's commit")
    # A directory deleted under a live record; a worktree locked mid-add ("initializing").
    lost = await manager.create(task_id=vanished, workspace_id="run-2", repo=str(repo))
    subprocess.run(["rm", "-rf", str(lost.info.path)], check=True)
    locked = await manager.create(task_id=vanished, workspace_id="run-3", repo=str(repo))
    git(repo, "worktree", "lock", "--reason", "initializing", str(locked.info.path))
    from_url = await manager.create(task_id=cloned, workspace_id="run-4", repo=remote.as_uri())
    other = await manager.create(task_id=kept, workspace_id="run-5", repo=str(repo))
    (manager.root / str(left) / ".run-9.json.partial").write_text("{")
    (manager.root / ".cache" / "0123.git.partial-abcd").mkdir(parents=True)
    assert len(registered(repo)) == 6

    removed = await manager.sweep(skip={kept})

    assert sorted(removed) == sorted([f"{left}/run-1", f"{vanished}/run-2",
                                      f"{vanished}/run-3", f"{cloned}/run-4"])
    assert registered(repo) == {str(mine), str(gone), str(other.info.path)}
    assert not any(w.info.path.exists() for w in (intact, locked, from_url))
    assert not (manager.root / str(left)).exists() and not (manager.root / str(vanished)).exists()
    assert list((manager.root / ".cache").glob("*.partial-*")) == []
    assert (mine / "README.md").exists() and (other.info.path / "README.md").exists()
    assert git(repo, "branch", "--list", intact.info.branch) == ""
    assert git(repo, "log", "-1", "--format=%s", f"refs/ipa/runs/{left.hex[:8]}/run-1") == (
        "a run's commit")
    assert await manager.sweep(skip={kept}) == []


async def test_open_reattaches_after_a_restart(
    tmp_path: Path, manager: WorkspaceManager, workspace: Workspace, task_id: UUID
) -> None:
    await workspace.write("progress.txt", b"half done\n")

    reopened = WorkspaceManager(manager.root).open(task_id, "run-1")

    assert reopened.info == workspace.info
    assert await reopened.read("progress.txt") == b"half done\n"
    assert await reopened.commit("after restart") is not None


async def test_open_of_an_unknown_workspace_is_not_found(
    manager: WorkspaceManager, task_id: UUID
) -> None:
    with pytest.raises(WorkspaceNotFound, match="run-9"):
        manager.open(task_id, "run-9")


async def test_open_of_a_removed_workspace_is_not_found(
    manager: WorkspaceManager, workspace: Workspace, task_id: UUID
) -> None:
    await manager.remove(task_id, "run-1")

    with pytest.raises(WorkspaceNotFound):
        manager.open(task_id, "run-1")


# The task's branch


async def test_default_branch_is_main_not_what_the_user_has_checked_out(
    manager: WorkspaceManager, repo: Path
) -> None:
    git(repo, "checkout", "--quiet", "-b", "my-feature")
    add_commit(repo, "feature.txt", "mine\n")

    assert await manager.default_branch(str(repo)) == "main"
    workspace = await manager.create(task_id=uuid4(), workspace_id="run-1", repo=str(repo))
    assert workspace.info.base_commit == git(repo, "rev-parse", "main")


async def test_default_branch_follows_origin_head_then_init_default_branch(
    manager: WorkspaceManager, repo: Path, remote: Path, tmp_path: Path
) -> None:
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", str(remote), str(clone))
    git(clone, "checkout", "--quiet", "-b", "trunk")
    git(clone, "checkout", "--quiet", "-b", "topic")
    git(clone, "symbolic-ref", "refs/remotes/origin/HEAD", "refs/remotes/origin/trunk")
    git(clone, "update-ref", "refs/remotes/origin/trunk", "HEAD")
    assert await manager.default_branch(str(clone)) == "trunk"

    git(repo, "branch", "-m", "main", "develop")
    git(repo, "branch", "master")
    git(repo, "config", "init.defaultBranch", "develop")
    assert await manager.default_branch(str(repo)) == "develop"


async def test_default_branch_of_a_url_is_the_remotes_head(
    manager: WorkspaceManager, remote: Path
) -> None:
    assert await manager.default_branch(remote.as_uri()) == "main"


async def test_make_branch_starts_the_task_branch_at_its_base(
    manager: WorkspaceManager, repo: Path, task_id: UUID
) -> None:
    main = git(repo, "rev-parse", "main")
    git(repo, "checkout", "--quiet", "-b", "release")
    release = add_commit(repo, "release.txt", "1.0\n")
    git(repo, "checkout", "--quiet", "-b", "elsewhere")

    default = await manager.make_branch(task_id=task_id, repo=str(repo), base=None)
    assert (default.name, default.base, default.base_commit) == (
        f"ipa/{task_id.hex[:8]}", "main", main)
    named = await manager.make_branch(task_id=task_id, repo=str(repo), base="release")
    assert (named.base, named.base_commit) == ("release", release)
    assert git(repo, "rev-parse", named.name) == release
    with pytest.raises(UnknownRevision, match="nope"):
        await manager.make_branch(task_id=task_id, repo=str(repo), base="nope")


async def test_make_branch_moves_run_branches_of_before_the_task_branch_out_of_its_way(
    manager: WorkspaceManager, repo: Path, task_id: UUID
) -> None:
    """Before #12 runs had branches ``ipa/<task8>/<workspace>``: git cannot make the branch
    ``ipa/<task8>`` beside them, so they move to the run refs, their commits still reachable."""
    old = f"ipa/{task_id.hex[:8]}/plan-1"
    git(repo, "checkout", "--quiet", "-b", old)
    work = add_commit(repo, "plan.md", "the plan\n")
    git(repo, "checkout", "--quiet", "main")

    branch = await manager.make_branch(task_id=task_id, repo=str(repo), base=None)

    assert git(repo, "rev-parse", branch.name) == git(repo, "rev-parse", "main")
    assert git(repo, "branch", "--list", "--format=%(refname:short)", "ipa/*") == branch.name
    assert git(repo, "rev-parse", f"refs/ipa/runs/{task_id.hex[:8]}/old/plan-1") == work


async def run_commit(manager: WorkspaceManager, task_id: UUID, repo: str, workspace_id: str,
                     start: str, files: dict[str, bytes]) -> str:
    """A run: a worktree at ``start`` that writes ``files``, commits and goes (commits kept)."""
    workspace = await manager.create(task_id=task_id, workspace_id=workspace_id, repo=repo,
                                     base=start)
    for name, data in files.items():
        await workspace.write(name, data)
    commit = await workspace.commit(f"job {workspace_id}")
    assert commit is not None
    await manager.remove(task_id, workspace_id, keep_commits=True)
    return commit.sha


async def test_land_fast_forwards_then_replays_work_that_started_before(
    manager: WorkspaceManager, repo: Path, task_id: UUID
) -> None:
    branch = await manager.make_branch(task_id=task_id, repo=str(repo), base=None)
    base = branch.base_commit
    first = await run_commit(manager, task_id, str(repo), "a-1", base, {"a.txt": b"a\n"})
    second = await run_commit(manager, task_id, str(repo), "b-1", base, {"b.txt": b"b\n"})

    head = await manager.land(task_id=task_id, repo=str(repo), commit=first, start=base,
                              head=base)
    assert head == first
    head = await manager.land(task_id=task_id, repo=str(repo), commit=second, start=base,
                              head=head)

    assert git(repo, "rev-parse", branch.name) == head != second
    assert git(repo, "rev-list", "--count", f"{base}..{branch.name}") == "2"
    assert git(repo, "log", "-1", "--format=%s", head) == "job b-1"
    assert sorted(git(repo, "ls-tree", "--name-only", head).split()) == [
        "README.md", "a.txt", "b.txt", "src"]
    assert git(repo, "rev-parse", "main") == base  # the base is untouched
    assert git(repo, "branch", "--list", "--format=%(refname:short)", "ipa/*") == branch.name


async def test_land_refuses_conflicting_changes_and_a_moved_branch(
    manager: WorkspaceManager, repo: Path, task_id: UUID
) -> None:
    branch = await manager.make_branch(task_id=task_id, repo=str(repo), base=None)
    base = branch.base_commit
    first = await run_commit(manager, task_id, str(repo), "a-1", base, {"README.md": b"one\n"})
    second = await run_commit(manager, task_id, str(repo), "b-1", base, {"README.md": b"two\n"})
    head = await manager.land(task_id=task_id, repo=str(repo), commit=first, start=base,
                              head=base)

    with pytest.raises(BranchConflict, match="README.md") as conflict:
        await manager.land(task_id=task_id, repo=str(repo), commit=second, start=base,
                           head=head)
    assert conflict.value.files == ["README.md"]
    assert git(repo, "rev-parse", branch.name) == first
    # Someone else moved the branch (not ahead of what the task recorded): left alone.
    other = await run_commit(manager, task_id, str(repo), "c-1", base, {"c.txt": b"c\n"})
    third = await run_commit(manager, task_id, str(repo), "d-1", first, {"d.txt": b"d\n"})
    git(repo, "update-ref", f"refs/heads/{branch.name}", other)
    with pytest.raises(WorkspaceError, match="outside ipa"):
        await manager.land(task_id=task_id, repo=str(repo), commit=third, start=first,
                           head=first)
    assert git(repo, "rev-parse", branch.name) == other


async def test_land_goes_back_over_a_landing_whose_record_a_crash_lost(
    manager: WorkspaceManager, repo: Path, task_id: UUID
) -> None:
    branch = await manager.make_branch(task_id=task_id, repo=str(repo), base=None)
    base = branch.base_commit
    lost = await run_commit(manager, task_id, str(repo), "a-1", base, {"a.txt": b"a\n"})
    again = await run_commit(manager, task_id, str(repo), "a-2", base, {"a.txt": b"A\n"})
    # The branch moved to `lost`, then the process died before the task recorded it.
    await manager.land(task_id=task_id, repo=str(repo), commit=lost, start=base, head=base)

    head = await manager.land(task_id=task_id, repo=str(repo), commit=again, start=base,
                              head=base)

    assert head == again == git(repo, "rev-parse", branch.name)
    assert git(repo, "show", f"{branch.name}:a.txt") == "A"


async def test_removing_a_run_never_deletes_a_branch_it_did_not_make(
    manager: WorkspaceManager, workspace: Workspace, repo: Path, task_id: UUID
) -> None:
    record = manager.root / str(task_id) / ".run-1.json"
    record.write_text(record.read_text().replace(workspace.info.branch, "main"))

    await manager.remove(task_id, "run-1")

    assert git(repo, "rev-parse", "--verify", "main")


async def test_a_users_worktree_whose_folder_is_away_for_a_while_survives_a_task(
    manager: WorkspaceManager, repo: Path, tmp_path: Path, task_id: UUID
) -> None:
    mine, _ = users_worktrees(repo, tmp_path)
    (mine / "draft.txt").write_text("the user's work in progress\n")
    away = tmp_path / "elsewhere"
    mine.rename(away)  # a folder being moved, a disk unmounted: back after the task
    # A whole task: its branch; a run that commits, goes and lands; a run a killed process
    # left, swept at recovery; one more run; the task's clean-up.
    branch = await manager.make_branch(task_id=task_id, repo=str(repo), base=None)
    run = await manager.create(task_id=task_id, workspace_id="run-1", repo=str(repo))
    await run.write("new.txt", b"new\n")
    commit = await run.commit("a job")
    assert commit is not None
    await manager.remove(task_id, "run-1", keep_commits=True)
    await manager.land(task_id=task_id, repo=str(repo), commit=commit.sha,
                       start=branch.base_commit, head=branch.base_commit)
    await manager.create(task_id=task_id, workspace_id="run-2", repo=str(repo), base=commit.sha)
    assert await WorkspaceManager(manager.root).sweep() == [f"{task_id}/run-2"]
    await manager.create(task_id=task_id, workspace_id="run-3", repo=str(repo))
    await manager.remove_task(task_id)
    away.rename(mine)

    assert str(mine) in registered(repo)
    assert git(mine, "status", "--porcelain") == "?? draft.txt"  # git still knows it
    assert git(mine, "symbolic-ref", "--short", "HEAD") == "mine"
