"""The memory panel of a pod page: the memories each run was given (a forgotten one as its id),
a search of the task's scopes, why it is empty when agent memory is off; memory texts escaped.
The panel in a browser, on a real server and real memories: ``browser/test_memory_panel.py``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from ipa.domain import Context, CreateTask, decide, fold, scopes_of
from ipa.eventstore import EventStore, StoreError
from ipa.pods import PodEnvironment, WorkspaceManager, runner_for
from ipa.projections import MemoryUnavailable, TaskList, task_state
from ipa.supervisor import Supervisor
from ipa.ui import memory_page
from ipa.ui.app import create_app
from ipa.ui.pages import memory_panel, templates

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
KEPT, GONE, OTHER = (str(uuid.uuid4()) for _ in range(3))


def task(**fields: Any):
    context = Context(actor="user:ann", now=NOW, correlation_id="c1")
    return fold(decide(None, CreateTask(title="T", description="d", **fields), context,
                       uuid.uuid4()))


def prepared(version: int, run_id: str, memories: list[str],
             problem: str | None = None) -> dict[str, Any]:
    return {"type": "ContextPrepared", "version": version, "timestamp": NOW.isoformat(),
            "actor": "ipa", "data": {"job_id": "dev", "run_id": run_id, "attempt": version,
                                     "memories": memories, "memory_problem": problem}}


def row(memory_id: str, text: str, **fields: Any) -> dict[str, Any]:
    return {"id": memory_id, "kind": "semantic", "scope": "repo:/src/app", "text": text,
            "importance": 0.7, "pinned": False, "uses": 1, "created_at": NOW,
            "last_used_at": None, "score": 0.5, **fields}


class FakeMemory:
    """What the panel asks of ``projections.Memory``: ``rows``, ``search`` and ``problem``."""

    def __init__(self, rows: list[dict[str, Any]], problem: str | None = None,
                 failure: Exception | None = None) -> None:
        self.kept = rows
        self.problem = problem
        self.failure = failure
        self.searched: list[tuple[str, list[str]]] = []

    async def rows(self, *, ids: list[str], limit: int) -> list[dict[str, Any]]:
        return [r for r in self.kept if r["id"] in ids][:limit]

    async def search(self, query: str, scopes: list[str], *, limit: int) -> list[dict[str, Any]]:
        self.searched.append((query, scopes))
        if self.failure is not None:
            raise self.failure
        return [{**r, "similarity": 0.81} for r in self.kept][:limit]


def render(shown: dict[str, Any]) -> str:
    return templates.get_template("_memory.html").render({"memory": shown})


def test_each_run_given_memories_is_listed_newest_first_with_its_agent() -> None:
    view = {"jobs": {"dev": {"job_id": "dev", "agent": "developer"}}}
    events = [prepared(3, "r1", [KEPT]), prepared(5, "r2", []),
              prepared(7, "r3", [GONE, KEPT]), prepared(9, "r4", [], "the embedder is gone")]

    runs = memory_page.memory_runs(events, view)

    assert [r["run_id"] for r in runs] == ["r4", "r3", "r1"]  # r2 was given none
    assert runs[1]["ids"] == [GONE, KEPT] and runs[1]["agent"] == "developer"
    assert runs[0]["problem"] == "the embedder is gone"


def test_a_memory_without_a_row_is_shown_forgotten_by_its_id() -> None:
    [run] = memory_page.memories_given([{"run_id": "r", "ids": [GONE, KEPT]}], [row(KEPT, "kept")],
                                 "t")

    assert run["memories"][0] == {"id": GONE, "forgotten": True}
    assert run["memories"][1]["text"] == "kept" and not run["memories"][1]["forgotten"]
    assert run["memories"][1]["created_at"] == NOW.isoformat()
    assert run["memories"][1]["where"] == "repo app"


@pytest.mark.parametrize(("scope", "label"), [
    ("repo:/src/app/", "repo app"), ("repo:git@github.com:org/shop.git", "repo shop.git"),
    ("task:T", "this task"), ("project:T", "this project"),
    ("project:0123456789abcdef", "project 01234567"), ("task:0123456789", "task 01234567"),
])
def test_a_scope_reads_in_a_few_words(scope: str, label: str) -> None:
    assert memory_page.scope_label(scope, "T") == label


async def test_the_panel_shows_runs_and_search_results_with_their_text_escaped() -> None:
    state = task(repo="/src/app")
    memory = FakeMemory([row(KEPT, "use <script>alert(1)</script> --no-cov"),
                         row(OTHER, "the client is in src/net", kind="procedural")])
    events = [prepared(3, str(uuid.uuid4()), [KEPT, GONE])]

    shown = await memory_panel(memory, state, task_state.view(state), events, "tests")  # type: ignore[arg-type]
    html = render(shown)

    assert memory.searched == [("tests", scopes_of(state))]
    assert shown["off"] is None and len(shown["results"]) == 2
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    assert f'<code class="memory-id">{GONE}</code>' in html and "forgotten" in html
    assert "score 0.50 · similarity 0.81" in html
    assert html.count(f'data-memory="{KEPT}" data-memory-action="pin"') == 2  # run and result
    assert 'name="memory_q" value="tests"' in html
    assert f'action="/pods/{state.id}#memory"' in html


@pytest.mark.parametrize(("memory", "says"), [
    (None, "Agent memory is off on this server"),
    (FakeMemory([], problem="wordllama is not installed"),
     "Agent memory is off: wordllama is not installed. Agents run without it"),
])
async def test_without_memory_the_panel_says_why(memory: FakeMemory | None, says: str) -> None:
    state = task()
    shown = await memory_panel(memory, state, task_state.view(state),  # type: ignore[arg-type]
                               [prepared(2, "r", [KEPT])], "anything")

    html = render(shown)

    assert says in html and 'id="memory-search"' not in html and shown["runs"] == []


@pytest.mark.parametrize("failure", [MemoryUnavailable("memory is rebuilding"),
                                     StoreError("the database is gone")])
async def test_a_search_that_fails_says_so_and_keeps_the_runs(failure: Exception) -> None:
    state = task()
    memory = FakeMemory([row(KEPT, "kept")], failure=failure)

    shown = await memory_panel(memory, state, task_state.view(state),  # type: ignore[arg-type]
                               [prepared(2, "r", [KEPT])], "anything")

    assert shown["problem"] == str(failure) and shown["results"] is None
    assert f"The search failed: {failure}" in render(shown)
    assert [m["id"] for m in shown["runs"][0]["memories"]] == [KEPT]


async def test_the_pod_page_and_its_memory_panel_render_without_memory(
    store: EventStore, tmp_path: Path
) -> None:
    task_list = TaskList(store)
    supervisor = Supervisor(PodEnvironment(
        store=store, workspaces=WorkspaceManager(tmp_path / "workspaces"),
        scratch=tmp_path / "scratch", runner_for=runner_for))
    async with anyio.create_task_group() as tg:
        await tg.start(task_list.run)
        await tg.start(supervisor.run)
        app = create_app(supervisor, task_list)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            created = await client.post("/api/tasks", json={"title": "No memory"})
            task_id = created.json()["id"]
            page = await client.get(f"/pods/{task_id}?memory_q=tests",
                                    headers={"accept": "text/html"})
            fragment = await client.get(f"/pods/{task_id}/memory?fresh=1")
        tg.cancel_scope.cancel()

    assert page.status_code == 200 and "Agent memory is off on this server" in page.text
    assert fragment.status_code == 200 and 'id="memory-off"' in fragment.text
