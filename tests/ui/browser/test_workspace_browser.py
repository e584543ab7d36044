"""The workspace browser of the pod page: a job's files and its diff, at a commit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .conftest import Server
from .test_pages import job_spec, open_pod

pytestmark = pytest.mark.browser


def git(*args: str, cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                   cwd=cwd, check=True, capture_output=True)


def test_the_workspace_browser_shows_files_and_the_diff(
    page: Page, server: Server, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git("init", "--quiet", "-b", "main", cwd=repo)
    (repo / "README.md").write_text("hello\n")
    git("add", "README.md", cwd=repo)
    git("commit", "--quiet", "-m", "first", cwd=repo)
    task = server.create("Workspace", repo=str(repo))
    server.wait_for(task["id"], lambda t: t["status"] == "running")
    server.command(task["id"], "queue_job", job_id="write", agent="developer", spec=job_spec(
        "open('notes.txt', 'w').write('hello notes\\n')"))
    open_pod(page, task)
    expect(page.locator("#task-status")).to_have_text("waiting")

    workspace = page.locator("#workspaces .workspace").first
    expect(workspace).to_contain_text("1 commit(s)")
    workspace.get_by_role("button", name="diff").click()
    expect(page.locator("#ws-body .diff-text .add")).to_contain_text(["+hello notes"])

    workspace.get_by_role("button", name="files").click()
    page.locator("#ws-body ul.files").get_by_role("button", name="notes.txt").click()
    expect(page.locator("#ws-body pre.file")).to_have_text("hello notes\n")
    expect(page.locator("#ws-where")).to_have_text("/notes.txt")
