"""The analytics page (issue #17) in Chromium: reached from the task list's header, its SVG
charts and its tables show the sums of the ``UsageRecorded`` events (the same with JavaScript
off), the period form moves it, it fits 390 px without sideways scroll and logs no console
error.

The usage is recorded in the database before ``ipa serve`` starts (``seed_usage``: a project
with its children and a lone task, over three days), with the tests' audit key, which the
server is given too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest
from playwright.sync_api import Browser, Page, expect

from ipa.eventstore import ConnectionParams, EventStore, StoreSettings
from ipa.ui.page_model import money, number

from ...eventstore.helpers import AUDIT_KEY, AUDIT_KEY_TEXT
from ...projections.test_usage import History, seed_usage
from .conftest import Server
from .test_readable import FITS, fits_and_shot

pytestmark = pytest.mark.browser

TWO_DAYS = "/analytics?from=2026-11-20&to=2026-11-21"
DAY_COSTS = {"2026-11-20": 0.15, "2026-11-21": 0.508}
"""What the seeded events cost on each day (see ``seed_usage``)."""


def seed(database: ConnectionParams) -> History:
    """``seed_usage`` in the test's database, from a thread of its own (playwright's loop runs
    in this one)."""

    async def record() -> History:
        settings = StoreSettings(snapshot_interval=0, live=False, audit_key=AUDIT_KEY)
        async with EventStore.open(database, settings) as store:
            return await seed_usage(store)

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, record).result()


@pytest.fixture
def history(database: ConnectionParams) -> History:
    return seed(database)


@pytest.fixture
def server(database: ConnectionParams, tmp_path: Path, history: History) -> Iterator[Server]:
    """``ipa serve`` on the seeded database, once its analytics has read every seeded event."""
    server = Server(database, tmp_path, env={"IPA_AUDIT_KEY": AUDIT_KEY_TEXT})
    server.start()
    try:
        deadline = time.monotonic() + 20
        while server.api.get("/api/analytics", params={"from": "2026-11-20", "to": "2026-11-22",
                                                        "group_by": "task"}).json()[
                "totals"]["records"] < 7:
            assert time.monotonic() < deadline, "analytics never read the seeded events"
            time.sleep(0.05)
        yield server
    finally:
        server.stop()
        server.api.close()


def test_the_page_draws_and_tabulates_the_sums_of_the_usage_events(
    page: Page, server: Server, history: History
) -> None:
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.goto("/")
    page.locator("#analytics-link").click()
    expect(page).to_have_url(f"{server.url}/analytics")
    page.goto(TWO_DAYS)

    expect(page.locator('#totals [data-name="cost_usd"]')).to_have_text(money(0.658))
    expect(page.locator('#totals [data-name="input_tokens"]')).to_have_text(number(3850))
    expect(page.locator('#totals [data-name="runs"]')).to_have_text("5")
    bars = page.locator("#over-time svg rect.bar")
    expect(bars).to_have_count(2)
    drawn = {bar.get_attribute("data-key"): bar for bar in bars.all()}
    assert {key: float(bar.get_attribute("data-cost")) for key, bar in drawn.items()} == DAY_COSTS
    # The columns' heights are in proportion to their costs.
    heights = {key: bar.bounding_box()["height"] for key, bar in drawn.items()}
    assert heights["2026-11-20"] / heights["2026-11-21"] == pytest.approx(0.15 / 0.508, rel=0.02)
    rows = page.locator("#times-table tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator("td.cost")).to_have_text(money(0.15))
    expect(rows.nth(1).locator("td.cost")).to_have_text(money(0.508))
    expect(rows.nth(1).locator("td.tokens-in")).to_have_text(number(2350))

    project = page.locator(f'#per-project tr[data-key="{history.project}"]')
    expect(project.locator("th .name")).to_have_text("Shop")
    expect(project.locator("td.cost")).to_have_text(money(0.357))
    lone = page.locator('#per-project tr[data-key=""]')
    expect(lone.locator("th .name")).to_have_text("no project (lone tasks)")
    expect(lone.locator("td.cost")).to_have_text(money(0.301))
    # The larger cost draws the full bar, the other its share.
    widths = [float(page.locator(f'#per-project tr[data-key="{key}"] rect.bar')
                    .get_attribute("width")) for key in (str(history.project), "")]
    assert widths == [100.0, round(100 * 0.301 / 0.357, 2)]
    expect(page.locator('#per-model tr[data-key="claude-sonnet"] td.cost')).to_have_text(
        money(0.6))
    expect(page.locator('#per-agent_type tr[data-key="developer"] td.runs')).to_have_text("2")
    expect(page.locator("#top-runs tbody tr").first.locator("td.cost")).to_have_text(money(0.3))
    budget = page.locator(f'#budgets tr[data-task="{history.lone}"]')
    expect(budget.locator("td.spent")).to_have_text(money(0.551))
    expect(budget.locator(".percent")).to_have_text("110.2%")
    expect(budget).to_have_class("over")
    assert not console, console


def test_the_period_form_moves_the_page_and_says_what_is_wrong(page: Page, server: Server) -> None:
    page.goto(TWO_DAYS)
    page.fill('input[name="from"]', "2026-11-21")
    page.fill('input[name="to"]', "2026-11-21")
    page.select_option('select[name="per"]', "hour")
    page.locator("#period button[type=submit]").click()

    expect(page).to_have_url(f"{server.url}/analytics?from=2026-11-21&to=2026-11-21&per=hour")
    expect(page.locator("#over-time svg rect.bar")).to_have_count(24)
    expect(page.locator("#times-table tbody tr")).to_have_count(2)  # 00:00 and 09:00
    expect(page.locator('#times-table tr[data-key="2026-11-21T09:00:00+00:00"] td.cost')
           ).to_have_text(money(0.308))

    page.fill('input[name="from"]', "2026-11-22")
    page.locator("#period button[type=submit]").click()
    expect(page.locator("#problem")).to_contain_text("is not after from")
    expect(page.locator("#over-time")).to_have_count(0)


def test_the_page_reads_the_same_without_javascript(browser: Browser, server: Server) -> None:
    context = browser.new_context(base_url=server.url, java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(TWO_DAYS)
        expect(page.locator('#totals [data-name="cost_usd"]')).to_have_text(money(0.658))
        expect(page.locator("#over-time svg rect.bar")).to_have_count(2)
        expect(page.locator("#times-table tbody tr td.cost")).to_have_text(
            [money(0.15), money(0.508)])
    finally:
        context.close()


@pytest.mark.parametrize("width", [390, 1280])
def test_the_page_fits_without_sideways_scroll(
    page: Page, server: Server, width: int, tmp_path: Path
) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    page.goto("/analytics?from=2026-11-20&to=2026-11-22")

    expect(page.locator("#top-runs tbody tr")).to_have_count(5)
    fits_and_shot(page, tmp_path, f"analytics-{width}")
    for wrap in page.locator(".table-scroll").all():  # no table hides in its own scroll box
        assert wrap.evaluate("w => w.scrollWidth <= w.clientWidth"), wrap.inner_html()[:200]
    assert page.evaluate(FITS)
