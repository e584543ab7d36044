"""``GET /metrics``: parsed by ``prometheus_client``'s own parser, its figures following what
happens (tasks created and ended, jobs run, agents' usage, appends), in the app on a real
store and pods, and on a real ``ipa serve`` with a fake Claude CLI."""

from __future__ import annotations

import json
import re
import sys
import uuid
from pathlib import Path

import anyio
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ipa.eventstore import ConnectionParams, EventStore
from ipa.pods import PodEnvironment, WorkspaceManager, runner_for
from ipa.projections import TaskList
from ipa.supervisor import Supervisor
from ipa.ui.app import create_app
from ipa.ui.metrics import count_appends

from ..fakes.claude import FakeClaude
from .test_serve import git_repo, served, task_cli, until

pytestmark = pytest.mark.anyio

SPECS = Path(__file__).resolve().parents[2] / "specs" / "ui"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """(family name -> type, every sample by name and labels), as Prometheus would read it."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        assert family.documentation, f"{family.name} has no HELP"
        types[family.name] = family.type
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"{sample.name}{sample.labels} twice"
            samples[key] = sample.value
    return types, samples


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
async def app(store: EventStore, tmp_path: Path):
    task_list = TaskList(store)
    supervisor = Supervisor(PodEnvironment(
        store=store, workspaces=WorkspaceManager(tmp_path / "workspaces"),
        scratch=tmp_path / "scratch", runner_for=runner_for))
    count_appends(store, supervisor)
    async with anyio.create_task_group() as tg:
        await tg.start(task_list.run)
        await tg.start(supervisor.run)
        transport = httpx.ASGITransport(app=create_app(supervisor, task_list))
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            client.task_list = task_list  # type: ignore[attr-defined]
            yield client
        await supervisor.shutdown(deadline=1)
        tg.cancel_scope.cancel()


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)[1]


async def job_status(client: httpx.AsyncClient, task_id: str, job_id: str, status: str) -> None:
    with anyio.fail_after(20):
        while True:
            view = (await client.get(f"/api/tasks/{task_id}")).json()
            if any(j["job_id"] == job_id and j["status"] == status for j in view["jobs"]):
                return
            await anyio.sleep(0.05)


async def listed(client: httpx.AsyncClient, task_id: str, status: str) -> None:
    """Wait until the task list (which ``ipa_tasks`` reads) shows the task in ``status``."""
    task_list: TaskList = client.task_list  # type: ignore[attr-defined]
    with anyio.fail_after(20):
        while (task_list.columns(task_id) or {}).get("status") != status:
            await anyio.sleep(0.02)


def python(code: str) -> dict:
    return {"command": [sys.executable, "-c", code]}


async def test_every_family_parses_with_its_type_and_the_process_is_described(app) -> None:
    types, samples = parse((await app.get("/metrics")).text)

    assert types["ipa_pods"] == "gauge" and types["ipa_tasks"] == "gauge"
    assert types["ipa_job_runs"] == "counter" and types["ipa_agent_cost_usd"] == "counter"
    assert types["ipa_task_duration_seconds"] == "histogram"
    assert types["ipa_append_commit_seconds"] == "histogram"
    assert types["ipa_webhook_deliveries"] == "counter"
    assert types["process_cpu_seconds"] == "counter"
    assert get(samples, "ipa_sse_clients", stream="task") == 0
    assert get(samples, "ipa_tail_lag_events") >= 0
    assert get(samples, "ipa_log_head_position") >= get(samples, "ipa_log_position")
    assert not any(name.endswith("_created") for name, _ in samples)


def family_of(sample: str) -> str:
    return re.sub(r"_(bucket|sum|count|total)$", "", sample)


async def test_the_spec_lists_every_metric_and_the_dashboard_uses_only_served_ones(app) -> None:
    types, _ = parse((await app.get("/metrics")).text)
    served = {name for name in types if name.startswith("ipa_")} | {"ipa_node_info"}  # a node's
    specified = {family_of(name)
                 for name in re.findall(r"`(ipa_[a-z_]+)", (SPECS / "metrics.md").read_text())}
    dashboard = json.loads((SPECS / "grafana-dashboard.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in
             panel.get("targets", [])]
    used = {family_of(name) for expr in exprs for name in re.findall(r"\bipa_[a-z_]+", expr)}

    assert served <= specified, served - specified
    assert specified <= served, specified - served
    assert used <= served and len(used) >= 15, used - served
    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] >= 30
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


async def test_a_task_created_run_and_cancelled_moves_its_figures(app) -> None:
    agent = f"runner_{uuid.uuid4().hex[:8]}"
    first = await scrape(app)
    task = (await app.post("/api/tasks", json={"title": "t"})).json()
    await listed(app, task["id"], "running")
    url = f"/api/tasks/{task['id']}"
    # Both at once: the phase asks for approval (and runs nothing more) once its jobs are done.
    await app.post(f"{url}/queue_job", json={"job_id": "slow", "agent": agent,
                                             "spec": python("import time; time.sleep(60)")})
    await app.post(f"{url}/queue_job", json={"job_id": "hello", "agent": agent,
                                             "spec": python("print('hi')")})
    await job_status(app, task["id"], "hello", "succeeded")
    await job_status(app, task["id"], "slow", "running")
    running = await scrape(app)
    await app.post(f"{url}/cancel", json={"reason": "enough"})
    await listed(app, task["id"], "cancelled")
    # The cancel is recorded before the pod has stopped the slow job's process: the gauge
    # falls once it has.
    with anyio.fail_after(20):
        while get(last := await scrape(app), "ipa_agents_running", agent=agent) != 0:
            await anyio.sleep(0.05)

    assert get(running, "ipa_tasks", status="running") == get(first, "ipa_tasks",
                                                              status="running") + 1
    assert get(running, "ipa_agents_running", agent=agent) == 1
    assert get(running, "ipa_job_runs_total", agent=agent, outcome="succeeded") == 1
    assert get(last, "ipa_agents_running", agent=agent) == 0
    assert get(last, "ipa_tasks", status="cancelled") == get(first, "ipa_tasks",
                                                             status="cancelled") + 1
    assert get(last, "ipa_task_duration_seconds_count", workflow="task",
               outcome="cancelled") == get(first, "ipa_task_duration_seconds_count",
                                           workflow="task", outcome="cancelled") + 1
    assert get(last, "ipa_append_commit_seconds_count") > get(first,
                                                              "ipa_append_commit_seconds_count")
    assert get(last, "ipa_events_appended_total") >= get(first, "ipa_events_appended_total") + 6
    assert get(last, "ipa_log_head_position") > get(first, "ipa_log_head_position")


async def test_on_a_real_server_usage_and_the_node_appear_with_their_labels(
    database: ConnectionParams, tmp_path: Path,
) -> None:
    fake = FakeClaude(tmp_path / "fake").script({
        "spec_writer": [{"text": "# Spec\nlogin", "cost": 0.25,
                         "usage": {"input_tokens": 100, "output_tokens": 20}}],
        "*": [{"text": "# Plan"}]})
    env = {"IPA_AUTO_AGENTS": "1", "IPA_CLAUDE_CLI": str(fake.cli)}
    async with served(database, "--node-id", "metrics-node", **env) as server:
        task_id = (await task_cli(server, "create", "t", "--repo",
                                  str(git_repo(tmp_path / "repo")))).out.strip()
        await until(server, task_id, lambda v: v["status"] == "waiting")
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
            at_gate = await scrape(client)
            await task_cli(server, "approve", task_id)
            await until(server, task_id, lambda v: v["phase"] == "planning")
            approved = await scrape(client)

    assert get(at_gate, "ipa_node_info", node="metrics-node") == 1
    labels = {"agent": "spec_writer", "model": "default"}  # the agent type names no model
    assert get(at_gate, "ipa_agent_tokens_total", kind="input", **labels) == 100
    assert get(at_gate, "ipa_agent_tokens_total", kind="output", **labels) == 20
    assert get(at_gate, "ipa_agent_cost_usd_total", **labels) == 0.25
    assert get(at_gate, "ipa_job_runs_total", agent="spec_writer", outcome="succeeded") == 1
    assert get(at_gate, "ipa_phase_duration_seconds_count", workflow="task",
               phase="spec_clarification") == 0
    assert get(approved, "ipa_phase_duration_seconds_count", workflow="task",
               phase="spec_clarification") == 1
    assert get(approved, "ipa_tasks", status="running") + get(
        approved, "ipa_tasks", status="waiting") == 1
