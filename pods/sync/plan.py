"""What the outside systems should show for a task, computed from its state alone.

:func:`desired` returns one :class:`Desired` update per target the task's configuration asks
for; the engine queues those whose payload differs from what is unsent or was last delivered
(:func:`needed`). Payloads hold only what changes the outside: a status comment names phase
and status, not the version, so a job's events do not make a new comment.

A payload is sent as stored (what a person approves is what goes out), so it is written here in
the form the system takes: texts cut to its limits with a note, JIRA's comment in wiki markup,
GitHub's status comment with the hidden marker it is found again by.

The pull request (or, with a plain git remote, the push) follows the workflow's review gate
(``ipa.domain.sync.review_gate``): it is wanted from the gate's phase on, once the task's
branch holds work. A task's shows its spec/plan/summary; a project's, opened from its
integration branch at ``deployment``, shows its backlog and the children merged into it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ipa.domain import (
    BacklogItemStatus,
    Outbox,
    TaskState,
    get_workflow,
    payload_hash,
    review_gate,
)

from .wiki import to_wiki

DEFAULT_JIRA_STATUSES = {
    "development": "In Progress",
    "review": "In Review",
    "completed": "Done",
}
"""The JIRA status each phase moves the linked issue to, unless ``jira.statuses`` says (the
phase of the workflow's review gate is "In Review" too: a project's ``deployment``)."""

ARTIFACTS = ("spec", "plan", "summary")

GITHUB_TEXT_LIMIT = 65536
"""The most characters GitHub takes in a pull request's body or a comment."""

JIRA_TEXT_LIMIT = 32767
"""The most characters JIRA takes in a comment (a text field)."""


@dataclass(frozen=True)
class Desired:
    connector: str
    kind: str
    payload: dict[str, Any]

    @property
    def target(self) -> str:
        return f"{self.connector}:{self.kind}"


def task_branch(state: TaskState) -> str:
    """The remote branch that carries the task's work."""
    return f"ipa/{state.id.hex[:8]}"


def task_commit(state: TaskState) -> tuple[str, str] | None:
    """The repository and the newest commit of the task's work: its branch's head once a job
    landed there; for a task from before task branches, the last commit of the last workspace
    that has one."""
    if state.branch is not None:
        if state.branch.head_commit and state.repo:
            return state.repo, state.branch.head_commit
        return None
    for workspace in reversed(list(state.workspaces.values())):
        if workspace.commits:
            return workspace.repo, workspace.commits[-1]
    return None


def in_review(state: TaskState) -> bool:
    """True when the task's work should be in front of reviewers: its workflow has a review
    gate, the task has reached the gate's phase (or gone past it: a project's later phases
    merge more work into the same pull request), and its branch holds work."""
    gate = review_gate(state.workflow)
    if gate is None or task_commit(state) is None:
        return False
    phases = [phase.name for phase in get_workflow(state.workflow).phases]
    return phases.index(state.phase) >= phases.index(gate.phase)


def status_text(state: TaskState) -> str:
    what = "project" if state.workflow == "project" else "task"
    text = f"**ipa**: {what} “{state.title}” is **{state.status.value}** in phase **{state.phase}**"
    if state.backlog is not None and state.backlog.approved:
        items = state.backlog.live()
        done = sum(1 for item in items if item.status.done)
        text += f"; {done} of {len(items)} backlog items done"
    return text + "."


def comment_marker(state: TaskState) -> str:
    """A line GitHub does not show, by which the task's status comment is found again: a retry
    after a timeout updates the comment the first attempt made instead of adding one."""
    return f"<!-- ipa:task:{state.id} -->"


def shortened(text: str, limit: int) -> str:
    """``text``, cut to at most ``limit`` characters with a note saying so when it is longer."""
    if len(text) <= limit:
        return text
    note = (f"\n\n… (shortened by ipa: the text has {len(text):,} characters, "
            f"{limit:,} are allowed here)")
    return text[:limit - len(note)] + note


def pull_request_body(state: TaskState) -> str:
    if state.workflow == "project":
        return project_pull_request_body(state)
    parts = [state.description.strip()] if state.description.strip() else []
    artifacts = _artifacts(state)
    for name in ARTIFACTS:
        if artifacts.get(name):
            parts.append(f"## {name.capitalize()}\n\n{artifacts[name].strip()}")
    parts.append(f"---\nOpened by ipa for task `{state.id}`.")
    return "\n\n".join(parts)


