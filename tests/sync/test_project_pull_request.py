"""A project's pull request (issue #14 item 5): opened from its integration branch at the
``deployment`` gate with its backlog in the body, kept up to date as later phases merge more
children, answering the gate with its reviews; a child task never opens one; with a plain git
remote the integration branch is pushed instead."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import anyio
import pytest

from ipa.domain import (
    Approve,
    Command,
    CompleteJob,
    CompletePhase,
    ConfigureSync,
    Context,
    CreateChildTask,
    CreateTask,
    ProposeBacklog,
    QueueJob,
    RecordBranch,
    RecordChildFinished,
    RequestApproval,
    SpawnChild,
    StartJob,
    StartTask,
    Status,
    TaskState,
    decide,
    parse_backlog,
)
from ipa.eventstore import EventStore
from ipa.pods import SyncSettings, WorkspaceManager
from ipa.pods.state import PodState
from ipa.pods.sync import SyncEngine, desired
from ipa.pods.sync.plan import pull_request_body

from ..domain.helpers import run
from ..domain.test_backlog import KINDS, PHASES, answer, item
from .conftest import git
from .services import Services

pytestmark = pytest.mark.anyio

ITEMS = [
    item("schema", "database_engineer", "development", 9),
    item("api", "backend_developer", "development", 8, "schema"),
    item("e2e", "qa_engineer", "qa", 5, "api"),
    item("tour", "technical_writer", "growth", 1),
]
"""Two items merged in development, one in qa, one left for after the deployment gate."""

Start = Callable[..., Awaitable[PodState]]


# -- a project driven through domain commands, its sync engine running -------------------------


@pytest.fixture
async def start(store: EventStore, sync_settings: SyncSettings,
                tmp_path: Path) -> AsyncIterator[Start]:
    """``start(command)``: a task created by ``command``, with a sync engine of its own (no
    scheduler, no swarm: the test records what they would)."""
    workspaces = WorkspaceManager(tmp_path / "workspaces")
    async with anyio.create_task_group() as tg:
        async def started(command: Command) -> PodState:
            task_id = uuid4()
            ctx = Context(actor="user:test", now=datetime.now(UTC), correlation_id="test")
            await store.append(task_id, decide(None, command, ctx, task_id), 0)
            state = PodState(task_id, store)
            await state.load()
            await tg.start(SyncEngine(state, sync_settings, workspaces=workspaces).run)
            return state

        yield started
        tg.cancel_scope.cancel()


async def record(pod: PodState, *commands: Command, actor: str = "user:alice") -> TaskState:
    for command in commands:
        await pod.execute(command, actor=actor)
    return pod.current


async def until(pod: PodState, predicate: Callable[[TaskState], bool],
                timeout: float = 20) -> TaskState:
    with anyio.fail_after(timeout):
        async for state in pod.changes():
            if predicate(state):
                return state
    raise AssertionError("unreachable")


def delivered(target: str, commit: str | None = None) -> Callable[[TaskState], bool]:
    """The state once ``target`` was delivered (with ``commit``, when given)."""
    def check(state: TaskState) -> bool:
        result = state.outbox.delivered.get(target, {}).get("result")
        return result is not None and (commit is None or result.get("commit") == commit)
    return check


def child(n: int) -> str:
    return str(UUID(int=n))


def commit_on(repo: Path, branch: str, name: str) -> str:
    """A commit adding ``name``.txt on a new branch ``child/<name>`` made from ``branch``."""
    git(repo, "switch", "-q", "-c", f"child/{name}", branch)
    (repo / f"{name}.txt").write_text(f"{name}\n")
    git(repo, "add", "--all")
    git(repo, "commit", "-q", "-m", f"build {name}")
    work = git(repo, "rev-parse", "HEAD")
    git(repo, "switch", "-q", "main")
    return work


def merge_child(repo: Path, branch: str, name: str) -> tuple[str, str]:
    """A child's commit, made on a branch of its own, merged into ``branch``: (the child's
    commit, the merge commit)."""
    work = commit_on(repo, branch, name)
    git(repo, "switch", "-q", branch)
    git(repo, "merge", "-q", "--no-ff", "-m", f"merge {name}", work)
    merged = git(repo, "rev-parse", "HEAD")
    git(repo, "switch", "-q", "main")
    return work, merged


async def finish_child(pod: PodState, repo: Path, item_id: str, n: int) -> str:
    """Item ``item_id`` runs as child ``n``, which completes and is merged; the new head."""
    await record(pod, SpawnChild(item_id, child(n)))
    work, merged = merge_child(repo, branch_of(pod), item_id)
    await record(pod, RecordChildFinished(child(n), "completed", child_commit=work,
                                          merged=merged))
    return merged


def branch_of(pod: PodState) -> str:
    return f"ipa/{pod.task_id.hex[:8]}"


async def project_in_qa(start: Start, repo: Path, **config: dict) -> PodState:
    """A project of ``repo`` with sync ``config``, through development (``schema`` and
    ``api`` merged into its branch) and into qa (``e2e`` merged too)."""
    pod = await start(CreateTask("Shop", "PRD: a shop that sells hats.", repo=str(repo),
                                 workflow="project"))
    branch = branch_of(pod)
    git(repo, "branch", branch, "main")
    items = parse_backlog(answer(ITEMS), kinds=KINDS, phases=PHASES)
    await record(
        pod, ConfigureSync(**config), StartTask(),
        RecordBranch(branch=branch, base="main", base_commit=git(repo, "rev-parse", "main")),
        CompletePhase(), QueueJob("analyst-1", "product_analyst"), StartJob("analyst-1", "run-1"),
        ProposeBacklog(items, "analyst-1", "run-1"), CompleteJob("analyst-1", "run-1"),
        RequestApproval("backlog"), Approve("go"),  # discovery
        RequestApproval("design"), Approve(),  # architecture
        CompletePhase(),  # infrastructure
    )
    await finish_child(pod, repo, "schema", 1)
    await finish_child(pod, repo, "api", 2)
    await record(pod, CompletePhase())
    await finish_child(pod, repo, "e2e", 3)
    assert (pod.current.phase, pod.current.status) == ("qa", Status.running)
    return pod


async def project_at_deployment(start: Start, repo: Path, remote: Path) -> PodState:
    """The project of :func:`project_in_qa` entered deployment, its pull request #1 open."""
    pod = await project_in_qa(start, repo, github={"repo": "o/n", "approval": False},
                              git={"remote": str(remote)})
    await record(pod, CompletePhase())
    await until(pod, delivered("github:pull_request"))
    return pod


