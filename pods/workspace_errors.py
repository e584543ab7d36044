"""The errors of workspaces (:mod:`.workspace`, :mod:`.submodules`): ``WorkspaceError`` and the
conditions below it, each naming the workspace or repository (a URL's password masked) and the
problem, often in git's own words (:func:`_reason`).

They live apart from :mod:`.workspace` so that :mod:`.submodules`, which the workspace manager
uses, can raise them without importing the manager; :mod:`.workspace` re-exports them.
"""

from __future__ import annotations

import re
import subprocess

__all__ = [
    "BranchConflict",
    "PathOutsideWorkspace",
    "RepositoryUnavailable",
    "UnknownRevision",
    "WorkspaceError",
    "WorkspaceNotFound",
]

_URL_PASSWORD = re.compile(r"(://[^/@:]*):[^/@]*@")


class WorkspaceError(Exception):
    """Base of every workspace error; the message names the workspace or repository."""


class RepositoryUnavailable(WorkspaceError):
    """The repository does not exist, is not a git repository, or cannot be cloned/fetched."""

    def __init__(self, repo: str, reason: str) -> None:
        super().__init__(f"repository {_display(repo)}: {reason}")
        self.repo = repo
        self.reason = reason


class UnknownRevision(WorkspaceError):
    """The base names no commit of the repository."""

    def __init__(self, repo: str, revision: str) -> None:
        super().__init__(f"repository {_display(repo)}: no commit named {revision!r}")
        self.repo = repo
        self.revision = revision


class BranchConflict(WorkspaceError):
    """A job's changes conflict, in ``files``, with what landed on the task branch since its
    run started."""

    def __init__(self, message: str, files: list[str]) -> None:
        super().__init__(message)
        self.files = files


class WorkspaceNotFound(WorkspaceError):
    """No such workspace under the root (never made, removed, or its directory is gone)."""


class PathOutsideWorkspace(WorkspaceError):
    """A path given to a workspace is refused by the confinement rule."""

    def __init__(self, workspace: str, path: str, reason: str) -> None:
        super().__init__(f"workspace {workspace}: path {path!r} refused: {reason}")
        self.workspace = workspace
        self.path = path


def _reason(result: subprocess.CompletedProcess[bytes]) -> str:
    """git's own explanation: its first ``fatal:``/``error:`` line, else its first line."""
    lines = [ln.strip() for ln in result.stderr.decode("utf-8", "replace").splitlines()]
    lines = [ln for ln in lines if ln]
    for line in lines:
        for prefix in ("fatal: ", "error: "):
            if line.startswith(prefix):
                return line.removeprefix(prefix)
    return lines[0] if lines else f"git exited with status {result.returncode}"


def _display(repo: str) -> str:
    return repr(_URL_PASSWORD.sub(r"\1:***@", repo))
