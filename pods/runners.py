"""Agent runners: how a job's agent process is run, and what the pod hears of it.

A job runs through an :class:`AgentRunner`. The runner starts the agent in the run's workspace,
reports the process id once it is running (``on_started``), streams what the agent prints as
:class:`OutputLine` batches (``on_output``) and returns a :class:`RunResult`. It touches no
store: the pod records the run's events (in the run's own stream) from these callbacks.

:class:`CommandRunner` runs any executable. Its job spec::

    {"command": ["prog", "arg", ...],   # required: a list of strings, no shell
     "env": {"NAME": "value"},           # optional: added to the environment
     "stdin": "text"}                    # optional: written to stdin, which is then closed

Other keys are left to other layers. A malformed spec raises :class:`RunnerError` before
anything starts; :meth:`CommandRunner.check` runs the same check without running anything.

The process:

- runs with ``cwd`` = the workspace, in a session (and process group) of its own, with a
  minimal environment: the allow-list of :mod:`.environment` (``PATH``, ``HOME``, locale,
  proxies, ...), then the spec's ``env``, then the request's ``env``. Nothing else of the
  server's environment leaks in.
- Its stdout and stderr are read concurrently and split into lines: ``text`` has no trailing
  newline (nor the ``\\r`` of a CRLF), a last line without a newline is still delivered, a line
  longer than :data:`MAX_LINE_BYTES` arrives as several lines of at most that size (cut on a
  character boundary) and bytes that are not UTF-8 become U+FFFD. ``seq`` numbers lines from 1
  in arrival order across both streams; the order within one stream is the process's order.
- Lines are delivered in batches: at most ``batch_lines`` per ``on_output`` call, and a line
  waits at most ``flush_interval`` seconds, so a chatty agent costs one store append per batch,
  not per line. A slow ``on_output`` slows the reading and, once the pipes fill, the agent.
- ``on_started(pid)`` is called (and awaited, if it returns an awaitable) once the process is
  running and before any output is delivered.
- When the process exits, whatever it left running in its process group is stopped too (the
  same way as on cancellation, below): a run never leaves a process behind.

Result: exit status 0 succeeds; another status fails with ``reason`` "exited with status N"; a
process killed by a signal fails with "killed by signal SIGKILL" and ``exit_code`` None. An
executable that cannot be started (missing, not executable, a missing workspace) is a failed
``RunResult`` with ``exit_code`` None and ``reason`` "cannot start 'prog': ...", not an
exception, so the job's retry policy applies. ``result`` is a JSON-able summary:
``{"exit_code": ..., "signal": ..., "lines": ...}``.

Cancellation (the caller's timeout via ``anyio.fail_after``, an interrupt, a cancel): the whole
process group gets SIGTERM, then SIGKILL if anything of it is still running after
``grace_period`` seconds. Output printed up to the end is still delivered (shielded, for at most
another grace period), then the cancellation is re-raised. The runner has no timeout of its own.
An exception from a callback stops the process the same way and reaches the caller as itself.
"""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream, Process
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .environment import inherited
from .priority import lower

__all__ = [
    "MAX_LINE_BYTES",
    "RUNNERS",
    "AgentRunner",
    "CommandRunner",
    "CommandSpec",
    "OutputLine",
    "RunRequest",
    "RunResult",
    "RunnerError",
    "runner_for",
]

MAX_LINE_BYTES = 64 * 1024
"""Longest line delivered whole; a longer one is cut into pieces of at most this many bytes."""

StreamName = Literal["stdout", "stderr", "agent", "verify"]


class RunnerError(Exception):
    """A job cannot be run as specified (a malformed spec, no runner for it)."""


@dataclass(frozen=True)
class RunRequest:
    """One attempt of one job: which agent, with what spec, in which workspace."""

    run_id: str
    job_id: str
    agent: str
    spec: Mapping[str, Any]
    workspace: Path
    env: Mapping[str, str] = field(default_factory=dict)
    watchdog: tuple[str, ...] = ()
    """A command prefix that stops the agent when its node stops holding its leases
    (:mod:`.watchdog`; empty: not a node)."""


