"""A project's page (issue #14): its backlog by phase with links to its children, a child's page
linking back, the children board following the project's and the children's events live, a
failed item retried from the board and ``max_children`` set.

The project and its children are recorded in the database before ``ipa serve`` starts
(``seed_project``: no agent runs; the project is paused, so its pod spawns nothing, and each
child stands where its pod has nothing to do), with the tests' audit key, which the server is
given too.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import pytest
from playwright.sync_api import Page, expect

from ipa.eventstore import ConnectionParams, EventStore, StoreSettings

from ...eventstore.helpers import AUDIT_KEY, AUDIT_KEY_TEXT
from ...fakes.claude import FakeClaude
from ..test_children_api import Swarm, seed_project
from .conftest import Server
from .test_pages import job_spec, open_pod
from .test_readable import FITS

pytestmark = pytest.mark.browser


def seed(database: ConnectionParams) -> Swarm:
    """``seed_project`` in the test's database, from a thread of its own (playwright's loop
    runs in this one)."""

    async def record() -> Swarm:
        settings = StoreSettings(snapshot_interval=0, live=False, audit_key=AUDIT_KEY)
        async with EventStore.open(database, settings) as store:
            return await seed_project(store)

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(anyio.run, record).result()


@pytest.fixture
def swarm(database: ConnectionParams) -> Swarm:
    return seed(database)


@pytest.fixture
def fake(tmp_path: Path) -> FakeClaude:
    """The Claude Code CLI the server's agent jobs run (scripted by the test that runs one)."""
    return FakeClaude(tmp_path / "fake")


@pytest.fixture
def server(database: ConnectionParams, tmp_path: Path, swarm: Swarm,
           fake: FakeClaude) -> Iterator[Server]:
    """``ipa serve`` started on the seeded database (it recovers the children's pods)."""
    server = Server(database, tmp_path, env={"IPA_AUDIT_KEY": AUDIT_KEY_TEXT,
                                             "IPA_CLAUDE_CLI": str(fake.cli)})
    server.start()
    try:
        # Until the task list has every child's row (the view's children carry their status).
        server.wait_for(str(swarm.project), lambda t: len(t["children"]) == 5
                        and all(c["child_status"] for c in t["children"]))
        yield server
    finally:
        server.stop()
        server.api.close()


def on_board(page: Page, column: str, item_id: str):
    return page.locator(f'#children-board [data-column="{column}"] .child[data-item="{item_id}"]')


def test_the_project_page_lists_the_backlog_by_phase_and_links_to_each_child_and_back(
    page: Page, server: Server, swarm: Swarm
) -> None:
    open_pod(page, {"id": str(swarm.project)})

    phases = page.locator("#backlog .backlog-phase")
    expect(phases).to_have_count(3)
    assert [p.get_attribute("data-phase") for p in phases.all()] == [
        "infrastructure", "development", "qa"]
    development = page.locator('#backlog .backlog-phase[data-phase="development"] li.item')
    assert [li.get_attribute("data-item") for li in development.all()] == [
        "schema", "api", "auth", "ui", "docs"]  # dependency order, then priority
    api = page.locator("#item-api")
    expect(api.locator(".chip")).to_have_text("backend_developer")
    expect(api.locator(".item-status")).to_have_text("spawned")
    expect(api.locator(".item-after")).to_have_text("after: schema, ci")
    expect(api.locator(".acceptance li")).to_have_text(["api has tests", "api is documented"])
    expect(page.locator("#item-ui .item-after")).to_have_text("after: api, auth")
    expect(page.locator("#item-ui .child-link")).to_have_count(0)  # not spawned yet
    for column, item_id in (("finished", "ci"), ("finished", "schema"), ("running", "api"),
                            ("waiting", "auth"), ("failed", "docs"), ("queued", "ui"),
                            ("queued", "e2e")):
        expect(on_board(page, column, item_id)).to_be_visible()
    expect(page.locator("#max-children")).to_have_text("4")
    assert page.evaluate(FITS)

    child = str(swarm.children["api"])
    api.locator(".child-link").click()
    expect(page).to_have_url(f"{server.url}/pods/{child}")
    expect(page.locator("#task-item")).to_have_text("api")
    expect(page.locator("#task-project")).to_contain_text("backend_developer")
    expect(page.locator("#project-link")).to_have_text("Shop")
    page.locator("#project-link").click()
    expect(page).to_have_url(f"{server.url}/pods/{swarm.project}")
    expect(page.locator("#backlog")).to_be_visible()


