"""What ``api.py`` and ``stream.py`` share: a private ipa on a fresh embedded PostgreSQL, and
apps served by uvicorn as ``ipa serve`` serves its own (``listen``, no signal handlers)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path


@contextlib.asynccontextmanager
async def private_ipa(*, node: bool = False) -> AsyncIterator[tuple]:
    """``(store, task_list, supervisor)`` on a fresh store (no automatic snapshots); the
    caller runs the task list and the supervisor. ``node``: the supervisor is a node of the
    store, as under ``ipa serve`` (leases; the API's views carry each task's node)."""
    from ipa.eventstore import EventStore, StoreSettings, embedded_postgres
    from ipa.pods import PodEnvironment, WorkspaceManager, runner_for
    from ipa.projections import TaskList
    from ipa.supervisor import Membership, Supervisor

    with tempfile.TemporaryDirectory(prefix="ipa-bench-") as tmp:
        with embedded_postgres(Path(tmp) / "pg") as params:
            settings = replace(StoreSettings(), snapshot_interval=0)
            async with EventStore.open(params, settings) as store:
                member = store.node("bench") if node else None
                if member is not None:
                    await member.open()  # closed by the supervisor
                supervisor = Supervisor(PodEnvironment(
                    store=store, workspaces=WorkspaceManager(Path(tmp) / "ws"),
                    scratch=Path(tmp) / "scratch", runner_for=runner_for),
                    node=member, membership=Membership())
                yield store, TaskList(store), supervisor


@contextlib.asynccontextmanager
async def served(tg, *apps, like_serve: bool = False) -> AsyncIterator[list[int]]:
    """Serve each app on its own port on 127.0.0.1 (in ``tg``) until the block ends; yields
    the ports once every server has started. ``like_serve``: uvicorn configured as ``ipa
    serve`` configures it (``server_config``: its protocol, limits and keep-alive)."""
    import uvicorn

    from ipa.ui.connections import Limits, server_config
    from ipa.ui.serve import _Server, listen

    servers, ports = [], []
    for app in apps:
        sock = listen("127.0.0.1", 0)
        options = dict(log_level="error", timeout_graceful_shutdown=1, backlog=4096)
        server = _Server(server_config(app, Limits(), **options) if like_serve
                         else uvicorn.Config(app, lifespan="off", **options))
        tg.start_soon(server.serve, [sock])
        servers.append(server)
        ports.append(sock.getsockname()[1])
    while not all(server.started for server in servers):
        await asyncio.sleep(0.05)
    try:
        yield ports
    finally:
        for server in servers:
            server.should_exit = True
        await asyncio.sleep(1.5)