@dataclass(frozen=True)
class OutputLine:
    """One line the agent printed (without its newline), numbered across both streams; an
    agent runner's messages come on stream ``agent`` with a ``kind`` (``text``, ``tool_use``...)."""

    seq: int
    stream: StreamName
    text: str
    kind: str | None = None


@dataclass(frozen=True)
class RunResult:
    """How a run ended. ``result`` is a JSON-able summary for the job's outcome."""

    exit_code: int | None
    succeeded: bool
    reason: str | None
    duration_seconds: float
    result: dict[str, Any]


OnOutput = Callable[[list[OutputLine]], Awaitable[None]]
OnStarted = Callable[[int], Awaitable[None] | None]


@runtime_checkable
class AgentRunner(Protocol):
    """Runs a job's agent; see the module docstring for the contract."""

    name: ClassVar[str]

    def check(self, spec: Mapping[str, Any]) -> None:
        """Raise :class:`RunnerError` if this runner cannot run a job with ``spec``."""
        ...

    async def run(
        self, request: RunRequest, on_output: OnOutput, *, on_started: OnStarted | None = None
    ) -> RunResult:
        """Run the agent to its end; re-raise the caller's cancellation after stopping it."""
        ...


@dataclass(frozen=True)
class CommandSpec:
    """A command runner's job spec, checked."""

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: str | None = None

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> CommandSpec:
        """The spec's command, environment and input; :class:`RunnerError` names what is wrong."""
        if "command" not in spec:
            raise RunnerError("the job spec has no 'command'")
        command = spec["command"]
        if isinstance(command, str):
            raise RunnerError(
                "'command' must be a list of strings, not a string: no shell is used "
                "(write ['sh', '-c', '...'] to run one)"
            )
        if not isinstance(command, Sequence) or not all(isinstance(a, str) for a in command):
            raise RunnerError(f"'command' must be a list of strings, got {command!r}")
        if not command:
            raise RunnerError("'command' is empty")
        env = spec.get("env", {})
        if not isinstance(env, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in env.items()
        ):
            raise RunnerError(f"'env' must map strings to strings, got {env!r}")
        stdin = spec.get("stdin")
        if stdin is not None and not isinstance(stdin, str):
            raise RunnerError(f"'stdin' must be a string, got {type(stdin).__name__}")
        return cls(argv=tuple(command), env=dict(env), stdin=stdin)


@dataclass(frozen=True)
class CommandRunner:
    """Runs the job spec's command as a subprocess (see the module docstring)."""

    name: ClassVar[str] = "command"

    grace_period: float = 5.0
    flush_interval: float = 0.05
    batch_lines: int = 200

    def check(self, spec: Mapping[str, Any]) -> None:
        CommandSpec.parse(spec)

    async def run(
        self, request: RunRequest, on_output: OnOutput, *, on_started: OnStarted | None = None
    ) -> RunResult:
        command = CommandSpec.parse(request.spec)
        begin = anyio.current_time()
        try:
            process = await anyio.open_process(
                [*request.watchdog, *command.argv],
                stdin=subprocess.DEVNULL if command.stdin is None else subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=request.workspace,
                env=_environment(command.env, request.env),
                start_new_session=True,
            )
        except OSError as e:
            return RunResult(
                exit_code=None,
                succeeded=False,
                reason=_cannot_start(command.argv[0], e),
                duration_seconds=anyio.current_time() - begin,
                result={"exit_code": None, "signal": None, "lines": 0},
            )
        lower(process.pid)
        async with process:
            try:
                if on_started is not None:
                    ready = on_started(process.pid)
                    if inspect.isawaitable(ready):
                        await ready
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._stop_group(process)
                raise
            returncode, lines = await self._follow(process, command.stdin, on_output)
        return _result(returncode, lines, anyio.current_time() - begin)

    async def _follow(
        self, process: Process, stdin: str | None, on_output: OnOutput
    ) -> tuple[int, int]:
        """Deliver the output until the process and its group are gone; (exit status, lines)."""
        assert process.stdout is not None and process.stderr is not None
        output = _Output(on_output, batch_lines=self.batch_lines, interval=self.flush_interval)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(output.read, process.stdout, "stdout")
                tg.start_soon(output.read, process.stderr, "stderr")
                tg.start_soon(output.deliver)
                if stdin is not None:
                    assert process.stdin is not None
                    tg.start_soon(_feed, process.stdin, stdin.encode())
                try:
                    returncode = await process.wait()
                    await self._stop_group(process)  # what it left running
                    # A process that left the group may hold the pipes open: stop waiting for it.
                    with anyio.move_on_after(self.grace_period):
                        await output.pipes_closed.wait()
                    output.stop_reading()
                    await output.delivered.wait()
                except BaseException:
                    with anyio.CancelScope(shield=True):
                        await self._stop_group(process)
                        with anyio.move_on_after(self.grace_period):
                            await output.delivered.wait()
                    output.stop_reading()
                    output.stop_delivering()
                    raise
                tg.cancel_scope.cancel()  # the stdin feeder, if the process never read it all
        except BaseExceptionGroup as group:
            # A callback's own error reaches the caller as itself, not inside a group.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        return returncode, output.count

    async def _stop_group(self, process: Process) -> None:
        """SIGTERM to the process group, SIGKILL to whatever of it runs after the grace period."""
        # A session leader's pid is its process group id. After the leader is reaped the id
        # stays taken while any member lives; once none does, signalling is a harmless ESRCH
        # (the id could only be reused after the kernel cycles through every pid).
        group = process.pid
        if not _signal_group(group, signal.SIGTERM):
            return
        with anyio.move_on_after(self.grace_period):
            await _group_ended(process)
            return
        _signal_group(group, signal.SIGKILL)
        with anyio.move_on_after(self.grace_period):
            await _group_ended(process)


