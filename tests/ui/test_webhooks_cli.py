"""``ipa webhooks ...`` (issue #17): add, list, show, deliveries, remove and enable through a
real ``ipa serve``, each command its own process, as a user runs it."""

from __future__ import annotations

import json

import pytest

from ipa.eventstore import ConnectionParams

from ..pods.webhook_receiver import Receiver
from .test_cli import ipa
from .test_serve import Served, served
from .test_webhooks_api import FAST, client, deliveries, failing_job

pytestmark = pytest.mark.anyio


async def webhooks_cli(server: Served, *args: str) -> list[str]:
    """``ipa webhooks ARGS --url ...`` (asserting it succeeded): its stdout's lines."""
    run = await ipa("webhooks", *args, "--url", server.url)
    assert run.status == 0 and run.err == "", run.err
    return run.lines


async def test_webhook_commands_act_through_the_server(database: ConnectionParams) -> None:
    with Receiver().running() as receiver:
        async with served(database, **FAST) as server:
            added = json.loads("\n".join(await webhooks_cli(
                server, "add", receiver.url, "--event", "agent.crashed", "--json")))
            receiver.secret = added["secret"]
            said = await webhooks_cli(server, "add", receiver.url)
            listed = await webhooks_cli(server, "list")
            shown = await webhooks_cli(server, "show", added["id"])
            async with client(server) as http:
                await failing_job(http)
                await deliveries(http, added["id"], 1)
            history = await webhooks_cli(server, "deliveries", added["id"])
            enabled = await webhooks_cli(server, "enable", added["id"])
            removed = await webhooks_cli(server, "remove", added["id"])
            after = await webhooks_cli(server, "list")
            refused = await ipa("webhooks", "add", "ftp://example.com/h", "--url", server.url)
            unknown = await ipa("webhooks", "add", receiver.url, "--event", "task.exploded",
                                "--url", server.url)

    assert added["events"] == ["agent.crashed"] and added["secret"].startswith("whsec_")
    assert said[0].endswith(f"→ {receiver.url} (*)")
    assert said[1].startswith("secret: whsec_") and "shown this once" in said[1]
    assert len(listed) == 2 and any(line.startswith(added["id"]) for line in listed)
    assert "active" in listed[0] and "whsec_" not in "\n".join(listed + shown)
    assert any(line.strip() == f"url: {receiver.url}" for line in shown)
    [ours] = [r for r in receiver.ok() if r.verified]  # signed with this webhook's secret
    assert ours.message["type"] == "agent.crashed" and history[0].startswith(ours.delivery_id)
    assert "agent.crashed" in history[0] and "HTTP 200" in history[0]
    assert enabled == [f"webhook {added['id']} is active"]
    assert removed[0].startswith(f"removed webhook {added['id']}")
    assert len(after) == 1 and not after[0].startswith(added["id"])
    assert refused.status == 1 and "invalid_webhook_url" in refused.error_line()
    assert "http:// or https://" in refused.error_line()
    assert unknown.status == 1 and "unknown event type 'task.exploded'" in unknown.error_line()
