"""What a decision teaches: ``MemoryRecorded`` beside the events it comes from (memory.py)."""

from __future__ import annotations

from uuid import UUID

import pytest

from ipa.domain import (
    CreateTask,
    FailJob,
    InvalidCommand,
    MemoryRecorded,
    QueueJob,
    RecordReflection,
    RecordVerification,
    RequestApproval,
    RequestChanges,
    StartJob,
    StartTask,
    decide,
    parse_scope,
    scopes_of,
)

from .helpers import TASK_ID, at, context, run


def check(command: str, passed: bool, output: str = "") -> dict:
    return {"command": command, "passed": passed, "exit_code": 0 if passed else 1,
            "output": output, "duration_seconds": 0.1}


def on_repo(repo: str | None = "/src/app"):
    return run(None, CreateTask("Add rate limiting", "to the login", repo=repo), StartTask(),
               QueueJob("a", "developer", max_attempts=3), StartJob("a", "run-1"))


def memories(state, command) -> list[MemoryRecorded]:
    return [e for e in decide(state, command, context(), TASK_ID) if isinstance(e, MemoryRecorded)]


def test_a_reflection_is_an_episode_of_the_task_and_each_learning_a_fact_of_the_repository():
    state = on_repo()
    episode, fact = memories(state, RecordReflection("a", "run-1", "Added a limiter.",
                                                     ["the tests need --no-cov"]))
    assert (episode.kind, episode.scope) == ("episodic", f"task:{TASK_ID}")
    assert "Added a limiter." in episode.text and "developer" in episode.text
    assert (fact.kind, fact.scope, fact.text) == ("semantic", "repo:/src/app",
                                                  "the tests need --no-cov")
    assert (fact.job_id, fact.run_id) == ("a", "run-1")
    assert fact.importance > episode.importance


def test_without_a_repository_a_learning_stays_with_the_task():
    [_, fact] = memories(on_repo(None), RecordReflection("a", "run-1", "done", ["use uv"]))
    assert fact.scope == f"task:{TASK_ID}"


def test_a_failure_is_remembered_with_the_fix_once_the_checks_pass():
    state = on_repo()
    assert memories(state, RecordVerification("a", "run-1", [check("pytest", False, "E: no x")])) \
        == []
    state = run(state, RecordVerification("a", "run-1", [check("pytest", False, "E: no x")]),
                FailJob("a", "run-1", "verification failed"))
    state = run(state, StartJob("a", "run-2"), now=at(3600))
    state = run(state, RecordReflection("a", "run-2", "fixed", ["x must be imported from y"]))
    checks, fix = memories(state, RecordVerification("a", "run-2", [check("pytest", True)]))
    assert (checks.kind, checks.text) == ("procedural", "These checks pass on this work: `pytest`")
    assert fix.kind == "semantic" and fix.scope == "repo:/src/app"
    assert "`pytest` failed" in fix.text and "E: no x" in fix.text
    assert "What fixed it: x must be imported from y" in fix.text


def test_a_reviewers_feedback_is_a_fact_of_the_repository():
    state = run(on_repo(), RequestApproval())
    [fact] = memories(state, RequestChanges("log every refusal"))
    assert fact.kind == "semantic" and fact.scope == "repo:/src/app"
    assert "log every refusal" in fact.text and fact.job_id == ""


def test_memory_ids_are_stable_and_distinct():
    state = on_repo()
    first = memories(state, RecordReflection("a", "run-1", "done", ["one", "two"]))
    again = memories(state, RecordReflection("a", "run-1", "done", ["one", "two"]))
    ids = [m.memory_id for m in first]
    assert ids == [m.memory_id for m in again] and len(set(ids)) == 3
    assert all(UUID(i) for i in ids)


def test_a_childs_episodes_go_to_its_project_and_its_scopes_widest_first():
    state = on_repo()
    assert scopes_of(state) == ["repo:/src/app", f"task:{TASK_ID}"]
    project = run(None, CreateTask("P", "prd", workflow="project"))
    assert scopes_of(project) == [f"project:{TASK_ID}", f"task:{TASK_ID}"]


@pytest.mark.parametrize("scope", ["", "repo", "team:x", f"task:{TASK_ID}x", 3])
def test_a_scope_that_names_nothing_is_refused(scope):
    with pytest.raises(InvalidCommand):
        parse_scope(scope)


def test_scopes_are_read_as_written():
    assert parse_scope(f" task:{str(TASK_ID).upper()} ") == f"task:{TASK_ID}"
    assert parse_scope("repo:git@host:a/b.git") == "repo:git@host:a/b.git"
