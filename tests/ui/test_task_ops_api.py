"""Archive, clone and fork through the API (issue #17) on the real store, real pods and real
git: archived tasks leave the list and come back with the filter; a clone copies settings, not
history; a fork at a past version has that version's state and files."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
import pytest

from ipa.eventstore import Audit, EventStore
from ipa.pods import PodEnvironment, WorkspaceManager, runner_for
from ipa.projections import TaskList
from ipa.supervisor import Supervisor
from ipa.ui.app import create_app
from ipa.ui.guard import GuardPolicy

from .test_api import assert_error, client_for, create, git_repo, job, python, until

pytestmark = pytest.mark.anyio


@pytest.fixture
async def api(store: EventStore, tmp_path: Path):
    task_list = TaskList(store)
    supervisor = Supervisor(PodEnvironment(
        store=store, workspaces=WorkspaceManager(tmp_path / "workspaces"),
        scratch=tmp_path / "scratch", runner_for=runner_for))
    async with anyio.create_task_group() as tg:
        await tg.start(task_list.run)
        await tg.start(supervisor.run)
        app = create_app(supervisor, task_list, guard=GuardPolicy(trusted_proxies=("127.0.0.1",)))
        async with client_for(app) as client:
            client.supervisor = supervisor  # type: ignore[attr-defined]
            client.task_list = task_list  # type: ignore[attr-defined]
            yield client
        tg.cancel_scope.cancel()


async def listed(api, *, after: dict, **query: str) -> list[str]:
    """The ids ``GET /api/tasks`` lists once the list has folded ``after``'s newest event."""
    with anyio.fail_after(20):
        while True:
            rows = {row["id"]: row for row in (await api.get("/api/tasks?archived=1")).json()[
                "items"]}
            if rows.get(after["id"], {}).get("version") == after["version"]:
                break
            await anyio.sleep(0.05)
    response = await api.get("/api/tasks", params=query)
    assert response.status_code == 200, response.text
    return [row["id"] for row in response.json()["items"]]


async def cancelled(api, title: str) -> dict:
    """A task cancelled, its pod ended (the archive is then recorded without one)."""
    task = await create(api, title=title)
    response = await api.post(f"/api/tasks/{task['id']}/cancel", json={"reason": "done with"})
    assert response.status_code == 200, response.text
    with anyio.fail_after(20):
        await api.supervisor.wait_stopped(UUID(task["id"]))
    return response.json()


async def events_of(api, task: dict) -> list[dict]:
    return (await api.get(f"/api/tasks/{task['id']}/events", params={"limit": 500})).json()[
        "items"]


# -- archive -------------------------------------------------------------------------------------


async def test_an_archived_task_leaves_the_list_and_comes_back_with_the_filter(api) -> None:
    kept = await create(api, title="kept")
    done = await cancelled(api, "done")

    response = await api.post(f"/api/tasks/{done['id']}/archive",
                              headers={"x-ipa-actor": "user:ann"})

    assert response.status_code == 200, response.text
    archived = response.json()
    assert archived["archived"] is True and archived["status"] == "cancelled"
    assert archived["version"] == done["version"] + 1
    default = await listed(api, after=archived)
    assert done["id"] not in default and kept["id"] in default
    assert set(await listed(api, after=archived, archived="1")) >= {done["id"], kept["id"]}
    assert await listed(api, after=archived, archived="only") == [done["id"]]
    row = next(r for r in (await api.get("/api/tasks?archived=only")).json()["items"])
    assert row["archived"] is True
    [event] = (await events_of(api, archived))[-1:]
    assert (event["type"], event["actor"]) == ("TaskArchived", "user:ann")

    back = (await api.post(f"/api/tasks/{done['id']}/unarchive")).json()
    assert back["archived"] is False
    assert done["id"] in await listed(api, after=back)
    audit = await Audit.start(api.supervisor.store)
    assert await audit.verify_stream(UUID(done["id"])) == []


