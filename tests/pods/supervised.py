"""A process that runs a supervisor on a database until killed (for the crash test).

Usage: python supervised.py DATABASE_URL WORK_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from ipa.eventstore import AuditKey, ConnectionParams, EventStore, StoreSettings
from ipa.pods import CommandRunner, PodEnvironment, WorkspaceManager
from ipa.supervisor import Supervisor


async def main(url: str, work: Path) -> None:
    params = ConnectionParams.from_url(url)
    # The tests' audit key (AUDIT_KEY_TEXT in tests/eventstore/helpers.py; this runs as a
    # script, outside the tests' package): the test's own store keyed the database with it.
    key = AuditKey.from_text("ipa-tests-audit-key-00000000000000000000000000000000")
    settings = StoreSettings(snapshot_interval=10, audit_key=key)
    async with EventStore.open(params, settings) as store:
        env = PodEnvironment(store=store, workspaces=WorkspaceManager(work / "workspaces"),
                             scratch=work / "scratch", runner_for=lambda spec: CommandRunner())
        supervisor = Supervisor(env)
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            print("ready", flush=True)
            await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], Path(sys.argv[2]))
