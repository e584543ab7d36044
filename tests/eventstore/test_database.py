"""Reaching the database: bad places are one clear error, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipa.eventstore import ConnectionParams, EventStore, StoreUnavailable, check_data_dir

pytestmark = pytest.mark.anyio


async def test_unreachable_database_is_one_clear_error() -> None:
    params = ConnectionParams.from_url("postgresql://ipa:secret@127.0.0.1:1/ipa")

    with pytest.raises(StoreUnavailable) as error:
        async with EventStore.open(params):
            pass

    message = str(error.value)
    assert "postgresql://ipa@127.0.0.1:1/ipa" in message
    assert "secret" not in message and "\n" not in message


async def test_opening_without_create_on_an_empty_database_is_refused(database) -> None:
    with pytest.raises(StoreUnavailable, match="no ipa event store at"):
        async with EventStore.open(database, create=False):
            pass


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://postgres@/db1?host=/tmp/sock", ("db1", "/tmp/sock", 5432, "postgres", "")),
        ("postgres://u:p%40ss@example:6543/x", ("x", "example", 6543, "u", "p@ss")),
    ],
)
def test_database_urls_are_parsed(url: str, expected: tuple) -> None:
    p = ConnectionParams.from_url(url)

    assert (p.dbname, p.host, p.port, p.user, p.password) == expected


@pytest.mark.parametrize("url", ["mysql://x@y/z", "postgresql://x@y:port/z"])
def test_malformed_database_url_is_refused(url: str) -> None:
    with pytest.raises(StoreUnavailable, match="database URL"):
        ConnectionParams.from_url(url)


def test_data_dir_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    with pytest.raises(StoreUnavailable, match=f"data dir {blocker}/ipa is not writable"):
        check_data_dir(blocker / "ipa")
