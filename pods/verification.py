"""*Verify*: the checks a job's work must pass, run in its workspace after the agent.

Each check is a shell command (``sh -c``) run in the workspace with the runner's minimal
environment and a time limit. Its output goes to the run's stream (stream ``verify``) as it
comes; the result of each check is ``{"command", "exit_code", "passed", "output",
"duration_seconds"}`` with the end of its output. A command that is missing exits 127 (the
shell says so), one that hangs is stopped at its time limit and fails with ``exit_code``
``None`` — a clear failure either way, never a hang.
"""

from __future__ import annotations

import time
from typing import Any

import anyio

from .runners import CommandRunner, OnOutput, OutputLine, RunRequest

OUTPUT_TAIL = 4000
"""How much of a check's output (its end) its result keeps."""


async def run_checks(
    commands: tuple[str, ...], request: RunRequest, on_output: OnOutput, *, timeout: float
) -> list[dict[str, Any]]:
    """Run ``commands`` in order in ``request.workspace``; stop at the first that fails."""
    results = []
    for command in commands:
        result = await _check(command, request, on_output, timeout)
        results.append(result)
        if not result["passed"]:
            break
    return results


async def _check(
    command: str, request: RunRequest, on_output: OnOutput, timeout: float
) -> dict[str, Any]:
    captured: list[str] = []

    async def output(lines: list[OutputLine]) -> None:
        captured.extend(line.text for line in lines)
        await on_output([OutputLine(0, "verify", line.text, line.stream) for line in lines])

    await on_output([OutputLine(0, "verify", f"$ {command}", "command")])
    check = RunRequest(run_id=request.run_id, job_id=request.job_id, agent="verify",
                       spec={"command": ["sh", "-c", command]}, workspace=request.workspace,
                       env=request.env)
    begin = time.monotonic()
    exit_code: int | None
    with anyio.move_on_after(timeout) as scope:
        result = await CommandRunner(grace_period=2.0).run(check, output)
    if scope.cancelled_caught:
        exit_code = None
        captured.append(f"[timed out after {timeout:g} s]")
    else:
        exit_code = result.exit_code
    text = "\n".join(captured)
    return {
        "command": command,
        "exit_code": exit_code,
        "passed": exit_code == 0,
        "output": text[-OUTPUT_TAIL:],
        "duration_seconds": round(time.monotonic() - begin, 3),
    }
