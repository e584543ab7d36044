"""Workspaces of repositories with submodules, and the user's repository left as it was.

The user's project has a submodule ``libs/library`` (``url = ../library``), which has one of
its own, ``vendor/inner`` (``url = ../inner``): real repositories side by side, as git
``submodule add`` makes them.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import pytest

from ipa.pods import repositories, submodules
from ipa.pods.workspace import RepositoryUnavailable, WorkspaceManager

from .helpers import registered

pytestmark = pytest.mark.anyio

IDENTITY = {
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


def git(cwd: Path, *args: str, strip: bool = True) -> str:
    """git in ``cwd`` as the user; local submodules allowed (git refuses them by default)."""
    result = subprocess.run(
        ["git", "-c", "protocol.file.allow=always", "-C", str(cwd), *args],
        env={**os.environ, **IDENTITY}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return result.stdout.strip() if strip else result.stdout


def new_repo(path: Path, files: dict[str, str]) -> Path:
    git(path.parent, "init", "--quiet", "-b", "main", str(path))
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    git(path, "add", "--all")
    git(path, "commit", "--quiet", "-m", "first")
    return path


def declare_submodule(repo: Path, path: str, url: str, commit: str) -> None:
    """Record a submodule without fetching it: a .gitmodules entry and a gitlink, committed."""
    git(repo, "config", "-f", ".gitmodules", f"submodule.{path}.path", path)
    git(repo, "config", "-f", ".gitmodules", f"submodule.{path}.url", url)
    git(repo, "update-index", "--add", "--cacheinfo", f"160000,{commit},{path}")
    git(repo, "add", ".gitmodules")
    git(repo, "commit", "--quiet", "-m", f"submodule {path}")


@dataclass
class Repos:
    project: Path  # the user's repository, its submodules initialised
    library: Path
    inner: Path


@pytest.fixture(autouse=True)
def hermetic_git(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the machine's nor the user's git config reaches these tests."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")


@pytest.fixture
def repos(tmp_path: Path) -> Repos:
    inner = new_repo(tmp_path / "inner", {"inner.txt": "inner\n"})
    library = new_repo(tmp_path / "library", {"lib.txt": "library\n"})
    git(library, "submodule", "add", "--quiet", "../inner", "vendor/inner")
    git(library, "commit", "--quiet", "-m", "vendor inner")
    project = new_repo(tmp_path / "project", {"README.md": "project\n"})
    git(project, "submodule", "add", "--quiet", "../library", "libs/library")
    git(project, "commit", "--quiet", "-m", "use the library")
    git(project, "submodule", "update", "--quiet", "--init", "--recursive")
    return Repos(project, library, inner)


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """ssh:// URLs served from this machine: ``ssh://host/PATH`` is the repository at PATH
    (the "remote" repositories of these tests, without a network). One whose path has
    ``hang`` in it never answers."""
    script = tmp_path / "fake-ssh"
    script.write_text('#!/bin/sh\nwhile [ $# -gt 2 ]; do shift; done\n'
                      'case "$2" in *hang*) exec sleep 5;; esac\nexec sh -c "$2"\n')
    script.chmod(0o755)
    monkeypatch.setenv("GIT_SSH_COMMAND", str(script))
    monkeypatch.setenv("GIT_SSH_VARIANT", "simple")
    return "ssh://example.invalid"


def recorded(repo: Path, path: str, commit: str = "HEAD") -> str:
    """The commit ``repo`` records for its submodule at ``path``."""
    return git(repo, "rev-parse", f"{commit}:{path}")


def assert_checked_out(worktree: Path) -> None:
    """Both submodules' files are there, each at the commit its superproject records."""
    assert (worktree / "libs/library/lib.txt").read_text() == "library\n"
    assert (worktree / "libs/library/vendor/inner/inner.txt").read_text() == "inner\n"
    status = git(worktree, "submodule", "status", "--recursive", strip=False).splitlines()
    library = recorded(worktree, "libs/library")
    inner = recorded(worktree / "libs/library", "vendor/inner")
    # ' ': checked out at the recorded commit ('-': not initialised, '+': at another commit).
    assert [line.partition(" (")[0] for line in status if "libs/library" in line] == [
        f" {library} libs/library", f" {inner} libs/library/vendor/inner"]
    assert git(worktree / "libs/library", "rev-parse", "HEAD") == library


