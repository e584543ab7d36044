"""Export and import of tasks over HTTP: the routes behind ``ipa export`` / ``ipa import``
when a server runs on the data dir (whose lock keeps the commands off the store).

- ``GET /api/tasks/{task_id}/export``: the task's bundle (``application/gzip``, an attachment
  ``task-<task8>.ipa``; ``X-IPA-Bundle-SHA256`` is its SHA-256), with its children and runs and,
  unless ``?git=skip``, its branches' commits (:mod:`ipa.pods.transfer`).
- ``POST /api/import``: the body is a bundle (``Content-Type: application/gzip``, at most
  :data:`MAX_IMPORT` bytes); ``?repo=PATH``, a local repository (under the server's
  ``--repo-root``), gets the bundle's branches, or ``?git=skip`` leaves them out. 201 with what
  was imported; the task list has the tasks when it answers, and the pods of the unfinished
  ones run (``started``), as a restart would have started them.

A bundle refused answers 4xx naming the problem, with nothing written: 400 ``not_a_bundle``,
``bundle_truncated``, ``bundle_altered``, ``invalid_text`` (a lone surrogate in its text, which
no API response could carry); 409 ``task_exists``, ``branch_exists``; 413
``payload_too_large``; 422 ``bundle_too_new``, ``repository_needed``, ``repository_refused``.
An export the store's audit refuses is 409 ``not_exportable``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ipa.eventstore import StoreError
from ipa.eventstore.bundle import MEDIA_TYPE, BundleRefused, TaskBundle
from ipa.pods.transfer import BranchExists, RepositoryNeeded, export_bundle, import_bundle
from ipa.supervisor import FINISHED, SupervisorError

from .errors import ApiError, BadRequest, read_body, task_id_param

log = logging.getLogger(__name__)

MAX_IMPORT = 64 * 2**20
"""The largest bundle ``POST /api/import`` takes, in bytes (``ipa import`` on a stopped data
dir takes larger ones)."""
MAX_IMPORT_CONTENT = 256 * 2**20
"""The most bytes its members may hold uncompressed."""
LIST_WAIT = 5.0
"""Seconds an import waits for the task list to show the imported tasks."""
GIT_CHOICES = ("include", "skip")
_STATUS = {
    BundleRefused.NOT_A_BUNDLE: (400, "not_a_bundle"),
    BundleRefused.TRUNCATED: (400, "bundle_truncated"),
    BundleRefused.ALTERED: (400, "bundle_altered"),
    BundleRefused.TOO_NEW: (422, "bundle_too_new"),
    BundleRefused.TOO_LARGE: (413, "payload_too_large"),
    BundleRefused.EXISTS: (409, "task_exists"),
    BundleRefused.UNEXPORTABLE: (409, "not_exportable"),
    BundleRefused.INVALID_TEXT: (400, "invalid_text"),
}


class TransferRefused(ApiError):
    """A refused export or import, with the status and code of its reason."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, code=code)
        self.status = status


def routes() -> list[Route]:
    return [
        Route("/api/tasks/{task_id}/export", export_task, methods=["GET"]),
        Route("/api/import", import_task, methods=["POST"]),
    ]


async def export_task(request: Request) -> Response:
    task_id = task_id_param(request)
    git = _git_param(request)
    api = request.app.state.api
    with _refusals():
        bundle, data = await export_bundle(api.store, api.supervisor.env.workspaces, task_id,
                                           git=git)
    return Response(data, media_type=MEDIA_TYPE, headers={
        "content-disposition": f'attachment; filename="task-{task_id.hex[:8]}.ipa"',
        "x-ipa-bundle-sha256": bundle.sha256,
    })


async def import_task(request: Request) -> JSONResponse:
    git = _git_param(request)
    repo = request.query_params.get("repo")
    if repo is not None and not repo.strip():
        raise BadRequest("query parameter repo: expected a local repository's path")
    data = await read_body(request, MAX_IMPORT)
    if not data:
        raise BadRequest(f"expected a task bundle as the body ({MEDIA_TYPE}, what ipa export "
                         "writes)")
    api = request.app.state.api
    supervisor = api.supervisor
    with _refusals():
        bundle = await anyio.to_thread.run_sync(_read, data)
        transferred = await import_bundle(api.store, bundle, repo=repo, git=git,
                                          policy=supervisor.env.repositories)
    with anyio.move_on_after(LIST_WAIT):
        await api.task_list.wait_for(transferred.imported.last_position)
    started: list[str] = []
    for task_id, state in bundle.states.items():
        if state.status not in FINISHED and await _started(supervisor, task_id):
            started.append(str(task_id))
    return JSONResponse({**transferred.to_json(), "started": started}, 201)


def _read(data: bytes) -> TaskBundle:
    return TaskBundle.read(data, limit=MAX_IMPORT, content_limit=MAX_IMPORT_CONTENT)


async def _started(supervisor: Any, task_id: UUID) -> bool:
    """Start an imported task's pod, as recovery would; a failure is logged (the import
    stands: ``restart`` is the way forward)."""
    try:
        await supervisor.start(task_id)
    except (StoreError, SupervisorError) as e:
        log.warning("imported task %s: its pod did not start: %s", task_id, e)
        return False
    return True


def _git_param(request: Request) -> bool:
    value = request.query_params.get("git", "include")
    if value not in GIT_CHOICES:
        raise BadRequest(f"query parameter git={value[:40]!r}: expected include or skip")
    return value == "include"


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """Turn a refused bundle and the git conditions of a transfer into their API errors."""
    try:
        yield
    except BundleRefused as e:
        status, code = _STATUS[e.kind]
        raise TransferRefused(status, code, str(e)) from None
    except RepositoryNeeded as e:
        raise TransferRefused(422, "repository_needed", str(e)) from None
    except BranchExists as e:
        raise TransferRefused(409, "branch_exists", str(e)) from None
