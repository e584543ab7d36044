"""The ``ipa`` command line.

Store commands (``events``, ``replay``, ``audit verify``, ``projections rebuild``,
``snapshot``, ``memory reembed``) open the store directly. The reading ones work whether or not
a server is running; the writing ones (``projections rebuild``, ``snapshot``, ``memory
reembed`` and ``serve`` itself) take the data dir's lock (:mod:`ipa.eventstore.lock`) and are
refused while another process holds it. ``ipa task ...``, ``ipa nodes`` and the other ``ipa
memory ...`` act through a running server's HTTP API (:mod:`.client`).
Errors are one line on stderr, ``ipa: <what> ...``, with exit status 1 (2 for bad usage).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import sys
from collections.abc import AsyncIterator, Sequence
from typing import NoReturn, TextIO
from uuid import UUID

import anyio

from ipa.domain import DomainError
from ipa.eventstore import Audit, EventStore, Finding, StoreError, StreamNotFound
from ipa.projections import (
    EmbedderError,
    Memory,
    MemorySettings,
    MemoryUnavailable,
    TaskList,
    Usage,
    task_state,
)
from ipa.projections.transcript import transcript

from .analytics_cli import add_analytics_command
from .client import ApiCallError, add_node_command, add_task_commands
from .keys import KeysError, load_keys
from .memory_cli import add_memory_commands
from .runtime import Settings, open_store
from .transfer_cli import add_transfer_commands
from .webhooks_cli import add_webhook_commands


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``ipa`` command; return its exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        settings = Settings.resolve(
            data_dir=getattr(args, "data_dir", None),
            database_url=getattr(args, "database_url", None),
            live=getattr(args, "live", False),
        )
        return anyio.run(args.run, settings, args)
    except (StoreError, DomainError, ApiCallError, KeysError, EmbedderError,
            MemoryUnavailable) as e:
        print(f"ipa: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ipa: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``ipa events ... | head``): stop quietly, as a shell tool
        # killed by SIGPIPE would, and keep Python from complaining when it flushes stdout.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, like every other error (argparse prints the usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


# Argument types: each names what is wrong with a bad value.


def task_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a task id (expected a UUID)") from None


def version(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid version {text!r}: expected a whole number ≥ 1")
    return value


def position(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected a whole number ≥ 0")
    return value


def port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: expected 0 to 65535")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 10**7:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: expected seconds > 0")
    return value


def node_id(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", text):
        raise argparse.ArgumentTypeError(
            f"invalid node id {text!r}: 1-64 letters, digits, '.', '-' or '_', starting with a "
            "letter or digit")
    return text


def count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: expected a whole number ≥ 1")
    return value


def _parser() -> argparse.ArgumentParser:
    store_options = _Parser(add_help=False)
    store_options.add_argument(
        "--data-dir", help="ipa's data directory (env IPA_DATA_DIR; default: user data dir)"
    )
    store_options.add_argument(
        "--database-url", help="use this PostgreSQL instead of the embedded one "
        "(env IPA_DATABASE_URL)"
    )

    parser = _Parser(
        prog="ipa", description="Drive software tasks to reviewed changes with AI agents."
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = commands.add_parser(
        "serve", parents=[store_options], help="run ipa: the store and the HTTP API"
    )
    serve.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1")
    serve.add_argument("--port", type=port, default=8765, help="default: 8765")
    serve.add_argument("--api-keys-file", metavar="FILE",
                       help="API keys, one name:key a line (env IPA_API_KEYS_FILE; or "
                       "IPA_API_KEYS=name:key,...); without keys ipa listens on loopback only")
    serve.add_argument("--repo-root", action="append", metavar="DIR",
                       help="a task's local repository must be inside DIR (repeatable; env "
                       "IPA_REPO_ROOTS=DIR:DIR; default: anywhere the server can read)")
    cluster = serve.add_argument_group("cluster (several nodes on one store)")
    cluster.add_argument("--node-id", type=node_id, metavar="ID",
                         help="this node's id (env IPA_NODE_ID; default: host name and a hash "
                         "of the data dir)")
    cluster.add_argument("--max-pods", type=count, metavar="N",
                         help="new tasks beyond N leased tasks go to the least loaded node")
    cluster.add_argument("--lease-ttl", type=seconds, default=10.0, metavar="SECONDS",
                         help="a node silent this long is dead and its tasks are taken over "
                         "(default 10)")
    web = serve.add_argument_group("HTTP safety")
    web.add_argument("--allowed-hosts", action="append", metavar="HOSTS",
                     help="Host names to answer besides localhost, 127.0.0.1, [::1] and --host: "
                     "names, *.suffix or '*' (repeatable or comma list; env IPA_ALLOWED_HOSTS); "
                     "needed with --host 0.0.0.0")
    web.add_argument("--allowed-origins", action="append", metavar="ORIGINS",
                     help="other sites (scheme://host[:port]) whose pages may send changes "
                     "(repeatable or comma list; env IPA_ALLOWED_ORIGINS)")
    web.add_argument("--trusted-proxy", action="append", metavar="ADDR",
                     help="a reverse proxy (address or network) whose X-Forwarded-For, "
                     "X-Forwarded-Proto and X-IPA-Actor count (repeatable or comma list; env "
                     "IPA_TRUSTED_PROXIES)")
    web.add_argument("--session-ttl", type=seconds, default=12 * 3600.0, metavar="SECONDS",
                     help="how long a login lasts (default: 43200, 12 h)")
    web.add_argument("--timeout-idle", type=seconds, default=5.0, metavar="SECONDS",
                     help="close a connection that sends no request for this long (default 5)")
    web.add_argument("--timeout-header", type=seconds, default=10.0, metavar="SECONDS",
                     help="close a connection whose request head takes longer (default 10)")
    web.add_argument("--timeout-body", type=seconds, default=30.0, metavar="SECONDS",
                     help="close a connection whose request body takes longer (default 30)")
    web.add_argument("--limit-connections", type=count, default=1000, metavar="N",
                     help="connections open at once; more are refused with 503 (default 1000)")
    serve.set_defaults(run=cmd_serve, live=True)

    add_task_commands(commands, _Parser)
    add_node_command(commands, _Parser)
    add_transfer_commands(commands, _Parser)
    add_webhook_commands(commands, _Parser)
    add_analytics_command(commands, _Parser)
    memory_commands = add_memory_commands(commands, _Parser)
    reembed = memory_commands.add_parser(
        "reembed", parents=[store_options],
        help="embed every memory again with the embedder IPA_EMBEDDER names (after changing "
        "it; with the server stopped)")
    reembed.set_defaults(run=cmd_memory_reembed)

    events = commands.add_parser(
        "events", parents=[store_options], help="print a task's events in order"
    )
    events.add_argument("task_id", type=task_id, metavar="TASK_ID")
    events.add_argument("--after", type=position, default=0, metavar="N",
                        help="only events after version N")
    events.add_argument("--json", action="store_true", help="JSON Lines, one event a line")
    events.set_defaults(run=cmd_events)

    replay = commands.add_parser(
        "replay", parents=[store_options], help="a task's state as of a version"
    )
    replay.add_argument("task_id", type=task_id, metavar="TASK_ID")
    replay.add_argument("--at", type=version, metavar="VERSION", help="default: the latest")
    replay.add_argument("--json", action="store_true", help="print the state as JSON")
    replay.set_defaults(run=cmd_replay)

    audit = commands.add_parser("audit", help="integrity checks")
    audit_commands = audit.add_subparsers(title="commands", metavar="COMMAND", required=True)
    verify = audit_commands.add_parser(
        "verify", parents=[store_options],
        help="check the keyed hash chains, the manifest, versions, positions, snapshots and "
             "the task list (exit 1 on any failure)",
    )
    verify.add_argument("task_id", type=task_id, nargs="?", metavar="TASK_ID",
                        help="one task (default: every task)")
    verify.set_defaults(run=cmd_audit_verify)
    shown = audit_commands.add_parser(
        "transcript", parents=[store_options],
        help="print an agent run's transcript from its events (no call to the model)",
    )
    shown.add_argument("run_id", type=task_id, metavar="RUN_ID",
                       help="the run (a job's run_id, from `ipa events`)")
    shown.add_argument("--no-prompt", action="store_true", help="leave the prompt's text out")
    shown.add_argument("--json", action="store_true", help="the run's events as JSON Lines")
    shown.set_defaults(run=cmd_audit_transcript)

    projections = commands.add_parser("projections", help="read models")
    projection_commands = projections.add_subparsers(
        title="commands", metavar="COMMAND", required=True
    )
    rebuild = projection_commands.add_parser(
        "rebuild", parents=[store_options],
        help="rebuild the task list, agent memory and analytics from the event log"
    )
    rebuild.set_defaults(run=cmd_projections_rebuild)

    snapshot = commands.add_parser(
        "snapshot", parents=[store_options], help="take a snapshot of a task now"
    )
    snapshot.add_argument("task_id", type=task_id, metavar="TASK_ID")
    snapshot.add_argument("--at", type=version, metavar="VERSION", help="default: the latest")
    snapshot.set_defaults(run=cmd_snapshot)
    return parser


async def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    given = args.node_id or os.environ.get("IPA_NODE_ID")
    try:
        node = node_id(given) if given else None
    except argparse.ArgumentTypeError as e:  # before the server's imports: a quick answer
        print(f"ipa: IPA_NODE_ID: {e}", file=sys.stderr)
        return 2

    from ipa.pods import AgentConfigError
    from ipa.pods.sync import SettingsError

    from .connections import Limits  # uvicorn is only needed here
    from .guard import GuardPolicy, split_list
    from .serve import Cluster, NotLoopback, serve

    def listed(values: list[str] | None, env: str) -> tuple[str, ...]:
        return tuple(split_list(values or [os.environ.get(env, "")]))

    keys = load_keys(args.api_keys_file)
    try:
        guard = GuardPolicy(listed(args.allowed_hosts, "IPA_ALLOWED_HOSTS"),
                            listed(args.allowed_origins, "IPA_ALLOWED_ORIGINS"),
                            listed(args.trusted_proxy, "IPA_TRUSTED_PROXIES")).checked()
        limits = Limits(args.timeout_idle, args.timeout_header, args.timeout_body,
                        args.limit_connections)
    except ValueError as e:  # a malformed origin or proxy address
        print(f"ipa: {e}", file=sys.stderr)
        return 2
    cluster = Cluster(node_id=node, max_pods=args.max_pods, lease_ttl=args.lease_ttl)
    try:
        return await serve(settings, args.host, args.port, keys, guard=guard, limits=limits,
                           session_ttl=args.session_ttl, repo_roots=args.repo_root or (),
                           cluster=cluster)
    except (NotLoopback, AgentConfigError, SettingsError) as e:
        print(f"ipa: {e}", file=sys.stderr)
        return 2


async def cmd_events(settings: Settings, args: argparse.Namespace) -> int:
    async with open_store(settings, create=False) as store:
        if await store.version(args.task_id) == 0:
            raise StreamNotFound(args.task_id)
        after = args.after
        while True:
            page = await store.read(args.task_id, after=after, limit=1000)
            for recorded in page:
                if args.json:
                    print(json.dumps(recorded.to_json(), sort_keys=True))
                else:
                    print(
                        f"{recorded.version:>6}  {recorded.timestamp.isoformat()}  "
                        f"{recorded.type:<18} {recorded.actor:<20} "
                        f"{json.dumps(recorded.data, sort_keys=True)}"
                    )
            if len(page) < 1000:
                return 0
            after = page[-1].version


async def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    async with open_store(settings, create=False) as store:
        state = await store.load(args.task_id, args.at)
        view = task_state.view(state)
    if args.json:
        print(json.dumps(view, indent=2, sort_keys=True))
    else:
        for key, value in view.items():
            shown = value if isinstance(value, str) else json.dumps(value)
            print(f"{key:>18}: {shown}")
    return 0


async def cmd_audit_transcript(settings: Settings, args: argparse.Namespace) -> int:
    async with open_store(settings, create=False) as store:
        if await store.version(args.run_id) == 0:
            raise StreamNotFound(args.run_id)
        after = 0
        while page := await store.read(args.run_id, after=after, limit=1000):
            if args.json:
                for recorded in page:
                    print(json.dumps(recorded.to_json()))
            else:
                for line in transcript(page, prompt=not args.no_prompt):
                    print(line)
            after = page[-1].version
    return 0


async def cmd_audit_verify(settings: Settings, args: argparse.Namespace) -> int:
    async with open_store(settings, create=False) as store:
        audit = await Audit.start(store)
        task_list = TaskList(store)
        if args.task_id is not None:
            if await store.version(args.task_id) == 0:
                raise StreamNotFound(args.task_id)
            streams = [args.task_id]
        else:
            streams = await store.stream_ids()
        rows = {row["id"]: row for row in await task_list.rows()}
        for finding in audit.findings:
            print(f"FAIL {finding}")
        failures = len(audit.findings)
        progress = Progress("verified", len(streams))
        for done, stream_id in enumerate(streams, start=1):
            row = rows.pop(str(stream_id), None)
            findings = await audit.verify_stream(
                stream_id, recorded_version=None if row is None else row["version"]
            )
            if row is not None and row.get("error"):
                # The task list could not fold an event (or store the row): name the version.
                error, version = str(row["error"]), row["version"] + 1
                stated, _, rest = error.partition(": ")
                number = stated.removeprefix(f"task {stream_id} version ")
                if number != stated and number.isdigit():
                    version, error = int(number), rest
                findings.append(Finding(stream_id, version, f"the task list marks this task "
                                        f"broken: {error}"))
            for finding in findings:
                progress.clear()
                print(f"FAIL {finding}")
            failures += len(findings)
            progress.update(done)
        if args.task_id is None:
            for missing, row in rows.items():
                progress.clear()
                print(f"FAIL task {missing} version {row['version']}: the task list has it but "
                      "the store has no events for it (stream deleted?)")
                failures += 1
            for finding in await audit.verify_manifest():
                progress.clear()
                print(f"FAIL {finding}")
                failures += 1
            progress.clear()
            if audit.keyed:
                summary = await audit.summary()
                print(f"manifest: {summary.streams} stream(s), {summary.events} event(s), keyed "
                      f"from position {audit.keyed_from} (note these outside the store: they "
                      "never go down)")
            else:
                print("manifest: none (this store is not keyed: its chains were checked "
                      "without a key)")
        progress.clear()
    if failures:
        print(f"ipa: audit found {failures} problem(s) in {len(streams)} stream(s)",
              file=sys.stderr)
        return 1
    print(f"ok: {len(streams)} stream(s) intact")
    return 0


async def cmd_projections_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    async with open_store(settings, create=False, lock="ipa projections rebuild") as store:
        progress = Progress("events", 0)

        def report(at: int, head: int) -> None:
            progress.total = head
            progress.update(at)

        task_list = TaskList(store)
        position = await task_list.rebuild(report)
        progress.clear()
        rows = len(await task_list.rows())
        print(f"task list rebuilt: {rows} task(s), log position {position}")
        async with memory_of(store) as memory:
            progress.label = "memories: events"
            position = await memory.rebuild(report)
            progress.clear()
            count = await memory.table.count(memory.model)
        print(f"agent memory rebuilt: {count} memor{'y' if count == 1 else 'ies'}, log "
              f"position {position}")
        usage = Usage(store, store.usage_table())
        try:
            progress.label = "analytics: events"
            position = await usage.rebuild(report)
            progress.clear()
            count = await usage.table.count()
        finally:
            with anyio.CancelScope(shield=True):
                await usage.close()
    print(f"analytics rebuilt: {count} usage record(s), log position {position}")
    return 0


async def cmd_memory_reembed(settings: Settings, args: argparse.Namespace) -> int:
    async with open_store(settings, create=False, lock="ipa memory reembed") as store, \
            memory_of(store) as memory:
        progress = Progress("memories", 0)

        def report(done: int, total: int) -> None:
            progress.total = total
            progress.update(done)

        count = await memory.reembed(report)
        progress.clear()
        embedder = memory.embedder
    assert embedder is not None  # reembed loaded it
    print(f"memories re-embedded: {count} with {embedder.name} ({embedder.dimensions} "
          "dimensions)")
    return 0


@contextlib.asynccontextmanager
async def memory_of(store: EventStore) -> AsyncIterator[Memory]:
    """The store's agent memory with the environment's settings, its table open."""
    try:
        settings = MemorySettings.from_environment()
    except ValueError as e:  # IPA_MEMORY_CAP or IPA_MEMORY_HALF_LIFE_DAYS
        raise MemoryUnavailable(str(e)) from None
    memory = Memory(store, store.memory_table(), settings)
    await memory.table.open()
    try:
        yield memory
    finally:
        with anyio.CancelScope(shield=True):
            await memory.table.close()


async def cmd_snapshot(settings: Settings, args: argparse.Namespace) -> int:
    async with open_store(settings, create=False, lock="ipa snapshot") as store:
        taken = await store.take_snapshot(args.task_id, args.at)
    print(f"snapshot of task {args.task_id} at version {taken}")
    return 0


class Progress:
    """``verified 120/1000`` on a terminal's stderr, rewritten in place; silent otherwise."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self._stream = stream or sys.stderr
        self._live = self._stream.isatty()
        self._shown = False

    def update(self, done: int) -> None:
        if self._live:
            self._stream.write(f"\r{self.label} {done}/{self.total}")
            self._stream.flush()
            self._shown = True

    def clear(self) -> None:
        if self._shown:
            self._stream.write("\r\033[K")
            self._stream.flush()
            self._shown = False
