"""``ipa task ...``: the task commands, acting through a running server's HTTP API.

Everything a person can do on the pages has a command here: the decisions at a gate
(``approve``, ``request-changes``, ``back-to-phase``), answers, the budget, pause / resume /
cancel / retry, ``restart`` of a stopped pod, ``archive`` / ``unarchive`` of a finished task,
``clone`` and ``fork --version N`` (each prints the new task's id), and ``ipa task job
retry|cancel|interrupt|skip``;
``ipa task tree`` prints a project's backlog and children. ``ipa nodes`` lists the nodes of the
store (``GET /api/nodes``).
``ipa memory ...`` is in :mod:`.memory_cli`.

The server is ``--url``, else ``IPA_URL``, else the live server named by the data dir's
``server.json`` (``--data-dir``, env ``IPA_DATA_DIR``), else ``http://127.0.0.1:8765``. An API
key comes from ``--api-key`` (env ``IPA_API_KEY``) and is sent as ``X-API-Key``. Plain
``urllib``: the command line needs no HTTP library of its own. Every failure is an
:class:`ApiCallError` whose message is the server's own error message and code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

import anyio

from ipa.domain import Status

from . import children as swarm
from .runtime import Settings, running_server_url

DEFAULT_URL = "http://127.0.0.1:8765"
TIMEOUT = 30.0


class ApiCallError(Exception):
    """The server said no, or could not be reached."""


class ApiClient:
    def __init__(self, url: str, api_key: str | None = None, timeout: float = TIMEOUT) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None,
             query: dict[str, Any] | None = None) -> Any:
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items()
                                                 if v is not None}, doseq=True)  # lists repeat
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.api_key:
            request.add_header("X-API-Key", self.api_key)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as e:
            raise ApiCallError(_describe(e)) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ApiCallError(f"no ipa server at {self.url} ({reason}); start one with "
                               "`ipa serve` or set --url / IPA_URL") from None
        except json.JSONDecodeError:
            raise ApiCallError(f"{self.url} answered something that is not JSON "
                               "(is it an ipa server?)") from None


def _describe(e: urllib.error.HTTPError) -> str:
    try:
        error = json.loads(e.read())["error"]
        extra = ""
        if "current_version" in error:
            extra = f" (current version {error['current_version']})"
        return f"{error['message']}{extra} [HTTP {e.code} {error['code']}]"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {e.code} {e.reason}"


def connection_options(parser_class: type[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """``--url``, ``--data-dir``, ``--api-key`` and ``--json``: the parent parser of every
    command that acts through a running server."""
    connection = parser_class(add_help=False)
    connection.add_argument("--url", help="the ipa server (env IPA_URL; default: the one "
                            f"running on the data dir, else {DEFAULT_URL})")
    connection.add_argument("--data-dir", help="find the server running on this data dir "
                            "(env IPA_DATA_DIR; default: user data dir)")
    connection.add_argument("--api-key", default=os.environ.get("IPA_API_KEY"),
                            help="an API key, when the server requires one (env IPA_API_KEY)")
    connection.add_argument("--json", action="store_true", help="print the answer as JSON")
    return connection


def add_node_command(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """``ipa nodes``, added to the CLI's subparsers."""
    nodes = commands.add_parser(
        "nodes", parents=[connection_options(parser_class)],
        help="list the nodes of the store (each ipa serve on it), through the running server",
        description="id, address, status, pods, agents, last heartbeat and start of each "
        "node; * marks the one that answered")
    nodes.set_defaults(run=cmd_nodes)


