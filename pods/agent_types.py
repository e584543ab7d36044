"""Agent types: who runs in which phase, with which model, tools, limits and prompt.

The workflow says which agent types a phase needs (``Phase.agents`` in the domain); this module
says what each type *is*. The built-in catalog holds the workflows' own roles (the ``core``
swarm: the ``task`` workflow's spec writer, planner, developer and reviewer, and the ``project``
workflow's phase roles) and the specialists a backlog item's *kind* names, in swarms
(``engineering``, ``operations``, ``business``, ``data``, ``product``, ``growth``, ``review``):
:meth:`AgentCatalog.kinds` lists them, :meth:`AgentCatalog.route` finds the type of a kind.
A TOML file (``IPA_AGENTS_FILE`` or ``ipa serve --agents-file``) overrides any field of any
type or adds new ones::

    [developer]
    model = "claude-opus-4-1"
    max_turns = 80
    allowed_tools = ["Read", "Edit", "Write", "Bash"]
    verify = ["pytest -q", "ruff check ."]

    [rust_developer]               # a new kind: it names a swarm other than core
    swarm = "engineering"
    description = "Writes and changes the Rust crates."
    role = "You are the Rust developer. ..."
    allowed_tools = ["Read", "Glob", "Grep", "LS", "Edit", "MultiEdit", "Write", "Bash"]
    permission_mode = "acceptEdits"
    verify = "repository"

Fields: ``swarm`` (one of :data:`SWARMS`; ``core``, the default, is a workflow's own role and
not a kind), ``description`` (one line: what the type does, shown to whoever picks kinds),
``role`` (the role text the shared ``specialist.md`` template is filled with as ``$role``;
the built-in ones are in ``pods/prompts/roles.toml``), ``model`` (``None``: the CLI's default),
``allowed_tools``, ``permission_mode`` (one of the CLI's: ``default``, ``acceptEdits``,
``plan``, ``bypassPermissions``, ``dontAsk``), ``max_turns``, ``system_prompt``, ``prompt`` (a
template file name in ``pods/prompts/`` or a path; ``specialist.md`` unless given),
``artifact`` (the name the run's final answer is recorded under: ``spec``, ``plan``,
``review``, ``summary``; ``None``: none), ``verify`` (shell commands run in the workspace after
the run; ``"repository"`` reads them from the repository's ``.ipa.toml``, ``[verify] commands``),
``timeout_seconds``, ``max_attempts``, ``context_tokens`` (the context budget of *Reason*),
``env`` (names of the server's environment variables the agent and its checks also get, e.g.
``["AWS_PROFILE", "AWS_REGION"]`` for Claude Code on Bedrock; see :mod:`.environment` for what
every agent gets; ``IPA_*`` names are refused: ipa's own settings and secrets stay with ipa).
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

PROMPTS = Path(__file__).parent / "prompts"
"""Where the built-in prompt templates live."""

PERMISSION_MODES = ("default", "acceptEdits", "plan", "bypassPermissions", "dontAsk")
BACKLOG = "backlog"
"""``artifact = "backlog"``: the run's answer is a project's backlog (see ``domain.parse_backlog``):
checked as the run's verification, and proposed at the phase's gate."""
REPOSITORY = "repository"
"""``verify = "repository"``: the checks come from the repository's ``.ipa.toml``."""

SPECIALIST = "specialist.md"
"""The shared template of the specialists, filled with each type's ``role``."""

CORE = "core"
SWARMS = (CORE, "engineering", "operations", "business", "data", "product", "growth", "review")
"""The swarms a type belongs to; every one but ``core`` holds kinds a backlog item may name."""

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_READ_TOOLS = ("Read", "Glob", "Grep", "LS")
_EDIT_TOOLS = (*_READ_TOOLS, "Edit", "MultiEdit", "Write", "Bash")
_DOCUMENT_TOOLS = (*_READ_TOOLS, "Edit", "MultiEdit", "Write")
"""Writes documents; no shell."""
_REVIEW_TOOLS = (*_READ_TOOLS, "Bash(git log:*)", "Bash(git show:*)", "Bash(git diff:*)",
                 "Bash(git status:*)")
"""Reads the repository and its history: the shell only for git's read-only commands."""


