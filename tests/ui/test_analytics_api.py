"""The analytics API, page and command (issue #17): ``GET /api/analytics`` on a real uvicorn
answers the sums of the ``UsageRecorded`` events (grouped, the most expensive runs, budget
use); a malformed or absurd period is a 400 naming the problem; without analytics, a 503;
``/analytics`` renders the same figures as HTML with no script of its own; ``ipa analytics``
prints them through a real ``ipa serve``."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import anyio
import pytest
import schemathesis

from ipa.eventstore import ConnectionParams, EventStore
from ipa.projections import Period, Usage
from ipa.ui import page_model

from ..projections.test_usage import (
    DAY1,
    DAY3,
    History,
    expected_groups,
    groups_of,
    seed_usage,
    sums,
    usage_events,
)
from .live import Live, live_server
from .test_api import assert_error
from .test_cli import ipa, url_of
from .test_fuzz import Report, _run
from .test_serve import served

pytestmark = pytest.mark.anyio

TWO_DAYS = {"from": "2026-11-20", "to": "2026-11-21"}


@pytest.fixture
async def live(store: EventStore, tmp_path: Path) -> AsyncIterator[Live]:
    """A real uvicorn serving the app with a running usage read model (``live.usage``)."""
    usage = Usage(store, store.usage_table())
    async with anyio.create_task_group() as tg:
        await tg.start(usage.run)
        async with live_server(store, tmp_path, usage=usage) as server:
            server.usage = usage  # type: ignore[attr-defined]
            yield server
        tg.cancel_scope.cancel()


@pytest.fixture
async def history(live: Live, store: EventStore) -> History:
    seeded = await seed_usage(store)
    with anyio.fail_after(20):
        await live.usage.wait_for(await store.head_position())  # type: ignore[attr-defined]
    return seeded


@pytest.mark.parametrize("group_by", ["day", "hour", "project", "task", "agent_type", "model",
                                      "day,model", "task,agent_type"])
async def test_the_api_answers_the_sums_of_the_usage_events(
    live: Live, store: EventStore, history: History, group_by: str
) -> None:
    keys = tuple(group_by.split(","))
    query = {**TWO_DAYS, "group_by": group_by}
    if "hour" in keys:
        query = {"from": "2026-11-20T00:00:00Z", "to": "2026-11-22T00:00:00Z",
                 "group_by": group_by}

    response = await live.client.get("/api/analytics", params=query)

    assert response.status_code == 200, response.text
    found = response.json()
    rows = await usage_events(store)
    span = Period(DAY1, DAY3)
    assert (found["from"], found["to"]) == (DAY1.isoformat(), DAY3.isoformat())
    assert found["group_by"] == list(keys)
    assert groups_of(found, keys) == expected_groups(rows, keys, span)
    assert found["totals"] == sums([r for r in rows if DAY1 <= r["at"] < DAY3])
    assert found["position"] == await store.head_position() and found["more"] is False


async def test_the_api_lists_the_most_expensive_runs_and_budget_use(
    live: Live, history: History
) -> None:
    response = await live.client.get("/api/analytics", params={
        "from": "2026-11-20", "to": "2026-11-22", "group_by": "project", "top": "2",
        "limit": "1"})

    found = response.json()
    assert [(r["run_id"], r["cost_usd"]) for r in found["top_runs"]] == [("run-a", 0.55),
                                                                        ("run-build", 0.3)]
    # Over three days the lone tasks (no project) spent most: 0.551 to the project's 0.357.
    assert [g["key"]["project"] for g in found["groups"]] == [None]
    assert found["groups"][0]["titles"] == {} and found["more"] is True
    assert [(b["title"], b["spent_usd"], b["budget_usd"]) for b in found["budgets"]] == [
        ("A lone task", 0.551, 0.5), ("Shop", 0.357, 1.25)]
    none = (await live.client.get("/api/analytics", params={**TWO_DAYS, "top": "0"})).json()
    assert none["top_runs"] == []


async def test_without_from_and_to_the_api_answers_the_last_30_days(live: Live) -> None:
    found = (await live.client.get("/api/analytics")).json()

    assert found["group_by"] == ["day"] and found["groups"] == []
    assert found["totals"]["records"] == 0
    span = Period(*(datetime.fromisoformat(found[k]) for k in ("from", "to")))
    assert span.days == 30


@pytest.mark.parametrize(("query", "code", "problem"), [
    ("from=2026-13-01", "bad_period", "from='2026-13-01' is not an ISO 8601 date"),
    ("from=next%20week", "bad_period", "from='next week' is not an ISO 8601"),
    ("to=2026-11-20T25:00", "bad_period", "to='2026-11-20T25:00' is not an ISO 8601"),
    ("from=2026-11-20%00", "bad_period", "is not an ISO 8601"),
    ("from=%ED%A0%80", "bad_period", "is not an ISO 8601"),  # a lone surrogate's bytes
    ("from=" + "9" * 5000, "bad_period", "is not an ISO 8601"),
    ("from=2026-11-21&to=2026-11-20", "bad_period", "is not after from"),
    ("from=2026-11-21T10:00Z&to=2026-11-21T10:00Z", "bad_period", "an empty period"),
    ("from=1900-01-01&to=2026-11-21", "bad_period", "before 1970"),
    ("from=1990-01-01&to=2026-11-21", "bad_period", "a period is at most 3660 days"),
    ("from=2026-01-01&to=2026-11-21&group_by=hour", "bad_period",
     "group_by=hour covers at most 31 days"),
    ("group_by=week", "bad_period", "'week' is not one of day, hour, project"),
    ("group_by=day,hour", "bad_period", "day and hour do not go together"),
    ("group_by=day&group_by=task", "bad_request", "group_by given more than once"),
    ("groupby=day", "bad_request", "unknown query parameter(s) 'groupby'"),
    ("limit=0", "bad_request", "limit='0': expected a whole number from 1 to 1000"),
    ("top=101", "bad_request", "top='101': expected a whole number from 0 to 100"),
    ("top=%D9%A3", "bad_request", "expected a whole number"),  # an Arabic-Indic digit
])
async def test_a_malformed_or_absurd_query_is_a_400_naming_the_problem(
    live: Live, store: EventStore, query: str, code: str, problem: str
) -> None:
    head = await store.head_position()

    response = await live.client.get(f"/api/analytics?{query}")

    error = assert_error(response, 400, code)
    assert problem in error["message"] and "\n" not in error["message"]
    assert await store.head_position() == head  # nothing written
    assert (await live.client.get("/healthz")).status_code == 200


async def test_without_analytics_the_api_and_the_page_answer_503(
    store: EventStore, tmp_path: Path
) -> None:
    async with live_server(store, tmp_path) as server:
        api = await server.client.get("/api/analytics")
        page = await server.client.get("/analytics", headers={"accept": "text/html"})
        bad = await server.client.get("/api/analytics?from=never")

    assert assert_error(api, 503, "analytics_unavailable")["message"] == (
        "analytics does not run in this server")
    assert page.status_code == 503 and "analytics does not run in this server" in page.text
    assert_error(bad, 400, "bad_period")  # the query is checked first


async def test_analytics_that_stopped_says_why(live: Live) -> None:
    live.usage.problem = "analytics stopped after log position 7: refused"  # type: ignore

    error = assert_error(await live.client.get("/api/analytics"), 503, "analytics_unavailable")

    assert error["message"] == "analytics is off: analytics stopped after log position 7: refused"


# -- the page, as a browser without JavaScript reads it ---------------------------------------


def cells(html: str, section: str) -> list[list[str]]:
    """The text of each body row's cells in the section ``id=section`` (tags dropped)."""
    part = html.split(f'id="{section}"', 1)[1].split("</section>", 1)[0]
    body = part.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    return [[re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r"<svg.*?</svg>", "", cell,
                                                                 flags=re.S))).strip()
             for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)] for row in rows]