RUNNERS: dict[str, Callable[[], AgentRunner]] = {CommandRunner.name: CommandRunner}
"""Runner factories by name (a spec's ``"runner"``)."""


def runner_for(spec: Mapping[str, Any]) -> AgentRunner:
    """The runner for a job spec: the one its ``"runner"`` names, else the command runner for a
    spec with a ``"command"``. :class:`RunnerError` when there is none."""
    name = spec.get("runner") or ("command" if "command" in spec else None)
    if name is None:
        raise RunnerError("the job spec names no 'runner' and has no 'command'")
    if not isinstance(name, str) or name not in RUNNERS:
        raise RunnerError(f"no runner named {name!r} (known: {', '.join(sorted(RUNNERS))})")
    return RUNNERS[name]()


class _Output:
    """The output of one process: both pipes split into lines, numbered, handed over in
    batches. Reading and delivering are shielded so that the lines printed while the process
    is being stopped are delivered too; the ``stop_*`` methods end them when that takes too
    long."""

    def __init__(self, on_output: OnOutput, *, batch_lines: int, interval: float) -> None:
        self._on_output = on_output
        self._batch_lines = batch_lines
        self._interval = interval
        # Items are the lines of one read; a bounded buffer makes a slow consumer slow the pipes.
        self._send: MemoryObjectSendStream[list[tuple[StreamName, str]]]
        self._receive: MemoryObjectReceiveStream[list[tuple[StreamName, str]]]
        self._send, self._receive = anyio.create_memory_object_stream(16)
        self._readers = 2
        self._reading = {
            "stdout": anyio.CancelScope(shield=True),
            "stderr": anyio.CancelScope(shield=True),
        }
        self._delivering = anyio.CancelScope(shield=True)
        self.pipes_closed = anyio.Event()
        self.delivered = anyio.Event()
        self.count = 0

    def stop_reading(self) -> None:
        for scope in self._reading.values():
            scope.cancel()

    def stop_delivering(self) -> None:
        self._delivering.cancel()

    async def read(self, pipe: ByteReceiveStream, stream: StreamName) -> None:
        try:
            with self._reading[stream]:
                async with self._send.clone() as send:
                    buffer = bytearray()
                    while True:
                        try:
                            chunk = await pipe.receive(MAX_LINE_BYTES)
                        except (anyio.EndOfStream, anyio.ClosedResourceError):
                            break
                        scanned = len(buffer)
                        buffer += chunk
                        if lines := _split(buffer, scanned):
                            await send.send([(stream, line) for line in lines])
                    if buffer:
                        await send.send([(stream, _decode(buffer))])
        except anyio.BrokenResourceError:
            pass  # delivery failed; its error reaches the caller
        finally:
            self._readers -= 1
            if self._readers == 0:
                self._send.close()
                self.pipes_closed.set()

    async def deliver(self) -> None:
        try:
            with self._delivering, self._receive:
                pending: list[tuple[StreamName, str]] = []
                async for lines in self._receive:
                    pending += lines
                    flush_at = anyio.current_time() + self._interval
                    while len(pending) < self._batch_lines:
                        try:
                            pending += self._receive.receive_nowait()
                        except anyio.EndOfStream:
                            break
                        except anyio.WouldBlock:
                            if anyio.current_time() >= flush_at:
                                break
                            with anyio.move_on_at(flush_at):
                                await self.pipes_closed.wait()
                    while pending:
                        batch, pending = pending[: self._batch_lines], pending[self._batch_lines :]
                        await self._on_output(
                            [
                                OutputLine(seq=self.count + i, stream=stream, text=text)
                                for i, (stream, text) in enumerate(batch, start=1)
                            ]
                        )
                        self.count += len(batch)
        finally:
            self.delivered.set()


