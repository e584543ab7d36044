"""The working copies a task's jobs run in, and its repository's reachability, as events.

These commands record what happened outside the domain (a worktree was made, a commit was
taken, a worktree was deleted, the repository could not be cloned), so they are accepted in any
task status: cleaning up after a cancelled task is still worth a line in its audit trail.
Recording the same fact twice (a commit already recorded, a workspace already removed, the same
repository error) changes nothing and adds no event.

``repository_error`` on the state is set by ``RepositoryUnavailable`` and cleared by the next
``WorkspaceCreated``: a task has one repository, and a working copy of it proves it reachable.

**The task's branch.** A task's work is delivered on one branch, ``ipa/<task8>``: made at the
newest commit of its base (``BranchCreated``, recorded once, before the first run), then moved
on by one commit per succeeded job (``BranchAdvanced``). ``head_commit`` — where each run starts
— is that branch's newest commit. ``state.branch`` is what the task view shows as ``branch``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .commands import (
    Command,
    RecordBranch,
    RecordCommit,
    RecordRepositoryUnavailable,
    RecordWorkspace,
    RemoveWorkspace,
    SetRepo,
)
from .credentials import refuse_credentials
from .decision import Draft, identifier, rejection, text
from .errors import InvalidCommand, JobNotFound
from .events import (
    BranchAdvanced,
    BranchConflicted,
    BranchCreated,
    RepositoryChanged,
    RepositoryUnavailable,
    TaskEvent,
    WorkspaceCommitted,
    WorkspaceCreated,
    WorkspaceRemoved,
)
from .state import Branch, Learning, TaskState, Workspace

# A branch name git accepts (git check-ref-format --branch), kept to the plain cases: no
# component starting with '.' or '-' or ending in '.lock', no '..', '@{', '//', control
# characters, spaces or any of ~^:?*[\.
_BRANCH_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|@\{|//")


def branch_name(value: object, what: str) -> str:
    """``value`` as a branch name git accepts (``main``, ``release/1.2``), or
    ``InvalidCommand``."""
    name = text(value, what, required=True)
    parts = name.split("/")
    if (
        len(name) > 250
        or _BRANCH_FORBIDDEN.search(name)
        or name == "@"
        or name.endswith(".")
        or any(not p or p.startswith((".", "-")) or p.endswith(".lock") for p in parts)
    ):
        raise InvalidCommand(f"{what} {name[:80]!r} is not a valid branch name")
    return name


def head_commit(state: TaskState) -> str | None:
    """Where the task's next run starts: its branch's newest commit (its base commit until a
    job lands). A task from before task branches (none recorded) starts from the last commit
    recorded in its newest workspace that has any; ``None`` when there is nothing yet."""
    if state.branch is not None:
        return state.branch.head_commit or state.branch.base_commit
    for workspace in reversed(list(state.workspaces.values())):
        if workspace.commits:
            return workspace.commits[-1]
    return None


def job_commit(state: TaskState, job_id: str) -> tuple[Workspace, str] | None:
    """The workspace of job ``job_id``'s latest run and its newest commit (``None``: that run
    committed nothing). A run's workspace id is ``<job_id>-<run8>``."""
    job = state.jobs.get(job_id)
    if job is None or job.run_id is None:
        return None
    workspace = state.workspaces.get(f"{job_id}-{job.run_id[:8]}")
    if workspace is None or not workspace.commits:
        return None
    return workspace, workspace.commits[-1]


# -- decide --------------------------------------------------------------------------------------


def _workspace(state: TaskState, command: Command, workspace_id: object) -> Workspace:
    workspace_id = identifier(workspace_id, "workspace_id")
    try:
        return state.workspaces[workspace_id]
    except KeyError:
        raise InvalidCommand(
            f"cannot {command.name}: the task has no workspace {workspace_id!r}"
        ) from None