def test_a_failed_item_is_retried_from_the_board_and_the_board_follows_live(
    page: Page, server: Server, swarm: Swarm
) -> None:
    open_pod(page, {"id": str(swarm.project)})
    failed = on_board(page, "failed", "docs")
    expect(failed.locator("[data-action=retry_item]")).to_be_visible()
    expect(failed.locator("[data-action=skip_item]")).to_be_visible()
    expect(failed.locator("[data-action=cancel_item]")).to_be_visible()

    failed.locator("[data-action=retry_item]").click()

    expect(on_board(page, "queued", "docs")).to_be_visible()
    expect(failed).to_have_count(0)
    expect(page.locator("#history")).to_contain_text("ItemRetried")
    expect(page.locator("#item-docs .item-status")).to_have_text("approved")

    # A child's own event (on its stream, not the project's) moves its card too.
    server.command(str(swarm.children["api"]), "pause", reason="look at it")
    expect(on_board(page, "waiting", "api")).to_be_visible()
    expect(on_board(page, "waiting", "api").locator(".badge")).to_have_text("paused")

    page.fill("#max-children-input", "6")
    page.locator("#max-children-form button").click()
    expect(page.locator("#max-children")).to_have_text("6")
    assert server.task(str(swarm.project))["max_children"] == 6


@pytest.mark.parametrize("width", [390, 1920])
def test_the_project_page_fits_from_a_phone_to_a_wide_screen(
    page: Page, server: Server, swarm: Swarm, width: int
) -> None:
    page.set_viewport_size({"width": width, "height": 900})
    open_pod(page, {"id": str(swarm.project)})
    expect(page.locator("#children-board .child")).to_have_count(7)

    assert page.evaluate(FITS), f"the project page scrolls sideways at {width} px"
    for card in page.locator("#children-board .child, #backlog li.item").all():
        box = card.bounding_box()
        assert box is not None and box["x"] + box["width"] <= width


def test_the_agent_grid_shows_a_childs_agent_at_work_and_the_totals_follow_live(
    page: Page, server: Server, swarm: Swarm, fake: FakeClaude, tmp_path: Path
) -> None:
    fake.script({"backend_developer": [{"messages": ["on it"], "text": "done",
                                        "usage": {"input_tokens": 1200, "output_tokens": 300},
                                        "cost": 0.25}]})
    go = tmp_path / "go"
    child = str(swarm.children["api"])
    open_pod(page, {"id": str(swarm.project)})
    page.evaluate("window.sameDocument = true")
    grid = page.locator("#agent-grid")
    expect(grid).to_contain_text("No agent is at work")
    total = page.locator('#swarm-usage tr[data-row="total"]')
    expect(total.locator(".cost")).to_have_text("$0.0000")

    # A job of the child's (a command: no RARV cycle, it acts) runs until the test lets it go.
    server.command(child, "queue_job", job_id="wait", agent="backend_developer", spec=job_spec(
        "import os, time",
        f"while not os.path.exists({str(go)!r}): time.sleep(0.02)",
    ))

    agent = grid.locator('.agent[data-item="api"]')
    expect(agent).to_have_count(1)
    expect(agent.locator(".agent-type")).to_have_text("backend_developer")
    expect(agent.locator(".rarv-step.now")).to_have_text("act")
    expect(agent.locator("time[data-elapsed]")).to_be_visible()
    expect(agent.locator(".child-link")).to_have_attribute("href", f"/pods/{child}#job-wait")
    expect(page.locator("#agent-count")).to_have_text("1")
    assert page.evaluate(FITS)
    go.touch()
    expect(grid.locator(".agent")).to_have_count(0)

    # An agent's run (through the scripted CLI) records its usage: the totals follow.
    server.command(child, "queue_job", job_id="build-2", agent="backend_developer",
                   max_attempts=1, spec={"runner": "claude"})

    expect(total.locator(".cost")).to_have_text("$0.2500")
    expect(total.locator(".tokens")).to_have_text("1,500")
    children = page.locator('#swarm-usage tr[data-row="children"]')
    expect(children.locator(".tokens")).to_have_text("1,500")
    expect(page.locator('#swarm-usage tr[data-swarm="engineering"] .cost')).to_have_text(
        "$0.2500")
    expect(on_board(page, "running", "api").locator(".child-spent")).to_have_text(
        "$0.2500 · 1,500 tokens")
    assert page.evaluate("window.sameDocument") is True  # live, not reloaded
    usage = server.task(str(swarm.project))["swarm_usage"]
    assert usage["total"] == {"tokens": 1500, "cost_usd": 0.25}
