"""The HTML pages: the central task list (``/``) and the per-pod live page (``/pods/{id}``).

Server-rendered HTML with small vanilla JS (``EventSource``) and no build step. The pages read
and act only through the JSON API and the SSE streams of :mod:`ipa.ui.app`.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from ipa.projections import TaskList
from ipa.supervisor import Supervisor


def routes(supervisor: Supervisor, task_list: TaskList) -> list[BaseRoute]:
    """The page routes (and their static files), mounted by ``create_app``."""
    return []
