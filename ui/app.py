"""The web app, built by :func:`create_app`: the REST API (:mod:`.api`), the SSE streams
(:mod:`.streams`), the pages (:mod:`.pages`), ``/openapi.json``, ``/metrics``, ``/healthz``
and, when API keys are configured, the key check and ``/login`` (:mod:`.auth`).

Every error is ``{"error": {"code": ..., "message": ...}}`` with a 4xx/5xx status, from one
table (:data:`ipa.ui.errors.ERRORS`).
"""

from __future__ import annotations

from collections.abc import Mapping

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route

from ipa.projections import TaskList
from ipa.supervisor import Supervisor

from . import pages
from .api import COMMANDS, Api
from .auth import ApiKeys, RequireKey, login_routes
from .errors import ERRORS, BadRequest, error_response, exception_handlers
from .metrics import Metrics
from .openapi import openapi
from .streams import StreamHub

__all__ = ["COMMANDS", "ERRORS", "BadRequest", "create_app", "error_response"]


def api_routes(api: Api, hub: StreamHub, keys: ApiKeys) -> list[BaseRoute]:
    """Every route but the pages (the ones ``/openapi.json`` describes)."""
    supervisor, task_list = api.supervisor, api.task_list
    return [
        *api.routes(),
        *hub.routes(),
        Route("/metrics", Metrics(supervisor, task_list, hub).endpoint, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *login_routes(keys),
    ]


def create_app(
    supervisor: Supervisor,
    task_list: TaskList,
    *,
    api_keys: Mapping[str, str] | None = None,
    shutdown: anyio.Event | None = None,
    client_buffer: int = 1000,
    ping: float = 15.0,
) -> Starlette:
    """The app: commands go to the tasks' pods through ``supervisor``; the list comes from
    ``task_list`` (both kept running by the caller).

    ``api_keys`` ({name: key}; none: no key check). ``shutdown``: set it to end every open
    SSE stream cleanly (``ipa serve`` does on SIGINT/SIGTERM). ``client_buffer``: frames an
    SSE client may fall behind before its stream ends with ``event: overflow``; ``ping``:
    seconds between keep-alive comments.
    """
    keys = ApiKeys(api_keys)
    hub = StreamHub(supervisor.store, shutdown=shutdown or anyio.Event(),
                    client_buffer=client_buffer, ping=ping)
    api = Api(supervisor, task_list)
    app = Starlette(
        routes=[*api_routes(api, hub, keys),
                *pages.routes(supervisor, task_list)],
        exception_handlers=exception_handlers(),
        middleware=[Middleware(RequireKey, keys=keys)],
    )
    app.state.streams = hub
    app.state.api = api
    app.state.api_keys = keys
    return app
