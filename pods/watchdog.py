"""Agents stop when their node stops holding its leases: no job attempt runs on two nodes.

On a node of a cluster, every agent process (a command job, the Claude Code CLI) is started
under this small watchdog: ``python -I -S watchdog.py ALIVE TTL -- COMMAND...``. The node
touches ``ALIVE`` after each heartbeat the database accepted (``Supervisor``); the watchdog
runs COMMAND as its child, with the same input and output, and:

- passes on SIGTERM, SIGINT and SIGHUP to it, and ends as it ended (its exit status, or the
  signal that killed it);
- stops it (its process group: SIGTERM, then SIGKILL 5 s later) once ``ALIVE`` is older than
  ``TTL`` seconds, that is once the node has not heart-beaten for about a lease TTL: it hangs
  (SIGSTOP, a stuck machine) or cannot reach the database. By then the other nodes take its
  tasks over; its agents must not work on beside the new owner's (they could record nothing:
  the append is fenced, but they would still spend tokens and edit files).

``TTL`` is a little shorter than the lease TTL, so an agent is gone before another node claims
its task. The watchdog imports nothing but the standard library and starts in ~20 ms.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CHECK_EVERY = 0.25  # seconds between two looks at the child and the file
GRACE = 5.0  # seconds between SIGTERM and SIGKILL


def command(alive: Path, ttl: float) -> tuple[str, ...]:
    """The prefix that runs a command under the watchdog (for ``RunRequest.watchdog``)."""
    return (sys.executable, "-I", "-S", str(Path(__file__).resolve()), str(alive),
            f"{ttl:g}", "--")


def beat(alive: Path) -> None:
    """Say that the node holds its leases now (its heartbeat was accepted)."""
    alive.parent.mkdir(parents=True, exist_ok=True)
    alive.touch()


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print("usage: watchdog.py ALIVE TTL -- COMMAND...", file=sys.stderr)
        return 2
    alive, ttl, command_ = Path(argv[0]), float(argv[1]), argv[3:]
    if os.getpgid(0) != os.getpid():
        os.setpgid(0, 0)  # a group of its own (the CLI's runner starts it in ipa's group)
    try:
        child = subprocess.Popen(command_)  # same stdin, stdout, stderr, process group
    except OSError as e:
        print(f"ipa watchdog: cannot start {command_[0]}: {e}", file=sys.stderr, flush=True)
        return 127

    def forward(signum: int, frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    stopping_since: float | None = None
    while True:
        try:
            code = child.wait(timeout=CHECK_EVERY)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None:
            if code < 0:  # killed by a signal: die of the same, as the agent would have
                signal.signal(-code, signal.SIG_DFL)
                os.kill(os.getpid(), -code)
            return code if code >= 0 else 128 - code
        now = time.time()
        if stopping_since is None:
            try:
                silent = now - alive.stat().st_mtime
            except OSError:
                silent = float("inf")
            if silent > ttl:
                print(f"ipa watchdog: the node has not held its leases for {silent:.1f} s: "
                      "stopping the agent", file=sys.stderr, flush=True)
                stopping_since = now
                _signal_group(signal.SIGTERM)
        elif now - stopping_since > GRACE:
            _signal_group(signal.SIGKILL)


def _signal_group(signum: int) -> None:
    """The child and whatever it started: the watchdog's own group. SIGKILL takes the
    watchdog too (its parent sees it killed, as the agent is)."""
    if signum == signal.SIGKILL:
        os.killpg(0, signum)
        return
    old = signal.signal(signum, signal.SIG_IGN)
    try:
        os.killpg(0, signum)
    finally:
        signal.signal(signum, old)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
