"""The Claude Code runner against a fake CLI that speaks the stream-json protocol."""

from __future__ import annotations

import os
import time
from pathlib import Path

import anyio
import pytest

from ipa.pods import ClaudeRunner, OutputLine, RunnerError, RunRequest, RunResult

from ..fakes.claude import FakeClaude

pytestmark = pytest.mark.anyio


@pytest.fixture
def fake(tmp_path: Path) -> FakeClaude:
    return FakeClaude(tmp_path / "fake")


def request(workspace: Path, prompt: str = "Agent type: developer\nDo it.", **spec) -> RunRequest:
    return RunRequest(run_id="r1", job_id="j1", agent="developer",
                      spec={"prompt": prompt, "max_turns": 3, **spec}, workspace=workspace)


async def run(fake: FakeClaude, workspace: Path, **spec) -> tuple[RunResult, list[OutputLine],
                                                                    list[int]]:
    lines: list[OutputLine] = []
    pids: list[int] = []

    async def output(batch: list[OutputLine]) -> None:
        lines.extend(batch)

    result = await ClaudeRunner(cli_path=str(fake.cli)).run(
        request(workspace, **spec), output, on_started=pids.append
    )
    return result, lines, pids


async def test_a_run_streams_every_message_and_reports_usage_and_cost(
    fake: FakeClaude, tmp_path: Path
) -> None:
    fake.script({"developer": [{
        "messages": ["Looking at the code", {"tool": "Edit", "input": {"file": "a.py"}},
                     {"tool_result": "edited"}],
        "write": {"a.py": "x = 1\n"},
        "text": "Changed a.py", "usage": {"input_tokens": 1200, "output_tokens": 340,
                                          "cache_read_input_tokens": 50},
        "cost": 0.0123, "model": "claude-test",
    }]})

    result, lines, pids = await run(fake, tmp_path)

    assert result.succeeded and result.reason is None
    assert result.result["text"] == "Changed a.py"
    assert result.result["usage"] == {"input_tokens": 1200, "output_tokens": 340,
                                      "cache_read_tokens": 50, "cache_write_tokens": 0}
    assert result.result["cost_usd"] == pytest.approx(0.0123)
    assert result.result["model"] == "claude-test"
    assert [line.kind for line in lines] == ["system", "text", "tool_use", "tool_result",
                                             "result"]
    assert lines[2].text == 'Edit {"file": "a.py"}'
    assert [line.seq for line in lines] == [1, 2, 3, 4, 5]
    assert all(line.stream == "agent" for line in lines)
    assert len(pids) == 1 and pids[0] > 0
    assert (tmp_path / "a.py").read_text() == "x = 1\n"  # it ran in the workspace
    [logged] = fake.runs()
    assert logged["cwd"] == str(tmp_path) and "Do it." in logged["prompt"]
    assert "--max-turns" in logged["argv"]


async def test_an_error_result_fails_with_the_agents_reason(fake, tmp_path) -> None:
    fake.script({"*": [{"error": "agent"}]})
    result, _, _ = await run(fake, tmp_path)
    assert not result.succeeded
    assert result.result["error"] == "agent"
    assert "reached max turns" in result.reason


async def test_a_rate_limit_is_recognised_with_its_reset_time(fake, tmp_path) -> None:
    resets = int(time.time()) + 7200
    fake.script({"*": [{"error": "rate_limit", "resets_at": resets}]})
    result, _, _ = await run(fake, tmp_path)
    assert result.result["error"] == "rate_limit"
    assert result.result["resets_at"].startswith(time.strftime("%Y-", time.gmtime(resets)))
    assert result.reason.startswith("rate limited")


async def test_a_cli_that_cannot_log_in_says_how_to(fake, tmp_path) -> None:
    fake.script({"*": [{"error": "auth"}]})
    result, _, _ = await run(fake, tmp_path)
    assert result.result["error"] == "auth"
    assert "cannot authenticate" in result.reason and "/login" in result.reason
    assert "ANTHROPIC_API_KEY" in result.reason


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        ({"crash": True}, "exited (status 3) before giving a result"),
        ({"malformed": True}, "malformed output from the Claude Code CLI"),
        ({"no_result": True}, "exited without a result"),
    ],
)
async def test_broken_cli_output_is_a_clear_failure(fake, tmp_path, step, reason) -> None:
    fake.script({"*": [{"messages": ["working"], **step}]})
    result, lines, _ = await run(fake, tmp_path)
    assert not result.succeeded and result.result["error"] == "cli"
    assert reason in result.reason


async def test_a_missing_cli_is_named_with_the_setting_to_fix(tmp_path) -> None:
    runner = ClaudeRunner(cli_path=str(tmp_path / "no-such-claude"))

    async def output(batch) -> None:
        pass

    result = await runner.run(request(tmp_path), output)
    assert not result.succeeded and "IPA_CLAUDE_CLI" in result.reason


async def test_cancelling_a_run_stops_the_cli_at_once(fake, tmp_path) -> None:
    fake.script({"*": [{"messages": ["thinking"], "sleep": 60}]})
    pids: list[int] = []
    seen = anyio.Event()

    async def output(batch) -> None:
        seen.set()

    began = time.monotonic()
    with anyio.move_on_after(30):
        async with anyio.create_task_group() as tg:
            async def go() -> None:
                await ClaudeRunner(cli_path=str(fake.cli)).run(request(tmp_path), output,
                                                               on_started=pids.append)
            tg.start_soon(go)
            await seen.wait()
            tg.cancel_scope.cancel()
    assert time.monotonic() - began < 30  # not the fake's 60 s, nor the SDK's 5 s grace
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"prompt": ""}, "non-empty 'prompt'"),
        ({"prompt": "x", "allowed_tools": "Bash"}, "'allowed_tools' must be a list"),
        ({"prompt": "x", "max_turns": 0}, "'max_turns' must be a whole number"),
        ({"prompt": "x", "model": 4}, "'model' must be text"),
    ],
)
def test_malformed_specs_are_refused_before_anything_runs(spec, message) -> None:
    with pytest.raises(RunnerError, match=message):
        ClaudeRunner().check(spec)
