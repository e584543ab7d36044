"""Changes made outside become events on the task: a JIRA issue moved by a person, a pull
request merged or closed. Settings come from the environment or a secrets file."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipa.domain import ConfigureSync, QueueUpdate, RecordDelivery, Status, payload_hash
from ipa.pods import SyncSettings
from ipa.pods.sync import SettingsError

from ..pods.helpers import wait_for
from .services import Services

pytestmark = pytest.mark.anyio


async def test_a_person_moving_the_jira_issue_is_an_event(
    supervisor, create_task, services: Services
) -> None:
    pod = await supervisor.start(await create_task())
    await wait_for(pod, lambda s: s.status is Status.running)
    await pod.execute(ConfigureSync(jira={"issue": "KEY-1", "approval": True}))
    with services.lock:
        services.issues["KEY-1"]["status"] = "Blocked"
        services.issues["KEY-1"]["histories"] = [
            {"author": {"name": "jdoe"}, "items": [{"field": "status"}]}]

    state = await wait_for(pod, lambda s: "issue" in s.outbox.remote)

    assert state.outbox.remote["issue"] == {"issue": "KEY-1", "status": "Blocked", "by": "jdoe"}
    requests = len(services.calls("GET", r"/rest/api/2/issue/KEY-1\?.*"))
    with pytest.raises(TimeoutError):  # later polls are answered 304 and record nothing
        await wait_for(pod, lambda s: s.outbox.remote["issue"]["status"] != "Blocked",
                       timeout=0.4)
    assert len(services.calls("GET", r"/rest/api/2/issue/KEY-1\?.*")) > requests
    assert all(status == 304 for _, path, status in services.requests[-2:]
               if path.startswith("/rest/api/2/issue/KEY-1?"))


async def test_a_merged_pull_request_is_an_event(
    supervisor, create_task, services: Services
) -> None:
    pod = await supervisor.start(await create_task())
    await wait_for(pod, lambda s: s.status is Status.running)
    await pod.execute(ConfigureSync(github={"repo": "o/n", "approval": False}))
    services.pulls[1] = {"number": 1, "state": "closed", "merged": True,
                         "merged_by": {"login": "octo"}, "head": {"ref": "b"}}
    # The pull request as ipa would have recorded opening it.
    payload = {"title": "t"}
    await pod.execute(QueueUpdate(update_id="pr", connector="github", kind="pull_request",
                                  payload=payload))
    await pod.execute(RecordDelivery(update_id="pr", payload_hash=payload_hash(payload),
                                     result={"number": 1, "commit": "c"}))

    state = await wait_for(pod, lambda s: "pull_request" in s.outbox.remote)

    assert state.outbox.remote["pull_request"] == {"number": 1, "state": "merged", "by": "octo"}


def test_settings_come_from_a_secrets_file_and_the_environment(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.write_text("# tokens\nIPA_GITHUB_TOKEN=from-file\nIPA_JIRA_TOKEN='jira-file'\n")
    settings = SyncSettings.from_environment({
        "IPA_SECRETS_FILE": str(secrets), "IPA_JIRA_TOKEN": "from-env",
        "IPA_GITHUB_URL": "https://ghe.example.com/api/v3", "IPA_SYNC_POLL_INTERVAL": "5",
    })

    assert (settings.github_token, settings.jira_token) == ("from-file", "from-env")
    assert settings.git_url == "https://ghe.example.com" and settings.poll_interval == 5
    assert "from-file" not in repr(settings) and "from-env" not in repr(settings)
    with pytest.raises(SettingsError, match="line 1: expected NAME=value"):
        secrets.write_text("nonsense\n")
        SyncSettings.from_environment({"IPA_SECRETS_FILE": str(secrets)})
