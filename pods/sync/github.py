"""The GitHub connector (REST): push the task's branch and open or update its pull request,
post and update a status comment, and read reviews and the pull request's state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ipa.domain import Command, OutboxEntry, RecordPullRequestState, RecordReview, TaskState

from .errors import SyncError
from .git import push
from .http import NOT_MODIFIED, RestApi

NAME = "github"
_VERDICTS = {"APPROVED": "approved", "CHANGES_REQUESTED": "changes_requested"}


class GitHubConnector:
    """Delivers ``pull_request`` and ``status_comment`` updates; polls reviews."""

    name = NAME

    def __init__(self, api: RestApi, *, token: str | None, git_url: str,
                 git_dir_of: Callable[[str, str], Awaitable[Path]], push_timeout: float) -> None:
        self._api = api
        self._token = token
        self._git_url = git_url
        self._git_dir_of = git_dir_of
        self._push_timeout = push_timeout

    def _check_token(self) -> None:
        if not self._token:
            raise SyncError(NAME, "no token configured (set IPA_GITHUB_TOKEN or put it in "
                                  "IPA_SECRETS_FILE)", incident="auth")

    async def deliver(self, entry: OutboxEntry, state: TaskState) -> dict[str, Any]:
        self._check_token()
        repo = state.outbox.config[NAME]["repo"]
        if entry.kind == "pull_request":
            return await self._pull_request(repo, entry.payload, state)
        if entry.kind == "status_comment":
            return await self._status_comment(repo, entry.payload, state)
        raise SyncError(NAME, f"cannot deliver a {entry.kind!r}")

    async def _pull_request(self, repo: str, payload: dict[str, Any],
                            state: TaskState) -> dict[str, Any]:
        base = payload.get("base")
        if not base:  # also proves the repository exists before anything is pushed
            info = await self._api.get(f"/repos/{repo}")
            base = info["default_branch"]
        remote = payload.get("remote") or f"{self._git_url}/{repo}.git"
        git_dir = await self._git_dir_of(NAME, payload["source"])
        known = state.outbox.delivered.get(f"{NAME}:pull_request", {}).get("result", {})
        await push(NAME, git_dir, remote, payload["commit"], payload["head"],
                   expect=known.get("commit"),
                   token=None if payload.get("remote") else self._token,
                   timeout=self._push_timeout)
        body = {"title": payload["title"], "body": payload["body"]}
        if known.get("number"):
            answer = await self._api.send("PATCH", f"/repos/{repo}/pulls/{known['number']}",
                                          body)
        else:
            answer = await self._api.send("POST", f"/repos/{repo}/pulls",
                                          {**body, "head": payload["head"], "base": base})
        return {"number": answer["number"], "url": answer.get("html_url", ""),
                "commit": payload["commit"], "branch": payload["head"], "base": base}

    async def _status_comment(self, repo: str, payload: dict[str, Any],
                              state: TaskState) -> dict[str, Any]:
        known = state.outbox.delivered.get(f"{NAME}:status_comment", {}).get("result", {})
        if known.get("id") and known.get("number") == payload["number"]:
            answer = await self._api.send("PATCH", f"/repos/{repo}/issues/comments/{known['id']}",
                                          {"body": payload["body"]})
        else:
            answer = await self._api.send(
                "POST", f"/repos/{repo}/issues/{payload['number']}/comments",
                {"body": payload["body"]})
        return {"id": answer["id"], "number": payload["number"]}

    async def poll(self, state: TaskState) -> list[tuple[str, Command]]:
        """Commands for what changed on the pull request since the last poll (conditional
        requests: an unchanged resource costs a 304)."""
        pull = state.outbox.delivered.get(f"{NAME}:pull_request", {}).get("result", {})
        number = pull.get("number")
        if not number or not self._token:
            return []
        repo = state.outbox.config[NAME]["repo"]
        found: list[tuple[str, Command]] = []
        reviews = await self._api.get(f"/repos/{repo}/pulls/{number}/reviews", conditional=True)
        if reviews is not NOT_MODIFIED:
            for review in reviews:
                verdict = _VERDICTS.get(review.get("state", ""))
                review_id = str(review["id"])
                if verdict is None or state.outbox.review(review_id) is not None:
                    continue
                login = (review.get("user") or {}).get("login") or "unknown"
                comments: list[dict[str, Any]] = []
                if verdict == "changes_requested":
                    listed = await self._api.get(
                        f"/repos/{repo}/pulls/{number}/reviews/{review_id}/comments")
                    comments = [{"path": c.get("path"), "line": c.get("line"),
                                 "body": c.get("body", "")} for c in listed or []]
                found.append((f"github:{login}", RecordReview(
                    connector=NAME, review_id=review_id, reviewer=login, verdict=verdict,
                    body=review.get("body") or "", comments=comments,
                    commit=review.get("commit_id") or None, url=review.get("html_url") or "",
                )))
        current = await self._api.get(f"/repos/{repo}/pulls/{number}", conditional=True)
        if current is not NOT_MODIFIED:
            if current.get("merged"):
                by = (current.get("merged_by") or {}).get("login") or ""
                found.append((f"github:{by or 'unknown'}", RecordPullRequestState(
                    connector=NAME, number=number, state="merged", by=by)))
            elif current.get("state") == "closed":
                found.append(("github:unknown", RecordPullRequestState(
                    connector=NAME, number=number, state="closed")))
        return found
