"""Task branches: a task's work is delivered on one branch, ``ipa/<task8>``.

The branch (:func:`task_branch`) is made at the task's base by :meth:`TaskBranches.make`: by
default the repository's default branch (:meth:`TaskBranches.default`), never merely what the
user has checked out. Each run works on a branch of its own made at the task branch's newest
commit (see :mod:`.workspace`); a succeeded job's commit is put on the task branch by
:meth:`TaskBranches.land` (a fast-forward, or the job's changes replayed on what landed
meanwhile), so the task branch has one commit per job. No branch but this one is moved here:
never a branch of the user's.

**Across nodes.** A cache is one node's (each node has its own data directory), so for a URL
or a bare repository the task branch is also pushed to the remote as ``refs/ipa/<task8>``
(:func:`_shared_ref`) when it is made and after each landing; a node whose cache lacks the
task's commits (the task moved to it: failover, drain) fetches that ref (into
``refs/ipa/origin/<task8>``) and makes or fast-forwards its task branch from it. A remote that
refuses the push is logged, never a failed landing: the task carries on, on this node only. A
local non-bare repository holds the branch itself; nothing is pushed from it.

The :class:`~.workspace.WorkspaceManager` owns a :class:`TaskBranches` and delegates
:meth:`~.workspace.WorkspaceManager.make_branch`, :meth:`~.workspace.WorkspaceManager.land`
and :meth:`~.workspace.WorkspaceManager.default_branch` to it: the manager finds the
repository (its :class:`Source`: its git dir, or its cached clone, fetched) and holds the
repository's lock where these methods say the caller does; git runs through the manager's
runner. This module records no events: the pod records the branch from what these methods
return (:class:`TaskBranch`, the new newest commit). Every failure is a
:class:`~.workspace_errors.WorkspaceError` naming the repository and the problem.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from uuid import UUID

from .workspace_errors import BranchConflict, UnknownRevision, WorkspaceError, _display, _reason

__all__ = ["GitRunner", "Source", "TaskBranch", "TaskBranches", "task_branch"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskBranch:
    """The task's branch ``name``, made at ``base_commit``, the newest commit of ``base``."""

    name: str
    base: str
    base_commit: str


def task_branch(task_id: UUID) -> str:
    """The name of the branch that carries a task's work: ``ipa/<first 8 hex digits>``."""
    return f"ipa/{task_id.hex[:8]}"


def _shared_ref(task_id: UUID) -> str:
    """Where a remote holds the task branch for every node: ``refs/ipa/<task8>``."""
    return f"refs/ipa/{task_id.hex[:8]}"


def _fetched_ref(task_id: UUID) -> str:
    # Not refs/ipa/<task8> in the cache: `ipa/<task8>` would then name it before the branch.
    return f"refs/ipa/origin/{task_id.hex[:8]}"


class GitRunner(Protocol):
    """Runs ``git <args>`` as :class:`.submodules.GitRunner` does, with ``input`` on its
    standard input."""

    async def __call__(
        self,
        *args: str,
        subject: str,
        cwd: Path | None = None,
        input: bytes | None = None,
        env: dict[str, str] | None = None,
        slow: bool = False,
    ) -> subprocess.CompletedProcess[bytes]: ...


class Source(Protocol):
    """Where a repository's branches live: ``git_dir``, the repository's own git dir, or its
    cached clone when ``url`` (the remote the cache is a clone of) is set."""

    @property
    def git_dir(self) -> Path: ...

    @property
    def url(self) -> str | None: ...