# -- the pull request ----------------------------------------------------------------------------


async def test_the_pull_request_opens_from_the_integration_branch_at_the_deployment_gate(
    start: Start, services: Services, repo: Path, remote: Path
) -> None:
    pod = await project_in_qa(start, repo, github={"repo": "o/n", "approval": False},
                              git={"remote": str(remote)},
                              jira={"issue": "KEY-1", "approval": False})
    head = pod.current.branch.head_commit  # type: ignore[union-attr]
    # Everything the engine planned for the project in qa is out: no pull request among it.
    await until(pod, lambda s: "phase *qa*" in _jira_comment(services))
    assert services.pulls == {} and not [e for e in pod.current.outbox.entries
                                         if e.connector == "github"]

    await record(pod, CompletePhase())  # qa → deployment
    state = await until(pod, delivered("github:status_comment"))

    branch = branch_of(pod)
    (pull,) = services.pulls.values()
    assert (pull["head"]["ref"], pull["base"]["ref"], pull["title"]) == (branch, "main", "Shop")
    assert services.head(1) == head == git(remote, "rev-parse", f"refs/heads/{branch}")
    body = pull["body"]
    assert body.startswith("PRD: a shop that sells hats.")
    assert "## Backlog (3 of 4 done)" in body
    assert "- [x] Build schema (`schema`, database_engineer, development): finished" in body
    assert "- [x] Build e2e (`e2e`, qa_engineer, qa): finished" in body
    assert "- [ ] Build tour (`tour`, technical_writer, growth): approved" in body
    assert f"## Merged into `{branch}`" in body and f"is at `{head}`" in body
    assert f"- Build api (`api`): child task `{child(2)}`" in body
    assert body.endswith(f"Opened by ipa for project `{pod.task_id}`.")
    (comment,) = services.issue_comments(1)
    assert "project “Shop” is **running** in phase **deployment**; 3 of 4" in comment["body"]
    assert state.outbox.delivered["github:pull_request"]["result"]["commit"] == head


