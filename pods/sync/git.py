"""Plain git push of a task's commit to a remote branch, and the ``git`` connector."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import anyio

from ipa.domain import OutboxEntry, TaskState

from .errors import SyncError

_TRANSIENT = ("could not resolve host", "connection timed out", "connection refused",
              "operation timed out", "temporary failure", "the remote end hung up",
              "rpc failed", "early eof", "service unavailable", "returned error: 5")
_NOT_FOUND = ("does not appear to be a git repository", "repository not found",
              "not found", "no such file or directory")


async def push(connector: str, git_dir: Path, remote: str, commit: str, branch: str, *,
               expect: str | None, token: str | None = None, timeout: float = 120.0) -> None:
    """Push ``commit`` (from ``git_dir``) to ``refs/heads/<branch>`` of ``remote``.

    The branch is the task's: it is replaced (a run may start afresh), but only while it is
    still at ``expect``, the commit ipa pushed last (``None``: it must not exist yet), so work
    that someone else pushed there is never overwritten (``--force-with-lease``).

    A token goes in an HTTP header through the environment, never on the command line or in
    the remote URL. Raises :class:`SyncError`: rejected (not a fast-forward, a hook said no)
    and a missing remote are held for a person; network trouble is transient.
    """
    environment = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in (
        "GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM", "GIT_SSH", "GIT_SSH_COMMAND")}
    environment.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    if token:
        basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        environment.update(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="http.extraHeader",
                           GIT_CONFIG_VALUE_0=f"Authorization: Basic {basic}")
    lease = f"--force-with-lease=refs/heads/{branch}:{expect or ''}"
    argv = ["git", "-C", str(git_dir), "push", "--porcelain", lease, "--", remote,
            f"{commit}:refs/heads/{branch}"]
    try:
        with anyio.fail_after(timeout):
            result = await anyio.run_process(argv, check=False, env=environment,
                                             stdin=subprocess.DEVNULL, start_new_session=True)
    except TimeoutError:
        raise SyncError(connector, f"git push to {remote} took longer than {timeout:g} s",
                        transient=True) from None
    except OSError as e:
        raise SyncError(connector, f"cannot run git: {e}") from None
    if result.returncode == 0:
        return
    said = (result.stderr + result.stdout).decode("utf-8", "replace")
    lowered = said.lower()
    summary = _summary(said)
    if "rejected" in lowered or "declined" in lowered or "[remote rejected]" in lowered:
        raise SyncError(connector, f"the remote rejected the push of {branch}: {summary}",
                        incident="rejected")
    if any(marker in lowered for marker in _TRANSIENT):
        raise SyncError(connector, f"git push to {remote} failed: {summary}", transient=True)
    if any(marker in lowered for marker in _NOT_FOUND):
        raise SyncError(connector, f"the remote {remote} does not exist: {summary}",
                        incident="repository_not_found")
    raise SyncError(connector, f"git push of {branch} failed: {summary}")


def _summary(said: str) -> str:
    lines = [ln.strip() for ln in said.splitlines() if ln.strip()]
    wanted = [ln for ln in lines if ln.startswith(("!", "error:", "fatal:", "remote:"))]
    return " | ".join(wanted or lines[-2:])[:500] or "no output"


class GitConnector:
    """Pushes the task's branch to a plain git remote (kind ``push``)."""

    name = "git"

    def __init__(self, git_dir_of, timeout: float) -> None:
        self._git_dir_of = git_dir_of
        self._timeout = timeout

    async def deliver(self, entry: OutboxEntry, state: TaskState) -> dict[str, Any]:
        payload = entry.payload
        git_dir = await self._git_dir_of(self.name, payload["source"])
        last = state.outbox.delivered.get("git:push", {}).get("result", {}).get("commit")
        await push(self.name, git_dir, payload["remote"], payload["commit"], payload["branch"],
                   expect=last, timeout=self._timeout)
        return {"commit": payload["commit"], "branch": payload["branch"]}

    async def poll(self, state: TaskState) -> list[tuple[str, Any]]:
        return []
