"""*Reason*: the context an agent run starts from, built from the task's state within a budget.

Sections, in prompt order: the task (title and description), the memories recalled for the
job (``Memory``: what earlier runs on the same repository, project or task learned, best first,
within 15% of the budget; see ``projections/memory.py``), its spec and plan (the newest
``spec``/``plan`` artifacts), the change requests for the job's phase, the answers people gave
to this job's questions, the results of the jobs that succeeded before it, and the continuity
log (what earlier attempts learned, this job's first). A re-plan job (``spec["replan"]``) gets
the project's backlog as it is now too, every item with its status, after the task.

The context must fit the agent type's ``context_tokens`` (estimated at four characters a
token). The task, feedback and answers are never dropped; when the rest does not fit, the
results of earlier jobs go first, oldest first, then the memories, then the continuity log's
oldest entries from other jobs, then this job's oldest. A section that does not fit on its own
is shortened to its beginning and end. Whatever was dropped or shortened is named, and
recorded by the pod in ``ContextPrepared``.

The prompt is the agent type's template (``string.Template``: ``$name`` or ``${name}``) filled
with ``task_title``, ``task_id``, ``workflow``, ``phase``, ``agent``, ``job_id``, ``attempt``,
``kinds`` and ``phases`` (for a backlog: the specialists an item may name, as a Markdown list,
and the phases items may run in), ``base_commit`` (where this run's worktree starts),
``change_base`` (where the task's branch started: ``git diff ${change_base}`` is the task's
whole change so far; ``base_commit`` before the branch exists), ``context``, ``rules`` and
``role`` (the agent type's role text; empty when it has none). A template that names another
field fails with a :class:`PromptError` naming it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from string import Template

from ipa.domain import Backlog, BacklogItemStatus, Job, JobStatus, TaskState

CHARS_PER_TOKEN = 4

RULES = """\
If you cannot go on without a decision from a person, stop and end your reply with one line:
QUESTION: <your question>
Your next run will see the answer."""

QUESTION_PREFIX = "QUESTION:"


class PromptError(Exception):
    """A prompt template cannot be filled (unknown field, bad placeholder, unreadable)."""


@dataclass(frozen=True)
class Section:
    """One part of the context; ``keep`` sections are never dropped."""

    name: str
    title: str
    text: str
    keep: bool = False

    def render(self) -> str:
        return f"## {self.title}\n\n{self.text.strip()}\n"


@dataclass(frozen=True)
class PreparedContext:
    """The filled prompt, and what went into it (``memories``: the ids of the memories it
    holds, in prompt order)."""

    prompt: str
    sections: list[str]
    dropped: list[str]
    tokens: int
    budget_tokens: int
    memories: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Remembered:
    """A memory offered to a run (``projections/memory.py``)."""

    id: str
    kind: str
    scope: str
    text: str


MEMORY_SHARE = 0.15
"""The share of the context budget memories may take; the best come first."""


def memory_section(memories: list[Remembered], budget_tokens: int) -> tuple[Section | None,
                                                                         list[str]]:
    """The memories that fit their share of the budget, best first, as one section, and
    their ids."""
    room = int(budget_tokens * MEMORY_SHARE * CHARS_PER_TOKEN)
    lines: list[str] = []
    ids: list[str] = []
    used = 0
    for memory in memories:
        where = memory.scope.partition(":")[0]
        line = f"- ({memory.kind}, {where}) {' '.join(memory.text.split())}"
        if used + len(line) + 1 > room:
            continue
        lines.append(line)
        ids.append(memory.id)
        used += len(line) + 1
    if not lines:
        return None, []
    text = ("What earlier runs on this work learned, most useful first (they may be out of "
            "date: trust what you see in the code):\n\n" + "\n".join(lines))
    return Section("memories", "Memory", text), ids


def estimate_tokens(text: str) -> int:
    return (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN


def gather(state: TaskState, job: Job, memory: Section | None = None) -> list[Section]:
    """Every section the job's context could hold, in prompt order (see the module doc)."""
    sections = [Section("task", "Task", f"# {state.title}\n\n{state.description or '(none)'}",
                        keep=True)]
    if memory is not None:
        sections.append(memory)
    if job.spec.get("replan") is not None and state.backlog is not None:
        sections.append(Section("backlog", f"The backlog now (version {state.backlog.version})",
                                backlog_text(state.backlog), keep=True))
    for name in ("spec", "plan"):
        artifact = state.artifacts.get(name)
        if artifact is not None:
            sections.append(Section(name, name.capitalize(), artifact.content))
    feedback = [f for f in state.feedback if f.phase == job.phase]
    if feedback:
        text = "\n\n".join(f"From {f.actor}:\n{f.feedback}" for f in feedback)
        sections.append(Section("feedback", "Changes requested", text, keep=True))
    merge = job.spec.get("merge")
    if isinstance(merge, dict):
        files = "\n".join(f"- {path}" for path in merge.get("files") or []) or "- (git names none)"
        sections.append(Section("merge", "Merge", (
            f"Your working directory is the project's branch in the middle of merging the work "
            f"of item {merge.get('item')!r} (commit {str(merge.get('commit'))[:12]}), which "
            f"conflicts in:\n{files}\n\nResolve every conflict: keep what both sides meant, "
            "remove every conflict marker, and leave the files ready to commit."), keep=True))
    answers = [q for q in state.questions.values()
               if q.job_id == job.job_id and q.answer is not None]
    if answers:
        text = "\n\n".join(f"Q: {q.question}\nA ({q.answered_by}): {q.answer}" for q in answers)
        sections.append(Section("answers", "Answers to your questions", text, keep=True))
    for earlier in state.jobs.values():
        if earlier.status is JobStatus.succeeded and earlier.job_id != job.job_id:
            summary = str((earlier.result or {}).get("summary", "")).strip()
            if summary:
                sections.append(Section(f"result:{earlier.job_id}",
                                        f"Result of {earlier.job_id} ({earlier.agent})", summary))
    for i, learning in enumerate(state.learnings):
        sections.append(Section(f"learning:{learning.job_id}:{i + 1}",
                                f"Learned by {learning.job_id}, attempt {learning.attempt}",
                                learning.text))
    return sections


