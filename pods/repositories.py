"""Which repositories a task may name: checked once, when the task is created.

A task's ``repo`` decides what its agents work on, and through the workspace API what anyone
who may read the task can read. So :meth:`RepositoryPolicy.check` refuses
(:class:`RepositoryRefused`, the API's 422) anything but:

- a **local path** (absolute, or ``~/...``) to a directory that is itself a git repository
  (``git rev-parse`` there, not in a parent), after following symlinks; when *roots* are set
  (``ipa serve --repo-root DIR``, repeatable, or ``IPA_REPO_ROOTS=DIR:DIR``), inside one of
  them (also after following symlinks, so a link inside a root cannot lead out of it);
- a **URL** of an allowed scheme (``https://``, ``ssh://``, and the scp-like ``user@host:path``)
  that git can reach (``git ls-remote`` under a time limit, with no prompt, and with every
  other transport off, so a redirect cannot switch to ``file://`` or ``ext::``). ``file://``,
  ``ext::``, ``http://`` and anything that looks like an option (a leading ``-``, also in the
  host) are refused. URLs are not confined by the roots: they read nothing from this server's
  disk.

The check is at creation only: a repository that moves or disappears later fails its runs as
``RepositoryUnavailable`` (see the scheduler). Credentials in a URL are refused earlier, by
the domain (``CredentialsInUrl``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ipa.domain.credentials import refuse_credentials

from .workspace import _SCP_LIKE, WorkspaceError, _Git, _reason

__all__ = ["ALLOWED_SCHEMES", "RepositoryPolicy", "RepositoryRefused"]

ALLOWED_SCHEMES = frozenset({"https", "ssh"})
"""URL schemes a task's repository may use (plus the scp-like ``user@host:path``)."""

ROOTS_ENV = "IPA_REPO_ROOTS"
"""Directories (``os.pathsep``-separated) local repositories must be inside."""


class RepositoryRefused(Exception):
    """A task's repository is refused; ``field`` names the input, ``reason`` says why."""

    def __init__(self, repo: str, reason: str, field: str = "repo") -> None:
        super().__init__(f"{field} {repo!r} refused: {reason}")
        self.repo = repo
        self.reason = reason
        self.field = field


@dataclass(frozen=True)
class RepositoryPolicy:
    """What a task's ``repo`` may be (see the module docstring)."""

    roots: tuple[Path, ...] = ()
    schemes: frozenset[str] = ALLOWED_SCHEMES
    timeout: float = 20.0
    git: str = "git"

    @classmethod
    def configured(
        cls, roots: Iterable[str | Path] = (), environ: Mapping[str, str] | None = None
    ) -> RepositoryPolicy:
        """The policy of ``ipa serve``: the ``--repo-root`` options, else ``IPA_REPO_ROOTS``."""
        given = [Path(root) for root in roots]
        if not given:
            text = (os.environ if environ is None else environ).get(ROOTS_ENV, "")
            given = [Path(part) for part in text.split(os.pathsep) if part.strip()]
        return cls(roots=tuple(Path(os.path.realpath(root.expanduser())) for root in given))

    async def check(self, repo: str | None) -> None:
        """Return when ``repo`` may be used (``None``: no repository); else raise
        :class:`RepositoryRefused` naming why."""
        if repo is None:
            return
        refuse_credentials(repo, "repo")  # before any message or git command carries them
        if "\0" in repo:
            raise RepositoryRefused(repo, "it contains a NUL byte")
        if repo.startswith("-"):
            raise RepositoryRefused(repo, "it looks like a command-line option")
        if "::" in repo.partition("/")[0]:
            raise RepositoryRefused(repo, "git's transport helpers (such as ext::) are not "
                                          "allowed; give an https:// or ssh:// URL or a path")
        if "://" in repo or _SCP_LIKE.match(repo):
            await self._check_url(repo)
        else:
            await self._check_path(repo)

    async def _check_url(self, url: str) -> None:
        if "://" in url:
            try:
                parts = urlsplit(url)
                host = parts.hostname or ""
            except ValueError as e:
                raise RepositoryRefused(url, f"not a valid URL ({e})") from None
            scheme = parts.scheme.lower()
            if scheme not in self.schemes:
                allowed = ", ".join(f"{s}://" for s in sorted(self.schemes))
                raise RepositoryRefused(url, f"the scheme {scheme}:// is not allowed "
                                             f"(allowed: {allowed}, user@host:path)")
            if not host:
                raise RepositoryRefused(url, "the URL names no host")
        else:
            host = url.partition("@")[2].partition(":")[0]
        if host.startswith("-"):
            raise RepositoryRefused(url, "the host looks like a command-line option")
        # Only the allowed transports, also for redirects and submodule-like indirections.
        protocols = {"protocol.allow": "never", **{
            f"protocol.{scheme}.allow": "always" for scheme in sorted(self.schemes | {"ssh"})}}
        env = {"GIT_CONFIG_COUNT": str(len(protocols))}
        for i, (key, value) in enumerate(protocols.items()):
            env[f"GIT_CONFIG_KEY_{i}"] = key
            env[f"GIT_CONFIG_VALUE_{i}"] = value
        git = _Git(self.git, self.timeout, self.timeout)
        try:
            listed = await git("ls-remote", "--quiet", "--", url, "HEAD",
                               subject=f"repository {url!r}", env=env)
        except WorkspaceError:
            raise RepositoryRefused(
                url, f"not reachable: no answer within {self.timeout:g} s") from None
        if listed.returncode != 0:
            raise RepositoryRefused(url, f"not reachable: {_reason(listed)}")

    async def _check_path(self, repo: str) -> None:
        path = Path(repo).expanduser()
        if not path.is_absolute():
            raise RepositoryRefused(repo, "neither an https:// or ssh:// URL nor an absolute "
                                          "path")
        real = Path(os.path.realpath(path))
        if self.roots and not any(real.is_relative_to(root) for root in self.roots):
            roots = ", ".join(str(root) for root in self.roots)
            raise RepositoryRefused(repo, f"it is outside the allowed roots ({roots})")
        if not real.is_dir():
            raise RepositoryRefused(repo, "no such directory")
        git = _Git(self.git, self.timeout, self.timeout)
        try:
            # The ceiling: the directory itself must be the repository, not a folder in one.
            found = await git("rev-parse", "--git-dir", subject=f"repository {repo!r}",
                              cwd=real, env={"GIT_CEILING_DIRECTORIES": str(real.parent)})
        except WorkspaceError as e:
            raise RepositoryRefused(repo, str(e)) from None
        if found.returncode != 0:
            raise RepositoryRefused(repo, f"not a git repository ({_reason(found)})")
