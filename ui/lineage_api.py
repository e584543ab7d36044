"""Clone and fork through the API (``domain/lineage.py`` says what each copies).

- ``POST /api/tasks/{id}/clone`` ``{title?}`` → 201 with the new task: the source's
  description and settings as they are now, none of its history.
- ``POST /api/tasks/{id}/fork`` ``{version, title?}`` → 201 with the new task: the source's
  state at ``version``, its branch made at the commit the source's branch had then (in the same
  repository). A version inside one record (the events one decision appended at once: a job's
  ``JobSucceeded`` and the ``BranchAdvanced`` of its landing) forks at the record's last
  event, which ``forked_from.version`` names: the task was never stored between them, and a
  fork between them would have the job's success without its work. A version outside
  ``1..`` the task's version is 422 ``version_out_of_range`` naming the range; a version where
  the task had ended or failed, or a project's children were at work, is 409
  ``command_not_allowed``.
  Nothing is written on any refusal: the domain decides, and the repository is checked,
  before the branch is made and the new task's events appended.

Both read the source from any node (its stream), and the new task is leased where it is made,
as a created task is. A branch made for a fork whose events then fail to append stays in the
repository under the fork's unused name (``ipa/<task8>``).
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ipa.domain import CloneTask, ForkTask, TaskForked, decide
from ipa.eventstore import StreamNotFound
from ipa.pods.workspace import task_branch

from .api import Api, context
from .errors import ApiError, BadRequest, json_body, task_id_param

RECORD_LIMIT = 1000
"""The most events of one record a fork looks at (a project's burst of spawns is one)."""


class VersionOutOfRange(ApiError):
    """A fork's version the task does not have."""

    status = 422
    code = "version_out_of_range"


def routes(api: Api) -> list[Route]:
    """The clone and fork routes (before the API's command route, which would take them)."""
    made = Lineage(api)
    return [Route("/api/tasks/{task_id}/clone", made.clone, methods=["POST"]),
            Route("/api/tasks/{task_id}/fork", made.fork, methods=["POST"])]


class Lineage:
    """The clone and fork endpoints over the API's supervisor and store."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.supervisor = api.supervisor

    async def clone(self, request: Request) -> JSONResponse:
        source_id = task_id_param(request)
        body = await json_body(request, required=False)
        title = _fields(body, "clone", ())
        source = await self.api.state(source_id)
        task_id = uuid.uuid4()
        events = decide(None, CloneTask(source=source, title=title), context(request), task_id)
        await self.supervisor.env.repositories.check(source.repo)  # 422 when refused now
        state = await self.supervisor.create_task(task_id, events)
        return JSONResponse(self.api.present(state), 201)

    async def fork(self, request: Request) -> JSONResponse:
        source_id = task_id_param(request)
        body = await json_body(request)
        title = _fields(body, "fork", ("version",))
        version = body.get("version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise BadRequest("fork: version must be a whole number (the version to fork at)")
        head = await self.api.store.version(source_id)
        if head == 0:
            raise StreamNotFound(source_id)
        if not 1 <= version <= head:
            raise VersionOutOfRange(f"version {version} is out of range: task {source_id} has "
                                    f"versions 1 to {head}")
        version = await self._record_end(source_id, version)
        source = await self.api.store.load(source_id, version)
        task_id = uuid.uuid4()
        branch = None if source.branch is None else task_branch(task_id)
        command = ForkTask(source=source, branch=branch, title=title)
        events = decide(None, command, context(request), task_id)
        await self.supervisor.env.repositories.check(source.repo)
        forked = events[-1]
        assert isinstance(forked, TaskForked)
        if forked.commit is not None and source.repo is not None:
            await self.supervisor.env.workspaces.fork_branch(
                task_id=task_id, repo=source.repo, commit=forked.commit)
        state = await self.supervisor.create_task(task_id, events)
        return JSONResponse(self.api.present(state), 201)


    async def _record_end(self, task_id: uuid.UUID, version: int) -> int:
        """The last version of the record ``version`` belongs to: the events one decision
        appended at once (a job's success and its landing, a cancel and its jobs' ends) share
        its time and correlation id, and the task was never stored between them."""
        page = await self.api.store.read(task_id, after=version - 1, limit=RECORD_LIMIT)
        first = page[0]
        for recorded in page[1:]:
            if (recorded.timestamp, recorded.correlation_id) != (first.timestamp,
                                                                 first.correlation_id):
                break
            version = recorded.version
        return version


def _fields(body: dict[str, Any], what: str, required: tuple[str, ...]) -> str | None:
    """The body's ``title`` (``None``: the source's), once it holds only ``title`` and the
    ``required`` fields (all of them); else a 400 naming what is wrong."""
    known = ("title", *required)
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise BadRequest(f"{what}: unknown field(s) {', '.join(map(repr, unknown))}; known: "
                         f"{', '.join(known)}")
    for name in required:
        if name not in body:
            raise BadRequest(f"{what}: the field {name!r} is required")
    title = body.get("title")
    if title is not None and not isinstance(title, str):
        raise BadRequest(f"{what}: field 'title' must be a string or null")
    return title