def moved_away(*paths: Path) -> None:
    """The submodules' own repositories gone: only the user's clone still has them."""
    for path in paths:
        path.rename(path.with_name(f"{path.name}.away"))


# Agents get the submodules' files


async def test_a_repository_with_a_submodule_gives_agents_its_files(
    manager: WorkspaceManager, repos: Repos, task_id: UUID
) -> None:
    moved_away(repos.library, repos.inner)  # so nothing but the user's clone can serve them

    made = await manager.create(task_id=task_id, workspace_id="run-1", repo=str(repos.project))

    assert_checked_out(made.info.path)
    # Its submodules' git dirs live in the worktree's own git dir.
    private = Path(git(made.info.path, "rev-parse", "--path-format=absolute", "--git-dir"))
    assert private.parent == repos.project / ".git" / "worktrees"
    assert (private / "modules" / "libs/library" / "modules" / "vendor/inner").is_dir()


async def test_a_submodule_missing_from_the_users_clone_comes_from_its_url(
    manager: WorkspaceManager, repos: Repos, task_id: UUID
) -> None:
    (repos.library / "lib.txt").write_text("newer\n")
    git(repos.library, "commit", "--quiet", "-am", "newer")
    newer = git(repos.library, "rev-parse", "HEAD")
    git(repos.project, "update-index", "--cacheinfo", f"160000,{newer},libs/library")
    git(repos.project, "commit", "--quiet", "-m", "a newer library, not fetched here")

    made = await manager.create(task_id=task_id, workspace_id="run-1", repo=str(repos.project))

    assert (made.info.path / "libs/library/lib.txt").read_text() == "newer\n"
    assert git(made.info.path / "libs/library", "rev-parse", "HEAD") == newer
    assert (made.info.path / "libs/library/vendor/inner/inner.txt").exists()


async def test_submodules_of_a_repository_given_by_url_are_checked_out(
    manager: WorkspaceManager, repos: Repos, task_id: UUID, tmp_path: Path
) -> None:
    remotes = tmp_path / "remotes"
    for repo in (repos.project, repos.library, repos.inner):
        git(tmp_path, "clone", "--quiet", "--bare", str(repo), str(remotes / repo.name))

    made = await manager.create(task_id=task_id, workspace_id="run-1",
                                repo=(remotes / "project").as_uri())

    assert_checked_out(made.info.path)
    assert git(made.info.path / "libs/library", "remote", "get-url", "origin") == (
        (remotes / "library").as_uri())


async def test_submodules_of_a_remote_repository_come_over_its_transport(
    manager: WorkspaceManager, repos: Repos, task_id: UUID, tmp_path: Path, fake_ssh: str
) -> None:
    remotes = tmp_path / "remotes"
    for repo in (repos.project, repos.library, repos.inner):
        git(tmp_path, "clone", "--quiet", "--bare", str(repo), str(remotes / repo.name))

    made = await manager.create(task_id=task_id, workspace_id="run-1",
                                repo=f"{fake_ssh}{remotes}/project")

    assert_checked_out(made.info.path)
    assert git(made.info.path / "libs/library", "remote", "get-url", "origin") == (
        f"{fake_ssh}{remotes}/library")


async def test_a_submodule_that_cannot_be_fetched_fails_the_workspace_naming_it(
    manager: WorkspaceManager, tmp_path: Path, task_id: UUID
) -> None:
    library = new_repo(tmp_path / "library", {"lib.txt": "library\n"})
    project = new_repo(tmp_path / "project", {"README.md": "project\n"})
    declare_submodule(project, "libs/library", "../library", git(library, "rev-parse", "HEAD"))
    config = (project / ".git" / "config").read_bytes()
    moved_away(library)  # and the user never initialised it

    with pytest.raises(RepositoryUnavailable) as raised:
        await manager.create(task_id=task_id, workspace_id="run-1", repo=str(project))

    message = str(raised.value)
    assert "submodule 'libs/library' at libs/library" in message
    assert str(tmp_path / "library") in message and "does not exist" in message
    # Nothing left behind, in the repository or under the data directory.
    assert registered(project) == set()
    assert not (project / ".git" / "worktrees").exists()
    assert git(project, "branch", "--list", "ipa/*") == ""
    assert not (manager.root / str(task_id)).exists()
    assert (project / ".git" / "config").read_bytes() == config


