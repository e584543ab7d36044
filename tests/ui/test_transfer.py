"""``ipa export`` / ``ipa import`` and their API (issue #17): a task whose jobs landed commits
on its branch is exported by the real CLI, imported into another store with a key of its own
(and its commits into another repository), replays to the same state there, its run
transcripts are the same, and ``ipa audit verify`` passes; through a running server the import
goes to ``POST /api/import``; a refused bundle is a 4xx or a one-line error, nothing written."""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

import anyio
import httpx
import psycopg
import pytest

from ipa.eventstore import ConnectionParams, EventStore, StoreSettings
from ipa.eventstore.bundle import TaskBundle
from ipa.pods import PodEnvironment, WorkspaceManager, runner_for
from ipa.pods.transfer import export_bundle
from ipa.projections import TaskList
from ipa.supervisor import Supervisor
from ipa.ui.app import create_app
from ipa.ui.guard import GuardPolicy
from ipa.ui.transfer_api import MAX_IMPORT

from ..eventstore.test_transfer import (
    OTHER_KEY,
    other_database,
    packed,
    record_task,
    unpacked,
)
from .test_api import api, assert_error, client_for, create, git_repo, job, parts, python, until
from .test_cli import ipa, url_of
from .test_deliverable import ONE, TWO, git
from .test_serve import served

pytestmark = pytest.mark.anyio

__all__ = ["api", "other_database", "parts"]  # fixtures


def landed(view: dict) -> bool:
    """Both jobs' commits are on the task's branch and their workspaces are gone."""
    last = view["workspaces"][-1]["commits"] if view["workspaces"] else []
    return (job(view, "two")["status"] == "succeeded" and bool(last)
            and all(w["removed"] for w in view["workspaces"])
            and (view["branch"] or {}).get("head_commit") == last[-1])


async def task_with_commits(api, repo: Path) -> dict:
    """A task whose two jobs (each an agent run) landed a commit each on its branch; paused."""
    task = await create(api, title="moved", repo=str(repo))
    url = f"/api/tasks/{task['id']}"
    await api.post(f"{url}/queue_job", json={"job_id": "one", "agent": "dev", "spec": python(ONE)})
    await api.post(f"{url}/queue_job", json={"job_id": "two", "agent": "dev", "spec": python(TWO),
                                             "depends_on": ["one"]})
    await until(api, task, landed)
    assert (await api.post(f"{url}/pause", json={"reason": "moving"})).status_code == 200
    return await until(api, task, lambda view: view["status"] == "paused")


