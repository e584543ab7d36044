"""The task list's nodes panel (issue #15 item 1): each node of the store with its status,
pods, agents, heartbeat age and address, kept current from ``/api/nodes``; it fits 390 px."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from .conftest import Server
from .test_readable import FITS

pytestmark = pytest.mark.browser


def test_the_panel_shows_this_node_and_follows_its_pods(page: Page, server: Server) -> None:
    [node] = server.api.get("/api/nodes").json()["items"]
    page.set_viewport_size({"width": 390, "height": 900})
    page.goto("/")

    item = page.locator(f'#nodes li.node[data-id="{node["id"]}"]')
    expect(item.locator(".node-id")).to_have_text(node["id"])
    expect(item.locator(".node-status")).to_have_text("up")
    expect(item.locator(".node-self")).to_have_text("this server")
    expect(item.locator(".node-pods")).to_have_text("0 pods")
    expect(item.locator(".node-facts time")).to_have_text(re.compile(r"^\d+ s$"))
    expect(item.locator(".node-address")).to_have_text(server.url)
    assert page.evaluate(FITS), "the list scrolls sideways at 390 px with the nodes panel"

    server.create("Counted")  # its pod runs on this node: the panel's next poll says so

    expect(item.locator(".node-pods")).to_have_text("1 pod")
