"""Read-only browsing of a workspace's files at a recorded commit, with git.

A workspace's worktree is removed after its run, but its branch and commits stay in the
repository (or in the cached clone of a remote one), so its files are read from git objects:
``git ls-tree`` for a directory, ``git cat-file`` for a file, ``git diff`` between two commits.
Nothing here touches a working tree, and nothing can leave the repository: a path is a path
inside a commit's tree (no absolute path, no ``..``, no NUL, no ``.git``), a symlink is shown
as the link text it stores, and only full commit ids are taken. Reads stop at ``limit`` bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .workspace import WorkspaceError, WorkspaceManager, _Git, _reason

__all__ = ["BrowseError", "CommitBrowser", "Comparison", "DiffText", "FileContent", "TreeEntry"]

READ_LIMIT = 1024 * 1024
DIFF_LIMIT = 4 * 1024 * 1024
_COMMIT = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


class BrowseError(WorkspaceError):
    """A refused path or commit, or a path that is not in the commit."""


@dataclass(frozen=True)
class TreeEntry:
    path: str
    type: str  # "file", "dir", "symlink" or "submodule"
    size: int | None


@dataclass(frozen=True)
class FileContent:
    path: str
    size: int
    content: bytes | None  # None when larger than the limit
    is_symlink: bool = False


@dataclass(frozen=True)
class DiffText:
    text: str
    truncated: bool
    files: list[tuple[str, str]]  # (status letter, path)


@dataclass(frozen=True)
class Comparison:
    """A task branch against its base: the diff, and how many files and lines changed."""

    diff: DiffText
    files: int
    insertions: int
    deletions: int


def clean_path(path: str) -> str:
    """``path`` as a '/'-separated path inside a tree, or :class:`BrowseError`."""
    if "\0" in path:
        raise BrowseError(f"path {path!r} refused: it contains a NUL byte")
    pure = PurePosixPath(path)
    if pure.is_absolute():
        raise BrowseError(f"path {path!r} refused: it is absolute")
    if ".." in pure.parts:
        raise BrowseError(f"path {path!r} refused: it has a '..' component")
    if any(part.casefold() == ".git" for part in pure.parts):
        raise BrowseError(f"path {path!r} refused: it is inside .git")
    return "/".join(part for part in pure.parts if part != ".")


def check_commit(commit: str) -> str:
    if not _COMMIT.fullmatch(commit):
        raise BrowseError(f"commit {commit!r} refused: expected a full commit id")
    return commit


class CommitBrowser:
    """Reads trees, files and diffs of ``repo`` at commits, through ``workspaces``' git dirs."""

    def __init__(self, workspaces: WorkspaceManager, *, timeout: float = 30.0,
                 read_limit: int = READ_LIMIT, diff_limit: int = DIFF_LIMIT) -> None:
        self._workspaces = workspaces
        self._git = _Git("git", timeout, timeout)
        self.read_limit = read_limit
        self.diff_limit = diff_limit

    async def _run(self, repo: str, *args: str) -> tuple[int, bytes, str]:
        git_dir: Path = await self._workspaces.git_dir(repo)
        result = await self._git(*args, subject=f"repository {repo!r}", cwd=git_dir)
        return result.returncode, result.stdout, _reason(result) if result.returncode else ""

    async def kind(self, repo: str, commit: str, path: str) -> str:
        """``"tree"`` or ``"blob"`` (or :class:`BrowseError` when the path is not there)."""
        spec = f"{check_commit(commit)}:{clean_path(path)}"
        code, out, why = await self._run(repo, "cat-file", "-t", spec)
        if code != 0:
            raise BrowseError(f"{path or '/'!r} is not in commit {commit[:12]} ({why})")
        return out.decode().strip()

    async def list(self, repo: str, commit: str, path: str = "") -> list[TreeEntry]:
        """The entries of a directory at ``commit``, sorted by path."""
        path = clean_path(path)
        target = f"{check_commit(commit)}:{path}" if path else f"{commit}:"
        code, out, why = await self._run(repo, "ls-tree", "-z", "-l", target)
        if code != 0:
            raise BrowseError(f"{path or '/'!r} is not a directory in commit {commit[:12]} "
                              f"({why})")
        entries = []
        for record in out.split(b"\0"):
            if not record:
                continue
            meta, _, name = record.partition(b"\t")
            mode, kind, _object, size = meta.decode().split(maxsplit=3)
            shown = name.decode("utf-8", "replace")
            if shown.casefold() == ".git":
                continue
            full = f"{path}/{shown}" if path else shown
            entry_type = {"tree": "dir", "commit": "submodule"}.get(kind, "file")
            if mode == "120000":
                entry_type = "symlink"
            entries.append(TreeEntry(full, entry_type, int(size) if size != "-" else None))
        return sorted(entries, key=lambda e: e.path)

    async def read(self, repo: str, commit: str, path: str) -> FileContent:
        """A file at ``commit`` (its content, when not larger than the read limit)."""
        path = clean_path(path)
        if not path:
            raise BrowseError("the root is a directory, not a file")
        spec = f"{check_commit(commit)}:{path}"
        entries = await self.list(repo, commit, str(PurePosixPath(path).parent)
                                  if "/" in path else "")
        entry = next((e for e in entries if e.path == path), None)
        if entry is None or entry.type in ("dir", "submodule"):
            raise BrowseError(f"{path!r} is not a file in commit {commit[:12]}")
        size = entry.size or 0
        if size > self.read_limit:
            return FileContent(path, size, None, entry.type == "symlink")
        code, out, why = await self._run(repo, "cat-file", "blob", spec)
        if code != 0:
            raise BrowseError(f"{path!r} cannot be read at commit {commit[:12]} ({why})")
        return FileContent(path, size, out, entry.type == "symlink")

    async def diff(self, repo: str, base: str, commit: str) -> DiffText:
        """What changed from ``base`` to ``commit`` (plain unified diff, truncated at the
        diff limit), and the changed paths with their status letters."""
        check_commit(base)
        check_commit(commit)
        code, out, why = await self._run(
            repo, "diff", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames",
            "--src-prefix=a/", "--dst-prefix=b/", base, commit, "--",
        )
        if code != 0:
            raise BrowseError(f"cannot diff {base[:12]}..{commit[:12]} ({why})")
        code, names, why = await self._run(
            repo, "diff", "--name-status", "-z", "--no-renames", base, commit, "--")
        parts = [p.decode("utf-8", "replace") for p in names.split(b"\0") if p]
        files = list(zip(parts[0::2], parts[1::2], strict=False)) if code == 0 else []
        truncated = len(out) > self.diff_limit
        return DiffText(out[: self.diff_limit].decode("utf-8", "replace"), truncated, files)

    async def compare(self, repo: str, base: str, head: str) -> Comparison:
        """:meth:`diff` from ``base`` to ``head`` with its stat (binary files count no lines)."""
        diff = await self.diff(repo, base, head)
        code, out, why = await self._run(
            repo, "diff", "--numstat", "-z", "--no-renames", check_commit(base),
            check_commit(head), "--")
        if code != 0:
            raise BrowseError(f"cannot diff {base[:12]}..{head[:12]} ({why})")
        insertions = deletions = files = 0
        for record in out.split(b"\0"):
            added, _, rest = record.partition(b"\t")
            removed, _, _path = rest.partition(b"\t")
            if not record:
                continue
            files += 1
            insertions += int(added) if added.isdigit() else 0
            deletions += int(removed) if removed.isdigit() else 0
        return Comparison(diff, files, insertions, deletions)

    async def patch(self, repo: str, base: str, head: str) -> bytes:
        """``git format-patch`` of the commits from ``base`` to ``head``, as one mbox (binary
        changes included, full ids), for ``git am`` or ``git apply`` on the base."""
        code, out, why = await self._run(
            repo, "format-patch", "--stdout", "--no-color", "--binary", "--full-index",
            "--no-signature", "--no-renames", "--no-ext-diff", "--no-textconv",
            f"{check_commit(base)}..{check_commit(head)}", "--")
        if code != 0:
            raise BrowseError(f"cannot make a patch of {base[:12]}..{head[:12]} ({why})")
        return out