@pytest.fixture
async def other(other_database: ConnectionParams,
                tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The API of another installation: its own store (its own audit key), pods, task list."""
    settings = StoreSettings(snapshot_interval=0, poll_interval=0.2, audit_key=OTHER_KEY)
    async with EventStore.open(other_database, settings) as store:
        task_list = TaskList(store)
        supervisor = Supervisor(PodEnvironment(
            store=store, workspaces=WorkspaceManager(tmp_path / "other-workspaces"),
            scratch=tmp_path / "other-scratch", runner_for=runner_for))
        async with anyio.create_task_group() as tg:
            await tg.start(task_list.run)
            await tg.start(supervisor.run)
            app = create_app(supervisor, task_list, guard=GuardPolicy())
            async with client_for(app) as client:
                client.store = store  # type: ignore[attr-defined]
                yield client
            tg.cancel_scope.cancel()


# The CLI, process by process ------------------------------------------------------------------


async def test_a_task_exported_and_imported_elsewhere_replays_the_same_with_its_commits(
    api, database: ConnectionParams, other_database: ConnectionParams, tmp_path: Path
) -> None:
    view = await task_with_commits(api, git_repo(tmp_path / "repo"))
    task_id, branch = view["id"], view["branch"]
    source = ["--database-url", url_of(database)]
    elsewhere = ["--database-url", url_of(other_database), "--data-dir", str(tmp_path / "data")]
    target_repo = tmp_path / "elsewhere"
    subprocess.run(["git", "init", "-q", str(target_repo)], check=True)  # empty: all travels
    bundle = tmp_path / "task.ipa"

    exported = await ipa("export", task_id, "-o", str(bundle), *source)
    sha = hashlib.sha256(bundle.read_bytes()).hexdigest()
    imported = await ipa("import", str(bundle), "--repo", str(target_repo), "--sha256", sha,
                         *elsewhere, IPA_AUDIT_KEY="")  # a key of its own, made in its data dir
    verified = await ipa("audit", "verify", *elsewhere, IPA_AUDIT_KEY="")

    assert exported.status == 0 and exported.out == "", exported.err
    assert exported.err.startswith(f"exported task {task_id}: 1 task(s), 2 run(s), ")
    assert f"branches {branch['name']}; " in exported.err and exported.err.endswith(
        f"sha256 {sha}\n")
    assert imported.status == 0, imported.err
    assert imported.lines == [
        f"imported task {task_id} ('moved', paused): 1 task(s), 2 run(s), "
        f"{TaskBundle.read(bundle.read_bytes()).events} event(s)",
        f"branches fetched into {target_repo}: {branch['name']}"]
    assert verified.status == 0, verified.out + verified.err
    assert "ok: 3 stream(s) intact" in verified.lines
    assert (tmp_path / "data" / "audit.key").exists()

    there = json.loads((await ipa("replay", task_id, "--json", *elsewhere, IPA_AUDIT_KEY="")).out)
    here = json.loads((await ipa("replay", task_id, "--at", str(there["version"]), "--json",
                                 *source)).out)
    assert there == here
    for run in (await api.get(f"/api/tasks/{task_id}/runs")).json()["items"]:
        original = await ipa("audit", "transcript", run["run_id"], *source)
        copy = await ipa("audit", "transcript", run["run_id"], *elsewhere, IPA_AUDIT_KEY="")
        assert original.status == 0 and "succeeded" in original.out
        assert copy.out == original.out
    assert git(target_repo, "rev-parse", branch["name"]) == branch["head_commit"]
    assert git(target_repo, "rev-list", "--count", branch["name"]) == "3"  # base + one a job


async def test_ipa_import_refuses_a_bad_file_in_one_line_and_writes_nothing(
    store: EventStore, other_database: ConnectionParams, tmp_path: Path
) -> None:
    task_id, _ = await record_task(store)
    good = (await export_bundle(store, WorkspaceManager(tmp_path / "w"), task_id))[1]
    elsewhere = ["--database-url", url_of(other_database), "--data-dir", str(tmp_path / "data")]
    files = {"truncated.ipa": good[: len(good) // 2], "text.ipa": b"hello",
             "altered.ipa": altered(good, task_id)}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)

    runs = {name: await ipa("import", str(tmp_path / name), *elsewhere) for name in files}
    missing = await ipa("import", str(tmp_path / "nowhere.ipa"), *elsewhere)
    wrong_sum = await ipa("import", str(tmp_path / "text.ipa"), "--sha256", "0" * 64, *elsewhere)

    assert runs["truncated.ipa"].error_line().startswith("ipa: the bundle is truncated or corrupt")
    assert runs["text.ipa"].error_line() == ("ipa: not an ipa task bundle (not a gzip-compressed "
                                             "tar)")
    assert runs["altered.ipa"].error_line() == (
        f"ipa: streams/{task_id}.jsonl does not match its size and SHA-256 in the manifest "
        "(altered)")
    assert missing.error_line().startswith(f"ipa: cannot read {tmp_path / 'nowhere.ipa'}: ")
    assert wrong_sum.error_line().startswith("ipa: the file's SHA-256 is ")
    assert all(run.status == 1 for run in [*runs.values(), missing, wrong_sum])
    assert not (tmp_path / "data").exists()  # the store was never opened
    assert not tables(other_database)


def altered(data: bytes, task_id: UUID) -> bytes:
    members = unpacked(data)
    name = f"streams/{task_id}.jsonl"
    members[name] = members[name].replace(b"moving it", b"MOVING IT")
    return packed(members)


def tables(database: ConnectionParams) -> list:
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        return conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                            ).fetchall()


async def test_ipa_import_goes_through_the_server_that_holds_the_data_dir(
    store: EventStore, other_database: ConnectionParams, tmp_path: Path
) -> None:
    task_id, run_ids = await record_task(store)
    bundle = tmp_path / "task.ipa"
    bundle.write_bytes((await export_bundle(store, WorkspaceManager(tmp_path / "w"), task_id))[1])
    store_options = ["--database-url", url_of(other_database), "--data-dir", str(tmp_path / "d")]

    async with served(other_database, data_dir=tmp_path / "d") as server:
        imported = await ipa("import", str(bundle), "--json", *store_options)
        again = await ipa("import", str(bundle), *store_options)
        async with httpx.AsyncClient(base_url=server.url) as client:
            view = (await client.get(f"/api/tasks/{task_id}")).json()
            listed = (await client.get("/api/tasks")).json()["items"]
        verified = await ipa("audit", "verify", *store_options)

    assert imported.status == 0, imported.err
    answer = json.loads(imported.out)
    assert (answer["task_id"], answer["runs"], answer["signed"]) == (str(task_id), 2, True)
    assert answer["started"] == [str(task_id)]  # paused, not finished: its pod runs
    assert again.status == 1
    assert again.error_line() == (f"ipa: task {task_id} exists here already (imported before?) "
                                  "[HTTP 409 task_exists]")
    assert view.get("status") == "paused", view
    assert view["version"] == (await store.load(task_id)).version
    assert [row["id"] for row in listed] == [str(task_id)]
    assert verified.status == 0, verified.out + verified.err


# The API --------------------------------------------------------------------------------------


async def test_the_api_exports_a_bundle_that_another_server_imports(
    api, other, tmp_path: Path
) -> None:
    view = await task_with_commits(api, git_repo(tmp_path / "repo"))
    task_id = view["id"]
    target_repo = git_repo(tmp_path / "clone")  # another repository: only main in common

    response = await api.get(f"/api/tasks/{task_id}/export")
    imported = await other.post("/api/import", content=response.content,
                                params={"repo": str(target_repo)},
                                headers={"content-type": "application/gzip"})
    shown = (await other.get(f"/api/tasks/{task_id}")).json()
    listed = (await other.get("/api/tasks")).json()["items"]
    again = await other.post("/api/import", content=response.content,
                             headers={"content-type": "application/gzip"},
                             params={"git": "skip"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/gzip"
    assert response.headers["content-disposition"] == (
        f'attachment; filename="task-{UUID(task_id).hex[:8]}.ipa"')
    assert response.headers["x-ipa-bundle-sha256"] == hashlib.sha256(
        response.content).hexdigest()
    assert imported.status_code == 201, imported.text
    answer = imported.json()
    assert (answer["task_id"], answer["runs"], answer["signed"]) == (task_id, 2, None)
    assert answer["branches"] == {view["branch"]["name"]: view["branch"]["head_commit"]}
    assert answer["started"] == [task_id]
    at = {"version": answer["tasks"][0]["version"]}  # views as of the version exported
    assert (await other.get(f"/api/tasks/{task_id}", params=at)).json() == (
        await api.get(f"/api/tasks/{task_id}", params=at)).json()
    assert shown["status"] == "paused"
    assert [row["id"] for row in listed] == [task_id]
    assert git(target_repo, "rev-parse", view["branch"]["name"]) == view["branch"]["head_commit"]
    assert_error(again, 409, "task_exists")


async def test_the_api_refuses_bad_bundles_naming_the_problem_and_writes_nothing(
    api, other, store: EventStore, tmp_path: Path
) -> None:
    view = await task_with_commits(api, git_repo(tmp_path / "repo"))
    good = (await api.get(f"/api/tasks/{view['id']}/export")).content
    members = unpacked(good)
    manifest = json.loads(members["manifest.json"])
    manifest["format_version"] = 2
    newer = packed({**members, "manifest.json": json.dumps(manifest).encode()})
    bundle = {"content-type": "application/gzip"}
    taken = git_repo(tmp_path / "taken")
    git(taken, "branch", view["branch"]["name"])  # the name is taken, at another commit
    head = await other.store.head_position()

    async def post(content: bytes, headers: dict | None = None, **params: str):
        return await other.post("/api/import", content=content, params=params,
                                headers=headers or bundle)

    assert_error(await post(b"hello"), 400, "not_a_bundle")
    assert_error(await post(good[: len(good) // 2]), 400, "bundle_truncated")
    assert_error(await post(altered_snapshot(good, view["id"])), 400, "bundle_altered")
    assert_error(await post(newer), 422, "bundle_too_new")
    assert_error(await post(b""), 400, "bad_request")
    assert_error(await post(b"x" * (MAX_IMPORT + 1)), 413, "payload_too_large")
    wrong_type = assert_error(await post(good, {"content-type": "text/plain"}), 415,
                              "unsupported_media_type")
    assert wrong_type["message"] == ("POST /api/import takes a task bundle (Content-Type: "
                                     "application/gzip), not 'text/plain'")
    assert_error(await post(b'{"format": "ipa-task-bundle"}', {"content-type":
                                                                 "application/json"}),
                 400, "not_a_bundle")
    needed = assert_error(await post(good), 422, "repository_needed")
    assert view["branch"]["name"] in needed["message"] and "?repo=" in needed["message"]
    assert_error(await post(good, repo="relative/path"), 422, "repository_refused")
    assert_error(await post(good, repo=str(taken)), 409, "branch_exists")
    assert_error(await post(good, git="maybe"), 400, "bad_request")
    assert await other.store.head_position() == head
    assert git(taken, "branch", "--list", "ipa/*") == view["branch"]["name"]

    git(tmp_path / "repo", "branch", "-D", view["branch"]["name"])  # its commits are gone
    gone = assert_error(await api.get(f"/api/tasks/{view['id']}/export"), 409, "not_exportable")
    assert gone["message"] == (f"repository '{tmp_path / 'repo'}' has no branch "
                               f"{view['branch']['name']} (the task's commits); export with "
                               "--no-git (?git=skip on the API) to leave the commits out")
    without = await api.get(f"/api/tasks/{view['id']}/export", params={"git": "skip"})
    assert without.status_code == 200 and TaskBundle.read(without.content).git is None
    assert_error(await api.get(f"/api/tasks/{UUID(int=1)}/export"), 404, "task_not_found")
    assert_error(await api.get("/api/tasks/nope/export"), 400, "bad_request")
    assert_error(await api.get(f"/api/tasks/{view['id']}/export", params={"git": "x"}), 400,
                 "bad_request")


def altered_snapshot(data: bytes, task_id: str) -> bytes:
    members = unpacked(data)
    name = f"snapshots/{task_id}.json"
    snapshot = json.loads(members[name])
    snapshot["state"]["title"] = "forged"
    members[name] = json.dumps(snapshot).encode()
    return packed(members)