def _record_workspace(state: TaskState, command: RecordWorkspace, draft: Draft) -> None:
    workspace_id = identifier(command.workspace_id, "workspace_id")
    job_id = None if command.job_id is None else identifier(command.job_id, "job_id")
    fields = {
        what: text(getattr(command, what), what, required=True)
        for what in ("path", "branch", "repo", "base_commit")
    }
    if job_id is not None and job_id not in state.jobs:
        raise JobNotFound(command.name, job_id)
    if workspace_id in state.workspaces:
        raise rejection(state, command, f"workspace {workspace_id!r} already exists")
    draft.add(WorkspaceCreated, workspace_id=workspace_id, job_id=job_id, **fields)


def _record_commit(state: TaskState, command: RecordCommit, draft: Draft) -> None:
    commit = identifier(command.commit, "commit")
    message = text(command.message, "message")
    if not isinstance(command.files, list | tuple):
        raise InvalidCommand(f"files must be a list of paths, got {type(command.files).__name__}")
    files = [text(path, "files item", required=True) for path in command.files]
    workspace = _workspace(state, command, command.workspace_id)
    if commit in workspace.commits:
        return
    if workspace.removed:
        raise rejection(state, command, f"workspace {workspace.workspace_id!r} was removed")
    draft.add(
        WorkspaceCommitted,
        workspace_id=workspace.workspace_id,
        commit=commit,
        message=message,
        files=files,
    )


def _remove_workspace(state: TaskState, command: RemoveWorkspace, draft: Draft) -> None:
    reason = text(command.reason, "reason")
    workspace = _workspace(state, command, command.workspace_id)
    if not workspace.removed:
        draft.add(WorkspaceRemoved, workspace_id=workspace.workspace_id, reason=reason)


def _record_repository_unavailable(
    state: TaskState, command: RecordRepositoryUnavailable, draft: Draft
) -> None:
    repo = text(command.repo, "repo", required=True)
    reason = text(command.reason, "reason", required=True)
    if state.repository_error != _repository_error(repo, reason):
        draft.add(RepositoryUnavailable, repo=repo, reason=reason)


def _repository_error(repo: str, reason: str) -> str:
    return f"{repo}: {reason}"


def _record_branch(state: TaskState, command: RecordBranch, draft: Draft) -> None:
    name = branch_name(command.branch, "branch")
    base = branch_name(command.base, "base")
    base_commit = identifier(command.base_commit, "base_commit")
    if state.branch is not None:
        if (state.branch.name, state.branch.base, state.branch.base_commit) == (
            name, base, base_commit
        ):
            return
        raise rejection(state, command, f"the task's branch {state.branch.name} already exists")
    draft.add(BranchCreated, name=name, base=base, base_commit=base_commit)


def advance_branch(state: TaskState, command: Command, job_id: str, commit: object,
                   draft: Draft) -> None:
    """Record that job ``job_id``'s work landed: the task's branch is now at ``commit``
    (part of the job's completion, see ``CompleteJob.landed``)."""
    commit = identifier(commit, "landed")
    if state.branch is None:
        raise rejection(state, command, "the task has no branch yet")
    previous = state.branch.head_commit or state.branch.base_commit
    if commit != previous:
        draft.add(BranchAdvanced, job_id=job_id, commit=commit, previous=previous)


def conflict_learning(head: str, files: list[str]) -> str:
    """What a run whose changes did not land tells the job's next attempt."""
    named = ", ".join(files) or "files git did not name"
    return (f"Your changes conflicted with work that landed on the task's branch meanwhile "
            f"(now at {head[:12]}), in: {named}. Nothing of that attempt landed; start from "
            "the branch as it is now and redo the work on top of it.")


def _set_repo(state: TaskState, command: SetRepo, draft: Draft) -> None:
    repo = text(command.repo, "repo", required=True)
    refuse_credentials(repo, "repo")
    if state.status.terminal:
        raise rejection(state, command, f"the task is {state.status.value}")
    if state.branch is not None and state.branch.head_commit is not None:
        raise rejection(state, command, f"work has landed on the task's branch "
                        f"{state.branch.name} in {state.repo}; start a new task for another "
                        "repository")
    if repo != state.repo or state.repository_error is not None:
        draft.add(RepositoryChanged, repo=repo, previous=state.repo)


