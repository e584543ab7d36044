"""``ipa serve``: the store, the task list projection and the HTTP API, until a signal."""

from __future__ import annotations

import sys

import anyio
import uvicorn

from ipa.projections import TaskList

from .app import create_app
from .runtime import Settings, open_store


async def serve(settings: Settings, host: str, port: int) -> int:
    """Run until SIGINT/SIGTERM; uvicorn drains open requests, then the store closes."""
    async with open_store(settings, create=True) as store, anyio.create_task_group() as tg:
        task_list = TaskList(store)
        await tg.start(task_list.run)
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(store, task_list),
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
        print(f"ipa: serving on http://{host}:{port}/ with {where}", file=sys.stderr, flush=True)
        await server.serve()
        tg.cancel_scope.cancel()
    print("ipa: stopped", file=sys.stderr, flush=True)
    return 0
