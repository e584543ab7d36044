"""A project's children through the API (issue #14): ``children`` on a project's view,
``parent_id``/``item_id``/``kind`` on a child's, ``GET /api/tasks?parent=ID``, and a failed item
steered (retry, skip, cancel) or ``max_children`` set by a person.

No agent runs: :func:`seed_project` records a project whose backlog was approved and whose
children stand where each test needs them, deciding the same commands ipa's pods give (the
API refuses them: they are system commands) and appending their events to the real store.
The project is paused, so its pod (started where a test gives it a command) spawns nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import anyio
import pytest

from ipa.domain import (
    Approve,
    BacklogItem,
    Command,
    CompleteJob,
    CompletePhase,
    Context,
    CreateChildTask,
    CreateTask,
    Fail,
    HoldJob,
    Pause,
    ProposeBacklog,
    QueueJob,
    RecordChildFinished,
    RecordContext,
    RecordUsage,
    RequestApproval,
    SetApprovalPolicy,
    SpawnChild,
    StartJob,
    StartTask,
    TaskState,
    decide,
    fold,
)
from ipa.eventstore import EventStore
from ipa.pods import PodEnvironment, WorkspaceManager, runner_for
from ipa.projections import TaskList
from ipa.supervisor import Supervisor
from ipa.ui.app import create_app
from ipa.ui.guard import GuardPolicy

from .test_api import assert_error, client_for

pytestmark = pytest.mark.anyio


def item(id: str, kind: str, phase: str, priority: int, *depends_on: str) -> BacklogItem:
    return BacklogItem(id, f"Build {id}", f"Make the {id} work.", kind, phase, priority,
                       depends_on, (f"{id} has tests", f"{id} is documented"))


ITEMS = (
    item("ci", "devops_engineer", "infrastructure", 5),
    item("schema", "database_engineer", "development", 9),
    item("api", "backend_developer", "development", 8, "schema", "ci"),
    item("auth", "backend_developer", "development", 7, "schema"),
    item("docs", "technical_writer", "development", 1),
    item("ui", "frontend_developer", "development", 6, "api", "auth"),
    item("e2e", "qa_engineer", "qa", 5, "ui"),
)
"""Seven items over three phases; ``ui`` and ``e2e`` never get a child here."""


@dataclass
class Swarm:
    """The seeded project and its children, by item id."""

    project: UUID
    children: dict[str, UUID] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"/api/tasks/{self.project}"


class Recorder:
    """Decides commands on a stream and keeps its events, as a pod would append them."""

    def __init__(self, task_id: UUID) -> None:
        self.task_id = task_id
        self.state: TaskState | None = None
        self.events: list = []

    def __call__(self, *commands: Command) -> Recorder:
        for command in commands:
            ctx = Context(actor="ipa:test", now=datetime.now(UTC), correlation_id="seed")
            new = decide(self.state, command, ctx, self.task_id)
            self.events += new
            self.state = fold(new, self.state)
        return self


def child_commands(outcome: str) -> Sequence[Command]:
    """What brings a child task to ``outcome``: ``completed``, ``running`` (its job held for a
    person, so its pod starts nothing), ``waiting`` (at its review gate, a person deciding)
    or ``failed``."""
    if outcome == "completed":
        return (StartTask(), CompletePhase(), RequestApproval("built"), Approve("fine"))
    if outcome == "running":
        return (StartTask(), QueueJob("build", "developer"), StartJob("build", "run-build"),
                HoldJob("build", "run-build", "a person looks first"))
    if outcome == "waiting":
        return (StartTask(), SetApprovalPolicy("review", "person"), CompletePhase(),
                RequestApproval("built"))
    assert outcome == "failed"
    return (StartTask(), Fail("its review gave up"))


OUTCOMES = {"ci": "completed", "schema": "completed", "api": "running", "auth": "waiting",
            "docs": "failed"}


async def seed_project(store: EventStore, title: str = "Shop") -> Swarm:
    """A paused project in development: ``ci`` and ``schema`` finished, ``api`` running,
    ``auth`` waiting at its gate, ``docs`` failed (its item waits for a person), ``ui`` and
    ``e2e`` approved and waiting for their dependencies."""
    swarm = Swarm(uuid.uuid4())
    swarm.children = {item_id: uuid.uuid4() for item_id in OUTCOMES}
    project = Recorder(swarm.project)(
        CreateTask(title, "PRD: a shop", workflow="project"), StartTask(), CompletePhase(),
        QueueJob("analyst-1", "product_analyst"), StartJob("analyst-1", "run-1"),
        ProposeBacklog(ITEMS, "analyst-1", "run-1"), CompleteJob("analyst-1", "run-1"),
        RequestApproval("backlog"), Approve("go"), RequestApproval("design"), Approve())
    child = swarm.children
    project(SpawnChild("ci", str(child["ci"])), RecordChildFinished(str(child["ci"]), "completed"),
            CompletePhase())
    project(SpawnChild("schema", str(child["schema"])),
            RecordChildFinished(str(child["schema"]), "completed"))
    for item_id in ("api", "auth", "docs"):
        project(SpawnChild(item_id, str(child[item_id])))
    project(RecordChildFinished(str(child["docs"]), "failed", "its review gave up"),
            Pause("seeded by the test"))
    for item_id, outcome in OUTCOMES.items():
        spec = next(i for i in ITEMS if i.id == item_id)
        created = Recorder(child[item_id])(CreateChildTask(
            spec.title, spec.description, parent_id=str(swarm.project), item_id=item_id,
            kind=spec.kind))
        created(*child_commands(outcome))
        await store.append(child[item_id], created.events, 0)
    await store.append(swarm.project, project.events, 0)
    return swarm


@pytest.fixture
async def api(store: EventStore, tmp_path: Path):
    task_list = TaskList(store)
    supervisor = Supervisor(PodEnvironment(
        store=store, workspaces=WorkspaceManager(tmp_path / "workspaces"),
        scratch=tmp_path / "scratch", runner_for=runner_for))
    async with anyio.create_task_group() as tg:
        await tg.start(task_list.run)
        await tg.start(supervisor.run)
        app = create_app(supervisor, task_list,
                         guard=GuardPolicy(trusted_proxies=("127.0.0.1",)))
        async with client_for(app) as client:
            client.supervisor = supervisor  # type: ignore[attr-defined]
            client.task_list = task_list  # type: ignore[attr-defined]
            yield client
        tg.cancel_scope.cancel()


@pytest.fixture
async def swarm(api, store: EventStore) -> Swarm:
    seeded = await seed_project(store)
    with anyio.fail_after(10):
        await api.task_list.wait_for(await store.head_position())
    return seeded


async def test_a_project_lists_each_child_with_its_item_and_its_own_status(api, swarm) -> None:
    view = (await api.get(swarm.url)).json()

    assert (view["workflow"], view["phase"], view["status"]) == ("project", "development",
                                                                 "paused")
    assert view["parent_id"] is None and view["max_children"] == 4
    assert [i["id"] for i in view["backlog"]["items"]] == [i.id for i in ITEMS]
    children = {c["item_id"]: c for c in view["children"]}
    assert list(children) == ["ci", "schema", "api", "auth", "docs"]  # backlog order
    assert children["api"] == {
        "id": str(swarm.children["api"]), "item_id": "api", "title": "Build api",
        "kind": "backend_developer", "phase": "development", "item_status": "spawned",
        "child_status": "running", "child_phase": "development", "cost_usd": 0.0, "tokens": 0,
        "running": []}
    assert {k: (c["item_status"], c["child_status"], c["child_phase"])
            for k, c in children.items()} == {
        "ci": ("finished", "completed", "completed"),
        "schema": ("finished", "completed", "completed"),
        "api": ("spawned", "running", "development"),
        "auth": ("spawned", "waiting", "review"),
        "docs": ("failed", "failed", "development"),
    }


async def test_a_child_names_its_project_item_and_kind(api, swarm) -> None:
    view = (await api.get(f"/api/tasks/{swarm.children['auth']}")).json()

    assert (view["parent_id"], view["item_id"], view["kind"], view["workflow"]) == (
        str(swarm.project), "auth", "backend_developer", "item")
    assert view["backlog"] is None and "children" not in view


async def test_a_task_that_is_no_project_has_no_children(api) -> None:
    created = (await api.post("/api/tasks", json={"title": "plain"})).json()
    view = (await api.get(f"/api/tasks/{created['id']}")).json()

    assert (view["parent_id"], view["item_id"], view["kind"]) == (None, None, None)
    assert "children" not in view


async def test_the_task_list_lists_a_projects_children_by_parent(api, swarm) -> None:
    listed = (await api.get("/api/tasks", params={"parent": str(swarm.project)})).json()
    needing = (await api.get("/api/tasks", params={"parent": str(swarm.project),
                                                   "attention": "1"})).json()
    paged = (await api.get("/api/tasks", params={"parent": str(swarm.project),
                                                 "limit": 2})).json()
    other = (await api.get("/api/tasks", params={"parent": str(uuid.uuid4())})).json()

    assert sorted(row["id"] for row in listed["items"]) == sorted(
        str(c) for c in swarm.children.values())
    assert {row["item_id"]: (row["parent_id"], row["kind"], row["status"])
            for row in listed["items"]}["docs"] == (str(swarm.project), "technical_writer",
                                                    "failed")
    assert listed["next_cursor"] is None
    assert needing["items"] and all(row["attention"] for row in needing["items"])
    assert {row["id"] for row in needing["items"]} < {row["id"] for row in listed["items"]}
    assert len(paged["items"]) == 2 and paged["next_cursor"] == paged["items"][1]["id"]
    assert other == {"items": [], "next_cursor": None}


@pytest.mark.parametrize("parent", ["nope", "", "{" + "0" * 32 + "}", "1" * 200])
async def test_a_parent_that_is_no_task_id_is_a_clear_400(api, parent: str) -> None:
    error = assert_error(await api.get("/api/tasks", params={"parent": parent}), 400,
                         "bad_request")
    assert "parent" in error["message"] and "not a task id" in error["message"]


async def test_a_failed_item_is_retried_and_waits_for_a_new_child(api, swarm) -> None:
    await api.supervisor.start(swarm.project)

    retried = await api.post(f"{swarm.url}/retry_item", json={"item_id": "docs"},
                             headers={"x-ipa-actor": "user:bob"})

    assert retried.status_code == 200, retried.text
    view = retried.json()
    docs = next(i for i in view["backlog"]["items"] if i["id"] == "docs")
    assert (docs["status"], docs["child_id"]) == ("approved", None)
    assert "docs" not in [c["item_id"] for c in view["children"]]
    events = (await api.get(f"{swarm.url}/events", params={"limit": 500})).json()["items"]
    assert ("ItemRetried", "user:bob") == (events[-1]["type"], events[-1]["actor"])
    again = await api.post(f"{swarm.url}/retry_item", json={"item_id": "docs"})
    assert "only an item whose child failed" in assert_error(again, 409,
                                                             "command_not_allowed")["message"]


async def test_a_failed_item_is_skipped_or_cancelled_with_what_waits_on_it(api, swarm) -> None:
    await api.supervisor.start(swarm.project)

    skipped = await api.post(f"{swarm.url}/skip_item", json={"item_id": "docs",
                                                              "reason": "by hand"})

    assert skipped.status_code == 200, skipped.text
    statuses = {i["id"]: i["status"] for i in skipped.json()["backlog"]["items"]}
    assert statuses["docs"] == "skipped"
    assert next(c for c in skipped.json()["children"]
                if c["item_id"] == "docs")["item_status"] == "skipped"
    refused = await api.post(f"{swarm.url}/cancel_item", json={"item_id": "docs"})
    assert "'docs' is skipped" in assert_error(refused, 409, "command_not_allowed")["message"]


async def test_max_children_is_set_and_a_bad_value_refused(api, swarm) -> None:
    await api.supervisor.start(swarm.project)

    six = await api.post(f"{swarm.url}/set_max_children", json={"max_children": 6})
    zero = await api.post(f"{swarm.url}/set_max_children", json={"max_children": 0})
    text = await api.post(f"{swarm.url}/set_max_children", json={"max_children": "4"})

    assert six.status_code == 200 and six.json()["max_children"] == 6
    assert "max_children must be a whole number" in assert_error(zero, 400,
                                                                 "invalid_input")["message"]
    assert_error(text, 400, "bad_request")
    assert (await api.get(swarm.url)).json()["max_children"] == 6


async def test_spawning_a_child_through_the_api_is_refused(api, swarm) -> None:
    await api.supervisor.start(swarm.project)
    for name, body in (("spawn_child", {"item_id": "ui", "child_id": str(uuid.uuid4())}),
                       ("record_child_finished", {"child_id": str(swarm.children["api"]),
                                                  "outcome": "completed"}),
                       ("create_child_task", {})):
        assert_error(await api.post(f"{swarm.url}/{name}", json=body), 403, "system_command")


async def record(store: EventStore, task_id: UUID, *commands: Command) -> None:
    """Decide ``commands`` on a seeded task as its pod would, and append their events."""
    recorder = Recorder(task_id)
    recorder.state = await store.load(task_id)
    version = recorder.state.version
    recorder(*commands)
    await store.append(task_id, recorder.events, version)


async def test_a_project_shows_each_childs_spend_its_agents_at_work_and_the_swarms_totals(
    api, swarm, store: EventStore
) -> None:
    child = swarm.children["api"]
    await record(store, swarm.project, RecordUsage("analyst-1", "run-1", "product_analyst",
                                                   "m", 500, 100, cost_usd=0.05))
    await record(store, child,
                 RecordUsage("build", "run-build", "developer", "m", 1000, 200, cost_usd=0.1),
                 QueueJob("endpoint", "backend_developer"), StartJob("endpoint", "run-2"),
                 QueueJob("scan", "security_reviewer"), StartJob("scan", "run-s"),
                 RecordUsage("scan", "run-s", "security_reviewer", "m", 40, 10, cost_usd=0.2),
                 CompleteJob("scan", "run-s"),
                 RecordContext("endpoint", "run-2", sections=("spec",)))
    with anyio.fail_after(10):
        await api.task_list.wait_for(await store.head_position())

    view = (await api.get(swarm.url)).json()

    children = {c["item_id"]: c for c in view["children"]}
    assert (children["api"]["cost_usd"], children["api"]["tokens"]) == (0.3, 1250)
    assert (children["auth"]["cost_usd"], children["auth"]["tokens"]) == (0.0, 0)
    assert (children["ci"]["cost_usd"], children["ci"]["tokens"]) == (0.0, 0)
    [run] = children["api"]["running"]
    assert {k: run[k] for k in ("job_id", "agent", "run_id", "step", "tokens")} == {
        "job_id": "endpoint", "agent": "backend_developer", "run_id": "run-2", "step": "act",
        "tokens": 0}
    assert run["started_at"]
    assert view["swarm_usage"] == {
        "project": {"tokens": 600, "cost_usd": 0.05},
        "children": {"tokens": 1250, "cost_usd": 0.3, "count": 5},
        "total": {"tokens": 1850, "cost_usd": 0.35},
        "by_swarm": {"core": {"tokens": 1800, "cost_usd": 0.15},
                     "review": {"tokens": 50, "cost_usd": 0.2}},
    }
    # The run moves on: its usage recorded, it reflects.
    await record(store, child, RecordUsage("endpoint", "run-2", "backend_developer", "m",
                                           300, 100, cost_usd=0.03))
    with anyio.fail_after(10):
        await api.task_list.wait_for(await store.head_position())
    moved = (await api.get(swarm.url)).json()
    [run] = next(c for c in moved["children"] if c["item_id"] == "api")["running"]
    assert (run["step"], run["tokens"]) == ("reflect", 400)
    assert moved["swarm_usage"]["by_swarm"]["engineering"] == {"tokens": 400, "cost_usd": 0.03}
    assert moved["swarm_usage"]["total"] == {"tokens": 2250, "cost_usd": 0.38}
    child_view = (await api.get(f"/api/tasks/{child}")).json()
    assert "swarm_usage" not in child_view and "children" not in child_view
