"""The command runner against real subprocesses: output, results, environment, stopping."""

from __future__ import annotations

import os
import stat
import sys
import textwrap
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest

from ipa.pods.runners import (
    MAX_LINE_BYTES,
    AgentRunner,
    CommandRunner,
    OutputLine,
    RunnerError,
    RunRequest,
    RunResult,
    runner_for,
)

pytestmark = pytest.mark.anyio

PY = sys.executable


def python(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def request(workspace: Path, command: list[str], **spec: Any) -> RunRequest:
    return RunRequest(
        run_id="run-1",
        job_id="job-1",
        agent="developer",
        spec={"command": command, **spec},
        workspace=workspace,
    )


class Recorder:
    """Collects a run's callbacks; ``when`` lets a test act on a line as it arrives."""

    def __init__(self, when: Callable[[OutputLine], None] | None = None) -> None:
        self.batches: list[list[OutputLine]] = []
        self.pid: int | None = None
        self._when = when

    async def on_output(self, lines: list[OutputLine]) -> None:
        self.batches.append(lines)
        if self._when is not None:
            for line in lines:
                self._when(line)

    def on_started(self, pid: int) -> None:
        self.pid = pid

    @property
    def lines(self) -> list[OutputLine]:
        return [line for batch in self.batches for line in batch]

    def texts(self, stream: str = "stdout") -> list[str]:
        return [line.text for line in self.lines if line.stream == stream]


async def run(
    workspace: Path,
    command: list[str],
    runner: CommandRunner | None = None,
    recorder: Recorder | None = None,
    **spec: Any,
) -> tuple[RunResult, Recorder]:
    recorder = recorder or Recorder()
    with anyio.fail_after(30):
        result = await (runner or CommandRunner()).run(
            request(workspace, command, **spec), recorder.on_output, on_started=recorder.on_started
        )
    return result, recorder


def not_running(pid: int) -> bool:
    """Gone, or a zombie: orphans are reaped by init, and some container inits never do."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat_line = f.read()
    return stat_line[stat_line.rindex(b")") + 2 :].split()[0] == b"Z"


def cancel_on(text: str, scope: anyio.CancelScope) -> Callable[[OutputLine], None]:
    def when(line: OutputLine) -> None:
        if line.text == text:
            scope.cancel()

    return when


# Output


async def test_lines_of_both_streams_arrive_in_order_numbered_from_one(tmp_path: Path) -> None:
    script = """
        import sys
        for i in range(10):
            print(f"out {i}", flush=True)
            print(f"err {i}", file=sys.stderr, flush=True)
    """
    result, out = await run(tmp_path, python(script))

    assert result.succeeded
    assert [line.seq for line in out.lines] == list(range(1, 21))
    assert out.texts("stdout") == [f"out {i}" for i in range(10)]
    assert out.texts("stderr") == [f"err {i}" for i in range(10)]
    assert result.result == {"exit_code": 0, "signal": None, "lines": 20}


async def test_a_chatty_process_is_delivered_in_far_fewer_batches_than_lines(
    tmp_path: Path,
) -> None:
    result, out = await run(tmp_path, python("for i in range(5000): print(i)"))

    assert out.texts() == [str(i) for i in range(5000)]
    assert [line.seq for line in out.lines] == list(range(1, 5001))
    assert len(out.batches) <= 250
    assert max(len(batch) for batch in out.batches) <= CommandRunner().batch_lines


async def test_a_last_line_without_newline_is_delivered(tmp_path: Path) -> None:
    _, out = await run(tmp_path, ["printf", "first\\nlast"])

    assert out.texts() == ["first", "last"]


async def test_crlf_line_endings_are_stripped(tmp_path: Path) -> None:
    _, out = await run(tmp_path, ["printf", "one\\r\\ntwo\\r\\n"])

    assert out.texts() == ["one", "two"]


async def test_a_very_long_line_is_split_into_pieces_not_dropped(tmp_path: Path) -> None:
    script = """
        import sys
        sys.stdout.write("x" * 200_000 + "\\n" + "é" * 100_000 + "\\nend\\n")
    """
    _, out = await run(tmp_path, python(script))

    texts = out.texts()
    assert texts[-1] == "end"
    assert all(len(text.encode()) <= MAX_LINE_BYTES for text in texts)
    assert "".join(texts[:-1]) == "x" * 200_000 + "é" * 100_000  # no character cut in two
    assert len(texts) > 4


async def test_invalid_utf8_is_replaced(tmp_path: Path) -> None:
    script = r"""
        import sys
        sys.stdout.buffer.write(b"ok \xff\xfe end\n")
    """
    _, out = await run(tmp_path, python(script))

    assert out.texts() == ["ok \ufffd\ufffd end"]


async def test_stdin_from_the_spec_is_fed_and_closed(tmp_path: Path) -> None:
    script = """
        import sys
        print(sys.stdin.read().upper())
    """
    _, out = await run(tmp_path, python(script), stdin="hello")

    assert out.texts() == ["HELLO"]


async def test_without_stdin_in_the_spec_the_process_reads_end_of_input(tmp_path: Path) -> None:
    _, out = await run(tmp_path, python("import sys; print(repr(sys.stdin.read()))"))

    assert out.texts() == ["''"]


# Results


async def test_exit_status_zero_succeeds(tmp_path: Path) -> None:
    result, out = await run(tmp_path, ["true"])

    assert result.succeeded
    assert result.exit_code == 0
    assert result.reason is None
    assert result.duration_seconds >= 0
    assert out.lines == []


async def test_a_non_zero_exit_status_fails_with_it_as_reason(tmp_path: Path) -> None:
    result, _ = await run(tmp_path, python("raise SystemExit(3)"))

    assert not result.succeeded
    assert result.exit_code == 3
    assert result.reason == "exited with status 3"
    assert result.result["exit_code"] == 3


async def test_a_process_killed_by_a_signal_fails_naming_it(tmp_path: Path) -> None:
    result, _ = await run(tmp_path, python("import os, signal; os.kill(os.getpid(), 9)"))

    assert not result.succeeded
    assert result.exit_code is None
    assert result.reason == "killed by signal SIGKILL"
    assert result.result["signal"] == "SIGKILL"


async def test_a_missing_executable_is_a_failed_result(tmp_path: Path) -> None:
    out = Recorder()
    result, _ = await run(tmp_path, ["no-such-program-ipa", "x"], recorder=out)

    assert not result.succeeded
    assert result.exit_code is None
    assert result.reason == "cannot start 'no-such-program-ipa': No such file or directory"
    assert out.pid is None


async def test_a_file_that_is_not_executable_is_a_failed_result(tmp_path: Path) -> None:
    program = tmp_path / "tool"
    program.write_text("#!/bin/sh\necho hi\n")
    program.chmod(stat.S_IRUSR | stat.S_IWUSR)

    result, _ = await run(tmp_path, [str(program)])

    assert not result.succeeded
    assert result.reason == f"cannot start {str(program)!r}: Permission denied"


async def test_a_missing_workspace_is_a_failed_result_naming_it(tmp_path: Path) -> None:
    result, _ = await run(tmp_path / "gone", ["true"])

    assert not result.succeeded
    assert result.reason == f"cannot start 'true': No such file or directory ({tmp_path}/gone)"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({}, "no 'command'"),
        ({"command": "echo hi"}, "not a string: no shell"),
        ({"command": []}, "'command' is empty"),
        ({"command": ["echo", 1]}, "'command' must be a list of strings"),
        ({"command": {"echo": "hi"}}, "'command' must be a list of strings"),
        ({"command": ["echo"], "env": {"A": 1}}, "'env' must map strings to strings"),
        ({"command": ["echo"], "env": ["A=1"]}, "'env' must map strings to strings"),
        ({"command": ["echo"], "stdin": b"x"}, "'stdin' must be a string, got bytes"),
    ],
)
async def test_a_malformed_spec_is_refused_before_anything_runs(
    tmp_path: Path, spec: Mapping[str, Any], message: str
) -> None:
    out = Recorder()
    req = RunRequest(run_id="r", job_id="j", agent="a", spec=spec, workspace=tmp_path)

    with pytest.raises(RunnerError, match=message):
        CommandRunner().check(spec)
    with pytest.raises(RunnerError, match=message):
        await CommandRunner().run(req, out.on_output, on_started=out.on_started)
    assert out.pid is None


# Environment


async def test_the_process_runs_in_the_workspace(tmp_path: Path) -> None:
    _, out = await run(tmp_path, python("import os; print(os.getcwd())"))

    assert out.texts() == [os.path.realpath(tmp_path)]


async def test_the_environment_is_minimal_plus_spec_and_request_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IPA_SECRET_FOR_TEST", "do not leak")
    script = """
        import os
        for name in ("FROM_SPEC", "BOTH", "IPA_SECRET_FOR_TEST"):
            print(name, os.environ.get(name))
        print("PATH" in os.environ)
    """
    req = RunRequest(
        run_id="r",
        job_id="j",
        agent="a",
        spec={"command": python(script), "env": {"FROM_SPEC": "s", "BOTH": "spec"}},
        workspace=tmp_path,
        env={"BOTH": "request"},
    )
    out = Recorder()

    with anyio.fail_after(30):
        await CommandRunner().run(req, out.on_output)

    assert out.texts() == ["FROM_SPEC s", "BOTH request", "IPA_SECRET_FOR_TEST None", "True"]


async def test_surrogate_bytes_in_output_become_replacement_characters_and_nul_stays(
    tmp_path: Path,
) -> None:
    # A UTF-8 encoded surrogate (ED A0 80) is not UTF-8: decoding never yields a lone
    # surrogate, so command output needs no further cleaning before it becomes events.
    _, out = await run(tmp_path, python(r"""
        import sys
        sys.stdout.buffer.write(b"a\xed\xa0\x80b\x00c\n")
    """))

    assert out.texts() == ["a\ufffd\ufffd\ufffdb\x00c"]


async def test_on_started_gets_the_pid_of_the_running_process_before_any_output(
    tmp_path: Path,
) -> None:
    seen: list[str] = []

    async def on_started(pid: int) -> None:
        os.kill(pid, 0)  # running
        await anyio.sleep(0.1)  # a slow start record must still come before the output
        seen.append(f"started {pid}")

    async def on_output(lines: list[OutputLine]) -> None:
        seen.extend(line.text for line in lines)

    with anyio.fail_after(30):
        await CommandRunner().run(
            request(tmp_path, python("import os; print(os.getpid())")),
            on_output,
            on_started=on_started,
        )

    pid = seen[0].split()[1]
    assert seen == [f"started {pid}", pid]


# Stopping


async def test_a_timeout_kills_the_process_and_leaves_none_behind(tmp_path: Path) -> None:
    out = Recorder()
    with anyio.move_on_after(0.5) as scope:
        await run(tmp_path, python("import time; time.sleep(1000)"), recorder=out)

    assert scope.cancelled_caught
    assert out.pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(out.pid, 0)


async def test_cancellation_is_re_raised_to_the_caller(tmp_path: Path) -> None:
    with pytest.raises(TimeoutError):
        with anyio.fail_after(0.5):
            await CommandRunner().run(request(tmp_path, ["sleep", "1000"]), Recorder().on_output)


async def test_output_printed_while_stopping_is_delivered(tmp_path: Path) -> None:
    script = """
        import signal, sys, time
        def bye(*_):
            print("bye", flush=True)
            sys.exit(0)
        signal.signal(signal.SIGTERM, bye)
        print("ready", flush=True)
        time.sleep(1000)
    """
    with anyio.CancelScope() as scope:
        out = Recorder(when=cancel_on("ready", scope))
        await run(tmp_path, python(script), runner=CommandRunner(grace_period=20), recorder=out)

    assert out.texts() == ["ready", "bye"]
    assert out.pid is not None and not_running(out.pid)


async def test_a_process_ignoring_sigterm_is_killed_after_the_grace_period(
    tmp_path: Path,
) -> None:
    script = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(1000)
    """
    grace = 0.3
    cancelled_at = 0.0

    def when(line: OutputLine) -> None:
        nonlocal cancelled_at
        if line.text == "ready":
            cancelled_at = anyio.current_time()
            scope.cancel()

    with anyio.CancelScope() as scope:
        out = Recorder(when=when)
        await run(tmp_path, python(script), CommandRunner(grace_period=grace), out)

    assert anyio.current_time() - cancelled_at >= grace
    assert out.pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(out.pid, 0)


async def test_grandchildren_in_the_process_group_are_killed_on_cancel(tmp_path: Path) -> None:
    with anyio.CancelScope() as scope:
        out = Recorder(when=lambda line: scope.cancel())
        await run(tmp_path, ["sh", "-c", "sleep 1000 & echo $!; wait"], recorder=out)

    grandchild = int(out.texts()[0])
    assert not_running(grandchild)
    assert out.pid is not None and not_running(out.pid)


async def test_a_process_left_running_by_the_command_is_stopped_when_it_exits(
    tmp_path: Path,
) -> None:
    # The background sleep keeps stdout open: the run must still end, and take it down.
    result, out = await run(tmp_path, ["sh", "-c", "sleep 1000 & echo $!"])

    assert result.succeeded
    assert not_running(int(out.texts()[0]))


async def test_a_callback_error_stops_the_process_and_reaches_the_caller(
    tmp_path: Path,
) -> None:
    class StoreDown(Exception):
        pass

    pids: list[int] = []

    async def on_output(lines: list[OutputLine]) -> None:
        raise StoreDown("append failed")

    script = "import time; print('hi', flush=True); time.sleep(1000)"
    with pytest.raises(StoreDown, match="append failed"), anyio.fail_after(30):
        await CommandRunner().run(
            request(tmp_path, python(script)), on_output, on_started=pids.append
        )
    assert not_running(pids[0])


# Choosing a runner


def test_the_command_runner_is_an_agent_runner() -> None:
    runner: AgentRunner = CommandRunner()

    assert isinstance(runner, AgentRunner)
    assert runner.name == "command"


def test_a_spec_with_a_command_gets_the_command_runner() -> None:
    assert isinstance(runner_for({"command": ["true"]}), CommandRunner)
    assert isinstance(runner_for({"runner": "command", "command": ["true"]}), CommandRunner)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"prompt": "hi"}, "names no 'runner' and has no 'command'"),
        ({"runner": "nope"}, "no runner named 'nope' \\(known: command\\)"),
    ],
)
def test_a_spec_no_runner_can_run_is_refused(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(RunnerError, match=message):
        runner_for(spec)
