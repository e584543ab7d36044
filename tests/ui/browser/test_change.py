"""A task's page says where its change is: its branch, the diff against its base, and a patch
that applies to the base (issue 12, the deliverable)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from ...fakes.claude import FakeClaude
from .conftest import Server
from .test_pages import job_spec, open_pod

pytestmark = pytest.mark.browser


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(cwd), "-c", "user.name=t", "-c", "user.email=t@t",
                           *args], capture_output=True, text=True, check=True).stdout.strip()


def test_the_page_names_the_branch_shows_the_diff_and_offers_a_patch_that_applies(
    page: Page, server: Server, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    (repo / "README").write_text("hello\n")
    git(repo, "add", "README")
    git(repo, "commit", "-q", "-m", "init")
    task = server.create("Ships a change", repo=str(repo))
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    server.command(task["id"], "queue_job", job_id="write", agent="developer",
                   spec=job_spec("open('feature.py', 'w').write('done = True\\n')",
                                 "open('README', 'a').write('more\\n')"))
    view = server.wait_for(task["id"], lambda t: (t.get("branch") or {}).get("head_commit"))
    name = view["branch"]["name"]
    open_pod(page, task)

    change = page.locator("#task-change")
    expect(change).to_contain_text(name)
    change.locator("[data-change]").click()
    base = view["branch"]["base_commit"][:10]
    expect(page.locator("#change-stat")).to_have_text(
        f"2 file(s) changed, 2 insertion(s), 0 deletion(s) against main ({base})")
    expect(page.locator("#change-files")).to_contain_text(["A feature.py"])
    with page.expect_download() as download:
        change.locator("#task-patch").click()
    patch = tmp_path / "task.patch"
    download.value.save_as(patch)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "-b", "main", str(repo), str(clone)], check=True)
    git(clone, "apply", "--check", str(patch))
    git(clone, "am", "-q", str(patch))
    assert (clone / "feature.py").read_text() == "done = True\n"


def test_the_gate_shows_the_phases_artifact_and_its_change(
    page: Page, server: Server, tmp_path: Path
) -> None:
    fake = FakeClaude(tmp_path / "fake").script({"spec_writer": [{
        "text": "# Spec\nLimit logins to **5 a minute**.", "write": {"SPEC.md": "limits\n"}}]})
    server.env.update({"IPA_AUTO_AGENTS": "1", "IPA_CLAUDE_CLI": str(fake.cli)})
    server.restart()  # the spec writer now runs as the task enters its first phase
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    git(repo, "commit", "-q", "--allow-empty", "-m", "init")
    task = server.create("Rate limits", "limit logins", repo=str(repo))
    server.wait_for(task["id"], lambda t: t["status"] == "waiting"
                    and (t.get("branch") or {}).get("head_commit"), timeout=30)
    open_pod(page, task)

    review = page.locator("#gate-review")
    expect(review.locator("[data-artifact=spec]")).to_contain_text("Limit logins to 5 a minute")
    review.locator("#gate-diff").click()
    expect(page.locator("#change-files")).to_contain_text(["A SPEC.md"])
