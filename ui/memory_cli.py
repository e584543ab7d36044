"""``ipa memory search|list|show|forget|pin``: what agents learned, read and steered through
the running server's ``/api/memories`` (``ipa memory reembed`` works on the store itself: in
``cli.py``)."""

from __future__ import annotations

import argparse
import json
import urllib.parse
from typing import Any

import anyio

from .client import ApiClient, connection_options, given_texts, server_url
from .runtime import Settings


def add_memory_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> Any:
    """The ``ipa memory`` subcommands that act through a running server; returns their
    subparsers, to which the CLI adds those working on the store itself (``reembed``)."""
    connection = connection_options(parser_class)
    memory = commands.add_parser("memory", help="search, list, show, pin and forget what agents "
                                 "learned (through the running server)")
    sub = memory.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, parents=[connection], help=help, description=help)
        parser.set_defaults(run=cmd_memory, action=name)
        return parser

    scope_help = "repo:<repository>, project:<task id> or task:<task id> (repeatable)"
    search = command("search", "the memories of the scopes named most useful for TEXT, best "
                     "first")
    search.add_argument("text", metavar="TEXT")
    search.add_argument("--scope", action="append", metavar="SCOPE", help=scope_help)
    search.add_argument("--limit", type=_memory_limit, default=10, metavar="N",
                        help="at most N memories (1 to 100; default 10)")
    listing = command("list", "memories by id, of a scope or kind")
    listing.add_argument("--scope", action="append", metavar="SCOPE", help=scope_help)
    listing.add_argument("--kind", choices=["episodic", "semantic", "procedural"])
    listing.add_argument("--limit", type=count_of, default=100, metavar="N",
                         help="at most N memories (default 100)")
    command("show", "show one memory").add_argument("memory_id", metavar="MEMORY_ID")
    forget = command("forget", "forget a memory: it leaves later prompts (an event)")
    forget.add_argument("memory_id", metavar="MEMORY_ID")
    forget.add_argument("--reason", default="", help="why")
    pin = command("pin", "pin a memory: most important, never decays nor is evicted")
    pin.add_argument("memory_id", metavar="MEMORY_ID")
    pin.add_argument("--unpin", action="store_true", help="unpin it instead")
    return sub


def count_of(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: expected a whole number ≥ 1")
    return int(text)


def _memory_limit(text: str) -> int:
    value = count_of(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"invalid limit {text!r}: at most 100")
    return value


async def cmd_memory(settings: Settings, args: argparse.Namespace) -> int:
    client = ApiClient(server_url(args, settings), args.api_key)
    return await anyio.to_thread.run_sync(_memory, client, args)


def _memory(client: ApiClient, args: argparse.Namespace) -> int:
    if args.action in ("search", "list"):
        rows = (client.call("GET", "/api/memories", query={
            "q": args.text, "scope": args.scope or [], "limit": args.limit})["items"]
            if args.action == "search" else _memories(client, args))
        if args.json:
            print(json.dumps(rows, indent=2))
        elif not rows:
            print("no memories")
        for row in [] if args.json else rows:
            pinned = " pinned" if row["pinned"] else ""
            print(f"{row['id']}  {row['kind']:<10}  {row['score']:.3f}  {row['scope']}"
                  f"{pinned}  {_one_line(row['text'], 100)}")
        return 0
    path = f"/api/memories/{urllib.parse.quote(args.memory_id, safe='')}"
    if args.action == "show":
        answer = client.call("GET", path)
        lines = [f"{key:>19}: {_shown(value)}" for key, value in answer.items()
                 if key != "text"]
        print(json.dumps(answer, indent=2) if args.json
              else "\n".join([*lines, "", answer["text"]]))
        return 0
    if args.action == "forget":
        answer = client.call("DELETE", path, given_texts(args, "reason") or None)
        said = f"forgot memory {answer['id']}"
    else:
        answer = client.call("POST", f"{path}/pin", {"pinned": not args.unpin})
        said = f"{'pinned' if answer['pinned'] else 'unpinned'} memory {answer['id']}"
    print(json.dumps(answer, indent=2) if args.json
          else f"{said} (memory ledger, log position {answer['position']})")
    return 0


def _memories(client: ApiClient, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Up to ``--limit`` memories of ``list``, page after page."""
    rows: list[dict[str, Any]] = []
    cursor = None
    while len(rows) < args.limit:
        page = client.call("GET", "/api/memories", query={
            "scope": args.scope or [], "kind": args.kind, "cursor": cursor,
            "limit": min(100, args.limit - len(rows))})
        rows.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    return rows


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(value) or "-"
    return "-" if value is None or value == "" else str(value)


def _one_line(text: str, width: int) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[:width - 1] + "…"