_STATUS = {
    BacklogItemStatus.proposed: "waits for approval: you may change it, or leave it out",
    BacklogItemStatus.approved: "not started: you may change it, or leave it out to cancel it",
    BacklogItemStatus.spawned: "its child task runs: keep it exactly as it is, or leave it out "
                               "to cancel that child",
    BacklogItemStatus.merging: "done, its work is being merged: keep it exactly as it is",
    BacklogItemStatus.finished: "finished: keep it exactly as it is",
    BacklogItemStatus.skipped: "skipped by a person: keep it exactly as it is",
    BacklogItemStatus.failed: "its child failed and waits for a person: keep it exactly as it "
                              "is, or leave it out to cancel it",
}


def backlog_text(backlog: Backlog) -> str:
    """A re-plan's view of the backlog: each item's status and what may be done with it, then
    the items not dropped in the contract's JSON (to copy, change and add to)."""
    lines = [f"- `{item.id}` ({item.kind}, {item.phase}): {item.status.value}; "
             + _STATUS.get(item.status, "") for item in backlog.live()]
    dropped = [item.id for item in backlog.items if item.status is BacklogItemStatus.dropped]
    if dropped:
        lines.append(f"- dropped, gone for good (new work takes a new id): "
                     f"{', '.join(f'`{i}`' for i in dropped)}")
    block = json.dumps({"items": [item.fields() for item in backlog.live()]}, indent=1,
                       ensure_ascii=False)
    return "\n".join(lines) + f"\n\nIts items, as the contract writes them:\n\n```\n{block}\n```"


