"""Where ipa's data is, from the command line and the environment, and how to open it.

Precedence: a command-line option, then the environment (``IPA_DATA_DIR``,
``IPA_DATABASE_URL``, ``IPA_SNAPSHOT_INTERVAL``), then the default (the user's data dir and
the embedded PostgreSQL in it). ``--data-dir`` on the command line therefore wins over
``IPA_DATABASE_URL`` in the environment; ``--database-url`` wins over both.

The audit key is ``IPA_AUDIT_KEY``, else ``<data dir>/audit.key`` (also with a database URL),
which a writing command (``ipa serve``) creates when there is none; the store-reading
commands never create it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from ipa.eventstore import (
    AuditKey,
    ConnectionParams,
    DataDirInUse,
    EventStore,
    StoreSettings,
    StoreUnavailable,
    check_data_dir,
    data_dir_lock,
    default_data_dir,
    embedded_postgres,
    load_audit_key,
)


@dataclass(frozen=True)
class Settings:
    """Where the store is and how it behaves."""

    data_dir: Path
    database_url: str | None = None
    store: StoreSettings = StoreSettings()

    @classmethod
    def resolve(
        cls,
        *,
        data_dir: str | None = None,
        database_url: str | None = None,
        live: bool = True,
    ) -> Settings:
        interval = os.environ.get("IPA_SNAPSHOT_INTERVAL", "100")
        try:
            snapshot_interval = int(interval)
            if snapshot_interval < 0:
                raise ValueError
        except ValueError:
            raise StoreUnavailable(
                f"IPA_SNAPSHOT_INTERVAL={interval!r}: expected a whole number ≥ 0"
            ) from None
        if not data_dir:
            database_url = database_url or os.environ.get("IPA_DATABASE_URL")
        key = os.environ.get("IPA_AUDIT_KEY", "").strip()
        return cls(
            data_dir=Path(data_dir) if data_dir else default_data_dir(),
            database_url=database_url or None,
            store=replace(StoreSettings(), snapshot_interval=snapshot_interval, live=live,
                          audit_key=AuditKey.from_text(key) if key else None),
        )


@contextlib.asynccontextmanager
async def open_store(settings: Settings, *, create: bool,
                     lock: str | None = None) -> AsyncIterator[EventStore]:
    """Open the store the settings name: the URL's server, or the embedded one.

    With ``create=False`` (read-only commands) nothing is created: an embedded data dir with
    no database yet, or a server without ipa's tables, is a :class:`StoreUnavailable`.
    ``lock``: the writing command this is (``"ipa serve"``); it holds the data dir's lock
    (also with a database URL) for as long as the store is open, or is refused with
    :class:`DataDirInUse` before anything is opened.
    """
    async with contextlib.AsyncExitStack() as stack:
        if not create and not settings.database_url:
            _check_has_data(settings.data_dir)
        if lock is not None:
            await anyio.to_thread.run_sync(_hold_lock, stack, settings.data_dir, lock)
        store_settings = settings.store
        if store_settings.audit_key is None:
            key = await anyio.to_thread.run_sync(_key_in_data_dir, settings.data_dir, create)
            store_settings = replace(store_settings, audit_key=key)
        if settings.database_url:
            params = ConnectionParams.from_url(settings.database_url)
        else:
            params = await anyio.to_thread.run_sync(
                stack.enter_context, embedded_postgres(settings.data_dir)
            )
        store = await stack.enter_async_context(
            EventStore.open(params, store_settings, create=create)
        )
        yield store


def _check_has_data(data_dir: Path) -> None:
    # PG_VERSION, not the folder: the embedded server would initdb an empty ``pg``.
    if not (data_dir.expanduser() / "pg" / "PG_VERSION").is_file():
        raise StoreUnavailable(
            f"no ipa data in {data_dir} (nothing recorded there yet; "
            "set --data-dir or IPA_DATA_DIR)"
        )


def _hold_lock(stack: contextlib.AsyncExitStack, data_dir: Path, command: str) -> None:
    try:
        stack.enter_context(data_dir_lock(data_dir, command))
    except DataDirInUse as e:
        # The lock file names the holder; a server's own file adds where it listens.
        server = read_server_file(e.data_dir)
        url = server.get("url") if server and server.get("pid") == e.pid else None
        raise DataDirInUse(e.data_dir, {"pid": e.pid, "command": e.command}, url) from None


SERVER_FILE = "server.json"
"""``<data dir>/server.json``: ``{"url", "pid", "started_at"}`` of the ``ipa serve`` using the
data dir, written once it listens and removed when it stops gracefully (a killed server leaves
it behind: readers check that its pid still runs)."""


def write_server_file(data_dir: Path, url: str) -> Path:
    """Say where this process serves (atomically: a reader never sees half a file)."""
    path = data_dir.expanduser() / SERVER_FILE
    partial = path.with_name(f".{SERVER_FILE}.{os.getpid()}")
    partial.write_text(json.dumps({
        "url": url, "pid": os.getpid(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }) + "\n", encoding="utf-8")
    os.replace(partial, path)
    return path


def remove_server_file(data_dir: Path) -> None:
    """Take this process's ``server.json`` away (not another's)."""
    path = data_dir.expanduser() / SERVER_FILE
    if (read_server_file(data_dir) or {}).get("pid") == os.getpid():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def read_server_file(data_dir: Path) -> dict[str, Any] | None:
    """The data dir's ``server.json``, or None when there is none (or it is unreadable)."""
    try:
        server = json.loads((data_dir.expanduser() / SERVER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return server if isinstance(server, dict) else None


def running_server_url(data_dir: Path) -> str | None:
    """The URL of the live ``ipa serve`` on ``data_dir``, from its ``server.json``."""
    server = read_server_file(data_dir)
    if not server or not isinstance(server.get("url"), str):
        return None
    pid = server.get("pid")
    if not isinstance(pid, int) or not _alive(pid):
        return None  # left behind by a killed server
    return server["url"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _key_in_data_dir(data_dir: Path, create: bool) -> AuditKey | None:
    """The data dir's audit key; a new one when ``create`` (with the data dir, if need be)."""
    if create:
        data_dir = check_data_dir(data_dir)
    return load_audit_key(data_dir, create=create)
