"""The Claude Code runner: an agent run through ``claude-agent-sdk``, streamed as it happens.

The SDK starts the Claude Code CLI (the one it bundles, or ``IPA_CLAUDE_CLI`` / the runner's
``cli_path``) in the run's workspace and speaks its stream-json protocol. Every message becomes
:class:`~ipa.pods.runners.OutputLine`\\ s on stream ``agent`` with a ``kind``: ``text``,
``thinking``, ``tool_use`` (the tool's name and input), ``tool_result``, ``system``, ``result``.

The job spec (made by the scheduler from the agent type) holds the filled ``prompt`` and the
options: ``model``, ``allowed_tools``, ``permission_mode``, ``max_turns``, ``system_prompt``.

The :class:`~ipa.pods.runners.RunResult`'s ``result`` carries what the pod records next:
``text`` (the final answer), ``usage`` (tokens), ``cost_usd``, ``model``, ``session_id``,
``num_turns`` — and, for a run that did not succeed, ``error``: ``rate_limit`` (with
``resets_at`` when the CLI said), ``auth`` (the CLI cannot log in; the reason says how to),
``cli`` (no result, malformed output, a crash) or ``agent`` (the CLI's own error result).

Cancellation (timeout, interrupt) terminates the CLI process at once, then re-raises.

The CLI runs with the environment of :mod:`.environment` (the system's basics, the CLI's own
``ANTHROPIC_*``/``CLAUDE_*`` settings, what the agents file names, the request's ``env``),
never the server's secrets; see :class:`_Transport`. Text the CLI sends is cleaned of lone
surrogates (:func:`~ipa.domain.clean_text`) before it becomes output lines or a result.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from .runners import OnOutput, OnStarted, RunnerError, RunRequest, RunResult

CLI_ENV = "IPA_CLAUDE_CLI"
"""The environment variable naming the Claude Code CLI to run instead of the bundled one."""


@dataclass(frozen=True)
class ClaudeRunner:
    """Runs a job's prompt through Claude Code (see the module docstring)."""

    name: ClassVar[str] = "claude"

    cli_path: str | None = None

    def check(self, spec: Mapping[str, Any]) -> None:
        check_spec(spec)

    def _cli(self) -> str | None:
        return self.cli_path or os.environ.get(CLI_ENV) or None

    async def run(
        self, request: RunRequest, on_output: OnOutput, *, on_started: OnStarted | None = None
    ) -> RunResult:
        from .claude_session import run_session  # the SDK: imported at the first run

        return await run_session(request, on_output, on_started, self._cli())


def check_spec(spec: Mapping[str, Any]) -> None:
    """Refuse a Claude job spec the CLI could not run (:class:`RunnerError` naming why)."""
    prompt = spec.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RunnerError("a claude job spec needs a non-empty 'prompt'")
    tools = spec.get("allowed_tools", [])
    if not isinstance(tools, list | tuple) or not all(isinstance(t, str) for t in tools):
        raise RunnerError(f"'allowed_tools' must be a list of tool names, got {tools!r}")
    max_turns = spec.get("max_turns")
    if max_turns is not None and (not isinstance(max_turns, int) or max_turns < 1):
        raise RunnerError(f"'max_turns' must be a whole number ≥ 1, got {max_turns!r}")
    for key in ("model", "system_prompt", "permission_mode"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise RunnerError(f"{key!r} must be text, got {spec[key]!r}")