DECIDERS: dict[type[Command], Callable[[TaskState, Any, Draft], None]] = {
    RecordWorkspace: _record_workspace,
    RecordCommit: _record_commit,
    RemoveWorkspace: _remove_workspace,
    RecordRepositoryUnavailable: _record_repository_unavailable,
    RecordBranch: _record_branch,
    SetRepo: _set_repo,
}
"""The handler of each workspace command, for ``task.decide``."""


# -- evolve --------------------------------------------------------------------------------------


def _changed(state: TaskState, event: TaskEvent, workspace_id: str, **changes: Any) -> Any:
    """The ``workspaces`` of ``state`` with ``changes`` made to the workspace ``workspace_id``."""
    if workspace_id not in state.workspaces:
        raise ValueError(f"{type(event).__name__} of unknown workspace {workspace_id!r}")
    workspace = replace(state.workspaces[workspace_id], **changes)
    return {"workspaces": state.workspaces.with_item(workspace_id, workspace)}


def _commits(state: TaskState, workspace_id: str) -> tuple[str, ...]:
    workspace = state.workspaces.get(workspace_id)
    return () if workspace is None else workspace.commits


def _created(event: WorkspaceCreated, state: TaskState) -> dict[str, Any]:
    if event.workspace_id in state.workspaces:
        raise ValueError(f"workspace {event.workspace_id!r} is created twice")
    workspace = Workspace(
        workspace_id=event.workspace_id,
        job_id=event.job_id,
        path=event.path,
        branch=event.branch,
        repo=event.repo,
        base_commit=event.base_commit,
    )
    return {
        "workspaces": state.workspaces.with_item(event.workspace_id, workspace),
        "repository_error": None,
    }


def _committed(event: WorkspaceCommitted, state: TaskState) -> dict[str, Any]:
    commits = (*_commits(state, event.workspace_id), event.commit)
    return _changed(state, event, event.workspace_id, commits=commits)


def _removed(event: WorkspaceRemoved, state: TaskState) -> dict[str, Any]:
    return _changed(state, event, event.workspace_id, removed=True)


def _repository_unavailable(event: RepositoryUnavailable, state: TaskState) -> dict[str, Any]:
    return {"repository_error": _repository_error(event.repo, event.reason)}


def _repository_changed(event: RepositoryChanged, state: TaskState) -> dict[str, Any]:
    return {"repo": event.repo, "repository_error": None, "branch": None}


def _branch_created(event: BranchCreated, state: TaskState) -> dict[str, Any]:
    return {"branch": Branch(event.name, event.base, event.base_commit)}


def _branch_advanced(event: BranchAdvanced, state: TaskState) -> dict[str, Any]:
    if state.branch is None:
        raise ValueError("BranchAdvanced before BranchCreated")
    return {"branch": replace(state.branch, head_commit=event.commit)}


def _branch_conflicted(event: BranchConflicted, state: TaskState) -> dict[str, Any]:
    learning = Learning(event.job_id, event.attempt, event.learning, event.timestamp)
    return {"learnings": (*state.learnings, learning)}


FOLDS: dict[type[TaskEvent], Callable[[Any, TaskState], dict[str, Any]]] = {
    WorkspaceCreated: _created,
    WorkspaceCommitted: _committed,
    WorkspaceRemoved: _removed,
    RepositoryUnavailable: _repository_unavailable,
    RepositoryChanged: _repository_changed,
    BranchCreated: _branch_created,
    BranchAdvanced: _branch_advanced,
    BranchConflicted: _branch_conflicted,
}
"""The fold of each workspace event, for ``task.evolve``: the state fields the event changes."""
