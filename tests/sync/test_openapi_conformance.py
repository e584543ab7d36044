"""What ipa asks GitHub, and what the fake GitHub answers, checked against GitHub's OpenAPI
description of the operations ipa calls (``github_openapi.json``, from the npm package named
in its ``x-source``): paths and methods, query parameters, request bodies, statuses and the
JSON of every answer."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from ipa.domain import Pause, QueueUpdate, Status
from ipa.pods.sync import SyncError
from ipa.pods.sync.http import RestApi

from ..pods.helpers import wait_for
from .services import SPEC, TOKEN, Exchange, Services
from .test_delivery import delivered, failures, start
from .test_github_protocol import pull_request_update

pytestmark = pytest.mark.anyio
BASE = "urn:github-openapi"


def _json_schema(value: Any) -> Any:
    """OpenAPI 3.0's schema dialect as JSON Schema: ``nullable`` becomes a ``null`` type, and
    references point into the registry's copy of the description."""
    if isinstance(value, list):
        return [_json_schema(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _json_schema(v) for k, v in value.items()}
    if isinstance(out.get("$ref"), str) and out["$ref"].startswith("#"):
        out["$ref"] = BASE + out["$ref"]
    if out.pop("nullable", False) is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


DESCRIPTION = _json_schema(copy.deepcopy({k: v for k, v in SPEC.items() if k != "x-source"}))
REGISTRY = Registry().with_resource(BASE, Resource.from_contents(DESCRIPTION, DRAFT4))


def _resolved(value: dict[str, Any]) -> dict[str, Any]:
    """A parameter or response object, its ``$ref`` followed."""
    while "$ref" in value:
        node: Any = DESCRIPTION
        for part in value["$ref"].removeprefix(BASE + "#/").split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        value = node
    return value


def operation(method: str, path: str) -> tuple[str, dict[str, Any], dict[str, str]] | None:
    """The described operation ``method path`` is (a path by repository id, as GitHub's links
    and redirects give, is the same repository's), with its path parameters."""
    path = re.sub(r"^/repositories/\d+", "/repos/by-id/repository", path)
    for template, item in DESCRIPTION["paths"].items():
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        found = re.fullmatch(pattern, path)
        if found and method.lower() in item:
            return template, item[method.lower()], found.groupdict()
    return None


def problems(exchange: Exchange) -> list[str]:
    """How ``exchange`` departs from the description (nothing: it conforms)."""
    found = operation(exchange.method, exchange.path)
    if found is None:
        return [f"{exchange.method} {exchange.path} is no operation of the description"]
    template, op, path_values = found
    where = f"{op['operationId']} ({exchange.method} {exchange.path})"
    said: list[str] = []
    parameters = [_resolved(p) for p in op.get("parameters", [])]
    for place, values in (("path", path_values), ("query", exchange.query)):
        declared = {p["name"]: p for p in parameters if p["in"] == place}
        for name, raw in values.items():
            if name not in declared:
                said.append(f"{where}: {place} parameter {name!r} is not described")
                continue
            said += _errors(f"{where}: {place} parameter {name}", declared[name]["schema"],
                            _typed(raw, declared[name]["schema"]))
        said += [f"{where}: required {place} parameter {p} missing"
                 for p, spec in declared.items() if spec.get("required") and p not in values]
    if "requestBody" in op:
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        if exchange.body is None and op["requestBody"].get("required"):
            said.append(f"{where}: no request body")
        elif exchange.body is not None:
            said += _errors(f"{where}: request body", schema, exchange.body)
    elif exchange.body is not None:
        said.append(f"{where}: a body the operation does not take")
    status = str(exchange.status)
    if status not in op["responses"]:
        if not (status == "304" and exchange.method == "GET") and status not in (
                "301", "302", "307", "308"):  # any request may be redirected, GitHub says
            said.append(f"{where}: answered {status}, not a status of the operation")
        return said
    content = _resolved(op["responses"][status]).get("content", {}).get("application/json")
    if content is not None:
        said += _errors(f"{where}: answer {status}", content["schema"], exchange.answer)
    return said


def _typed(raw: str, schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "integer" and re.fullmatch(r"-?\d+", raw):
        return int(raw)
    if kind == "boolean" and raw in ("true", "false"):
        return raw == "true"
    return raw


def _errors(where: str, schema: dict[str, Any], value: Any) -> list[str]:
    validator = jsonschema.Draft4Validator(schema, registry=REGISTRY)
    return [f"{where}: {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:200]}"
            for e in validator.iter_errors(value)]


def github(services: Services) -> list[Exchange]:
    return [e for e in services.exchanges if not e.path.startswith("/rest/api/2/")]


def test_the_description_names_where_it_came_from_and_keeps_ipas_operations_only() -> None:
    source = SPEC["x-source"]
    assert source["package"] == "@octokit/openapi" and re.fullmatch(r"\d+\.\d+\.\d+",
                                                                     source["version"])
    assert sorted(op["operationId"] for item in SPEC["paths"].values()
                  for op in item.values()) == sorted(CALLED)


CALLED = ["repos/get", "pulls/list", "pulls/create", "pulls/get", "pulls/update",
          "pulls/list-reviews", "pulls/list-comments-for-review", "issues/list-comments",
          "issues/create-comment", "issues/update-comment"]
"""The operations the GitHub connector calls (specs/sync lists them)."""


async def test_what_ipa_asks_and_the_fake_answers_conform_to_githubs_description(
    supervisor, create_task, services: Services, repo: Path, remote: Path
) -> None:
    services.rename("o/n", "o/renamed")  # the redirects, and paths by repository id
    pod = await start(supervisor, create_task, repo=str(repo),
                      github={"repo": "o/n", "approval": False})
    payload = pull_request_update(pod.task_id, repo, str(remote), base=None)
    await pod.execute(QueueUpdate(update_id="pr", connector="github", kind="pull_request",
                                  payload=payload))
    await wait_for(pod, delivered("github:status_comment"))
    services.review(1, "octo", "CHANGES_REQUESTED", body="Not yet.", comments=[
        {"path": "f.py", "line": 3, "body": "why?"}])
    await wait_for(pod, lambda s: s.outbox.reviews)
    await pod.execute(QueueUpdate(update_id="pr2", connector="github", kind="pull_request",
                                  payload={**payload, "title": "Add a feature, v2"}))
    await pod.execute(Pause())  # a new status: the comment is edited
    state = await wait_for(pod, lambda s: s.outbox.entry("pr2").status.value == "delivered"
                           and s.status is Status.paused and any(
                               e.status.value == "delivered" and "paused" in e.payload["body"]
                               for e in s.outbox.entries if e.kind == "status_comment"))
    assert failures(state) == []
    async with httpx.AsyncClient(timeout=1.0) as client:  # the 422 of a second pull request
        api = RestApi("github", client, services.url, {"Authorization": f"Bearer {TOKEN}"},
                      lambda: state.updated_at)
        with pytest.raises(SyncError, match="A pull request already exists"):
            await api.send("POST", "/repos/o/renamed/pulls",
                           {"title": "again", "head": payload["head"], "base": "main"})

    exchanges = github(services)

    said = [p for e in exchanges for p in problems(e)]
    assert said == [], "\n".join(said)
    called = {operation(e.method, e.path)[1]["operationId"] for e in exchanges}
    assert called == set(CALLED)
    assert {e.status for e in exchanges} >= {200, 201, 301, 307, 422}


@pytest.mark.parametrize(("exchange", "problem"), [
    (Exchange("GET", "/repos/o/n/pulls/1/reviews", {"per_page": "many"}, None, 200, {}, []),
     "query parameter per_page: (root): 'many' is not of type 'integer'"),
    (Exchange("GET", "/repos/o/n/pulls", {"mine": "1"}, None, 200, {}, []),
     "query parameter 'mine' is not described"),
    (Exchange("POST", "/repos/o/n/pulls", {}, {"title": "t", "head": "b"}, 422, {}, {}),
     "request body: (root): 'base' is a required property"),
    (Exchange("PATCH", "/repos/o/n/issues/comments/1", {}, {"body": "b"}, 200, {},
              {"id": 1}), "answer 200: (root): 'node_id' is a required property"),
    (Exchange("DELETE", "/repos/o/n", {}, None, 204, {}, None), "no operation"),
])
def test_a_departure_from_the_description_is_found(exchange: Exchange, problem: str) -> None:
    assert any(problem in p for p in problems(exchange)), problems(exchange)
