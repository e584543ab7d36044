"""The memory panel of a task page (issue 16): the memories each run was given, a search of the
task's scopes by meaning (with and without JavaScript), pin and forget from the page; it says
why when agent memory is off, escapes what agents wrote and fits 390 px.

The memories are real: a job of a first task on a repository answers with ``LEARNED:`` lines
(the scripted Claude Code CLI), agent memory keeps them in the repository's scope, and a job of
a second task on the same repository is given them in its prompt.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from ipa.eventstore import ConnectionParams

from ...fakes.claude import FakeClaude
from .conftest import Server
from .test_pages import open_pod
from .test_readable import fits_and_shot

pytestmark = pytest.mark.browser

TESTS = "the test suite needs the --no-cov flag to run offline"
CLIENT = "the HTTP client for the payments API lives in src/net/client.py"
MARKUP = "a <b>bold</b> claim: <script>window.hacked = 1</script> is text"
LONG = "take payments and refunds: " + "payments_refunds_" * 14  # one unbreakable word
ANSWER = "\n".join(["Set the project up.", *(f"LEARNED: {line}" for line in (
    TESTS, CLIENT, MARKUP, LONG))])


@pytest.fixture
def fake(tmp_path: Path) -> FakeClaude:
    """The Claude Code CLI the server's agent jobs run: the first developer run teaches, the
    later ones only say they are done."""
    return FakeClaude(tmp_path / "fake").script({"developer": [
        {"text": ANSWER}, {"text": "Done."}, {"text": "Done again."}]})


@pytest.fixture
def server(database: ConnectionParams, tmp_path: Path, fake: FakeClaude) -> Iterator[Server]:
    server = Server(database, tmp_path, env={"IPA_CLAUDE_CLI": str(fake.cli)})
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.api.close()


def git_repo(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "--allow-empty", "-m", "init"], check=True)
    return path


def task_on(server: Server, repo: Path, title: str) -> dict:
    task = server.create(title, "Take payments.", repo=str(repo))
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    return task


def developer_job(server: Server, task: dict) -> dict:
    """Run one developer job (a Claude run) of ``task`` to success; return once agent memory
    has read everything it recorded."""
    server.command(task["id"], "queue_job", job_id="dev", agent="developer",
                   spec={"runner": "claude"}, max_attempts=1)
    server.wait_for(task["id"], lambda t: t["jobs"][0]["status"] == "succeeded", timeout=60)
    # ?fresh=1: the panel answers once memory has read the store up to its head.
    response = server.api.get(f"/pods/{task['id']}/memory", params={"fresh": "1"})
    assert response.status_code == 200, response.text
    return task


@pytest.fixture
def repo(server: Server, tmp_path: Path) -> Path:
    """A repository a first task's developer run has taught what ``ANSWER`` says."""
    repo = git_repo(tmp_path / "repo")
    developer_job(server, task_on(server, repo, "Set up payments"))
    return repo


@pytest.fixture
def taught(server: Server, repo: Path) -> dict:
    """The second task on the repository, whose run was given what the first one learned."""
    return developer_job(server, task_on(server, repo, "Add refunds"))


def memory_item(page: Page, text: str, where: str = "#memory-runs"):
    return page.locator(f"#memory {where} li.memory", has_text=text)


def test_the_panel_shows_what_each_run_was_given_escaped_and_fits_390_px(
    page: Page, server: Server, taught: dict, fake: FakeClaude, tmp_path: Path
) -> None:
    page.set_viewport_size({"width": 390, "height": 900})
    open_pod(page, taught)

    run = page.locator("#memory .memory-run")
    expect(run).to_have_count(1)
    expect(run).to_have_attribute("data-job-id", "dev")
    expect(run.locator(".memory-run-head")).to_contain_text("developer")
    for text in (TESTS, CLIENT, MARKUP, LONG):
        item = memory_item(page, text)
        expect(item).to_have_count(1)
        expect(item.locator(".badge")).to_have_text("semantic")
        expect(item.locator(".memory-scope")).to_have_text("repo repo")
        expect(item.locator(".memory-scope")).to_have_attribute(
            "data-scope", f"repo:{taught['repo']}")
    # What the agent wrote is text: no element of it, no script run.
    expect(memory_item(page, "is text").locator(".memory-text")).to_have_text(MARKUP)
    assert page.locator("#memory .memory-text b, #memory .memory-text script").count() == 0
    assert page.evaluate("window.hacked") is None
    # The run's prompt held exactly these memories (the last run is the second task's).
    assert all(text in fake.runs()[-1]["prompt"] for text in (TESTS, CLIENT))
    page.locator("#memory").scroll_into_view_if_needed()
    fits_and_shot(page, tmp_path, "memory-390")