class TaskBranches:
    """Makes task branches, lands jobs' commits on them, and shares them through the remote.

    ``git`` runs git; ``hold(key)`` is the manager's lock of a repository (keyed by its git
    dir), taken for the fetches a landing needs; ``identity``: the ``GIT_AUTHOR_*`` and
    ``GIT_COMMITTER_*`` variables of the commits a landing makes.
    """

    def __init__(
        self,
        git: GitRunner,
        *,
        hold: Callable[[str], AbstractAsyncContextManager[None]],
        identity: Mapping[str, str],
    ) -> None:
        self._git = git
        self._hold = hold
        self._identity = dict(identity)

    async def make(self, source: Source, repo: str, task_id: UUID, base: str) -> TaskBranch:
        """Make the task's branch at the newest commit of the branch ``base`` (for a local
        repository its local branch first, then ``origin``'s), moving one left by an earlier
        attempt; the caller holds the repository's lock, and pushes the branch
        (:meth:`publish`) once it has released it."""
        subject = f"repository {_display(repo)}"
        name = task_branch(task_id)
        candidates = [f"refs/remotes/origin/{base}"]
        if source.url is None:
            candidates.insert(0, f"refs/heads/{base}")
        base_commit = await self._first_commit(source.git_dir, candidates, subject)
        if base_commit is None:
            raise UnknownRevision(repo, base)
        await self._move_old_run_branches(source.git_dir, name, task_id, subject)
        made = await self._git_in(
            source.git_dir, "update-ref", "-m", f"ipa: task branch from {base}",
            f"refs/heads/{name}", base_commit, subject=subject,
        )  # fmt: skip
        if made.returncode != 0:
            raise WorkspaceError(f"{subject}: cannot make branch {name}: {_reason(made)}")
        return TaskBranch(name, base, base_commit)

    async def make_at(self, source: Source, repo: str, task_id: UUID, commit: str) -> str:
        """Make the task's branch at ``commit`` (a fork's: the commit its source's branch
        had), fetched first into a cache that lacks it; return the branch's name. The caller
        holds the repository's lock, and pushes the branch (:meth:`publish`) once it has
        released it. :class:`UnknownRevision` when the repository has no such commit."""
        subject = f"repository {_display(repo)}"
        name = task_branch(task_id)
        found = await self._first_commit(source.git_dir, [commit], subject)
        if found is None and source.url is not None and await self._fetch(source, repo, commit):
            found = await self._first_commit(source.git_dir, [commit], subject)
        if found is None:
            raise UnknownRevision(repo, commit)
        made = await self._git_in(
            source.git_dir, "update-ref", "-m", f"ipa: task branch at {found[:12]}",
            f"refs/heads/{name}", found, "", subject=subject,
        )  # fmt: skip
        if made.returncode != 0:
            raise WorkspaceError(f"{subject}: cannot make branch {name}: {_reason(made)}")
        return name

    async def default(self, source: Source, repo: str) -> str:
        """The branch a task of ``repo`` starts from unless it names one: see
        :meth:`.workspace.WorkspaceManager.default_branch`. It only reads (a cache as last
        fetched)."""
        subject = f"repository {_display(repo)}"
        git_dir = source.git_dir

        async def output(*args: str) -> str | None:
            result = await self._git_in(git_dir, *args, subject=subject)
            text = result.stdout.decode().strip()
            return text if result.returncode == 0 and text else None

        if source.url is not None:
            head = await output("symbolic-ref", "--quiet", "HEAD")
            if head is None:
                raise UnknownRevision(repo, "the remote's default branch")
            return head.removeprefix("refs/heads/")
        origin = await output("symbolic-ref", "--quiet", "refs/remotes/origin/HEAD")
        names = [origin.removeprefix("refs/remotes/origin/")] if origin else []
        configured = await output("config", "--get", "init.defaultBranch")
        names += [configured] if configured else []
        for name in [*names, "main", "master"]:
            if await output("rev-parse", "--verify", "--quiet", f"refs/heads/{name}") is not None:
                return name
        checked_out = await output("symbolic-ref", "--quiet", "--short", "HEAD")
        if checked_out is None or await output(
            "rev-parse", "--verify", "--quiet", f"refs/heads/{checked_out}"
        ) is None:
            raise UnknownRevision(repo, "a default branch (main, master or origin's HEAD)")
        return checked_out

    async def land(
        self, source: Source, repo: str, task_id: UUID, *, commit: str, start: str, head: str
    ) -> str:
        """See :meth:`.workspace.WorkspaceManager.land`; the caller holds no lock."""
        # Without the repository's lock, which only worktree changes, fetches and branch
        # creation need (git breaks when two worktrees are added at once): this writes objects
        # (each written whole, under its own name) and moves one branch with ``update-ref``'s
        # compare-and-swap, and a branch's landings come one at a time (the caller's lock).
        # The fetches below, needed only when the task ran on another node, take the lock.
        subject = f"repository {_display(repo)}"
        name = task_branch(task_id)
        git_dir = source.git_dir
        if source.url is not None:
            await self._fetch_missing(source, repo, task_id, commit=commit, head=head)
        parent = await self._first_commit(git_dir, [f"{commit}^"], subject)
        if parent == head:
            new = commit
        else:
            tree = await self._replayed_tree(git_dir, commit, start, head, subject)
            message = await self._git_in(git_dir, "log", "-1", "--format=%B", commit,
                                         subject=subject)
            made = await self._git(
                "commit-tree", tree, "-p", head, "-F", "-", subject=subject, cwd=git_dir,
                input=message.stdout or b"ipa\n", env=self._identity,
            )  # fmt: skip
            if made.returncode != 0:
                raise WorkspaceError(f"{subject}: git commit-tree failed: {_reason(made)}")
            new = made.stdout.decode().strip()
        was = await self._unrecorded_tip(source, name, head, subject)
        moved = await self._git_in(
            git_dir, "update-ref", "-m", f"ipa: land {commit[:12]}", f"refs/heads/{name}",
            new, was, subject=subject,
        )  # fmt: skip
        if moved.returncode != 0:
            raise WorkspaceError(
                f"{subject}: branch {name} is not at {was[:12] or 'nothing'}: {_reason(moved)}")
        if source.url is not None:
            if not was or await self._is_ancestor(git_dir, was, new, subject):
                # Forward only: a remote left behind by a failed push catches up, and one
                # holding work this node never saw (a stale owner's push) refuses.
                await self.publish(source, repo, task_id, new)
            else:
                # Back over an unrecorded landing (see _unrecorded_tip), which the remote may
                # hold: replaced only while it still does, never over another node's push.
                await self.publish(source, repo, task_id, new, lease=was)
        return new

    async def catch_up(self, source: Source, repo: str, task_id: UUID) -> None:
        """Fetch the remote's ``refs/ipa/<task8>`` (what the task's last node pushed) and make
        the cache's task branch from it, or fast-forward it; the caller holds the lock.

        A cache branch that is not behind the remote's stays: it holds this node's landings
        that did not reach the remote. No such ref on the remote (a read-only remote, or a
        task that never ran elsewhere) changes nothing."""
        assert source.url is not None
        git_dir = source.git_dir
        subject = f"repository {_display(repo)}"
        name, fetched_ref = task_branch(task_id), _fetched_ref(task_id)
        if not await self._fetch(source, repo, f"+{_shared_ref(task_id)}:{fetched_ref}"):
            return
        shared = await self._first_commit(git_dir, [fetched_ref], subject)
        local = await self._first_commit(git_dir, [f"refs/heads/{name}"], subject)
        if shared is None or local == shared:
            return
        if local is not None and not await self._is_ancestor(git_dir, local, shared, subject):
            return
        # Compare-and-swap ("": must not exist): a landing of this node is never overwritten.
        moved = await self._git_in(
            git_dir, "update-ref", "-m", "ipa: task branch from the remote",
            f"refs/heads/{name}", shared, local or "", subject=subject,
        )  # fmt: skip
        if moved.returncode != 0:
            raise WorkspaceError(f"{subject}: cannot move branch {name}: {_reason(moved)}")

    async def publish(
        self, source: Source, repo: str, task_id: UUID, src: str, *, lease: str | None = None
    ) -> None:
        """Push ``src`` (a commit, ``+`` in front to force) to the remote as
        ``refs/ipa/<task8>``, with ``--force-with-lease`` on ``lease`` when given. A refusal
        is logged, not raised: the task goes on here; only another node could not continue
        it from the remote."""
        ref = _shared_ref(task_id)
        subject = f"repository {_display(repo)}"
        options = [f"--force-with-lease={ref}:{lease}"] if lease else []
        try:
            pushed = await self._git_in(
                source.git_dir, "push", "--quiet", *options, "origin", f"{src}:{ref}",
                subject=subject, slow=True,
            )  # fmt: skip
        except WorkspaceError as e:  # timed out
            reason = str(e)
        else:
            if pushed.returncode == 0:
                return
            lines = pushed.stderr.decode("utf-8", "replace").splitlines()
            rejected = [line.strip() for line in lines if "rejected]" in line]
            reason = rejected[0] if rejected else _reason(pushed)
        log.warning("%s: task branch %s not pushed as %s (%s): only this node can continue "
                    "the task", subject, task_branch(task_id), ref, reason)

    async def _unrecorded_tip(self, source: Source, name: str, head: str, subject: str) -> str:
        """Where the task branch is, expected at ``head`` (the newest commit the task
        recorded). A branch ahead of ``head`` holds a landing whose record a crash lost: that
        job's run was recorded interrupted and runs again, so the branch goes back over it. A
        branch anywhere else was moved by someone else and is left alone.

        In a cache (a URL's or a bare repository's clone), which only ipa writes, a branch
        missing (``""``: update-ref makes it) or behind ``head`` is this node's stale copy:
        the task ran on another node, whose branch the remote did not get."""
        git_dir = source.git_dir
        tip = await self._first_commit(git_dir, [f"refs/heads/{name}"], subject)
        if tip is None:
            return "" if source.url is not None else head
        if tip == head:
            return head
        if source.url is not None and await self._is_ancestor(git_dir, tip, head, subject):
            return tip
        if not await self._is_ancestor(git_dir, head, tip, subject):
            raise WorkspaceError(
                f"{subject}: branch {name} was moved to {tip[:12]} outside ipa (the task "
                f"recorded {head[:12]}); move it back or start a new task")
        log.warning("%s: branch %s is at %s, ahead of the recorded %s (a landing without its "
                    "record, from a crash): it goes back over it", subject, name, tip[:12],
                    head[:12])
        return tip

    async def _fetch_missing(
        self, source: Source, repo: str, task_id: UUID, *, commit: str, head: str
    ) -> None:
        """Before a landing in a cache: catch the task branch up with the remote's when it is
        not at ``head`` (the task ran on another node), and fetch ``commit`` when the cache
        lacks it (a child task's work, made on another node). The fetches hold the lock."""
        git_dir = source.git_dir
        subject = f"repository {_display(repo)}"
        tip = await self._first_commit(git_dir, [f"refs/heads/{task_branch(task_id)}"], subject)
        if tip != head:
            async with self._hold(str(git_dir)):
                await self.catch_up(source, repo, task_id)
        if await self._first_commit(git_dir, [commit], subject) is None:
            async with self._hold(str(git_dir)):
                await self._fetch(source, repo, commit)  # else the landing fails, naming it

    async def _fetch(self, source: Source, repo: str, refspec: str) -> bool:
        """Fetch ``refspec`` (a commit, or ``+src:dst``) from the remote; the caller holds the
        lock. False, logged, when it cannot: what needed it then fails naming the commit."""
        subject = f"repository {_display(repo)}"
        try:
            fetched = await self._git_in(
                source.git_dir, "fetch", "--quiet", "--no-write-fetch-head", "origin", refspec,
                subject=subject, slow=True,
            )  # fmt: skip
        except WorkspaceError as e:  # timed out
            reason = str(e)
        else:
            if fetched.returncode == 0:
                return True
            reason = _reason(fetched)
        log.info("%s: %s not fetched (%s)", subject, refspec, reason)
        return False

    async def _is_ancestor(self, git_dir: Path, older: str, newer: str, subject: str) -> bool:
        result = await self._git_in(git_dir, "merge-base", "--is-ancestor", older, newer,
                                    subject=subject)
        if result.returncode not in (0, 1):
            raise WorkspaceError(f"{subject}: git merge-base failed: {_reason(result)}")
        return result.returncode == 0

    async def _replayed_tree(
        self, git_dir: Path, commit: str, start: str, head: str, subject: str
    ) -> str:
        if start == head:
            tree = await self._first_commit(git_dir, [f"{commit}^{{tree}}"], subject)
            if tree is None:
                raise WorkspaceError(f"{subject}: no commit {commit}")
            return tree
        # The merge base of head and commit is start (the branch only moves forward), so this
        # is the run's changes replayed on head.
        merged = await self._git_in(
            git_dir, "merge-tree", "--write-tree", "--name-only", "--no-messages", head, commit,
            subject=subject,
        )  # fmt: skip
        lines = merged.stdout.decode("utf-8", "replace").splitlines()
        if merged.returncode == 1:
            files = [line for line in lines[1:] if line]
            raise BranchConflict(
                f"{subject}: the changes of {commit[:12]} conflict with the task branch "
                f"at {head[:12]} ({', '.join(files) or '?'})", files)
        if merged.returncode != 0 or not lines:
            raise WorkspaceError(f"{subject}: git merge-tree failed: {_reason(merged)}")
        return lines[0].strip()

    async def _move_old_run_branches(
        self, git_dir: Path, name: str, task_id: UUID, subject: str
    ) -> None:
        """Before #12 a task's runs had branches ``ipa/<task8>/<workspace>``, which keep git
        from making the branch ``ipa/<task8>``: each moves to the run refs
        (``refs/ipa/runs/<task8>/old/<rest>``, not a branch), so its commits stay reachable."""
        listed = await self._git_in(
            git_dir, "for-each-ref", "--format=%(objectname) %(refname)", f"refs/heads/{name}/",
            subject=subject,
        )  # fmt: skip
        for line in listed.stdout.decode().splitlines():
            commit, _, ref = line.partition(" ")
            rest = ref.removeprefix(f"refs/heads/{name}/")
            kept = f"refs/ipa/runs/{task_id.hex[:8]}/old/{rest}"
            for args in (("update-ref", kept, commit), ("update-ref", "-d", ref, commit)):
                moved = await self._git_in(git_dir, *args, subject=subject)
                if moved.returncode != 0:
                    raise WorkspaceError(
                        f"{subject}: cannot move the old run branch {name}/{rest} out of the "
                        f"way of {name}: {_reason(moved)}"
                    )

    async def _first_commit(
        self, git_dir: Path, candidates: list[str], subject: str
    ) -> str | None:
        """The object the first resolvable candidate names (``^{commit}`` added unless it
        peels already), or None."""
        for candidate in candidates:
            spec = candidate if "^" in candidate else f"{candidate}^{{commit}}"
            found = await self._git_in(
                git_dir, "rev-parse", "--verify", "--quiet", "--end-of-options", spec,
                subject=subject,
            )  # fmt: skip
            if found.returncode == 0:
                return found.stdout.decode().strip()
        return None

    async def _git_in(
        self, directory: Path, *args: str, subject: str, slow: bool = False
    ) -> subprocess.CompletedProcess[bytes]:
        return await self._git(*args, subject=subject, cwd=directory, slow=slow)
