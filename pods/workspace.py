"""Workspaces: one git worktree per agent run, under the data directory, on its own branch.

Layout under the manager's ``root`` (``<data dir>/workspaces``)::

    <root>/<task_id>/<workspace_id>/          the worktree the agent works in
    <root>/<task_id>/.<workspace_id>.json     what ``open()`` needs after a restart
    <root>/.cache/<hash>.git                  one bare clone per remote repository

Where a worktree comes from (``repo`` of :meth:`WorkspaceManager.create`):

- a local, non-bare repository (an absolute path or ``~/...``, naming its top level):
  ``git worktree add`` in that repository, so the branches are visible there;
- a URL (``scheme://...`` or ``user@host:path``) or a local bare repository: a bare clone kept
  in the cache, fetched again on every create (its remote branches under
  ``refs/remotes/origin/``), and the worktree added from it; the workspace's ``origin`` is the
  repository.

``base`` is a branch, tag or commit; by default the repository's default branch
(:meth:`WorkspaceManager.default_branch`), never merely what the user has checked out.

**Branches.** Each run works on a branch of its own, ``ipa/<task8>-runs/<workspace_id>`` (not
below ``ipa/<task8>/``: git cannot hold a branch and a directory of branches under one name),
made at the newest commit of the task's branch ``ipa/<task8>`` (:func:`task_branch`). The task
branch is :mod:`.branches`'s: the manager delegates to it making the branch
(:meth:`WorkspaceManager.make_branch`), landing a succeeded job's commit on it
(:meth:`WorkspaceManager.land`) and, before a worktree starts from it, catching it up with the
remote's copy when the task ran on another node. A run's branch is deleted when its worktree
goes; its commits stay reachable under ``refs/ipa/runs/<task8>/<workspace_id>`` (not a branch:
``git branch`` does not list it) when kept, so the pages can still show them. Only these names
and the task branch are ever deleted or moved: never a branch of the user's.

File access goes through :meth:`Workspace.resolve`: no absolute path, no ``..``, no NUL, no
``.git``, and nothing whose real path (symlinks followed) leaves the workspace root. The rule
guards the paths given to this API; it is not a sandbox for an agent that has a shell there.

A workspace id (1-128 of letters, digits, ``.``, ``-``, ``_``; no ``..``) names both a
directory and a branch component. Reads stop at a size limit (10 MiB by default).

Git runs without prompts (no terminal, ``GIT_TERMINAL_PROMPT=0``, no askpass), with hooks off,
no background gc, none of the caller's ``GIT_*`` variables that redirect a repository, and
under a timeout (``WorkspaceError`` when it expires). Clones, fetches and worktree changes of
one repository are serialised: two runs cloning into one cache, or racing on git's lock
files, would otherwise fail one of them. Commits of one workspace are serialised too.

Removing a workspace drops git's record of its worktree by path (``git worktree remove
--force --force PATH``), never with ``git worktree prune``, which would also drop the records
of the user's own worktrees whose directories are missing. :meth:`WorkspaceManager.sweep`
removes, at recovery, whatever a killed process left under the root.

**Submodules** of a new worktree are checked out by :mod:`.submodules`, which says from where.

This module records no events: the pod records each workspace change from what these methods
return (:class:`WorkspaceInfo`, :class:`CommitInfo`). Every failure is a
:class:`WorkspaceError` naming the workspace or repository and the problem.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import AsyncIterator, Container, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from uuid import UUID, uuid4

import anyio

from .branches import TaskBranch, TaskBranches, task_branch
from .submodules import SubmoduleCheckout
from .workspace_errors import (
    BranchConflict,
    PathOutsideWorkspace,
    RepositoryUnavailable,
    UnknownRevision,
    WorkspaceError,
    WorkspaceNotFound,
    _display,
    _reason,
)

__all__ = [
    "BranchConflict",
    "CommitInfo",
    "FileEntry",
    "PathOutsideWorkspace",
    "RepositoryUnavailable",
    "TaskBranch",
    "UnknownRevision",
    "Workspace",
    "WorkspaceError",
    "WorkspaceInfo",
    "WorkspaceManager",
    "WorkspaceNotFound",
    "task_branch",
]

log = logging.getLogger(__name__)

READ_LIMIT = 10 * 1024 * 1024
AUTHOR_NAME = "ipa"
AUTHOR_EMAIL = "ipa@localhost"

# Safe as a directory name and as a branch name component (with the checks in
# _check_workspace_id: no '..', no trailing '.' or '.lock').
_WORKSPACE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SCP_LIKE = re.compile(r"[\w.+-]+@[\w.-]+:")
# The caller's GIT_* variables are dropped (GIT_DIR, GIT_INDEX_FILE... would redirect every
# command) except these, which only say how to reach a remote or which config to read.
_KEPT_GIT_VARIABLES = frozenset(
    {
        "GIT_CONFIG_GLOBAL",
        "GIT_CONFIG_NOSYSTEM",
        "GIT_SSH",
        "GIT_SSH_COMMAND",
        "GIT_SSH_VARIANT",
        "GIT_SSL_CAINFO",
        "GIT_SSL_CAPATH",
        "GIT_PROXY_COMMAND",
    }
)
_IDENTITY = {
    "GIT_AUTHOR_NAME": AUTHOR_NAME,
    "GIT_AUTHOR_EMAIL": AUTHOR_EMAIL,
    "GIT_COMMITTER_NAME": AUTHOR_NAME,
    "GIT_COMMITTER_EMAIL": AUTHOR_EMAIL,
}
_GIT_OPTIONS = (
    "-c", "core.hooksPath=/dev/null",  # a repository's hooks are code we did not choose to run
    "-c", "core.askPass=",
    "-c", "commit.gpgSign=false",
    "-c", "gc.auto=0",  # no detached gc outliving the command
    "-c", "maintenance.auto=false",
)  # fmt: skip


@dataclass(frozen=True)
class WorkspaceInfo:
    """What a workspace is; the pod records it when the workspace is made."""

    task_id: UUID
    workspace_id: str
    path: Path
    branch: str
    repo: str
    base_commit: str


def _run_branch(task_id: UUID, workspace_id: str) -> str:
    return f"{task_branch(task_id)}-runs/{workspace_id}"


def _kept_ref(task_id: UUID, workspace_id: str) -> str:
    return f"refs/ipa/runs/{task_id.hex[:8]}/{workspace_id}"


@dataclass(frozen=True)
class FileEntry:
    """One entry of a listing; ``path`` is relative to the workspace root, '/'-separated.

    A symlink is reported as itself (``is_dir`` false, ``size`` of the link), never followed.
    """

    path: str
    is_dir: bool
    size: int
    is_symlink: bool = False


@dataclass(frozen=True)
class CommitInfo:
    """A commit made in a workspace: its sha and the paths it changed, sorted."""

    sha: str
    files: list[str]


class _Git:
    """Runs git with the environment, options and timeouts described in the module docstring."""

    def __init__(self, executable: str, timeout: float, clone_timeout: float) -> None:
        self.executable = executable
        self.timeout = timeout
        self.clone_timeout = clone_timeout

    async def __call__(
        self,
        *args: str,
        subject: str,
        cwd: Path | None = None,
        input: bytes | None = None,
        env: dict[str, str] | None = None,
        slow: bool = False,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``git <args>`` (in ``cwd``); the caller reads the return code."""
        location = ("-C", str(cwd)) if cwd is not None else ()
        environment = {
            name: value
            for name, value in os.environ.items()
            if (not name.startswith("GIT_") or name in _KEPT_GIT_VARIABLES)
            and name != "SSH_ASKPASS"
        }
        environment.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", **(env or {}))
        limit = self.clone_timeout if slow else self.timeout
        try:
            with anyio.fail_after(limit):
                return await anyio.run_process(
                    [self.executable, *_GIT_OPTIONS, *location, *args],
                    input=input,
                    stdin=None if input is not None else subprocess.DEVNULL,
                    check=False,
                    env=environment,
                    start_new_session=True,  # no controlling terminal: ssh cannot prompt either
                )
        except TimeoutError as e:
            raise WorkspaceError(f"{subject}: git {args[0]} took longer than {limit:g} s") from e
        except OSError as e:
            raise WorkspaceError(f"{subject}: cannot run {self.executable}: {e}") from e


