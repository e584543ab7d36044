"""Text is text, end to end on a real ``ipa serve``: a NUL from a person (a title, a spec) or
from an agent's own output is stored as given, listed, served and rebuilt, and never stops the
server or its restart; lone surrogates are refused at the API without disturbing the writes
beside them (every acknowledged write stored, none refused stored)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import anyio
import httpx
import psycopg
import pytest

from ipa.eventstore import ConnectionParams, EventStore

from ..fakes.claude import FakeClaude
from .live import live_server
from .test_cli import ipa, url_of
from .test_serve import served

pytestmark = pytest.mark.anyio


def git_repo(path: Path) -> Path:
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t",
                    "commit", "-q", "--allow-empty", "-m", "init"], check=True)
    return path


async def until(client: httpx.AsyncClient, path: str, predicate) -> Any:
    """``path``'s JSON once ``predicate`` holds; the server may still be starting (its first
    line on stderr can be a log line printed before it listens)."""
    with anyio.fail_after(60):
        while True:
            try:
                response = await client.get(path)
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 200 and predicate(
                    response.json()):
                return response.json()
            await anyio.sleep(0.05)


async def test_nul_from_a_person_and_from_an_agent_never_stops_the_server(
    database: ConnectionParams, tmp_path: Path,
) -> None:
    fake = FakeClaude(tmp_path / "fake").script({"*": [{
        "messages": ["thinking \x00 aloud"], "text": "# Spec\nthe agent says \x00 here"}]})
    repo = git_repo(tmp_path / "repo")
    store = ["--database-url", url_of(database)]
    env = {"IPA_AUTO_AGENTS": "1", "IPA_CLAUDE_CLI": str(fake.cli)}

    async with served(database, "--data-dir", str(tmp_path / "data"), **env) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=20) as client:
        created = await client.post("/api/tasks", json={
            "title": "a\x00b", "description": "d", "repo": str(repo)})
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
        spec = await client.post(f"/api/tasks/{task_id}/update_spec",
                                 json={"description": "spec \x00 by a person"})
        assert spec.status_code == 200, spec.text
        # The spec writer's run ends with its NUL-bearing answer recorded as an artifact.
        view = await until(client, f"/api/tasks/{task_id}", lambda v: any(
            "\x00" in (a.get("content") or "") for a in v.get("artifacts") or []))
        listed = await until(client, "/api/tasks", lambda page: any(
            row["id"] == task_id and row["version"] >= view["version"]
            for row in page["items"]))
        [row] = [row for row in listed["items"] if row["id"] == task_id]
        assert (row["title"], row["error"]) == ("a\x00b", None)
        events = (await client.get(f"/api/tasks/{task_id}/events?limit=500")).json()["items"]
        assert any(e["data"].get("description") == "spec \x00 by a person" for e in events)
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get(f"/pods/{task_id}")).status_code == 200
        server.process.terminate()
        with anyio.fail_after(30):
            assert await server.process.wait() == 0

    async with served(database, "--data-dir", str(tmp_path / "data"), **env) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=20) as client:
        page = await until(client, "/api/tasks", lambda p: any(
            row["id"] == task_id for row in p["items"]))
        [row] = [row for row in page["items"] if row["id"] == task_id]
        assert (row["title"], row["error"]) == ("a\x00b", None)
        assert (await client.get(f"/api/tasks/{task_id}")).json()["title"] == "a\x00b"

    rebuilt = await ipa("projections", "rebuild", *store)
    verified = await ipa("audit", "verify", *store)
    assert rebuilt.status == 0, rebuilt.err
    assert verified.status == 0, verified.out + verified.err
    shown = await ipa("events", task_id, "--json", *store)
    assert json.loads(shown.out.splitlines()[0])["data"]["title"] == "a\x00b"


async def test_lone_surrogates_are_refused_and_the_writes_beside_them_are_exact(
    store: EventStore, tmp_path: Path,
) -> None:
    """120 creates at once, every fourth with a lone surrogate in its title (raw JSON, as a
    client would send it): those are 400 naming the field, the rest 201; exactly the
    acknowledged ones are stored and no answer is a 5xx."""
    async with live_server(store, tmp_path) as live:
        answers: list[tuple[int, bool, httpx.Response]] = []

        async def create(n: int) -> None:
            odd = n % 4 == 0
            title = '"bad \\ud800 title"' if odd else f'"task {n}"'
            body = f'{{"title": {title}, "description": "d"}}'.encode()
            response = await live.client.post(
                "/api/tasks", content=body, headers={"content-type": "application/json"})
            answers.append((n, odd, response))

        async with anyio.create_task_group() as tg:
            for n in range(120):
                tg.start_soon(create, n)

        assert all(r.status_code < 500 for _, _, r in answers)
        refused = [r for _, odd, r in answers if odd]
        accepted = [r for _, odd, r in answers if not odd]
        assert {r.status_code for r in refused} == {400}
        assert all("title" in r.json()["error"]["message"] for r in refused)
        assert {r.status_code for r in accepted} == {201}
        stored = set(map(str, await store.stream_ids()))
        assert stored == {r.json()["id"] for r in accepted}


async def test_an_event_that_cannot_be_decoded_never_stops_the_server_or_its_restart(
    database: ConnectionParams, tmp_path: Path,
) -> None:
    """A row edited by hand so it no longer decodes: the server starts, serves, lists the
    task as broken (the rest as they are), and the audit names it."""
    store = ["--database-url", url_of(database)]
    async with served(database, "--data-dir", str(tmp_path / "data")) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=20) as client:
        ids = [(await client.post("/api/tasks", json={"title": t, "description": "d"})).json()[
            "id"] for t in ("healthy", "broken")]
        await until(client, f"/api/tasks/{ids[1]}", lambda v: v["version"] >= 2)
    with psycopg.connect(database.conninfo(), autocommit=True) as conn:
        conn.execute("UPDATE events SET state = substring(state from 1 for 128) || 'garbage' "
                     "WHERE originator_id = %s AND originator_version = 2", (ids[1],))
        # The list folds the whole log again at the next start (as after a rebuild): the
        # shared model and each node's own (task_list@<node>).
        conn.execute("DELETE FROM read_models WHERE model LIKE 'task_list%%'")
        conn.execute("DELETE FROM projection_tracking WHERE application_name LIKE 'task_list%%'")

    async with served(database, "--data-dir", str(tmp_path / "data")) as server, \
            httpx.AsyncClient(base_url=server.url, timeout=20) as client:
        page = await until(client, "/api/tasks", lambda p: len(p["items"]) == 2)
        rows = {row["id"]: row for row in page["items"]}
        assert rows[ids[0]]["error"] is None
        assert "version 2" in rows[ids[1]]["error"]
        assert (await client.get(f"/api/tasks/{ids[0]}")).status_code == 200
        broken = await client.get(f"/api/tasks/{ids[1]}")
        assert broken.status_code < 500, broken.text  # served from its snapshot
        events = await client.get(f"/api/tasks/{ids[1]}/events")
        assert events.status_code == 200, events.text
        assert (await client.get("/healthz")).status_code == 200

    verified = await ipa("audit", "verify", *store)
    assert verified.status == 1
    assert f"{ids[1]} version 2" in verified.out + verified.err
