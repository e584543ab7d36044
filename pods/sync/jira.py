"""The JIRA connector (REST v2): move the linked issue's status with the task's phase, post
and update a comment, and read the issue's status (who changed it, from its changelog).

An issue already in the wanted status is delivered as it stands (a retry after a timeout, or
a person who moved it first). Comments are sent as stored in the payload, which ``plan.py``
writes in wiki markup: v2 renders that, not Markdown.
"""

from __future__ import annotations

from typing import Any

from ipa.domain import Command, OutboxEntry, RecordIssueStatus, TaskState

from .errors import SyncError
from .http import NOT_MODIFIED, RestApi

NAME = "jira"


class JiraConnector:
    """Delivers ``issue_status`` and ``comment`` updates; polls the issue's status."""

    name = NAME

    def __init__(self, api: RestApi | None) -> None:
        self._api = api

    def _ready(self) -> RestApi:
        if self._api is None:
            raise SyncError(NAME, "no JIRA configured (set IPA_JIRA_URL and IPA_JIRA_TOKEN)",
                            incident="auth")
        return self._api

    async def deliver(self, entry: OutboxEntry, state: TaskState) -> dict[str, Any]:
        api = self._ready()
        issue = entry.payload["issue"]
        if entry.kind == "issue_status":
            wanted = entry.payload["status"]
            current = await api.get(f"/rest/api/2/issue/{issue}", params={"fields": "status"})
            if _status(current, issue).casefold() == wanted.casefold():
                return {"issue": issue, "status": wanted}
            listed = await api.get(f"/rest/api/2/issue/{issue}/transitions")
            transitions = listed.get("transitions") if isinstance(listed, dict) else None
            if not isinstance(transitions, list):
                raise SyncError(NAME, f"GET /rest/api/2/issue/{issue}/transitions answered "
                                      "without a list of transitions")
            transitions = [t for t in transitions if isinstance(t, dict)
                           and isinstance(t.get("to"), dict) and "id" in t]
            match = [t for t in transitions
                     if str(t["to"].get("name", "")).casefold() == wanted.casefold()]
            if not match:
                names = ", ".join(str(t["to"].get("name")) for t in transitions)
                raise SyncError(NAME, f"no transition of {issue} leads to {wanted!r} "
                                      f"(available: {names or 'none'})", incident="rejected")
            await api.send("POST", f"/rest/api/2/issue/{issue}/transitions",
                           {"transition": {"id": match[0]["id"]}})
            return {"issue": issue, "status": wanted}
        if entry.kind == "comment":
            known = state.outbox.delivered.get(f"{NAME}:comment", {}).get("result", {})
            body = {"body": entry.payload["body"]}
            if known.get("id") and known.get("issue") == issue:
                answer = await api.send("PUT", f"/rest/api/2/issue/{issue}/comment/{known['id']}",
                                        body)
            else:
                answer = await api.send("POST", f"/rest/api/2/issue/{issue}/comment", body)
            comment_id = answer.get("id") if isinstance(answer, dict) else None
            if not isinstance(comment_id, str | int) or isinstance(comment_id, bool):
                raise SyncError(NAME, f"the comment on {issue}: the answer has no id")
            return {"issue": issue, "id": str(comment_id)}
        raise SyncError(NAME, f"cannot deliver a {entry.kind!r}")

    async def poll(self, state: TaskState) -> list[tuple[str, Command]]:
        if self._api is None:
            return []
        issue = state.outbox.config[NAME]["issue"]
        data = await self._api.get(f"/rest/api/2/issue/{issue}",
                                   params={"fields": "status", "expand": "changelog"},
                                   conditional=True)
        if data is NOT_MODIFIED:
            return []
        status = _status(data, issue)
        changelog = data.get("changelog")
        histories = changelog.get("histories") if isinstance(changelog, dict) else None
        by = ""
        for history in reversed(histories if isinstance(histories, list) else []):
            items = history.get("items") if isinstance(history, dict) else None
            if any(isinstance(item, dict) and item.get("field") == "status"
                   for item in (items if isinstance(items, list) else [])):
                author = history.get("author")
                author = author if isinstance(author, dict) else {}
                named = author.get("name") or author.get("displayName")
                by = named if isinstance(named, str) else ""
                break
        return [(f"jira:{by or 'unknown'}",
                 RecordIssueStatus(connector=NAME, issue=issue, status=status, by=by))]


def _status(data: Any, issue: str) -> str:
    """The name of the issue's status in a ``GET /rest/api/2/issue/{key}`` answer."""
    fields = data.get("fields") if isinstance(data, dict) else None
    status = fields.get("status") if isinstance(fields, dict) else None
    name = status.get("name") if isinstance(status, dict) else None
    if not isinstance(name, str) or not name:
        raise SyncError(NAME, f"GET /rest/api/2/issue/{issue} answered without a status name")
    return name