@pytest.mark.parametrize(
    ("url", "reason"),
    [("http://127.0.0.1:9/library.git", "the scheme http:// is not allowed"),
     ("git://127.0.0.1:9/library.git", "the scheme git:// is not allowed"),
     ("ext::sh -c touch% /tmp/ipa-ext-ran", "transport helper"),
     ("-uhelp", "command-line option")],
)  # fmt: skip
async def test_a_submodule_url_of_a_transport_task_repositories_may_not_use_is_refused(
    manager: WorkspaceManager, tmp_path: Path, task_id: UUID, url: str, reason: str
) -> None:
    library = new_repo(tmp_path / "library", {"lib.txt": "library\n"})
    project = new_repo(tmp_path / "project", {"README.md": "project\n"})
    declare_submodule(project, "libs/library", url, git(library, "rev-parse", "HEAD"))

    with pytest.raises(RepositoryUnavailable, match=reason) as raised:
        await manager.create(task_id=task_id, workspace_id="run-1", repo=str(project))

    assert "submodule 'libs/library'" in str(raised.value)
    assert not (manager.root / str(task_id)).exists()


async def test_submodule_transports_are_those_of_the_repository_policy() -> None:
    assert submodules._SUBMODULE_SCHEMES == repositories.ALLOWED_SCHEMES


async def test_a_remote_repositorys_submodule_may_not_read_local_files(
    manager: WorkspaceManager, tmp_path: Path, task_id: UUID, fake_ssh: str
) -> None:
    secret = new_repo(tmp_path / "secret", {"key.txt": "secret\n"})
    project = new_repo(tmp_path / "project", {"README.md": "project\n"})
    declare_submodule(project, "libs/secret", str(secret), git(secret, "rev-parse", "HEAD"))
    remote = tmp_path / "remotes" / "project"
    git(tmp_path, "clone", "--quiet", "--bare", str(project), str(remote))

    with pytest.raises(RepositoryUnavailable, match="is a local path") as raised:
        await manager.create(task_id=task_id, workspace_id="run-1",
                             repo=f"{fake_ssh}{remote}")

    assert "submodule 'libs/secret'" in str(raised.value)
    assert not (manager.root / str(task_id)).exists()


async def test_a_local_submodule_outside_the_repository_roots_is_refused(
    tmp_path: Path, task_id: UUID
) -> None:
    roots = tmp_path / "roots"
    roots.mkdir()
    library = new_repo(tmp_path / "library", {"lib.txt": "library\n"})
    project = new_repo(roots / "project", {"README.md": "project\n"})
    declare_submodule(project, "libs/library", str(library), git(library, "rev-parse", "HEAD"))
    manager = WorkspaceManager(tmp_path / "workspaces", repo_roots=[roots])

    with pytest.raises(RepositoryUnavailable, match="outside the allowed roots"):
        await manager.create(task_id=task_id, workspace_id="run-1", repo=str(project))

    inside = WorkspaceManager(tmp_path / "workspaces", repo_roots=[tmp_path])
    made = await inside.create(task_id=task_id, workspace_id="run-1", repo=str(project))
    assert (made.info.path / "libs/library/lib.txt").exists()


async def test_a_submodule_fetch_that_hangs_is_stopped_by_the_clone_timeout(
    tmp_path: Path, task_id: UUID, fake_ssh: str
) -> None:
    library = new_repo(tmp_path / "library", {"lib.txt": "library\n"})
    project = new_repo(tmp_path / "project", {"README.md": "project\n"})
    declare_submodule(project, "libs/library", f"{fake_ssh}/hang/library",
                      git(library, "rev-parse", "HEAD"))
    manager = WorkspaceManager(tmp_path / "workspaces", clone_timeout=0.5)

    with pytest.raises(RepositoryUnavailable, match="took longer than 0.5 s") as raised:
        await manager.create(task_id=task_id, workspace_id="run-1", repo=str(project))

    assert "submodule 'libs/library'" in str(raised.value)
    assert not (manager.root / str(task_id)).exists()