def add_task_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """The ``ipa task`` subcommands, added to the CLI's subparsers."""
    connection = connection_options(parser_class)
    expected = parser_class(add_help=False)
    expected.add_argument("--expected-version", type=int, metavar="N",
                          help="refuse if the task has moved past version N")

    task = commands.add_parser("task", help="create, list, show and steer tasks (through the "
                               "running server)")
    sub = task.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(name: str, help: str, api: str | None, body: Any = None,
                parents: tuple[argparse.ArgumentParser, ...] = (connection, expected),
                ) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, parents=list(parents), help=help, description=help)
        parser.add_argument("task_id", metavar="TASK_ID")
        parser.set_defaults(run=cmd_task, action=name, api=api,
                            body=body or _nothing)
        return parser

    create = sub.add_parser("create", parents=[connection], help="create a task")
    create.add_argument("title")
    source = create.add_mutually_exclusive_group()
    source.add_argument("--description", default="", help="what to do (or a PRD)")
    source.add_argument("--description-file", metavar="FILE",
                        help="read the description from FILE ('-': stdin)")
    create.add_argument("--repo", help="a local path or a git URL")
    create.add_argument("--workflow", default="task", help="task (default) or project")
    create.set_defaults(run=cmd_task, action="create")

    listing = sub.add_parser("list", parents=[connection],
                             help="list tasks, newest first")
    listing.add_argument("--status", choices=[status.value for status in Status],
                         help="only tasks in this status")
    listing.add_argument("--attention", action="store_true",
                         help="only tasks that need a person (a gate, a question, a dead job...)")
    archived = listing.add_mutually_exclusive_group()
    archived.add_argument("--archived", action="store_const", const="1", dest="archived",
                          help="archived tasks too (left out by default)")
    archived.add_argument("--only-archived", action="store_const", const="only",
                          dest="archived", help="only archived tasks")
    listing.set_defaults(run=cmd_task, action="list")

    show = command("show", "show a task: its gate, what needs a person, questions, jobs and "
                   "branch", None, parents=(connection,))
    show.add_argument("--version", type=int, help="as of this version")
    command("tree", "show a project and its children as a tree: the backlog by phase, each "
            "item's kind, status, child, spend, agents at work and dependencies; the swarm's "
            "totals", None, parents=(connection,))

    approve = command("approve", "approve the phase waiting at its gate", "approve",
                      lambda args: given_texts(args, "comment"))
    approve.add_argument("--comment", default="", help="a comment")
    changes = command("request-changes", "send the phase at its gate back for another round, "
                      "with feedback", "request_changes",
                      lambda args: {"feedback": args.feedback})
    changes.add_argument("feedback", metavar="FEEDBACK", help="what must change")
    back = command("back-to-phase", "send the task back to an earlier phase, with feedback",
                   "return_to_phase", lambda args: {"phase": args.phase,
                                                    "feedback": args.feedback})
    back.add_argument("phase", metavar="PHASE", help="the phase (e.g. planning)")
    back.add_argument("feedback", metavar="FEEDBACK", help="what that phase must address")
    answer = command("answer", "answer an agent's question", "answer_question")
    answer.add_argument("answer", metavar="ANSWER")
    answer.add_argument("--question", metavar="QUESTION_ID",
                        help="which question (default: the only open one)")
    budget = command("budget", "cap what the task may spend on models (raising it resumes a "
                     "task its budget paused)", "set_budget",
                     lambda args: {"limit_usd": args.limit_usd})
    budget.add_argument("limit_usd", type=dollars, metavar="USD", help="dollars, or 'none'")
    repo = command("set-repo", "point the task at another repository (a path or git URL), "
                   "e.g. when its own cannot be used", "set_repo",
                   lambda args: {"repo": args.repo})
    repo.add_argument("repo", metavar="REPO", help="a local git repository or a git URL")
    spec = command("update-spec", "replace the task's description (later prompts use it)",
                   "update_spec", lambda args: {"description": _description(args)})
    spec_source = spec.add_mutually_exclusive_group(required=True)
    spec_source.add_argument("--description", help="the new description")
    spec_source.add_argument("--description-file", metavar="FILE",
                             help="read it from FILE ('-': stdin)")
    pause = command("pause", "pause a task", "pause",
                    lambda args: {**given_texts(args, "reason"),
                                  **({"interrupt": True} if args.interrupt else {})})
    pause.add_argument("--reason", default="", help="why")
    pause.add_argument("--interrupt", action="store_true", help="cut running agents short")
    command("resume", "resume a paused task", "resume")
    cancel = command("cancel", "cancel a task", "cancel", _reason)
    cancel.add_argument("--reason", default="", help="why")
    command("retry", "retry a failed task", "retry")
    command("archive", "archive a finished task (completed, failed or cancelled): it leaves "
            "the task list (ipa task list --archived shows it); its events stay", "archive")
    command("unarchive", "bring an archived task back to the task list", "unarchive")
    clone = command("clone", "a new task with this one's description and settings "
                    "(workflow, repository, budget, approval policies, sync), none of its "
                    "history; prints the new task's id", "clone",
                    lambda args: given_texts(args, "title"), parents=(connection,))
    clone.add_argument("--title", help="the new task's title (default: the same)")
    fork = command("fork", "a new task that goes on from this one's state at a version, its "
                   "branch at the commit this one's branch had then; prints the new task's id",
                   "fork", lambda args: {"version": args.version, **given_texts(args, "title")},
                   parents=(connection,))
    fork.add_argument("--version", type=int, required=True, metavar="N",
                      help="the version to fork at (see ipa events / the page's time travel)")
    fork.add_argument("--title", help="the new task's title (default: the same)")
    command("restart", "restart a task's pod that crashed or stopped", "restart",
            parents=(connection,))

    job = sub.add_parser("job", help="steer one job of a task: retry, cancel, interrupt, skip")
    job_sub = job.add_subparsers(title="commands", metavar="COMMAND", required=True)
    job_actions = {
        "retry": "run a dead or held job again",
        "cancel": "cancel a job (its running agent stops at once)",
        "interrupt": "stop a job's running agent and hold the job for a person",
        "skip": "skip a dead, held or queued job (its phase can complete without it)",
    }
    for name, help in job_actions.items():
        parents = [connection] if name == "interrupt" else [connection, expected]
        parser = job_sub.add_parser(name, parents=parents, help=help, description=help)
        parser.add_argument("task_id", metavar="TASK_ID")
        parser.add_argument("job_id", metavar="JOB_ID")
        if name in ("cancel", "skip"):
            parser.add_argument("--reason", default="", help="why")
        parser.set_defaults(run=cmd_task, action=f"job {name}", api=name,
                            body=_reason if name in ("cancel", "skip") else _nothing)