async def test_a_later_merge_moves_the_pull_requests_head_and_its_body_follows(
    start: Start, services: Services, repo: Path, remote: Path
) -> None:
    pod = await project_at_deployment(start, repo, remote)
    await record(pod, RequestApproval("ready to ship"), Approve("shipped"), CompletePhase())
    assert pod.current.phase == "growth"

    merged = await finish_child(pod, repo, "tour", 4)

    await until(pod, delivered("github:pull_request", merged))
    assert len(services.pulls) == 1 and services.calls("PATCH", r"/repos/o/n/pulls/1")
    assert services.head(1) == merged
    body = services.pulls[1]["body"]
    assert "## Backlog (4 of 4 done)" in body
    assert "- [x] Build tour (`tour`, technical_writer, growth): finished" in body
    assert f"is at `{merged}`" in body and f"child task `{child(4)}`" in body
    state = await until(pod, lambda s: any("phase **growth**; 4 of 4" in c["body"]
                                           for c in services.issue_comments(1)))
    assert len(services.issue_comments(1)) == 1  # the same comment, updated
    assert state.phase == "growth"


async def test_an_approving_review_approves_the_deployment_gate_once_the_project_waits_there(
    start: Start, services: Services, repo: Path, remote: Path, store: EventStore
) -> None:
    pod = await project_at_deployment(start, repo, remote)
    services.review(1, "octo", "APPROVED", body="Ship it.")  # while its deployer still runs

    state = await until(pod, lambda s: s.outbox.reviews)
    assert (state.phase, state.status) == ("deployment", Status.running)
    assert not state.outbox.reviews[0].applied

    await record(pod, RequestApproval("deployed to staging"))

    state = await until(pod, lambda s: s.phase == "business")
    assert state.status is Status.running and state.outbox.reviews[0].applied
    approved = [e for e in await store.read(pod.task_id) if e.type == "PhaseApproved"][-1]
    assert (approved.actor, approved.data["phase"]) == ("github:octo", "deployment")
    assert "Ship it." in approved.data["comment"]


async def test_changes_requested_on_the_pull_request_send_the_deployment_back_to_work(
    start: Start, services: Services, repo: Path, remote: Path
) -> None:
    pod = await project_at_deployment(start, repo, remote)
    await record(pod, RequestApproval("deployed to staging"))
    services.review(1, "octo", "CHANGES_REQUESTED", body="The hats have no prices.",
                    comments=[{"path": "api.txt", "line": 1, "body": "add a price"}])

    state = await until(pod, lambda s: s.status is Status.running)

    assert state.phase == "deployment"  # the gate's own request for changes
    (feedback,) = state.feedback
    assert (feedback.phase, feedback.actor) == ("deployment", "github:octo")
    assert "The hats have no prices." in feedback.feedback
    assert "- api.txt:1: add a price" in feedback.feedback
    assert state.outbox.reviews[0].applied


async def test_a_child_task_never_opens_a_pull_request_of_its_own(
    start: Start, services: Services, repo: Path, remote: Path
) -> None:
    pod = await start(CreateChildTask("Build api", "Make the api work.", parent_id=child(9),
                                      item_id="api", kind="backend_developer", repo=str(repo)))
    branch = f"ipa/{pod.task_id.hex[:8]}"
    work = commit_on(repo, "main", "api")
    await record(
        pod, ConfigureSync(github={"repo": "o/n", "approval": False},
                           git={"remote": str(remote)},
                           jira={"issue": "KEY-1", "approval": False}),
        StartTask(),
        RecordBranch(branch=branch, base="main", base_commit=git(repo, "rev-parse", "main")),
        QueueJob("dev", "backend_developer"), StartJob("dev", "run-1"),
        CompleteJob("dev", "run-1", landed=work), CompletePhase(),
    )
    assert (pod.current.workflow, pod.current.phase) == ("item", "review")

    # What was planned with the child in review is out: no pull request, no push among it.
    state = await until(pod, lambda s: "phase *review*" in _jira_comment(services))

    assert services.pulls == {} and not services.calls("POST", r"/repos/o/n/pulls")
    assert {e.connector for e in state.outbox.entries} == {"jira"}
    assert branch not in git(remote, "branch", "--list")
    assert [u.target for u in desired(state)] == ["jira:issue_status", "jira:comment"]