class AgentConfigError(ValueError):
    """The agents file (or a type in it) is malformed; the message names the field."""


class UnknownKind(LookupError):
    """A backlog item names a kind no agent type routes; the message names close matches."""

    def __init__(self, kind: str, close: list[str], kinds: list[str], core: bool) -> None:
        self.kind = kind
        self.close = close
        if core:
            why = "is a workflow's own role, not a kind a backlog item can name"
        else:
            why = "is not a kind"
        hint = (f"did you mean {', '.join(close)}?" if close
                else f"the kinds are: {', '.join(kinds)}")
        super().__init__(f"{kind!r} {why}; {hint}")


@dataclass(frozen=True)
class AgentType:
    """What one kind of agent is; see the module docstring for the fields."""

    name: str
    prompt: str = SPECIALIST
    model: str | None = None
    allowed_tools: tuple[str, ...] = _READ_TOOLS
    permission_mode: str = "default"
    max_turns: int = 40
    system_prompt: str | None = None
    artifact: str | None = None
    verify: tuple[str, ...] | str = ()
    timeout_seconds: float = 3600.0
    max_attempts: int = 3
    context_tokens: int = 60_000
    env: tuple[str, ...] = ()
    swarm: str = CORE
    description: str = ""
    role: str = ""

    def prompt_path(self) -> Path:
        path = Path(self.prompt)
        return path if path.is_absolute() else PROMPTS / path


def _roles() -> dict[str, str]:
    """The built-in specialists' role texts (``pods/prompts/roles.toml``)."""
    data = tomllib.loads((PROMPTS / "roles.toml").read_text())
    return {name: table["role"].strip() for name, table in data.items()}


_ROLES = _roles()


def _engineering(name: str, swarm: str, description: str, **limits: Any) -> AgentType:
    """Changes the repository's code; the repository's own checks verify it."""
    values = {"artifact": "summary", "max_turns": 80, "max_attempts": 4,
              "timeout_seconds": 3600.0, **limits}
    return AgentType(name, swarm=swarm, description=description, role=_ROLES[name],
                     allowed_tools=_EDIT_TOOLS, permission_mode="acceptEdits",
                     verify=REPOSITORY, **values)


def _document(name: str, swarm: str, description: str, artifact: str,
              **limits: Any) -> AgentType:
    """Writes documents in the repository; its final answer is recorded as ``artifact``."""
    values = {"max_turns": 50, "max_attempts": 3, "timeout_seconds": 1800.0, **limits}
    return AgentType(name, swarm=swarm, description=description, role=_ROLES[name],
                     allowed_tools=_DOCUMENT_TOOLS, permission_mode="acceptEdits",
                     artifact=artifact, **values)


def _review(name: str, description: str, artifact: str) -> AgentType:
    """Reads the work and judges it; changes nothing."""
    return AgentType(name, swarm="review", description=description, role=_ROLES[name],
                     allowed_tools=_REVIEW_TOOLS, artifact=artifact, max_turns=40,
                     max_attempts=2, timeout_seconds=1800.0, context_tokens=80_000)


_CORE = (
    AgentType("spec_writer", prompt="spec_writer.md", artifact="spec",
              description="Turns a task's request into a testable specification."),
    AgentType("planner", prompt="planner.md", artifact="plan",
              description="Writes the implementation plan from the specification."),
    AgentType("developer", prompt="developer.md", allowed_tools=_EDIT_TOOLS,
              permission_mode="acceptEdits", max_turns=80, artifact="summary",
              verify=REPOSITORY, max_attempts=4,
              description="Implements the plan in the repository."),
    AgentType("reviewer", prompt="reviewer.md", artifact="review", allowed_tools=_REVIEW_TOOLS,
              description="Reviews a task's change against its specification and plan."),
    AgentType("bootstrapper", prompt="generic.md", allowed_tools=_EDIT_TOOLS,
              permission_mode="acceptEdits",
              description="Prepares a project's repository (bootstrap phase)."),
    AgentType("product_analyst", prompt="backlog.md", artifact=BACKLOG,
              description="Breaks a project's PRD down into a backlog of items (discovery)."),
    AgentType("architect", prompt="generic.md", artifact="architecture",
              description="Designs a project's architecture (architecture phase)."),
    AgentType("tester", prompt="generic.md", allowed_tools=_EDIT_TOOLS,
              permission_mode="acceptEdits", verify=REPOSITORY,
              description="Tests a project as a whole (qa phase)."),
    AgentType("deployer", prompt="generic.md", allowed_tools=_EDIT_TOOLS,
              permission_mode="acceptEdits",
              description="Deploys a project (deployment phase)."),
    AgentType("business_analyst", prompt="generic.md", artifact="business",
              description="Analyses a project's business side (business phase)."),
    AgentType("growth_analyst", prompt="generic.md", artifact="growth",
              description="Analyses a project's growth (growth phase)."),
    AgentType("maintainer", prompt="cycle.md", artifact=BACKLOG,
              description="Proposes each improvement cycle's items (perpetual phase)."),
)

