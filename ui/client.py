"""``ipa task ...``: the task commands, acting through a running server's HTTP API.

The server is ``--url`` (env ``IPA_URL``, default ``http://127.0.0.1:8765``); an API key comes
from ``--api-key`` (env ``IPA_API_KEY``) and is sent as ``X-API-Key``. Plain ``urllib``: the
command line needs no HTTP library of its own. Every failure is an :class:`ApiCallError` whose
message is the server's own error message and code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import anyio

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
                                                 if v is not None})
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


def add_task_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """The ``ipa task`` subcommands, added to the CLI's subparsers."""
    connection = parser_class(add_help=False)
    connection.add_argument("--url", default=os.environ.get("IPA_URL", DEFAULT_URL),
                            help=f"the ipa server (env IPA_URL; default {DEFAULT_URL})")
    connection.add_argument("--api-key", default=os.environ.get("IPA_API_KEY"),
                            help="an API key, when the server requires one (env IPA_API_KEY)")
    connection.add_argument("--json", action="store_true", help="print the answer as JSON")

    task = commands.add_parser("task", help="create, list, show and steer tasks (through the "
                               "running server)")
    sub = task.add_subparsers(title="commands", metavar="COMMAND", required=True)

    create = sub.add_parser("create", parents=[connection], help="create a task")
    create.add_argument("title")
    source = create.add_mutually_exclusive_group()
    source.add_argument("--description", default="", help="what to do (or a PRD)")
    source.add_argument("--description-file", metavar="FILE",
                        help="read the description from FILE ('-': stdin)")
    create.add_argument("--repo", help="a local path or a git URL")
    create.add_argument("--workflow", default="task", help="task (default) or project")
    create.set_defaults(run=cmd_task, action="create")

    listing = sub.add_parser("list", parents=[connection], help="list tasks")
    listing.add_argument("--status", help="only tasks in this status")
    listing.set_defaults(run=cmd_task, action="list")

    show = sub.add_parser("show", parents=[connection], help="show a task's state")
    show.add_argument("task_id", metavar="TASK_ID")
    show.add_argument("--version", type=int, help="as of this version")
    show.set_defaults(run=cmd_task, action="show")

    texts = {"approve": "comment", "pause": "reason", "cancel": "reason", "resume": None}
    for name, field in texts.items():
        command = sub.add_parser(name, parents=[connection], help=f"{name} a task")
        command.add_argument("task_id", metavar="TASK_ID")
        if field:
            command.add_argument(f"--{field}", default="", help=f"the {field}")
        command.add_argument("--expected-version", type=int, metavar="N",
                             help="refuse if the task has moved past version N")
        if name == "pause":
            command.add_argument("--interrupt", action="store_true",
                                 help="cut running agents short")
        command.set_defaults(run=cmd_task, action=name, field=field)


async def cmd_task(settings: object, args: argparse.Namespace) -> int:
    client = ApiClient(args.url, args.api_key)
    return await anyio.to_thread.run_sync(_task, client, args)


def _task(client: ApiClient, args: argparse.Namespace) -> int:
    if args.action == "create":
        description = args.description
        if args.description_file:
            description = (sys.stdin.read() if args.description_file == "-"
                           else _read(args.description_file))
        body = {"title": args.title, "description": description, "workflow": args.workflow}
        if args.repo:
            body["repo"] = args.repo
        task = client.call("POST", "/api/tasks", body)
        _print_task(task, args.json, created=True)
        return 0
    if args.action == "list":
        rows = []
        cursor = None
        while True:
            page = client.call("GET", "/api/tasks", query={"limit": 500, "cursor": cursor})
            rows.extend(r for r in page["items"] if not args.status or r["status"] == args.status)
            cursor = page["next_cursor"]
            if cursor is None:
                break
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for row in rows:
                print(f"{row['id']}  {row['status']:<9}  {row['phase']:<20}  v{row['version']:<5} "
                      f" {row['title']}")
        return 0
    task_path = f"/api/tasks/{urllib.parse.quote(args.task_id, safe='')}"
    if args.action == "show":
        task = client.call("GET", task_path, query={"version": args.version})
        _print_task(task, args.json)
        return 0
    body: dict[str, Any] = {}
    if args.field and getattr(args, args.field):
        body[args.field] = getattr(args, args.field)
    if args.expected_version is not None:
        body["expected_version"] = args.expected_version
    if getattr(args, "interrupt", False):
        body["interrupt"] = True
    task = client.call("POST", f"{task_path}/{args.action}", body)
    _print_task(task, args.json)
    return 0


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise ApiCallError(f"cannot read {path}: {e.strerror}") from None


def _print_task(task: dict[str, Any], as_json: bool, created: bool = False) -> None:
    if as_json:
        print(json.dumps(task, indent=2, sort_keys=True))
        return
    if created:
        print(task["id"])
        return
    for key in ("id", "title", "workflow", "phase", "status", "version"):
        print(f"{key:>17}: {task.get(key)}")
    print(f"{'allowed_commands':>17}: {', '.join(task.get('allowed_commands', []))}")
