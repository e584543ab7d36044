"""The way forward through the API (issue #12): restart a crashed pod, skip a dead job,
attention in the task view and the "needs me" filter of the task list."""

from __future__ import annotations

import subprocess
from pathlib import Path

import anyio
import pytest

from ipa.eventstore import EventStore
from ipa.pods import PodEnvironment, RestartPolicy, WorkspaceManager, runner_for
from ipa.projections import TaskList
from ipa.supervisor import Supervisor
from ipa.ui.app import create_app
from ipa.ui.guard import GuardPolicy

from .test_api import assert_error, client_for, create, job, python, until

pytestmark = pytest.mark.anyio


class Boom(Exception):
    pass


@pytest.fixture
async def api(store: EventStore, tmp_path: Path):
    """An API whose runner blows up (crashing the pod) for a job with ``{"crash": true}``
    while ``api.crash["on"]``."""
    crash = {"on": True}

    def runner(spec: dict):
        if spec.get("crash") and crash["on"]:
            raise Boom("the runner blew up")
        return runner_for({k: v for k, v in spec.items() if k != "crash"})

    task_list = TaskList(store)
    supervisor = Supervisor(PodEnvironment(
        store=store, workspaces=WorkspaceManager(tmp_path / "workspaces"),
        scratch=tmp_path / "scratch", runner_for=runner,
        policy=RestartPolicy(max_crashes=2, backoff_initial=0.01)))
    async with anyio.create_task_group() as tg:
        await tg.start(task_list.run)
        await tg.start(supervisor.run)
        app = create_app(supervisor, task_list,
                         guard=GuardPolicy(trusted_proxies=("127.0.0.1",)))
        async with client_for(app) as client:
            client.supervisor = supervisor  # type: ignore[attr-defined]
            client.task_list = task_list  # type: ignore[attr-defined]
            client.crash = crash  # type: ignore[attr-defined]
            yield client
        tg.cancel_scope.cancel()


async def test_a_crashed_pod_is_restarted_through_the_api(api) -> None:
    task = await create(api)
    url = f"/api/tasks/{task['id']}"
    assert_error(await api.post(f"{url}/restart"), 409, "pod_running")
    await api.post(f"{url}/queue_job", json={"job_id": "x", "agent": "dev",
                                             "spec": {**python("pass"), "crash": True}})
    view = await until(api, task, lambda v: v["status"] == "failed")
    assert view["attention"]["kind"] == "crashed" and view["attention"]["actions"] == ["restart"]
    assert_error(await api.post(f"{url}/retry"), 409, "pod_not_running")

    api.crash["on"] = False
    restarted = await api.post(f"{url}/restart", headers={"x-ipa-actor": "user:bob"})

    assert restarted.status_code == 200, restarted.text
    assert restarted.json()["status"] == "running" and restarted.json()["attention"] is None
    view = await until(api, task, lambda v: v["status"] == "waiting")
    assert job(view, "x")["status"] == "succeeded"
    assert view["attention"]["kind"] == "gate"
    assert view["attention"]["phase"] == "spec_clarification"
    events = (await api.get(f"{url}/events", params={"limit": 500})).json()["items"]
    assert ("TaskRetried", "user:bob") in [(e["type"], e["actor"]) for e in events]


async def test_a_dead_job_is_skipped_and_the_task_list_says_who_needs_a_person(api) -> None:
    calm = await create(api, title="calm")
    task = await create(api, title="stuck")
    url = f"/api/tasks/{task['id']}"
    await api.post(f"{url}/queue_job", json={"job_id": "bad", "agent": "dev", "max_attempts": 1,
                                             "spec": python("raise SystemExit(3)")})
    view = await until(api, task, lambda v: job(v, "bad")["status"] == "dead")
    assert view["attention"]["kind"] == "job_dead" and view["attention"]["job_id"] == "bad"
    await api.task_list.wait_for(api.supervisor.store.tail.position)

    needing = (await api.get("/api/tasks", params={"attention": "1"})).json()["items"]
    every = (await api.get("/api/tasks")).json()["items"]
    assert [(row["title"], row["attention"]) for row in needing] == [("stuck", "job_dead")]
    assert {row["id"]: row["attention"] for row in every}[calm["id"]] is None
    assert_error(await api.get("/api/tasks", params={"attention": "yes"}), 400, "bad_request")

    skipped = await api.post(f"{url}/jobs/bad/skip", json={"reason": "not needed"})

    assert skipped.status_code == 200, skipped.text
    assert job(skipped.json(), "bad")["status"] == "skipped"
    view = await until(api, task, lambda v: v["status"] == "waiting")
    assert view["attention"]["kind"] == "gate"


async def test_a_repository_that_went_away_is_fixed_by_pointing_the_task_elsewhere(
    api, tmp_path: Path
) -> None:
    from .test_api import git_repo

    gone = git_repo(tmp_path / "gone")
    task = await create(api, repo=str(gone))
    url = f"/api/tasks/{task['id']}"
    await until(api, task, lambda v: v["status"] == "running")
    subprocess.run(["rm", "-rf", str(gone)], check=True)
    await api.post(f"{url}/queue_job", json={"job_id": "j", "agent": "dev", "max_attempts": 1,
                                             "spec": python("print('ok')")})
    view = await until(api, task, lambda v: (v["attention"] or {}).get("kind") == "repository")
    assert "set_repo" in view["attention"]["actions"]

    refused = await api.post(f"{url}/set_repo", json={"repo": str(tmp_path / "nowhere")})
    assert_error(refused, 422, "repository_refused")
    secret = await api.post(f"{url}/set_repo",
                            json={"repo": "https://bob:hunter2@example.com/x.git"})
    assert secret.status_code == 400 and "hunter2" not in secret.text
    fixed = git_repo(tmp_path / "fixed")
    changed = await api.post(f"{url}/set_repo", json={"repo": str(fixed)})
    assert changed.status_code == 200, changed.text
    assert (changed.json()["repo"], changed.json()["repository_error"]) == (str(fixed), None)
    await api.post(f"{url}/jobs/j/retry")
    view = await until(api, task, lambda v: job(v, "j")["status"] == "succeeded")
    assert view["attention"] is None or view["attention"]["kind"] != "repository"
