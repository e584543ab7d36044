"""Time travel and links on the pod page (issue 12, B6): every panel rewinds to the version
shown, the URL carries it, and events, jobs and runs have anchors."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from .conftest import Server
from .test_pages import job_spec

pytestmark = pytest.mark.browser


def two_runs(server: Server) -> tuple[dict, list[dict]]:
    """A task whose two jobs ran one after the other; its JobStarted events."""
    task = server.create("Two runs")
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    server.command(task["id"], "queue_job", job_id="first", agent="developer",
                   spec=job_spec("print('one')"))
    server.command(task["id"], "queue_job", job_id="second", agent="developer",
                   depends_on=["first"], spec=job_spec("print('two')"))
    server.wait_for(task["id"], lambda t: all(
        j["status"] == "succeeded" for j in t["jobs"]) and len(t["jobs"]) == 2)
    events = server.api.get(f"/api/tasks/{task['id']}/events").json()["items"]
    return task, [e for e in events if e["type"] == "JobStarted"]


def test_a_version_in_the_url_rewinds_every_panel_and_the_slider_updates_the_url(
    page: Page, server: Server
) -> None:
    task, started = two_runs(server)
    first = started[0]["version"]  # the first run has started, the second not yet

    page.goto(f"/pods/{task['id']}?version={first}")
    # The head the banner names is the task's version when the page was made: events that come
    # after both jobs succeeded (the runs' memories) may still be landing.
    banner = page.locator(".travel-banner h2")
    expect(banner).to_contain_text(re.compile(rf"Version {first} of \d+"))
    head = int(re.search(r"of (\d+)", banner.inner_text()).group(1))
    assert head > started[1]["version"]
    expect(page.locator("#runs .run")).to_have_count(1)
    expect(page.locator("#runs .run")).to_have_attribute("data-job-id", "first")
    expect(page.locator("#runs .run .badge")).to_have_text("running")
    expect(page.locator("#travel-number")).to_have_value(str(first))
    expect(page.locator("#travel-live")).to_be_enabled()
    expect(page.locator(f"#history li[data-version='{first}']")).to_have_class(
        re.compile("selected"))

    page.fill("#travel-number", str(head))
    page.click("#travel-go")
    expect(page).to_have_url(re.compile(rf"\?version={head}$"))
    expect(page.locator("#runs .run")).to_have_count(2)
    expect(page.locator("#runs .run .badge")).to_have_text(["succeeded", "succeeded"])

    page.click("#travel-live")
    expect(page).to_have_url(re.compile(rf"/pods/{task['id']}$"))
    expect(page.locator(".travel-banner")).to_have_count(0)


def test_event_job_and_run_anchors_scroll_to_and_highlight_their_element(
    page: Page, server: Server
) -> None:
    task, started = two_runs(server)
    page.set_viewport_size({"width": 1280, "height": 600})
    page.goto(f"/pods/{task['id']}#v{started[0]['version']}")
    event = page.locator(f"#v{started[0]['version']}")
    expect(event).to_have_class(re.compile("highlight"))
    expect(event).to_be_in_viewport()

    page.goto(f"/pods/{task['id']}#job-second")
    expect(page.locator("#job-second")).to_have_class(re.compile("highlight"))
    expect(page.locator("#job-second")).to_be_in_viewport()

    run_id = started[1]["data"]["run_id"]
    page.goto(f"/pods/{task['id']}#run-{run_id}")
    expect(page.locator(f"#run-{run_id}")).to_have_class(re.compile("highlight"))
    expect(page.locator(f"#run-{run_id}")).to_be_in_viewport()
    expect(page.locator("#job-second")).not_to_have_class(re.compile("highlight"))


def test_a_version_the_task_does_not_have_is_a_404_page(page: Page, server: Server) -> None:
    task = server.create("Short")
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    for version in ("99", "0", "x"):
        response = page.goto(f"/pods/{task['id']}?version={version}")
        assert response is not None and response.status == 404
        expect(page.locator("main")).to_contain_text(f"version {version}")
