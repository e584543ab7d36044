"""The data-dir lock: one process at a time writes a data directory.

``ipa serve`` and every store-writing command hold an exclusive ``flock`` on
``<data_dir>/ipa.lock`` for as long as they run; a second one is refused at start with
:class:`DataDirInUse`, naming the holder. The lock file says who holds it (``{"pid",
"command", "since"}``, JSON), rewritten by each holder; it is never deleted (deleting a lock
file lets two processes lock two different files of the same name).

The kernel drops the lock when its holder's last descriptor closes, so a server killed with
SIGKILL never blocks the next start. The descriptor is not inherited by child processes
(agents, git, PostgreSQL), which would otherwise keep the lock of a dead server alive.

Reading commands (``ipa events``, ``replay``, ``audit verify``) take no lock: they read while
a server runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .database import check_data_dir
from .errors import StoreUnavailable

LOCK_FILE = "ipa.lock"


class DataDirInUse(StoreUnavailable):
    """Another live process holds the data dir's lock."""

    def __init__(self, data_dir: Path, holder: dict[str, Any], url: str | None = None) -> None:
        self.data_dir = data_dir
        self.pid = holder.get("pid") if isinstance(holder.get("pid"), int) else None
        self.command = holder.get("command") if isinstance(holder.get("command"), str) else None
        self.url = url
        who = self.command or "another process"
        details = [f"pid {self.pid}" if self.pid else "", url or ""]
        shown = ", ".join(d for d in details if d)
        super().__init__(
            f"the data dir {data_dir} is in use by {who}{f' ({shown})' if shown else ''}: stop "
            "it first, or use another --data-dir"
        )


def read_holder(data_dir: Path) -> dict[str, Any]:
    """What the lock file says about its holder (``{}`` when unreadable or empty)."""
    try:
        holder = json.loads((data_dir / LOCK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


@contextlib.contextmanager
def data_dir_lock(data_dir: Path, command: str) -> Iterator[Path]:
    """Hold ``data_dir``'s lock (creating the directory if need be) while the context is open,
    as ``command`` (e.g. ``"ipa serve"``); yield the resolved data dir. Raises
    :class:`DataDirInUse` at once when another process holds it."""
    data_dir = check_data_dir(data_dir)
    path = data_dir / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise StoreUnavailable(f"cannot open the lock file {path}: {e.strerror or e}") from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataDirInUse(data_dir, read_holder(data_dir)) from None
        holder = {"pid": os.getpid(), "command": command,
                  "since": datetime.now(UTC).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield data_dir
        finally:
            os.ftruncate(fd, 0)  # a reader must not name a process that let go
    finally:
        os.close(fd)  # and with it the lock
