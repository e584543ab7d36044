"""Rendered pages of ``GET /api/tasks``, served again while nothing on them can have changed.

A page is the task list's rows (from its memory), each with the task's ``attention`` (the
supervisor may know of a crash) and ``node`` (the lease holder, read for the request). A kept
page is served only when, at the new request:

- the list has applied no event since (its ``position``: every change of a row moves it),
  and the page's first and last rows are still the very objects the list holds (a reload of
  the list, after a rebuild or when another process moved its saved position, makes every
  row anew, even at the same position); an empty page is not kept;
- every row's ``attention`` and ``node`` are the same as in the kept page: the same crash
  marks from the supervisor, and the very same owners map (``Owners.every`` hands out the same
  object while no lease changed), so no row has to be looked at.

So an answer from here is the one the request would have rendered; what it saves is copying
the rows and encoding them. Pages filtered on attention (``?attention=1``) are not kept (which
rows they hold depends on what the supervisor knows). At most ``size`` pages, least recently
used out first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

from ipa.projections import TaskList

DEFAULT_SIZE = 256

Marks = tuple[dict[str, str], list[Any]]
"""What a page shows beside its rows: the owners map it was rendered with (by identity) and
each row's crash mark from the supervisor (by value)."""


class ListCache:
    """Bodies of the list's pages by their query, with what each was rendered from."""

    def __init__(self, task_list: TaskList, size: int = DEFAULT_SIZE) -> None:
        self.task_list = task_list
        self.size = size
        self.hits = 0
        self.misses = 0
        # key -> (list position, the page's rows, the owners and crash marks it shows, body)
        self._entries: OrderedDict[Hashable, tuple[int, list[dict[str, Any]], Marks, bytes]]
        self._entries = OrderedDict()

    def rows(self, key: Hashable) -> list[dict[str, Any]] | None:
        """The rows of the page kept under ``key`` if the list still holds every one of them
        as it was (None: no such page, or the list has moved)."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        position, rows, _, _ = entry
        columns = self.task_list.columns
        if (position != self.task_list.position or columns(rows[0]["id"]) is not rows[0]
                or columns(rows[-1]["id"]) is not rows[-1]):
            del self._entries[key]
            self.misses += 1
            return None
        return rows

    def body(self, key: Hashable, rows: Sequence[dict[str, Any]], marks: Marks) -> bytes | None:
        """The kept body of ``key`` if it was rendered from ``rows`` with these ``marks``."""
        entry = self._entries.get(key)
        if (entry is None or entry[2][0] is not marks[0] or entry[2][1] != marks[1]
                or (entry[1] is not rows and not _same(entry[1], rows))):
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[3]

    def put(self, key: Hashable, position: int, rows: list[dict[str, Any]], marks: Marks,
            body: bytes) -> None:
        """Keep ``body``, rendered from ``rows`` (read at list ``position``) and ``marks``."""
        if not rows:
            return
        self._entries[key] = (position, rows, marks, body)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


def _same(kept: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> bool:
    """Whether two pages hold the very same row objects (another request may have kept the
    page again meanwhile, in a list of its own)."""
    return len(kept) == len(rows) and all(a is b for a, b in zip(kept, rows, strict=True))
