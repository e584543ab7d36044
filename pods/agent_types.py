"""Agent types: who runs in which phase, with which model, tools, limits and prompt.

The workflow says which agent types a phase needs (``Phase.agents`` in the domain); this module
says what each type *is*. The built-in catalog covers the ``task`` workflow's spec writer,
planner, developer and reviewer, and every role of the ``project`` workflow; a TOML file
(``IPA_AGENTS_FILE`` or ``ipa serve --agents-file``) overrides any field of any type or adds
new ones::

    [developer]
    model = "claude-opus-4-1"
    max_turns = 80
    allowed_tools = ["Read", "Edit", "Write", "Bash"]
    verify = ["pytest -q", "ruff check ."]

    [security_reviewer]            # a new type, for a workflow that names it
    prompt = "reviewer.md"
    artifact = "security_review"

Fields: ``model`` (``None``: the CLI's default), ``allowed_tools``, ``permission_mode`` (one of
the CLI's: ``default``, ``acceptEdits``, ``plan``, ``bypassPermissions``, ``dontAsk``),
``max_turns``, ``system_prompt``, ``prompt`` (a template file name in ``pods/prompts/`` or a
path), ``artifact`` (the name the run's final answer is recorded under: ``spec``, ``plan``,
``review``, ``summary``; ``None``: none), ``verify`` (shell commands run in the workspace after
the run; ``"repository"`` reads them from the repository's ``.ipa.toml``, ``[verify] commands``),
``timeout_seconds``, ``max_attempts``, ``context_tokens`` (the context budget of *Reason*),
``env`` (names of the server's environment variables the agent and its checks also get, e.g.
``["AWS_PROFILE", "AWS_REGION"]`` for Claude Code on Bedrock; see :mod:`.environment` for what
every agent gets; ``IPA_*`` names are refused: ipa's own settings and secrets stay with ipa).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

PROMPTS = Path(__file__).parent / "prompts"
"""Where the built-in prompt templates live."""

PERMISSION_MODES = ("default", "acceptEdits", "plan", "bypassPermissions", "dontAsk")
REPOSITORY = "repository"
"""``verify = "repository"``: the checks come from the repository's ``.ipa.toml``."""

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_READ_TOOLS = ("Read", "Glob", "Grep", "LS")
_EDIT_TOOLS = (*_READ_TOOLS, "Edit", "MultiEdit", "Write", "Bash")


class AgentConfigError(ValueError):
    """The agents file (or a type in it) is malformed; the message names the field."""


@dataclass(frozen=True)
class AgentType:
    """What one kind of agent is; see the module docstring for the fields."""

    name: str
    prompt: str = "generic.md"
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

    def prompt_path(self) -> Path:
        path = Path(self.prompt)
        return path if path.is_absolute() else PROMPTS / path


_BUILT_IN = (
    AgentType("spec_writer", prompt="spec_writer.md", artifact="spec"),
    AgentType("planner", prompt="planner.md", artifact="plan"),
    AgentType("developer", prompt="developer.md", allowed_tools=_EDIT_TOOLS,
              permission_mode="acceptEdits", max_turns=80, artifact="summary",
              verify=REPOSITORY, max_attempts=4),
    AgentType("reviewer", prompt="reviewer.md", artifact="review"),
    AgentType("bootstrapper", allowed_tools=_EDIT_TOOLS, permission_mode="acceptEdits"),
    AgentType("product_analyst", artifact="prd"),
    AgentType("architect", artifact="architecture"),
    AgentType("infrastructure_engineer", allowed_tools=_EDIT_TOOLS,
              permission_mode="acceptEdits", verify=REPOSITORY),
    AgentType("tester", allowed_tools=_EDIT_TOOLS, permission_mode="acceptEdits",
              verify=REPOSITORY),
    AgentType("deployer", allowed_tools=_EDIT_TOOLS, permission_mode="acceptEdits"),
    AgentType("business_analyst", artifact="business"),
    AgentType("growth_analyst", artifact="growth"),
    AgentType("maintainer", allowed_tools=_EDIT_TOOLS, permission_mode="acceptEdits",
              verify=REPOSITORY),
)


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
    for key in ("prompt", "model", "system_prompt", "artifact"):
        if key in values and not isinstance(values[key], str):
            raise AgentConfigError(f"{where}.{key} must be text")
    return replace(base, **values)


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
