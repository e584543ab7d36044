"""``ipa export`` and ``ipa import``: a task, its children and its agent runs as one file.

``ipa export TASK_ID > task.ipa`` (or ``-o FILE``) reads the store directly, like the other
reading commands, also while a server runs; the bundle's SHA-256 is printed on stderr, to be
compared on the other side (``ipa import --sha256``). ``ipa import FILE`` (``-``: standard
input) verifies the whole bundle before it opens the store (a refused bundle leaves even a
new data dir untouched), then imports it on a stopped data dir, holding its lock; while a
server runs there (the lock says so), it sends the bundle to that server's ``POST
/api/import`` instead. ``--url`` sends it to a server named explicitly (and ``ipa export
--url`` asks one). ``--repo PATH`` names the local repository the bundle's branches are
fetched into; ``--no-git`` leaves commits out on either side.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio

from ipa.eventstore import DataDirInUse
from ipa.eventstore.bundle import MAX_BUNDLE, MEDIA_TYPE, BundleRefused, TaskBundle

from .client import ApiCallError
from .runtime import Settings, open_store, running_server_url

TIMEOUT = 300.0
"""Seconds a transfer through a server may take."""
_SHA256 = re.compile(r"[0-9a-f]{64}")


def add_transfer_commands(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """``ipa export`` and ``ipa import``, added to the CLI's subparsers."""
    options = parser_class(add_help=False)
    options.add_argument("--data-dir", help="ipa's data directory (env IPA_DATA_DIR; default: "
                         "user data dir)")
    options.add_argument("--database-url", help="use this PostgreSQL instead of the embedded "
                         "one (env IPA_DATABASE_URL)")
    options.add_argument("--url", help="go through this ipa server instead of the store")
    options.add_argument("--api-key", default=os.environ.get("IPA_API_KEY"),
                         help="an API key, when the server requires one (env IPA_API_KEY)")
    options.add_argument("--no-git", action="store_true",
                         help="leave the task's commits out")

    export = commands.add_parser(
        "export", parents=[options], help="write a task (its children, its runs, its "
        "branches' commits) as a bundle file", description="write a task's bundle: its "
        "events and its children's and runs' (hash-chained), each task's state and its "
        "branches as a git bundle; its SHA-256 goes to stderr")
    export.add_argument("task_id", type=_task_id, metavar="TASK_ID")
    export.add_argument("-o", "--output", metavar="FILE",
                        help="write it to FILE (default: standard output, not a terminal)")
    export.set_defaults(run=cmd_export)

    imported = commands.add_parser(
        "import", parents=[options], help="import a task bundle written by ipa export",
        description="verify a task bundle (nothing is written if any check fails), then "
        "record its tasks and runs here; on a running server's data dir, through the server")
    imported.add_argument("file", metavar="FILE", help="the bundle ('-': standard input)")
    imported.add_argument("--repo", metavar="PATH",
                          help="a local repository to fetch the bundle's branches into")
    imported.add_argument("--sha256", type=_sha256, metavar="HEX",
                          help="refuse the file unless its SHA-256 is this (from ipa export)")
    imported.add_argument("--json", action="store_true", help="print the result as JSON")
    imported.set_defaults(run=cmd_import)


def _task_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a task id (expected a UUID)") from None


def _sha256(text: str) -> str:
    if not _SHA256.fullmatch(text.lower()):
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is not a SHA-256 (64 hex digits)")
    return text.lower()


async def cmd_export(settings: Settings, args: argparse.Namespace) -> int:
    from ipa.pods import WorkspaceError, WorkspaceManager  # here: pods load in ~0.7 s
    from ipa.pods.transfer import export_bundle

    if args.output is None and sys.stdout.isatty():
        print("ipa: a bundle is binary: redirect it (ipa export TASK_ID > task.ipa) or give "
              "-o FILE", file=sys.stderr)
        return 2
    try:
        if args.url:
            data = await anyio.to_thread.run_sync(_download, args)
            bundle = await anyio.to_thread.run_sync(TaskBundle.read, data)
        else:
            async with open_store(settings, create=False) as store:
                workspaces = WorkspaceManager(settings.data_dir / "workspaces")
                bundle, data = await export_bundle(store, workspaces, args.task_id,
                                                   git=not args.no_git)
    except WorkspaceError as e:
        print(f"ipa: {e}", file=sys.stderr)
        return 1
    if args.output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        await anyio.to_thread.run_sync(_write, Path(args.output), data)
    git = "" if bundle.git is None else ", branches " + ", ".join(
        ref.removeprefix("refs/heads/") for ref in bundle.git.refs)
    print(f"exported task {bundle.task_id}: {len(bundle.states)} task(s), {bundle.runs} "
          f"run(s), {bundle.events} event(s){git}; {len(data)} bytes, sha256 {bundle.sha256}",
          file=sys.stderr)
    return 0