def test_a_run_given_memories_shows_up_on_an_open_page(
    page: Page, server: Server, repo: Path
) -> None:
    task = task_on(server, repo, "Add refunds")
    open_pod(page, task)
    expect(page.locator("#memory-no-runs")).to_be_visible()

    developer_job(server, task)

    run = page.locator("#memory .memory-run")
    expect(run).to_have_count(1)
    expect(run.locator("li.memory")).to_have_count(4)
    expect(page.locator("#memory-no-runs")).to_have_count(0)


def test_the_search_finds_a_memory_by_meaning_with_and_without_javascript(
    page: Page, server: Server, taught: dict
) -> None:
    open_pod(page, taught)
    page.fill("#memory-q", "where is the code that calls the payment service")
    page.click("#memory-search-button")

    found = page.locator("#memory-results li.memory")
    expect(found.first).to_contain_text(CLIENT)
    expect(found.first.locator(".memory-facts")).to_contain_text("score")
    assert "memory_q=where" in page.url  # the search is in the URL: a reload shows it again

    page.fill("#memory-q", "how do I run the tests")
    page.press("#memory-q", "Enter")
    expect(page.locator("#memory-results h3")).to_contain_text("how do I run the tests")
    expect(found.first).to_contain_text(TESTS)

    # Without JavaScript the search is a plain form: the server renders what it finds.
    context = page.context.browser.new_context(base_url=server.url, java_script_enabled=False)
    try:
        bare = context.new_page()
        bare.goto(f"/pods/{taught['id']}")
        bare.fill("#memory-q", "where is the code that calls the payment service")
        bare.click("#memory-search-button")
        expect(bare.locator("#memory-results li.memory").first).to_contain_text(CLIENT)
        assert "memory_q=" in bare.url
    finally:
        context.close()


def test_a_memory_is_pinned_and_forgotten_from_the_page(
    page: Page, server: Server, taught: dict
) -> None:
    open_pod(page, taught)
    item = memory_item(page, CLIENT)
    item.locator("[data-memory-action=pin]").click()
    expect(item.locator(".badge.memory-pinned")).to_have_text("pinned")
    expect(item.locator("[data-memory-action=unpin]")).to_be_visible()
    page.reload()  # pinned in agent memory, not only on the page
    expect(item.locator(".badge.memory-pinned")).to_have_text("pinned")

    item.locator("[data-memory-action=unpin]").click()
    expect(item.locator(".badge.memory-pinned")).to_have_count(0)
    expect(item.locator("[data-memory-action=pin]")).to_be_visible()

    forgotten = memory_item(page, TESTS)
    memory_id = forgotten.get_attribute("data-memory-id")
    page.once("dialog", lambda dialog: dialog.accept())
    forgotten.locator("[data-memory-action=forget]").click()
    # The run was given it: it stays listed, as forgotten, by its id.
    gone = page.locator(f'#memory-runs li.memory[data-memory-id="{memory_id}"]')
    expect(gone).to_have_class("memory forgotten")
    expect(gone.locator(".memory-id")).to_have_text(memory_id)
    expect(gone).not_to_contain_text(TESTS)
    page.reload()
    expect(gone).to_have_class("memory forgotten")

    page.fill("#memory-q", "how do I run the tests")
    page.click("#memory-search-button")
    expect(page.locator("#memory-results li.memory").first).to_be_visible()
    expect(page.locator("#memory-results")).not_to_contain_text(TESTS)


def test_with_memory_off_the_panel_says_why_and_the_page_works(
    database: ConnectionParams, tmp_path: Path, browser
) -> None:
    server = Server(database, tmp_path, env={"IPA_EMBEDDER": "wordllama:7"})
    server.start()
    context = browser.new_context(base_url=server.url)
    try:
        page = context.new_page()
        task = server.create("Without memory")
        open_pod(page, task)
        expect(page.locator("#memory-off")).to_contain_text(
            "Agent memory is off: the embedder did not load")
        expect(page.locator("#memory-off")).to_contain_text("Agents run without it")
        expect(page.locator("#memory-search")).to_have_count(0)
        page.goto(f"/pods/{task['id']}?memory_q=anything")
        expect(page.locator("#memory-off")).to_be_visible()
        expect(page.locator("#task-title")).to_have_text("Without memory")
    finally:
        context.close()
        server.stop()
        server.api.close()
