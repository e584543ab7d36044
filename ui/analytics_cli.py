"""``ipa analytics``: cost and tokens of a period, through the running server's
``/api/analytics`` (the server checks the period and names what is wrong with it)."""

from __future__ import annotations

import argparse
import json
from typing import Any

import anyio

from .client import ApiClient, connection_options, server_url
from .page_model import money, number
from .runtime import Settings


def add_analytics_command(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """``ipa analytics``, added to the CLI's subparsers."""
    analytics = commands.add_parser(
        "analytics", parents=[connection_options(parser_class)],
        help="cost and tokens of a period, grouped, with the most expensive runs and budget "
        "use (through the running server)",
        description="Sums of the UsageRecorded events of a period (default: the 30 days up "
        "to now), grouped by day, hour, project, task, agent_type or model (or two, e.g. "
        "day,model); the most expensive runs; budget use per task.")
    analytics.add_argument("--from", dest="start", metavar="WHEN",
                           help="an ISO 8601 date (its UTC day) or date-time")
    analytics.add_argument("--to", dest="end", metavar="WHEN",
                           help="an ISO 8601 date (its whole UTC day included) or date-time")
    analytics.add_argument("--group-by", default="day", metavar="KEYS",
                           help="day (default), hour, project, task, agent_type, model, or two "
                           "joined by a comma")
    analytics.add_argument("--top", type=_count, default=10, metavar="N",
                           help="the N most expensive runs (default 10; 0: none)")
    analytics.add_argument("--limit", type=_count, default=100, metavar="N",
                           help="at most N groups (default 100)")
    analytics.set_defaults(run=cmd_analytics)


def _count(text: str) -> int:
    if not text.isascii() or not text.isdigit():
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: expected a whole number")
    return int(text)


async def cmd_analytics(settings: Settings, args: argparse.Namespace) -> int:
    client = ApiClient(server_url(args, settings), args.api_key)
    found = await anyio.to_thread.run_sync(lambda: client.call("GET", "/api/analytics", query={
        "from": args.start, "to": args.end, "group_by": args.group_by, "top": args.top,
        "limit": args.limit}))
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    print("\n".join(lines(found)))
    return 0


def lines(found: dict[str, Any]) -> list[str]:
    """The report as text: the period, its totals, a line per group, the runs, the budgets."""
    totals = found["totals"]
    out = [f"from {found['from']} to {found['to']} (log position {found['position']})",
           f"total {_sums(totals)}, {totals['records']} record(s)"]
    keys = found["group_by"]
    out.append(f"per {', '.join(keys)}:" if found["groups"] else "no usage in this period")
    for group in found["groups"]:
        names = [_name(key, group) for key in keys]
        out.append(f"  {' · '.join(names)}: {_sums(group)}")
    if found["more"]:
        out.append(f"  (only the first {len(found['groups'])}: see --limit)")
    if found["top_runs"]:
        out.append("most expensive runs:")
    for run in found["top_runs"]:
        out.append(f"  {money(run['cost_usd'])} run {run['run_id']} (job {run['job_id']}, "
                   f"{run['agent_type']}, {run['model']}) of {run['title'] or run['task_id']}")
    if found["budgets"]:
        out.append("budget use:")
    for budget in found["budgets"]:
        share = "" if budget["share"] is None else f" ({100 * budget['share']:.1f}%)"
        out.append(f"  {budget['title']} ({budget['task_id']}): {money(budget['spent_usd'])} "
                   f"of {money(budget['budget_usd'])}{share}")
    return out


def _sums(row: dict[str, Any]) -> str:
    return (f"{money(row['cost_usd'])}, {number(row['input_tokens'])} tokens in, "
            f"{number(row['output_tokens'])} out, {number(row['runs'])} run(s)")


def _name(key: str, group: dict[str, Any]) -> str:
    value = group["key"][key]
    if value is None:
        return "no project" if key == "project" else "none"
    title = (group.get("titles") or {}).get(key)
    return f"{title} ({value})" if title else str(value)
