"""Off the happy path, in the browser (issue 12, "Done means"): a project healthy in its
perpetual phase, a crashed pod restarted from its page, a cancelled job whose agent is gone at
once, a dead job skipped so its phase completes, a second ``ipa serve`` refused while the first
stays live; the list's "needs me" filter and a cancelled job queued again.

The deliverable (a completed task's branch and a patch that applies) is ``test_change.py``; the
screenshots at 390, 1,280 and 1,920 px are ``test_readable.py``.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from ...fakes.claude import FakeClaude, small_project
from .conftest import IPA, Server, free_port
from .test_change import git
from .test_pages import job_spec, open_pod, row

pytestmark = pytest.mark.browser

RECORDS_OF_A_RUN = ("UsageRecorded", "WorkspaceCommitted", "ArtifactRecorded", "JobSucceeded",
                    "JobFailed", "ReflectionRecorded", "BranchAdvanced")
"""What a run leaves in its task's history: none of it may follow its job's cancel."""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def gone_within(pid: int, seconds: float) -> bool:
    """True once ``pid`` no longer exists, polled for up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def git_repo(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    git(path, "commit", "-q", "--allow-empty", "-m", "init")
    return path


def with_fake_claude(server: Server, tmp_path: Path, agents: dict, **env: str) -> FakeClaude:
    """Restart ``server`` running its agents through a scripted Claude Code CLI."""
    fake = FakeClaude(tmp_path / "fake").script(agents)
    server.env.update({"IPA_CLAUDE_CLI": str(fake.cli), **env})
    server.restart()
    return fake


def history_types(page: Page, server: Server, task_id: str) -> list[str]:
    """The event types of the page's history, once it shows every event of the task."""
    expect(page.locator("#history li")).to_have_count(server.task(task_id)["version"])
    return page.locator("#history li").evaluate_all("items => items.map(li => li.dataset.type)")


def watch_status(page: Page) -> None:
    """Record every status the state panel shows from now on (``window.statuses``)."""
    page.evaluate("""() => {
      window.statuses = [];
      const seen = () => {
        const status = document.getElementById("task-status");
        if (status) window.statuses.push(status.textContent);
      };
      new MutationObserver(seen).observe(document.getElementById("state"),
                                         {childList: true, subtree: true});
      seen();
    }""")


# -- B1: the perpetual phase never fails its project ------------------------------------------


def test_a_project_reaches_perpetual_and_stays_healthy_through_three_maintainer_runs(
    page: Page, server: Server, tmp_path: Path
) -> None:
    with_fake_claude(server, tmp_path, small_project(),
                     IPA_AUTO_AGENTS="1", IPA_PERPETUAL_INTERVAL="0.05")
    project = server.create("Shop", "A shop that sells hats.", workflow="project")
    open_pod(page, project)
    watch_status(page)

    for gate in ("discovery", "architecture", "deployment"):
        expect(page.locator("#task-phase")).to_have_text(gate, timeout=30_000)
        expect(page.locator("#task-status")).to_have_text("waiting", timeout=30_000)
        page.click("#approve")

    expect(page.locator("#task-phase")).to_have_text("perpetual", timeout=30_000)
    expect(page.locator('#runs .run[data-job-id="maintainer-3"]')).to_have_attribute(
        "data-outcome", "succeeded", timeout=30_000)
    for n in (1, 2, 3):
        expect(page.locator(f'#runs .run[data-job-id="maintainer-{n}"] .badge')).to_have_text(
            "succeeded")
    expect(page.locator("#task-status")).to_have_text("running")
    expect(page.locator("#forward")).to_have_count(0)
    assert "failed" not in page.evaluate("window.statuses")
    # The history keeps growing (a maintainer run every 50 ms): read what it shows so far.
    expect(page.locator("#history li[data-type=PhaseEntered]").last).to_contain_text(
        "perpetual")
    expect(page.locator("#history li[data-type=TaskFailed]")).to_have_count(0)
    expect(page.locator("#history li[data-type=TaskCompleted]")).to_have_count(0)


# -- B2: a crashed pod is restarted from its page ---------------------------------------------


def test_a_crashed_pod_is_restarted_from_the_page_and_its_task_goes_back_to_work(
    page: Page, server: Server
) -> None:
    task = server.create("Crashes")
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    # A file where the task's scratch directory goes: every run's start crashes the pod. Each
    # restart starts jobs not tried yet, so twenty jobs crash it until it gives up.
    blocker = server.data_dir / "scratch" / task["id"]
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("in the way")
    for n in range(20):
        server.command(task["id"], "queue_job", job_id=f"j{n}", agent="developer",
                       spec=job_spec("print('back at work', flush=True)"))
    server.wait_for(task["id"], lambda t: t["status"] == "failed", timeout=30)
    open_pod(page, task)

    forward = page.locator("#forward")
    expect(forward).to_have_attribute("data-kind", "crashed")
    expect(forward).to_contain_text("stopped working on this task")
    expect(page.locator("#task-status")).to_have_text("failed")
    blocker.unlink()  # the disk is fixed
    forward.locator("[data-action=restart]").click()

    expect(page.locator("#history")).to_contain_text("TaskRetried")
    expect(page.locator("#task-status")).to_have_text(re.compile("running|waiting"))
    expect(page.locator("#forward[data-kind=crashed]")).to_have_count(0)
    expect(page.locator('#runs .run[data-outcome="succeeded"]').first).to_be_visible()
    expect(page.locator('.column[data-column="succeeded"] .job').first).to_be_visible()


# -- B3: cancelling a running job stops its agent at once -------------------------------------


def cancel_from_the_board(page: Page, job_id: str) -> int:
    """Click the running job's cancel (confirmed) once its agent has started: the agent's pid
    (from the run's first line on the page), after the API answered the cancel."""
    card = page.locator(f'.column[data-column="running"] .job[data-job-id="{job_id}"]')
    expect(card).to_be_visible()
    started = page.locator(f"#runs .run[data-job-id={job_id}] .output .meta",
                           has_text=re.compile(r"pid \d+"))
    expect(started).to_be_visible()
    pid = int(re.search(r"pid (\d+)", started.inner_text()).group(1))
    expect(page.locator(f"#runs .run[data-job-id={job_id}] .output")).to_contain_text("working")
    assert alive(pid)
    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_response(lambda r: r.url.endswith("/cancel_job")) as answered:
        card.get_by_role("button", name="cancel").click()
    assert answered.value.status == 200
    return pid


def test_a_job_cancelled_from_the_board_stops_its_agent_within_a_second_and_records_nothing_after(
    page: Page, server: Server, tmp_path: Path
) -> None:
    task = server.create("Cancel me", repo=str(git_repo(tmp_path / "repo")))
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    open_pod(page, task)
    server.command(task["id"], "queue_job", job_id="plan", agent="planner", spec=job_spec(
        "import time",
        "open('plan.md', 'w').write('late')",  # committed if the run were let finish
        "print('working', flush=True)",
        "time.sleep(60)"))

    pid = cancel_from_the_board(page, "plan")

    assert gone_within(pid, 1.0), f"the agent (pid {pid}) still runs a second after the cancel"
    cancelled = page.locator('.column[data-column="cancelled"] .job[data-job-id="plan"]')
    expect(cancelled).to_be_visible()
    expect(page.locator("#runs .run[data-job-id=plan] .badge")).to_have_text("cancelled")
    # The run's last step removes its worktree: after it, the run can record nothing more.
    server.wait_for(task["id"], lambda t: t["workspaces"] and all(
        w["removed"] for w in t["workspaces"]))
    types = history_types(page, server, task["id"])
    after = types[types.index("JobCancelled"):]
    assert [t for t in after if t in RECORDS_OF_A_RUN] == []
    expect(page.locator("#plan")).to_contain_text("No plan yet.")


def test_a_claude_job_cancelled_from_the_board_stops_its_cli_within_a_second(
    page: Page, server: Server, tmp_path: Path
) -> None:
    with_fake_claude(server, tmp_path, {"planner": [{
        "messages": ["working"], "write": {"plan.md": "late"}, "sleep": 60, "text": "# Plan",
        "usage": {"input_tokens": 10, "output_tokens": 5}, "cost": 0.01}]})
    task = server.create("Cancel Claude", repo=str(git_repo(tmp_path / "repo")))
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    open_pod(page, task)
    server.command(task["id"], "queue_job", job_id="plan", agent="planner",
                   spec={"runner": "claude"})

    pid = cancel_from_the_board(page, "plan")

    assert gone_within(pid, 1.0), f"the agent (pid {pid}) still runs a second after the cancel"


# -- B4: a dead job skipped from the banner; its phase completes ------------------------------


def test_a_dead_job_is_skipped_from_the_banner_and_its_phase_asks_for_approval(
    page: Page, server: Server
) -> None:
    task = server.create("Skips")
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    server.command(task["id"], "queue_job", job_id="good", agent="spec_writer",
                   spec=job_spec("print('the spec')"))
    server.command(task["id"], "queue_job", job_id="boom", agent="spec_writer", max_attempts=1,
                   spec=job_spec("raise SystemExit(3)"))
    server.wait_for(task["id"], lambda t: (t["attention"] or {}).get("kind") == "job_dead")
    open_pod(page, task)

    forward = page.locator("#forward")
    expect(forward).to_have_attribute("data-kind", "job_dead")
    expect(page.locator("#task-status")).to_have_text("running")
    page.once("dialog", lambda dialog: dialog.accept())
    forward.locator("[data-action=skip_job]").click()

    expect(page.locator('.column[data-column="skipped"] .job[data-job-id="boom"]')).to_be_visible()
    expect(page.locator("#task-status")).to_have_text("waiting")
    expect(page.locator("#forward")).to_have_attribute("data-kind", "gate")
    expect(page.locator("#approve")).to_be_visible()
    types = history_types(page, server, task["id"])
    assert types.index("JobSkipped") < types.index("ApprovalRequested")
    assert server.task(task["id"])["phase"] == "spec_clarification"


# -- B5: a second ipa serve on the data dir is refused; the first stays live ------------------


def test_a_second_serve_on_the_data_dir_is_refused_and_the_first_page_stays_live(
    page: Page, server: Server
) -> None:
    task = server.create("Stays live")
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    open_pod(page, task)

    env = {k: v for k, v in os.environ.items() if not k.startswith("IPA_")}
    second = subprocess.run(
        [IPA, "serve", "--port", str(free_port()), "--data-dir", str(server.data_dir),
         "--database-url", server.database_url],
        capture_output=True, text=True, env=env | {"IPA_AUTO_AGENTS": "0"}, timeout=60)

    assert second.returncode != 0
    [line] = second.stderr.splitlines()
    assert f"is in use by ipa serve (pid {server.process.pid}" in line, line
    assert server.process.poll() is None
    server.command(task["id"], "pause", reason="after the second server")
    expect(page.locator("#history li").last).to_contain_text("TaskPaused")
    expect(page.locator("#task-status")).to_have_text("paused")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")


# -- the list's "needs me" filter ---------------------------------------------------------------


def test_the_needs_me_filter_shows_only_tasks_waiting_for_a_person_and_follows_them_live(
    page: Page, server: Server
) -> None:
    calm = server.create("Calm")
    gated = server.create("Soon at its gate")
    for task in (calm, gated):
        server.wait_for(task["id"], lambda t: t["status"] == "running")
    page.goto("/")
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    expect(row(page, calm["id"])).to_be_visible()

    page.check("#filter-attention")
    expect(row(page, calm["id"])).to_be_hidden()
    expect(row(page, gated["id"])).to_be_hidden()
    assert "attention=1" in page.url

    server.command(gated["id"], "queue_job", job_id="spec", agent="spec_writer",
                   spec=job_spec("print('the spec')"))
    expect(row(page, gated["id"])).to_be_visible()
    expect(row(page, gated["id"]).locator(".needs-me")).to_have_text("needs you: gate")
    expect(row(page, calm["id"])).to_be_hidden()
    expect(page.locator("#task-count")).to_have_text("1 of 2")

    page.reload()  # the URL keeps the filter
    expect(page.locator("#filter-attention")).to_be_checked()
    expect(row(page, calm["id"])).to_be_hidden()
    page.uncheck("#filter-attention")
    expect(row(page, calm["id"])).to_be_visible()
    expect(row(page, calm["id"]).locator(".needs-me")).to_have_count(0)


# -- a cancelled job is queued again from its card --------------------------------------------


def test_a_cancelled_job_is_queued_again_from_its_card(
    page: Page, server: Server, tmp_path: Path
) -> None:
    go = tmp_path / "go"
    task = server.create("Again")
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    server.command(task["id"], "queue_job", job_id="work", agent="developer", max_attempts=2,
                   spec=job_spec("import os, time",
                                 f"while not os.path.exists({str(go)!r}): time.sleep(0.02)",
                                 "print('worked', flush=True)"))
    server.wait_for(task["id"], lambda t: t["jobs"][0]["status"] == "running")
    server.command(task["id"], "cancel_job", job_id="work", reason="not now")
    open_pod(page, task)

    cancelled = page.locator('.column[data-column="cancelled"] .job[data-job-id="work"]')
    expect(cancelled).to_be_visible()
    expect(cancelled.get_by_role("button", name="retry")).to_have_count(0)
    go.touch()
    cancelled.get_by_role("button", name="queue again").click()

    again = page.locator('.column[data-column="succeeded"] .job[data-job-id="work-again"]')
    expect(again).to_be_visible()
    expect(again).to_contain_text("developer · spec_clarification · attempt 1/2")
    expect(page.locator("#runs .run[data-job-id=work-again] .badge")).to_have_text("succeeded")
    expect(cancelled).to_be_visible()  # the cancelled job stays as it was
    expect(cancelled.get_by_role("button", name="queue again")).to_have_count(0)
    assert [j["job_id"] for j in server.task(task["id"])["jobs"]] == ["work", "work-again"]
