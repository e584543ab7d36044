"""The agent catalog: the specialists in their swarms, their templates and tools, routing a
backlog item's kind to its type, and the agents file laid over it."""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import anyio
import pytest

from ipa.domain import Artifact, Branch, FrozenMap, Job, QueueJob, Status, TaskState
from ipa.pods import AgentCatalog, AgentConfigError, AgentSettings, ClaudeRunner, PodEnvironment
from ipa.pods.agent_types import BACKLOG, PROMPTS, REPOSITORY, SPECIALIST, SWARMS, UnknownKind
from ipa.pods.context import prepare
from ipa.supervisor import Supervisor

from ..fakes.claude import FakeClaude
from .helpers import job, wait_for

CATALOG = AgentCatalog()
EDIT_TOOLS = {"Edit", "MultiEdit", "Write", "NotebookEdit", "Bash"}
GIT_READS = re.compile(r"Bash\(git (log|show|diff|status|blame):\*\)")
LEFTOVER_FIELD = re.compile(r"\$(\{\w+\}|[A-Za-z_]\w*)")


def in_swarm(swarm: str) -> list[str]:
    return [t.name for t in CATALOG.kinds() if t.swarm == swarm]


def tiny_state(agent: str) -> tuple[TaskState, Job]:
    """A task in development with a spec, and one attempt of an ``agent`` job."""
    now = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    spec = Artifact("spec", "spec_writer-1", "spec_clarification", "Five tries a minute.", now)
    state = TaskState(id=uuid4(), version=7, title="Add rate limiting",
                      description="Limit login attempts per account.", workflow="task",
                      repo=None, phase="development", status=Status.running, paused_from=None,
                      created_at=now, updated_at=now, created_by="user:alice",
                      artifacts=FrozenMap({"spec": spec}))
    current = Job(job_id=f"{agent}-1", agent=agent, phase="development", priority=0,
                  depends_on=(), timeout_seconds=60.0, max_attempts=3, spec={},
                  queued_seq=1, queued_at=now, attempts=1)
    return state, current


def render(catalog: AgentCatalog, name: str) -> str:
    """The prompt of ``name``'s first attempt, prepared as ``rarv.AgentAttempt.run`` does."""
    agent = catalog.get(name)
    state, current = tiny_state(name)
    return prepare(state, current, template=agent.prompt_path(), agent=agent.name,
                   budget_tokens=agent.context_tokens, base_commit="0123abcd",
                   role=agent.role).prompt


# -- the catalog ----------------------------------------------------------------------------


def test_the_catalog_has_at_least_37_kinds_across_the_seven_swarms() -> None:
    swarms = Counter(t.swarm for t in CATALOG.kinds())

    assert len(CATALOG.kinds()) >= 37
    assert set(swarms) == set(SWARMS) - {"core"}
    assert swarms == {"engineering": 8, "operations": 8, "business": 8, "data": 3,
                      "product": 3, "growth": 4, "review": 3}


def test_kinds_leave_out_the_workflows_own_roles_and_go_by_swarm() -> None:
    kinds = [t.name for t in CATALOG.kinds()]

    assert not {"spec_writer", "planner", "developer", "reviewer", "product_analyst",
                "maintainer"} & set(kinds)
    assert [SWARMS.index(CATALOG.get(k).swarm) for k in kinds] == sorted(
        SWARMS.index(CATALOG.get(k).swarm) for k in kinds)
    lines = CATALOG.kinds_markdown().splitlines()
    assert len(lines) == len(kinds)
    assert "- `backend_developer` (engineering): Builds and changes server-side" in lines[1]


def test_every_kind_has_a_one_line_description_and_its_own_role() -> None:
    for agent in CATALOG.kinds():
        assert agent.description and "\n" not in agent.description, agent.name
        assert agent.prompt == SPECIALIST, agent.name
        assert agent.role.startswith("You are the "), agent.name
    assert len({agent.role for agent in CATALOG.kinds()}) == len(CATALOG.kinds())


def test_the_roles_file_names_only_the_catalogs_kinds() -> None:
    roles = tomllib.loads((PROMPTS / "roles.toml").read_text())

    assert set(roles) == {t.name for t in CATALOG.kinds()}


@pytest.mark.parametrize("name", sorted(CATALOG.types))
def test_every_types_template_fills_with_no_field_left(name: str) -> None:
    prompt = render(CATALOG, name)

    # The first line names the type (``fakes/fake_claude.py`` and people reading runs rely on it).
    assert prompt.startswith(f"Agent type: {name}.")
    assert not LEFTOVER_FIELD.search(prompt), LEFTOVER_FIELD.search(prompt)
    assert "Add rate limiting" in prompt and "Five tries a minute." in prompt
    assert "QUESTION:" in prompt
    if CATALOG.get(name).role:
        assert CATALOG.get(name).role in prompt


