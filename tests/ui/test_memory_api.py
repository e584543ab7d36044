"""The memory API (issue 16): search, list, show, forget and pin agents' memories over HTTP,
on the real embedded PostgreSQL with pgvector and the bundled embedder. Memories come from real
task events (a run's reflection with ``LEARNED:`` lines) folded by a running :class:`Memory`."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from uuid import UUID

import anyio
import httpx
import pytest

from ipa.domain import (
    Cancel,
    CreateTask,
    MemoryForgotten,
    MemoryPinned,
    QueueJob,
    RecordReflection,
    StartJob,
    StartTask,
    decide,
    fold,
)
from ipa.eventstore import EventStore
from ipa.pods import PodEnvironment, WorkspaceManager, runner_for
from ipa.projections import Memory, MemorySettings, TaskList
from ipa.supervisor import Supervisor
from ipa.ui.app import create_app
from ipa.ui.guard import GuardPolicy

from ..eventstore.helpers import ctx

pytestmark = pytest.mark.anyio

APP = "repo:/src/app"
OTHER = "repo:/src/other"
UNKNOWN = "00000000-0000-4000-8000-000000000001"


async def learned(store: EventStore, *texts: str, repo: str = "/src/app") -> UUID:
    """A task on ``repo`` whose run reflected with ``texts`` as learnings (each a semantic
    memory of the repository; the run's episode is the task's), then cancelled."""
    task_id, state = uuid.uuid4(), None
    commands = [CreateTask("Add a limiter", "to the login endpoint", repo=repo), StartTask(),
                QueueJob("a", "developer"), StartJob("a", "run-1"),
                RecordReflection("a", "run-1", "did it", list(texts)), Cancel()]
    for step, command in enumerate(commands):
        events = decide(state, command, ctx(step), task_id)
        await store.append(task_id, events, state.version if state else 0)
        state = fold(events, state)
    return task_id


async def caught_up(memory: Memory, store: EventStore) -> None:
    with anyio.fail_after(20):
        await memory.wait_for(await store.head_position())


@pytest.fixture
async def memory(store: EventStore) -> AsyncIterator[Memory]:
    memory = Memory(store, store.memory_table(), MemorySettings())
    await memory.table.open()
    try:
        async with anyio.create_task_group() as tg:
            await memory.open()
            await tg.start(memory.run)
            yield memory
            tg.cancel_scope.cancel()
    finally:
        await memory.table.close()


def app_of(store: EventStore, tmp_path: Path, memory: Memory | None):
    supervisor = Supervisor(PodEnvironment(
        store=store, workspaces=WorkspaceManager(tmp_path / "workspaces"),
        scratch=tmp_path / "scratch", runner_for=runner_for))
    # The test client (127.0.0.1) stands for a trusted proxy: it names actors (X-IPA-Actor).
    return create_app(supervisor, TaskList(store), memory=memory,
                      guard=GuardPolicy(trusted_proxies=("127.0.0.1",)))


def client_of(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")


@pytest.fixture
async def api(store: EventStore, memory: Memory, tmp_path: Path):
    await learned(store, "the tests need the --no-cov flag", "the API client lives in src/net/",
                  "database migrations live in db/migrations")
    await learned(store, "the docs build with mkdocs", repo="/src/other")
    await caught_up(memory, store)
    async with client_of(app_of(store, tmp_path, memory)) as client:
        yield client


async def search(api, q: str, *scopes: str, **params) -> list[dict]:
    response = await api.get("/api/memories", params={"q": q, "scope": list(scopes), **params})
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    return response.json()["items"]


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error["message"]


# Finding ---------------------------------------------------------------------------------------


async def test_a_search_ranks_the_relevant_memory_first(api) -> None:
    [best, *rest] = await search(api, "how do I run the tests", APP)

    assert best["text"] == "the tests need the --no-cov flag"
    assert best["kind"] == "semantic" and best["scope"] == APP
    assert best["score"] >= max(row["score"] for row in rest)
    assert 0 < best["similarity"] <= 1 and best["pinned"] is False
    assert best["recorded_importance"] == 0.7 and 0 < best["importance"] <= 0.7
    assert best["uses"] == 0 and best["seen"] == 1 and best["merged_ids"] == []
    assert best["run_id"] == "run-1" and best["job_id"] == "a" and best["task_id"]
    assert best["created_at"].startswith("20") and best["last_used_at"] is None


async def test_a_search_keeps_to_the_scopes_named(api) -> None:
    other = await search(api, "how do I run the tests", OTHER)
    both = await search(api, "how do I build the docs", APP, OTHER)
    semantic = await search(api, "tests", APP, kind="semantic", limit="2")
    anywhere = await search(api, "how do I build the docs")  # no scope: every scope

    assert [row["text"] for row in other] == ["the docs build with mkdocs"]
    assert both[0]["text"] == "the docs build with mkdocs"
    assert {row["scope"] for row in both} == {APP, OTHER}
    assert len(semantic) == 2 and {row["kind"] for row in semantic} == {"semantic"}
    assert anywhere[0]["text"] == "the docs build with mkdocs"
    assert {row["scope"] for row in anywhere} >= {APP, OTHER}


async def test_the_list_pages_by_id_and_filters_by_scope_kind_and_ids(api) -> None:
    first = (await api.get("/api/memories", params={"scope": APP, "kind": "semantic",
                                                     "limit": "2"})).json()
    second = (await api.get("/api/memories", params={"scope": APP, "kind": "semantic",
                                                      "limit": "2",
                                                      "cursor": first["next_cursor"]})).json()
    everything = (await api.get("/api/memories")).json()["items"]
    chosen = [row["id"] for row in everything[:2]]
    by_ids = (await api.get("/api/memories", params={"ids": ",".join(chosen)})).json()
    none = (await api.get("/api/memories", params={"ids": ""})).json()

    ids = [row["id"] for row in first["items"] + second["items"]]
    assert len(first["items"]) == 2 and first["next_cursor"] == ids[1]
    assert len(second["items"]) == 1 and second["next_cursor"] is None
    assert ids == sorted(ids)
    assert {row["scope"] for row in first["items"] + second["items"]} == {APP}
    # 4 learnings and 2 episodes (each run's, in its task's scope)
    assert len(everything) == 6 and {row["kind"] for row in everything} == {"semantic",
                                                                            "episodic"}
    assert "similarity" not in everything[0]
    assert [row["id"] for row in by_ids["items"]] == chosen
    assert none["items"] == []


async def test_one_memory_is_shown_by_its_id(api) -> None:
    [best, *_] = await search(api, "how do I run the tests", APP)

    shown = (await api.get(f"/api/memories/{best['id']}")).json()

    assert shown["id"] == best["id"] and shown["text"] == best["text"]
    assert "similarity" not in shown


# Bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "named"), [
    ({"q": "", "scope": APP}, "q is blank"),
    ({"q": "  \n", "scope": APP}, "q is blank"),
    ({"q": "x" * 2001, "scope": APP}, "at most 2000"),
    ({"q": "tests", "scope": "galaxy:far"}, "galaxy:far"),
    ({"q": "tests", "scope": "task:nope"}, "'nope' is not a task id"),
    ({"q": "tests", "scope": " repo:/src/app"}, "spaces around it"),
    ({"q": "tests", "scope": "repo:/src\x00/app"}, "control characters"),
    ({"q": "tests", "scope": APP, "cursor": UNKNOWN}, "no ids and no cursor"),
    ({"kind": "feelings"}, "episodic, semantic, procedural"),
    ({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"limit": "1.5"}, "limit"),
    ({"limit": "²"}, "limit"),
    ({"ids": "nope"}, "'nope' is not a memory id"),
    ({"ids": ",".join([UNKNOWN] * 101)}, "at most 100"),
])
async def test_bad_input_is_a_400_naming_it(api, query: dict, named: str) -> None:
    response = await api.get("/api/memories", params=query)

    assert named in assert_error(response, 400, response.json()["error"]["code"])
    assert response.json()["error"]["code"] in ("bad_request", "invalid_input")


async def test_a_cursor_not_handed_out_is_bad_cursor(api) -> None:
    assert_error(await api.get("/api/memories?cursor=12"), 400, "bad_cursor")


async def test_a_nul_or_a_lone_surrogate_in_the_query_is_searched_not_a_crash(api) -> None:
    nul = await search(api, "run the tests\x00", APP)
    # A lone surrogate cannot travel as UTF-8: its bytes arrive, and are read as U+FFFD.
    surrogate = await api.get(f"/api/memories?q=%ED%A0%80tests&scope={APP}")

    assert nul[0]["text"] == "the tests need the --no-cov flag"
    assert surrogate.status_code == 200 and surrogate.json()["items"]


@pytest.mark.parametrize("memory_id", [UNKNOWN, "nope", "{" + UNKNOWN + "}"])
async def test_an_unknown_or_malformed_id_is_memory_not_found(api, memory_id: str) -> None:
    path = f"/api/memories/{memory_id}"
    assert_error(await api.get(path), 404, "memory_not_found")
    assert_error(await api.delete(path), 404, "memory_not_found")
    assert_error(await api.post(f"{path}/pin", json={"pinned": True}), 404, "memory_not_found")


# Steering ------------------------------------------------------------------------------------


async def test_forget_is_an_event_and_the_memory_leaves_search(api, store) -> None:
    [best, *_] = await search(api, "how do I run the tests", APP)

    response = await api.request("DELETE", f"/api/memories/{best['id']}",
                                 json={"reason": "outdated"}, headers={"x-ipa-actor": "user:bob"})

    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer == {"id": best["id"], "forgotten": True, "position": answer["position"]}
    assert best["id"] not in [row["id"] for row in await search(api, "run the tests", APP)]
    assert_error(await api.get(f"/api/memories/{best['id']}"), 404, "memory_not_found")
    [event] = [r for r in await store.read_log(answer["position"] - 1, 1)]
    assert isinstance(event.event, MemoryForgotten)
    assert (event.event.memory_id, event.event.reason, event.actor) == (
        best["id"], "outdated", "user:bob")


async def test_forget_takes_its_reason_from_the_query_too(api, store) -> None:
    [best, *_] = await search(api, "migrations", APP)

    answer = (await api.delete(f"/api/memories/{best['id']}?reason=wrong")).json()

    [event] = await store.read_log(answer["position"] - 1, 1)
    assert event.event.reason == "wrong" and event.actor == "user:local"


async def test_pin_and_unpin(api, store) -> None:
    [best, *_] = await search(api, "how do I run the tests", APP)
    url = f"/api/memories/{best['id']}"

    pinned = (await api.post(f"{url}/pin")).json()
    shown = (await api.get(url)).json()
    unpinned = (await api.post(f"{url}/pin", json={"pinned": False})).json()
    again = (await api.get(url)).json()

    assert pinned["pinned"] is True and pinned["id"] == best["id"]
    assert shown["pinned"] is True and shown["importance"] == 1.0
    assert shown["recorded_importance"] == best["recorded_importance"]
    assert unpinned["pinned"] is False and again["pinned"] is False
    [event] = await store.read_log(unpinned["position"] - 1, 1)
    assert isinstance(event.event, MemoryPinned) and event.event.pinned is False


@pytest.mark.parametrize(("body", "named"), [
    ({"pinned": "yes"}, "true or false"), ({"pinned": 1}, "true or false"),
    ({"pinned": True, "why": "x"}, "'why'"), ([True], "JSON object"),
])
async def test_a_bad_pin_body_is_a_400(api, body, named: str) -> None:
    [best, *_] = await search(api, "tests", APP)

    response = await api.post(f"/api/memories/{best['id']}/pin", json=body)

    assert named in assert_error(response, 400, "bad_request")


@pytest.mark.parametrize(("body", "named"), [
    ({"reason": 3}, "must be a string"), ({"why": "x"}, "'why'"),
    ({"reason": "x" * 2001}, "at most 2000"),
])
async def test_a_bad_forget_body_is_a_400(api, body, named: str) -> None:
    [best, *_] = await search(api, "tests", APP)

    response = await api.request("DELETE", f"/api/memories/{best['id']}", json=body)

    assert named in assert_error(response, 400, "bad_request")
    assert (await api.get(f"/api/memories/{best['id']}")).status_code == 200


# Memory off ----------------------------------------------------------------------------------


ROUTES = [("GET", "/api/memories?q=tests&scope=repo:/x"), ("GET", "/api/memories"),
          ("GET", f"/api/memories/{UNKNOWN}"), ("DELETE", f"/api/memories/{UNKNOWN}"),
          ("POST", f"/api/memories/{UNKNOWN}/pin")]


async def test_without_memory_every_memory_route_is_503(store, tmp_path) -> None:
    async with client_of(app_of(store, tmp_path, None)) as api:
        for method, url in ROUTES:
            message = assert_error(await api.request(method, url), 503, "memory_unavailable")
            assert "does not run in this server" in message


async def test_memory_that_is_off_says_why_with_a_503(store, tmp_path) -> None:
    memory = Memory(store, store.memory_table(), MemorySettings(embedder="nonsense"))
    await memory.table.open()
    try:
        await memory.open()
        async with client_of(app_of(store, tmp_path, memory)) as api:
            for method, url in ROUTES:
                message = assert_error(await api.request(method, url), 503,
                                       "memory_unavailable")
                assert "unknown IPA_EMBEDDER 'nonsense'" in message
    finally:
        await memory.table.close()
