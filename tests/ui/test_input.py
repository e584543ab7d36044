"""What the API takes from a client (issue #11): only a person's commands, and every malformed
input answered with a 4xx JSON error, never a 500 (real store, real pods)."""

from __future__ import annotations

import re
import uuid

import anyio
import httpx
import pytest

from ipa.eventstore import EventStore
from ipa.ui.api import SYSTEM_COMMANDS

from . import test_api
from .test_api import assert_error, create, until

pytestmark = pytest.mark.anyio

parts, api, keyed = test_api.parts, test_api.api, test_api.keyed  # the same fixtures: a real
# store, pods, the app (keyed: with API keys)

JSON = {"content-type": "application/json"}


async def running(api: httpx.AsyncClient) -> dict:
    task = await create(api)
    return await until(api, task, lambda view: view["status"] == "running")


# Only a person's commands ----------------------------------------------------------------------


async def test_a_forged_usage_record_and_artifact_are_refused_and_write_nothing(
    api, store: EventStore
) -> None:
    task = await running(api)
    url = f"/api/tasks/{task['id']}"
    before = await store.head_position()

    usage = await api.post(f"{url}/record_usage", json={
        "job_id": "spec_writer-1", "run_id": "r1", "agent": "spec_writer", "model": "opus",
        "input_tokens": 1, "output_tokens": 1, "cost_usd": 123.45})
    artifact = await api.post(f"{url}/record_artifact", json={
        "job_id": "spec_writer-1", "artifact": "spec", "content": "forged"})

    message = assert_error(usage, 403, "system_command")["message"]
    assert "record_usage" in message and "recorded by ipa itself" in message
    assert "record_artifact" in assert_error(artifact, 403, "system_command")["message"]
    assert await store.head_position() == before


@pytest.mark.parametrize("name", sorted(SYSTEM_COMMANDS))
async def test_every_system_command_is_403_naming_it(api, name: str) -> None:
    response = await api.post(f"/api/tasks/{uuid.UUID(int=1)}/{name}", json={})

    assert name in assert_error(response, 403, "system_command")["message"]


async def test_an_unknown_command_stays_404_and_openapi_lists_only_a_persons(api) -> None:
    response = await api.post(f"/api/tasks/{uuid.UUID(int=1)}/explode", json={})
    paths = (await api.get("/openapi.json")).json()["paths"]

    assert_error(response, 404, "unknown_command")
    assert "/api/tasks/{task_id}/approve" in paths
    assert "/api/tasks/{task_id}/queue_job" in paths
    assert not {f"/api/tasks/{{task_id}}/{name}" for name in SYSTEM_COMMANDS} & set(paths)


# Numbers in queries, paths and headers ---------------------------------------------------------

MALFORMED_NUMBERS = ["²", "١٢", "1_0", " 7", "9" * 5000]
"""A superscript digit (``str.isdigit`` says yes, ``int`` fails), Arabic-Indic digits and
an underscore (``int`` takes them), a space, and more digits than ``int`` converts."""

NUMBER_ROUTES = [
    ("/api/tasks?limit={n}", {}),
    ("/api/tasks/{task}?version={n}", {}),
    ("/api/tasks/{task}/versions/{n}", {}),
    ("/api/tasks/{task}/events?cursor={n}", {}),
    ("/api/tasks/{task}/events?after={n}", {}),
    ("/api/tasks/{task}/jobs?cursor={n}", {}),
    ("/api/tasks/{task}/runs?cursor={n}", {}),
    ("/api/tasks/{task}/artifacts?cursor={n}", {}),
    ("/api/tasks/{task}/workspaces?cursor={n}", {}),
    ("/api/runs/{run}/events?cursor={n}", {}),
    ("/api/tasks/{task}/stream?after={n}", {}),
    ("/api/tasks/{task}/stream", {"last-event-id": "{n}"}),
    ("/api/runs/{run}/stream", {"last-event-id": "{n}"}),
    ("/api/stream", {"last-event-id": "{n}"}),
    ("/api/stream?after={n}", {}),
]


@pytest.mark.parametrize(("route", "headers"), NUMBER_ROUTES, ids=[r for r, _ in NUMBER_ROUTES])
async def test_a_malformed_number_is_a_400_json_error(api, route: str, headers: dict) -> None:
    task = await running(api)
    run = uuid.uuid4()

    for n in MALFORMED_NUMBERS:
        if headers and n != n.strip():
            continue  # HTTP drops the spaces around a header's value: " 7" is 7 there
        path = route.format(task=task["id"], run=run, n=n)
        sent = {key: header(value.format(n=n)) for key, value in headers.items()}
        with anyio.fail_after(10):  # a stream that was wrongly opened would never end
            response = await api.get(path, headers=sent)
        assert response.status_code == 400, (n[:10], response.text[:200])
        assert response.json()["error"]["code"] in ("bad_request", "bad_cursor",
                                                   "bad_last_event_id")


def header(value: str) -> bytes:
    """A header value as a client sends it: Latin-1 when it can be (the server reads headers
    as Latin-1, so ``²`` arrives as ``²``), else UTF-8."""
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode()


