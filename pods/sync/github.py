"""The GitHub connector (REST): push the task's branch and open or update its pull request,
post and update a status comment, and read reviews and the pull request's state.

Delivery is idempotent: a retry after a timeout may find that the first attempt succeeded, so
before creating anything the connector looks for it (the open pull request of the branch; the
status comment by the task's marker), and a 422 "already exists" resolves to the one that
exists. A permanent redirect of the repository (renamed or transferred) is reported through
``renamed`` so that later requests use the new name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ipa.domain import Command, OutboxEntry, RecordPullRequestState, RecordReview, TaskState

from .errors import SyncError
from .git import push
from .http import NOT_MODIFIED, RestApi
from .plan import comment_marker

NAME = "github"
_VERDICTS = {"APPROVED": "approved", "CHANGES_REQUESTED": "changes_requested"}
_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")

log = logging.getLogger(__name__)


class GitHubConnector:
    """Delivers ``pull_request`` and ``status_comment`` updates; polls reviews."""

    name = NAME

    def __init__(self, api: RestApi, *, token: str | None, git_url: str,
                 git_dir_of: Callable[[str, str], Awaitable[Path]], push_timeout: float,
                 renamed: Callable[[str, str], Awaitable[None]]) -> None:
        self._api = api
        self._token = token
        self._git_url = git_url
        self._git_dir_of = git_dir_of
        self._push_timeout = push_timeout
        self._renamed = renamed

    def _check_token(self) -> None:
        if not self._token:
            raise SyncError(NAME, "no token configured (set IPA_GITHUB_TOKEN or put it in "
                                  "IPA_SECRETS_FILE)", incident="auth")

    async def deliver(self, entry: OutboxEntry, state: TaskState) -> dict[str, Any]:
        self._check_token()
        repo = state.outbox.config[NAME]["repo"]
        if entry.kind == "pull_request":
            result = await self._pull_request(repo, entry.payload, state)
        elif entry.kind == "status_comment":
            result = await self._status_comment(repo, entry.payload, state)
        else:
            raise SyncError(NAME, f"cannot deliver a {entry.kind!r}")
        await self._follow_moves(repo)
        return result

    # -- the pull request ---------------------------------------------------------------------

    async def _pull_request(self, repo: str, payload: dict[str, Any],
                            state: TaskState) -> dict[str, Any]:
        base = payload.get("base")
        if not base:  # also proves the repository exists before anything is pushed
            info = await self._api.get(f"/repos/{repo}")
            base = _field(info, "default_branch", str, f"GET /repos/{repo}")
        remote = payload.get("remote") or f"{self._git_url}/{repo}.git"
        git_dir = await self._git_dir_of(NAME, payload["source"])
        known = state.outbox.delivered.get(f"{NAME}:pull_request", {}).get("result", {})
        await push(NAME, git_dir, remote, payload["commit"], payload["head"],
                   expect=known.get("commit"),
                   token=None if payload.get("remote") else self._token,
                   timeout=self._push_timeout)
        branch = payload["head"]
        source = pushed_repository(payload.get("remote"), self._git_url)
        head, extra = branch, {}
        owner = repo.split("/")[0]
        if source is not None and source.casefold() != repo.casefold():  # a fork
            owner = source.split("/")[0]
            head = f"{owner}:{branch}"
            if owner.casefold() == repo.split("/")[0].casefold():
                extra = {"head_repo": source}  # GitHub: needed when one owner has both
        body = {"title": payload["title"], "body": payload["body"]}
        number = known.get("number") or await self._open_pull(repo, owner, branch)
        if number:
            answer = await self._api.send("PATCH", f"/repos/{repo}/pulls/{number}", body)
        else:
            try:
                answer = await self._api.send("POST", f"/repos/{repo}/pulls",
                                              {**body, "head": head, "base": base, **extra})
            except SyncError as e:
                # The first attempt may have timed out after GitHub made it.
                if not (e.status_code == 422 and "already exists" in e.reason.lower()):
                    raise
                number = await self._open_pull(repo, owner, branch)
                if number is None:
                    raise
                answer = await self._api.send("PATCH", f"/repos/{repo}/pulls/{number}", body)
        what = f"the pull request of {repo}"
        url = answer.get("html_url") if isinstance(answer, dict) else None
        return {"number": _field(answer, "number", int, what),
                "url": url if isinstance(url, str) else "",
                "commit": payload["commit"], "branch": branch, "base": base}

    async def _open_pull(self, repo: str, owner: str, branch: str) -> int | None:
        """The number of the open pull request from ``owner:branch`` into ``repo``, if any."""
        pulls = await self._api.get_all(f"/repos/{repo}/pulls",
                                        params={"head": f"{owner}:{branch}", "state": "open"})
        for pull in pulls:
            head = pull.get("head") if isinstance(pull, dict) else None
            if isinstance(head, dict) and head.get("ref") == branch:
                return _field(pull, "number", int, f"a pull request of {repo}")
        return None

    # -- the status comment -------------------------------------------------------------------

    async def _status_comment(self, repo: str, payload: dict[str, Any],
                              state: TaskState) -> dict[str, Any]:
        number = payload["number"]
        known = state.outbox.delivered.get(f"{NAME}:status_comment", {}).get("result", {})
        comment_id = known.get("id") if known.get("number") == number else None
        if comment_id is None:
            comment_id = await self._marked_comment(repo, number, comment_marker(state))
        body = {"body": payload["body"]}
        if comment_id is not None:
            answer = await self._api.send("PATCH", f"/repos/{repo}/issues/comments/{comment_id}",
                                          body)
        else:
            answer = await self._api.send("POST", f"/repos/{repo}/issues/{number}/comments",
                                          body)
        return {"id": _field(answer, "id", int, f"the comment on #{number}"), "number": number}

    async def _marked_comment(self, repo: str, number: int, marker: str) -> int | None:
        """The newest comment on ``#number`` that carries ``marker`` (one ipa posted for this
        task, perhaps by an attempt that timed out), if any."""
        comments = await self._api.get_all(f"/repos/{repo}/issues/{number}/comments")
        marked = [c for c in comments if isinstance(c, dict)
                  and isinstance(c.get("body"), str) and marker in c["body"]]
        return _field(marked[-1], "id", int, f"a comment on #{number}") if marked else None

    # -- polling ------------------------------------------------------------------------------

    async def poll(self, state: TaskState) -> list[tuple[str, Command]]:
        """Commands for what changed on the pull request since the last poll (conditional
        requests: an unchanged resource costs a 304)."""
        pull = state.outbox.delivered.get(f"{NAME}:pull_request", {}).get("result", {})
        number = pull.get("number")
        if not number or not self._token:
            return []
        repo = state.outbox.config[NAME]["repo"]
        found: list[tuple[str, Command]] = []
        path = f"/repos/{repo}/pulls/{number}/reviews"
        reviews = await self._api.get_all(path, conditional=True)
        if reviews is not NOT_MODIFIED:
            try:
                for review in reviews:
                    found += await self._review(repo, number, review, state)
            except SyncError:
                self._api.forget(path)  # read them all again next time, not a 304
                raise
        current = await self._api.get(f"/repos/{repo}/pulls/{number}", conditional=True)
        if current is not NOT_MODIFIED:
            if not isinstance(current, dict):
                raise SyncError(NAME, f"GET /repos/{repo}/pulls/{number} answered "
                                      f"{type(current).__name__}, not a pull request")
            if current.get("merged"):
                by = _text((current.get("merged_by") or {}).get("login"))
                found.append((f"github:{by or 'unknown'}", RecordPullRequestState(
                    connector=NAME, number=number, state="merged", by=by)))
            elif current.get("state") == "closed":
                found.append(("github:unknown", RecordPullRequestState(
                    connector=NAME, number=number, state="closed")))
        await self._follow_moves(repo)
        return found

    async def _review(self, repo: str, number: int, review: Any,
                      state: TaskState) -> list[tuple[str, Command]]:
        """The command recording ``review``, when it is a verdict not recorded yet."""
        what = f"a review of {repo}#{number}"
        review_id = str(_field(review, "id", int, what))
        verdict = _VERDICTS.get(_text(review.get("state")))
        if verdict is None or state.outbox.review(review_id) is not None:
            return []
        user = review.get("user")
        login = _text(user.get("login") if isinstance(user, dict) else None) or "unknown"
        comments: list[dict[str, Any]] = []
        if verdict == "changes_requested":
            listed = await self._api.get_all(
                f"/repos/{repo}/pulls/{number}/reviews/{review_id}/comments")
            comments = [{"path": c.get("path"), "line": c.get("line"),
                         "body": _text(c.get("body"))} for c in listed if isinstance(c, dict)]
        return [(f"github:{login}", RecordReview(
            connector=NAME, review_id=review_id, reviewer=login, verdict=verdict,
            body=_text(review.get("body")), comments=comments,
            commit=_text(review.get("commit_id")) or None, url=_text(review.get("html_url")),
        ))]

    # -- a renamed repository -----------------------------------------------------------------

    async def _follow_moves(self, repo: str) -> None:
        """Report a rename when a request under ``/repos/{repo}`` was permanently redirected:
        the repository's own answer names where it lives now (GitHub's redirects point to
        ``/repositories/{id}``, which does not). A failure here is logged, not raised: what
        was delivered stays delivered, and the next redirect asks again."""
        under = re.compile(rf"/repos/{re.escape(repo)}(?:[/?]|$)", re.IGNORECASE)
        if not any(under.match(asked) for asked, _ in self._api.take_moves()):
            return
        try:
            info = await self._api.get(f"/repos/{repo}")
            new = _field(info, "full_name", str, f"GET /repos/{repo}")
        except SyncError as e:
            log.info("github: %s moved, but where to is unknown: %s", repo, e)
            return
        if _REPO.fullmatch(new) and new.casefold() != repo.casefold():
            await self._renamed(repo, new)


def pushed_repository(remote: str | None, git_url: str) -> str | None:
    """The GitHub repository (``owner/name``) that ``remote`` (the task's ``git.remote``)
    names, when it lies under GitHub's git URL (``IPA_GITHUB_GIT_URL``, scp-like ``git@host:``
    remotes of the same host too); ``None`` for any other remote (a path, another server)."""
    where, base = _host_and_path(remote or ""), _host_and_path(git_url)
    if where is None or base is None or where[0] != base[0]:
        return None
    prefix = base[1].rstrip("/") + "/"
    if not where[1].startswith(prefix):
        return None
    parts = where[1][len(prefix):].strip("/").split("/")
    if len(parts) != 2:
        return None
    found = f"{parts[0]}/{parts[1].removesuffix('.git')}"
    return found if _REPO.fullmatch(found) else None


def _host_and_path(url: str) -> tuple[str, str] | None:
    if "://" in url:
        parts = urlsplit(url)
        return (parts.hostname or "").lower(), parts.path
    scp = re.fullmatch(r"(?:[^@/]+@)?([^:/]+):(.+)", url)  # git@github.com:owner/name.git
    return None if scp is None else (scp.group(1).lower(), "/" + scp.group(2).lstrip("/"))


def _field(data: Any, key: str, kind: type, what: str) -> Any:
    """``data[key]`` when ``data`` is an object and the value is a ``kind``; anything else is
    an odd answer, said as such."""
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, kind) or isinstance(value, bool):
        raise SyncError(NAME, f"{what}: the answer has no {kind.__name__} {key!r} "
                              f"(got {type(data).__name__})")
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
