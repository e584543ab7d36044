"""A task whose job died offers a way forward on its page (issue 12, B4)."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from .conftest import Server
from .test_pages import job_spec, open_pod

pytestmark = pytest.mark.browser


def in_planning(server: Server, title: str) -> dict:
    """A task past its first gate, running in ``planning``."""
    task = server.create(title)
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    server.command(task["id"], "queue_job", job_id="spec", agent="spec_writer",
                   spec=job_spec("print('the spec')"))
    server.wait_for(task["id"], lambda t: t["status"] == "waiting")
    server.command(task["id"], "approve")
    return server.wait_for(task["id"], lambda t: (t["phase"], t["status"]) == (
        "planning", "running"))


def test_a_dead_job_offers_retry_and_back_to_a_phase_and_retry_requeues_it(
    page: Page, server: Server
) -> None:
    task = in_planning(server, "Dies")
    server.command(task["id"], "queue_job", job_id="boom", agent="developer", max_attempts=1,
                   spec=job_spec("import sys", "print('broken', flush=True)", "sys.exit(3)"))
    server.wait_for(task["id"], lambda t: any(
        j["job_id"] == "boom" and j["status"] == "dead" for j in t["jobs"]))
    open_pod(page, task)

    forward = page.locator("#forward")
    expect(forward).to_be_visible()
    expect(forward).to_contain_text("boom")
    expect(forward.locator("[data-action=retry_job]")).to_be_visible()
    expect(forward.locator("[data-action=return_to_phase]")).to_be_visible()
    expect(forward.locator("#forward-phase option")).to_contain_text(["spec_clarification"])
    expect(page.locator("#runs .run[data-job-id=boom] .badge")).to_have_text("failed")

    forward.locator("[data-action=retry_job]").click()

    expect(page.locator("#history")).to_contain_text("JobRequeued")
    # The retried job ran again (and failed again): two runs, each with its own outcome.
    expect(page.locator("#runs .run[data-job-id=boom]")).to_have_count(2, timeout=15_000)
    expect(page.locator("#runs .run[data-job-id=boom] .badge")).to_have_text(
        ["failed", "failed"], timeout=15_000)
    expect(page.locator('.column[data-column="dead"] .job[data-job-id="boom"]')).to_be_visible()


def test_a_dead_job_is_sent_back_to_an_earlier_phase_from_the_page(
    page: Page, server: Server
) -> None:
    task = in_planning(server, "Back")
    server.command(task["id"], "queue_job", job_id="boom", agent="developer", max_attempts=1,
                   spec=job_spec("raise SystemExit(2)"))
    server.wait_for(task["id"], lambda t: any(j["status"] == "dead" for j in t["jobs"]))
    open_pod(page, task)

    page.select_option("#forward-phase", "spec_clarification")
    page.fill("#forward-feedback", "the spec misses the endpoints")
    page.locator("#forward [data-action=return_to_phase]").click()

    expect(page.locator("#task-phase")).to_have_text("spec_clarification")
    expect(page.locator(".reviews")).to_contain_text("the spec misses the endpoints")
