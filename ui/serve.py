"""``ipa serve``: the store, the supervisor with a pod per unfinished task, the task list
projection and the web app, until SIGINT/SIGTERM.

Shutdown (the first SIGINT or SIGTERM): open SSE streams end at once with ``event: shutdown``,
uvicorn stops taking connections and drains requests, pods reach a safe point (or are
interrupted, recorded), every pod is snapshotted, the store closes; exit status 0. A second
signal stops waiting for requests. ipa handles the signals itself (uvicorn's own handlers are
not installed): uvicorn would re-raise the signal after its shutdown, killing the process
before the pods are snapshotted.

The HTTP surface is safe by default: the Host, Origin and content-type checks of
:mod:`.guard`, sessions and the throttle of :mod:`.sessions`, the timeouts and the connection
limit of :mod:`.connections`.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import ipaddress
import os
import re
import signal
import socket
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import anyio
import uvicorn
from anyio.abc import TaskGroup, TaskStatus

from ipa.eventstore import NodeIdTaken
from ipa.pods import (
    AgentCatalog,
    AgentConfigError,
    AgentSettings,
    NicenessInvalid,
    PodEnvironment,
    RepositoryPolicy,
    SyncSettings,
    Webhooks,
    WebhookSettings,
    WorkspaceManager,
    agent_niceness,
    runner_for,
)
from ipa.projections import Memory, MemorySettings, TaskList, Usage
from ipa.supervisor import Membership, Supervisor

from .app import create_app
from .connections import Limits, raise_file_limit, server_config
from .guard import GuardPolicy
from .metrics import count_appends
from .runtime import Settings, open_store, remove_server_file, write_server_file
from .sessions import DEFAULT_TTL, Sessions

SHUTDOWN_DEADLINE = 10.0
"""Seconds running steps get to finish at shutdown before they are interrupted."""


GC_THRESHOLDS = (20_000, 20, 10)
"""The collector's thresholds while serving (Python's default is (700, 10, 10))."""


def tune_gc() -> None:
    """Set the garbage collector up for a long-running server, once it has started.

    What start-up made (modules, recovered pods) is frozen: full collections no longer scan
    it. The youngest generation collects after 20,000 allocations instead of 700, so the
    short-lived objects of one request or one event fan-out die before a collection instead
    of being promoted to the old generation. Promoted garbage is what triggered full
    collections: 150–250 ms pauses with 1,000 open streams (``bench/stream``), each one
    delaying every stream's frames.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port`` (an IPv6 literal or any name IPv4 resolves).

    Its protocol is named (``IPPROTO_TCP``, not 0) because asyncio turns Nagle's algorithm off
    (``TCP_NODELAY``) only on connections whose socket says TCP. With Nagle on, a response
    written in two parts (head, then body) or an SSE frame written after another waits for the
    client's delayed ACK: 40 ms per request (``bench/api`` measured 44 ms for a trivial one).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class Cluster:
    """This server as a node of its store (DESIGN §6.1): its id (``None``: the host name and
    a hash of the data dir), the leases after which new tasks go elsewhere, and the TTL after
    which a silent node is dead."""

    node_id: str | None = None
    max_pods: int | None = None
    lease_ttl: float = 10.0

    def id_for(self, data_dir: Path) -> str:
        if self.node_id:
            return self.node_id
        where = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:8]
        host = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:40] or "node"
        return f"{host}-{where}"

    def membership(self) -> Membership:
        return Membership(lease_ttl=self.lease_ttl,
                          heartbeat=min(1.0, max(0.05, self.lease_ttl / 5)))


class NotLoopback(ValueError):
    """A host other than a loopback address without API keys, or every interface without
    the names clients will use."""


