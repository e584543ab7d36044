"""The pages read well and fit (issue 12): no sideways scroll from 390 to 1,920 px (a screenshot
of each page at each width), times in
the browser's zone, an HTML 404 for unknown pages, no console errors, a history filter."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .conftest import Server
from .test_pages import job_spec, open_pod

pytestmark = pytest.mark.browser

FITS = "document.scrollingElement.scrollWidth <= window.innerWidth"
PNG = b"\x89PNG\r\n\x1a\n"


def fits_and_shot(page: Page, directory: Path, name: str) -> Path:
    """Assert the page does not scroll sideways, and save it whole as ``name.png`` in
    ``directory`` (and in ``$IPA_SCREENSHOTS`` when that names a directory)."""
    width = page.viewport_size["width"]
    assert page.evaluate(FITS), f"{name} scrolls sideways at {width} px"
    shot = directory / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data.startswith(PNG) and len(data) > 5_000, f"{shot}: {len(data)} bytes"
    assert int.from_bytes(data[16:20], "big") == width  # IHDR: the image is the viewport wide
    keep = os.environ.get("IPA_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
    return shot


@pytest.mark.parametrize("width", [390, 1280, 1920])
def test_the_list_and_the_pod_page_fit_without_sideways_scroll(
    page: Page, server: Server, width: int, tmp_path: Path
) -> None:
    project = server.create("A project with a long name " * 4, "PRD", workflow="project")
    task = server.create("Small task")
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    server.command(task["id"], "queue_job", job_id="a-job-with-a-rather-long-identifier",
                   agent="developer", spec=job_spec("print('x' * 300)"))
    server.wait_for(task["id"], lambda t: t["status"] == "waiting")
    page.set_viewport_size({"width": width, "height": 900})

    page.goto("/")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    expect(page.locator("tr.task")).to_have_count(2)
    fits_and_shot(page, tmp_path, f"list-{width}")
    # Nothing of the table hides in its own scroll box, and every row button is in view.
    assert page.evaluate("(w => w.scrollWidth <= w.clientWidth)("
                         "document.querySelector('.table-wrap'))")
    for button in page.locator("tr.task td.actions button").all():
        box = button.bounding_box()
        assert box is not None and box["x"] + box["width"] <= width

    open_pod(page, project)
    fits_and_shot(page, tmp_path, f"project-{width}")
    last = page.locator("#timeline li").last
    expect(last).to_have_attribute("data-phase", "perpetual")
    box = last.bounding_box()
    assert box is not None and box["x"] + box["width"] <= width

    open_pod(page, task)
    page.locator(".job [data-show-run]").first.click()
    expect(page.locator("#runs .run .output")).to_contain_text("finished: succeeded")
    expect(page.locator("#gate-review")).to_be_visible()  # a task with a job, a run, a gate
    fits_and_shot(page, tmp_path, f"task-{width}")


def test_times_show_in_the_browser_zone_and_an_unknown_page_is_an_html_404(
    browser, server: Server
) -> None:
    context = browser.new_context(base_url=server.url, timezone_id="Asia/Tokyo")
    try:
        page = context.new_page()
        task = server.create("Tokyo")
        page.goto(f"/pods/{task['id']}")
        created = page.locator(".head .facts time").first
        expect(created).to_contain_text("GMT+9")
        # A relative age: "now" within the first half second, "N seconds ago" after.
        expect(created).to_contain_text(re.compile(r"· (now|\d+ \w+ ago)"))

        response = page.goto("/no/such/page")
        assert response is not None and response.status == 404
        assert "text/html" in response.headers["content-type"]
        expect(page.locator("main")).to_contain_text("/no/such/page")
        expect(page.locator("#live")).to_have_count(0)  # no "connecting…" for ever
        assert server.api.get("/api/nothing").json()["error"]["code"] == "not_found"
    finally:
        context.close()


def test_a_run_starting_logs_no_console_error_and_its_prompt_reads_as_text(
    page: Page, server: Server
) -> None:
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    task = server.create("Quiet console")
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    open_pod(page, task)

    server.command(task["id"], "queue_job", job_id="j", agent="developer",
                   spec=job_spec("print('done', flush=True)"))
    expect(page.locator("#runs .run .output")).to_contain_text("finished: succeeded")
    expect(page.locator("#runs .run .badge")).to_have_text("succeeded")
    expect(page.locator("#runs .run")).to_contain_text("took")
    assert errors == []


def test_the_event_history_filters_by_type_and_actor(page: Page, server: Server) -> None:
    task = server.create("Filtered")
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    server.command(task["id"], "pause")
    server.command(task["id"], "resume")
    open_pod(page, task)
    expect(page.locator("#history li")).to_have_count(4)

    page.select_option("#history-type", "TaskPaused")
    expect(page.locator("#history li:visible")).to_have_count(1)
    expect(page.locator("#history-count")).to_have_text("(1 of 4)")
    page.select_option("#history-type", "")
    actors = page.locator("#history-actor option").all_inner_texts()
    page.select_option("#history-actor", actors[1])
    visible = page.locator("#history li:visible")
    assert 0 < visible.count() <= 4
    for item in visible.all():
        expect(item).to_contain_text(actors[1])