def _drop_order(sections: list[Section], job: Job) -> list[Section]:
    """The droppable sections, the first to drop first."""
    results = [s for s in sections if s.name.startswith("result:")]
    results += [s for s in sections if s.name == "memories"]
    learnings = [s for s in sections if s.name.startswith("learning:")]
    others = [s for s in learnings if not s.name.startswith(f"learning:{job.job_id}:")]
    own = [s for s in learnings if s.name.startswith(f"learning:{job.job_id}:")]
    # By name, not `in`: comparing sections field by field made this quadratic in their size.
    rest = [s for s in sections if not s.keep and s.name != "memories"
            and not s.name.startswith(("result:", "learning:"))]
    return [*results, *others, *own, *rest]


def fit(sections: list[Section], job: Job, budget_tokens: int) -> tuple[list[Section], list[str]]:
    """The sections that fit ``budget_tokens`` (in order) and the names of those dropped or
    shortened."""
    kept = list(sections)
    dropped: list[str] = []

    def size() -> int:
        return sum(estimate_tokens(s.render()) for s in kept)

    for section in _drop_order(sections, job):
        if size() <= budget_tokens:
            break
        kept.remove(section)
        dropped.append(section.name)
    if size() > budget_tokens:
        # What is left is kept whole in name; the largest parts are cut to their two ends.
        for i in sorted(range(len(kept)), key=lambda i: -len(kept[i].text)):
            over = size() - budget_tokens
            if over <= 0:
                break
            section = kept[i]
            room = max(200, len(section.text) - over * CHARS_PER_TOKEN - 100)
            head, tail = section.text[: room // 2], section.text[-room // 2 :]
            text = f"{head}\n\n[... {len(section.text) - room} characters left out ...]\n\n{tail}"
            kept[i] = Section(section.name, section.title, text, section.keep)
            dropped.append(f"{section.name} (shortened)")
    return kept, dropped


def prepare(
    state: TaskState, job: Job, *, template: Path, agent: str, budget_tokens: int,
    base_commit: str = "", role: str = "", kinds: str = "", phases: str = "",
    memories: list[Remembered] | None = None,
) -> PreparedContext:
    """The prompt of the job's next run (see the module doc)."""
    memory, memory_ids = memory_section(memories or [], budget_tokens)
    kept, dropped = fit(gather(state, job, memory), job, budget_tokens)
    if not any(section.name == "memories" for section in kept):
        memory_ids = []
    context = "\n".join(section.render() for section in kept)
    try:
        source = template.read_text()
    except OSError as e:
        raise PromptError(f"prompt template {template}: {e.strerror or e}") from None
    fields = {
        "task_title": state.title,
        "task_id": str(state.id),
        "workflow": state.workflow,
        "phase": job.phase,
        "agent": agent,
        "job_id": job.job_id,
        "attempt": str(job.attempts),
        "base_commit": base_commit,
        "change_base": state.branch.base_commit if state.branch is not None else base_commit,
        "context": context,
        "rules": RULES,
        "role": role,
        "kinds": kinds,
        "phases": phases,
    }
    try:
        prompt = Template(source).substitute(fields)
    except KeyError as e:
        known = ", ".join(sorted(fields))
        raise PromptError(f"prompt template {template.name}: unknown field ${e.args[0]} "
                          f"(known: {known})") from None
    except ValueError as e:
        raise PromptError(f"prompt template {template.name}: {e}") from None
    return PreparedContext(prompt, [s.name for s in kept], dropped,
                           estimate_tokens(prompt), budget_tokens, memory_ids)


def question_in(answer: str) -> str | None:
    """The question an agent's final answer ends with (see ``RULES``), if any."""
    for line in reversed(answer.strip().splitlines()):
        line = line.strip()
        if line.startswith(QUESTION_PREFIX):
            question = line[len(QUESTION_PREFIX):].strip()
            return question or None
        if line:
            return None
    return None