_SPECIALISTS = (
    # engineering
    _engineering("frontend_developer", "engineering", "Builds and changes the user interface: "
                 "pages, components, styles, client-side behaviour, and their tests."),
    _engineering("backend_developer", "engineering", "Builds and changes server-side logic: "
                 "services, domain rules, persistence access, background work, and tests."),
    _engineering("database_engineer", "engineering", "Designs schemas, migrations, indexes and "
                 "queries; keeps data correct as the code changes."),
    _engineering("api_designer", "engineering", "Designs and implements APIs: endpoints, "
                 "shapes, errors, versioning, and their OpenAPI description."),
    _engineering("mobile_developer", "engineering", "Builds and changes mobile apps: screens, "
                 "navigation, offline behaviour, platform integrations."),
    _engineering("qa_engineer", "engineering", "Writes and fixes automated tests (unit, "
                 "integration, end to end) and reports or fixes the bugs they find."),
    _engineering("performance_engineer", "engineering", "Measures and improves speed, memory "
                 "and throughput, with benchmarks before and after.", timeout_seconds=5400.0),
    # The project workflow's infrastructure role is a kind too: its limits stay as they were
    # (no artifact, default turns and attempts); it gained the shared template and a role.
    AgentType("infrastructure_engineer", swarm="engineering",
              description="Infrastructure as code: environments, containers, networking, "
              "configuration, provisioning.", role=_ROLES["infrastructure_engineer"],
              allowed_tools=_EDIT_TOOLS, permission_mode="acceptEdits", verify=REPOSITORY),
    # operations
    _engineering("devops_engineer", "operations", "Build and delivery: CI pipelines, build "
                 "scripts, container images, deployment automation."),
    _engineering("sre", "operations", "Reliability: objectives, timeouts, retries, health "
                 "checks, graceful degradation, capacity, runbooks."),
    _engineering("security_engineer", "operations", "Finds and fixes security weaknesses in "
                 "code, dependencies and configuration, with tests."),
    _engineering("monitoring_engineer", "operations", "Observability as code: metrics, "
                 "structured logs, traces, alerts and dashboards."),
    _engineering("incident_responder", "operations", "Investigates an incident, mitigates it "
                 "with a tested fix, and writes the incident report.",
                 artifact="incident_report", max_attempts=3),
    _engineering("release_manager", "operations", "Prepares a release: version, changelog, "
                 "release and upgrade notes, release checks.", artifact="release_notes",
                 max_turns=50, max_attempts=3, timeout_seconds=1800.0),
    _document("cost_analyst", "operations", "Works out running costs (compute, services, AI "
              "tokens) and how to cut them; docs/costs/.", "cost_report"),
    _document("compliance_officer", "operations", "Assesses GDPR, SOC 2, licence and "
              "accessibility obligations; gaps and policy drafts in docs/compliance/.",
              "compliance_report"),
    # business
    _document("marketing", "business", "Positioning, messaging, launch plan and copy; "
              "docs/marketing/.", "marketing_plan"),
    _document("sales", "business", "Customer profile, pitch, objection handling and sales "
              "process; docs/sales/.", "sales_playbook"),
    _document("finance", "business", "Pricing, unit economics, budget and forecasts with their "
              "assumptions; docs/finance/.", "financial_plan"),
    _document("legal", "business", "Drafts terms, privacy policy and licence notices, and "
              "flags legal risks; docs/legal/ (for a lawyer to check).", "legal_brief"),
    _document("support", "business", "Help articles, FAQ, troubleshooting guides and support "
              "macros; docs/support/.", "support_guide"),
    _document("hr", "business", "Role descriptions, hiring plan, interview guides and "
              "onboarding; docs/hr/.", "people_plan"),
    _document("investor_relations", "business", "Investor narrative, metrics updates and "
              "investor FAQ; docs/investors/.", "investor_brief"),
    _document("partnerships", "business", "Partner and integration opportunities and the "
              "partner programme; docs/partnerships/.", "partnership_plan"),
    # data
    _engineering("ml_engineer", "data", "Builds ML features: data preparation, models or model "
                 "APIs, evaluation, serving.", timeout_seconds=5400.0),
    _engineering("data_engineer", "data", "Data pipelines: ingestion, transformation, schemas, "
                 "scheduling, data quality checks."),
    _engineering("analytics", "data", "Product analytics: tracking plan, event "
                 "instrumentation, metric definitions, queries and dashboards as code."),
    # product
    _document("product_manager", "product", "Requirements: user stories, acceptance criteria, "
              "scope, priorities, success metrics; docs/product/.", "product_brief",
              context_tokens=80_000),
    _document("designer", "product", "User flows, wireframes, interaction and visual "
              "guidelines, accessibility; docs/design/.", "design"),
    _document("technical_writer", "product", "User and developer documentation: README, "
              "guides, tutorials, configuration and API reference.", "documentation",
              context_tokens=80_000),
    # growth
    _document("growth", "growth", "Funnel analysis, acquisition and activation experiments "
              "with metrics; docs/growth/.", "growth_plan"),
    _document("community", "growth", "Contribution guide, code of conduct, community "
              "programmes and announcements; docs/community/.", "community_plan"),
    _document("customer_success", "growth", "Onboarding plans, health scores, renewal "
              "playbooks; docs/customer-success/.", "customer_success_plan"),
    _document("lifecycle", "growth", "Onboarding, activation, retention and win-back "
              "message sequences; docs/lifecycle/.", "lifecycle_plan"),
    # review
    _review("code_reviewer", "Reviews a change's code: correctness, tests, design, "
            "maintainability; changes nothing.", "code_review"),
    _review("business_reviewer", "Reviews business documents: consistency, evidence, "
            "feasibility, risks; changes nothing.", "business_review"),
    _review("security_reviewer", "Reviews a change for security flaws and risky "
            "dependencies or configuration; changes nothing.", "security_review"),
)

