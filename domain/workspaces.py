"""The working copies a task's jobs run in, and its repository's reachability, as events.

These commands record what happened outside the domain (a worktree was made, a commit was
taken, a worktree was deleted, the repository could not be cloned), so they are accepted in any
task status: cleaning up after a cancelled task is still worth a line in its audit trail.
Recording the same fact twice (a commit already recorded, a workspace already removed, the same
repository error) changes nothing and adds no event.

``repository_error`` on the state is set by ``RepositoryUnavailable`` and cleared by the next
``WorkspaceCreated``: a task has one repository, and a working copy of it proves it reachable.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .commands import (
    Command,
    RecordCommit,
    RecordRepositoryUnavailable,
    RecordWorkspace,
    RemoveWorkspace,
)
from .decision import Draft, identifier, rejection, text
from .errors import InvalidCommand, JobNotFound
from .events import (
    RepositoryUnavailable,
    TaskEvent,
    WorkspaceCommitted,
    WorkspaceCreated,
    WorkspaceRemoved,
)
from .state import TaskState, Workspace


def head_commit(state: TaskState) -> str | None:
    """The newest commit of the task's work: the last one recorded in its newest workspace
    that has any. Each run starts from it, so it holds everything the task's jobs committed."""
    for workspace in reversed(list(state.workspaces.values())):
        if workspace.commits:
            return workspace.commits[-1]
    return None


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


DECIDERS: dict[type[Command], Callable[[TaskState, Any, Draft], None]] = {
    RecordWorkspace: _record_workspace,
    RecordCommit: _record_commit,
    RemoveWorkspace: _remove_workspace,
    RecordRepositoryUnavailable: _record_repository_unavailable,
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


FOLDS: dict[type[TaskEvent], Callable[[Any, TaskState], dict[str, Any]]] = {
    WorkspaceCreated: _created,
    WorkspaceCommitted: _committed,
    WorkspaceRemoved: _removed,
    RepositoryUnavailable: _repository_unavailable,
}
"""The fold of each workspace event, for ``task.evolve``: the state fields the event changes."""
