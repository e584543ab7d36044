"""Clones and forks: a fork takes over the state at a version (jobs in flight queued again, no
workspace, its own branch, a fresh outbox); a clone takes the settings, not the history."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from datetime import timedelta
from uuid import UUID

import pytest

from ipa.domain import (
    Approve,
    Cancel,
    CloneTask,
    CommandRejected,
    CompleteJob,
    ConfigureSync,
    CreateChildTask,
    CreateTask,
    Fail,
    ForkTask,
    InvalidCommand,
    JobStatus,
    Origin,
    QueueJob,
    QueueUpdate,
    RecordBranch,
    RecordCommit,
    RecordWorkspace,
    RequestApproval,
    SetApprovalPolicy,
    SetBudget,
    SetMaxChildren,
    SpawnChild,
    StartJob,
    StartTask,
    Status,
    TaskCloned,
    TaskCreated,
    TaskForked,
    TaskState,
    decide,
    evolve,
    fold,
)

from .helpers import START, TASK_ID, context, run, types
from .test_children import child, in_development

FORK_ID = UUID(int=42)
REPO = "/src/shop"
BASE, FIRST = "b" * 40, "c" * 40


def worked() -> TaskState:
    """A task in a repository whose first job landed on its branch and whose second runs, with
    a budget, an approval policy, sync settings and an update in its outbox."""
    return run(
        None, CreateTask("Add rate limiting", "to the login endpoint", repo=REPO), StartTask(),
        RecordBranch("ipa/00000001", "main", BASE), SetBudget(5.0),
        SetApprovalPolicy("planning", "auto"),
        ConfigureSync(github={"repo": "o/n", "approval": True}),
        QueueJob("spec", "spec_writer"), StartJob("spec", "run-1"),
        RecordWorkspace("w1", "spec", "/data/w1", "ipa/00000001-runs/w1", REPO, BASE),
        RecordCommit("w1", FIRST, "spec"),
        CompleteJob("spec", "run-1", landed=FIRST),
        RequestApproval(), Approve(), QueueJob("plan", "planner"),
        StartJob("plan", "run-2"),
        QueueUpdate(update_id="u1", connector="github", kind="status_comment",
                    payload={"body": "working"}),
    )


def forked(source: TaskState, **command: object) -> tuple[list, TaskState]:
    ctx = replace(context(START + timedelta(hours=1)), actor="user:ann")
    events = decide(None, ForkTask(source=source, **command), ctx, FORK_ID)
    state = fold(events)
    assert state is not None
    return events, state


def test_a_fork_begins_with_its_creation_and_the_state_it_takes_over() -> None:
    source = worked()

    events, fork = forked(source, branch="ipa/0000002a")

    assert types(events) == ["TaskCreated", "TaskForked"]
    created, taken = events
    assert isinstance(created, TaskCreated) and isinstance(taken, TaskForked)
    assert (taken.source_id, taken.source_version, taken.commit) == (
        str(TASK_ID), source.version, FIRST)
    assert created.actor == taken.actor == "user:ann"
    assert (fork.id, fork.version, fork.created_by) == (FORK_ID, 2, "user:ann")
    assert fork.created_at == START + timedelta(hours=1) != source.created_at
    assert fork.forked_from == Origin(TASK_ID, source.version)
    assert fork.to_dict()["forked_from"] == {"task_id": str(TASK_ID), "version": source.version}


def test_a_fork_has_the_state_of_its_source_at_the_version_but_what_was_the_sources() -> None:
    source = worked()

    _, fork = forked(source, branch="ipa/0000002a")

    own = {"id", "version", "created_at", "updated_at", "created_by", "forked_from",
           "jobs", "workspaces", "branch", "outbox"}
    for field in fields(TaskState):
        if field.name not in own:
            assert getattr(fork, field.name) == getattr(source, field.name), field.name
    assert (fork.phase, fork.status, fork.budget_usd) == ("planning", Status.running, 5.0)
    assert fork.approvals == source.approvals and fork.phase_history == source.phase_history
    # Jobs: the finished one as it was, the running one pending again, its attempt unused.
    assert fork.jobs["spec"] == source.jobs["spec"]
    plan = fork.jobs["plan"]
    assert (source.jobs["plan"].status, source.jobs["plan"].attempts) == (JobStatus.running, 1)
    assert (plan.status, plan.attempts, plan.run_id, plan.started_at) == (
        JobStatus.pending, 0, None, None)
    # The source's working copies stay the source's; the branch is the fork's own, same base.
    assert not fork.workspaces and source.workspaces
    assert (fork.branch.name, fork.branch.base, fork.branch.base_commit,
            fork.branch.head_commit) == ("ipa/0000002a", "main", BASE, FIRST)
    # The sync settings, not what the source queued or sent.
    assert fork.outbox.config == source.outbox.config and source.outbox.entries
    assert fork.outbox.entries == ()


def test_the_state_a_fork_takes_over_reads_back_from_its_stored_json() -> None:
    events, fork = forked(worked(), branch="ipa/0000002a")
    created, taken = events
    stored = json.loads(json.dumps(taken.state))

    again = evolve(evolve(None, created), replace_state(taken, stored))

    assert again == fork


def replace_state(event: TaskForked, state: dict) -> TaskForked:
    return TaskForked(originator_id=event.originator_id,
                      originator_version=event.originator_version, timestamp=event.timestamp,
                      actor=event.actor, correlation_id=event.correlation_id,
                      causation_id=event.causation_id, source_id=event.source_id,
                      source_version=event.source_version, commit=event.commit, state=state)


def test_a_fork_of_a_task_without_a_branch_has_none_and_takes_no_branch_name() -> None:
    source = run(None, CreateTask("t", "d"), StartTask(), QueueJob("a", "dev"))

    events, fork = forked(source, title="t again")

    assert fork.branch is None and events[-1].commit is None and fork.title == "t again"
    with pytest.raises(InvalidCommand, match="had no branch at version 3"):
        forked(source, branch="ipa/0000002a")
    with pytest.raises(InvalidCommand, match="the fork needs its own branch"):
        forked(worked())
    with pytest.raises(InvalidCommand, match="not a valid branch name"):
        forked(worked(), branch="ipa/..bad")


@pytest.mark.parametrize("end", [Cancel(reason="not needed"), Fail(reason="broken")],
                         ids=["cancelled", "failed"])
def test_a_fork_at_a_version_where_the_task_had_ended_or_failed_is_refused(end) -> None:
    ended = run(worked(), end)

    with pytest.raises(CommandRejected, match=(
            f"cannot fork: at version {ended.version} the task was {ended.status.value}: "
            "nothing is left to run from there; fork it at an earlier version")):
        forked(ended, branch="ipa/0000002a")


def test_a_project_is_not_forked_where_its_children_were_at_work() -> None:
    at_work = run(in_development(), SpawnChild("schema", child(2)))

    with pytest.raises(CommandRejected, match="child tasks ran for item"):
        forked(at_work)
    _, fork = forked(in_development())  # none at work: its backlog comes along
    assert fork.backlog == in_development().backlog


def test_a_child_task_is_neither_cloned_nor_forked() -> None:
    command = CreateChildTask("Build api", "d", parent_id=str(child(7)), item_id="api",
                              kind="backend_developer")
    item = run(None, command)

    with pytest.raises(CommandRejected, match="retry the item there"):
        forked(item)
    with pytest.raises(CommandRejected, match="retry the item there"):
        decide(None, CloneTask(source=item), context(), FORK_ID)


def test_a_clone_takes_the_settings_and_the_description_not_the_history() -> None:
    source = run(worked(), Cancel())

    events = decide(None, CloneTask(source=source, title="Rate limiting, again"), context(),
                    FORK_ID)
    clone = fold(events)

    assert types(events) == ["TaskCreated", "TaskCloned"]
    cloned = events[-1]
    assert isinstance(cloned, TaskCloned)
    assert (cloned.source_id, cloned.source_version) == (str(TASK_ID), source.version)
    assert (clone.title, clone.description, clone.workflow, clone.repo, clone.base_branch) == (
        "Rate limiting, again", source.description, "task", REPO, None)
    assert (clone.budget_usd, clone.approval_policies, clone.outbox.config) == (
        5.0, (("planning", "auto"),), source.outbox.config)
    assert clone.cloned_from == Origin(TASK_ID, source.version)
    assert (clone.phase, clone.status, clone.version) == ("spec_clarification",
                                                          Status.pending, 2)
    assert not clone.jobs and not clone.workspaces and clone.branch is None
    assert source.approvals and not clone.approvals and clone.outbox.entries == ()
    assert clone.phase_history == (clone.phase_history[0],) != source.phase_history
    assert TaskState.from_dict(json.loads(json.dumps(clone.to_dict()))) == clone


def test_a_clone_of_a_project_takes_its_max_children_and_keeps_its_title_by_default() -> None:
    project = run(None, CreateTask("Shop", "PRD", workflow="project"), SetMaxChildren(7))

    clone = fold(decide(None, CloneTask(source=project), context(), FORK_ID))

    assert (clone.title, clone.workflow, clone.max_children) == ("Shop", "project", 7)


def test_a_clone_or_fork_is_only_the_first_command_of_a_stream() -> None:
    source = worked()
    for command in (CloneTask(source=source), ForkTask(source=source, branch="ipa/x")):
        with pytest.raises(CommandRejected, match="cannot create_task"):
            decide(source, command, context(), TASK_ID)