_BUILT_IN = (*_CORE, *_SPECIALISTS)


@dataclass(frozen=True)
class AgentCatalog:
    """The agent types by name."""

    types: Mapping[str, AgentType] = field(
        default_factory=lambda: {agent.name: agent for agent in _BUILT_IN}
    )

    def get(self, name: str) -> AgentType:
        """The type called ``name``; ``KeyError`` naming the known ones otherwise."""
        try:
            return self.types[name]
        except KeyError:
            known = ", ".join(sorted(self.types))
            raise KeyError(f"no agent type {name!r} (known: {known})") from None

    def kinds(self) -> tuple[AgentType, ...]:
        """The types a backlog item's ``kind`` may name: every type outside the ``core`` swarm
        (the workflows' own phase roles), by swarm (in :data:`SWARMS` order), then name."""
        return tuple(sorted((t for t in self.types.values() if t.swarm != CORE),
                            key=lambda t: (SWARMS.index(t.swarm), t.name)))

    def kinds_markdown(self) -> str:
        """:meth:`kinds` as a Markdown list, one ``- `name` (swarm): description`` a line."""
        return "\n".join(f"- `{t.name}` ({t.swarm}): {t.description}" for t in self.kinds())

    def route(self, kind: str) -> AgentType:
        """The agent type that does a backlog item of ``kind`` (case, spaces and hyphens do
        not matter: ``"Backend developer"`` is ``backend_developer``; use the result's
        ``name`` as the canonical kind). :class:`UnknownKind`, naming close matches,
        otherwise."""
        name = re.sub(r"[\s-]+", "_", str(kind).strip().lower())  # a backlog is untrusted
        agent = self.types.get(name)
        if agent is not None and agent.swarm != CORE:
            return agent
        kinds = [t.name for t in self.kinds()]
        close = difflib.get_close_matches(name, kinds, n=4, cutoff=0.6)
        close += [k for k in kinds if name and (name in k or k in name) and k not in close]
        raise UnknownKind(kind, close[:4], kinds, core=agent is not None)

    @classmethod
    def load(cls, path: Path | None) -> AgentCatalog:
        """The built-in catalog with the TOML file at ``path`` laid over it."""
        catalog = cls()
        if path is None:
            return catalog
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise AgentConfigError(f"agents file {path}: {e}") from None
        types = dict(catalog.types)
        for name, overrides in data.items():
            if not isinstance(overrides, dict):
                raise AgentConfigError(f"agents file {path}: [{name}] must be a table")
            base = types.get(name, AgentType(name))
            types[name] = _override(base, overrides, f"agents file {path}, [{name}]")
        return cls(types)