def project_pull_request_body(state: TaskState) -> str:
    """A project's pull request: its description (the PRD), its backlog's items with their
    kind, phase and status, and the children whose work was merged into its branch."""
    parts = [state.description.strip()] if state.description.strip() else []
    items = state.backlog.live() if state.backlog is not None else ()
    if items:
        done = sum(1 for item in items if item.status.done)
        lines = [f"## Backlog ({done} of {len(items)} done)", ""]
        lines += [f"- [{'x' if item.status.done else ' '}] {item.title} (`{item.id}`, "
                  f"{item.kind}, {item.phase}): {item.status.value}" for item in items]
        parts.append("\n".join(lines))
    merged = [item for item in items
              if item.status is BacklogItemStatus.finished and item.child_id is not None]
    if state.branch is not None:
        branch = state.branch
        lines = [f"## Merged into `{branch.name}`", "",
                 f"The branch is at `{branch.head_commit or branch.base_commit}`, made from "
                 f"`{branch.base}` at `{branch.base_commit}`."]
        if merged:
            lines.append("")
            lines += [f"- {item.title} (`{item.id}`): child task `{item.child_id}`"
                      for item in merged]
        parts.append("\n".join(lines))
    parts.append(f"---\nOpened by ipa for project `{state.id}`.")
    return "\n\n".join(parts)


def _artifacts(state: TaskState) -> dict[str, str]:
    """The task's spec/plan/summary, when its state has them (``artifacts`` in its JSON, as a
    name → text mapping or a list of ``{name, content|text}``)."""
    raw = state.to_dict().get("artifacts")
    found: dict[str, str] = {}
    if isinstance(raw, dict):
        items = [{"name": k, "content": v} for k, v in raw.items()]
    elif isinstance(raw, list):
        items = [i for i in raw if isinstance(i, dict)]
    else:
        return found
    for item in items:
        value = item.get("content", item.get("text"))
        if isinstance(value, dict):
            value = value.get("content", value.get("text"))
        if isinstance(item.get("name"), str) and isinstance(value, str):
            found[item["name"]] = value
    return found


def desired(state: TaskState) -> list[Desired]:
    """The updates the task's configured connectors should show now, in delivery order."""
    config = state.outbox.config
    wanted: list[Desired] = []
    work = task_commit(state)
    publish = in_review(state)
    remote = config.get("git", {}).get("remote")
    if "github" in config:
        options = config["github"]
        if publish:
            assert work is not None
            wanted.append(Desired("github", "pull_request", {
                "title": state.title,
                "body": shortened(pull_request_body(state), GITHUB_TEXT_LIMIT),
                "head": task_branch(state),
                "base": options.get("base") or (state.branch.base if state.branch else None),
                "commit": work[1],
                "source": work[0],
                "remote": remote,
            }))
        pull = state.outbox.delivered.get("github:pull_request")
        if pull is not None:
            marker = comment_marker(state)
            text = shortened(status_text(state), GITHUB_TEXT_LIMIT - len(marker) - 2)
            wanted.append(Desired("github", "status_comment", {
                "number": pull["result"]["number"], "body": f"{text}\n\n{marker}",
            }))
    elif remote and publish:
        assert work is not None
        wanted.append(Desired("git", "push", {
            "remote": remote, "branch": task_branch(state), "commit": work[1], "source": work[0],
        }))
    if "jira" in config:
        options = config["jira"]
        gate = review_gate(state.workflow)
        statuses = {**DEFAULT_JIRA_STATUSES, **({gate.phase: "In Review"} if gate else {}),
                    **options.get("statuses", {})}
        if state.phase in statuses:
            wanted.append(Desired("jira", "issue_status", {
                "issue": options["issue"], "status": statuses[state.phase],
            }))
        wanted.append(Desired("jira", "comment", {
            "issue": options["issue"],
            "body": shortened(to_wiki(status_text(state)), JIRA_TEXT_LIMIT),
        }))
    return wanted


def needed(outbox: Outbox, update: Desired) -> bool:
    """True when ``update`` is news: its payload is neither waiting nor last delivered."""
    digest = payload_hash(update.payload)
    unsent = outbox.unsent(update.target)
    if unsent is not None:
        return unsent.payload_hash != digest
    return outbox.last_delivered_hash(update.target) != digest
