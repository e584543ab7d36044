"""schemathesis fuzzes a real ``ipa serve`` from its own ``/openapi.json`` (issue #11): every
operation, valid and invalid data, NUL bytes allowed in generated strings, schemathesis's default
checks (``not_a_server_error``, status codes, content types, response schemas ...); no failure.

Bounded: a fixed number of examples per operation and generation mode (positive, negative),
derandomized so a run is repeatable; operations under a task are fuzzed twice, with whatever
``task_id`` is generated and with a real task's (``cancel`` last, so the others meet a live
task); SSE streams are read for one event or :data:`STREAM_SECONDS`. Without keys the run is
the full one; with keys a smaller one, for the key check in front of every route. The server's
log is read throughout (a full pipe would stall it) and shown with any failure, so a 500's
traceback is in the report.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from ipa.eventstore import ConnectionParams

from .test_serve import served

pytestmark = pytest.mark.anyio

STREAM_SECONDS = 0.3
KEY = "fuzz-key-0123456789"
# A task bundle (the body of POST /api/import) is bytes, sent as an octet stream would be.
schemathesis.serializer.alias("application/gzip", "application/octet-stream")


@dataclass
class Report:
    """What a fuzzing run did: examples sent per operation, and the failures seen."""

    examples: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    failures: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.examples.values())


def fuzz(url: str, key: str | None, task_id: str | None, examples: int) -> Report:
    """Run schemathesis on every operation of the server at ``url`` (with the API ``key``),
    ``examples`` cases per operation and mode, also with ``task_id`` in the path when given
    (a blocking call)."""
    config = schemathesis.Config.from_dict({
        # The key as the scheme the description names, so the auth checks can leave it out.
        **({"auth": {"openapi": {"apiKey": {"api_key": key}}}} if key else {}),
        "request-timeout": 10,
        "max-stream-events": 1,
        "generation": {"allow-x00": True, "codec": "utf-8", "with-security-parameters": False},
        # Valid by the schema is not valid by the domain (a blank title, a job id that does not
        # exist, a cursor past the end): those are 400s that JSON Schema cannot foresee.
        "checks": {"positive_data_acceptance": {"enabled": False}},
        "operations": [{"include-path-regex": "/stream$", "request-timeout": STREAM_SECONDS}],
    })
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config,
                                          headers={"X-API-Key": key} if key else {})
    report = Report()
    operations = [result.ok() for result in schema.get_all_operations()]
    for operation in sorted(operations, key=lambda op: op.path.endswith("/cancel")):
        pinned = {"task_id": task_id} if task_id and "{task_id}" in operation.path else None
        for path_parameters in (None, pinned) if pinned else (None,):
            for mode in (schemathesis.GenerationMode.POSITIVE,
                         schemathesis.GenerationMode.NEGATIVE):
                strategy = operation.as_strategy(mode, path_parameters=path_parameters)
                started = time.monotonic()
                _run(operation.label, strategy, examples, report)
                report.seconds[operation.label] = (report.seconds.get(operation.label, 0)
                                                   + time.monotonic() - started)
    return report


def _run(label: str, strategy: st.SearchStrategy, examples: int, report: Report) -> None:
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(case: Any) -> None:
        report.examples[label] = report.examples.get(label, 0) + 1
        try:
            case.call_and_validate()
        except (Exception, BaseExceptionGroup) as e:  # keep going; the first of each kind
            for failure in getattr(e, "exceptions", [e]):
                kind = getattr(failure, "code", type(failure).__name__)
                report.failures.setdefault((label, kind), str(e)[:3000])

    try:
        run()
    except Unsatisfiable:  # nothing to make invalid (an operation without parameters)
        pass


async def fuzz_server(database: ConnectionParams, key: str | None, *, examples: int,
                      pin: bool, **env: str) -> Report:
    log = bytearray()
    async with served(database, **env) as server, anyio.create_task_group() as tg:
        tg.start_soon(_drain, server.process.stderr, log)
        headers = {"X-API-Key": key} if key else {}
        async with httpx.AsyncClient(base_url=server.url, headers=headers) as client:
            created = await client.post("/api/tasks", json={"title": "fuzzed"})
            assert created.status_code == 201, created.text
        task_id = created.json()["id"] if pin else None
        report = await anyio.to_thread.run_sync(fuzz, server.url, key, task_id, examples)
        tg.cancel_scope.cancel()
    slowest = sorted(report.seconds.items(), key=lambda item: -item[1])[:5]
    print(f"schemathesis: {report.total} examples on {len(report.examples)} operations, "
          f"{len(report.failures)} failure(s); slowest: "
          + ", ".join(f"{label} {seconds:.1f} s" for label, seconds in slowest))
    assert not report.failures, _describe(report, log)
    return report


async def _drain(stream: Any, log: bytearray) -> None:
    async for chunk in stream:
        log.extend(chunk)


def _describe(report: Report, log: bytearray) -> str:
    failures = "\n\n".join(f"{label}: {text}" for (label, _), text in report.failures.items())
    tail = log[-20_000:].decode(errors="replace")
    return f"{failures}\n\n--- ipa serve's log (its end) ---\n{tail}"


async def test_fuzzing_without_keys_finds_no_server_error_nor_other_failure(
    database: ConnectionParams,
) -> None:
    report = await fuzz_server(database, None, examples=6, pin=True)

    assert report.total > 700


async def test_fuzzing_with_keys_finds_no_server_error_nor_other_failure(
    database: ConnectionParams,
) -> None:
    report = await fuzz_server(database, KEY, examples=4, pin=False,
                               IPA_API_KEYS=f"fuzz:{KEY}")

    assert report.total > 200
