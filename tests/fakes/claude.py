"""A scripted Claude Code CLI for tests and benchmarks (see ``fake_claude.py``)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("fake_claude.py")


class FakeClaude:
    """A fake CLI in ``directory``: ``cli`` is the executable to give the SDK as its CLI path."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.scenario = directory / "scenario.json"
        self.log_file = directory / "log.jsonl"
        self.cli = directory / "claude"
        self.cli.write_text(
            f"#!/bin/sh\nexec {sys.executable} {SCRIPT} --scenario {self.scenario} \"$@\"\n"
        )
        self.cli.chmod(self.cli.stat().st_mode | stat.S_IEXEC)
        self.script({})

    def script(self, agents: dict[str, list[dict[str, Any]]]) -> FakeClaude:
        """Set the steps each agent type plays, run by run (``"*"``: any other type)."""
        for counter in self.directory.glob("count-*"):
            os.unlink(counter)
        self.scenario.write_text(json.dumps({"log": str(self.log_file), "agents": agents}))
        return self

    def runs(self) -> list[dict[str, Any]]:
        """Every run so far: ``{"agent", "prompt", "cwd", "argv", "env", "niceness"}``."""
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text().splitlines()]


def backlog_answer(*items: dict[str, Any]) -> dict[str, Any]:
    """A product analyst's step whose answer holds ``items`` as the backlog contract asks
    (each item: ``id``, ``kind``, ``phase``, optional ``depends_on``/``priority``/``write``)."""
    full = [{"title": f"Build {i['id']}", "description": f"Make {i['id']} work.",
             "priority": 5, "depends_on": [], "acceptance": [f"{i['id']} works"], **i}
            for i in items]
    block = json.dumps({"items": full}, indent=1)
    return {"text": f"The backlog:\n\n```json\n{block}\n```\n"}


def small_project(**agents: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """A script that takes a project through: its backlog is one item (a technical writer's,
    in development), every reviewer approves, the maintainer's cycles have nothing to do,
    every other agent says it is done."""
    return {"product_analyst": [backlog_answer(
                {"id": "docs", "kind": "technical_writer", "phase": "development"})],
            "maintainer": [{"text": 'Nothing this cycle.\n\n```json\n{"items": []}\n```'}],
            "*": [{"text": "done\nVERDICT: approve"}], **agents}