async def test_the_page_shows_the_same_figures_in_tables_and_svg_charts(
    live: Live, store: EventStore, history: History
) -> None:
    response = await live.client.get("/analytics", params={**TWO_DAYS, "per": "day"})

    assert response.status_code == 200, response.text
    html = response.text
    assert "<script" not in html.split("</head>", 1)[1]  # no script of its own in the body
    rows = await usage_events(store)
    span = Period(DAY1, DAY3)
    days = expected_groups(rows, ("day",), span)
    money, number = page_model.money, page_model.number
    assert cells(html, "over-time") == [
        [day, money(f["cost_usd"]), number(f["input_tokens"]), number(f["output_tokens"]),
         number(f["runs"])] for (day,), f in sorted(days.items())]
    bars = dict(re.findall(r'<rect class="bar"[^>]*data-key="([0-9-]+)" data-cost="([0-9.e-]+)"',
                           html))
    assert {k: float(v) for k, v in bars.items()} == {
        "2026-11-20": days[("2026-11-20",)]["cost_usd"],
        "2026-11-21": days[("2026-11-21",)]["cost_usd"]}
    models = expected_groups(rows, ("model",), span)
    assert {row[0]: row[1] for row in cells(html, "per-model")} == {
        model: money(f["cost_usd"]) for (model,), f in models.items()}
    assert [row[0] for row in cells(html, "per-project")] == ["Shop", "no project (lone tasks)"]
    assert f'href="/pods/{history.project}"' in html
    assert cells(html, "top-runs")[0][1] == money(0.3)  # run-build's two records
    assert [row[1:3] for row in cells(html, "budgets")] == [
        [money(0.551), money(0.5)], [money(0.357), money(1.25)]]
    total = sums([r for r in rows if DAY1 <= r["at"] < DAY3])
    assert f'data-name="cost_usd" data-value="{total["cost_usd"]}"' in html


