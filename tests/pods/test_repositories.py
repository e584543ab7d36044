"""Which repositories a task may name: local git repositories (optionally inside configured
roots) and reachable https/ssh URLs; everything else is refused with the reason."""

from __future__ import annotations

import contextlib
import functools
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anyio
import pytest

from ipa.pods import RepositoryPolicy, RepositoryRefused

pytestmark = pytest.mark.anyio


def git(*args: str) -> None:
    subprocess.run(["git", *args], check=True, capture_output=True)


def git_repo(path: Path, *, bare: bool = False) -> Path:
    if bare:
        git("init", "-q", "--bare", str(path))
        return path
    git("init", "-q", "-b", "main", str(path))
    git("-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q",
        "--allow-empty", "-m", "init")
    return path


async def refused(policy: RepositoryPolicy, repo: str) -> str:
    with anyio.fail_after(30), pytest.raises(RepositoryRefused) as caught:
        await policy.check(repo)
    assert caught.value.field == "repo" and str(caught.value).startswith(f"repo {repo!r}")
    return caught.value.reason


async def test_a_local_git_repository_and_no_repository_are_accepted(tmp_path: Path) -> None:
    policy = RepositoryPolicy()

    await policy.check(None)
    await policy.check(str(git_repo(tmp_path / "repo")))
    await policy.check(str(git_repo(tmp_path / "bare.git", bare=True)))


async def test_a_path_that_is_not_a_repository_of_its_own_is_refused(tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    (repo / "src").mkdir()
    (tmp_path / "plain").mkdir()
    policy = RepositoryPolicy()

    assert await refused(policy, str(tmp_path / "missing")) == "no such directory"
    assert "not a git repository" in await refused(policy, str(tmp_path / "plain"))
    assert "not a git repository" in await refused(policy, str(repo / "src"))
    assert "nor an absolute path" in await refused(policy, "relative/repo")


async def test_roots_confine_local_repositories_after_following_symlinks(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    inside = git_repo(root / "inside")
    outside = git_repo(tmp_path / "outside")
    (root / "link").symlink_to(outside)
    policy = RepositoryPolicy.configured([str(root)])

    await policy.check(str(inside))
    assert "outside the allowed roots" in await refused(policy, str(outside))
    assert "outside the allowed roots" in await refused(policy, str(root / "link"))
    assert "outside the allowed roots" in await refused(policy, str(root / ".." / "outside"))
    assert "outside the allowed roots" in await refused(policy, "/etc")


def test_roots_come_from_the_option_else_the_environment(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    environ = {"IPA_REPO_ROOTS": f"{a}:{b}"}

    assert RepositoryPolicy.configured([], environ).roots == (a, b)
    assert RepositoryPolicy.configured([str(b)], environ).roots == (b,)
    assert RepositoryPolicy.configured([], {}).roots == ()


@pytest.mark.parametrize(("repo", "why"), [
    ("file:///etc", "the scheme file:// is not allowed"),
    ("http://example.test/r.git", "the scheme http:// is not allowed"),
    ("ext::sh -c touch% /tmp/pwned", "transport helpers"),
    ("fd::17", "transport helpers"),
    ("-uupload-pack=touch /tmp/pwned", "command-line option"),
    ("ssh://-oProxyCommand=touch%20pwned/x", "host looks like a command-line option"),
    ("https:///no-host", "names no host"),
    ("a\0b", "NUL"),
])
async def test_urls_of_other_schemes_and_option_like_values_are_refused(
    repo: str, why: str
) -> None:
    assert why in await refused(RepositoryPolicy(), repo)


async def test_an_unreachable_url_is_refused_with_gits_reason() -> None:
    # Port 9 on loopback (discard): nothing listens there, so the connection is refused.
    reason = await refused(RepositoryPolicy(), "https://127.0.0.1:9/nobody/repo.git")

    assert reason.startswith("not reachable")


@contextlib.contextmanager
def dumb_http(directory: Path) -> Iterator[str]:
    """A read-only HTTP server for the files of ``directory`` (git's "dumb" protocol)."""
    handler = functools.partial(_Quiet, directory=str(directory))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


async def test_a_reachable_url_of_an_allowed_scheme_is_accepted(tmp_path: Path) -> None:
    # https needs a certificate; the same check over plain http, allowed for this test only.
    served = tmp_path / "served"
    bare = git_repo(served / "r.git", bare=True)
    git("--git-dir", str(bare), "update-server-info")
    policy = RepositoryPolicy(schemes=frozenset({"https", "ssh", "http"}))

    with dumb_http(served) as url:
        await policy.check(f"{url}/r.git")
        assert "not reachable" in await refused(policy, f"{url}/missing.git")
