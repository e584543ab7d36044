"""Task views (``task_state.view``) kept while their task's state has not changed.

A pod's state is an immutable ``TaskState``, replaced by a new object at each event; the view
of a state is a pure function of it. So the view rendered for a state is kept with that state
object and served again while the pod still holds the same object (checked by identity, never
by version alone); reads of a task that did not change render it once. A crashed pod's view
(``attention`` ``crashed``) is not kept: the supervisor's knowledge is not in the state.

Each caller gets its own copy of the view's top level (the API adds ``node``, forks, clones
and children to it); the values below are shared and never changed. At most ``size`` tasks,
least recently read out first.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any
from uuid import UUID

from ipa.domain import Attention, TaskState
from ipa.projections import task_state

DEFAULT_SIZE = 4096


class Views:
    """The newest view of each recently read task, with the state it was rendered from."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[UUID, tuple[TaskState, dict[str, Any]]] = OrderedDict()

    def view(self, state: TaskState, *, crashed: Attention | None = None) -> dict[str, Any]:
        """``task_state.view(state, crashed=crashed)``, rendered once per state object."""
        if crashed is not None:
            return task_state.view(state, crashed=crashed)
        entry = self._entries.get(state.id)
        if entry is not None and entry[0] is state:
            self._entries.move_to_end(state.id)
            self.hits += 1
            return dict(entry[1])
        self.misses += 1
        view = task_state.view(state)
        self._entries[state.id] = (state, view)
        self._entries.move_to_end(state.id)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return dict(view)

    def __len__(self) -> int:
        return len(self._entries)