async def test_the_page_says_what_is_wrong_with_a_period(live: Live) -> None:
    bad = await live.client.get("/analytics", params={"from": "2026-11-21", "to": "2026-11-01"})
    hours = await live.client.get("/analytics", params={"from": "2026-01-01",
                                                        "to": "2026-11-01", "per": "hour"})
    per = await live.client.get("/analytics", params={"per": "week"})
    head = await live.client.head("/analytics")

    assert bad.status_code == 400 and 'role="alert"' in bad.text
    assert "is not after from" in bad.text and 'value="2026-11-21"' in bad.text
    assert hours.status_code == 400 and "group_by=hour covers at most 31 days" in hours.text
    assert per.status_code == 400 and "per=&#39;week&#39;: expected day or hour" in per.text
    assert head.status_code == 200


async def test_the_task_list_links_to_the_analytics_page(live: Live) -> None:
    html = (await live.client.get("/")).text

    assert 'href="/analytics"' in html.split("</header>", 1)[0]


# -- ipa analytics, through a real ipa serve ------------------------------------------------


async def test_ipa_analytics_prints_the_servers_figures(
    database: ConnectionParams, store: EventStore
) -> None:
    await seed_usage(store)
    head = await store.head_position()
    async with served(database) as server:
        with anyio.fail_after(30):
            while True:  # until the server's analytics has read the seeded log
                run = await ipa("analytics", "--url", server.url, "--from", "2026-11-20",
                                "--to", "2026-11-21", "--group-by", "model", "--json")
                assert run.status == 0, run.err
                if json.loads(run.out)["position"] >= head:
                    break
                await anyio.sleep(0.1)
        text = await ipa("analytics", "--url", server.url, "--from", "2026-11-20", "--to",
                         "2026-11-21", "--group-by", "model", "--top", "1")
        bad = await ipa("analytics", "--url", server.url, "--from", "2026-11-22", "--to",
                        "2026-11-21")

    found = json.loads(run.out)
    rows = await usage_events(store)
    assert groups_of(found, ("model",)) == expected_groups(rows, ("model",), Period(DAY1, DAY3))
    assert text.status == 0 and text.err == ""
    lines = text.out.splitlines()
    # (the server's pods append events of their own once it starts: a later position)
    said = re.escape(f"from {DAY1.isoformat()} to {DAY3.isoformat()} (log position ")
    assert re.fullmatch(said + r"[0-9]+\)", lines[0])
    assert int(lines[0][:-1].split()[-1]) >= head
    assert lines[1] == "total $0.6580, 3,850 tokens in, 915 out, 5 run(s), 6 record(s)"
    assert "  claude-sonnet: $0.6000, 3,300 tokens in, 800 out, 2 run(s)" in lines
    assert any(line.startswith("  $0.3000 run run-build (job build, developer, claude-sonnet) "
                               "of Build api") for line in lines)
    assert bad.status == 1 and bad.out == ""
    assert bad.err.startswith("ipa: to ('2026-11-21': ") and bad.err.endswith(
        "[HTTP 400 bad_period]\n") and bad.err.count("\n") == 1


async def test_ipa_projections_rebuild_rebuilds_analytics_to_the_same_figures(
    database: ConnectionParams, store: EventStore
) -> None:
    await seed_usage(store)
    usage = Usage(store, store.usage_table())
    await usage.open()
    try:
        await usage.catch_up()
        before = await usage.report(Period(DAY1, DAY3), ("task", "model"), top=5)
        await usage.table.drop("usage")  # lost: the rebuild makes it again

        run = await ipa("projections", "rebuild", "--database-url", url_of(database))

        head = await store.head_position()
        assert run.status == 0 and run.err == "", run.err
        assert run.lines[-1] == f"analytics rebuilt: 7 usage record(s), log position {head}"
        assert await usage.report(Period(DAY1, DAY3), ("task", "model"), top=5) == before
    finally:
        await usage.close()


# -- fuzzed -----------------------------------------------------------------------------------


def fuzz_analytics(url: str, examples: int) -> Report:
    """schemathesis on ``GET /api/analytics`` alone, as ``test_fuzz`` runs every operation but
    with more examples (a blocking call)."""
    config = schemathesis.Config.from_dict({
        "request-timeout": 10,
        "generation": {"allow-x00": True, "codec": "utf-8"},
        "checks": {"positive_data_acceptance": {"enabled": False}},
    })
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config)
    report = Report()
    [operation] = [result.ok() for result in schema.get_all_operations()
                   if result.ok().path == "/api/analytics"]
    for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
        _run(operation.label, operation.as_strategy(mode), examples, report)
    return report


async def test_schemathesis_finds_no_failure_in_the_analytics_api(
    database: ConnectionParams, store: EventStore
) -> None:
    await seed_usage(store)
    async with served(database) as server:
        report = await anyio.to_thread.run_sync(fuzz_analytics, server.url, 150)
        healthy = await ipa("analytics", "--url", server.url, "--json")

    assert not report.failures, report.failures
    assert report.total >= 200
    assert healthy.status == 0  # still serving
