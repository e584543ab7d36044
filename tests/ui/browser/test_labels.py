"""Labels stay true (issue 12): a job card shows its latest state only, each run its own
outcome and duration, and the original description stays the original."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .conftest import Server
from .test_pages import job_spec, open_pod

pytestmark = pytest.mark.browser


def test_a_job_that_failed_then_succeeded_shows_no_stale_error_and_each_run_its_outcome(
    page: Page, server: Server, tmp_path: Path
) -> None:
    marker = tmp_path / "tried"
    task = server.create("Flaky")
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    server.command(task["id"], "queue_job", job_id="flaky", agent="developer", max_attempts=3,
                   spec=job_spec("import os, sys",
                                 f"if not os.path.exists({str(marker)!r}):",
                                 f"    open({str(marker)!r}, 'w').close(); sys.exit(1)"))
    server.wait_for(task["id"], lambda t: t["jobs"][0]["status"] == "succeeded")
    open_pod(page, task)

    card = page.locator('.column[data-column="succeeded"] #job-flaky')
    expect(card).to_be_visible()
    expect(card.locator(".error-text")).to_have_count(0)
    expect(card).not_to_contain_text("retry")
    runs = page.locator("#runs .run[data-job-id=flaky]")
    expect(runs.locator(".badge")).to_have_text(["succeeded", "failed"])  # newest first
    expect(runs.first.locator(".run-duration")).to_contain_text("took")


def test_the_original_description_stays_and_each_edit_says_who_and_when(
    page: Page, server: Server
) -> None:
    task = server.create("Edited", "the first words")
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    server.command(task["id"], "update_spec", description="the second words")
    open_pod(page, task)

    expect(page.locator("#spec-text")).to_have_text("the second words")
    page.click("#original-description summary")
    expect(page.locator("#original-description")).to_contain_text("the first words")
    page.click("#spec-history summary")
    expect(page.locator("#spec-history li")).to_have_count(1)
    expect(page.locator("#spec-history li")).to_contain_text("the second words")
    expect(page.locator("#spec-history li time")).to_have_count(1)
