"""Agents run below ipa's CPU priority (``pods/priority.py``): every process a runner starts
gets ipa's niceness plus ``IPA_AGENT_NICE``; a bad value stops ``ipa serve`` at start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ipa.pods import AgentConfigError, ClaudeRunner, CommandRunner, NicenessInvalid, RunRequest
from ipa.pods.priority import agent_niceness
from ipa.ui.serve import agent_settings

from ..fakes.claude import FakeClaude
from .helpers import python

pytestmark = pytest.mark.anyio

OWN = os.getpriority(os.PRIO_PROCESS, 0)
NICENESS = "import os; print(os.getpriority(os.PRIO_PROCESS, 0))"


async def niceness_of_command(tmp_path: Path) -> int:
    lines: list[str] = []

    async def output(batch) -> None:
        lines.extend(line.text for line in batch)

    request = RunRequest(run_id="r", job_id="j", agent="developer", spec=python(NICENESS),
                         workspace=tmp_path)
    result = await CommandRunner().run(request, output)
    assert result.succeeded, result.reason
    return int(lines[0])


async def test_a_command_runs_ten_steps_below_ipa_by_default(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("IPA_AGENT_NICE", raising=False)
    assert await niceness_of_command(tmp_path) == min(19, OWN + 10)


async def test_the_step_is_set_by_ipa_agent_nice_and_zero_leaves_it_alone(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("IPA_AGENT_NICE", "3")
    assert await niceness_of_command(tmp_path) == min(19, OWN + 3)
    monkeypatch.setenv("IPA_AGENT_NICE", "0")
    assert await niceness_of_command(tmp_path) == OWN


async def test_the_claude_cli_runs_below_ipa_too(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("IPA_AGENT_NICE", "7")
    fake = FakeClaude(tmp_path / "fake")
    fake.script({"*": [{"text": "done"}]})
    request = RunRequest(run_id="r", job_id="j", agent="developer",
                         spec={"runner": "claude", "prompt": "hi"}, workspace=tmp_path)

    async def output(batch) -> None:
        pass

    result = await ClaudeRunner(cli_path=str(fake.cli)).run(request, output)
    assert result.succeeded, result.reason
    assert fake.runs()[-1]["niceness"] == min(19, OWN + 7)


@pytest.mark.parametrize("value", ["-1", "20", "ten", "1.5", "٣"])
def test_a_niceness_that_is_not_a_whole_number_from_0_to_19_is_refused(value: str) -> None:
    with pytest.raises(NicenessInvalid, match="IPA_AGENT_NICE"):
        agent_niceness({"IPA_AGENT_NICE": value})
    with pytest.raises(AgentConfigError, match="from 0 to 19"):
        agent_settings({"IPA_AGENT_NICE": value})
