"""A task moved between ipa installations: its bundle, with its branches' commits.

:func:`export_bundle` packs what :func:`ipa.eventstore.transfer.export_task` reads with the
tasks' branches (``ipa/<task8>``, each task that has one) as ``git bundle create`` writes them
from the repository the tasks name (its own git dir, or the workspaces' cached clone of a URL):
the branches' whole history, so the bundle needs nothing on the other side. A branch the
repository lacks is an error, unless the commits are left out (``git=False``).

:func:`import_bundle` writes a verified bundle (:meth:`TaskBundle.read`) into a store: it
checks the store first (no stream there yet, the exporter's MAC when the key is the same);
then, when the bundle carries commits, fetches them into the local repository ``repo`` as the
same branches (``git bundle verify`` first; a branch already there at another commit is
:class:`BranchExists`; at the same commit it is left alone); then writes the events in one
transaction. If that write fails, the branches it fetched are deleted again. Without ``repo``,
a bundle that carries commits is :class:`RepositoryNeeded`, unless they are skipped
(``git=False``). The imported task still names its repository as the exporter's did (its
history is not rewritten); ``ipa task set-repo`` points an unfinished one elsewhere.

Git runs as the workspaces run it (no hooks, no prompts, a time limit); fetched objects are
checked (``fetch.fsckObjects``). Only refs named ``refs/heads/ipa/<8 hex>`` that are the
bundled tasks' branches are ever fetched.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio

from ipa.eventstore import EventStore
from ipa.eventstore.bundle import BundleRefused, GitBranches, TaskBundle
from ipa.eventstore.transfer import Imported, check_target, export_task
from ipa.eventstore.transfer import import_bundle as write_bundle

from .repositories import RepositoryPolicy, RepositoryRefused
from .workspace import WorkspaceManager, _Git, _is_url
from .workspace_errors import RepositoryUnavailable, WorkspaceError, _display, _reason

__all__ = ["BranchExists", "RepositoryNeeded", "Transferred", "export_bundle", "import_bundle"]

GIT_TIMEOUT = 30.0
BUNDLE_TIMEOUT = 600.0
"""Seconds a ``git bundle create`` or ``git fetch`` of a bundle may take."""
_WITHOUT_GIT = "export with --no-git (?git=skip on the API) to leave the commits out"


class RepositoryNeeded(WorkspaceError):
    """The bundle carries commits and no repository was named to fetch them into."""


class BranchExists(WorkspaceError):
    """The repository has a branch of the bundle's already, at another commit."""


@dataclass(frozen=True)
class Transferred:
    """An import done: what :func:`ipa.eventstore.transfer.import_bundle` wrote, the branches
    fetched into ``repo`` (ref: commit; those it had already included), and the bundle."""

    imported: Imported
    bundle: TaskBundle
    repo: str | None
    branches: dict[str, str]
    signed: bool | None = None
    """Whether the exporter's MAC verified with this store's key (``None``: it could not be
    checked: no MAC, or another key's)."""

    def to_json(self) -> dict[str, Any]:
        """What ``POST /api/import`` answers and ``ipa import --json`` prints."""
        bundle = self.bundle
        return {
            "task_id": str(bundle.task_id),
            "tasks": [{"id": str(task_id), "title": state.title, "workflow": state.workflow,
                       "status": state.status.value, "version": state.version}
                      for task_id, state in bundle.states.items()],
            "runs": bundle.runs, "events": bundle.events,
            "positions": [self.imported.first_position, self.imported.last_position],
            "repo": self.repo,
            "branches": {ref.removeprefix("refs/heads/"): commit
                         for ref, commit in self.branches.items()},
            "signed": self.signed, "sha256": bundle.sha256,
            "exported_by": bundle.ipa_version, "exported_at": bundle.exported_at.isoformat(),
        }


async def export_bundle(store: EventStore, workspaces: WorkspaceManager, task_id: UUID, *,
                        git: bool = True) -> tuple[TaskBundle, bytes]:
    """The bundle of ``task_id`` and its file (signed with the store's audit key when it has
    one)."""
    bundle = await export_task(store, task_id)
    if git:
        branches = await _branches_of(bundle, workspaces)
        if branches is not None:
            bundle = replace(bundle, git=branches)
    data = await anyio.to_thread.run_sync(bundle.pack, store.audit_key)
    return replace(bundle, sha256=hashlib.sha256(data).hexdigest()), data


async def import_bundle(store: EventStore, bundle: TaskBundle, *, repo: str | None,
                        git: bool = True, policy: RepositoryPolicy | None = None
                        ) -> Transferred:
    """Write ``bundle`` into ``store``, its commits into the local repository ``repo``
    (checked by ``policy``); see the module docstring."""
    await check_target(store, bundle)
    branches: dict[str, str] = {}
    created: dict[str, str] = {}
    directory: Path | None = None
    if bundle.git is not None and git:
        if repo is None:
            names = ", ".join(ref.removeprefix("refs/heads/") for ref in bundle.git.refs)
            raise RepositoryNeeded(
                f"the bundle carries the commits of {names}: name a local repository to fetch "
                "them into (ipa import --repo PATH; ?repo= on the API), or leave them out "
                "(--no-git; ?git=skip)")
        directory = await _local_repository(repo, policy or RepositoryPolicy())
        created = await _fetch(directory, repo, bundle.git)
        branches = dict(bundle.git.refs)
    try:
        imported = await write_bundle(store, bundle)
    except BaseException:
        if directory is not None and created:
            with anyio.CancelScope(shield=True):
                await _delete(directory, repo or "", created)
        raise
    return Transferred(imported, bundle, repo if branches else None, branches,
                       bundle.signed_by(store.audit_key))