# Hands off the user's repository


async def test_removing_a_workspace_removes_its_submodules_git_dirs(
    manager: WorkspaceManager, repos: Repos, task_id: UUID, tmp_path: Path
) -> None:
    modules = sorted(p.relative_to(repos.project) for p in (repos.project / ".git").rglob("*")
                     if "modules" in p.parts)  # fmt: skip
    removed = await manager.create(task_id=task_id, workspace_id="run-1",
                                   repo=str(repos.project))
    await manager.create(task_id=task_id, workspace_id="run-2", repo=str(repos.project))

    await manager.remove(task_id, "run-1")
    # A process killed with a workspace in place: recovery sweeps it.
    assert await WorkspaceManager(manager.root).sweep() == [f"{task_id}/run-2"]

    assert not removed.info.path.exists()
    assert registered(repos.project) == set()
    assert not (repos.project / ".git" / "worktrees").exists()
    assert sorted(p.relative_to(repos.project) for p in (repos.project / ".git").rglob("*")
                  if "modules" in p.parts) == modules  # fmt: skip


async def test_workspaces_never_change_the_users_branch_index_stash_or_config(
    manager: WorkspaceManager, repos: Repos, task_id: UUID, tmp_path: Path
) -> None:
    project = repos.project
    # A second submodule the user never initialised: `git submodule update --init` in an
    # agent's worktree would write it into .git/config, which the worktree shares.
    other = new_repo(tmp_path / "other", {"other.txt": "other\n"})
    declare_submodule(project, "libs/other", "../other", git(other, "rev-parse", "HEAD"))
    git(project, "switch", "--quiet", "-c", "my-feature")
    (project / "mine.txt").write_text("committed on my branch\n")
    git(project, "add", "mine.txt")
    git(project, "commit", "--quiet", "-m", "my work")
    (project / "README.md").write_text("stashed edit\n")
    git(project, "stash", "--quiet")
    (project / "README.md").write_text("an edit in progress\n")
    (project / "staged.txt").write_text("staged\n")
    git(project, "add", "staged.txt")
    (project / "untracked.txt").write_text("untracked\n")
    (project / "libs/library/lib.txt").write_text("an edit inside the submodule\n")

    def snapshot() -> dict[str, object]:
        files = [".git/config", ".git/index", ".git/HEAD", ".git/modules/libs/library/config",
                 ".git/modules/libs/library/index", ".git/modules/libs/library/HEAD"]
        raw = {name: (project / name).read_bytes() for name in files}  # before git runs here
        return {**raw,
                "head": git(project, "rev-parse", "HEAD"),
                "branch": git(project, "symbolic-ref", "HEAD"),
                "status": git(project, "status", "--porcelain", "--ignore-submodules=none"),
                "stash": git(project, "stash", "list", "--format=%H %gs"),
                "refs": [ref for ref in git(project, "for-each-ref").splitlines()
                         if "refs/heads/ipa/" not in ref and "refs/ipa/" not in ref],
                "library": git(project / "libs/library", "status", "--porcelain")}

    before = snapshot()
    branch = await manager.make_branch(task_id=task_id, repo=str(project), base="main")
    first = await manager.create(task_id=task_id, workspace_id="run-1", repo=str(project),
                                 base=branch.base_commit)
    assert_checked_out(first.info.path)
    # Checked out, but reported as not initialised ('-'): that is recorded in .git/config.
    assert (first.info.path / "libs/other/other.txt").read_text() == "other\n"
    assert git(first.info.path / "libs/other", "rev-parse", "HEAD") == git(other, "rev-parse",
                                                                          "HEAD")
    await first.write("agent.txt", b"an agent's work\n")
    commit = await first.commit("a job")
    assert commit is not None
    await manager.remove(task_id, "run-1", keep_commits=True)
    await manager.land(task_id=task_id, repo=str(project), commit=commit.sha,
                       start=branch.base_commit, head=branch.base_commit)
    await manager.create(task_id=task_id, workspace_id="run-2", repo=str(project),
                         base=commit.sha)
    await manager.remove_task(task_id)
    await manager.sweep()

    assert snapshot() == before
    assert "?? untracked.txt" in str(before["status"]) and before["stash"]
