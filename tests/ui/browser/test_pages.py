"""The pages in a real browser: the task list and the per-pod live page, updated over SSE."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .conftest import Server

pytestmark = pytest.mark.browser


def row(page: Page, task_id: str):
    return page.locator(f'tr.task[data-id="{task_id}"]')


def history_versions(page: Page) -> list[int]:
    return [int(v) for v in page.locator("#history li").evaluate_all(
        "items => items.map(li => li.dataset.version)")]


def open_pod(page: Page, task: dict) -> None:
    page.goto(f"/pods/{task['id']}")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")


def job_spec(*lines: str) -> dict:
    return {"command": [sys.executable, "-c", "\n".join(lines)]}


def test_a_task_created_from_the_form_appears_in_the_list_without_reload(
    page: Page, server: Server
) -> None:
    page.goto("/")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    page.evaluate("window.sameDocument = true")

    page.fill("#create-form [name=title]", "Add rate limiting")
    page.fill("#create-form [name=description]", "Limit **login** attempts.")
    page.click("#create-form button[type=submit]")

    created = page.locator("tr.task", has_text="Add rate limiting")
    expect(created).to_have_count(1)
    # The pod starts the task; the row follows over the stream.
    expect(created.locator(".badge")).to_have_text("running")
    assert page.evaluate("window.sameDocument") is True
    task = server.task(created.get_attribute("data-id"))
    assert task["title"] == "Add rate limiting"
    assert task["description"] == "Limit **login** attempts."


def test_a_markdown_file_fills_the_description(page: Page, server: Server, tmp_path: Path) -> None:
    prd = tmp_path / "prd.md"
    prd.write_text("# Billing portal\n\nCustomers see their invoices.\n")
    page.goto("/")

    page.set_input_files("#create-form [name=file]", str(prd))
    page.check("#create-form [name=workflow][value=project]")
    expect(page.locator("#create-form [name=title]")).to_have_value("Billing portal")
    page.click("#create-form button[type=submit]")

    created = page.locator("tr.task", has_text="Billing portal")
    expect(created).to_have_count(1)
    task = server.task(created.get_attribute("data-id"))
    assert (task["workflow"], task["description"]) == ("project", prd.read_text())


def test_tasks_created_and_changed_elsewhere_show_up_live(page: Page, server: Server) -> None:
    page.goto("/")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")

    task = server.create("Made through the API")
    expect(row(page, task["id"]).locator(".badge")).to_have_text("running")
    server.command(task["id"], "pause", reason="lunch")

    expect(row(page, task["id"]).locator(".badge")).to_have_text("paused")
    expect(row(page, task["id"]).locator("button[data-command=resume]")).to_be_enabled()


def test_the_list_filters_by_status_and_searches_titles(page: Page, server: Server) -> None:
    alpha = server.create("Alpha login limits")
    beta = server.create("Beta billing page")
    server.wait_for(beta["id"], lambda t: t["status"] == "running")
    server.command(beta["id"], "pause")
    page.goto("/")
    expect(row(page, beta["id"]).locator(".badge")).to_have_text("paused")

    page.select_option("#filter-status", "paused")
    expect(row(page, alpha["id"])).to_be_hidden()
    expect(row(page, beta["id"])).to_be_visible()

    page.select_option("#filter-status", "")
    page.fill("#filter-query", "LOGIN")
    expect(row(page, alpha["id"])).to_be_visible()
    expect(row(page, beta["id"])).to_be_hidden()
    assert "q=login" in page.url


def test_list_buttons_act_and_an_api_error_is_shown(page: Page, server: Server) -> None:
    task = server.create("Pause me")
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    page.goto("/")

    row(page, task["id"]).locator("button[data-command=pause]").click()
    expect(row(page, task["id"]).locator(".badge")).to_have_text("paused")

    page.fill("#create-form [name=title]", "   ")
    page.click("#create-form button[type=submit]")
    error = page.locator("#create-form .form-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("title")
    expect(error).to_contain_text("invalid_input")


def test_task_text_and_markdown_are_shown_never_run(page: Page, server: Server) -> None:
    title = '<img src=x onerror="window.owned=1">Hello'
    task = server.create(title, "# Spec\n\n<script>window.owned=2</script> **bold** "
                                "[click](javascript:window.owned=3)")
    page.goto("/")
    expect(row(page, task["id"]).locator("td.title a")).to_have_text(title)

    page.click(f'tr.task[data-id="{task["id"]}"] td.title a')
    expect(page.locator("#task-title")).to_have_text(title)
    spec = page.locator("#spec-text")
    expect(spec.locator("h1")).to_have_text("Spec")
    expect(spec.locator("strong")).to_have_text("bold")
    expect(spec).to_contain_text("<script>window.owned=2</script>")
    assert spec.locator("script").count() == 0
    assert spec.locator("a[href^=javascript]").count() == 0
    assert page.evaluate("window.owned") is None


def test_the_pod_page_shows_events_as_they_happen(page: Page, server: Server) -> None:
    task = server.create("Watch me", "Some *spec*")
    open_pod(page, task)
    expect(page.locator("#history li[data-version='2']")).to_contain_text("TaskStarted")
    expect(page.locator("#spec-text em")).to_have_text("spec")
    expect(page.locator("#timeline .current")).to_have_attribute(
        "data-phase", "spec_clarification")

    server.command(task["id"], "pause", reason="coffee")

    expect(page.locator("#history li[data-version='3']")).to_contain_text("TaskPaused")
    expect(page.locator("#task-status")).to_have_text("paused")
    expect(page.locator("#resume")).to_be_visible()
    page.click("#resume")
    expect(page.locator("#history li[data-version='4']")).to_contain_text("TaskResumed")
    expect(page.locator("#task-status")).to_have_text("running")
    assert history_versions(page) == [1, 2, 3, 4]


def test_a_gate_is_approved_from_the_page_after_the_agent_ran(page: Page, server: Server) -> None:
    task = server.create("Gated")
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    open_pod(page, task)

    server.command(task["id"], "queue_job", job_id="spec-1", agent="spec_writer",
                   spec=job_spec("print('hello from the job')"))

    expect(page.locator("#approve")).to_be_visible()
    expect(page.locator("#task-status")).to_have_text("waiting")
    job = page.locator('.column[data-column="succeeded"] .job[data-job-id="spec-1"]')
    expect(job).to_be_visible()
    job.locator("[data-show-run]").click()
    expect(page.locator("#runs .run .output")).to_contain_text("hello from the job")
    expect(page.locator("#runs .run .output")).to_contain_text("finished: succeeded")

    page.fill("#approve-comment", "looks right")
    page.click("#approve")

    expect(page.locator("#task-phase")).to_have_text("planning")
    expect(page.locator("#task-status")).to_have_text("running")
    expect(page.locator("#approve")).to_have_count(0)
    expect(page.locator("#history")).to_contain_text("PhaseApproved")
    assert server.task(task["id"])["approvals"][0]["comment"] == "looks right"


def test_changes_are_requested_with_feedback(page: Page, server: Server) -> None:
    task = server.create("Send back")
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    server.command(task["id"], "queue_job", job_id="j", agent="spec_writer",
                   spec=job_spec("pass"))
    open_pod(page, task)
    expect(page.locator("#request-changes")).to_be_visible()

    page.fill("#changes-feedback", "name the endpoints")
    page.click("#request-changes")

    expect(page.locator("#task-status")).to_have_text("running")
    expect(page.locator("#history")).to_contain_text("ChangesRequested")
    expect(page.locator(".reviews")).to_contain_text("name the endpoints")


def test_an_agent_streams_its_output_while_it_runs(
    page: Page, server: Server, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    task = server.create("Streams")
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    open_pod(page, task)

    server.command(task["id"], "queue_job", job_id="long", agent="developer", spec=job_spec(
        "import os, time",
        "print('first line', flush=True)",
        f"while not os.path.exists({str(go)!r}): time.sleep(0.02)",
        "print('second line', flush=True)",
    ))

    output = page.locator("#runs .run .output")
    expect(output).to_contain_text("first line")
    expect(page.locator('.job[data-job-id="long"]')).to_have_attribute("data-status", "running")
    go.touch()
    expect(output).to_contain_text("second line")
    expect(output).to_contain_text("finished: succeeded")
    assert output.inner_text().count("first line") == 1


def test_time_travel_shows_an_older_version_and_what_changed(page: Page, server: Server) -> None:
    task = server.create("Travel")
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    server.command(task["id"], "pause")
    server.command(task["id"], "resume")
    open_pod(page, task)
    expect(page.locator("#history li")).to_have_count(4)

    page.fill("#travel-number", "3")
    page.click("#travel-go")

    expect(page.locator(".travel-banner h2")).to_contain_text("Version 3 of 4")
    expect(page.locator("#task-status")).to_have_text("paused")
    status = page.locator('#travel-diff tr[data-field="status"]')
    expect(status.locator(".before")).to_have_text("running")
    expect(status.locator(".after")).to_have_text("paused")
    expect(page.locator("#actions")).to_have_count(0)

    page.click("#history li[data-version='1'] button.v")
    expect(page.locator(".travel-banner h2")).to_contain_text("Version 1 of 4")
    expect(page.locator("#task-status")).to_have_text("pending")

    page.click("#travel-live")
    expect(page.locator(".travel-banner")).to_have_count(0)
    expect(page.locator("#task-status")).to_have_text("running")


def test_a_cut_stream_reconnects_and_shows_every_event_once_in_order(
    page: Page, server: Server
) -> None:
    task = server.create("Reconnect")
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    open_pod(page, task)
    expect(page.locator("#history li")).to_have_count(2)

    server.restart()  # every stream is cut; the page reconnects by itself
    server.command(task["id"], "pause")
    server.command(task["id"], "resume")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    server.command(task["id"], "update_spec", description="after the reconnect")

    head = server.task(task["id"])["version"]
    expect(page.locator("#history li")).to_have_count(head)
    expect(page.locator("#history li").last).to_contain_text("SpecUpdated")
    assert history_versions(page) == list(range(1, head + 1))
    expect(page.locator("#spec-text")).to_have_text("after the reconnect")


def test_an_unknown_task_is_a_404_page(page: Page, server: Server) -> None:
    for task_id in (str(uuid.uuid4()), "not-a-task"):
        response = page.goto(f"/pods/{task_id}")
        assert response is not None and response.status == 404
        expect(page.locator("h1")).to_have_text("Not found")
        expect(page.locator("main")).to_contain_text(task_id)


def test_a_running_job_is_interrupted_held_retried_and_cancelled_from_the_board(
    page: Page, server: Server
) -> None:
    task = server.create("Board")
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    open_pod(page, task)

    server.command(task["id"], "queue_job", job_id="stuck", agent="developer", max_attempts=1,
                   spec=job_spec("import time", "print('working', flush=True)",
                                 "time.sleep(60)"))
    running = page.locator('.column[data-column="running"] .job[data-job-id="stuck"]')
    expect(running).to_be_visible()
    expect(page.locator("#runs .run .output")).to_contain_text("working")
    running.get_by_role("button", name="interrupt").click()

    # An interrupt holds the job for a person (issue 12): retry, skip or cancel it.
    held = page.locator('.column[data-column="held"] .job[data-job-id="stuck"]')
    # The interrupted run ends, is recorded and reaches the page over SSE: slower under load.
    expect(held).to_be_visible(timeout=15_000)
    expect(page.locator("#forward [data-action=retry_job]")).to_be_visible()
    held.get_by_role("button", name="retry").click()

    expect(page.locator("#history")).to_contain_text("JobRequeued")
    again = page.locator('.column[data-column="running"] .job[data-job-id="stuck"]')
    expect(again).to_be_visible()
    again.get_by_role("button", name="interrupt").click()
    expect(held).to_be_visible(timeout=15_000)
    expect(page.locator("#runs .run[data-job-id=stuck] .badge")).to_have_text(
        ["interrupted", "interrupted"])
    page.once("dialog", lambda dialog: dialog.accept())
    held.get_by_role("button", name="cancel").click()
    cancelled = page.locator('.column[data-column="cancelled"] .job[data-job-id="stuck"]')
    expect(cancelled).to_be_visible()



def test_with_api_keys_the_pages_ask_for_a_login_and_then_work_live(
    browser, database, tmp_path: Path
) -> None:
    server = Server(database, tmp_path, env={"IPA_API_KEYS": "ann:s3cret-key"})
    server.api.headers["X-API-Key"] = "s3cret-key"
    server.start()
    context = browser.new_context(base_url=server.url)
    try:
        page = context.new_page()
        page.goto("/")
        expect(page).to_have_url(f"{server.url}/login?next=/")
        page.fill("#key", "s3cret-key")
        page.click("button[type=submit]")
        expect(page.locator("#live")).to_have_attribute("data-state", "live")

        page.fill("#create-form [name=title]", "Behind a key")
        page.click("#create-form button[type=submit]")
        created = page.locator("tr.task", has_text="Behind a key")
        expect(created.locator(".badge")).to_have_text("running")  # live, with the cookie
        events = server.api.get(f"/api/tasks/{created.get_attribute('data-id')}/events").json()
        assert events["items"][0]["actor"] == "api-key:ann"
    finally:
        context.close()
        server.stop()
        server.api.close()
