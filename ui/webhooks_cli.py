"""``ipa webhooks add|list|show|remove|enable|deliveries``: webhooks, through the running
server's ``/api/webhooks``."""

from __future__ import annotations

import argparse
import json
import urllib.parse
from typing import Any

import anyio

from .client import ApiClient, connection_options, server_url
from .runtime import Settings

EVENT_HELP = ("project.phase_changed, project.completed, task.waiting, task.completed, "
              "task.failed, agent.spawned, agent.crashed, or * for all")


def add_webhook_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """The ``ipa webhooks`` subcommands, added to the CLI's subparsers."""
    connection = connection_options(parser_class)
    webhooks = commands.add_parser("webhooks", help="send task events to other systems "
                                   "(through the running server)")
    sub = webhooks.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, parents=[connection], help=help, description=help)
        parser.set_defaults(run=cmd_webhooks, action=name)
        return parser

    add = command("add", "register a webhook: URL receives the events named, signed with "
                  "its secret (Standard Webhooks), which is printed this once")
    add.add_argument("webhook_url", metavar="URL")  # not "url": that is --url, the server
    add.add_argument("--event", action="append", metavar="TYPE",
                     help=f"an event type (repeatable; default *): {EVENT_HELP}")
    add.add_argument("--secret", help="the signing secret (whsec_ + base64 of 24 to 64 "
                     "bytes); default: ipa makes one")
    command("list", "list the webhooks")
    command("show", "show one webhook").add_argument("webhook_id", metavar="WEBHOOK_ID")
    command("remove", "remove a webhook").add_argument("webhook_id", metavar="WEBHOOK_ID")
    command("enable", "enable a webhook disabled after failed deliveries").add_argument(
        "webhook_id", metavar="WEBHOOK_ID")
    deliveries = command("deliveries", "a webhook's deliveries, newest first")
    deliveries.add_argument("webhook_id", metavar="WEBHOOK_ID")
    deliveries.add_argument("--status", choices=["pending", "delivered", "failed"])
    deliveries.add_argument("--limit", type=_limit, default=20, metavar="N",
                            help="at most N deliveries (1 to 200; default 20)")


def _limit(text: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 200:
        raise argparse.ArgumentTypeError(f"invalid limit {text!r}: a whole number, 1 to 200")
    return int(text)


async def cmd_webhooks(settings: Settings, args: argparse.Namespace) -> int:
    client = ApiClient(server_url(args, settings), args.api_key)
    return await anyio.to_thread.run_sync(_webhooks, client, args)


def _webhooks(client: ApiClient, args: argparse.Namespace) -> int:
    if args.action == "add":
        body: dict[str, Any] = {"url": args.webhook_url, "events": args.event or ["*"]}
        if args.secret is not None:
            body["secret"] = args.secret
        answer = client.call("POST", "/api/webhooks", body)
        if args.json:
            print(json.dumps(answer, indent=2))
        else:
            print(f"webhook {answer['id']} → {answer['url']} ({', '.join(answer['events'])})")
            print(f"secret: {answer['secret']}  (shown this once: keep it to verify "
                  "signatures)")
        return 0
    if args.action == "list":
        rows = client.call("GET", "/api/webhooks")["items"]
        if args.json:
            print(json.dumps(rows, indent=2))
        elif not rows:
            print("no webhooks")
        for row in [] if args.json else rows:
            print(f"{row['id']}  {row['status']:<8}  {','.join(row['events'])}  {row['url']}"
                  + (f"  ({row['consecutive_failures']} failures in a row)"
                     if row["consecutive_failures"] else ""))
        return 0
    path = f"/api/webhooks/{urllib.parse.quote(args.webhook_id, safe='')}"
    if args.action == "deliveries":
        rows = client.call("GET", f"{path}/deliveries",
                           query={"status": args.status, "limit": args.limit})["items"]
        if args.json:
            print(json.dumps(rows, indent=2))
        elif not rows:
            print("no deliveries")
        for row in [] if args.json else rows:
            code = row["last_status"] if row["last_status"] is not None else "-"
            took = (f"{row['last_duration_ms']:.0f} ms" if row["last_duration_ms"] is not None
                    else "-")
            error = f"  {row['last_error']}" if row["last_error"] and row["status"] != \
                "delivered" else ""
            print(f"{row['id']}  {row['event_type']:<21}  {row['status']:<9}  "
                  f"attempts {row['attempts']}  HTTP {code}  {took}{error}")
        return 0
    if args.action == "show":
        answer = client.call("GET", path)
        print(json.dumps(answer, indent=2) if args.json
              else "\n".join(f"{key:>20}: {_shown(value)}" for key, value in answer.items()))
        return 0
    if args.action == "remove":
        answer = client.call("DELETE", path)
        print(json.dumps(answer, indent=2) if args.json
              else f"removed webhook {answer['id']} (log position {answer['position']})")
        return 0
    answer = client.call("POST", f"{path}/enable")
    print(json.dumps(answer, indent=2) if args.json
          else f"webhook {answer['id']} is {answer['status']}")
    return 0


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return "-" if value is None or value == "" else str(value)
