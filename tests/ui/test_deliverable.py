"""The deliverable (issue #12): a task's jobs build one branch, ``ipa/<task8>``, from the
repository's default branch; its diff and its patch are served, and the patch applies to the
base in a fresh clone (real store, real pods, real git)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .test_api import api, assert_error, create, git_repo, job, parts, python, until

pytestmark = pytest.mark.anyio

__all__ = ["api", "parts"]  # the fixtures, shared with test_api


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(cwd), "-c", "user.name=t", "-c", "user.email=t@t", *args],
        capture_output=True, text=True, check=True,
    ).stdout.strip()


ONE = ("import os; os.makedirs('src'); open('src/a.py','w').write('x = 1\\n'); "
       "open('README','a').write('more\\n')")
TWO = ("open('src/a.py','w').write('x = 2\\ny = 3\\n'); open('b.txt','w').write('b\\n'); "
       "open('bin.dat','wb').write(bytes(range(256)))")


async def test_jobs_build_one_branch_from_the_default_branch_and_its_patch_applies(
    api, tmp_path: Path
) -> None:
    repo = git_repo(tmp_path / "repo")
    main = git(repo, "rev-parse", "main")
    git(repo, "checkout", "-q", "-b", "users-own-work")  # not the base: main is
    (repo / "README").write_text("the user's edit\n")
    git(repo, "commit", "-q", "-am", "users work")
    task = await create(api, repo=str(repo))
    url = f"/api/tasks/{task['id']}"
    assert_error(await api.get(f"{url}/diff"), 404, "branch_not_found")
    await api.post(f"{url}/queue_job", json={"job_id": "one", "agent": "dev", "spec": python(ONE)})
    await api.post(f"{url}/queue_job", json={"job_id": "two", "agent": "dev", "spec": python(TWO),
                                             "depends_on": ["one"]})

    def landed(view: dict) -> bool:  # both jobs' commits are on the branch
        last = view["workspaces"][-1]["commits"] if view["workspaces"] else []
        return (job(view, "two")["status"] == "succeeded" and bool(last)
                and all(w["removed"] for w in view["workspaces"])
                and (view["branch"] or {}).get("head_commit") == last[-1])

    view = await until(api, task, landed)

    name = f"ipa/{task['id'].replace('-', '')[:8]}"
    branch = view["branch"]
    assert (branch["name"], branch["base"], branch["base_commit"]) == (name, "main", main)
    assert git(repo, "rev-parse", name) == branch["head_commit"]
    assert git(repo, "rev-list", "--count", f"{main}..{name}") == "2"  # one commit per job
    assert git(repo, "branch", "--list", "--format=%(refname:short)", "ipa/*") == name
    assert git(repo, "rev-parse", "main") == main  # the base is untouched

    diff = (await api.get(f"{url}/diff")).json()
    assert (diff["base"], diff["head"], diff["truncated"]) == (main, branch["head_commit"], False)
    assert sorted((f["status"], f["path"]) for f in diff["files"]) == [
        ("A", "b.txt"), ("A", "bin.dat"), ("A", "src/a.py"), ("M", "README")]
    assert diff["stat"] == {"files": 4, "insertions": 4, "deletions": 0}
    assert "+y = 3" in diff["diff"] and "+more" in diff["diff"]

    response = await api.get(f"{url}/patch")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/x-patch")
    assert response.headers["content-disposition"] == (
        f'attachment; filename="ipa-{name.removeprefix("ipa/")}.patch"')
    patch = tmp_path / "task.patch"
    patch.write_bytes(response.content)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "-b", "main", str(repo), str(clone)], check=True)
    git(clone, "apply", "--check", str(patch))
    git(clone, "am", "-q", str(patch))
    assert git(clone, "rev-parse", "HEAD^{tree}") == git(repo, "rev-parse", f"{name}^{{tree}}")


async def test_a_task_names_its_base_branch(api, tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    git(repo, "checkout", "-q", "-b", "release")
    (repo / "R").write_text("r\n")
    git(repo, "add", "R")
    git(repo, "commit", "-q", "-m", "release")
    release = git(repo, "rev-parse", "release")
    git(repo, "checkout", "-q", "main")
    task = await create(api, repo=str(repo), base_branch="release")
    url = f"/api/tasks/{task['id']}"
    await api.post(f"{url}/queue_job", json={"job_id": "one", "agent": "dev",
                                             "spec": python("open('x','w').write('x\\n')")})

    view = await until(api, task, lambda v: v["branch"] is not None
                       and v["branch"]["head_commit"] is not None)

    assert (view["branch"]["base"], view["branch"]["base_commit"]) == ("release", release)
    diff = (await api.get(f"{url}/diff")).json()
    assert diff["files"] == [{"status": "A", "path": "x"}]
    assert diff["stat"] == {"files": 1, "insertions": 1, "deletions": 0}


async def test_a_base_branch_that_does_not_exist_is_the_repositorys_problem(
    api, tmp_path: Path
) -> None:
    repo = git_repo(tmp_path / "repo")
    task = await create(api, repo=str(repo), base_branch="nope")
    url = f"/api/tasks/{task['id']}"
    await api.post(f"{url}/queue_job", json={"job_id": "one", "agent": "dev",
                                             "spec": python("pass")})

    view = await until(api, task, lambda v: v["repository_error"] is not None)

    assert "nope" in view["repository_error"] and view["branch"] is None


def rendezvous(me: Path, other: Path, code: str) -> dict:
    """A job that says it started, waits until the other job did too (so both start from the
    same commit), then runs ``code``."""
    return python(f"import os, time\nopen({str(me)!r}, 'w').close()\n"
                  f"while not os.path.exists({str(other)!r}): time.sleep(0.01)\n{code}")


async def test_parallel_jobs_that_conflict_land_one_after_the_other(api, tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    task = await create(api, repo=str(repo))
    url = f"/api/tasks/{task['id']}"
    a, b = tmp_path / "a.started", tmp_path / "b.started"
    for job_id, me, other in (("a", a, b), ("b", b, a)):
        spec = rendezvous(me, other, f"open('README', 'w').write('by {job_id}\\n')")
        response = await api.post(f"{url}/queue_job", json={"job_id": job_id, "agent": "dev",
                                                            "spec": spec})
        assert response.status_code == 200, response.text

    view = await until(api, task, lambda v: all(
        job(v, j)["status"] == "succeeded" for j in ("a", "b")))

    events = (await api.get(f"{url}/events")).json()["items"]
    [conflict] = [e for e in events if e["type"] == "BranchConflicted"]
    loser = conflict["data"]["job_id"]
    assert conflict["data"]["files"] == ["README"]
    # Nothing of the conflicting attempt landed; its retry started from the branch as it was.
    assert job(view, loser)["attempts"] == 2
    assert [e["data"]["job_id"] for e in events if e["type"] == "BranchAdvanced"] == [
        "b" if loser == "a" else "a", loser]
    assert any(item["job_id"] == loser and "README" in item["text"]
               for item in view["learnings"])
    name = view["branch"]["name"]
    assert git(repo, "rev-parse", name) == view["branch"]["head_commit"]
    assert git(repo, "rev-list", "--count", f"main..{name}") == "2"
    assert git(repo, "show", f"{name}:README") == f"by {loser}"


async def test_a_landing_whose_record_a_crash_lost_is_gone_over_by_the_next_job(
    api, tmp_path: Path
) -> None:
    repo = git_repo(tmp_path / "repo")
    task = await create(api, repo=str(repo))
    url = f"/api/tasks/{task['id']}"
    go = tmp_path / "go"
    await api.post(f"{url}/queue_job", json={"job_id": "one", "agent": "dev", "spec": python(
        "open('one.txt', 'w').write('1\\n')")})
    await api.post(f"{url}/queue_job", json={
        "job_id": "two", "agent": "dev", "depends_on": ["one"], "spec": python(
            f"import os, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
            "open('two.txt', 'w').write('2\\n')")})
    view = await until(api, task, lambda v: job(v, "two")["status"] == "running")
    name, recorded = view["branch"]["name"], view["branch"]["head_commit"]
    assert recorded is not None
    # What a crash between moving the branch and recording it leaves: the branch ahead.
    tree = git(repo, "rev-parse", f"{recorded}^{{tree}}")
    lost = git(repo, "commit-tree", tree, "-p", recorded, "-m", "unrecorded")
    git(repo, "update-ref", f"refs/heads/{name}", lost)
    go.touch()

    view = await until(api, task, lambda v: job(v, "two")["status"] in ("succeeded", "dead"))

    assert job(view, "two")["status"] == "succeeded"
    head = view["branch"]["head_commit"]
    assert git(repo, "rev-parse", name) == head
    assert git(repo, "rev-parse", f"{head}^") == recorded  # the lost landing is not kept
    assert git(repo, "ls-tree", "--name-only", head).split() == ["README", "one.txt", "two.txt"]
