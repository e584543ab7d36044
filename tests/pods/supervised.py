"""A process that runs a supervisor on a database until killed (for the crash test).

Usage: python supervised.py DATABASE_URL WORK_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from ipa.eventstore import ConnectionParams, EventStore, StoreSettings
from ipa.pods import CommandRunner, PodEnvironment, WorkspaceManager
from ipa.supervisor import Supervisor


async def main(url: str, work: Path) -> None:
    params = ConnectionParams.from_url(url)
    async with EventStore.open(params, StoreSettings(snapshot_interval=10)) as store:
        env = PodEnvironment(store=store, workspaces=WorkspaceManager(work / "workspaces"),
                             scratch=work / "scratch", runner_for=lambda spec: CommandRunner())
        supervisor = Supervisor(env)
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run)
            print("ready", flush=True)
            await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], Path(sys.argv[2]))
