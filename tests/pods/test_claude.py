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


SERVER_SECRETS = {
    "IPA_GITHUB_TOKEN": "ghp_github-secret-0001",
    "IPA_JIRA_TOKEN": "jira-secret-0002",
    "IPA_API_KEYS": "alice:api-secret-0003,bob:api-secret-0004",
    "IPA_AUDIT_KEY": "audit-secret-0005",
    "IPA_DATABASE_URL": "postgresql://ipa:db-secret-0006@db.example/ipa",
}


def environ_of(pid: int) -> dict[str, str]:
    """The environment a process started with, as the kernel shows it to anyone who may read
    ``/proc/<pid>/environ`` (the same user: an agent reading another process)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().partition("=")[::2] for item in raw.split(b"\0") if item)


async def test_the_cli_runs_with_an_allow_listed_environment_and_no_server_secret(
    fake: FakeClaude, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = f"other-secret-{os.urandom(8).hex()}"
    for name, value in {**SERVER_SECRETS, "SOME_OTHER_SECRET": other}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-for-the-cli")
    monkeypatch.setenv("LC_TIME", "C")
    fake.script({"*": [{"messages": ["working"], "text": "done"}]})
    pids: list[int] = []
    seen: dict[str, str] = {}
    cmdline = b""

    async def output(batch: list[OutputLine]) -> None:
        nonlocal cmdline
        # The first line (the CLI's init message) comes from the CLI itself, which is still
        # running: it waits for the SDK to close its input after the result.
        if not seen:
            seen.update(environ_of(pids[0]))
            cmdline = Path(f"/proc/{pids[0]}/cmdline").read_bytes()

    req = RunRequest(run_id="r1", job_id="j1", agent="developer", workspace=tmp_path,
                     spec={"prompt": "Agent type: developer\nDo it."},
                     env={"NAMED_BY_AGENTS_FILE": "named-value"})
    with anyio.fail_after(30):
        result = await ClaudeRunner(cli_path=str(fake.cli)).run(req, output,
                                                                 on_started=pids.append)

    assert result.succeeded
    assert seen["PATH"] == os.environ["PATH"] and seen["HOME"] == str(tmp_path / "home")
    assert seen["ANTHROPIC_API_KEY"] == "sk-ant-for-the-cli" and seen["LC_TIME"] == "C"
    assert seen["NAMED_BY_AGENTS_FILE"] == "named-value"
    assert seen["CLAUDE_CODE_ENTRYPOINT"] == "sdk-py"
    everything = "\0".join(f"{k}={v}" for k, v in seen.items()) + cmdline.decode()
    for name, value in {**SERVER_SECRETS, "SOME_OTHER_SECRET": other}.items():
        assert name not in seen
        assert value not in everything
    assert not [name for name in seen if name.startswith("IPA_")]


async def test_lone_surrogates_in_the_clis_json_become_replacement_characters(
    fake: FakeClaude, tmp_path: Path
) -> None:
    # The fake writes JSON with ensure_ascii: "\ud800" reaches the SDK as an escape.
    fake.script({"*": [{"messages": ["think \ud800 more", {"tool": "Edit",
                                                           "input": {"f": "\udfff"}}],
                        "text": "answer \ud800\x00 kept NUL", "model": "m\udc00"}]})

    result, lines, _ = await run(fake, tmp_path)

    texts = [line.text for line in lines]
    assert "think \ufffd more" in texts
    assert result.result["text"] == "answer \ufffd\x00 kept NUL"
    assert result.result["model"] == "m\ufffd"
    for text in [*texts, result.result["text"], result.result["model"]]:
        text.encode("utf-8")  # no lone surrogate left anywhere