async def test_an_unfinished_task_is_not_archived_and_nothing_is_written(api) -> None:
    task = await create(api)
    view = await until(api, task, lambda v: v["status"] == "running")

    error = assert_error(await api.post(f"/api/tasks/{task['id']}/archive"), 409,
                         "command_not_allowed")

    assert error["message"] == ("cannot archive: the task is running; only a finished task "
                                "(completed, failed or cancelled) is archived")
    assert (await api.get(f"/api/tasks/{task['id']}")).json()["version"] == view["version"]
    assert_error(await api.post(f"/api/tasks/{task['id']}/archive", json={"why": 1}), 400,
                 "bad_request")


async def test_the_archived_filter_takes_0_1_or_only(api) -> None:
    error = assert_error(await api.get("/api/tasks?archived=yes"), 400, "bad_request")
    assert "expected 0" in error["message"] and "only" in error["message"]


# -- clone ---------------------------------------------------------------------------------------


async def test_a_clone_copies_the_settings_and_description_not_the_history(api) -> None:
    source = await create(api, title="Rate limiting", description="on the login endpoint")
    url = f"/api/tasks/{source['id']}"
    for name, body in (("set_budget", {"limit_usd": 3.5}),
                       ("set_approval_policy", {"phase": "planning", "policy": "auto"}),
                       ("configure_sync", {"github": {"repo": "o/n", "approval": True}}),
                       ("queue_job", {"job_id": "hello", "agent": "dev",
                                      "spec": python("print('hi')")})):
        assert (await api.post(f"{url}/{name}", json=body)).status_code == 200
    source = await until(api, source, lambda v: job(v, "hello")["status"] == "succeeded")

    response = await api.post(f"{url}/clone", json={"title": "Rate limiting, again"},
                              headers={"x-ipa-actor": "user:bob"})

    assert response.status_code == 201, response.text
    clone = response.json()
    assert (clone["title"], clone["description"], clone["workflow"]) == (
        "Rate limiting, again", "on the login endpoint", "task")
    assert (clone["budget_usd"], clone["approval_policies"], clone["sync"]["config"]) == (
        3.5, {"planning": "auto"}, source["sync"]["config"])
    assert source["sync"]["config"]["github"]["repo"] == "o/n"
    assert clone["cloned_from"]["task_id"] == source["id"]
    assert clone["cloned_from"]["version"] >= source["version"]
    assert clone["jobs"] == [] and clone["usage"]["runs"] == 0 and clone["approvals"] == []
    assert clone["phase"] == "spec_clarification" and clone["created_by"] == "user:bob"
    assert [e["type"] for e in await events_of(api, clone)][:2] == ["TaskCreated", "TaskCloned"]
    with anyio.fail_after(20):
        while not (await api.get(url)).json()["clones"]:
            await anyio.sleep(0.05)
    [made] = (await api.get(url)).json()["clones"]
    assert (made["id"], made["title"]) == (clone["id"], "Rate limiting, again")


async def test_a_clone_of_an_unknown_task_is_a_404_and_a_bad_body_a_400(api) -> None:
    task = await create(api)
    assert_error(await api.post(f"/api/tasks/{uuid.uuid4()}/clone"), 404, "task_not_found")
    assert_error(await api.post(f"/api/tasks/{task['id']}/clone", json={"title": 3}), 400,
                 "bad_request")
    assert_error(await api.post(f"/api/tasks/{task['id']}/clone", json={"version": 1}), 400,
                 "bad_request")
    assert_error(await api.post(f"/api/tasks/{task['id']}/clone", json={"title": " "}), 400,
                 "invalid_input")


# -- fork ----------------------------------------------------------------------------------------