async def test_with_a_plain_git_remote_the_integration_branch_is_pushed_at_deployment(
    start: Start, services: Services, repo: Path, remote: Path
) -> None:
    pod = await project_in_qa(start, repo, git={"remote": str(remote), "approval": False})
    branch = branch_of(pod)
    assert desired(pod.current) == []  # in qa: nothing to push yet

    await record(pod, CompletePhase())
    await until(pod, delivered("git:push"))
    assert git(remote, "rev-parse", f"refs/heads/{branch}") == pod.current.branch.head_commit  # type: ignore[union-attr]

    await record(pod, RequestApproval("deployed"), Approve(), CompletePhase())
    merged = await finish_child(pod, repo, "tour", 4)
    await until(pod, delivered("git:push", merged))
    assert git(remote, "rev-parse", f"refs/heads/{branch}") == merged
    assert services.pulls == {}


def _jira_comment(services: Services) -> str:
    comments = services.issues["KEY-1"].get("comments") or {}
    return "\n".join(comments.values())


# -- what the plan wants, from the state alone -----------------------------------------------------


SHAS = {n: f"{n:040x}" for n in range(1, 6)}


def project(phase_moves: int, description: str = "PRD", **config: dict) -> TaskState:
    """A project with its branch, ``schema`` merged, moved on ``phase_moves`` phases from
    development (1: qa, 2: deployment ...), with ``config``."""
    items = parse_backlog(answer(ITEMS), kinds=KINDS, phases=PHASES)
    state = run(None, CreateTask("Shop", description, repo="/r", workflow="project"),
                ConfigureSync(**config), StartTask(),
                RecordBranch(branch="ipa/00000000", base="main", base_commit=SHAS[1]),
                CompletePhase(), QueueJob("a", "product_analyst"), StartJob("a", "r"),
                ProposeBacklog(items, "a", "r"), CompleteJob("a", "r"), RequestApproval(),
                Approve(), RequestApproval(), Approve(), CompletePhase(),
                SpawnChild("schema", child(1)),
                RecordChildFinished(child(1), "completed", child_commit=SHAS[2],
                                    merged=SHAS[3]))
    assert state.phase == "development"
    for _ in range(phase_moves):
        if state.status is Status.waiting:
            state = run(state, Approve())
        else:
            state = run(state, CompletePhase() if state.phase != "deployment"
                        else RequestApproval())
    return state


def test_the_project_wants_its_pull_request_from_deployment_on_and_never_before() -> None:
    config = {"github": {"repo": "o/n", "approval": False}}
    phases = {}
    for moves in range(0, 7):
        state = project(moves, **config)
        phases[state.phase, state.status.value] = [u.target for u in desired(state)]

    assert phases == {
        ("development", "running"): [],
        ("qa", "running"): [],
        ("deployment", "running"): ["github:pull_request"],
        ("deployment", "waiting"): ["github:pull_request"],
        ("business", "running"): ["github:pull_request"],
        ("growth", "running"): ["github:pull_request"],
        ("perpetual", "running"): ["github:pull_request"],
    }
    (pull,) = desired(project(2, **config))
    assert pull.payload | {"body": ""} == {
        "title": "Shop", "body": "", "head": "ipa/00000000", "base": "main",
        "commit": SHAS[3], "source": "/r", "remote": None}


def test_a_project_body_over_githubs_limit_is_shortened_with_a_note() -> None:
    state = project(2, description="x" * 70_000, github={"repo": "o/n"})

    (pull,) = desired(state)

    body, full = pull.payload["body"], pull_request_body(state)
    assert len(body) == 65_536 and body.startswith("x" * 60_000)
    assert body.endswith(f"(shortened by ipa: the text has {len(full):,} characters, 65,536 "
                         "are allowed here)")


def test_the_jira_issue_is_in_review_at_the_projects_deployment_gate() -> None:
    state = project(2, jira={"issue": "KEY-1"})

    statuses = [u.payload["status"] for u in desired(state) if u.kind == "issue_status"]

    assert statuses == ["In Review"]