def _split(buffer: bytearray, scanned: int) -> list[str]:
    """Remove the complete lines (and the pieces of over-long ones) from ``buffer``; its first
    ``scanned`` bytes are known to hold no newline."""
    lines: list[str] = []
    start = 0
    while True:
        end = buffer.find(b"\n", max(start, scanned))
        if end < 0 and len(buffer) - start <= MAX_LINE_BYTES:
            break
        if end < 0 or end - start > MAX_LINE_BYTES:
            cut = start + MAX_LINE_BYTES
            # Do not cut a multi-byte character: back up over its continuation bytes (10xxxxxx).
            while cut > start + MAX_LINE_BYTES - 3 and buffer[cut] & 0xC0 == 0x80:
                cut -= 1
            lines.append(buffer[start:cut].decode("utf-8", errors="replace"))
            start = cut
        else:
            lines.append(_decode(buffer[start:end]))
            start = end + 1
    del buffer[:start]
    return lines


def _decode(line: bytes | bytearray) -> str:
    if line.endswith(b"\r"):
        line = line[:-1]
    return line.decode("utf-8", errors="replace")


async def _feed(stdin: ByteSendStream, data: bytes) -> None:
    async with stdin:  # closing it is the end of input
        try:
            await stdin.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the process exited without reading all of it


def _environment(*layers: Mapping[str, str]) -> dict[str, str]:
    env = inherited()
    for layer in layers:
        env.update(layer)
    return env


def _cannot_start(program: str, error: OSError) -> str:
    reason = f"cannot start {program!r}: {error.strerror or error}"
    if error.filename is not None and os.fsdecode(error.filename) != program:
        reason += f" ({os.fsdecode(error.filename)})"  # e.g. the workspace is missing
    return reason


def _result(returncode: int, lines: int, duration: float) -> RunResult:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return RunResult(
            exit_code=None,
            succeeded=False,
            reason=f"killed by signal {name}",
            duration_seconds=duration,
            result={"exit_code": None, "signal": name, "lines": lines},
        )
    return RunResult(
        exit_code=returncode,
        succeeded=returncode == 0,
        reason=None if returncode == 0 else f"exited with status {returncode}",
        duration_seconds=duration,
        result={"exit_code": returncode, "signal": None, "lines": lines},
    )


def _signal_group(group: int, sig: int) -> bool:
    """Send ``sig`` to the group; False when it has no process left to receive it."""
    try:
        os.killpg(group, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def _group_ended(process: Process) -> None:
    """Wait for the leader to exit and the rest of its group to stop running."""
    await process.wait()
    # The rest are not our children, so there is nothing to wait on: poll.
    while _group_running(process.pid):
        await anyio.sleep(0.02)


def _group_running(group: int) -> bool:
    """Whether a process of the group still runs. A zombie does not count: orphans are reaped
    by init, and some container inits never reap them."""
    if not _signal_group(group, 0):
        return False
    try:
        names = os.listdir("/proc")
    except FileNotFoundError:
        return True  # no procfs: a zombie cannot be told apart
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the parenthesised command name: state, ppid, pgrp, ...
        state, _ppid, pgrp = stat[stat.rindex(b")") + 2 :].split(maxsplit=3)[:3]
        if int(pgrp) == group and state not in (b"Z", b"X"):
            return True
    return False
