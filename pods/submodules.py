"""Submodules of a new workspace: checked out by :class:`SubmoduleCheckout`, which the
:class:`~.workspace.WorkspaceManager` runs right after ``git worktree add``.

A new worktree's submodules, and theirs, are checked out at the commits it records (``git
submodule update --init --recursive``, less those with ``update = none``), each from the first
of: the user's own clone of it (``.git/modules/<name>``, then the user's checkout of it) when
that has the commit, so no network is needed; else its URL (the user's
``submodule.<name>.url``, else ``.gitmodules``; a relative URL is relative to the superproject's
``origin``, or to the repository itself). A URL may be ``https://``, ``ssh://`` or
``user@host:path`` (the transports of ``RepositoryPolicy``), or a local path (or ``file://``)
when the superproject came from this machine too and the path is inside ``repo_roots``: a
remote repository's submodules never read local files. Only for a local source does git get
``protocol.file.allow=always``, which git ≥ 2.38.1 needs for local submodules. The URL is given
to that one ``git submodule update`` (``GIT_CONFIG_*`` variables), never written to the config
a linked worktree shares with the user's checkout; so in a local repository a submodule the
user never initialised is checked out yet reported by ``git submodule status`` as ``-``. In a
cached clone and inside submodules (ipa's own repositories) they are recorded as initialised.
Their git dirs live in the worktree's own (``.git/worktrees/<id>/modules/``) and go with it.
A submodule that cannot be had (or only through a refused transport, or within no time limit:
the manager's ``clone_timeout``) fails the create with :class:`RepositoryUnavailable` naming
it; a gitlink without a ``.gitmodules`` entry is no submodule and stays empty.

Git runs through the manager's runner (:class:`GitRunner`: its environment, options and
timeouts), and a repository's config is written under the manager's lock of that repository.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

import anyio

from .workspace_errors import RepositoryUnavailable, WorkspaceError, _display, _reason

__all__ = ["GitRunner", "SubmoduleCheckout"]

# The transports a submodule may be fetched with from a URL: RepositoryPolicy's ALLOWED_SCHEMES
# (repositories.py imports workspace.py, which imports this module, so it is repeated here; a
# test pins the two together).
_SUBMODULE_SCHEMES = frozenset({"https", "ssh"})


class GitRunner(Protocol):
    """Runs ``git <args>`` (in ``cwd``, with ``env`` added) under a time limit — the clone
    timeout when ``slow`` — and raises :class:`WorkspaceError` naming ``subject`` when it
    expires or git cannot run; the caller reads the return code."""

    async def __call__(
        self,
        *args: str,
        subject: str,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        slow: bool = False,
    ) -> subprocess.CompletedProcess[bytes]: ...


class SubmoduleCheckout:
    """Checks out the submodules of new worktrees (see the module docstring).

    ``git`` runs git; ``hold(key)`` is the manager's lock of a repository (keyed by its git
    dir), held while its config is written; ``repo_roots``: where a submodule may be read from
    a local path (empty: anywhere).
    """

    def __init__(
        self,
        git: GitRunner,
        *,
        hold: Callable[[str], AbstractAsyncContextManager[None]],
        repo_roots: Iterable[str | Path] = (),
    ) -> None:
        self._git = git
        self._hold = hold
        self._repo_roots = tuple(Path(os.path.realpath(Path(r).expanduser())) for r in repo_roots)

    async def check_out(
        self,
        repo: str,
        worktree: Path,
        commit: str,
        *,
        url: str | None,
        git_dir: Path,
        subject: str,
    ) -> None:
        """Check out the submodules of ``worktree``, a new worktree of ``repo`` at ``commit``,
        and theirs, at the commits it records.

        ``url`` is set when the worktree was added from ``git_dir``, ipa's cached clone of
        ``url``; None when it was added from ``repo``, the user's local repository. ``subject``
        names the workspace in messages. Raises :class:`RepositoryUnavailable` naming a
        submodule that cannot be had.
        """
        found = await self._submodules(repo, worktree, commit, subject)
        if not found:
            return
        if url is not None:
            # The cached clone's config is ipa's own: the submodules are recorded there.
            top = _Superproject(worktree, url, _local_path(url) is not None,
                                modules=None, checkout=None, config=git_dir)
            await self._check_out_submodules(repo, top, found)
            return
        user = Path(os.path.realpath(Path(repo).expanduser()))
        # Relative submodule URLs are relative to the superproject's origin, else to the
        # superproject itself (the user's checkout; git would take the agent's worktree).
        origin = await self._git_in(
            worktree, "config", "--get", "remote.origin.url", subject=subject
        )
        base = origin.stdout.decode().strip() if origin.returncode == 0 else ""
        if "://" not in base and ":" not in base.partition("/")[0] and not base.startswith("/"):
            base = os.path.normpath(user / base)
        modules = await self._git_in(
            user, "rev-parse", "--path-format=absolute", "--git-path", "modules", subject=subject
        )
        # config=None: the worktree's config is the user's, which ipa does not write.
        top = _Superproject(
            worktree, base, local=True, checkout=user, config=None,
            modules=Path(modules.stdout.decode().strip()) if modules.returncode == 0 else None,
        )  # fmt: skip
        await self._check_out_submodules(repo, top, found)

    async def _check_out_submodules(
        self, repo: str, parent: _Superproject, found: list[_Submodule]
    ) -> None:
        """Check out ``found``, the submodules of ``parent``, then their own."""
        for sub in found:
            where = f"{parent.prefix}{sub.path}"
            subject = f"submodule {sub.name!r} at {where}"
            if not sub.name or ".." in re.split(r"[/\\]", sub.name):
                raise RepositoryUnavailable(repo, f"{subject}: git refuses its name")
            try:
                url = _resolve_url(sub.url, parent.url) if sub.url is not None else None
            except ValueError as e:
                raise RepositoryUnavailable(repo, f"{subject}: {e}") from None
            held = [parent.modules / sub.name] if parent.modules else []
            held += [parent.checkout / sub.path] if parent.checkout else []
            fetch_from = None
            for candidate in held:
                if await self._holds(candidate, sub.commit, subject):
                    fetch_from = str(candidate)
                    break
            if fetch_from is None:
                refusal = self._refusal(url, parent.local)
                if refusal is not None:
                    raise RepositoryUnavailable(repo, f"{subject}: {refusal}")
                assert url is not None
                fetch_from = url
            await self._update(repo, parent.worktree, sub, fetch_from, subject)
            origin = url if url is not None else fetch_from
            if parent.config is not None:
                await self._record_submodule(repo, parent.config, sub, origin, subject)
            inner = parent.worktree / sub.path
            nested = await self._submodules(repo, inner, sub.commit, subject)
            if nested:
                # The submodule's git dir is the worktree's own (below .git/worktrees/<id>/).
                child = _Superproject(
                    inner, origin, local=parent.local and _local_path(origin) is not None,
                    modules=parent.modules / sub.name / "modules" if parent.modules else None,
                    checkout=parent.checkout / sub.path if parent.checkout else None,
                    config=inner, prefix=f"{where}/",
                )  # fmt: skip
                await self._check_out_submodules(repo, child, nested)

    async def _record_submodule(
        self, repo: str, config: Path, sub: _Submodule, url: str, subject: str
    ) -> None:
        """Record ``sub`` as initialised (what ``git submodule init`` writes) in the config of
        ``config``, a repository of ipa's, so ``git submodule status`` there reports it."""
        async with self._hold(str(config)):
            for variable, value in (("url", url), ("active", "true")):
                done = await self._git_in(
                    config, "config", f"submodule.{sub.name}.{variable}", value, subject=subject
                )
                if done.returncode != 0:
                    raise RepositoryUnavailable(
                        repo, f"{subject}: cannot record it: {_reason(done)}")  # fmt: skip

    async def _submodules(
        self, repo: str, worktree: Path, commit: str, subject: str
    ) -> list[_Submodule]:
        """The submodules ``git submodule update --init`` would check out for ``commit`` (in
        ``worktree``): gitlinks named in its ``.gitmodules``, but not ``update = none``. The
        worktree's config (the user's, for a local repository) overrides ``.gitmodules``."""
        gitmodules = f"{commit}:.gitmodules"
        present = await self._git_in(worktree, "cat-file", "-e", gitmodules, subject=subject)
        if present.returncode != 0:
            return []
        declared = await self._git_in(
            worktree, "config", "-z", "--blob", gitmodules, "--get-regexp",
            r"^submodule\..*\.(path|url|update)$", subject=subject,
        )  # fmt: skip
        if declared.returncode not in (0, 1):  # 1: no match
            raise RepositoryUnavailable(
                repo, f"{subject}: its .gitmodules is unreadable ({_reason(declared)})"
            )
        entries = _submodule_entries(declared.stdout)
        configured = await self._git_in(
            worktree, "config", "-z", "--get-regexp", r"^submodule\..*\.(url|update)$",
            subject=subject,
        )  # fmt: skip
        for name, values in _submodule_entries(configured.stdout).items():
            if name in entries:
                entries[name].update(values)
        by_path = {values["path"]: name for name, values in entries.items()
                   if values.get("path") and values.get("update") != "none"}  # fmt: skip
        if not by_path:
            return []
        listed = await self._git(
            "ls-tree", "-z", commit, "--", *by_path, subject=subject, cwd=worktree,
            env={"GIT_LITERAL_PATHSPECS": "1"},
        )  # fmt: skip
        if listed.returncode != 0:
            raise RepositoryUnavailable(repo, f"{subject}: git ls-tree failed: {_reason(listed)}")
        found = []
        for entry in listed.stdout.split(b"\0"):
            meta, _, raw_path = entry.partition(b"\t")
            fields, path = meta.split(), os.fsdecode(raw_path)
            if len(fields) == 3 and fields[1] == b"commit" and path in by_path:
                name = by_path[path]
                found.append(_Submodule(name, path, fields[2].decode(), entries[name].get("url")))
        return found

    async def _holds(self, candidate: Path, commit: str, subject: str) -> bool:
        """Whether ``candidate`` is a git repository (itself, not a folder in one) that has
        ``commit``."""
        if not await anyio.Path(candidate).is_dir():
            return False
        real = Path(os.path.realpath(candidate))
        found = await self._git(
            "cat-file", "-e", f"{commit}^{{commit}}", subject=subject, cwd=real,
            env={"GIT_CEILING_DIRECTORIES": str(real.parent)},
        )  # fmt: skip
        return found.returncode == 0

    def _refusal(self, url: str | None, local: bool) -> str | None:
        """Why a submodule may not be fetched from ``url``, or None."""
        if url is None:
            return "its .gitmodules entry has no url"
        path = _local_path(url)
        if path is None:
            return _remote_refusal(url)
        if not local:
            return (f"its url {_display(url)} is a local path; a submodule of a remote "
                    "repository may not read this machine's files")  # fmt: skip
        real = Path(os.path.realpath(path))
        if self._repo_roots and not any(real.is_relative_to(r) for r in self._repo_roots):
            roots = ", ".join(str(root) for root in self._repo_roots)
            return f"its url {_display(url)} is outside the allowed roots ({roots})"
        return None

    async def _update(
        self, repo: str, worktree: Path, sub: _Submodule, fetch_from: str, subject: str
    ) -> None:
        """``git submodule update`` of one submodule, fetched from ``fetch_from`` (a URL or a
        local repository) with only the transports it needs."""
        local = _local_path(fetch_from) is not None
        settings = {"protocol.allow": "never"}
        if local:  # git refuses local submodules by default (protocol.file.allow, 2.38.1)
            settings["protocol.file.allow"] = "always"
        else:
            settings.update({f"protocol.{s}.allow": "always" for s in sorted(_SUBMODULE_SCHEMES)})
        # Given for this command only: `git submodule init` would write them to the config a
        # linked worktree shares with the user's checkout.
        settings[f"submodule.{sub.name}.url"] = fetch_from
        settings[f"submodule.{sub.name}.active"] = "true"
        env = {**_config_environment(settings), "GIT_LITERAL_PATHSPECS": "1"}
        # --checkout: whatever `submodule.<name>.update` says (merge, rebase, !command).
        options = ["--quiet", "--checkout", *(["--no-recommend-shallow"] if local else [])]
        try:
            done = await self._git(
                "submodule", "update", *options, "--", sub.path, subject=subject, cwd=worktree,
                env=env, slow=True,
            )  # fmt: skip
        except WorkspaceError as e:  # the time limit
            raise RepositoryUnavailable(repo, str(e)) from e
        if done.returncode != 0:
            raise RepositoryUnavailable(
                repo, f"{subject} cannot be checked out from {_display(fetch_from)}: "
                f"{_reason(done)}")  # fmt: skip

    async def _git_in(
        self, directory: Path, *args: str, subject: str
    ) -> subprocess.CompletedProcess[bytes]:
        return await self._git(*args, subject=subject, cwd=directory)


