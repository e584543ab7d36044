"""Clones and forks: a new task made from another one.

**Clone** (``CloneTask``, given the source's current state): a new task with the source's
description and settings — workflow, repository, base branch, budget, approval policies,
``max_children`` (how many child agents a project runs at once) and sync settings — and none
of its history. Its stream is ``TaskCreated`` then ``TaskCloned``, which names the source and
its version and carries the settings it copied.

**Fork** (``ForkTask``, given the source's state at a past version N): a new task that goes on
from where the source stood at N. Its stream is ``TaskCreated`` then ``TaskForked``, which
names the source and N, the commit the source's branch had then, and carries the state the
fork takes over: the source's state at N, except

- jobs that were running at N are pending again, their attempt not counted (their run was the
  source's: the fork runs them anew);
- no workspace (those were the source's working copies); the branch is the fork's own
  (``branch``, made by the caller at that commit, the same base), so its first run starts
  from the source's files at N;
- the outbox keeps its sync settings only: nothing the source queued, sent or read outside is
  the fork's;
- it is not archived, and its origin is the fork (``forked_from``).

A fork is refused at a version where the task had ended or failed (completed, cancelled,
failed: nothing is left to run; a failed task waits for a person, who retries it) and, for a
project, where a child task ran (its children are the source's); a project's
child task is neither cloned nor forked (its project retries its item). Why one event with the
state rather than the source's events replayed into the new stream: the fork's stream then says
only what happened to the fork — it was made from N by this person at this time — while the
source's events stay in the source's stream with their own actors, times and hash chain; a
replay would put copies stamped with other times and actors in a stream that did not exist
then, naming runs, workspaces and a branch that are the source's. The carried state is
``TaskState.to_dict``'s form, which ``from_dict`` reads back from older forms (as snapshots
need); a change of that form that it cannot read raises ``TaskForked``'s ``class_version``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any
from uuid import UUID

from .backlog_items import BacklogItemStatus
from .commands import CreateTask
from .decision import Draft, rejection
from .errors import InvalidCommand
from .events import TaskEvent
from .lineage_commands import CloneTask, ForkTask
from .outbox import Outbox
from .state import Branch, FrozenMap, Job, JobStatus, Origin, TaskState
from .workflows import Status
from .workspaces import branch_name


class TaskCloned(TaskEvent):
    """The task is a clone of task ``source_id`` as it was at ``source_version``: it took its
    settings (``budget_usd``, ``max_children``, ``approval_policies`` by phase and the
    ``sync`` settings by connector), not its history. Follows its ``TaskCreated``."""

    source_id: str
    source_version: int
    budget_usd: float | None
    max_children: int
    approval_policies: dict
    sync: dict


class TaskForked(TaskEvent):
    """The task is a fork of task ``source_id`` at ``source_version``: ``state`` is what it
    takes over (``TaskState.to_dict``'s form; see ``lineage.py``), ``commit`` the newest
    commit of the source's branch then, where the fork's branch was made (``None``: it had
    no branch yet). Follows its ``TaskCreated``."""

    source_id: str
    source_version: int
    commit: str | None
    state: dict


# -- decide --------------------------------------------------------------------------------------


def creation(command: CloneTask | ForkTask) -> CreateTask:
    """The ``CreateTask`` a clone or a fork begins with (the source's description, workflow,
    repository and base branch), once the source may be cloned or forked."""
    source = command.source
    if not isinstance(source, TaskState):
        raise TypeError(f"{command.name}: source must be a TaskState, got {source!r}")
    if source.parent_id is not None:
        raise rejection(source, command, f"task {source.id} is item {source.item_id!r} of "
                                         f"project {source.parent_id}; retry the item there")
    if isinstance(command, ForkTask):
        if source.status.terminal or source.status is Status.failed:
            raise rejection(source, command, f"at version {source.version} the task was "
                                             f"{source.status.value}: nothing is left to run "
                                             "from there; fork it at an earlier version")
        in_flight = [item.id for item in (source.backlog.items if source.backlog else ())
                     if item.status in (BacklogItemStatus.spawned, BacklogItemStatus.merging)]
        if in_flight:
            raise rejection(source, command, f"at version {source.version} child tasks ran "
                                             f"for item(s) {', '.join(in_flight)} (they are "
                                             "the project's); fork it at a version without "
                                             "children at work")
    title = source.title if command.title is None else command.title
    return CreateTask(title=title, description=source.description, workflow=source.workflow,
                      repo=source.repo, base_branch=source.base_branch)


def derive(command: CloneTask | ForkTask, draft: Draft) -> None:
    """The event that follows the new task's ``TaskCreated``: ``TaskCloned`` or
    ``TaskForked``."""
    source = command.source
    if isinstance(command, CloneTask):
        draft.add(TaskCloned, source_id=str(source.id), source_version=source.version,
                  budget_usd=source.budget_usd, max_children=source.max_children,
                  approval_policies=dict(source.approval_policies),
                  sync=copy.deepcopy(source.outbox.config))
        return
    branch = None
    if source.branch is not None:
        if command.branch is None:
            raise InvalidCommand(f"fork: task {source.id} had branch {source.branch.name} at "
                                 f"version {source.version}; the fork needs its own branch")
        branch = Branch(branch_name(command.branch, "branch"), source.branch.base,
                        source.branch.base_commit, source.branch.head_commit)
    elif command.branch is not None:
        raise InvalidCommand(f"fork: task {source.id} had no branch at version "
                             f"{source.version}; the fork starts without one")
    commit = None if branch is None else branch.head_commit or branch.base_commit
    draft.add(TaskForked, source_id=str(source.id), source_version=source.version,
              commit=commit, state=carried(source, branch).to_dict())


def carried(source: TaskState, branch: Branch | None) -> TaskState:
    """What a fork takes over from ``source`` (see the module doc); ``branch``: its own."""
    return replace(
        source,
        jobs=FrozenMap((job_id, _requeued(job) if job.status is JobStatus.running else job)
                       for job_id, job in source.jobs.items()),
        workspaces=FrozenMap(),
        branch=branch,
        outbox=Outbox(config=copy.deepcopy(source.outbox.config)),
        archived=False,
        forked_from=None,
        cloned_from=None,
    )


def _requeued(job: Job) -> Job:
    # The run in flight was the source's: the fork starts the job again, this attempt unused.
    return replace(job, status=JobStatus.pending, attempts=max(0, job.attempts - 1),
                   run_id=None, started_at=None, finished_at=None, retry_at=None)


# -- evolve --------------------------------------------------------------------------------------

_OWN = frozenset({"id", "version", "created_at", "updated_at", "created_by", "title"})
"""What a fork keeps of its own when it takes over the carried state: who it is, when and by
whom it was made, and its title."""


def _cloned(event: TaskCloned, state: TaskState) -> dict[str, Any]:
    return {
        "cloned_from": Origin(UUID(event.source_id), event.source_version),
        "budget_usd": event.budget_usd,
        "max_children": event.max_children,
        "approval_policies": tuple(sorted(event.approval_policies.items())),
        "outbox": replace(state.outbox, config=copy.deepcopy(event.sync)),
    }


def _forked(event: TaskForked, state: TaskState) -> dict[str, Any]:
    taken = TaskState.from_dict(event.state)
    changes = {f.name: getattr(taken, f.name) for f in fields(TaskState) if f.name not in _OWN}
    return {**changes, "forked_from": Origin(UUID(event.source_id), event.source_version)}


FOLDS: dict[type[TaskEvent], Callable[[Any, TaskState], dict[str, Any]]] = {
    TaskCloned: _cloned,
    TaskForked: _forked,
}
"""The fold of each event, for ``task.evolve``."""