def test_the_workflows_own_roles_keep_their_templates_and_tools() -> None:
    prompts = {name: CATALOG.get(name).prompt for name in
               ("spec_writer", "planner", "developer", "reviewer", "architect",
                "product_analyst", "maintainer")}
    assert prompts == {"spec_writer": "spec_writer.md", "planner": "planner.md",
                       "developer": "developer.md", "reviewer": "reviewer.md",
                       "architect": "generic.md", "product_analyst": "backlog.md",
                       "maintainer": "cycle.md"}
    # The analyst's and the maintainer's answers are backlogs (checked, then proposed).
    assert {CATALOG.get(n).artifact for n in ("product_analyst", "maintainer")} == {BACKLOG}
    assert CATALOG.get("developer").verify == REPOSITORY
    assert not EDIT_TOOLS & set(CATALOG.get("reviewer").allowed_tools)
    infrastructure = CATALOG.get("infrastructure_engineer")
    assert (infrastructure.verify, infrastructure.artifact, infrastructure.max_attempts) == (
        REPOSITORY, None, 3)


# -- tools coherent with the role -----------------------------------------------------------


def test_review_types_change_nothing_and_read_history_only_through_git() -> None:
    for name in in_swarm("review"):
        agent = CATALOG.get(name)
        tools = set(agent.allowed_tools)
        assert not tools & EDIT_TOOLS, name
        assert all(GIT_READS.fullmatch(t) for t in tools if t.startswith("Bash")), name
        assert agent.permission_mode == "default", name
        assert agent.verify == () and agent.artifact, name


def test_engineering_types_edit_and_are_checked_by_the_repository() -> None:
    for name in in_swarm("engineering") + in_swarm("data"):
        agent = CATALOG.get(name)
        assert {"Edit", "Write", "Bash"} <= set(agent.allowed_tools), name
        assert agent.permission_mode == "acceptEdits", name
        assert agent.verify == REPOSITORY, name


def test_document_types_write_documents_without_a_shell_and_record_their_answer() -> None:
    writers = [*in_swarm("business"), *in_swarm("product"), *in_swarm("growth"),
               "cost_analyst", "compliance_officer"]
    for name in writers:
        agent = CATALOG.get(name)
        assert {"Edit", "Write"} <= set(agent.allowed_tools), name
        assert not any(t.startswith("Bash") for t in agent.allowed_tools), name
        assert agent.verify == (), name
        assert agent.artifact, name
    assert "docs/marketing/" in CATALOG.get("marketing").role


def test_every_artifact_of_a_kind_is_its_own_or_a_summary() -> None:
    artifacts = Counter(t.artifact for t in CATALOG.kinds())

    assert all(count == 1 for name, count in artifacts.items() if name not in ("summary", None))


# -- routing --------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "name"), [
    ("backend_developer", "backend_developer"),
    ("Backend Developer", "backend_developer"),
    ("security-reviewer", "security_reviewer"),
    (" sre ", "sre"),
])
def test_a_kind_routes_to_its_type(kind: str, name: str) -> None:
    assert CATALOG.route(kind) == CATALOG.get(name)


def test_an_unknown_kind_is_refused_naming_close_matches() -> None:
    with pytest.raises(UnknownKind, match=r"'backend' is not a kind; did you mean "
                                          r"backend_developer\?") as caught:
        CATALOG.route("backend")
    assert caught.value.close == ["backend_developer"]

    with pytest.raises(UnknownKind, match="security_engineer") as caught:
        CATALOG.route("security")
    assert set(caught.value.close) == {"security_engineer", "security_reviewer"}


def test_a_kind_with_nothing_close_is_refused_listing_the_kinds() -> None:
    with pytest.raises(UnknownKind, match=r"'wizard' is not a kind; the kinds are: .*lifecycle"):
        CATALOG.route("wizard")
    with pytest.raises(UnknownKind, match="None is not a kind"):
        CATALOG.route(None)  # type: ignore[arg-type]  # a backlog's JSON may hold anything


def test_a_workflows_own_role_is_not_a_kind() -> None:
    with pytest.raises(UnknownKind, match="'planner' is a workflow's own role"):
        CATALOG.route("planner")


# -- the agents file ------------------------------------------------------------------------


