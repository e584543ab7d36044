"""The web app, built by :func:`create_app`: the REST API (:mod:`.api`, agent memory in
:mod:`.memory_api`, analytics in :mod:`.analytics_api`), the SSE streams (:mod:`.streams`),
the pages (:mod:`.pages`), ``/openapi.json``, ``/metrics``, ``/healthz`` and, when API keys
are configured, the key check and ``/login`` (:mod:`.auth`), all behind the Host, Origin and
content-type checks of :mod:`.guard`.

Every error is ``{"error": {"code": ..., "message": ...}}`` with a 4xx/5xx status, from one
table (:data:`ipa.ui.errors.ERRORS`).
"""

from __future__ import annotations

from collections.abc import Mapping

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Route

from ipa.pods import Webhooks
from ipa.projections import Memory, TaskList, Usage
from ipa.supervisor import Supervisor

from . import analytics_api, lineage_api, memory_api, pages, transfer_api, webhooks_api
from .api import COMMANDS, Api
from .auth import ApiKeys, RequireKey, login_routes
from .errors import ERRORS, BadRequest, error_response, exception_handlers
from .guard import Guard, GuardPolicy
from .metrics import Metrics
from .openapi import openapi
from .sessions import Sessions, Throttle
from .streams import StreamHub

__all__ = ["COMMANDS", "ERRORS", "BadRequest", "create_app", "error_response"]


def api_routes(api: Api, hub: StreamHub, keys: ApiKeys, sessions: Sessions | None = None,
               throttle: Throttle | None = None) -> list[BaseRoute]:
    """Every route but the pages (the ones ``/openapi.json`` describes)."""
    supervisor, task_list = api.supervisor, api.task_list
    return [
        *lineage_api.routes(api),  # before the API's command route, which would take them
        *api.routes(),
        *memory_api.routes(),
        *transfer_api.routes(),
        *webhooks_api.routes(),
        *analytics_api.routes(),
        *hub.routes(),
        Route("/metrics", Metrics(supervisor, task_list, hub).endpoint, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *login_routes(keys, Sessions() if sessions is None else sessions,
                      Throttle() if throttle is None else throttle),
    ]


def create_app(
    supervisor: Supervisor,
    task_list: TaskList,
    *,
    api_keys: Mapping[str, str] | None = None,
    shutdown: anyio.Event | None = None,
    client_buffer: int = 1000,
    ping: float = 15.0,
    guard: GuardPolicy | None = None,
    sessions: Sessions | None = None,
    throttle: Throttle | None = None,
    memory: Memory | None = None,
    webhooks: Webhooks | None = None,
    usage: Usage | None = None,
) -> Starlette:
    """The app: commands go to the tasks' pods through ``supervisor``; the list comes from
    ``task_list`` (both kept running by the caller).

    ``api_keys`` ({name: key}; none: no key check). ``shutdown``: set it to end every open
    SSE stream cleanly (``ipa serve`` does on SIGINT/SIGTERM). ``client_buffer``: frames an
    SSE client may fall behind before its stream ends with ``event: overflow``; ``ping``:
    seconds between keep-alive comments. ``guard``: the allowed hosts and origins and the
    trusted proxies (default: loopback hosts, same-origin writes, no proxy). ``sessions``:
    login sessions (default: 12 h); ``throttle``: wrong keys per client (default: 10 a
    minute). ``memory``: agent memory (``projections/memory.py``, kept running by the
    caller); without it the memory endpoints answer 503. ``webhooks``: webhooks
    (``pods/webhooks.py``, kept running by the caller); without it ``/api/webhooks`` answers
    503. ``usage``: cost and token analytics
    (``projections/usage.py``, kept running by the caller); without it ``/api/analytics`` and
    ``/analytics`` answer 503.
    """
    keys = ApiKeys(api_keys)
    sessions = Sessions() if sessions is None else sessions
    throttle = Throttle() if throttle is None else throttle
    hub = StreamHub(supervisor.store, shutdown=shutdown or anyio.Event(),
                    client_buffer=client_buffer, ping=ping)
    api = Api(supervisor, task_list)
    app = Starlette(
        routes=[*api_routes(api, hub, keys, sessions, throttle),
                *pages.routes(supervisor, task_list)],
        exception_handlers=exception_handlers(),
        middleware=[Middleware(Guard, policy=guard),
                    Middleware(RequireKey, keys=keys, sessions=sessions, throttle=throttle)],
    )
    app.state.streams = hub
    app.state.api = api
    app.state.api_keys = keys
    app.state.sessions = sessions
    app.state.memory = memory
    app.state.webhooks = webhooks
    app.state.usage = usage
    return app
