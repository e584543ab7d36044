"""The JIRA connector (REST v2): move the linked issue's status with the task's phase, post
and update a comment, and read the issue's status (who changed it, from its changelog)."""

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
            listed = await api.get(f"/rest/api/2/issue/{issue}/transitions")
            transitions = listed.get("transitions", []) if isinstance(listed, dict) else []
            match = [t for t in transitions
                     if str((t.get("to") or {}).get("name", "")).casefold() == wanted.casefold()]
            if not match:
                names = ", ".join(str((t.get("to") or {}).get("name")) for t in transitions)
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
            return {"issue": issue, "id": str(answer["id"])}
        raise SyncError(NAME, f"cannot deliver a {entry.kind!r}")

    async def poll(self, state: TaskState) -> list[tuple[str, Command]]:
        if self._api is None:
            return []
        issue = state.outbox.config[NAME]["issue"]
        data = await self._api.get(f"/rest/api/2/issue/{issue}?fields=status&expand=changelog",
                                   conditional=True)
        if data is NOT_MODIFIED or not isinstance(data, dict):
            return []
        status = ((data.get("fields") or {}).get("status") or {}).get("name")
        if not status:
            return []
        by = ""
        for history in reversed((data.get("changelog") or {}).get("histories") or []):
            if any(item.get("field") == "status" for item in history.get("items") or []):
                author = history.get("author") or {}
                by = author.get("name") or author.get("displayName") or ""
                break
        return [(f"jira:{by or 'unknown'}",
                 RecordIssueStatus(connector=NAME, issue=issue, status=status, by=by))]
