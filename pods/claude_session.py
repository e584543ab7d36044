"""One Claude Code session through ``claude-agent-sdk``: the CLI started with the allowed
environment, its messages turned into output lines, its result into a :class:`RunResult`.

Imported by :meth:`ipa.pods.claude.ClaudeRunner.run` at a server's first Claude run, not at
start: the SDK and the MCP types under it take about a second to import.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import anyio
from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKError,
    CLIConnectionError,
    CLIJSONDecodeError,
    CLINotFoundError,
    ProcessError,
    RateLimitEvent,
    ResultMessage,
    SystemMessage,
    TextBlock,
    ThinkingBlock,
    ToolResultBlock,
    ToolUseBlock,
    UserMessage,
    query,
)
from claude_agent_sdk._internal.transport.subprocess_cli import SubprocessCLITransport

from ipa.domain import clean_text

from .claude import CLI_ENV, check_spec
from .environment import is_inherited
from .priority import lower
from .runners import OnOutput, OnStarted, OutputLine, RunRequest, RunResult

LOGIN_HINT = (
    "log in once with `claude /login` (or run `claude setup-token`), or set ANTHROPIC_API_KEY "
    "in the environment of `ipa serve`"
)
_RATE_LIMIT = re.compile(r"rate.?limit|overloaded|too many requests|\b429\b|\b529\b", re.I)
_AUTH = re.compile(
    r"invalid api key|authentication|not logged in|/login|unauthori[sz]ed|oauth|\b401\b", re.I
)
_MAX_TEXT = 16_000
_ENV_PROGRAM = next((p for p in ("/usr/bin/env", "/bin/env") if os.path.exists(p)), "env")


class _Transport(SubprocessCLITransport):
    """The SDK's subprocess transport, telling us the CLI's pid, starting it with only the
    allowed environment, and stopping it at once when the run is cancelled instead of waiting
    for it to notice its closed input.

    The SDK (``connect()``) starts the CLI with the whole ``os.environ`` merged under the
    options' ``env``, and offers no way to leave a variable out. So the command is prefixed
    with ``env -u NAME ...`` for every variable of the server that the allow-list does not
    admit: ``env`` execs the CLI (same pid) with those removed. Only *names* go on the command
    line, never values (argv is world-readable in ``/proc``); the values never reach the
    CLI's environment. The alternatives were worse: ``env -i NAME=value`` puts the allowed
    values (the Anthropic key) in argv, swapping ``os.environ`` during ``connect()`` races
    every other thread and pod, and copying ``connect()`` forks the SDK. The names are read
    from ``os.environ`` in the same synchronous step in which the SDK reads it.
    """

    def __init__(self, *, on_started: OnStarted | None, watchdog: tuple[str, ...] = (),
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._on_started = on_started
        self._watchdog = watchdog
        # Until the CLI gives its result, closing means the run was cut short (cancelled): the
        # CLI is stopped at once. The SDK closes the transport itself as a cancellation passes
        # through its generator, before ``ClaudeRunner.run`` could say so; a flag set only there
        # came too late, and the CLI lived on for the SDK's 5 s grace.
        self.stop_on_close = True

    def _build_command(self) -> list[str]:
        command = super()._build_command()
        program = shutil.which(command[0])
        if program is None:
            raise CLINotFoundError(f"Claude Code not found at: {command[0]}")
        if "=" in program:  # env would take it for a variable
            raise CLIConnectionError(f"cannot start {program!r}: its path contains '='")
        given = self._options.env
        # PWD: the SDK sets it to the workspace; the rest of what it sets is CLAUDE_*.
        drop = sorted(name for name in os.environ if name not in given and name != "PWD"
                      and not is_inherited(name, claude=True))
        unset = [arg for name in drop for arg in ("-u", name)]
        return [*self._watchdog, _ENV_PROGRAM, *unset, "--", program, *command[1:]]

    async def connect(self) -> None:
        await super().connect()
        process = self._process
        if process is not None:
            lower(process.pid)
        if process is not None and self._on_started is not None:
            ready = self._on_started(process.pid)
            if inspect.isawaitable(ready):
                await ready

    async def close(self) -> None:
        process = self._process
        if self.stop_on_close and process is not None and process.returncode is None:
            try:
                process.terminate()
            except ProcessLookupError:
                pass
        await super().close()


async def run_session(
    request: RunRequest, on_output: OnOutput, on_started: OnStarted | None,
    cli_path: str | None,
) -> RunResult:
    """Run ``request``'s prompt through Claude Code to its result (see ``ipa.pods.claude``)."""
    options = _options(request.spec, str(request.workspace), cli_path, request.env)
    prompt: str = request.spec["prompt"]
    transport = _Transport(prompt=prompt, options=options, on_started=on_started,
                           watchdog=request.watchdog)
    lines = _Lines()
    result: ResultMessage | None = None
    rate_limit: dict[str, Any] | None = None
    model = str(request.spec.get("model") or "")
    begin = time.monotonic()
    messages = query(prompt=prompt, options=options, transport=transport)
    try:
        async for message in messages:
            if isinstance(message, AssistantMessage):
                model = message.model or model
            elif isinstance(message, ResultMessage):
                result = message
                transport.stop_on_close = False  # the CLI ends on its own now
            elif isinstance(message, RateLimitEvent):
                info = message.rate_limit_info
                if info.status == "rejected":
                    rate_limit = {"resets_at": _iso(info.resets_at)}
            await on_output(lines.of(message))
    except anyio.get_cancelled_exc_class():
        transport.stop_on_close = True
        with anyio.CancelScope(shield=True):
            await messages.aclose()
        raise
    except CLINotFoundError as e:
        return _failure("cli", f"Claude Code CLI not found ({e}); set {CLI_ENV} to its path",
                        begin, model, result)
    except CLIJSONDecodeError as e:
        return _failure("cli", f"malformed output from the Claude Code CLI: {e}",
                        begin, model, result)
    except ProcessError as e:
        if result is None:
            return _failure("cli", f"the Claude Code CLI exited (status {e.exit_code}) "
                                   "before giving a result", begin, model, result)
    except ClaudeSDKError as e:
        return _failure("cli", f"the Claude Code CLI failed: {e}", begin, model, result)
    finally:
        await messages.aclose()
    if result is None:
        return _failure("cli", "the Claude Code CLI exited without a result", begin, model,
                        result)
    return _clean(_outcome(result, rate_limit, model, time.monotonic() - begin))


