"""The REST API (JSON): tasks and their commands, jobs, agent runs, artifacts, workspace files,
time travel and the cluster's nodes.

Every list answers ``{"items": [...], "next_cursor": ...}``; pass ``next_cursor`` back as
``?cursor=`` for the next page (cursors are opaque). Commands go to the task's pod (the single
writer of its stream) through the supervisor; reads come from the pod's memory when it runs,
else from the store. The task state view is ``task_state.view`` (``state.to_dict()`` plus
``allowed_commands``) and is served as is: keys added by other parts of ipa (``usage``,
``questions``, ``artifacts``, ``outbox`` ...) pass through untouched.

**Archived tasks** (``archive``, ``unarchive``: a finished task's) leave ``GET /api/tasks``
unless ``?archived=1`` (listed with the others) or ``?archived=only``.

**Only a person's commands.** ``POST /api/tasks/{id}/{command}`` takes the commands of
``PERSON_COMMANDS`` (but ``create_task``, which is ``POST /api/tasks``); the other task commands
are records ipa makes itself (usage, artifacts, verification, job results ...) and are refused
with 403 ``system_command``, so no client can forge them.

**Nodes** (several ``ipa serve`` on one store): ``GET /api/nodes`` lists them as the store
records them. The live view of ``GET /api/tasks/{id}`` carries ``node``, the id of the node
holding the task's lease now (one query on the lease's key), and each row of ``GET /api/tasks``
too (one query per page, every lease); ``null`` when no node holds it (a finished task, a
server that is no node). Past versions (``?version=``) and command answers have no ``node``.

**Correlation ids**: ``X-Request-Id`` becomes the correlation id of the events a request causes
when it is 1 to 128 characters of ``A-Z a-z 0-9 . _ : / + = @ -`` (what request-id middleware
and proxies send); any other value is ignored and a fresh id is used.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ipa.domain import (
    LINEAGE_COMMANDS,
    PERSON_COMMANDS,
    TASK_COMMANDS,
    CancelJob,
    Context,
    CreateTask,
    Pause,
    RetryJob,
    SetRepo,
    SkipJob,
    TaskState,
    decide,
    evolve,
)
from ipa.eventstore import StreamNotFound
from ipa.pods.browse import BrowseError, CommitBrowser
from ipa.projections import TaskList, task_state
from ipa.supervisor import PodNotRunning, Supervisor

from .auth import actor
from .cache import ResponseCache
from .children import children, swarm_of, swarm_usage
from .errors import (
    BadCursor,
    BadRequest,
    Forbidden,
    NotFound,
    build,
    int_param,
    json_body,
    page_of,
    run_id_param,
    task_id_param,
    uuid_or_none,
    whole_number,
)
from .forwarding import Answerer, elsewhere
from .json_response import JSONResponse
from .lineage import derived
from .list_cache import ListCache
from .owners import Owners
from .views import Views

MAX_PAGE = 500
COMMANDS = {command.name: command for command in PERSON_COMMANDS
            if command is not CreateTask and command not in LINEAGE_COMMANDS}
"""The commands ``POST /api/tasks/{id}/{name}`` accepts, by name: a person's (but those that
begin a new task: ``POST /api/tasks``, and ``clone`` and ``fork`` in :mod:`.lineage_api`)."""
SYSTEM_COMMANDS = frozenset(c.name for c in TASK_COMMANDS if c not in PERSON_COMMANDS)
"""The names of the commands ipa records itself: refused with 403 through the API."""
JOB_EVENTS = frozenset({"JobStarted", "JobSucceeded", "JobFailed"})
ARCHIVED = {"0": lambda archived: not archived, "1": lambda archived: True,
            "only": lambda archived: archived}
"""``GET /api/tasks?archived=``: which rows each value keeps, by their ``archived``."""


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")


def context(request: Request) -> Context:
    return Context(actor=actor(request), now=datetime.now(UTC),
                   correlation_id=correlation_id(request))


def correlation_id(request: Request) -> str:
    """The request's ``X-Request-Id`` when it is a plausible id, else a fresh one."""
    given = request.headers.get("x-request-id", "")
    return given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


