"""The REST API beyond tasks: jobs, runs, artifacts, workspace files at a commit, time travel,
request checks, API keys, OpenAPI and metrics (real store, real pods, real git)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from uuid import UUID

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Route

from ipa.eventstore import EventStore
from ipa.pods import PodEnvironment, RepositoryPolicy, WorkspaceManager, runner_for
from ipa.projections import TaskList
from ipa.supervisor import Supervisor
from ipa.ui.api import COMMANDS
from ipa.ui.app import create_app
from ipa.ui.guard import GuardPolicy
from ipa.ui.openapi import OPERATIONS

pytestmark = pytest.mark.anyio

KEYS = {"alice": "alice-secret-key", "ci": "ci-secret-key-1"}


@pytest.fixture
async def parts(store: EventStore, tmp_path: Path):
    task_list = TaskList(store)
    supervisor = Supervisor(PodEnvironment(
        store=store, workspaces=WorkspaceManager(tmp_path / "workspaces"),
        scratch=tmp_path / "scratch", runner_for=runner_for))
    async with anyio.create_task_group() as tg:
        await tg.start(task_list.run)
        await tg.start(supervisor.run)
        yield supervisor, task_list
        tg.cancel_scope.cancel()


def client_for(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")


@pytest.fixture
async def api(parts):
    # The test client (127.0.0.1) stands for a trusted proxy: it names actors (X-IPA-Actor).
    app = create_app(*parts, guard=GuardPolicy(trusted_proxies=("127.0.0.1",)))
    async with client_for(app) as client:
        client.supervisor = parts[0]  # type: ignore[attr-defined]
        client.app = app  # type: ignore[attr-defined]
        yield client


@pytest.fixture
async def keyed(parts):
    async with client_for(create_app(*parts, api_keys=KEYS)) as client:
        yield client


def python(code: str) -> dict:
    return {"command": [sys.executable, "-c", code]}


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


async def create(api, **fields) -> dict:
    response = await api.post("/api/tasks", json={"title": "t", **fields})
    assert response.status_code == 201, response.text
    return response.json()


async def until(api, task: dict, predicate) -> dict:
    with anyio.fail_after(20):
        async with api.supervisor.store.subscribe(UUID(task["id"])):
            while True:
                view = (await api.get(f"/api/tasks/{task['id']}")).json()
                if predicate(view):
                    return view
                await anyio.sleep(0.05)


def job(view: dict, job_id: str) -> dict:
    return next(j for j in view["jobs"] if j["job_id"] == job_id)


def git_repo(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    (path / "README").write_text("hello\n")
    subprocess.run(["git", "-C", str(path), "add", "README"], check=True)
    subprocess.run(["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "-m", "init"], check=True)
    return path


# Jobs and runs -------------------------------------------------------------------------------


async def test_jobs_and_runs_are_listed_with_their_outcome(api) -> None:
    task = await create(api)
    url = f"/api/tasks/{task['id']}"
    await api.post(f"{url}/queue_job", json={"job_id": "hello", "agent": "dev",
                                             "spec": python("print('hi')")})
    await until(api, task, lambda v: job(v, "hello")["status"] == "succeeded")

    jobs = (await api.get(f"{url}/jobs")).json()
    got = (await api.get(f"{url}/jobs/hello")).json()
    runs = (await api.get(f"{url}/runs")).json()
    run_id = runs["items"][0]["run_id"]
    run_events = (await api.get(f"/api/runs/{run_id}/events")).json()

    assert [j["job_id"] for j in jobs["items"]] == ["hello"] and jobs["next_cursor"] is None
    assert got["status"] == "succeeded" and got["run_id"] == run_id
    assert [(r["job_id"], r["status"], r["attempt"]) for r in runs["items"]] == [
        ("hello", "succeeded", 1)]
    types = [e["type"] for e in run_events["items"]]
    assert types[0] == "RunStarted" and types[-1] == "RunFinished"
    lines = [line["text"] for e in run_events["items"] if e["type"] == "RunOutput"
             for line in e["data"]["lines"]]
    assert "hi" in lines


async def test_a_dead_lettered_job_is_retried_and_a_job_cancelled(api) -> None:
    task = await create(api)
    url = f"/api/tasks/{task['id']}"
    await api.post(f"{url}/queue_job", json={"job_id": "bad", "agent": "dev", "max_attempts": 1,
                                             "spec": python("raise SystemExit(3)")})
    await until(api, task, lambda v: job(v, "bad")["status"] == "dead")

    retried = await api.post(f"{url}/jobs/bad/retry", headers={"x-ipa-actor": "user:bob"})
    cancelled = await api.post(f"{url}/jobs/bad/cancel", json={"reason": "enough"})
    interrupted = await api.post(f"{url}/jobs/bad/interrupt")

    assert retried.status_code == 200, retried.text
    assert job(cancelled.json(), "bad")["status"] == "cancelled"
    assert interrupted.json() == {"interrupted": 0}
    events = (await api.get(f"{url}/events", params={"limit": 500})).json()["items"]
    assert ("JobRequeued", "user:bob") in [(e["type"], e["actor"]) for e in events]


@pytest.mark.parametrize(("method", "path", "code"), [
    ("GET", "/jobs/nope", "job_not_found"), ("POST", "/jobs/nope/retry", "job_not_found"),
    ("POST", "/jobs/x/explode", "unknown_action"),
    ("GET", "/workspaces/nope/files", "workspace_not_found"),
])
async def test_unknown_parts_of_a_task_are_404(api, method: str, path: str, code: str) -> None:
    task = await create(api)

    assert_error(await api.request(method, f"/api/tasks/{task['id']}{path}"), 404, code)


async def test_run_events_of_an_unknown_run_are_404(api) -> None:
    assert_error(await api.get(f"/api/runs/{uuid.uuid4()}/events"), 404, "run_not_found")
    assert_error(await api.get("/api/runs/nope/events"), 400, "bad_request")


# Time travel, artifacts ----------------------------------------------------------------------


async def test_a_version_comes_with_what_changed_and_its_event(api) -> None:
    task = await create(api)
    await until(api, task, lambda v: v["status"] == "running")

    at_2 = (await api.get(f"/api/tasks/{task['id']}/versions/2")).json()
    at_1 = (await api.get(f"/api/tasks/{task['id']}/versions/1")).json()

    assert at_2["state"]["version"] == 2 and at_2["event"]["type"] == "TaskStarted"
    assert at_2["changed"]["status"] == "running" and "title" not in at_2["changed"]
    assert at_1["changed"]["title"] == "t"
    assert_error(await api.get(f"/api/tasks/{task['id']}/versions/99"), 404, "task_not_found")
    assert_error(await api.get(f"/api/tasks/{task['id']}/versions/0"), 400, "bad_request")


async def test_artifacts_are_an_empty_list_when_the_state_has_none(api) -> None:
    task = await create(api)

    page = (await api.get(f"/api/tasks/{task['id']}/artifacts")).json()

    assert page == {"items": [], "next_cursor": None}


# Workspace files at a commit -----------------------------------------------------------------


async def test_workspace_files_and_diff_are_read_at_the_recorded_commit(
    api, tmp_path: Path
) -> None:
    repo = git_repo(tmp_path / "repo")
    task = await create(api, repo=str(repo))
    url = f"/api/tasks/{task['id']}"
    code = "import os; os.makedirs('src'); open('src/a.py','w').write('x = 1\\n')"
    await api.post(f"{url}/queue_job", json={"job_id": "w", "agent": "dev", "spec": python(code)})
    view = await until(api, task, lambda v: job(v, "w")["status"] == "succeeded"
                       and any(w["removed"] for w in v["workspaces"]))
    [workspace] = view["workspaces"]
    ws_url = f"{url}/workspaces/{workspace['workspace_id']}"

    listed = (await api.get(f"{url}/workspaces")).json()["items"]
    root = (await api.get(f"{ws_url}/files")).json()
    src = (await api.get(f"{ws_url}/files", params={"path": "src"})).json()
    file = (await api.get(f"{ws_url}/files", params={"path": "src/a.py"})).json()
    before = (await api.get(f"{ws_url}/files", params={"commit": workspace["base_commit"]})).json()
    diff = (await api.get(f"{ws_url}/diff")).json()

    assert [w["workspace_id"] for w in listed] == [workspace["workspace_id"]]
    assert [(e["path"], e["type"]) for e in root["items"]] == [("README", "file"), ("src", "dir")]
    assert [e["path"] for e in src["items"]] == ["src/a.py"]
    assert (file["type"], file["content"], file["size"]) == ("file", "x = 1\n", 6)
    assert [e["path"] for e in before["items"]] == ["README"]
    assert "+x = 1" in diff["diff"] and diff["files"] == [{"status": "A", "path": "src/a.py"}]
    for path in ("../x", "/etc/passwd", ".git/config", "missing"):
        response = await api.get(f"{ws_url}/files", params={"path": path})
        assert response.status_code == 404, path
    assert_error(await api.get(f"{ws_url}/files", params={"commit": "HEAD"}), 400, "bad_request")


# Request checks ------------------------------------------------------------------------------


async def test_bad_bodies_and_cursors_are_4xx_and_write_nothing(api, store: EventStore) -> None:
    task = await create(api)
    await until(api, task, lambda v: v["status"] == "running")
    url = f"/api/tasks/{task['id']}"
    before = await store.head_position()

    unknown = await api.post(f"{url}/pause", json={"reason": "x", "colour": "red"})
    wrong_type = await api.post(f"{url}/pause", json={"reason": 5})
    big = await api.post(f"{url}/pause", content=b'{"reason": "' + b"x" * 2_000_000 + b'"}',
                         headers={"content-type": "application/json"})
    bad_expected = await api.post(f"{url}/pause", json={"expected_version": True})
    bad_create = await api.post("/api/tasks", json={"title": "t", "priority": 1})

    assert "'colour'" in assert_error(unknown, 400, "bad_request")["message"]
    assert "'reason' must be a string" in assert_error(wrong_type, 400, "bad_request")["message"]
    assert_error(big, 413, "payload_too_large")
    assert_error(bad_expected, 400, "bad_request")
    assert_error(bad_create, 400, "bad_request")
    for path in ("/api/tasks?cursor=zzz", f"{url}/jobs?cursor=x", f"{url}/jobs?cursor=99",
                 f"{url}/events?cursor=-1"):
        assert_error(await api.get(path), 400, "bad_cursor")
    assert await store.head_position() == before


async def test_events_page_with_a_cursor(api) -> None:
    task = await create(api)
    await until(api, task, lambda v: v["status"] == "running")
    url = f"/api/tasks/{task['id']}/events"

    first = (await api.get(url, params={"limit": 1})).json()
    second = (await api.get(url, params={"limit": 1, "cursor": first["next_cursor"]})).json()

    assert [e["version"] for e in first["items"] + second["items"]] == [1, 2]
    assert second["next_cursor"] is None


async def test_reads_served_again_from_the_cache_are_never_older_than_the_pod(api) -> None:
    task = await create(api)
    await until(api, task, lambda v: v["status"] == "running")
    url = f"/api/tasks/{task['id']}/events"
    cache = api.app.state.api.cache

    first = (await api.get(url)).json()
    again = (await api.get(url)).json()
    hits = cache.hits
    paused = await api.post(f"/api/tasks/{task['id']}/pause", json={"reason": "look"})
    assert paused.status_code == 200, paused.text
    after = (await api.get(url)).json()  # at once: the pod moved on when the append committed

    assert again == first and hits >= 1
    assert [e["type"] for e in after["items"]] == ["TaskCreated", "TaskStarted", "TaskPaused"]
    version_2 = (await api.get(f"/api/tasks/{task['id']}/versions/2")).json()
    assert (await api.get(f"/api/tasks/{task['id']}/versions/2")).json() == version_2
    assert version_2["state"]["status"] == "running"  # the past stays as it was


# API keys ------------------------------------------------------------------------------------


async def test_without_a_key_every_api_route_is_401_and_nothing_is_written(
    keyed, store: EventStore
) -> None:
    before = await store.head_position()

    responses = [
        await keyed.post("/api/tasks", json={"title": "t"}),
        await keyed.get("/api/tasks"),
        await keyed.get("/api/stream"),
        await keyed.post("/api/tasks", json={"title": "t"}, headers={"X-API-Key": "wrong-key!"}),
        await keyed.get("/metrics"),
    ]

    for response in responses:
        assert_error(response, 401, "unauthorized")
    assert await store.head_position() == before
    assert (await keyed.get("/healthz")).status_code == 200


async def test_a_key_names_the_actor_of_what_it_writes(keyed) -> None:
    created = await keyed.post("/api/tasks", json={"title": "t"},
                               headers={"X-API-Key": KEYS["ci"], "x-ipa-actor": "user:mallory"})

    assert created.status_code == 201
    assert created.json()["created_by"] == "api-key:ci"


async def test_a_login_sets_a_cookie_that_authenticates(keyed) -> None:
    wrong = await keyed.post("/login", json={"key": "not-the-key"})
    form = await keyed.post("/login", content=f"key={KEYS['alice']}&next=/pods/x",
                            headers={"content-type": "application/x-www-form-urlencoded"})
    created = await keyed.post("/api/tasks", json={"title": "t"})

    assert_error(wrong, 401, "unauthorized")
    assert form.status_code == 303 and form.headers["location"] == "/pods/x"
    assert created.status_code == 201 and created.json()["created_by"] == "api-key:alice"
    assert "<form" in (await keyed.get("/login")).text


async def test_a_page_without_a_key_redirects_to_the_login(keyed) -> None:
    response = await keyed.get("/", headers={"accept": "text/html"})

    assert response.status_code == 303 and response.headers["location"].startswith("/login")


# OpenAPI, metrics ----------------------------------------------------------------------------


async def test_openapi_describes_exactly_the_api_routes(api, parts) -> None:
    from ipa.ui import pages

    app = create_app(*parts)
    page_paths = {route.path for route in pages.routes(*parts) if isinstance(route, Route)}
    routes = {(route.path, method.lower()) for route in app.routes
              if isinstance(route, Route) and route.path not in page_paths
              for method in route.methods or () if method != "HEAD"}
    commands = {(f"/api/tasks/{{task_id}}/{name}", "post") for name in COMMANDS}
    routes = routes - {("/api/tasks/{task_id}/{command}", "post")} | commands
    described = {(path, method) for path, ops in OPERATIONS.items() for method in ops}

    assert routes == described
    document = (await api.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.") and set(document["paths"]) == set(OPERATIONS)


async def test_metrics_are_prometheus_text(api) -> None:
    await create(api)

    text = (await api.get("/metrics")).text

    # Read as Prometheus reads it (more in tests/ui/test_metrics.py).
    families = {f.name: f for f in text_string_to_metric_families(text)}
    pods = {s.labels["status"]: s.value for s in families["ipa_pods"].samples}
    assert pods["ready"] + pods["starting"] == 1
    assert families["ipa_sse_clients"].type == "gauge"
    assert {s.labels["stream"]: s.value for s in families["ipa_sse_clients"].samples}["task"] == 0
    assert families["ipa_log_position"].type == "gauge"


# Repositories checked at creation; no credentials at rest -----------------------------------


async def listed_ids(api, expected: dict) -> list[str]:
    """The ids in the task list once ``expected`` (created last) is in it: the list folds
    events in order, so a task stored before it would be listed too."""
    with anyio.fail_after(20):
        while True:
            ids = [row["id"] for row in (await api.get("/api/tasks")).json()["items"]]
            if expected["id"] in ids:
                return ids
            await anyio.sleep(0.05)


async def test_a_repo_that_is_not_a_git_repository_is_a_422_and_nothing_is_stored(
    api, tmp_path: Path
) -> None:
    (tmp_path / "plain").mkdir()

    missing = await api.post("/api/tasks", json={"title": "t", "repo": str(tmp_path / "no")})
    plain = await api.post("/api/tasks", json={"title": "t", "repo": str(tmp_path / "plain")})
    scheme = await api.post("/api/tasks", json={"title": "t", "repo": "file:///etc"})
    accepted = await create(api, repo=str(git_repo(tmp_path / "repo")))

    assert "no such directory" in assert_error(missing, 422, "repository_refused")["message"]
    assert "not a git repository" in assert_error(plain, 422, "repository_refused")["message"]
    assert "file://" in assert_error(scheme, 422, "repository_refused")["message"]
    assert all(r.json()["error"]["message"].startswith("repo ") for r in (missing, plain))
    assert await listed_ids(api, accepted) == [accepted["id"]]


async def test_a_repo_url_with_credentials_is_refused_without_storing_or_echoing_them(
    api, tmp_path: Path
) -> None:
    url = "https://alice:ghp_tok3n-XYZ@github.com/o/r.git"

    response = await api.post("/api/tasks", json={"title": "t", "repo": url})
    accepted = await create(api)
    configured = await api.post(f"/api/tasks/{accepted['id']}/configure_sync",
                                json={"git": {"remote": url}})

    error = assert_error(response, 400, "invalid_input")
    assert "credentials" in error["message"] and "IPA_SECRETS_FILE" in error["message"]
    assert "tok3n" not in response.text and "tok3n" not in configured.text
    assert_error(configured, 400, "invalid_input")
    assert await listed_ids(api, accepted) == [accepted["id"]]
    events = (await api.get(f"/api/tasks/{accepted['id']}/events")).text
    assert "tok3n" not in events and "SyncConfigured" not in events


async def test_repo_roots_confine_the_repositories_of_new_tasks(
    store: EventStore, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    inside = git_repo(root / "inside")
    outside = git_repo(tmp_path / "outside")
    supervisor = Supervisor(PodEnvironment(
        store=store, workspaces=WorkspaceManager(tmp_path / "workspaces"),
        scratch=tmp_path / "scratch", runner_for=runner_for,
        repositories=RepositoryPolicy.configured([str(root)])))
    async with anyio.create_task_group() as tg:
        await tg.start(supervisor.run)
        async with client_for(create_app(supervisor, TaskList(store))) as client:
            refused = await client.post("/api/tasks", json={"title": "t", "repo": str(outside)})
            created = await client.post("/api/tasks", json={"title": "t", "repo": str(inside)})
        tg.cancel_scope.cancel()

    assert "outside the allowed roots" in assert_error(
        refused, 422, "repository_refused")["message"]
    assert created.status_code == 201 and created.json()["repo"] == str(inside)