_FIELDS = {f.name for f in fields(AgentType)} - {"name"}


def _override(base: AgentType, overrides: dict[str, Any], where: str) -> AgentType:
    unknown = set(overrides) - _FIELDS
    if unknown:
        raise AgentConfigError(f"{where}: unknown field(s) {sorted(unknown)}; "
                               f"known: {sorted(_FIELDS)}")
    values = dict(overrides)
    for key in ("allowed_tools",):
        if key in values:
            values[key] = tuple(_strings(values[key], f"{where}.{key}"))
    if "env" in values:
        values["env"] = tuple(_strings(values["env"], f"{where}.env"))
        for name in values["env"]:
            if not _ENV_NAME.fullmatch(name):
                raise AgentConfigError(f"{where}.env: {name!r} is not a variable name")
            if name.upper().startswith("IPA_"):
                raise AgentConfigError(f"{where}.env: {name!r} is ipa's own; agents never "
                                       "get ipa's settings or secrets")
    if "verify" in values and values["verify"] != REPOSITORY:
        values["verify"] = tuple(_strings(values["verify"], f"{where}.verify"))
    if values.get("permission_mode", base.permission_mode) not in PERMISSION_MODES:
        raise AgentConfigError(f"{where}.permission_mode must be one of {PERMISSION_MODES}")
    for key in ("max_turns", "max_attempts", "context_tokens"):
        if key in values and (not isinstance(values[key], int) or values[key] < 1):
            raise AgentConfigError(f"{where}.{key} must be a whole number ≥ 1")
    if "timeout_seconds" in values and not (
        isinstance(values["timeout_seconds"], int | float) and values["timeout_seconds"] > 0
    ):
        raise AgentConfigError(f"{where}.timeout_seconds must be a number > 0")
    for key in ("prompt", "model", "system_prompt", "artifact", "description", "role",
                "swarm"):
        if key in values and not isinstance(values[key], str):
            raise AgentConfigError(f"{where}.{key} must be text")
    if "swarm" in values and values["swarm"] not in SWARMS:
        raise AgentConfigError(f"{where}.swarm: unknown swarm {values['swarm']!r}; "
                               f"swarms: {', '.join(SWARMS)}")
    if "\n" in values.get("description", ""):
        raise AgentConfigError(f"{where}.description must be one line")
    agent = replace(base, **values)
    if agent.swarm != CORE and not agent.description.strip():
        raise AgentConfigError(f"{where}: a kind (swarm {agent.swarm!r}) needs a description: "
                               "it is how kinds are chosen")
    return agent


def _strings(value: object, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise AgentConfigError(f"{where} must be a list of strings")
    return value


def repository_checks(workspace: Path) -> tuple[str, ...]:
    """The ``[verify] commands`` of the repository's ``.ipa.toml`` (none when absent)."""
    config = workspace / ".ipa.toml"
    if not config.is_file():
        return ()
    try:
        data = tomllib.loads(config.read_text())
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise AgentConfigError(f"{config.name} in the repository: {e}") from None
    commands = data.get("verify", {}).get("commands", [])
    return tuple(_strings(commands, f"{config.name} [verify] commands"))
