"""The environment an agent gets: an allow-list, never the server's whole environment.

ipa's server holds secrets in its environment (``IPA_GITHUB_TOKEN``, ``IPA_JIRA_TOKEN``,
``IPA_API_KEYS``, ``IPA_AUDIT_KEY``, database URLs). Whatever an agent can read, a
prompt-injected agent can send away, so every process a runner starts (an agent CLI, a
command job, a verification command) gets only:

- :data:`INHERITED_ENV` and the names starting with :data:`INHERITED_PREFIXES`: the system's
  basics (``PATH``, ``HOME``, user, shell, locale, time zone, temp dir, terminal) and how to
  reach the network (proxies, CA bundles);
- for the Claude Code CLI also :data:`CLAUDE_CLI_PREFIXES`: its own authentication and
  settings (``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL``, ``CLAUDE_CODE_OAUTH_TOKEN``,
  ``CLAUDE_CONFIG_DIR``, ``CLAUDE_CODE_USE_BEDROCK``...) and the SDK's own variables;
- the names the agents file gives an agent type (``env = ["AWS_PROFILE"]``), with their
  values from the server's environment;
- the values a job spec or the runner sets explicitly.

This module is the one definition of that list; :mod:`.runners` and :mod:`.claude` both use it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

__all__ = [
    "CLAUDE_CLI_PREFIXES",
    "INHERITED_ENV",
    "INHERITED_PREFIXES",
    "inherited",
    "is_inherited",
]

INHERITED_ENV = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY",
    "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS",
})  # fmt: skip
"""Variables every agent process inherits from the server (when set there)."""

INHERITED_PREFIXES = ("LC_",)
"""Prefixes of further inherited variables (the locale's categories)."""

CLAUDE_CLI_PREFIXES = ("ANTHROPIC_", "CLAUDE_CODE_", "CLAUDE_CONFIG_DIR", "CLAUDE_AGENT_SDK_")
"""What the Claude Code CLI reads for its login, endpoint and settings, and what the SDK sets
for it; inherited by the Claude runner only (verification commands do not need them)."""


def is_inherited(name: str, *, claude: bool = False, extra: Iterable[str] = ()) -> bool:
    """Whether the server's variable ``name`` reaches the agent (``claude``: the Claude Code
    CLI's process; ``extra``: names the agents file adds)."""
    return (
        name in INHERITED_ENV
        or name.startswith(INHERITED_PREFIXES)
        or (claude and name.startswith(CLAUDE_CLI_PREFIXES))
        or name in extra
    )


def inherited(
    names: Iterable[str] = (), *, claude: bool = False, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The allowed part of ``environ`` (default: the server's environment); ``names`` are the
    extra ones the agents file allows."""
    source = os.environ if environ is None else environ
    extra = frozenset(names)
    return {
        name: value
        for name, value in source.items()
        if is_inherited(name, claude=claude, extra=extra)
    }
