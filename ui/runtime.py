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
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import anyio

from ipa.eventstore import (
    AuditKey,
    ConnectionParams,
    EventStore,
    StoreSettings,
    StoreUnavailable,
    check_data_dir,
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
async def open_store(settings: Settings, *, create: bool) -> AsyncIterator[EventStore]:
    """Open the store the settings name: the URL's server, or the embedded one.

    With ``create=False`` (read-only commands) nothing is created: an embedded data dir with
    no database yet, or a server without ipa's tables, is a :class:`StoreUnavailable`.
    """
    async with contextlib.AsyncExitStack() as stack:
        store_settings = settings.store
        if store_settings.audit_key is None:
            key = await anyio.to_thread.run_sync(_key_in_data_dir, settings.data_dir, create)
            store_settings = replace(store_settings, audit_key=key)
        if settings.database_url:
            params = ConnectionParams.from_url(settings.database_url)
        else:
            # PG_VERSION, not the folder: the embedded server would initdb an empty ``pg``.
            pgdata = settings.data_dir.expanduser() / "pg"
            if not create and not (pgdata / "PG_VERSION").is_file():
                raise StoreUnavailable(
                    f"no ipa data in {settings.data_dir} (nothing recorded there yet; "
                    "set --data-dir or IPA_DATA_DIR)"
                )
            params = await anyio.to_thread.run_sync(
                stack.enter_context, embedded_postgres(settings.data_dir)
            )
        store = await stack.enter_async_context(
            EventStore.open(params, store_settings, create=create)
        )
        yield store


def _key_in_data_dir(data_dir: Path, create: bool) -> AuditKey | None:
    """The data dir's audit key; a new one when ``create`` (with the data dir, if need be)."""
    if create:
        data_dir = check_data_dir(data_dir)
    return load_audit_key(data_dir, create=create)
