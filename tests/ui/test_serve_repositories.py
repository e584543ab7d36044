"""``ipa serve --repo-root DIR`` (or ``IPA_REPO_ROOTS``): a task's local repository must be
inside one of the roots; anything else is a 422 naming the field and why."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from ipa.eventstore import ConnectionParams

from .test_serve import served

pytestmark = pytest.mark.anyio


def git_repo(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    return path


@pytest.mark.parametrize("how", ["option", "environment"])
async def test_serve_confines_task_repositories_to_the_roots(
    database: ConnectionParams, tmp_path: Path, how: str
) -> None:
    root = tmp_path / "root"
    inside = git_repo(root / "inside")
    outside = git_repo(tmp_path / "outside")
    args, env = (["--repo-root", str(root)], {}) if how == "option" else (
        [], {"IPA_REPO_ROOTS": str(root)})

    async with served(database, *args, **env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
            refused = await client.post("/api/tasks", json={"title": "t", "repo": str(outside)})
            created = await client.post("/api/tasks", json={"title": "t", "repo": str(inside)})

    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "repository_refused"
    assert error["message"].startswith(f"repo {str(outside)!r} refused")
    assert "outside the allowed roots" in error["message"]
    assert created.status_code == 201, created.text
