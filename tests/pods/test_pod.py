"""A pod runs its task's jobs through the real store, real subprocesses and real git."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import anyio
import pytest

from ipa.domain import Cancel, Pause, QueueJob, Resume, RetryJob, Status
from ipa.eventstore import EventStore
from ipa.pods import PodStatus
from ipa.supervisor import PodNotRunning

from .helpers import job, python, wait_for

pytestmark = pytest.mark.anyio


def types(recorded) -> list[str]:
    return [r.type for r in recorded]


async def test_a_new_task_is_started_and_its_job_runs_to_success(
    supervisor, create_task, store: EventStore
) -> None:
    pod = await supervisor.start(await create_task())
    await pod.execute(QueueJob(job_id="hello", agent="spec_writer", spec=python("print('hi')")))

    state = await wait_for(pod, lambda s: job(s, "hello").status.value == "succeeded")

    run_id = job(state, "hello").run_id
    run = await store.read(uuid.UUID(run_id))
    assert types(run) == ["RunStarted", "RunOutput", "RunFinished"]
    assert run[1].data["lines"][0]["text"] == "hi"
    assert run[2].data["succeeded"] is True


async def test_a_gated_phase_asks_for_approval_when_its_jobs_succeed(
    supervisor, create_task
) -> None:
    pod = await supervisor.start(await create_task())
    await pod.execute(QueueJob(job_id="spec", agent="spec_writer", spec=python("pass")))

    state = await wait_for(pod, lambda s: s.status is Status.waiting)

    assert state.phase == "spec_clarification"


async def test_ready_jobs_start_in_priority_order(supervisor, create_task, pod_env) -> None:
    pod = await supervisor.start(await create_task())
    await wait_for(pod, lambda s: s.status is Status.running)
    pod.scheduler._max_parallel = 1
    await pod.execute(Pause(reason="queueing"))
    for job_id, priority in (("low", 0), ("high", 9), ("mid", 5), ("mid2", 5)):
        await pod.execute(QueueJob(job_id=job_id, agent="developer", priority=priority,
                                   spec=python("pass")))
    await pod.execute(Resume())

    await wait_for(pod, lambda s: all(job(s, j).status.value == "succeeded"
                                      for j in ("low", "high", "mid", "mid2")))

    events = await pod_env.store.read(pod.task_id)
    started = [e.data["job_id"] for e in events if e.type == "JobStarted"]
    assert started == ["high", "mid", "mid2", "low"]


async def test_a_job_waits_for_the_jobs_it_depends_on(supervisor, create_task, pod_env) -> None:
    pod = await supervisor.start(await create_task())
    await pod.execute(QueueJob(job_id="build", agent="developer",
                               spec=python("import time; time.sleep(0.3)")))
    await pod.execute(QueueJob(job_id="test", agent="developer", depends_on=("build",),
                               spec=python("pass")))

    await wait_for(pod, lambda s: job(s, "test").status.value == "succeeded")

    events = await pod_env.store.read(pod.task_id)
    order = [(e.type, e.data.get("job_id")) for e in events if e.type.startswith("Job")]
    assert order.index(("JobSucceeded", "build")) < order.index(("JobStarted", "test"))


async def test_a_job_over_its_timeout_is_killed_and_dead_lettered(
    supervisor, create_task
) -> None:
    pod = await supervisor.start(await create_task())
    await pod.execute(QueueJob(job_id="slow", agent="developer", timeout_seconds=0.5,
                               max_attempts=1, spec=python("import time; time.sleep(60)")))

    state = await wait_for(pod, lambda s: job(s, "slow").status.value == "dead")

    assert "timed out after 0.5 s" in job(state, "slow").last_error


async def test_a_failing_job_is_retried_with_backoff_then_dead_lettered_then_retried_by_hand(
    supervisor, create_task, pod_env
) -> None:
    pod = await supervisor.start(await create_task())
    await pod.execute(QueueJob(job_id="flaky", agent="developer", max_attempts=3,
                               spec=python("raise SystemExit(3)")))

    state = await wait_for(pod, lambda s: job(s, "flaky").status.value == "dead")

    events = await pod_env.store.read(pod.task_id)
    failures = [e for e in events if e.type == "JobFailed"]
    assert [f.data["attempt"] for f in failures] == [1, 2, 3]
    assert all("exited with status 3" in f.data["reason"] for f in failures)
    assert failures[2].data["retry_at"] is None
    assert types(events)[-1] == "JobDeadLettered" or "JobDeadLettered" in types(events)
    started = [e.timestamp for e in events if e.type == "JobStarted"]
    gaps = [(b - a).total_seconds() for a, b in zip(started, started[1:], strict=False)]
    assert gaps[0] >= 0.5 and gaps[1] >= 1.0  # backoff: ≥ half of 1 s, then of 2 s

    await pod.execute(RetryJob(job_id="flaky"))
    state = await wait_for(pod, lambda s: job(s, "flaky").status.value in ("running", "failed"))
    assert job(state, "flaky").attempts >= 1


async def test_pause_with_interrupt_records_the_run_as_interrupted_and_resume_retries_it(
    supervisor, create_task
) -> None:
    pod = await supervisor.start(await create_task())
    await pod.execute(QueueJob(job_id="long", agent="developer",
                               spec=python("print('go', flush=True); import time; time.sleep(60)")))
    await wait_for(pod, lambda s: job(s, "long").status.value == "running")

    await pod.execute(Pause(reason="stop"), interrupt=True)
    state = await wait_for(pod, lambda s: job(s, "long").status.value != "running")

    assert state.status is Status.paused
    assert "interrupted" in job(state, "long").last_error
    await pod.execute(Resume())
    state = await wait_for(pod, lambda s: job(s, "long").status.value == "running")
    assert job(state, "long").attempts == 2


async def test_interrupting_one_job_holds_it_for_a_person_and_leaves_the_other(
    supervisor, create_task
) -> None:
    pod = await supervisor.start(await create_task())
    sleeper = python("print('go', flush=True); import time; time.sleep(60)")
    await pod.execute(QueueJob(job_id="a", agent="developer", spec=sleeper))
    await pod.execute(QueueJob(job_id="b", agent="developer", spec=sleeper))
    await wait_for(pod, lambda s: all(j.status.value == "running" for j in s.jobs.values()))

    assert supervisor.interrupt(pod.task_id, "a", actor="user:ann") == 1
    state = await wait_for(pod, lambda s: job(s, "a").status.value != "running")

    assert job(state, "a").last_error == "interrupted by user:ann"
    assert (job(state, "a").status.value, job(state, "a").attempts) == ("held", 0)
    assert job(state, "b").status.value == "running"
    assert supervisor.interrupt(pod.task_id, "no-such-job") == 0


async def test_cancel_interrupts_runs_removes_workspaces_and_ends_the_pod(
    supervisor, create_task, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "--allow-empty", "-m", "init"], check=True)
    pod = await supervisor.start(await create_task(repo=str(repo)))
    await pod.execute(QueueJob(job_id="long", agent="developer",
                               spec=python("import time; time.sleep(60)")))
    await wait_for(pod, lambda s: bool(s.workspaces))  # its worktree is made

    await pod.execute(Cancel(reason="no longer needed"))
    with anyio.fail_after(20):
        await supervisor.wait_stopped(pod.task_id)

    state = pod.get_state()
    assert state.status is Status.cancelled
    assert "interrupted" in job(state, "long").last_error
    assert state.workspaces and all(w.removed for w in state.workspaces.values())
    with pytest.raises(PodNotRunning):
        supervisor.get(pod.task_id)


async def test_a_run_in_a_repo_commits_its_changes_on_its_own_branch(
    supervisor, create_task, tmp_path: Path, pod_env
) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "--allow-empty", "-m", "init"], check=True)
    task_id = await create_task(repo=str(repo))
    pod = await supervisor.start(task_id)
    await pod.execute(QueueJob(job_id="write", agent="developer",
                               spec=python("open('hello.txt', 'w').write('hi')")))

    state = await wait_for(pod, lambda s: job(s, "write").status.value == "succeeded"
                           and s.branch is not None and s.branch.head_commit is not None)

    [workspace] = state.workspaces.values()
    assert workspace.removed and len(workspace.commits) == 1
    assert state.branch.head_commit == workspace.commits[0]  # landed on the task branch
    events = await pod_env.store.read(task_id)
    [commit] = [e for e in events if e.type == "WorkspaceCommitted"]
    assert commit.data["files"] == ["hello.txt"]
    assert f"task {task_id}" in commit.data["message"] and "task version" in commit.data["message"]
    shown = subprocess.run(["git", "-C", str(repo), "show", f"{state.branch.name}:hello.txt"],
                           capture_output=True, text=True, check=True)
    assert shown.stdout == "hi"


async def test_a_repository_that_does_not_exist_is_recorded_and_fails_the_job(
    supervisor, create_task, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-repo"
    pod = await supervisor.start(await create_task(repo=str(missing)))
    await pod.execute(QueueJob(job_id="j", agent="developer", max_attempts=1,
                               spec=python("pass")))

    state = await wait_for(pod, lambda s: job(s, "j").status.value == "dead")

    assert str(missing) in state.repository_error
    assert f"repository {missing} is unavailable" in job(state, "j").last_error
    assert pod.status is PodStatus.ready  # the pod itself is fine