async def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from ipa.pods import RepositoryRefused, WorkspaceError  # here: pods load in ~0.7 s

    data = await anyio.to_thread.run_sync(_read, args.file)
    digest = hashlib.sha256(data).hexdigest()
    if args.sha256 is not None and digest != args.sha256:
        raise BundleRefused(BundleRefused.ALTERED, f"the file's SHA-256 is {digest}, not the "
                            f"{args.sha256} given (altered or another file)")
    try:
        if args.url:
            answer = await anyio.to_thread.run_sync(_upload, args.url, args, data)
        else:
            answer = await _import_here(settings, args, data)
    except (WorkspaceError, RepositoryRefused) as e:
        print(f"ipa: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, indent=2))
        return 0
    root = answer["tasks"][0]
    print(f"imported task {answer['task_id']} ({root['title']!r}, {root['status']}): "
          f"{len(answer['tasks'])} task(s), {answer['runs']} run(s), {answer['events']} "
          f"event(s)")
    if answer["branches"]:
        print(f"branches fetched into {answer['repo']}: {', '.join(answer['branches'])}")
    if answer.get("started"):
        print(f"pods started: {', '.join(answer['started'])}")
    return 0


async def _import_here(settings: Settings, args: argparse.Namespace,
                       data: bytes) -> dict[str, Any]:
    """Import on the data dir itself; through its server when one holds its lock."""
    from ipa.pods import RepositoryPolicy
    from ipa.pods.transfer import import_bundle
    from ipa.projections import TaskList

    bundle = await anyio.to_thread.run_sync(TaskBundle.read, data)  # before the store opens
    try:
        async with open_store(settings, create=True, lock="ipa import") as store:
            transferred = await import_bundle(store, bundle, repo=args.repo,
                                              git=not args.no_git,
                                              policy=RepositoryPolicy.configured())
            await TaskList(store).catch_up()
            return transferred.to_json()
    except DataDirInUse as e:
        url = e.url or running_server_url(settings.data_dir)
        if url is None:
            raise
    return await anyio.to_thread.run_sync(_upload, url, args, data)


# Files and HTTP -------------------------------------------------------------------------------


def _read(name: str) -> bytes:
    """The bundle file (at most :data:`MAX_BUNDLE` bytes: one more is refused)."""
    try:
        if name == "-":
            data = sys.stdin.buffer.read(MAX_BUNDLE + 1)
        else:
            with open(name, "rb") as file:
                data = file.read(MAX_BUNDLE + 1)
    except OSError as e:
        raise BundleRefused(BundleRefused.NOT_A_BUNDLE,
                            f"cannot read {name}: {e.strerror or e}") from None
    if len(data) > MAX_BUNDLE:
        raise BundleRefused(BundleRefused.TOO_LARGE, f"{name} is larger than the limit of "
                            f"{MAX_BUNDLE} bytes")
    return data


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (a partial file is never left)."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise BundleRefused(BundleRefused.UNEXPORTABLE,
                            f"cannot write {path}: {e.strerror or e}") from None


def _download(args: argparse.Namespace) -> bytes:
    query = "?git=skip" if args.no_git else ""
    return _call(args.url, args.api_key, "GET", f"/api/tasks/{args.task_id}/export{query}")


def _upload(url: str, args: argparse.Namespace, data: bytes) -> dict[str, Any]:
    query = {"git": "skip"} if args.no_git else {}
    if args.repo:
        query["repo"] = os.path.abspath(os.path.expanduser(args.repo))
    path = "/api/import" + ("?" + urllib.parse.urlencode(query) if query else "")
    return json.loads(_call(url, args.api_key, "POST", path, data))


def _call(url: str, api_key: str | None, method: str, path: str,
          body: bytes | None = None) -> bytes:
    request = urllib.request.Request(url.rstrip("/") + path, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", MEDIA_TYPE)
    if api_key:
        request.add_header("X-API-Key", api_key)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.read()
    except urllib.error.HTTPError as e:
        try:
            error = json.loads(e.read())["error"]
            message = f"{error['message']} [HTTP {e.code} {error['code']}]"
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {e.code} {e.reason}"
        raise ApiCallError(message) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ApiCallError(f"no ipa server at {url} ({reason})") from None
