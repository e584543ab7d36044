"""Rendered JSON bodies of the API's reads, served again while they cannot have changed.

Two kinds of entries:

- **about the past** (a version of a task, the state as of it): immutable once that version
  exists; kept until evicted;
- **about the present** (a task's event pages): stored with the task's version when it was
  read, and served only while the task's running pod is still at that version. The pod is its
  task's single writer and moves its version on as soon as an append commits, so an entry is
  never older than what the pod knows; tasks without a running pod are not cached.

Bounded by the total size of the bodies (least recently used out first).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

DEFAULT_MAX_BYTES = 32 << 20


class ResponseCache:
    """Bodies by key, each with the version it is valid at (None: always)."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, tuple[int | None, bytes]] = OrderedDict()

    def get(self, key: Hashable, version: int | None = None) -> bytes | None:
        """The body stored under ``key`` if it was stored at ``version``."""
        entry = self._entries.get(key)
        if entry is None or entry[0] != version:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[1]

    def put(self, key: Hashable, body: bytes, version: int | None = None) -> None:
        """Keep ``body`` under ``key``, valid at ``version`` (None: valid for good)."""
        if len(body) > self.max_bytes // 16:
            return  # one huge body would push out everything else
        old = self._entries.pop(key, None)
        if old is not None:
            self.size -= len(old[1])
        self._entries[key] = (version, body)
        self.size += len(body)
        while self.size > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.size -= len(dropped)

    def __len__(self) -> int:
        return len(self._entries)