def _options(
    spec: Mapping[str, Any], cwd: str | None, cli_path: str | None,
    env: Mapping[str, str] | None = None,
) -> ClaudeAgentOptions:
    check_spec(spec)
    return ClaudeAgentOptions(
        cwd=cwd,
        model=spec.get("model"),
        allowed_tools=list(spec.get("allowed_tools", [])),
        permission_mode=spec.get("permission_mode") or None,
        max_turns=spec.get("max_turns"),
        system_prompt=spec.get("system_prompt"),
        cli_path=cli_path,
        env=dict(env or {}),
    )


class _Lines:
    """Turns SDK messages into numbered output lines."""

    def __init__(self) -> None:
        self.seq = 0

    def _line(self, kind: str, text: str) -> OutputLine:
        self.seq += 1
        return OutputLine(self.seq, "agent", clean_text(text[:_MAX_TEXT]), kind)

    def of(self, message: object) -> list[OutputLine]:
        if isinstance(message, AssistantMessage | UserMessage):
            content = message.content
            if isinstance(content, str):
                return [self._line("text", content)]
            return [self._block(block) for block in content]
        if isinstance(message, SystemMessage):
            return [self._line("system", message.subtype)]
        if isinstance(message, ResultMessage):
            status = "error" if message.is_error else "success"
            return [self._line("result", f"{status}: {message.result or message.subtype}")]
        if isinstance(message, RateLimitEvent):
            return [self._line("system", f"rate limit {message.rate_limit_info.status}")]
        return []

    def _block(self, block: object) -> OutputLine:
        if isinstance(block, TextBlock):
            return self._line("text", block.text)
        if isinstance(block, ThinkingBlock):
            return self._line("thinking", block.thinking)
        if isinstance(block, ToolUseBlock):
            return self._line("tool_use", f"{block.name} {json.dumps(block.input)}")
        if isinstance(block, ToolResultBlock):
            content = block.content
            if not isinstance(content, str):
                content = json.dumps(content)
            prefix = "error: " if block.is_error else ""
            return self._line("tool_result", prefix + (content or ""))
        return self._line("other", type(block).__name__)


def _usage(result: ResultMessage | None) -> dict[str, int]:
    usage = (result.usage if result is not None else None) or {}

    def count(key: str) -> int:
        value = usage.get(key, 0)
        return value if isinstance(value, int) and value >= 0 else 0

    return {
        "input_tokens": count("input_tokens"),
        "output_tokens": count("output_tokens"),
        "cache_read_tokens": count("cache_read_input_tokens"),
        "cache_write_tokens": count("cache_creation_input_tokens"),
    }


def _summary(result: ResultMessage | None, model: str) -> dict[str, Any]:
    cost = result.total_cost_usd if result is not None else None
    return {
        "text": (result.result or "") if result is not None else "",
        "usage": _usage(result),
        "cost_usd": float(cost) if isinstance(cost, int | float) and cost >= 0 else 0.0,
        "model": model,
        "session_id": result.session_id if result is not None else None,
        "num_turns": result.num_turns if result is not None else 0,
    }


def _failure(kind: str, reason: str, begin: float, model: str,
             result: ResultMessage | None) -> RunResult:
    return _clean(RunResult(exit_code=None, succeeded=False, reason=reason,
                            duration_seconds=time.monotonic() - begin,
                            result={**_summary(result, model), "error": kind}))


def _clean(outcome: RunResult) -> RunResult:
    """The outcome with lone surrogates (JSON ``"\\ud800"`` from the CLI) made U+FFFD."""
    return replace(outcome, reason=clean_text(outcome.reason), result=clean_text(outcome.result))


def _outcome(result: ResultMessage, rate_limit: dict[str, Any] | None, model: str,
             duration: float) -> RunResult:
    summary = _summary(result, model)
    if not result.is_error:
        return RunResult(0, True, None, duration, summary)
    text = " ".join(filter(None, [result.result, *(result.errors or [])])) or result.subtype
    status = result.api_error_status
    if status in (429, 529) or rate_limit is not None or _RATE_LIMIT.search(text):
        return RunResult(None, False, f"rate limited: {text}", duration,
                         {**summary, "error": "rate_limit", **(rate_limit or {})})
    if status in (401, 403) or _AUTH.search(text):
        return RunResult(None, False, f"Claude Code cannot authenticate ({text}): {LOGIN_HINT}",
                         duration, {**summary, "error": "auth"})
    return RunResult(None, False, f"the agent ended with an error: {text}", duration,
                     {**summary, "error": "agent"})


def _iso(timestamp: int | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat()