def agent_settings(environ: Mapping[str, str]) -> AgentSettings:
    """How ``ipa serve`` runs agents: each phase's agents queued as the task enters it
    (``IPA_AUTO_AGENTS=0``: only jobs queued by hand run), the
    catalog from ``IPA_AGENTS_FILE`` (TOML) over the built-in one, the Claude Code CLI from
    ``IPA_CLAUDE_CLI`` (else the SDK's bundled one), rate-limit waits from
    ``IPA_RATE_LIMIT_BASE`` (seconds, default 60) doubling up to ``IPA_RATE_LIMIT_CAP``
    (default 3600), a project's next maintainer run ``IPA_PERPETUAL_INTERVAL`` seconds after
    its last (default 3600), agents ``IPA_AGENT_NICE`` below ipa's CPU priority (default 10).
    Raises ``AgentConfigError`` naming what is wrong."""
    agents_file = environ.get("IPA_AGENTS_FILE")
    catalog = AgentCatalog.load(Path(agents_file) if agents_file else None)

    def seconds(name: str, default: float) -> float:
        text = environ.get(name)
        if text is None:
            return default
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise AgentConfigError(f"{name}={text!r}: expected a number of seconds > 0")
        return value

    base = seconds("IPA_RATE_LIMIT_BASE", 60.0)
    cap = seconds("IPA_RATE_LIMIT_CAP", 3600.0)
    if cap < base:
        raise AgentConfigError(
            f"IPA_RATE_LIMIT_CAP ({cap:g}) is below IPA_RATE_LIMIT_BASE ({base:g})"
        )
    try:
        agent_niceness(environ)  # read again where each agent starts (pods/priority.py)
    except NicenessInvalid as e:
        raise AgentConfigError(str(e)) from None
    auto = environ.get("IPA_AUTO_AGENTS", "1").strip().lower()
    if auto not in ("1", "0", "true", "false", "on", "off", "yes", "no"):
        raise AgentConfigError(f"IPA_AUTO_AGENTS={auto!r}: expected 1 or 0")
    return AgentSettings(catalog=catalog, auto_queue=auto in ("1", "true", "on", "yes"),
                         rate_limit_base=base, rate_limit_cap=cap,
                         perpetual_interval=seconds("IPA_PERPETUAL_INTERVAL", 3600.0))


def check_host(host: str, keys: Mapping[str, str]) -> None:
    """Without API keys ipa listens on a loopback address only."""
    if keys:
        return
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise NotLoopback(
            f"refusing to listen on {host}: without API keys ipa listens on a loopback address "
            "only (set IPA_API_KEYS=name:key or --api-keys-file to serve other hosts)"
        )


WILDCARDS = frozenset({"0.0.0.0", "::", ""})


def allowed_hosts(host: str, keys: Mapping[str, str], extra: tuple[str, ...]) -> tuple[str, ...]:
    """The Host names ipa answers beyond the loopback ones: ``--host`` itself when it names one
    address or name (an IP address cannot be rebound to another site), and ``extra``
    (``--allowed-hosts``). Listening on every interface (``0.0.0.0``, ``::``) with keys needs
    ``extra``: ipa cannot guess the names clients will use, and answering any name would let
    a DNS-rebinding page read the API."""
    if host in WILDCARDS:
        if keys and not extra:
            raise NotLoopback(
                f"listening on every interface ({host or '*'}): name the hosts clients will use "
                "with --allowed-hosts (or IPA_ALLOWED_HOSTS), e.g. --allowed-hosts "
                "ipa.example.com,10.0.0.5, or --allowed-hosts '*' to answer any Host")
        return extra
    return (host, *extra)


