"""Where a task came from and what was made from it, as the API and the pages show it.

A fork's or a clone's own view carries ``forked_from`` / ``cloned_from`` (``{task_id,
version}``, from its events). Its source's stream records nothing of it (forking reads a task,
it does not change it): the source's ``forks`` and ``clones`` come from the task list, which
knows every task's origin.
"""

from __future__ import annotations

from typing import Any

from ipa.projections import TaskList

ORIGINS = (("forked_from", "forks"), ("cloned_from", "clones"))
"""Each origin field of a task and the list of its source that names the task."""


def derived(task_list: TaskList, task_id: str) -> dict[str, list[dict[str, Any]]]:
    """``forks`` and ``clones`` of task ``task_id``, by task id: each ``{id, title, status,
    version}``, ``version`` being the source's version it was made from (from the task list's
    memory)."""
    found: dict[str, list[dict[str, Any]]] = {name: [] for _, name in ORIGINS}
    for row in task_list.derived_from(task_id):
        for field, name in ORIGINS:
            origin = row.get(field)
            if isinstance(origin, dict) and origin.get("task_id") == task_id:
                found[name].append({"id": row["id"], "title": row["title"],
                                    "status": row["status"], "version": origin["version"]})
    return found
