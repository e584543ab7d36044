"""Browser tests: a real ``ipa serve`` on the test's database, driven in Debian's Chromium.

The browser is ``/usr/bin/chromium`` (installed by ``./dev``), never one that playwright
downloads. Each test gets its own server (a subprocess on a free port, on the test's fresh
database) and its own browser context; the browser itself is shared by the module.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from ipa.eventstore import ConnectionParams

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
IPA = shutil.which("ipa", path=os.path.dirname(sys.executable))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One ``ipa serve`` process; ``restart`` brings it back on the same port and data."""

    def __init__(self, database: ConnectionParams, data_dir: Path,
                 env: dict[str, str] | None = None) -> None:
        self.env = env or {}
        query = urlencode({"host": database.host, "port": database.port})
        self.database_url = f"postgresql://{database.user}@/{database.dbname}?{query}"
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = httpx.Client(base_url=self.url, timeout=10)
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "serve.log"

    def start(self) -> None:
        assert IPA is not None, "the ipa console script is not installed in this environment"
        # These tests queue their jobs by hand: no agent is queued per phase.
        env = ({k: v for k, v in os.environ.items() if not k.startswith("IPA_")}
               | {"IPA_AUTO_AGENTS": "0"} | self.env)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [IPA, "serve", "--port", str(self.port), "--data-dir", str(self.data_dir),
                 "--database-url", self.database_url],
                stdout=log, stderr=log, env=env,
            )
        deadline = time.monotonic() + 30
        while True:  # until it answers (or has died)
            assert self.process.poll() is None, f"ipa serve exited:\n{self.log.read_text()}"
            try:
                if self.api.get("/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"ipa serve did not start:\n{self.log.read_text()}"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    # The API, for what the test does outside the browser.

    def create(self, title: str, description: str = "", **fields: object) -> dict:
        response = self.api.post("/api/tasks",
                                 json={"title": title, "description": description, **fields})
        assert response.status_code == 201, response.text
        return response.json()

    def command(self, task_id: str, name: str, **body: object) -> dict:
        response = self.api.post(f"/api/tasks/{task_id}/{name}", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def task(self, task_id: str) -> dict:
        return self.api.get(f"/api/tasks/{task_id}").json()

    def wait_for(self, task_id: str, what, timeout: float = 15) -> dict:
        """The task once ``what(task)`` holds (the API has no "wait" endpoint to block on)."""
        deadline = time.monotonic() + timeout
        while not what(task := self.task(task_id)):
            assert time.monotonic() < deadline, f"task never got there: {task}"
            time.sleep(0.05)
        return task


@pytest.fixture
def server(database: ConnectionParams, tmp_path: Path) -> Iterator[Server]:
    server = Server(database, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.api.close()


# Module scope, not session: while sync playwright runs, its event loop is the thread's
# running loop, and the anyio tests that follow in the session could not start theirs.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: ./dev installs Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, server: Server) -> Iterator[Page]:
    context = browser.new_context(base_url=server.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
