"""The analytics API: what agents used and cost, summed from the ``UsageRecorded`` events
(``projections/usage.py``).

``GET /api/analytics?group_by=KEYS&from=WHEN&to=WHEN&limit=N&top=N`` answers
:meth:`ipa.projections.Usage.report`: ``totals`` of the period, ``groups`` by ``group_by``
(``day``, ``hour``, ``project``, ``task``, ``agent_type`` or ``model``, or two of them joined
by a comma such as ``day,model``; default ``day``), the ``top`` most expensive runs of the
period, budget use per task (``budgets``) and the log ``position`` the figures include.

``from``/``to`` are ISO 8601 dates (a whole UTC day; ``to`` includes its day) or date-times
(UTC without an offset; ``to`` is not included). Without ``to``: up to now; without ``from``:
the 30 days before ``to``. A malformed value, ``to`` not after ``from``, a period longer than
about ten years or hours over more than 31 days is a 400 ``bad_period`` naming the problem; a
server without analytics (or whose analytics stopped) answers 503 ``analytics_unavailable``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ipa.projections import BadPeriod, Period, Usage, UsageUnavailable
from ipa.projections.usage import group_keys, period

from .errors import ApiError, BadRequest, int_param

MAX_GROUPS = 1000
MAX_TOP = 100
BUDGETS = 50
"""The tasks whose budget use a report lists at most (the largest shares)."""
PARAMETERS = ("group_by", "from", "to", "limit", "top")


class AnalyticsUnavailable(ApiError):
    status = 503
    code = "analytics_unavailable"


def routes() -> list[Route]:
    return [Route("/api/analytics", analytics, methods=["GET"])]


def usage_of(request: Request) -> Usage | None:
    """The server's usage read model (``create_app(usage=...)``), or ``None`` without one."""
    return getattr(request.app.state, "usage", None)


def running(request: Request) -> Usage:
    """The usage read model, or :class:`AnalyticsUnavailable` saying why there is none."""
    usage = usage_of(request)
    if usage is None:
        raise AnalyticsUnavailable("analytics does not run in this server")
    if usage.problem is not None:
        raise AnalyticsUnavailable(f"analytics is off: {usage.problem}")
    return usage


def wanted(params: dict[str, str | None],
           default_group: str = "day") -> tuple[tuple[str, ...], Period]:
    """The grouping and the period ``params`` (``group_by``, ``from``, ``to``) ask for;
    :class:`BadRequest` ``bad_period`` naming what is malformed."""
    try:
        keys = group_keys(params.get("group_by"), default_group)
        return keys, period(params.get("from"), params.get("to"), datetime.now(UTC), keys)
    except BadPeriod as e:
        raise BadRequest(str(e), code="bad_period") from None


async def report(usage: Usage, keys: tuple[str, ...], span: Period, *, limit: int = 100,
                 top: int = 10) -> dict[str, Any]:
    """:meth:`Usage.report`, or :class:`AnalyticsUnavailable` when analytics is off."""
    try:
        return await usage.report(span, keys, limit=limit, top=top, budgets=BUDGETS)
    except UsageUnavailable as e:
        raise AnalyticsUnavailable(str(e)) from None


async def report_many(usage: Usage, span: Period, groupings: list[tuple[str, ...]], *,
                      limit: int = 100, top: int = 10) -> dict[str, Any]:
    """:meth:`Usage.overview` (several groupings from one snapshot), or
    :class:`AnalyticsUnavailable` when analytics is off."""
    try:
        return await usage.overview(span, groupings, limit=limit, top=top, budgets=BUDGETS)
    except UsageUnavailable as e:
        raise AnalyticsUnavailable(str(e)) from None


async def analytics(request: Request) -> JSONResponse:
    query = request.query_params
    unknown = sorted(set(query) - set(PARAMETERS))
    if unknown:
        raise BadRequest(f"unknown query parameter(s) {', '.join(repr(u[:40]) for u in unknown)}"
                         f"; known: {', '.join(PARAMETERS)}")
    for name in PARAMETERS:
        if len(query.getlist(name)) > 1:
            raise BadRequest(f"query parameter {name} given more than once")
    limit = int_param(request, "limit", 100, 1, MAX_GROUPS)
    top = int_param(request, "top", 10, 0, MAX_TOP)
    keys, span = wanted({name: query.get(name) for name in ("group_by", "from", "to")})
    return JSONResponse(await report(running(request), keys, span, limit=limit, top=top))