def _is_url(repo: str) -> bool:
    return "://" in repo or _SCP_LIKE.match(repo) is not None


def _is_git(part: str) -> bool:
    return part.casefold() == ".git"


class _KeyedLocks:
    """One anyio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[anyio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (anyio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


@dataclass(frozen=True)
class _Source:
    git_dir: Path  # where `git worktree add` runs: the repository's git dir, or its cached clone
    url: str | None  # set when the worktree comes from a cached clone of this url


class Workspace:
    """One worktree: confined file access, diff and commit. Made by :class:`WorkspaceManager`."""

    def __init__(self, info: WorkspaceInfo, git: _Git, *, read_limit: int = READ_LIMIT) -> None:
        self.info = info
        self._git = git
        self._read_limit = read_limit
        self._root = Path(os.path.realpath(info.path))
        self._commit_lock = anyio.Lock()

    @property
    def name(self) -> str:
        return f"{self.info.task_id}/{self.info.workspace_id}"

    def resolve(self, relative: str) -> Path:
        """The real path of ``relative`` inside the workspace, or :class:`PathOutsideWorkspace`.

        Refused: absolute paths, a ``..`` component, a NUL byte, any ``.git`` component, and a
        path whose real location (symlinks followed, also dangling ones and symlinked parent
        directories) is outside the root or inside ``.git``. ``""`` is the root itself.
        """
        if "\0" in relative:
            raise PathOutsideWorkspace(self.name, relative, "it contains a NUL byte")
        pure = PurePosixPath(relative)
        if pure.is_absolute():
            raise PathOutsideWorkspace(self.name, relative, "it is absolute")
        if ".." in pure.parts:
            raise PathOutsideWorkspace(self.name, relative, "it has a '..' component")
        if any(_is_git(part) for part in pure.parts):
            raise PathOutsideWorkspace(self.name, relative, "it is inside .git")
        real = Path(os.path.realpath(self._root.joinpath(*pure.parts)))
        if not real.is_relative_to(self._root):
            raise PathOutsideWorkspace(
                self.name, relative, f"a symlink leads outside the workspace (to {real})"
            )
        if any(_is_git(part) for part in real.relative_to(self._root).parts):
            raise PathOutsideWorkspace(self.name, relative, "a symlink leads into .git")
        return real

    async def list(self, relative: str = "", *, recursive: bool = False) -> list[FileEntry]:
        """The entries of a directory (all below it if ``recursive``), sorted, without ``.git``."""
        return await anyio.to_thread.run_sync(self._list, relative, recursive)

    async def read(self, relative: str) -> bytes:
        """The bytes of a regular file, up to the read limit."""
        return await anyio.to_thread.run_sync(self._read, relative)

    async def write(self, relative: str, data: bytes) -> None:
        """Write a regular file, making its parent directories (inside the root) as needed."""
        await anyio.to_thread.run_sync(self._write, relative, data)

    async def diff(self) -> str:
        """The changes since the base commit: commits, working tree and untracked files alike.

        Files ignored by ``.gitignore`` are not included. The workspace's index is untouched:
        the diff is taken on a copy of it.
        """
        index = await self._run("rev-parse", "--path-format=absolute", "--git-path", "index")
        index_path = Path(index.stdout.decode().strip())
        scratch = Path(await anyio.to_thread.run_sync(_make_temp_dir))
        try:
            copy = scratch / "index"
            await anyio.to_thread.run_sync(_copy_if_present, index_path, copy)
            env = {"GIT_INDEX_FILE": str(copy)}
            await self._run("add", "--all", env=env)
            # Plain, stable output whatever the user's config: no colour, no external diff or
            # textconv programs, the usual a/ b/ prefixes.
            result = await self._run(
                "diff", "--cached", "--no-color", "--no-ext-diff", "--no-textconv",
                "--src-prefix=a/", "--dst-prefix=b/", self.info.base_commit, env=env,
            )  # fmt: skip
            return result.stdout.decode("utf-8", "replace")
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(functools.partial(shutil.rmtree, scratch, True))

    async def commit(self, message: str) -> CommitInfo | None:
        """Commit every change (``git add --all``) as ipa, with ``message`` kept verbatim.

        None when there is nothing to commit. Hooks do not run.
        """
        if not message.strip():
            raise WorkspaceError(f"workspace {self.name}: a commit needs a message")
        async with self._commit_lock:
            await self._run("add", "--all")
            staged = await self._run("diff", "--cached", "--quiet", check=False)
            if staged.returncode == 0:
                return None
            if staged.returncode != 1:
                raise WorkspaceError(f"workspace {self.name}: git diff failed: {_reason(staged)}")
            identity = {
                "GIT_AUTHOR_NAME": AUTHOR_NAME,
                "GIT_AUTHOR_EMAIL": AUTHOR_EMAIL,
                "GIT_COMMITTER_NAME": AUTHOR_NAME,
                "GIT_COMMITTER_EMAIL": AUTHOR_EMAIL,
            }
            await self._run(
                "commit", "--quiet", "--no-verify", "--cleanup=verbatim", "--file=-",
                input=message.encode(), env=identity,
            )  # fmt: skip
            sha = (await self._run("rev-parse", "HEAD")).stdout.decode().strip()
            changed = await self._run(
                "diff-tree", "-r", "-z", "--no-commit-id", "--name-only", "--no-renames", sha
            )
            files = sorted({os.fsdecode(p) for p in changed.stdout.split(b"\0") if p})
            return CommitInfo(sha=sha, files=files)

    async def merge(self, commit: str) -> list[str]:
        """Start merging ``commit`` into the worktree (``git merge --no-commit``), leaving its
        conflicts in the files for an agent to resolve; the next :meth:`commit` makes the merge
        commit. Returns the conflicted paths (``[]``: it merged cleanly)."""
        started = await self._run("merge", "--no-ff", "--no-commit", "--quiet", commit,
                                  check=False)
        conflicted = await self._run("diff", "--name-only", "--diff-filter=U", "-z")
        files = sorted({os.fsdecode(p) for p in conflicted.stdout.split(b"\0") if p})
        if started.returncode != 0 and not files:
            raise WorkspaceError(f"workspace {self.name}: git merge {commit[:12]} failed: "
                                 f"{_reason(started)}")
        return files

    async def _run(
        self,
        *args: str,
        check: bool = True,
        input: bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        subject = f"workspace {self.name}"
        result = await self._git(*args, subject=subject, cwd=self.info.path, input=input, env=env)
        if check and result.returncode != 0:
            raise WorkspaceError(f"{subject}: git {args[0]} failed: {_reason(result)}")
        return result

    def _failure(self, relative: str, error: OSError) -> WorkspaceError:
        return WorkspaceError(f"workspace {self.name}: {relative!r}: {error.strerror}")

    def _list(self, relative: str, recursive: bool) -> list[FileEntry]:
        directory = self.resolve(relative)
        prefix = "/".join(PurePosixPath(relative).parts)
        entries: list[FileEntry] = []

        def scan(path: str, prefix: str) -> None:
            with os.scandir(path) as it:
                for entry in it:
                    if _is_git(entry.name):
                        continue
                    name = f"{prefix}/{entry.name}" if prefix else entry.name
                    is_dir = entry.is_dir(follow_symlinks=False)
                    try:
                        size = 0 if is_dir else entry.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:  # deleted since the scan saw it
                        continue
                    entries.append(FileEntry(name, is_dir, size, entry.is_symlink()))
                    if recursive and is_dir:
                        scan(entry.path, name)

        try:
            scan(str(directory), prefix)
        except OSError as e:
            raise self._failure(relative, e) from e
        return sorted(entries, key=lambda entry: entry.path)

    def _read(self, relative: str) -> bytes:
        with self._open(relative, os.O_RDONLY) as file:
            data = file.read(self._read_limit + 1)
        if len(data) > self._read_limit:
            raise WorkspaceError(
                f"workspace {self.name}: {relative!r} is larger than the read limit "
                f"of {self._read_limit} bytes"
            )
        return data

    def _write(self, relative: str, data: bytes) -> None:
        with self._open(relative, os.O_WRONLY | os.O_CREAT | os.O_TRUNC) as file:
            file.write(data)

    def _open(self, relative: str, flags: int) -> BinaryIO:
        path = self.resolve(relative)
        # O_NOFOLLOW: the resolved path has no symlink, so one appearing since is refused;
        # O_NONBLOCK: a FIFO planted in the workspace cannot hang a worker thread.
        try:
            if flags & os.O_CREAT:
                path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, 0o666)
        except OSError as e:
            raise self._failure(relative, e) from e
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise WorkspaceError(f"workspace {self.name}: {relative!r} is not a regular file")
        return open(fd, "wb" if flags & os.O_WRONLY else "rb")


def _make_temp_dir() -> str:
    return tempfile.mkdtemp(prefix="ipa-diff-")


def _copy_if_present(source: Path, target: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        shutil.copyfile(source, target)


class WorkspaceManager:
    """Makes, re-opens and removes the workspaces under ``root`` (``<data dir>/workspaces``).

    ``timeout`` bounds each git command, ``clone_timeout`` each clone or fetch (a
    submodule's too). ``repo_roots``: where a submodule may be read from a local path (the
    repository policy's roots, ``--repo-root``); empty, anywhere (see :mod:`.submodules`).
    """

    def __init__(
        self,
        root: Path,
        *,
        git: str = "git",
        timeout: float = 30.0,
        clone_timeout: float = 120.0,
        read_limit: int = READ_LIMIT,
        repo_roots: Iterable[str | Path] = (),
    ) -> None:
        self.root = Path(os.path.abspath(Path(root).expanduser()))
        self._git = _Git(git, timeout, clone_timeout)
        self._read_limit = read_limit
        self._locks = _KeyedLocks()
        self._submodules = SubmoduleCheckout(
            self._git, hold=self._locks.hold, repo_roots=repo_roots
        )
        self._branches = TaskBranches(self._git, hold=self._locks.hold, identity=_IDENTITY)

    async def create(
        self, *, task_id: UUID, workspace_id: str, repo: str, base: str | None = None
    ) -> Workspace:
        """A new worktree of ``repo`` at ``base`` (default: the repository's default branch) on
        the run branch ``ipa/<task8>-runs/<workspace_id>``.

        Raises :class:`RepositoryUnavailable`, :class:`UnknownRevision`, or
        :class:`WorkspaceError` (bad id, already exists, git failed); a failed create leaves
        nothing behind.
        """
        _check_workspace_id(workspace_id)
        if base is not None and (not base or base.startswith("-")):
            raise UnknownRevision(repo, base)
        path = self._path(task_id, workspace_id)
        async with self._locks.hold(str(path)):
            try:
                info = await self._add(task_id, workspace_id, repo, base)
            except OSError as e:  # the data directory itself: full, read-only, ...
                raise WorkspaceError(f"workspace {task_id}/{workspace_id}: {e}") from e
        return Workspace(info, self._git, read_limit=self._read_limit)

    async def git_dir(self, repo: str) -> Path:
        """Where the branches and commits of ``repo``'s workspaces live (they outlive the
        worktrees): the repository's own git dir, or its cached clone for a URL or a bare
        repository. Raises :class:`RepositoryUnavailable`."""
        return (await self._source(repo)).git_dir

    async def default_branch(self, repo: str) -> str:
        """The branch a task of ``repo`` starts from unless it names one.

        For a URL or a bare repository: the remote's default branch (its ``HEAD``). For a
        local repository: the branch its ``origin``'s ``HEAD`` names, else
        ``init.defaultBranch``, ``main`` or ``master`` — the first that exists as a local
        branch — and only when none does, the branch checked out. Raises
        :class:`RepositoryUnavailable`, or :class:`UnknownRevision` when there is none.
        """
        source = await self._source(repo)
        async with self._locks.hold(str(source.git_dir)):
            if source.url is not None:
                await self._refresh(source, repo)
            return await self._branches.default(source, repo)

    async def make_branch(self, *, task_id: UUID, repo: str, base: str | None) -> TaskBranch:
        """Make the task's branch ``ipa/<task8>`` at the newest commit of the branch ``base``
        (default: :meth:`default_branch`); a branch of that name left by an earlier attempt
        is moved there. For a local repository a local branch wins over ``origin``'s. For a URL
        or a bare repository the branch is pushed to it as ``refs/ipa/<task8>`` (a refusal is
        logged).

        Raises :class:`RepositoryUnavailable`, :class:`UnknownRevision` (no such branch), or
        :class:`WorkspaceError`.
        """
        if base is not None and (not base or base.startswith("-")):
            raise UnknownRevision(repo, base)
        source = await self._source(repo)
        async with self._locks.hold(str(source.git_dir)):
            if source.url is not None:
                await self._refresh(source, repo)
            if base is None:
                base = await self._branches.default(source, repo)
            branch = await self._branches.make(source, repo, task_id, base)
        if source.url is not None:
            # Forced: the task has no branch recorded yet, so whatever the remote holds under
            # this task's name is a leftover of an earlier, unrecorded attempt of this task.
            await self._branches.publish(source, repo, task_id, f"+{branch.base_commit}")
        return branch

    async def fork_branch(self, *, task_id: UUID, repo: str, commit: str) -> str:
        """Make a fork's branch ``ipa/<task8>`` at ``commit``, the commit its source's branch
        had at the version forked (fetched into a cache that lacks it); for a URL or a bare
        repository it is pushed as ``refs/ipa/<task8>`` (a refusal is logged). Returns the
        branch's name. A branch of that name must not exist (the task is new).

        Raises :class:`RepositoryUnavailable`, :class:`UnknownRevision` (no such commit), or
        :class:`WorkspaceError`.
        """
        source = await self._source(repo)
        async with self._locks.hold(str(source.git_dir)):
            if source.url is not None:
                await self._refresh(source, repo)
            name = await self._branches.make_at(source, repo, task_id, commit)
        if source.url is not None:
            await self._branches.publish(source, repo, task_id, f"+{commit}")
        return name

    async def land(
        self, *, task_id: UUID, repo: str, commit: str, start: str, head: str
    ) -> str:
        """Put one job's work on the task branch and return the branch's new newest commit.

        ``commit`` is the newest commit of a run that started at ``start``; ``head`` is the
        task branch's newest commit now. When ``commit`` sits right on ``head`` the branch
        fast-forwards to it; otherwise one commit is made on ``head`` with the run's changes
        (``start`` → ``commit``, replayed by a three-way merge when other work landed since)
        and ``commit``'s message. Raises :class:`BranchConflict` when the changes conflict,
        :class:`WorkspaceError` when the branch is not at ``head``.
        """
        source = await self._source(repo)
        return await self._branches.land(
            source, repo, task_id, commit=commit, start=start, head=head
        )

    def open(self, task_id: UUID, workspace_id: str) -> Workspace:
        """Re-attach to an existing workspace (after a restart, or from another component).

        Synchronous (it reads one small record and checks two paths). Raises
        :class:`WorkspaceNotFound`, or :class:`WorkspaceError` when the record is unreadable.
        """
        _check_workspace_id(workspace_id)
        path = self._path(task_id, workspace_id)
        name = f"{task_id}/{workspace_id}"
        loaded = _load_record(self._record(path), name)
        if loaded is None:
            raise WorkspaceNotFound(f"workspace {name}: no such workspace under {self.root}")
        if not (path / ".git").is_file():  # a linked worktree's .git is a file
            raise WorkspaceNotFound(f"workspace {name}: its worktree {path} is gone")
        info, _ = loaded
        return Workspace(info, self._git, read_limit=self._read_limit)

    async def remove(
        self, task_id: UUID, workspace_id: str, *, keep_commits: bool = False
    ) -> None:
        """Remove the worktree and its run branch; idempotent.

        With ``keep_commits`` the run's commits stay reachable under
        ``refs/ipa/runs/<task8>/<workspace_id>`` (a pod keeps them while the work may be
        wanted: a job's commit lands on the task branch after its run ended); without, they
        go too. Cancelled midway, a later call finishes the job; a pod calls this from a
        shielded scope when it is being cancelled.
        """
        _check_workspace_id(workspace_id)
        path = self._path(task_id, workspace_id)
        name = f"{task_id}/{workspace_id}"
        async with self._locks.hold(str(path)):
            loaded = await anyio.to_thread.run_sync(_load_record, self._record(path), name)
            if loaded is not None:
                info, git_dir = loaded
                async with self._locks.hold(str(git_dir)):
                    try:
                        await self._discard(info, git_dir, keep_commits=keep_commits)
                    except OSError as e:
                        raise WorkspaceError(f"workspace {name}: {e}") from e
            elif await anyio.Path(path).exists():
                log.warning("workspace %s has no record; deleting its directory only", name)
                await self._delete_tree(path, name)
            with contextlib.suppress(OSError):
                await anyio.Path(path.parent).rmdir()  # the task's directory, once empty

    async def remove_task(self, task_id: UUID) -> None:
        """Remove every workspace of a task (a cancelled or finished task)."""
        task_dir = self.root / str(task_id)
        names = await anyio.to_thread.run_sync(_workspace_ids, task_dir)
        failures: list[str] = []
        for workspace_id in names:
            try:
                await self.remove(task_id, workspace_id)
            except WorkspaceError as e:
                failures.append(str(e))
        if failures:
            raise WorkspaceError("; ".join(failures))

    async def sweep(self, skip: Container[UUID] = ()) -> list[str]:
        """Remove every workspace under the root except those of the tasks in ``skip``, and
        what interrupted clones and records left; return the names removed.

        For recovery, before any run starts: a workspace exists only while its run does, so
        whatever a killed process left is a leftover. The runs' commits are kept (see
        :meth:`remove`); git's records of the removed worktrees are dropped by path, never
        with ``git worktree prune`` (see :meth:`remove`). A workspace that cannot be removed
        is logged and skipped.
        """
        removed: list[str] = []
        for task_id, names in await anyio.to_thread.run_sync(self._leftovers, skip):
            for workspace_id in names:
                try:
                    await self.remove(task_id, workspace_id, keep_commits=True)
                except WorkspaceError as e:
                    log.warning("sweep: %s", e)
                    continue
                removed.append(f"{task_id}/{workspace_id}")
        return removed

    def _leftovers(self, skip: Container[UUID]) -> list[tuple[UUID, list[str]]]:
        """The workspaces under the root by task (not in ``skip``); deletes half-written
        records and interrupted clones on the way."""
        try:
            entries = os.listdir(self.root)
        except FileNotFoundError:
            return []
        found = []
        for entry in entries:
            if entry == ".cache":
                for partial in (self.root / entry).glob("*.git.partial-*"):
                    shutil.rmtree(partial, ignore_errors=True)
                continue
            try:
                task_id = UUID(entry)
            except ValueError:
                continue
            if task_id in skip or str(task_id) != entry:
                continue
            for partial in (self.root / entry).glob(".*.json.partial"):
                partial.unlink(missing_ok=True)
            found.append((task_id, _workspace_ids(self.root / entry)))
        return found

    async def _add(
        self, task_id: UUID, workspace_id: str, repo: str, base: str | None
    ) -> WorkspaceInfo:
        """The body of create(); the caller holds the workspace's lock."""
        path = self._path(task_id, workspace_id)
        name = f"{task_id}/{workspace_id}"
        if await anyio.Path(path).exists() or await anyio.Path(self._record(path)).exists():
            raise WorkspaceError(f"workspace {name} already exists at {path}")
        source = await self._source(repo)
        # The task branch, or one of its commits, may be newer on the remote than here (the
        # task ran on another node): by name it is caught up first, by commit when unknown.
        caught_up = source.url is None
        if source.url is not None:
            async with self._locks.hold(str(source.git_dir)):
                await self._refresh(source, repo)
                if base == task_branch(task_id):
                    await self._branches.catch_up(source, repo, task_id)
                    caught_up = True
        # Reads, outside the repository's lock: only the worktree change below needs it.
        try:
            base_commit = await self._resolve(source, repo, base)
        except UnknownRevision:
            if caught_up or base is None:
                raise
            async with self._locks.hold(str(source.git_dir)):
                await self._branches.catch_up(source, repo, task_id)
            base_commit = await self._resolve(source, repo, base)
        branch = _run_branch(task_id, workspace_id)
        exists = await self._git_in(
            source.git_dir, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}",
            subject=f"repository {_display(repo)}",
        )  # fmt: skip
        if exists.returncode == 0:
            raise WorkspaceError(
                f"workspace {name}: branch {branch} already exists in repository "
                f"{_display(repo)} (left by an earlier run? remove() it)"
            )
        info = WorkspaceInfo(task_id, workspace_id, path, branch, repo, base_commit)
        async with self._locks.hold(str(source.git_dir)):
            try:
                await anyio.to_thread.run_sync(_save_record, self._record(path), info, source)
                added = await self._git_in(
                    source.git_dir, "worktree", "add", "--quiet", "-b", branch,
                    str(path), base_commit, subject=f"workspace {name}",
                )  # fmt: skip
                if added.returncode != 0:
                    raise WorkspaceError(
                        f"workspace {name}: git worktree add failed: {_reason(added)}"
                    )
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._discard(info, source.git_dir, keep_commits=False)
                raise
        # Outside the repository's lock (a submodule may take a while to fetch, and it
        # writes only below this worktree's own git dir), inside the workspace's.
        try:
            await self._submodules.check_out(
                repo, path, base_commit, url=source.url, git_dir=source.git_dir,
                subject=f"workspace {name}",
            )  # fmt: skip
        except BaseException:
            with anyio.CancelScope(shield=True):
                async with self._locks.hold(str(source.git_dir)):
                    await self._discard(info, source.git_dir, keep_commits=False)
                with contextlib.suppress(OSError):
                    await anyio.Path(path.parent).rmdir()  # the task's directory, once empty
            raise
        return info

    def _path(self, task_id: UUID, workspace_id: str) -> Path:
        return self.root / str(task_id) / workspace_id

    @staticmethod
    def _record(path: Path) -> Path:
        return path.with_name(f".{path.name}.json")

    async def _git_in(
        self, directory: Path, *args: str, subject: str, slow: bool = False
    ) -> subprocess.CompletedProcess[bytes]:
        return await self._git(*args, subject=subject, cwd=directory, slow=slow)

    async def _source(self, repo: str) -> _Source:
        if _is_url(repo):
            return _Source(self._cache_dir(repo), url=repo)
        path = Path(repo).expanduser()
        if not path.is_absolute():
            raise RepositoryUnavailable(repo, "neither a URL nor an absolute path")
        if not await anyio.Path(path).is_dir():
            raise RepositoryUnavailable(repo, "no such directory")
        real = Path(os.path.realpath(path))
        # The ceiling stops git from taking a directory inside some other repository for one.
        result = await self._git(
            "rev-parse", "--path-format=absolute", "--git-common-dir",
            "--is-bare-repository", subject=f"repository {_display(repo)}", cwd=real,
            env={"GIT_CEILING_DIRECTORIES": str(real.parent)},
        )  # fmt: skip
        if result.returncode != 0:
            raise RepositoryUnavailable(repo, f"not a git repository ({_reason(result)})")
        common_dir, bare = result.stdout.decode().split()
        if bare == "true":
            return _Source(self._cache_dir(str(real)), url=str(real))
        return _Source(Path(common_dir), url=None)

    def _cache_dir(self, url: str) -> Path:
        return self.root / ".cache" / f"{hashlib.sha256(url.encode()).hexdigest()[:16]}.git"

    async def _refresh(self, source: _Source, repo: str) -> None:
        """Clone the repository into the cache, or fetch it; the caller holds its lock."""
        assert source.url is not None
        cache = source.git_dir
        subject = f"repository {_display(repo)}"
        if await anyio.Path(cache).exists():
            fetched = await self._git_in(
                cache, "fetch", "--quiet", "--prune", "origin", subject=subject, slow=True
            )
            if fetched.returncode != 0:
                raise RepositoryUnavailable(repo, f"cannot fetch: {_reason(fetched)}")
            return
        # Cloned beside the cache and renamed into place: a failed clone leaves no cache.
        partial = cache.with_name(f"{cache.name}.partial-{uuid4().hex[:8]}")
        await anyio.Path(cache.parent).mkdir(parents=True, exist_ok=True)
        try:
            cloned = await self._git(
                "clone", "--bare", "--quiet", "--", source.url, str(partial),
                subject=subject, slow=True,
            )  # fmt: skip
            if cloned.returncode != 0:
                raise RepositoryUnavailable(repo, f"cannot clone: {_reason(cloned)}")
            # Remote branches go to refs/remotes/origin/, away from the workspaces' branches,
            # so a fetch with --prune never touches a branch a worktree has checked out.
            for step in (
                ("config", "remote.origin.fetch", "+refs/heads/*:refs/remotes/origin/*"),
                ("fetch", "--quiet", "--prune", "origin"),
            ):
                done = await self._git_in(partial, *step, subject=subject, slow=True)
                if done.returncode != 0:
                    raise RepositoryUnavailable(repo, f"cannot clone: {_reason(done)}")
            await anyio.Path(partial).rename(cache)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(functools.partial(shutil.rmtree, partial, True))

    async def _resolve(self, source: _Source, repo: str, base: str | None) -> str:
        subject = f"repository {_display(repo)}"
        if base is None:
            base = await self._branches.default(source, repo)
            candidates = ([f"refs/heads/{base}", f"refs/remotes/origin/{base}"]
                          if source.url is None else [f"refs/remotes/origin/{base}"])
        elif source.url is None:
            candidates = [base]
        else:
            candidates = [f"refs/remotes/origin/{base}", base]
        for candidate in candidates:
            found = await self._git_in(
                source.git_dir, "rev-parse", "--verify", "--quiet", "--end-of-options",
                f"{candidate}^{{commit}}", subject=subject,
            )  # fmt: skip
            if found.returncode == 0:
                return found.stdout.decode().strip()
        raise UnknownRevision(repo, base or "HEAD")

    async def _discard(self, info: WorkspaceInfo, git_dir: Path, *, keep_commits: bool) -> None:
        """Undo a workspace, whatever state it is in; the caller holds both locks."""
        name = f"{info.task_id}/{info.workspace_id}"
        subject = f"workspace {name}"
        # By path, and only this path: `git worktree prune` would also drop the records of the
        # user's own worktrees whose directories are missing (an unmounted disk, say). Forced
        # twice: a worktree that a crash left locked ("initializing") is removed as well, and
        # so is the record of one whose directory is already gone.
        path = os.path.realpath(info.path)
        removed = await self._git_in(
            git_dir, "worktree", "remove", "--force", "--force", path, subject=subject
        )
        if removed.returncode != 0 and await anyio.Path(info.path).exists():
            log.warning("%s: git worktree remove failed (%s)", subject, _reason(removed))
            await self._delete_tree(info.path, name)
            # Its directory is gone now; this drops the record git may still hold of it.
            await self._git_in(
                git_dir, "worktree", "remove", "--force", "--force", path, subject=subject
            )
        kept = _kept_ref(info.task_id, info.workspace_id)
        tip = await self._git_in(
            git_dir, "rev-parse", "--verify", "--quiet", f"refs/heads/{info.branch}",
            subject=subject,
        )  # fmt: skip
        tip_sha = tip.stdout.decode().strip() if tip.returncode == 0 else None
        if keep_commits and tip_sha is not None and tip_sha != info.base_commit:
            await self._git_in(git_dir, "update-ref", kept, tip_sha, subject=subject)
        elif not keep_commits:
            await self._git_in(git_dir, "update-ref", "-d", kept, subject=subject)
        # Only ipa's own names: a record naming any other branch is not acted on.
        if tip_sha is not None and info.branch.startswith("ipa/") and info.branch != task_branch(
            info.task_id
        ):
            deleted = await self._git_in(
                git_dir, "branch", "--quiet", "-D", info.branch, subject=subject
            )
            if deleted.returncode != 0:
                log.info("%s: branch %s not deleted (%s)", subject, info.branch, _reason(deleted))
        await anyio.Path(self._record(info.path)).unlink(missing_ok=True)

    async def _delete_tree(self, path: Path, name: str) -> None:
        try:
            await anyio.to_thread.run_sync(shutil.rmtree, path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise WorkspaceError(f"workspace {name}: cannot delete {path}: {e.strerror}") from e


def _valid_workspace_id(workspace_id: str) -> bool:
    return (
        _WORKSPACE_ID.fullmatch(workspace_id) is not None
        and ".." not in workspace_id
        and not workspace_id.endswith((".", ".lock"))
    )


def _check_workspace_id(workspace_id: str) -> None:
    if not _valid_workspace_id(workspace_id):
        raise WorkspaceError(
            f"workspace id {workspace_id!r}: use 1-128 letters, digits, '.', '-' or '_', "
            "starting with a letter or digit, without '..' and not ending in '.' or '.lock'"
        )


def _save_record(record: Path, info: WorkspaceInfo, source: _Source) -> None:
    record.parent.mkdir(parents=True, exist_ok=True)
    content = {
        "task_id": str(info.task_id),
        "workspace_id": info.workspace_id,
        "branch": info.branch,
        "repo": info.repo,
        "base_commit": info.base_commit,
        "git_dir": str(source.git_dir),
    }
    partial = record.with_name(f"{record.name}.partial")
    partial.write_text(json.dumps(content, indent=2))
    os.replace(partial, record)


def _load_record(record: Path, name: str) -> tuple[WorkspaceInfo, Path] | None:
    try:
        content = json.loads(record.read_text())
        info = WorkspaceInfo(
            task_id=UUID(content["task_id"]),
            workspace_id=content["workspace_id"],
            path=record.with_name(content["workspace_id"]),
            branch=content["branch"],
            repo=content["repo"],
            base_commit=content["base_commit"],
        )
        return info, Path(content["git_dir"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise WorkspaceError(f"workspace {name}: its record {record} is unreadable ({e})") from e


def _workspace_ids(task_dir: Path) -> list[str]:
    """The workspace ids found in a task's directory: records and directories alike."""
    try:
        names = os.listdir(task_dir)
    except FileNotFoundError:
        return []
    ids = {n[1:].removesuffix(".json") for n in names if n.startswith(".") and n.endswith(".json")}
    ids |= {n for n in names if not n.startswith(".")}
    return sorted(i for i in ids if _valid_workspace_id(i))
