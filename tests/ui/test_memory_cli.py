"""``ipa memory ...`` (issue 16): search, list, show, pin and forget through a real ``ipa serve``;
``ipa projections rebuild`` rebuilding the memories and ``ipa memory reembed`` with another
embedder, on the store itself. Each command runs as its own process, as a user runs it."""

from __future__ import annotations

import json

import anyio
import httpx
import pytest

from ipa.eventstore import ConnectionParams, EventStore
from ipa.projections import Memory, MemorySettings

from .test_cli import ipa, url_of
from .test_memory_api import APP, UNKNOWN, learned
from .test_serve import Served, served

pytestmark = pytest.mark.anyio

TESTS = "the tests need the --no-cov flag"


async def until_found(server: Served, q: str, scope: str) -> list[dict]:
    """The server's search for ``q`` once its memory has folded what it finds (polled)."""
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
        with anyio.fail_after(30):
            while True:
                response = await client.get("/api/memories", params={"q": q, "scope": scope})
                if response.status_code == 200 and response.json()["items"]:
                    return response.json()["items"]
                await anyio.sleep(0.1)


async def memory_cli(server: Served, *args: str) -> list:
    """``ipa memory ARGS --url ...`` (asserting it succeeded): its stdout's lines."""
    run = await ipa("memory", *args, "--url", server.url)
    assert run.status == 0 and run.err == "", run.err
    return run.lines


async def test_memory_commands_act_through_the_server(
    database: ConnectionParams, store: EventStore,
) -> None:
    await learned(store, TESTS, "the API client lives in src/net/")
    async with served(database) as server:
        [best, *_] = await until_found(server, "how do I run the tests", APP)
        found = await memory_cli(server, "search", "how do I run the tests", "--scope", APP)
        as_json = json.loads("\n".join(await memory_cli(
            server, "search", "run the tests", "--scope", APP, "--limit", "1", "--json")))
        listed = await memory_cli(server, "list", "--scope", APP, "--kind", "semantic")
        shown = await memory_cli(server, "show", best["id"])
        pinned = await memory_cli(server, "pin", best["id"])
        pinned_row = await memory_cli(server, "list", "--scope", APP, "--kind", "semantic")
        unpinned = await memory_cli(server, "pin", best["id"], "--unpin")
        forgot = await memory_cli(server, "forget", best["id"], "--reason", "outdated")
        after = await memory_cli(server, "search", "how do I run the tests", "--scope", APP)

    assert found[0].startswith(f"{best['id']}  semantic  ") and found[0].endswith(TESTS)
    assert f"  {APP}  " in found[0]
    assert [row["id"] for row in as_json] == [best["id"]] and as_json[0]["similarity"] > 0
    assert len(listed) == 2 and any(line.endswith(TESTS) for line in listed)
    assert "               kind: semantic" in shown and shown[-1] == TESTS
    assert f"              scope: {APP}" in shown and "       last_used_at: -" in shown
    assert pinned[0].startswith(f"pinned memory {best['id']} (memory ledger, log position ")
    assert any(f"{APP} pinned  " in line for line in pinned_row)
    assert unpinned[0].startswith(f"unpinned memory {best['id']}")
    assert forgot[0].startswith(f"forgot memory {best['id']}")
    assert best["id"] not in "\n".join(after)


async def test_memory_command_errors_are_one_line(
    database: ConnectionParams, store: EventStore,
) -> None:
    await learned(store, TESTS)
    async with served(database) as server:
        await until_found(server, "tests", APP)
        unknown = await ipa("memory", "show", UNKNOWN, "--url", server.url)
        anywhere = await ipa("memory", "search", "tests", "--url", server.url)
        bad_scope = await ipa("memory", "list", "--scope", "galaxy:far", "--url", server.url)
        # The store's own command is refused while the server holds the data dir.
        reembed = await ipa("memory", "reembed", "--database-url", url_of(database),
                            "--data-dir", str(server.data_dir))
    bad_limit = await ipa("memory", "search", "tests", "--limit", "101")

    assert unknown.status == 1 and "[HTTP 404 memory_not_found]" in unknown.error_line()
    assert anywhere.status == 0 and "--no-cov" in anywhere.out  # no scope: every scope
    assert bad_scope.status == 1 and "'galaxy:far'" in bad_scope.error_line()
    assert reembed.status == 1 and "in use by ipa serve" in reembed.error_line()
    assert bad_limit.status == 2 and "at most 100" in bad_limit.err


async def test_projections_rebuild_rebuilds_the_memories(
    database: ConnectionParams, store: EventStore,
) -> None:
    await learned(store, TESTS, "the API client lives in src/net/")
    await learned(store, "the docs build with mkdocs", repo="/src/other")

    run = await ipa("projections", "rebuild", "--database-url", url_of(database))

    head = await store.head_position()
    assert run.status == 0 and run.err == "", run.err
    assert run.lines == [f"task list rebuilt: 2 task(s), log position {head}",
                         f"agent memory rebuilt: 5 memories, log position {head}",
                         f"analytics rebuilt: 0 usage record(s), log position {head}"]
    table = store.memory_table()
    await table.open()
    try:
        memory = Memory(store, table, MemorySettings())
        await memory.open()
        assert memory.problem is None and memory.position == head
        [best, *_] = await memory.search("how do I run the tests", [APP])
        assert best["text"] == TESTS
    finally:
        await table.close()


async def test_reembed_uses_the_embedder_the_environment_names(
    database: ConnectionParams, store: EventStore,
) -> None:
    await learned(store, TESTS)
    url = url_of(database)
    built = await ipa("projections", "rebuild", "--database-url", url)

    run = await ipa("memory", "reembed", "--database-url", url, IPA_EMBEDDER="wordllama:64")

    assert built.status == 0, built.err
    assert run.status == 0 and run.err == "", run.err
    assert run.lines == ["memories re-embedded: 2 with wordllama-l2-supercat:64 (64 dimensions)"]
    table = store.memory_table()
    await table.open()
    try:
        old = Memory(store, table, MemorySettings())
        await old.open()
        new = Memory(store, table, MemorySettings(embedder="wordllama:64"))
        await new.open()
        assert "ipa memory reembed" in (old.problem or "")
        assert new.problem is None
        [best, *_] = await new.search("how do I run the tests", [APP])
        assert best["text"] == TESTS
    finally:
        await table.close()
