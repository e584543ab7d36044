"""A project's backlog drawn as a dependency graph on its page (issue #14 item 8): a box per
item in its status's colour, an arrow per dependency, following the children live; a re-plan of
an edited PRD (item 6) approved from the page, after which the graph, the board and the list
show the new item and the dropped one; and the graph's card fits a phone's width.

The project is seeded as in ``test_project_page`` (paused in development, no agent runs); the
re-plan test runs ``ipa serve`` with its agents queued by the pods (``IPA_AUTO_AGENTS=1``) and
the scripted Claude Code CLI as the product analyst.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect

from ipa.eventstore import ConnectionParams

from ...eventstore.helpers import AUDIT_KEY_TEXT
from ...fakes.claude import FakeClaude, backlog_answer
from ..test_children_api import ITEMS, Swarm
from .conftest import Server
from .test_pages import open_pod
from .test_project_page import on_board, seed
from .test_readable import FITS

pytestmark = pytest.mark.browser

DEPENDENCIES = [(d, i.id) for i in ITEMS for d in i.depends_on]
"""Every (dependency, dependant) pair of the seeded backlog: six."""

SEARCH = {"id": "search", "title": "Build search", "description": "Find products.",
          "kind": "backend_developer", "phase": "development", "priority": 4,
          "depends_on": ["api"], "acceptance": ["search has tests"]}
"""What the re-plan adds: after ``api``, whose child never ends here, so it stays queued."""


@pytest.fixture
def swarm(database: ConnectionParams) -> Swarm:
    return seed(database)


@pytest.fixture
def fake(tmp_path: Path) -> FakeClaude:
    return FakeClaude(tmp_path / "fake")


@pytest.fixture
def auto_agents() -> str:
    """``IPA_AUTO_AGENTS`` for the server: a test that wants the pods to queue the re-plan
    parametrizes it to ``"1"``."""
    return "0"


@pytest.fixture
def server(database: ConnectionParams, tmp_path: Path, swarm: Swarm, fake: FakeClaude,
           auto_agents: str) -> Iterator[Server]:
    server = Server(database, tmp_path, env={"IPA_AUDIT_KEY": AUDIT_KEY_TEXT,
                                             "IPA_CLAUDE_CLI": str(fake.cli),
                                             "IPA_AUTO_AGENTS": auto_agents})
    server.start()
    try:
        server.wait_for(str(swarm.project), lambda t: len(t["children"]) == 5
                        and all(c["child_status"] for c in t["children"]))
        yield server
    finally:
        server.stop()
        server.api.close()


def node(page: Page, item_id: str) -> Locator:
    return page.locator(f'#backlog-graph .gnode[data-item="{item_id}"]')


def edge(page: Page, source: str, target: str) -> Locator:
    return page.locator(f'#backlog-graph .gedge[data-from="{source}"][data-to="{target}"]')


def test_the_graph_draws_every_item_and_dependency_and_follows_the_children_live(
    page: Page, server: Server, swarm: Swarm
) -> None:
    open_pod(page, {"id": str(swarm.project)})
    page.evaluate("window.sameDocument = true")

    nodes = page.locator("#backlog-graph .gnode")
    expect(nodes).to_have_count(len(ITEMS))
    assert sorted(n.get_attribute("data-item") for n in nodes.all()) == sorted(
        i.id for i in ITEMS)
    expect(page.locator("#backlog-graph .gedge")).to_have_count(len(DEPENDENCIES))
    for source, target in DEPENDENCIES:
        expect(edge(page, source, target)).to_have_count(1)
    expect(page.locator("#backlog-graph h2")).to_contain_text("7 item(s) · 6 dependencies")
    # A column per depth: the longest chain of dependencies before the item.
    assert {i.id: node(page, i.id).get_attribute("data-depth") for i in ITEMS} == {
        "ci": "0", "schema": "0", "docs": "0", "api": "1", "auth": "1", "ui": "2", "e2e": "3"}
    # An arrow leaves its dependency's right side and reaches its dependant's left side.
    ends = edge(page, "schema", "api").evaluate("""path => {
        const box = (id) => {
            const g = document.querySelector(`#backlog-graph .gnode[data-item="${id}"]`);
            const b = g.getBBox(), m = g.transform.baseVal.consolidate().matrix;
            return {left: m.e + b.x, right: m.e + b.x + b.width, middle: m.f + b.y + b.height / 2};
        };
        const start = path.getPointAtLength(0), end = path.getPointAtLength(path.getTotalLength());
        return {start: [start.x, start.y], end: [end.x, end.y], schema: box("schema"),
                api: box("api")};
    }""")
    assert ends["start"] == [ends["schema"]["right"], ends["schema"]["middle"]]
    assert ends["end"] == [ends["api"]["left"], ends["api"]["middle"]]
    expect(node(page, "api").locator("text.gnode-id")).to_have_text("api")
    expect(node(page, "api").locator("text.gnode-kind")).to_have_text("backend_developer")
    for item_id, classes in (("ci", "gnode-finished gchild-completed"),
                             ("schema", "gnode-finished gchild-completed"),
                             ("api", "gnode-spawned gchild-running"),
                             ("auth", "gnode-spawned gchild-waiting"),
                             ("docs", "gnode-failed gchild-failed"), ("ui", "gnode-approved"),
                             ("e2e", "gnode-approved")):
        expect(node(page, item_id)).to_have_attribute("class", f"gnode {classes}")
    # A box links to its child's page, else to its item in the backlog list.
    auth = str(swarm.children["auth"])
    expect(page.locator('#backlog-graph a:has(.gnode[data-item="auth"])')).to_have_attribute(
        "href", f"/pods/{auth}")
    expect(page.locator('#backlog-graph a:has(.gnode[data-item="ui"])')).to_have_attribute(
        "href", "#item-ui")

    # The child waiting at its gate is approved and ends: its box turns finished.
    server.command(auth, "approve", comment="fine")
    expect(node(page, "auth")).to_have_attribute("class", "gnode gnode-finished gchild-completed")
    expect(on_board(page, "finished", "auth")).to_be_visible()
    # The failed item is retried: approved again, without a child until it is spawned.
    server.command(str(swarm.project), "retry_item", item_id="docs")
    expect(node(page, "docs")).to_have_attribute("class", "gnode gnode-approved")
    expect(node(page, "api")).to_have_attribute("class", "gnode gnode-spawned gchild-running")
    assert page.evaluate("window.sameDocument") is True  # live, not reloaded

    page.locator('#backlog-graph a:has(.gnode[data-item="auth"])').click()
    expect(page).to_have_url(f"{server.url}/pods/{auth}")
    expect(page.locator("#task-item")).to_have_text("auth")


@pytest.mark.parametrize("auto_agents", ["1"])
def test_an_edited_prd_is_re_planned_and_the_change_approved_from_the_page(
    page: Page, server: Server, swarm: Swarm, fake: FakeClaude
) -> None:
    # The analyst's whole backlog again: e2e left out (dropped), search added after api.
    fake.script({"product_analyst": [backlog_answer(
        *(i.fields() for i in ITEMS if i.id != "e2e"), SEARCH)]})
    open_pod(page, {"id": str(swarm.project)})
    page.evaluate("window.sameDocument = true")
    expect(node(page, "e2e")).to_have_attribute("class", "gnode gnode-approved")
    expect(node(page, "search")).to_have_count(0)

    # A person edits the PRD and resumes the project: its pod queues the re-plan.
    page.locator("#spec details.edit summary").click()
    page.fill("#spec-editor", "PRD: a shop with search, and no end-to-end tests")
    page.locator('#spec form[data-command="update_spec"] button').click()
    expect(page.locator("#spec-history")).to_contain_text("Description edited 1 time(s)")
    page.locator("#resume").click()

    change = page.locator("#backlog-change")
    expect(change).to_be_visible(timeout=30_000)
    expect(change.locator("h3")).to_contain_text("Change 1 waits for approval")
    expect(change.locator("h3")).to_contain_text("proposed by replan-1")
    expect(change.locator(".change-add li")).to_have_count(1)
    expect(change.locator('.change-add li[data-item="search"]')).to_contain_text(
        "search Build search")
    expect(change.locator('.change-add li[data-item="search"]')).to_contain_text("after: api")
    expect(change.locator(".change-cancel li")).to_have_count(1)
    expect(change.locator('.change-cancel li[data-item="e2e"]')).to_contain_text("e2e Build e2e")
    expect(change.locator(".change-change li")).to_have_count(0)
    # Not applied before a person says so.
    expect(node(page, "search")).to_have_count(0)
    expect(node(page, "e2e")).to_have_attribute("class", "gnode gnode-approved")

    change.locator("[data-action=approve_backlog_change]").click()

    expect(change).to_have_count(0)
    expect(page.locator("#backlog h2")).to_contain_text("v2 · approved · 8 item(s)")
    expect(node(page, "search")).to_have_attribute("class", "gnode gnode-approved")
    expect(node(page, "search")).to_have_attribute("data-depth", "2")  # after schema, api
    expect(edge(page, "api", "search")).to_have_count(1)
    expect(node(page, "e2e")).to_have_attribute("class", "gnode gnode-dropped")
    expect(edge(page, "ui", "e2e")).to_have_attribute("class", "gedge gedge-dropped")
    expect(page.locator("#item-search")).to_have_attribute("data-status", "approved")
    expect(page.locator("#item-e2e")).to_have_attribute("data-status", "dropped")
    expect(on_board(page, "queued", "search")).to_be_visible()
    expect(page.locator('#children-board .child[data-item="e2e"]')).to_have_count(0)
    assert page.evaluate("window.sameDocument") is True
    backlog = server.task(str(swarm.project))["backlog"]
    assert backlog["pending"] is None and backlog["version"] == 2
    assert {i["id"]: i["status"] for i in backlog["items"]}["e2e"] == "dropped"
    [replan] = [r for r in fake.runs() if r["agent"] == "product_analyst"]
    assert "PRD: a shop with search, and no end-to-end tests" in replan["prompt"]


def test_the_graph_scrolls_inside_its_card_on_a_phone(
    page: Page, server: Server, swarm: Swarm
) -> None:
    page.set_viewport_size({"width": 390, "height": 900})
    open_pod(page, {"id": str(swarm.project)})
    expect(page.locator("#backlog-graph .gnode")).to_have_count(len(ITEMS))

    assert page.evaluate(FITS), "the project page scrolls sideways at 390 px"
    card = page.locator("#backlog-graph").bounding_box()
    assert card is not None and card["x"] >= 0 and card["x"] + card["width"] <= 390
    scroll = "document.getElementById('backlog-graph-scroll')"
    # Four columns of boxes do not fit 390 px: the graph scrolls in its own box, at full size.
    assert page.evaluate(f"{scroll}.scrollWidth > {scroll}.clientWidth")
    e2e = node(page, "e2e").bounding_box()
    assert e2e is not None and e2e["x"] + e2e["width"] > 390  # out of view, to the right
    assert e2e["width"] >= 139  # drawn at its size, not shrunk to fit
    page.evaluate(f"{scroll}.scrollLeft = {scroll}.scrollWidth")
    e2e = node(page, "e2e").bounding_box()
    assert e2e is not None and e2e["x"] + e2e["width"] <= 390
    assert page.evaluate(FITS)
    # A live update redraws the panel and keeps where the person scrolled the graph.
    left = page.evaluate(f"{scroll}.scrollLeft")
    server.command(str(swarm.project), "set_max_children", max_children=7)
    expect(page.locator("#max-children")).to_have_text("7")
    assert left > 0 and page.evaluate(f"{scroll}.scrollLeft") == left
