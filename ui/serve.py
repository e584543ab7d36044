"""``ipa serve``: the store, the supervisor with a pod per unfinished task, the task list
projection and the HTTP API, until SIGINT/SIGTERM."""

from __future__ import annotations

import sys

import anyio
import uvicorn

from ipa.pods import PodEnvironment, WorkspaceManager, runner_for
from ipa.projections import TaskList
from ipa.supervisor import Supervisor

from .app import create_app
from .runtime import Settings, open_store

SHUTDOWN_DEADLINE = 10.0
"""Seconds running steps get to finish at shutdown before they are interrupted."""


async def serve(settings: Settings, host: str, port: int) -> int:
    """Run until a signal; then uvicorn drains requests, pods reach a safe point (or are
    interrupted, recorded), every pod is snapshotted, and the store closes."""
    data_dir = settings.data_dir.expanduser()
    async with open_store(settings, create=True) as store, anyio.create_task_group() as tg:
        supervisor = Supervisor(PodEnvironment(
            store=store,
            workspaces=WorkspaceManager(data_dir / "workspaces"),
            scratch=data_dir / "scratch",
            runner_for=runner_for,
        ))
        task_list = TaskList(store)
        await tg.start(task_list.run)
        await tg.start(supervisor.run)
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(supervisor, task_list),
                host=host,
                port=port,
                lifespan="off",
                log_level="warning",
                timeout_graceful_shutdown=5,
            )
        )
        where = settings.database_url and "the database at IPA_DATABASE_URL" or (
            f"the embedded PostgreSQL in {settings.data_dir}"
        )
        print(f"ipa: serving on http://{host}:{port}/ with {where} "
              f"({len(supervisor.pods())} pods recovered)", file=sys.stderr, flush=True)
        await server.serve()
        print("ipa: stopping: letting running steps finish, then snapshotting",
              file=sys.stderr, flush=True)
        await supervisor.shutdown(deadline=SHUTDOWN_DEADLINE)
        tg.cancel_scope.cancel()
    print("ipa: stopped", file=sys.stderr, flush=True)
    return 0