def test_the_agents_file_overrides_a_specialists_fields(tmp_path: Path) -> None:
    agents_file = tmp_path / "agents.toml"
    agents_file.write_text(
        '[marketing]\nswarm = "growth"\ndescription = "Launch copy only."\n'
        'role = "You are the launch copywriter."\nmodel = "claude-opus-4-1"\n'
    )

    catalog = AgentCatalog.load(agents_file)

    marketing = catalog.route("marketing")
    assert (marketing.swarm, marketing.description, marketing.model) == (
        "growth", "Launch copy only.", "claude-opus-4-1")
    assert marketing.artifact == CATALOG.get("marketing").artifact
    assert "You are the launch copywriter." in render(catalog, "marketing")
    assert "- `marketing` (growth): Launch copy only." in catalog.kinds_markdown()


def test_the_agents_file_adds_a_kind_that_uses_the_shared_template(tmp_path: Path) -> None:
    agents_file = tmp_path / "agents.toml"
    agents_file.write_text(
        '[rust_developer]\nswarm = "engineering"\ndescription = "Writes the Rust crates."\n'
        'role = "You are the Rust developer."\nverify = "repository"\n'
        'allowed_tools = ["Read", "Edit", "Write", "Bash"]\npermission_mode = "acceptEdits"\n'
        '[helper]\ndescription = "A phase role of a custom workflow."\n'
    )

    catalog = AgentCatalog.load(agents_file)

    assert catalog.route("rust developer").name == "rust_developer"
    assert "You are the Rust developer." in render(catalog, "rust_developer")
    assert catalog.get("helper").swarm == "core"
    assert "helper" not in [t.name for t in catalog.kinds()]


@pytest.mark.parametrize(("line", "message"), [
    ('swarm = "marketing"', r"\[growth\]\.swarm: unknown swarm 'marketing'; swarms: core, "),
    ("swarm = 3", r"\[growth\]\.swarm must be text"),
    ('role = ["You are"]', r"\[growth\]\.role must be text"),
    ('description = "two\\nlines"', r"\[growth\]\.description must be one line"),
])
def test_the_agents_file_refuses_a_bad_swarm_role_or_description(
    tmp_path: Path, line: str, message: str
) -> None:
    agents_file = tmp_path / "agents.toml"
    agents_file.write_text(f"[growth]\n{line}\n")

    with pytest.raises(AgentConfigError, match=message):
        AgentCatalog.load(agents_file)


def test_the_agents_file_refuses_a_kind_without_a_description(tmp_path: Path) -> None:
    agents_file = tmp_path / "agents.toml"
    agents_file.write_text('[rust_developer]\nswarm = "engineering"\n')

    with pytest.raises(AgentConfigError, match=r"\[rust_developer\]: a kind .* needs a "
                                               "description"):
        AgentCatalog.load(agents_file)


# -- a run ----------------------------------------------------------------------------------


@pytest.fixture
async def start(pod_env: PodEnvironment, tmp_path: Path) -> AsyncIterator[Callable]:
    async with anyio.create_task_group() as tg:
        async def started(fake: FakeClaude) -> Supervisor:
            agents = AgentSettings(runner=lambda: ClaudeRunner(cli_path=str(fake.cli)),
                                   verify_timeout=5.0)
            supervisor = Supervisor(replace(pod_env, agents=agents))
            await tg.start(supervisor.run)
            return supervisor

        yield started
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_a_specialists_run_is_prompted_with_its_role_and_records_its_artifact(
    start, create_task, tmp_path: Path
) -> None:
    fake = FakeClaude(tmp_path / "fake").script({"*": [{"text": "Wrote docs/sales/pitch.md"}]})
    supervisor = await start(fake)
    pod = await supervisor.start(await create_task())
    await pod.execute(QueueJob(job_id="a", agent="sales", spec={"runner": "claude"}))

    state = await wait_for(pod, lambda s: job(s, "a").status.value == "succeeded")

    [run] = fake.runs()
    assert run["agent"] == "sales"
    assert CATALOG.get("sales").role in run["prompt"]
    assert state.artifacts["sales_playbook"].content.startswith("Wrote docs/sales/pitch.md")


def test_the_reviewer_reads_the_whole_change_since_the_task_branch_started() -> None:
    agent = CATALOG.get("reviewer")
    state, current = tiny_state("reviewer")
    branched = replace(state, branch=Branch("ipa/abcd1234", "main", "b" * 40, "c" * 40))

    prompt = prepare(branched, current, template=agent.prompt_path(), agent=agent.name,
                     budget_tokens=agent.context_tokens, base_commit="c" * 40).prompt

    assert f"git diff {'b' * 40}" in prompt  # not the reviewer's own start, the branch's
    assert {"Bash(git diff:*)", "Bash(git log:*)"} <= set(agent.allowed_tools)
    assert not EDIT_TOOLS & set(agent.allowed_tools)
