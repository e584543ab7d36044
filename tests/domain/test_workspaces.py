"""The working copies of a task's jobs and its repository's reachability, as events."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import UUID

import pytest

from ipa.domain import (
    Branch,
    BranchAdvanced,
    BranchConflicted,
    Cancel,
    Command,
    CommandRejected,
    CompleteJob,
    Context,
    CreateTask,
    InvalidCommand,
    JobFailed,
    JobNotFound,
    JobRejected,
    JobStatus,
    JobSucceeded,
    QueueJob,
    RecordBranch,
    RecordBranchConflict,
    RecordCommit,
    RecordRepositoryUnavailable,
    RecordWorkspace,
    RemoveWorkspace,
    RepositoryUnavailable,
    StartJob,
    StartTask,
    TaskState,
    Workspace,
    WorkspaceCommitted,
    WorkspaceCreated,
    decide,
    fold,
    head_commit,
    job_commit,
)

TASK_ID = UUID(int=1)
START = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
REPO = "https://example.test/repo.git"


def context() -> Context:
    return Context(actor="system", now=START, correlation_id="req")


def run(state: TaskState | None, *commands: Command) -> TaskState:
    for command in commands:
        state = fold(decide(state, command, context(), TASK_ID), state)
    assert state is not None
    return state


def record(workspace_id: str = "w1", job_id: str | None = "a") -> RecordWorkspace:
    return RecordWorkspace(workspace_id, job_id, f"/work/{workspace_id}", "ipa/a", REPO, "abc123")


def with_workspace() -> TaskState:
    task = run(None, CreateTask("Title", "spec", repo=REPO), StartTask(), QueueJob("a", "dev"))
    return run(task, record())


def test_record_workspace_records_where_the_job_works() -> None:
    state = run(None, CreateTask("Title", "spec", repo=REPO), StartTask(), QueueJob("a", "dev"))
    [event] = decide(state, record(), context(), TASK_ID)
    assert isinstance(event, WorkspaceCreated)
    assert (event.workspace_id, event.job_id, event.path, event.branch, event.repo,
            event.base_commit) == ("w1", "a", "/work/w1", "ipa/a", REPO, "abc123")  # fmt: skip
    assert fold([event], state).workspaces["w1"] == Workspace(  # type: ignore[union-attr]
        "w1", "a", "/work/w1", "ipa/a", REPO, "abc123"
    )


def test_a_workspace_may_belong_to_the_task_rather_than_a_job() -> None:
    assert run(with_workspace(), record("w2", job_id=None)).workspaces["w2"].job_id is None


def test_a_workspace_of_an_unknown_job_is_refused() -> None:
    with pytest.raises(JobNotFound, match="the task has no job 'zz'"):
        decide(with_workspace(), record("w2", job_id="zz"), context(), TASK_ID)


def test_a_workspace_id_is_used_once() -> None:
    with pytest.raises(JobRejected, match="workspace 'w1' already exists"):
        decide(with_workspace(), record(), context(), TASK_ID)


def test_record_workspace_needs_every_field() -> None:
    command = RecordWorkspace("w2", None, "/w", "", REPO, "abc")
    with pytest.raises(InvalidCommand, match="branch must not be blank"):
        decide(with_workspace(), command, context(), TASK_ID)


def test_commits_are_recorded_in_order_and_only_once() -> None:
    state = run(with_workspace(), RecordCommit("w1", "c1", "first", ["a.py"]))
    [event] = decide(state, RecordCommit("w1", "c2", "second", ("b.py",)), context(), TASK_ID)
    assert isinstance(event, WorkspaceCommitted)
    assert (event.commit, event.message, event.files) == ("c2", "second", ["b.py"])
    state = run(state, RecordCommit("w1", "c2", "second"))
    assert state.workspaces["w1"].commits == ("c1", "c2")
    assert decide(state, RecordCommit("w1", "c1", "first"), context(), TASK_ID) == []


def test_a_commit_to_an_unknown_workspace_is_refused() -> None:
    with pytest.raises(InvalidCommand, match="the task has no workspace 'w9'"):
        decide(with_workspace(), RecordCommit("w9", "c1", "x"), context(), TASK_ID)


def test_remove_workspace_marks_it_removed_once() -> None:
    state = run(with_workspace(), RemoveWorkspace("w1", "the run ended"))
    assert state.workspaces["w1"].removed
    assert decide(state, RemoveWorkspace("w1"), context(), TASK_ID) == []
    with pytest.raises(JobRejected, match="workspace 'w1' was removed"):
        decide(state, RecordCommit("w1", "c9", "late"), context(), TASK_ID)


def test_workspaces_are_cleaned_up_after_the_task_is_cancelled() -> None:
    state = run(with_workspace(), Cancel(), RecordCommit("w1", "c1", "x"), RemoveWorkspace("w1"))
    assert state.workspaces["w1"] == Workspace(
        "w1", "a", "/work/w1", "ipa/a", REPO, "abc123", commits=("c1",), removed=True
    )


def test_an_unavailable_repository_is_recorded_once_and_cleared_by_a_workspace() -> None:
    task = run(None, CreateTask("Title", "spec", repo=REPO), StartTask(), QueueJob("a", "dev"))
    command = RecordRepositoryUnavailable(REPO, "repository not found")
    [event] = decide(task, command, context(), TASK_ID)
    assert isinstance(event, RepositoryUnavailable)
    state = run(task, command)
    assert state.repository_error == f"{REPO}: repository not found"
    assert decide(state, command, context(), TASK_ID) == []
    assert run(state, record()).repository_error is None


def test_record_repository_unavailable_needs_a_reason() -> None:
    with pytest.raises(InvalidCommand, match="reason must not be blank"):
        decide(with_workspace(), RecordRepositoryUnavailable(REPO, ""), context(), TASK_ID)


def test_a_state_with_workspaces_round_trips_through_json_exactly() -> None:
    state = run(
        with_workspace(), RecordCommit("w1", "c1", "x"), record("w2", None),
        RemoveWorkspace("w2"), RecordRepositoryUnavailable("other", "gone"),
    )  # fmt: skip
    assert TaskState.from_dict(json.loads(json.dumps(state.to_dict()))) == state


# The task's branch

SHA_BASE, SHA_ONE, SHA_TWO = "b" * 40, "1" * 40, "2" * 40


def with_branch() -> TaskState:
    return run(with_workspace(), RecordBranch("ipa/00000000", "main", SHA_BASE))


def test_create_task_names_its_base_branch() -> None:
    state = run(None, CreateTask("Title", "spec", repo=REPO, base_branch="release/1.2"))
    assert state.base_branch == "release/1.2"
    assert state.branch is None
    assert state.to_dict()["branch"] is None
    assert run(None, CreateTask("Title", "spec", repo=REPO)).base_branch is None


@pytest.mark.parametrize("name", ["", "-x", "a..b", "a b", "x.lock", "a/", "/a", "@", "a~1",
                                  "a:b", ".hidden", "a\n"])
def test_a_base_branch_git_would_refuse_is_invalid(name: str) -> None:
    with pytest.raises(InvalidCommand, match="base_branch"):
        run(None, CreateTask("Title", "spec", repo=REPO, base_branch=name))


def test_a_base_branch_without_a_repo_is_invalid() -> None:
    with pytest.raises(InvalidCommand, match="needs a repo"):
        run(None, CreateTask("Title", "spec", base_branch="main"))


def test_the_branch_is_recorded_once_and_advanced_by_succeeded_jobs() -> None:
    state = with_branch()
    assert state.branch == Branch("ipa/00000000", "main", SHA_BASE, None)
    assert head_commit(state) == SHA_BASE
    # Recording the same branch again changes nothing; another one is refused.
    assert decide(state, RecordBranch("ipa/00000000", "main", SHA_BASE), context(),
                  TASK_ID) == []
    with pytest.raises(CommandRejected, match="already exists"):
        decide(state, RecordBranch("ipa/00000000", "dev", SHA_BASE), context(), TASK_ID)

    started = run(state, StartJob("a", "run-1"))
    succeeded, advanced = decide(started, CompleteJob("a", "run-1", landed=SHA_ONE), context(),
                                 TASK_ID)
    assert isinstance(succeeded, JobSucceeded)
    assert isinstance(advanced, BranchAdvanced)
    assert (advanced.job_id, advanced.commit, advanced.previous) == ("a", SHA_ONE, SHA_BASE)
    state = run(started, CompleteJob("a", "run-1", landed=SHA_ONE), QueueJob("b", "dev"),
                StartJob("b", "run-2"), CompleteJob("b", "run-2", landed=SHA_TWO))
    assert head_commit(state) == SHA_TWO
    assert state.to_dict()["branch"] == {
        "name": "ipa/00000000", "base": "main", "base_commit": SHA_BASE, "head_commit": SHA_TWO,
    }
    assert TaskState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    # A job that committed nothing leaves the branch where it was.
    state = run(state, QueueJob("c", "dev"), StartJob("c", "run-3"))
    [only] = decide(state, CompleteJob("c", "run-3", landed=SHA_TWO), context(), TASK_ID)
    assert isinstance(only, JobSucceeded)


def test_landing_needs_a_branch_and_a_commit() -> None:
    started = run(with_workspace(), StartJob("a", "run-1"))
    with pytest.raises(CommandRejected, match="no branch"):
        decide(started, CompleteJob("a", "run-1", landed=SHA_ONE), context(), TASK_ID)
    with pytest.raises(InvalidCommand, match="landed"):
        decide(run(with_branch(), StartJob("a", "run-1")), CompleteJob("a", "run-1", landed=""),
               context(), TASK_ID)


def test_a_conflicting_landing_fails_the_attempt_and_teaches_its_retry() -> None:
    state = run(with_branch(), StartJob("a", "run-1"))
    conflicted, failed = decide(
        state, RecordBranchConflict("a", "run-1", head=SHA_TWO, files=["src/x.py", "README"]),
        context(), TASK_ID)
    assert isinstance(conflicted, BranchConflicted)
    assert (conflicted.files, conflicted.head, conflicted.attempt) == (
        ["src/x.py", "README"], SHA_TWO, 1)
    assert isinstance(failed, JobFailed) and failed.retry_at is not None
    assert "src/x.py, README" in failed.reason
    after = run(state, RecordBranchConflict("a", "run-1", head=SHA_TWO, files=["src/x.py"]))
    assert after.jobs["a"].status is JobStatus.failed
    assert after.branch.head_commit is None  # nothing landed
    [learning] = after.learnings
    assert learning.job_id == "a" and "src/x.py" in learning.text
    assert SHA_TWO[:12] in learning.text
    # The last attempt's conflict dead-letters the job, naming why.
    last = run(None, CreateTask("Title", "spec", repo=REPO), StartTask(),
               QueueJob("a", "dev", max_attempts=1), RecordBranch("ipa/00000000", "main",
                                                                  SHA_BASE),
               StartJob("a", "run-1"),
               RecordBranchConflict("a", "run-1", head=SHA_TWO, files=["f"]))
    assert last.jobs["a"].status is JobStatus.dead
    assert "conflict" in last.jobs["a"].last_error


def test_job_commit_is_the_newest_commit_of_the_jobs_latest_run() -> None:
    state = run(None, CreateTask("Title", "spec", repo=REPO), StartTask(), QueueJob("a", "dev"),
                StartJob("a", "12345678-run"))
    assert job_commit(state, "a") is None
    state = run(state, record("a-12345678"), RecordCommit("a-12345678", SHA_ONE, "m"))
    workspace, commit = job_commit(state, "a")  # type: ignore[misc]
    assert (workspace.workspace_id, commit) == ("a-12345678", SHA_ONE)