def dollars(text: str) -> float | None:
    """A budget in dollars, ``none`` for no cap."""
    if text.strip().lower() in ("none", "off", "no"):
        return None
    try:
        value = float(text.strip().lstrip("$"))
    except ValueError:
        value = -1.0
    if not 0 <= value < 10**9:
        raise argparse.ArgumentTypeError(f"invalid budget {text!r}: expected dollars ≥ 0 "
                                         "or 'none'")
    return value


def given_texts(args: argparse.Namespace, *fields: str) -> dict[str, str]:
    return {field: getattr(args, field) for field in fields if getattr(args, field)}


def _reason(args: argparse.Namespace) -> dict[str, str]:
    return given_texts(args, "reason")


def _nothing(args: argparse.Namespace) -> dict[str, Any]:
    return {}


def _description(args: argparse.Namespace) -> str:
    if args.description_file:
        return sys.stdin.read() if args.description_file == "-" else _read(args.description_file)
    return args.description or ""


def server_url(args: argparse.Namespace, settings: Settings) -> str:
    """``--url``, else ``IPA_URL``, else the data dir's running server, else the default."""
    return (args.url or os.environ.get("IPA_URL") or running_server_url(settings.data_dir)
            or DEFAULT_URL)


async def cmd_task(settings: Settings, args: argparse.Namespace) -> int:
    client = ApiClient(server_url(args, settings), args.api_key)
    return await anyio.to_thread.run_sync(_task, client, args)


def _task(client: ApiClient, args: argparse.Namespace) -> int:
    if args.action == "create":
        body = {"title": args.title, "description": _description(args),
                "workflow": args.workflow}
        if args.repo:
            body["repo"] = args.repo
        task = client.call("POST", "/api/tasks", body)
        _print_task(task, args.json, created=True)
        return 0
    if args.action == "list":
        return _list(client, args)
    task_path = f"/api/tasks/{urllib.parse.quote(args.task_id, safe='')}"
    if args.action == "show":
        task = client.call("GET", task_path, query={"version": args.version})
        _print_task(task, args.json, full=True)
        return 0
    if args.action == "tree":
        task = client.call("GET", task_path)
        print(json.dumps(swarm.tree_json(task), indent=2) if args.json
              else "\n".join(swarm.tree_lines(task)))
        return 0
    body: dict[str, Any] = args.body(args)
    if args.action == "answer":
        body = {"question_id": args.question or _open_question(client, task_path),
                "answer": args.answer}
    if getattr(args, "expected_version", None) is not None:
        body["expected_version"] = args.expected_version
    if args.action.startswith("job "):
        job_path = f"{task_path}/jobs/{urllib.parse.quote(args.job_id, safe='')}"
        answer = client.call("POST", f"{job_path}/{args.api}", body)
    else:
        answer = client.call("POST", f"{task_path}/{args.api}", body)
    if args.action in ("clone", "fork"):  # a new task: its id, as create prints
        _print_task(answer, args.json, created=True)
        return 0
    if isinstance(answer, dict) and "status" in answer and "id" in answer:
        _print_task(answer, args.json)
    else:  # e.g. ``{"interrupted": 1}``
        print(json.dumps(answer, indent=2, sort_keys=True) if args.json else
              ", ".join(f"{key}: {value}" for key, value in (answer or {}).items()))
    return 0