class Api:
    """The REST endpoints over a supervisor (commands, pods) and its store."""

    def __init__(self, supervisor: Supervisor, task_list: TaskList) -> None:
        self.supervisor = supervisor
        # Another node's request for a task this node owns runs through the same handlers.
        supervisor.answer_with(Answerer({"command": self.task_command, "job": self.job_action,
                                         "restart": self.restart_task}))
        self.store = supervisor.store
        self.task_list = task_list
        self.browser = CommitBrowser(supervisor.env.workspaces)
        self.cache = ResponseCache()
        self.views = Views()
        self.pages = ListCache(task_list)
        self.owners_of = Owners(supervisor)
        self.swarm = swarm_of(supervisor.env.agents.catalog)

    def routes(self) -> list[Route]:
        return [
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/api/tasks", self.list_tasks, methods=["GET"]),
            Route("/api/tasks", self.create_task, methods=["POST"]),
            Route("/api/tasks/{task_id}", self.get_task, methods=["GET"]),
            Route("/api/tasks/{task_id}/events", self.task_events, methods=["GET"]),
            Route("/api/tasks/{task_id}/versions/{version}", self.task_version,
                  methods=["GET"]),
            Route("/api/tasks/{task_id}/jobs", self.list_jobs, methods=["GET"]),
            Route("/api/tasks/{task_id}/jobs/{job_id}", self.get_job, methods=["GET"]),
            Route("/api/tasks/{task_id}/jobs/{job_id}/{action}", self.job_action,
                  methods=["POST"]),
            Route("/api/tasks/{task_id}/runs", self.list_runs, methods=["GET"]),
            Route("/api/tasks/{task_id}/artifacts", self.list_artifacts, methods=["GET"]),
            Route("/api/tasks/{task_id}/workspaces", self.list_workspaces, methods=["GET"]),
            Route("/api/tasks/{task_id}/workspaces/{workspace_id}/files", self.workspace_files,
                  methods=["GET"]),
            Route("/api/tasks/{task_id}/workspaces/{workspace_id}/diff", self.workspace_diff,
                  methods=["GET"]),
            Route("/api/tasks/{task_id}/diff", self.task_diff, methods=["GET"]),
            Route("/api/tasks/{task_id}/patch", self.task_patch, methods=["GET"]),
            Route("/api/tasks/{task_id}/restart", self.restart_task, methods=["POST"]),
            Route("/api/tasks/{task_id}/{command}", self.task_command, methods=["POST"]),
            Route("/api/runs/{run_id}/events", self.run_events, methods=["GET"]),
            Route("/api/nodes", self.list_nodes, methods=["GET"]),
        ]

    # Helpers ---------------------------------------------------------------------------------

    async def state(self, task_id: UUID) -> TaskState:
        """The task's current state: from its pod's memory, else (no pod, or a pod still
        loading it) the store."""
        try:
            return self.supervisor.get(task_id).get_state()
        except (PodNotRunning, RuntimeError):
            return await self.store.load(task_id)

    def live_version(self, task_id: UUID) -> int | None:
        """The task's version in its running pod's memory; None when no pod has it loaded."""
        try:
            return self.supervisor.get(task_id).get_state().version
        except (PodNotRunning, RuntimeError):
            return None

    async def cached(self, key: tuple, version: int | None, render) -> Response:
        """The JSON body under ``key`` valid at ``version``, else ``await render()``'s,
        kept for the next request (see :mod:`.cache`)."""
        body = self.cache.get(key, version)
        if body is None:
            body = JSONResponse(await render()).body
            self.cache.put(key, body, version)
        return Response(body, media_type="application/json")

    async def view(self, request: Request) -> dict[str, Any]:
        return self.present(await self.state(task_id_param(request)))

    def present(self, state: TaskState) -> dict[str, Any]:
        """The task view, with ``attention`` ``crashed`` when its pod crashed and stopped
        (the supervisor knows it; the state may not), its ``forks`` and ``clones``
        (:func:`.lineage.derived`), and a project's ``children`` (their own status, phase,
        spend and runs in flight from the task list) and ``swarm_usage``."""
        view = self.views.view(state, crashed=self.supervisor.attention(state.id))
        view.update(derived(self.task_list, str(state.id)))  # its forks and clones
        if state.backlog is not None:
            view["children"] = children(view, self.task_list.columns)
            view["swarm_usage"] = swarm_usage(view, self.task_list.children_of(str(state.id)),
                                              self.swarm)
        return view

    async def node_of(self, task_id: UUID) -> str | None:
        """The id of the node that holds the task's lease now (a read that starts after the
        request, shared by the requests that arrive meanwhile: :mod:`.owners`); ``None`` when
        no node does, when this process is not a node, or when this node's own connection to
        the store is down for the moment (the view is still served)."""
        return await self.owners_of.of(task_id)

    async def owners(self) -> dict[str, str]:
        """Every leased task's node, by task id as the task list writes it (one read, shared
        as :meth:`node_of`'s)."""
        return await self.owners_of.every()

    # Tasks -----------------------------------------------------------------------------------

    async def healthz(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "log_position": self.store.tail.position})

    async def list_tasks(self, request: Request) -> JSONResponse:
        limit = int_param(request, "limit", 50, 1, MAX_PAGE)
        cursor = request.query_params.get("cursor", "")
        if cursor:
            after = uuid_or_none(cursor)
            if after is None:
                raise BadCursor(f"cursor {cursor[:40]!r} was not handed out by this API")
            cursor = str(after)
        needs_person = request.query_params.get("attention")
        if needs_person not in (None, "", "0", "1"):
            raise BadRequest(f"attention {needs_person[:40]!r}: expected 1 or 0")
        parent_text = request.query_params.get("parent")
        parent = None if parent_text is None else uuid_or_none(parent_text)
        if parent_text is not None and parent is None:
            raise BadRequest(f"parent {parent_text[:80]!r} is not a task id (expected a UUID)")
        archived = request.query_params.get("archived") or "0"
        if archived not in ARCHIVED:
            raise BadRequest(f"archived {archived[:40]!r}: expected 0 (leave archived tasks "
                             "out), 1 (with them) or only")

        def needs_a_person(row: dict[str, Any]) -> bool:
            [crashed] = self.supervisor.attention_of_each([row["id"]])
            return crashed is not None or row.get("attention") is not None

        def wanted(row: dict[str, Any]) -> bool:
            return ((needs_person != "1" or needs_a_person(row))
                    and (parent is None or row.get("parent_id") == str(parent))
                    and ARCHIVED[archived](bool(row.get("archived"))))

        where = wanted if needs_person == "1" or parent is not None or archived != "1" else None
        # A page rendered before is served again when nothing on it changed (:mod:`.list_cache`).
        key = None if needs_person == "1" else (cursor, limit, parent, archived)
        kept = None if key is None else self.pages.rows(key)
        position = self.task_list.position
        page = kept if kept is not None else (
            self.task_list.page(after=cursor, limit=limit + 1, where=where))  # from memory
        owners = await self.owners() if page else {}
        rows = page[:limit]
        crashes = self.supervisor.attention_of_each([row["id"] for row in rows])  # as of now
        if kept is not None and (body := self.pages.body(key, kept, (owners, crashes))):
            return Response(body, media_type="application/json")
        next_cursor = page[limit - 1]["id"] if len(page) > limit else None
        items = [{**row,
                  "attention": crashed.kind if crashed is not None else row.get("attention"),
                  "node": owners.get(row["id"])}
                 for row, crashed in zip(rows, crashes, strict=True)]
        response = JSONResponse({"items": items, "next_cursor": next_cursor})
        if key is not None:
            self.pages.put(key, position, page, (owners, crashes), response.body)
        return response

    async def create_task(self, request: Request) -> JSONResponse:
        body = await json_body(request)
        body.setdefault("description", "")
        command = build(CreateTask, body, "create_task")
        task_id = uuid.uuid4()
        events = decide(None, command, context(request), task_id)
        await self.supervisor.env.repositories.check(command.repo)  # 422 when refused
        state = await self.supervisor.create_task(task_id, events)
        return JSONResponse(task_state.view(state), 201)

    async def get_task(self, request: Request) -> JSONResponse:
        task_id = task_id_param(request)
        if request.query_params.get("version") is not None:
            at = int_param(request, "version", 0, 1, 2**62)

            async def past() -> dict[str, Any]:
                return task_state.view(await self.store.load(task_id, at))

            return await self.cached(("state", task_id, at), None, past)
        view = self.present(await self.state(task_id))
        view["node"] = await self.node_of(task_id)
        return JSONResponse(view)

    async def restart_task(self, request: Request) -> Response:
        """Start a new pod for a task whose pod crashed (a failed task goes back to work);
        409 ``pod_running`` when its pod runs."""
        task_id = task_id_param(request)
        if (owner := await elsewhere(self.supervisor, request, task_id, "restart")) is not None:
            return owner
        body = await json_body(request, required=False)
        if body:
            raise BadRequest(f"restart: unknown field(s) {', '.join(map(repr, body))}")
        state = await self.supervisor.restart_task(task_id, actor=actor(request))
        return JSONResponse(self.present(state))

    async def task_events(self, request: Request) -> Response:
        task_id = task_id_param(request)
        after, limit = events_page_params(request)
        version = self.live_version(task_id)

        async def page() -> dict[str, Any]:
            return await self._events_page(task_id, after, limit, "task")

        if version is None:
            return JSONResponse(await page())
        return await self.cached(("events", task_id, after, limit), version, page)

    async def _events_page(self, stream_id: UUID, after: int, limit: int, what: str) -> dict:
        page = await self.store.read_json(stream_id, after=after, limit=limit + 1)
        if not page and await self.store.version(stream_id) == 0:
            if what == "task":
                raise StreamNotFound(stream_id)
            raise NotFound("run_not_found", f"run {stream_id} has no events")
        next_cursor = str(page[limit - 1]["version"]) if len(page) > limit else None
        return {"items": page[:limit], "next_cursor": next_cursor}

    async def task_version(self, request: Request) -> JSONResponse:
        """The state as of version N, what changed from N-1, and the event N itself."""
        task_id = task_id_param(request)
        text = request.path_params["version"]
        version = whole_number(text)
        if version is None or version < 1:
            raise BadRequest(f"version {text[:40]!r}: expected a whole number ≥ 1")

        async def render() -> dict[str, Any]:
            previous, event = await self.store.load_step(task_id, version)
            state = (evolve(previous, event.event) if event.event is not None
                     else await self.store.load(task_id, version))
            before = task_state.view(previous) if previous is not None else None
            after = task_state.view(state)
            return {
                "version": version,
                "state": after,
                "changed": task_state.diff(before, after),
                "event": event.to_json(),
            }

        return await self.cached(("version", task_id, version), None, render)

    async def task_command(self, request: Request) -> Response:
        task_id = task_id_param(request)
        if (owner := await elsewhere(self.supervisor, request, task_id, "command")) is not None:
            return owner
        name = request.path_params["command"]
        command_type = COMMANDS.get(name)
        if name in SYSTEM_COMMANDS:
            raise Forbidden(f"{name!r} is recorded by ipa itself (its agents, scheduler and sync "
                            "engine), not given through the API", code="system_command")
        if command_type is None:
            known = ", ".join(sorted(COMMANDS))
            raise NotFound("unknown_command", f"unknown command {name!r}; known: {known}")
        body = await json_body(request, required=False)
        expected = body.pop("expected_version", None)
        interrupt = body.pop("interrupt", False) if command_type is Pause else False
        if not isinstance(interrupt, bool):
            raise BadRequest("interrupt must be true or false")
        if expected is not None and (
            not isinstance(expected, int) or isinstance(expected, bool) or expected < 1
        ):
            raise BadRequest("expected_version must be a whole number ≥ 1")
        command = build(command_type, body, name)
        if isinstance(command, SetRepo):
            await self.supervisor.env.repositories.check(command.repo)  # 422 when refused
        ctx = context(request)
        state = await self.supervisor.execute(
            task_id, command, actor=ctx.actor, correlation_id=ctx.correlation_id,
            expected_version=expected, interrupt=interrupt,
        )
        return JSONResponse(self.present(state))

    # Nodes -----------------------------------------------------------------------------------

    async def list_nodes(self, request: Request) -> JSONResponse:
        """Every node of the store, ``self`` on the one answering (none when this process is
        not a node). Never paged: ``next_cursor`` is always null."""
        return JSONResponse({"items": await node_items(self.supervisor), "next_cursor": None})

    # Jobs and runs ---------------------------------------------------------------------------

    async def list_jobs(self, request: Request) -> JSONResponse:
        view = await self.view(request)
        jobs = sorted(view.get("jobs") or [], key=lambda job: job.get("queued_seq", 0))
        status = request.query_params.get("status")
        if status:
            jobs = [job for job in jobs if job.get("status") == status]
        return JSONResponse(page_of(jobs, request))

    async def get_job(self, request: Request) -> JSONResponse:
        view = await self.view(request)
        job_id = request.path_params["job_id"]
        job = next((j for j in view.get("jobs") or [] if j.get("job_id") == job_id), None)
        if job is None:
            raise NotFound("job_not_found", f"task {view['id']} has no job {job_id!r}")
        return JSONResponse(job)

    async def job_action(self, request: Request) -> Response:
        """``retry`` (a dead-lettered or held job), ``cancel`` (``{"reason"}``; its running
        agent is stopped at once), ``skip`` (``{"reason"}``; a dead, held or queued job, which
        then counts as finished for its phase), ``interrupt`` (stops its running agent and
        holds the job for a person; not a failed attempt)."""
        task_id = task_id_param(request)
        if (owner := await elsewhere(self.supervisor, request, task_id, "job")) is not None:
            return owner
        job_id = request.path_params["job_id"]
        action = request.path_params["action"]
        if action not in ("retry", "cancel", "interrupt", "skip"):
            raise NotFound("unknown_action", f"unknown job action {action!r}; known: "
                           "cancel, interrupt, retry, skip")
        body = await json_body(request, required=False)
        expected = body.pop("expected_version", None)
        if expected is not None and (
            not isinstance(expected, int) or isinstance(expected, bool) or expected < 1
        ):
            raise BadRequest("expected_version must be a whole number ≥ 1")
        state = await self.state(task_id)
        if job_id not in state.jobs:
            raise NotFound("job_not_found", f"task {task_id} has no job {job_id!r}")
        ctx = context(request)
        if action == "interrupt":
            if body:
                raise BadRequest(f"interrupt: unknown field(s) {', '.join(map(repr, body))}")
            count = self.supervisor.interrupt(task_id, job_id, actor=ctx.actor)
            return JSONResponse({"interrupted": count})
        if action == "retry":
            command = build(RetryJob, {**body, "job_id": job_id}, "retry")
        elif action == "skip":
            command = build(SkipJob, {**body, "job_id": job_id}, "skip")
        else:
            command = build(CancelJob, {**body, "job_id": job_id}, "cancel")
        state = await self.supervisor.execute(
            task_id, command, actor=ctx.actor, correlation_id=ctx.correlation_id,
            expected_version=expected,
        )
        return JSONResponse(task_state.view(state))

    async def list_runs(self, request: Request) -> Response:
        """Every agent run of the task, from its job events, in start order (kept like an
        events page while the task's pod is at the version it was read at)."""
        task_id = task_id_param(request)
        version = self.live_version(task_id)

        async def page() -> dict[str, Any]:
            return await self._runs(task_id, request)

        if version is None:
            return JSONResponse(await page())
        query = request.scope.get("query_string", b"")
        return await self.cached(("runs", task_id, query), version, page)

    async def _runs(self, task_id: UUID, request: Request) -> dict[str, Any]:
        runs: dict[str, dict[str, Any]] = {}
        async for recorded in self.store.scan_json(task_id, JOB_EVENTS):
            data = recorded["data"]
            run_id = data.get("run_id")
            if not run_id:
                continue
            if recorded["type"] == "JobStarted":
                runs[run_id] = {
                    "run_id": run_id, "job_id": data.get("job_id"),
                    "attempt": data.get("attempt"), "status": "running",
                    "started_at": recorded["timestamp"], "finished_at": None,
                    "reason": None,
                }
            elif run_id in runs:
                runs[run_id].update(
                    status="succeeded" if recorded["type"] == "JobSucceeded" else (
                        "interrupted" if data.get("interrupted") else "failed"),
                    finished_at=recorded["timestamp"],
                    reason=data.get("reason"),
                )
        if not runs and await self.store.version(task_id) == 0:
            raise StreamNotFound(task_id)
        return page_of(list(runs.values()), request)

    async def run_events(self, request: Request) -> JSONResponse:
        run_id = run_id_param(request)
        after, limit = events_page_params(request)
        return JSONResponse(await self._events_page(run_id, after, limit, "run"))

    # Artifacts and workspaces ----------------------------------------------------------------

    async def list_artifacts(self, request: Request) -> JSONResponse:
        view = await self.view(request)
        artifacts = list(view.get("artifacts") or [])
        name = request.query_params.get("name")
        if name:
            artifacts = [a for a in artifacts if a.get("name") == name]
        return JSONResponse(page_of(artifacts, request))

    async def list_workspaces(self, request: Request) -> JSONResponse:
        view = await self.view(request)
        return JSONResponse(page_of(list(view.get("workspaces") or []), request))

    async def _workspace(self, request: Request) -> tuple[dict[str, Any], str]:
        """The workspace named in the path, and the commit asked (default: its newest)."""
        view = await self.view(request)
        workspace_id = request.path_params["workspace_id"]
        workspace = next((w for w in view.get("workspaces") or []
                          if w.get("workspace_id") == workspace_id), None)
        if workspace is None:
            raise NotFound("workspace_not_found",
                           f"task {view['id']} has no workspace {workspace_id!r}")
        known = [workspace["base_commit"], *workspace["commits"]]
        commit = request.query_params.get("commit") or known[-1]
        if commit not in known:
            raise BadRequest(f"commit {commit!r} is not one of workspace {workspace_id}'s "
                             f"commits ({', '.join(c[:12] for c in known)})")
        return workspace, commit

    async def workspace_files(self, request: Request) -> JSONResponse:
        """A directory listing (``type: "dir"``) or a file (``type: "file"``) at a commit."""
        workspace, commit = await self._workspace(request)
        path = request.query_params.get("path", "")
        try:
            kind = await self.browser.kind(workspace["repo"], commit, path)
            if kind == "tree":
                entries = await self.browser.list(workspace["repo"], commit, path)
                listing = page_of([vars(e) for e in entries], request, limit_default=500,
                                  limit_max=5000)
                return JSONResponse({"type": "dir", "path": path, "commit": commit, **listing})
            file = await self.browser.read(workspace["repo"], commit, path)
        except BrowseError as e:
            raise NotFound("path_not_found", str(e)) from None
        content, binary = None, False
        if file.content is not None:
            try:
                content = file.content.decode("utf-8")
            except UnicodeDecodeError:
                binary = True
        return JSONResponse({
            "type": "file", "path": file.path, "commit": commit, "size": file.size,
            "symlink": file.is_symlink, "binary": binary, "content": content,
            "too_large": file.content is None, "limit": self.browser.read_limit,
        })

    async def workspace_diff(self, request: Request) -> JSONResponse:
        """The diff from the workspace's base commit (or ``?base=``) to a commit."""
        workspace, commit = await self._workspace(request)
        base = request.query_params.get("base") or workspace["base_commit"]
        if base not in [workspace["base_commit"], *workspace["commits"]]:
            raise BadRequest(f"base {base!r} is not one of the workspace's commits")
        diff = await self.browser.diff(workspace["repo"], base, commit)
        return JSONResponse({
            "base": base, "commit": commit, "diff": diff.text, "truncated": diff.truncated,
            "files": [{"status": status, "path": path} for status, path in diff.files],
        })


    # The deliverable: the task's branch against its base -------------------------------------

    async def _branch(self, request: Request) -> tuple[TaskState, str, str]:
        """The task, its branch's base commit and newest commit; 404 before it has one."""
        state = await self.state(task_id_param(request))
        branch = state.branch
        if branch is None or state.repo is None:
            raise NotFound("branch_not_found", f"task {state.id} has no branch yet: it is made "
                           "when the task's first job starts in its repository")
        return state, branch.base_commit, branch.head_commit or branch.base_commit

    async def task_diff(self, request: Request) -> JSONResponse:
        """The task's branch against its base: unified diff (cut at the browser's limit),
        changed files with their status letters, and the stat."""
        state, base, head = await self._branch(request)
        try:
            found = await self.browser.compare(state.repo or "", base, head)
        except BrowseError as e:
            raise NotFound("commit_not_found", str(e)) from None
        return JSONResponse({
            "branch": state.branch.name if state.branch else None, "base": base, "head": head,
            "diff": found.diff.text, "truncated": found.diff.truncated,
            "files": [{"status": status, "path": path} for status, path in found.diff.files],
            "stat": {"files": found.files, "insertions": found.insertions,
                     "deletions": found.deletions},
        })

    async def task_patch(self, request: Request) -> Response:
        """``git format-patch`` of the task's branch since its base, as a download."""
        state, base, head = await self._branch(request)
        try:
            patch = await self.browser.patch(state.repo or "", base, head)
        except BrowseError as e:
            raise NotFound("commit_not_found", str(e)) from None
        name = f"ipa-{state.id.hex[:8]}.patch"
        return Response(patch, media_type="text/x-patch",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


async def node_items(supervisor: Supervisor) -> list[dict[str, Any]]:
    """The store's nodes as ``GET /api/nodes`` lists them: each row's fields and ``self``
    (true on this process's node)."""
    here = supervisor.node.id if supervisor.node is not None else None
    return [{**row.to_dict(), "self": row.id == here} for row in await supervisor.nodes()]


def events_page_params(request: Request) -> tuple[int, int]:
    """``(after, limit)`` of an events page: ``?cursor=`` (from a previous page) wins over
    ``?after=``; a malformed value is a 400."""
    after = int_param(request, "after", 0, 0, 2**62)
    cursor = request.query_params.get("cursor")
    if cursor:
        position = whole_number(cursor, 10**18 - 1)
        if position is None:
            raise BadCursor(f"cursor {cursor[:40]!r} was not handed out by this API")
        after = position
    return after, int_param(request, "limit", 100, 1, MAX_PAGE)
