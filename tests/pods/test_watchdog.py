"""The agents' watchdog (``pods/watchdog.py``): an agent runs while its node keeps touching
the alive file, stops once the file is older than the TTL, and otherwise behaves like the
agent itself (exit status, signals)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from ipa.pods import watchdog

LOOP = [sys.executable, "-c",
        "import time\nwhile True:\n    print('working', flush=True)\n    time.sleep(0.05)"]


def start(alive: Path, ttl: float, command: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([*watchdog.command(alive, ttl), *command], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_an_agent_runs_while_its_node_beats_and_stops_when_it_falls_silent(tmp_path) -> None:
    alive = tmp_path / "alive"
    watchdog.beat(alive)
    with start(alive, 0.6, LOOP) as process:
        began = time.monotonic()
        while time.monotonic() - began < 1.5:  # the node beats: the agent goes on
            watchdog.beat(alive)
            time.sleep(0.1)
            assert process.poll() is None
        silent = time.monotonic()
        code = process.wait(timeout=10)  # the node falls silent
        stopped_after = time.monotonic() - silent
        assert "has not held its leases" in process.stderr.read()
        assert "working" in process.stdout.read()
    assert 0.5 < stopped_after < 3.0
    assert code == -signal.SIGTERM


def test_the_agents_exit_status_and_output_come_through(tmp_path) -> None:
    alive = tmp_path / "alive"
    watchdog.beat(alive)
    with start(alive, 30, [sys.executable, "-c", "print('out'); raise SystemExit(3)"]) as process:
        assert process.wait(timeout=10) == 3
        assert process.stdout.read() == "out\n"


def test_a_terminate_reaches_the_agent(tmp_path) -> None:
    alive = tmp_path / "alive"
    watchdog.beat(alive)
    with start(alive, 30, LOOP) as process:
        assert process.stdout.readline() == "working\n"
        process.terminate()  # what a runner does to the process it started
        assert process.wait(timeout=10) == -signal.SIGTERM  # as if the agent were the child


def test_a_command_that_cannot_start_is_exit_127_with_why(tmp_path) -> None:
    alive = tmp_path / "alive"
    watchdog.beat(alive)
    with start(alive, 30, [str(tmp_path / "no-such-agent")]) as process:
        assert process.wait(timeout=10) == 127
        assert "cannot start" in process.stderr.read()