@dataclass(frozen=True)
class _Superproject:
    """A checkout whose submodules are being checked out, and what is known of it."""

    worktree: Path  # the submodules' paths are relative to it
    url: str  # its URL: relative submodule URLs are relative to it
    local: bool  # it came from this machine, so its submodules may come from local paths
    modules: Path | None  # the user's git dirs of its submodules (.git/modules/), tried first
    checkout: Path | None  # the user's checkout of it, whose submodules are tried next
    config: Path | None  # where to record its submodules as initialised; None: nowhere
    prefix: str = ""  # its path in the workspace, for messages


@dataclass(frozen=True)
class _Submodule:
    name: str
    path: str  # relative to its superproject's worktree
    commit: str  # the commit the superproject records
    url: str | None  # as configured (.gitmodules, overridden by the config), maybe relative


def _submodule_entries(output: bytes) -> dict[str, dict[str, str]]:
    """``git config -z --get-regexp '^submodule\\.'`` output: variables by submodule name."""
    entries: dict[str, dict[str, str]] = {}
    for record in output.split(b"\0"):
        key, newline, value = os.fsdecode(record).partition("\n")
        name, _, variable = key.removeprefix("submodule.").rpartition(".")
        if newline and name:
            entries.setdefault(name, {})[variable] = value
    return entries