def server_url(host: str, port: int) -> str:
    """``http://host:port`` (an IPv6 literal in brackets)."""
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def start_memory(memory: Memory, tg: TaskGroup) -> None:
    """Open ``memory`` and keep it folding the log in ``tg``; it closes when ``tg`` is
    cancelled. A problem turns memory off with a warning (``Memory.open``)."""

    async def run(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            await memory.open()
            await memory.run(task_status=task_status)
        finally:
            with anyio.CancelScope(shield=True):
                await memory.close()

    await tg.start(run)


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers (``serve`` handles the signals)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(settings: Settings, host: str, port: int,
                keys: Mapping[str, str] | None = None, *, guard: GuardPolicy | None = None,
                limits: Limits | None = None, session_ttl: float = DEFAULT_TTL,
                repo_roots: Sequence[str] = (), cluster: Cluster | None = None) -> int:
    """Run until a signal; then shut down as the module docstring says. ``repo_roots``: the
    directories a task's local repository must be in (else ``IPA_REPO_ROOTS``; else any)."""
    keys = dict(keys or {})
    check_host(host, keys)
    guard = guard or GuardPolicy()
    guard = GuardPolicy(allowed_hosts(host, keys, guard.allowed_hosts), guard.allowed_origins,
                        guard.trusted_proxies).checked()
    limits = limits or Limits()
    files = raise_file_limit(limits.connections + 512)
    if files < limits.connections + 256:
        print(f"ipa: the open-file limit is {files}: allowing {max(1, files - 256)} connections "
              f"instead of {limits.connections}", file=sys.stderr, flush=True)
        limits = Limits(limits.idle, limits.header, limits.body, max(1, files - 256),
                        limits.max_head)
    data_dir = settings.data_dir.expanduser()
    shutdown = anyio.Event()
    agents = agent_settings(os.environ)
    sync = SyncSettings.from_environment()
    try:
        memory_settings = MemorySettings.from_environment()
    except ValueError as e:
        raise AgentConfigError(str(e)) from None
    try:
        webhook_settings = WebhookSettings.from_environment()
    except ValueError as e:
        raise AgentConfigError(str(e)) from None
    cluster = cluster or Cluster()
    async with open_store(settings, create=True, lock="ipa serve") as store, \
            anyio.create_task_group() as tg:
        node = store.node(cluster.id_for(data_dir), max_pods=cluster.max_pods)
        try:
            await node.open()
        except NodeIdTaken as e:
            print(f"ipa: {e}", file=sys.stderr, flush=True)
            tg.cancel_scope.cancel()
            return 2
        # Log-ins every node honours, signed with a secret from the audit key (which the
        # database never holds); a store without one keeps them in this process.
        key = store.settings.audit_key
        sessions = (Sessions(session_ttl, shared=node,
                             secret=key.mac(b"ipa login sessions").encode())
                    if key is not None else Sessions(session_ttl))
        # Agent memory: a problem (an embedder that does not load, another embedder's
        # vectors) turns it off with a warning; the agents run without it.
        memory = Memory(store, store.memory_table(), memory_settings)
        await start_memory(memory, tg)
        # Webhooks: deliveries of task events, enqueued from the log and sent from here (a
        # problem with their tables turns them off with a warning; /api/webhooks says why).
        webhooks = Webhooks(store, settings=webhook_settings)
        await tg.start(webhooks.run)
        # Cost and token analytics: one row per UsageRecorded, folded from the log (a problem
        # turns it off with a warning; /api/analytics says why).
        usage = Usage(store, store.usage_table())
        await tg.start(usage.run)
        agents = replace(agents, memory=memory)
        repositories = RepositoryPolicy.configured(repo_roots)
        supervisor = Supervisor(PodEnvironment(
            store=store,
            # Local submodules are read from the same roots as the tasks' repositories.
            workspaces=WorkspaceManager(data_dir / "workspaces", repo_roots=repositories.roots),
            scratch=data_dir / "scratch",
            runner_for=runner_for,
            agents=agents,
            sync=sync,
            repositories=repositories,
        ), node=node, membership=cluster.membership())
        count_appends(store, supervisor)  # /metrics: what the events this node appends say
        task_list = TaskList(store, model=supervisor.task_list_model)
        await tg.start(task_list.run)
        await tg.start(supervisor.run)
        server = _Server(server_config(
            create_app(supervisor, task_list, api_keys=keys, shutdown=shutdown, guard=guard,
                       sessions=sessions, memory=memory, usage=usage,
                       webhooks=webhooks),
            limits, host=host, port=port, timeout_graceful_shutdown=5))

        async def on_signals(*, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
                             ) -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                task_status.started()  # handled from here on: before the "open" line
                async for signum in signals:
                    if shutdown.is_set():
                        server.force_exit = True
                        continue
                    print(f"ipa: {signal.Signals(signum).name}: shutting down",
                          file=sys.stderr, flush=True)
                    shutdown.set()
                    server.should_exit = True

        await tg.start(on_signals)
        try:
            sock = listen(host, port)
        except OSError as e:
            tg.cancel_scope.cancel()
            print(f"ipa: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr,
                  flush=True)
            return 1
        where = settings.database_url and "the database at IPA_DATABASE_URL" or (
            f"the embedded PostgreSQL in {settings.data_dir}"
        )
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        access = (f"API keys required ({len(keys)} configured)" if keys
                  else f"no API keys: listening on {host} only")
        tune_gc()
        url = server_url(shown, sock.getsockname()[1])
        node.address = url  # recorded with its next heartbeat
        write_server_file(data_dir, url)  # how `ipa task ...` finds this server
        # Printed once the socket listens: a client that reads it may connect at once.
        print(f"ipa: open {url}/ ({access}; {where}; node {node.id}; "
              f"{len(supervisor.pods())} pods recovered)", file=sys.stderr, flush=True)
        try:
            with sock:
                await server.serve(sockets=[sock])
        finally:
            remove_server_file(data_dir)
        shutdown.set()
        print("ipa: stopping: letting running steps finish, then snapshotting",
              file=sys.stderr, flush=True)
        await supervisor.shutdown(deadline=SHUTDOWN_DEADLINE)
        tg.cancel_scope.cancel()
    print("ipa: stopped", file=sys.stderr, flush=True)
    return 0