async def cmd_nodes(settings: Settings, args: argparse.Namespace) -> int:
    client = ApiClient(server_url(args, settings), args.api_key)
    answer = await anyio.to_thread.run_sync(client.call, "GET", "/api/nodes")
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
        return 0
    rows = answer["items"]
    if not rows:
        print("no nodes: the server is not a node of a cluster")
        return 0
    now = datetime.now(UTC)
    table = [["", "ID", "ADDRESS", "STATUS", "PODS", "AGENTS", "HEARTBEAT", "STARTED"]]
    table += [["*" if row.get("self") else "", row["id"], row["address"] or "-",
               row["status"], str(row["pods"]), str(row["agents"]),
               ago(row["heartbeat_at"], now), _utc(row["started_at"])] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    right = {4, 5}  # the counts
    for line in table:
        print("  ".join(cell.rjust(width) if i in right else cell.ljust(width)
                        for i, (cell, width) in enumerate(zip(line, widths, strict=True)))
              .rstrip())
    return 0


def ago(iso: str, now: datetime) -> str:
    """How long before ``now`` an ISO time was: ``3 s ago``, ``5 min ago``, ``2 h ago``,
    ``4 d ago`` (``now`` is this machine's clock; the time is the database's)."""
    try:
        seconds = max(0, int((now - datetime.fromisoformat(iso)).total_seconds()))
    except (TypeError, ValueError):
        return "?"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _utc(iso: str) -> str:
    try:
        return datetime.fromisoformat(iso).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (TypeError, ValueError):
        return str(iso)


def _list(client: ApiClient, args: argparse.Namespace) -> int:
    """Every page of the list (the API lists by id), filtered, then sorted newest first."""
    rows = []
    cursor = None
    while True:
        page = client.call("GET", "/api/tasks", query={
            "limit": 500, "cursor": cursor, "attention": 1 if args.attention else None,
            "archived": args.archived})
        rows.extend(row for row in page["items"]
                    if (not args.status or row["status"] == args.status)
                    and (not args.attention or row.get("attention")))
        cursor = page["next_cursor"]
        if cursor is None:
            break
    rows.sort(key=lambda row: (row.get("created_at") or "", row["id"]), reverse=True)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        needs = row.get("attention") or ("archived" if row.get("archived") else "")
        print(f"{row['id']}  {row['status']:<9}  {needs:<10}  {row['phase']:<20}  "
              f"v{row['version']:<5}  {row['title']}")
    return 0


def _open_question(client: ApiClient, task_path: str) -> str:
    task = client.call("GET", task_path)
    open_ = [q for q in task.get("questions") or [] if q.get("answer") is None]
    if len(open_) == 1:
        return open_[0]["question_id"]
    if not open_:
        raise ApiCallError(f"task {task['id']} has no open question")
    listed = ", ".join(q["question_id"] for q in open_)
    raise ApiCallError(f"task {task['id']} has {len(open_)} open questions ({listed}): name "
                       "one with --question")


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ApiCallError(f"cannot read {path}: {e.strerror}") from None


def _print_task(task: dict[str, Any], as_json: bool, created: bool = False,
                full: bool = False) -> None:
    if as_json:
        print(json.dumps(task, indent=2, sort_keys=True))
        return
    if created:
        print(task["id"])
        return
    for key in ("id", "title", "workflow", "phase", "status", "version"):
        print(f"{key:>17}: {task.get(key)}")
    if full:
        for key, value in _details(task):
            print(f"{key:>17}: {value}")
    print(f"{'allowed_commands':>17}: {', '.join(task.get('allowed_commands', []))}")
    if full:
        for line in _jobs_and_questions(task):
            print(line)


def _details(task: dict[str, Any]) -> list[tuple[str, str]]:
    """What ``show`` adds: the gate, what needs a person, the branch, the spend."""
    lines = []
    if task.get("status") == "waiting":
        lines.append(("gate", f"{task.get('phase')} waits for approval (approve, "
                              "request-changes or back-to-phase)"))
    attention = task.get("attention")
    if isinstance(attention, dict):
        actions = ", ".join(attention.get("actions") or [])
        lines.append(("attention", f"{attention.get('kind')}: {attention.get('message')}"
                                   + (f" (do: {actions})" if actions else "")))
    branch = task.get("branch")
    if isinstance(branch, dict) and branch.get("name"):
        head = branch.get("head_commit")
        lines.append(("branch", f"{branch['name']} from {branch.get('base')} "
                                f"{_short(branch.get('base_commit'))}"
                                + (f", head {_short(head)}" if head else ", no commit yet")))
    if task.get("node"):
        lines.append(("node", str(task["node"])))
    if task.get("repository_error"):
        lines.append(("repository", str(task["repository_error"])))
    if task.get("parent_id"):
        lines.append(("project", f"{task['parent_id']} (item {task.get('item_id')}, kind "
                                 f"{task.get('kind')})"))
    for field, word in (("forked_from", "forked from"), ("cloned_from", "cloned from")):
        if isinstance(origin := task.get(field), dict):
            lines.append(("origin", f"{word} {origin.get('task_id')} at version "
                                    f"{origin.get('version')}"))
    for field in ("forks", "clones"):
        if made := task.get(field):
            lines.append((field, ", ".join(f"{d.get('id')} (from version {d.get('version')})"
                                           for d in made)))
    if task.get("archived"):
        lines.append(("archived", "yes (ipa task unarchive brings it back to the list)"))
    if task.get("backlog") is not None:
        backlog = task["backlog"]
        counts = ", ".join(f"{n} {name}" for name, n in swarm.counts(task).items())
        lines.append(("backlog", f"{len(backlog.get('items') or [])} items, version "
                                 f"{backlog.get('version')}, "
                                 + ("approved" if backlog.get("approved") else "proposed")))
        lines.append(("children", f"{counts or 'none yet'} (at most "
                                  f"{task.get('max_children')} at once; ipa task tree)"))
        if task.get("swarm_usage"):
            lines.append(("swarm", swarm.totals_line(task["swarm_usage"])))
        if "children" in task:  # the current view (not a past version's)
            at_work = ", ".join(f"{a['item_id']} {a['agent']} ({a['step']})"
                                for a in swarm.agents(task))
            lines.append(("agents", at_work or "none at work"))
    cost = (task.get("usage") or {}).get("cost_usd") or 0.0
    by_children = (task.get("children_usage") or {}).get("cost_usd") or 0.0
    if task.get("budget_usd") is not None or cost or by_children:
        cap = task.get("budget_usd")
        split = f" (${cost:.2f} itself, ${by_children:.2f} by its children)" if by_children else ""
        lines.append(("spent", f"${cost + by_children:.2f}{split}"
                      + (f" of a ${cap:.2f} budget" if cap is not None else "")
                      + (" (paused by its budget)" if task.get("budget_paused") else "")))
    return lines


def _jobs_and_questions(task: dict[str, Any]) -> list[str]:
    lines = []
    jobs = sorted(task.get("jobs") or [], key=lambda job: job.get("queued_seq", 0))
    if jobs:
        lines.append("jobs:")
        for job in jobs:
            error = f"  ({job['last_error']})" if job.get("last_error") else ""
            lines.append(f"  {job['job_id']}  {job.get('agent', ''):<14} "
                         f"{job.get('status', ''):<9}  attempts {job.get('attempts', 0)}/"
                         f"{job.get('max_attempts', '?')}  phase {job.get('phase')}{error}")
    questions = task.get("questions") or []
    if questions:
        lines.append("questions:")
        for q in questions:
            if q.get("answer") is None:
                lines.append(f"  {q['question_id']}  open      (job {q.get('job_id')}) "
                             f"{q.get('question')}")
            else:
                lines.append(f"  {q['question_id']}  answered  (job {q.get('job_id')}) "
                             f"{q.get('question')} -> {q['answer']} "
                             f"({q.get('answered_by')})")
    return lines


def _short(sha: Any) -> str:
    return str(sha)[:12] if sha else "?"