def _resolve_url(url: str, base: str) -> str:
    """A submodule's ``url`` as git resolves it: one starting ``./`` or ``../`` is relative to
    ``base``, its superproject's URL (git's ``relative_url``, scp-like URLs included)."""
    if not url.startswith(("./", "../")):
        return url
    base = base.removesuffix("/")
    colon = False
    while True:
        if url.startswith("../"):
            url = url[3:]
            if "/" in base:
                base = base[: base.rindex("/")]
            elif ":" in base:
                base, colon = base[: base.rindex(":")], True
            else:
                raise ValueError(f"its url cannot be resolved against {_display(base)}")
        elif url.startswith("./"):
            url = url[2:]
        else:
            break
    return f"{base}{':' if colon else '/'}{url}".removesuffix("/")


def _local_path(url: str) -> Path | None:
    """The directory a local URL names (an absolute path or ``file://``), else None."""
    if url[:7].lower() == "file://":
        return Path(unquote(urlsplit(url).path))
    return Path(url) if url.startswith("/") else None


def _remote_refusal(url: str) -> str | None:
    """Why git may not fetch a submodule from the remote ``url``, or None: only the transports
    a task's repository may use (RepositoryPolicy), so no ``git://``, ``http://``, ``ext::``."""
    allowed = ", ".join(f"{s}://" for s in sorted(_SUBMODULE_SCHEMES)) + ", user@host:path"
    head = url.partition("/")[0]
    if url.startswith("-"):
        return f"its url {_display(url)} looks like a command-line option"
    if "::" in head:
        return f"its url {_display(url)} names a transport helper (allowed: {allowed})"
    if "://" in url:
        scheme = url.partition("://")[0].lower()
        if scheme not in _SUBMODULE_SCHEMES:
            return (f"its url {_display(url)}: the scheme {scheme}:// is not allowed "
                    f"(allowed: {allowed})")  # fmt: skip
        host = url.partition("://")[2].partition("/")[0].rpartition("@")[2]
    elif ":" in head:  # scp-like [user@]host:path, which git reaches over ssh
        host = head.partition(":")[0].rpartition("@")[2]
    else:
        return f"its url {_display(url)} is neither an absolute path nor a URL"
    if host.startswith("-"):
        return f"its url {_display(url)}: the host looks like a command-line option"
    return None


def _config_environment(settings: dict[str, str]) -> dict[str, str]:
    """``settings`` as git's ``GIT_CONFIG_COUNT``/``KEY``/``VALUE`` variables: configuration
    for one command (and the git commands it runs), written nowhere."""
    env = {"GIT_CONFIG_COUNT": str(len(settings))}
    for i, (key, value) in enumerate(settings.items()):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    return env