async def test_a_malformed_version_of_the_state_fragment_is_404(api) -> None:
    task = await running(api)

    for n in MALFORMED_NUMBERS:
        response = await api.get(f"/pods/{task['id']}/state?version={n}")
        assert response.status_code == 404, n[:10]


# JSON bodies -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "named"), [
    (b"[" * 5000 + b"]" * 5000, "nested deeper than 64"),
    (b'{"title": "t", "description": ' + b"[" * 70 + b"]" * 70 + b"}", "nested deeper than 64"),
    (b'{"title": "t", "repo": ' + b"9" * 5000 + b"}", "repo"),
    (b'{"title": "a\\ud800b"}', "title"),
    (b'{"title": "t", "description": "\\udfff"}', "description"),
    (b'{"title": "t", "\\ud800": 1}', "key"),
], ids=["5000-levels", "70-levels", "5000-digits", "surrogate-title", "surrogate-description",
        "surrogate-key"])
async def test_a_malformed_body_is_a_400_naming_the_place_and_writes_nothing(
    api, store: EventStore, body: bytes, named: str
) -> None:
    before = await store.head_position()

    response = await api.post("/api/tasks", content=body, headers=JSON)

    assert response.status_code == 400, response.text[:300]
    assert named in response.json()["error"]["message"]
    assert await store.head_position() == before


@pytest.mark.parametrize(("body", "named"), [
    (b"[" * 5000 + b"]" * 5000, "nested deeper than 64"),
    (b'{"key": ' + b"9" * 5000 + b"}", "key"),
    (b'{"key": "\\ud800"}', "key"),
], ids=["5000-levels", "5000-digits", "surrogate"])
async def test_a_malformed_login_body_is_a_400(keyed, body: bytes, named: str) -> None:
    response = await keyed.post("/login", content=body, headers=JSON)

    assert response.status_code == 400, response.text[:300]
    assert named in response.json()["error"]["message"]


@pytest.mark.parametrize(("command", "body", "named"), [
    ("set_budget", b'{"limit_usd": 1e999}', "limit_usd: a number too large"),
    ("set_budget", b'{"limit_usd": NaN}', "limit_usd: NaN (not a JSON number)"),
    ("set_budget", b'{"limit_usd": -Infinity}', "limit_usd: -Infinity (not a JSON number)"),
    ("queue_job", b'{"job_id": "j", "agent": "dev", "priority": 9223372036854775808}',
     "priority: an integer of 19 digits"),
], ids=["1e999", "NaN", "-Infinity", "2**63"])
async def test_a_number_json_cannot_carry_is_a_400_naming_the_field(
    api, store: EventStore, command: str, body: bytes, named: str
) -> None:
    task = await running(api)
    before = await store.head_position()

    response = await api.post(f"/api/tasks/{task['id']}/{command}", content=body, headers=JSON)

    assert named in assert_error(response, 400, "bad_request")["message"]
    assert await store.head_position() == before


async def test_a_surrogate_deep_in_a_command_is_named_by_its_path(api) -> None:
    task = await running(api)

    response = await api.post(
        f"/api/tasks/{task['id']}/queue_job", headers=JSON,
        content=b'{"job_id": "j", "agent": "dev", "spec": {"command": ["x", "\\ud83d"]}}')

    error = assert_error(response, 400, "invalid_text")
    assert error["message"].startswith("spec.command[1]: not Unicode text")


async def test_a_nul_in_a_string_is_text_and_is_kept(api) -> None:
    task = await running(api)

    response = await api.post(f"/api/tasks/{task['id']}/update_spec",
                              json={"description": "before\x00after"})

    assert response.status_code == 200, response.text
    assert response.json()["description"] == "before\x00after"


# Headers ---------------------------------------------------------------------------------------


async def test_an_oversized_or_odd_request_id_is_not_stored_as_the_correlation_id(
    api, store: EventStore
) -> None:
    task = await running(api)
    url = f"/api/tasks/{task['id']}"

    big = await api.post(f"{url}/pause", json={}, headers={"x-request-id": "r" * 60_000})
    odd = await api.post(f"{url}/resume", json={}, headers={"x-request-id": "a b<c>"})
    kept = await api.post(f"{url}/pause", json={}, headers={"x-request-id": "req-42.a:b"})

    assert big.status_code == odd.status_code == kept.status_code == 200
    events = await store.read(uuid.UUID(task["id"]), after=task["version"])
    ids = [e.to_json()["correlation_id"] for e in events]
    assert len(ids) == 3 and all(re.fullmatch("[0-9a-f]{32}", i) for i in ids[:2])  # fresh
    assert ids[2] == "req-42.a:b"


@pytest.mark.parametrize(("path", "body", "message"), [
    ("/api/tasks", {"description": "d"}, "create_task: the field 'title' is required"),
], ids=["create-without-title"])
async def test_a_missing_field_is_named_in_the_users_words(api, path: str, body: dict,
                                                             message: str) -> None:
    response = await api.post(path, json=body)

    assert response.status_code == 400
    assert response.json()["error"]["message"] == message
    assert "__init__" not in response.text and "positional" not in response.text


async def test_a_command_missing_its_fields_names_them_all(api) -> None:
    task = await create(api)

    response = await api.post(f"/api/tasks/{task['id']}/queue_job", json={})

    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "queue_job: the fields 'job_id', 'agent' are required")
