"""The analytics page (``/analytics``): spend and tokens over time and per project, task, agent
type and model, the most expensive runs and budget use per task, from one snapshot of the usage
read model (``projections/usage.py``).

Every chart is SVG drawn here, on the server, beside a table of the same figures, so the page
reads the same without JavaScript (and runs none of its own). The period comes from a plain GET
form: ``from``/``to`` dates (as the API reads them; default: the 30 days up to today) and
``per`` (``day`` or ``hour``). A period the API would refuse is a 400 page naming the problem,
with the form to correct it; a server without analytics answers 503 saying why.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from ipa.projections import Period

from . import page_model as model
from .analytics_api import report_many, running, wanted
from .errors import ApiError

HERE = Path(__file__).resolve().parent
TOP = 10
"""Runs in the "most expensive" table."""
SHOWN = 15
"""Rows per grouping (the most expensive); the rest are counted."""
TIMES = 1000
"""Buckets the time table holds at most."""
DRAWN = 400
"""Buckets the time chart draws at most (a longer period: the table only)."""
SECTIONS = (("project", "Per project"), ("agent_type", "Per agent type"), ("model", "Per model"),
            ("task", "Per task"))

templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters.update(money=model.money, number=model.number, stamp=model.stamp)


def routes() -> list[Route]:
    return [Route("/analytics", analytics_page, methods=["GET", "HEAD"])]


async def analytics_page(request: Request) -> Response:
    query = request.query_params
    per = query.get("per") or "day"
    today = datetime.now(UTC).date()
    form = {"from": query.get("from") or (today - timedelta(days=29)).isoformat(),
            "to": query.get("to") or today.isoformat(), "per": per}
    context: dict[str, Any] = {"form": form, "problem": None, "figures": None}
    try:
        if per not in ("day", "hour"):
            raise ApiError(f"per={per[:20]!r}: expected day or hour", code="bad_period")
        keys, span = wanted({"group_by": per, "from": form["from"], "to": form["to"]})
        found = await report_many(running(request), span,
                                  [keys, *((key,) for key, _ in SECTIONS)],
                                  limit=TIMES, top=TOP)
    except ApiError as e:  # a bad period (400), analytics off (503)
        context["problem"] = str(e)
        return templates.TemplateResponse(request, "analytics.html", context,
                                          status_code=e.status)
    context["figures"] = figures(found, per, span)
    return templates.TemplateResponse(request, "analytics.html", context)


def figures(found: dict[str, Any], per: str, span: Period) -> dict[str, Any]:
    """What the page shows, from :meth:`ipa.projections.Usage.overview`'s answer."""
    times = found["by"][per]
    sections = []
    for key, title in SECTIONS:
        groups = found["by"][key]["groups"]
        rows = [_row(group, key) for group in groups]
        sections.append({"key": key, "title": title, "rows": bars(rows[:SHOWN]),
                         "hidden": max(0, len(rows) - SHOWN), "more": found["by"][key]["more"]})
    series = filled(times["groups"], per, span)
    return {
        "from": found["from"], "to": found["to"], "position": found["position"],
        "totals": found["totals"],
        "per": per,
        "times": series,
        "times_more": times["more"],
        "timeline": columns(series, per) if len(series) <= DRAWN else None,
        "sections": sections,
        "runs": found["top_runs"],
        "budgets": [{**b, "percent": None if b["share"] is None else round(100 * b["share"], 1)}
                    for b in found["budgets"]],
    }


def _row(group: dict[str, Any], key: str) -> dict[str, Any]:
    value = group["key"][key]
    title = (group.get("titles") or {}).get(key)
    if value is None:
        label = {"project": "no project (lone tasks)"}.get(key, "none")
    else:
        label = title or value
    link = f"/pods/{value}" if key in ("project", "task") and value else None
    return {**group, "value": value, "label": label, "link": link,
            "tokens": group["input_tokens"] + group["output_tokens"]}


def filled(groups: list[dict[str, Any]], per: str, span: Period) -> list[dict[str, Any]]:
    """The period's buckets in order, those without usage as zeros (at most :data:`TIMES`
    buckets; beyond that, the buckets with usage only)."""
    step = timedelta(days=1) if per == "day" else timedelta(hours=1)
    start = span.start.replace(minute=0, second=0, microsecond=0)
    if per == "day":
        start = start.replace(hour=0)
    by_key = {group["key"][per]: group for group in groups}
    count = int((span.end - start) / step) + 1
    if count > TIMES:
        return [_bucket(key, per, group) for key, group in by_key.items()]
    out = []
    at = start
    while at < span.end:
        key = at.date().isoformat() if per == "day" else at.isoformat()
        out.append(_bucket(key, per, by_key.get(key)))
        at += step
    return out


def _bucket(key: str, per: str, group: dict[str, Any] | None) -> dict[str, Any]:
    label = key if per == "day" else key[:13].replace("T", " ") + ":00"
    empty = {"records": 0, "runs": 0, "input_tokens": 0, "output_tokens": 0,
             "cache_read_tokens": 0, "cache_write_tokens": 0, "cost_usd": 0.0}
    figures = {**empty, **(group or {})}
    return {**figures, "key": key, "label": label,
            "tokens": figures["input_tokens"] + figures["output_tokens"]}


# -- charts: SVG geometry in viewBox units --------------------------------------------------

WIDTH = 640
HEIGHT = 180
MARGIN_LEFT = 8
MARGIN_BOTTOM = 22
MARGIN_TOP = 16


def columns(series: list[dict[str, Any]], per: str) -> dict[str, Any]:
    """A column chart of cost per bucket: each column's box, and a few axis labels."""
    most = max((row["cost_usd"] for row in series), default=0.0)
    plot = HEIGHT - MARGIN_BOTTOM - MARGIN_TOP
    width = (WIDTH - 2 * MARGIN_LEFT) / max(1, len(series))
    gap = min(2.0, width * 0.2)
    bars = []
    for i, row in enumerate(series):
        height = plot * row["cost_usd"] / most if most else 0.0
        if row["cost_usd"] and height < 1:
            height = 1.0  # a cost too small to see still shows
        bars.append({**row, "x": round(MARGIN_LEFT + i * width + gap / 2, 2),
                     "width": round(max(0.5, width - gap), 2),
                     "y": round(MARGIN_TOP + plot - height, 2), "height": round(height, 2)})
    every = max(1, len(series) // 6)
    ticks = [{"x": round(MARGIN_LEFT + (i + 0.5) * width, 2),
              "text": row["label"][5:] if per == "day" else row["label"][11:]}
             for i, row in enumerate(series) if i % every == 0]
    return {"width": WIDTH, "height": HEIGHT, "bars": bars, "ticks": ticks, "most": most,
            "baseline": HEIGHT - MARGIN_BOTTOM, "label_y": HEIGHT - 6}


def bars(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows``, each with the length of its cost bar (``bar``: percent of the largest cost;
    a cost too small to see still shows)."""
    most = max((row["cost_usd"] for row in rows), default=0.0)
    out = []
    for row in rows:
        bar = 100.0 * row["cost_usd"] / most if most else 0.0
        out.append({**row, "bar": round(max(bar, 0.5) if row["cost_usd"] else 0.0, 2)})
    return out