def show(repo: Path, ref: str, path: str) -> str | None:
    """The file at ``ref`` in ``repo``, or None when it has none."""
    done = subprocess.run(["git", "-C", str(repo), "show", f"{ref}:{path}"],
                          capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None


def branches(repo: Path) -> set[str]:
    out = subprocess.run(["git", "-C", str(repo), "branch", "--format=%(refname:short)"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


WRITE_ONE = python("open('a.txt', 'w').write('1')")
WRITE_TWO = python("open('a.txt', 'w').write('2'); open('b.txt', 'w').write('b')")
READ = python("import os; open('seen.txt', 'w').write(open('a.txt').read() + "
              "(' with b' if os.path.exists('b.txt') else ' without b'))")


async def two_rounds(api, repo: Path) -> tuple[dict, int, int]:
    """A task whose first job wrote a.txt = 1 (in spec_clarification) and whose second,
    after the gate, wrote a.txt = 2 and b.txt; the versions of the first one's success and of
    its landing (one record)."""
    task = await create(api, title="Two rounds", repo=str(repo))
    url = f"/api/tasks/{task['id']}"
    await api.post(f"{url}/queue_job", json={"job_id": "one", "agent": "dev", "spec": WRITE_ONE})
    await until(api, task, lambda v: v["status"] == "waiting")
    assert (await api.post(f"{url}/approve")).status_code == 200
    await api.post(f"{url}/queue_job", json={"job_id": "two", "agent": "dev", "spec": WRITE_TWO})
    task = await until(api, task, lambda v: v["status"] == "waiting" and v["phase"] == "planning")
    events = await events_of(api, task)
    [succeeded] = [e for e in events
                   if e["type"] == "JobSucceeded" and e["data"]["job_id"] == "one"]
    [landed] = [e for e in events
                if e["type"] == "BranchAdvanced" and e["data"]["job_id"] == "one"]
    return task, succeeded["version"], landed["version"]


async def test_a_fork_at_a_past_version_has_that_versions_state_and_files(
    api, tmp_path: Path
) -> None:
    repo = git_repo(tmp_path / "repo")
    source, succeeded, at = await two_rounds(api, repo)
    url = f"/api/tasks/{source['id']}"
    then = (await api.get(url, params={"version": at})).json()

    # At the job's success: the fork is at the end of that record, its landing.
    response = await api.post(f"{url}/fork", json={"version": succeeded},
                              headers={"x-ipa-actor": "user:ann"})

    assert response.status_code == 201, response.text
    fork = response.json()
    assert succeeded < at and fork["forked_from"] == {"task_id": source["id"], "version": at}
    assert [e["type"] for e in await events_of(api, fork)][:2] == ["TaskCreated", "TaskForked"]
    # The state at that version, but what was the source's own.
    own = {"id", "version", "created_at", "updated_at", "created_by", "forked_from",
           "workspaces", "branch", "allowed_commands", "attention", "forks", "clones", "node"}
    assert {k: v for k, v in fork.items() if k not in own} == {
        k: v for k, v in then.items() if k not in own}
    assert (fork["phase"], fork["status"]) == ("spec_clarification", "running")
    assert [j["job_id"] for j in fork["jobs"]] == ["one"] and fork["workspaces"] == []
    assert fork["created_by"] == "user:ann" and fork["id"] != source["id"]
    # Its own branch, at the commit the source's had then: the files of that version.
    head = then["branch"]["head_commit"]
    assert fork["branch"] == {**then["branch"], "name": f"ipa/{UUID(fork['id']).hex[:8]}"}
    assert show(repo, fork["branch"]["name"], "a.txt") == "1"
    assert show(repo, fork["branch"]["name"], "b.txt") is None
    assert show(repo, source["branch"]["name"], "a.txt") == "2"  # the source is untouched
    diff = (await api.get(f"/api/tasks/{fork['id']}/diff")).json()
    assert (diff["head"], [f["path"] for f in diff["files"]]) == (head, ["a.txt"])

    # Its next run works in those files, and lands on its own branch.
    fork_url = f"/api/tasks/{fork['id']}"
    await until(api, fork, lambda v: v["status"] == "waiting")
    assert (await api.post(f"{fork_url}/approve")).status_code == 200
    await api.post(f"{fork_url}/queue_job", json={"job_id": "read", "agent": "dev",
                                                  "spec": READ})
    fork = await until(api, fork, lambda v: job(v, "read")["status"] == "succeeded")
    assert show(repo, fork["branch"]["name"], "seen.txt") == "1 without b"
    assert show(repo, source["branch"]["name"], "seen.txt") is None
    # Both pages' links: the source lists its fork.
    with anyio.fail_after(20):
        while not (await api.get(url)).json()["forks"]:
            await anyio.sleep(0.05)
    assert [(f["id"], f["version"]) for f in (await api.get(url)).json()["forks"]] == [
        (fork["id"], at)]
    audit = await Audit.start(api.supervisor.store)
    assert await audit.verify_stream(UUID(fork["id"])) == []


async def test_a_fork_of_a_running_job_queues_it_again(api) -> None:
    task = await create(api)
    url = f"/api/tasks/{task['id']}"
    await api.post(f"{url}/queue_job", json={
        "job_id": "slow", "agent": "dev", "spec": python("import time; time.sleep(60)")})
    view = await until(api, task, lambda v: job(v, "slow")["status"] == "running")

    fork = (await api.post(f"{url}/fork", json={"version": view["version"]})).json()

    # The answer is the fork as made: the run in flight was the source's.
    assert (job(fork, "slow")["status"], job(fork, "slow")["attempts"],
            job(fork, "slow")["run_id"]) == ("pending", 0, None)
    assert job(view, "slow")["attempts"] == 1
    forked = await until(api, fork, lambda v: job(v, "slow")["status"] == "running")
    assert job(forked, "slow")["run_id"] != job(view, "slow")["run_id"]
    for each in (task, fork):
        await api.post(f"/api/tasks/{each['id']}/cancel")


@pytest.mark.parametrize(("body", "status", "code", "words"), [
    ({"version": 0}, 422, "version_out_of_range", "version 0 is out of range"),
    ({"version": 99}, 422, "version_out_of_range", "version 99 is out of range"),
    ({"version": "2"}, 400, "bad_request", "version must be a whole number"),
    ({"version": True}, 400, "bad_request", "version must be a whole number"),
    ({}, 400, "bad_request", "'version' is required"),
    ({"version": 1, "branch": "x"}, 400, "bad_request", "unknown field(s) 'branch'"),
    ({"version": 1, "title": ""}, 400, "invalid_input", "title must not be blank"),
], ids=["zero", "past-the-head", "text", "bool", "missing", "unknown-field", "blank-title"])
async def test_a_bad_fork_is_refused_naming_the_problem_and_nothing_is_written(
    api, tmp_path: Path, body: dict[str, Any], status: int, code: str, words: str
) -> None:
    repo = git_repo(tmp_path / "repo")
    task = await create(api, repo=str(repo))
    view = await until(api, task, lambda v: v["status"] == "running")
    streams = set(await api.supervisor.store.stream_ids())
    before = branches(repo)

    error = assert_error(await api.post(f"/api/tasks/{task['id']}/fork", json=body), status,
                         code)

    assert words in error["message"]
    if code == "version_out_of_range":
        assert f"task {task['id']} has versions 1 to {view['version']}" in error["message"]
    assert set(await api.supervisor.store.stream_ids()) == streams and branches(repo) == before


async def test_a_fork_where_the_task_had_ended_or_of_no_task_is_refused(api) -> None:
    done = await cancelled(api, "done")
    streams = set(await api.supervisor.store.stream_ids())

    error = assert_error(await api.post(f"/api/tasks/{done['id']}/fork",
                                        json={"version": done["version"]}),
                         409, "command_not_allowed")
    assert "the task was cancelled" in error["message"]
    assert_error(await api.post(f"/api/tasks/{uuid.uuid4()}/fork", json={"version": 1}), 404,
                 "task_not_found")
    assert_error(await api.post(f"/api/tasks/{done['id']}/fork", content=b"{",
                                headers={"content-type": "application/json"}), 400,
                 "bad_request")
    assert set(await api.supervisor.store.stream_ids()) == streams
    forked = await api.post(f"/api/tasks/{done['id']}/fork", json={"version": 1})
    assert forked.status_code == 201 and forked.json()["status"] == "pending"