# Git ----------------------------------------------------------------------------------------


def _git() -> _Git:
    return _Git("git", GIT_TIMEOUT, BUNDLE_TIMEOUT)


async def _branches_of(bundle: TaskBundle, workspaces: WorkspaceManager) -> GitBranches | None:
    """The bundled tasks' branches from their repository (``None``: no task has one)."""
    named = {state.branch.name: state.repo for state in bundle.states.values()
             if state.branch is not None and state.repo}
    if not named:
        return None
    repos = set(named.values())
    if len(repos) > 1:
        raise BundleRefused(BundleRefused.UNEXPORTABLE, "the tasks' branches are in "
                            f"{len(repos)} repositories; {_WITHOUT_GIT}")
    (repo,) = repos
    try:
        git_dir = await workspaces.git_dir(repo)
    except WorkspaceError as e:
        raise BundleRefused(BundleRefused.UNEXPORTABLE, f"the task's commits cannot be read: "
                            f"{e}; {_WITHOUT_GIT}") from None
    git = _git()
    subject = f"repository {_display(repo)}"
    refs: dict[str, str] = {}
    for name in sorted(named):
        ref = f"refs/heads/{name}"
        found = await git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}",
                          subject=subject, cwd=git_dir)
        if found.returncode != 0:
            raise BundleRefused(BundleRefused.UNEXPORTABLE, f"{subject} has no branch {name} "
                                f"(the task's commits); {_WITHOUT_GIT}")
        refs[ref] = found.stdout.decode().strip()
    with tempfile.TemporaryDirectory(prefix="ipa-export-") as scratch:
        path = Path(scratch) / "branches.bundle"
        made = await git("bundle", "create", "--quiet", str(path), *refs, subject=subject,
                         cwd=git_dir, slow=True)
        if made.returncode != 0:
            raise WorkspaceError(f"{subject}: git bundle create failed: {_reason(made)}")
        data = await anyio.Path(path).read_bytes()
    return GitBranches(repo, refs, data)


async def _local_repository(repo: str, policy: RepositoryPolicy) -> Path:
    if _is_url(repo):
        raise RepositoryRefused(repo, "a bundle's commits are fetched into a local repository: "
                                "give its path (a clone of it)")
    await policy.check(repo)
    return Path(repo).expanduser()


async def _fetch(directory: Path, repo: str, branches: GitBranches) -> dict[str, str]:
    """Fetch the bundle's branches into ``directory``; return those it made (ref: commit)."""
    git = _git()
    subject = f"repository {_display(repo)}"
    to_make: dict[str, str] = {}
    for ref, commit in branches.refs.items():
        found = await git("rev-parse", "--verify", "--quiet", ref, subject=subject,
                          cwd=directory)
        there = found.stdout.decode().strip() if found.returncode == 0 else None
        if there is None:
            to_make[ref] = commit
        elif there != commit:
            raise BranchExists(f"{subject} has a branch {ref.removeprefix('refs/heads/')} "
                               f"already, at {there[:12]} (the bundle's is at {commit[:12]})")
    if not to_make:
        return {}
    with tempfile.TemporaryDirectory(prefix="ipa-import-") as scratch:
        path = Path(scratch) / "branches.bundle"
        await anyio.Path(path).write_bytes(branches.data)
        verified = await git("bundle", "verify", "--quiet", str(path), subject=subject,
                             cwd=directory)
        if verified.returncode != 0:
            raise WorkspaceError(f"{subject}: the bundle's commits cannot be used there: "
                                 f"{_reason(verified)}")
        heads = await git("bundle", "list-heads", str(path), subject=subject, cwd=directory)
        listed = {}
        for line in heads.stdout.decode().splitlines():
            commit, _, ref = line.partition(" ")
            listed[ref] = commit
        if heads.returncode != 0 or listed != dict(branches.refs):
            raise BundleRefused(BundleRefused.ALTERED, "the git bundle's branches are not the "
                                "ones its manifest lists (altered)")
        fetched = await git("-c", "fetch.fsckObjects=true", "fetch", "--quiet", "--no-tags",
                            "--no-write-fetch-head", str(path),
                            *(f"{ref}:{ref}" for ref in to_make),
                            subject=subject, cwd=directory, slow=True)
    if fetched.returncode != 0:
        raise RepositoryUnavailable(repo, f"cannot fetch the bundle's commits: "
                                    f"{_reason(fetched)}")
    return to_make


async def _delete(directory: Path, repo: str, created: dict[str, str]) -> None:
    git = _git()
    for ref, commit in created.items():
        await git("update-ref", "-d", ref, commit, subject=f"repository {_display(repo)}",
                  cwd=directory)
