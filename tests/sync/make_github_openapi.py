"""Writes ``github_openapi.json``: the part of GitHub's OpenAPI description that ipa's GitHub
connector uses, for ``test_openapi_conformance.py`` and the fake GitHub in ``services.py``.

Run by hand when ipa calls another operation or the description moves on::

    npm pack @octokit/openapi   # or: the tarball named by the npm registry
    tar xzf octokit-openapi-*.tgz
    python tests/sync/make_github_openapi.py package

It keeps the operations in ``OPERATIONS`` (their parameters, request bodies and responses) and
the components they refer to, without the prose (descriptions, summaries, documentation
links); the header (``x-source``) names the package, its version and the file it came from.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OPERATIONS = [
    ("get", "/repos/{owner}/{repo}"),
    ("get", "/repos/{owner}/{repo}/pulls"),
    ("post", "/repos/{owner}/{repo}/pulls"),
    ("get", "/repos/{owner}/{repo}/pulls/{pull_number}"),
    ("patch", "/repos/{owner}/{repo}/pulls/{pull_number}"),
    ("get", "/repos/{owner}/{repo}/pulls/{pull_number}/reviews"),
    ("get", "/repos/{owner}/{repo}/pulls/{pull_number}/reviews/{review_id}/comments"),
    ("get", "/repos/{owner}/{repo}/issues/{issue_number}/comments"),
    ("post", "/repos/{owner}/{repo}/issues/{issue_number}/comments"),
    ("patch", "/repos/{owner}/{repo}/issues/comments/{comment_id}"),
]
SOURCE = "generated/api.github.com.json"
PROSE = {"description", "summary", "example", "externalDocs", "tags", "x-github", "x-octokit"}
OUT = Path(__file__).with_name("github_openapi.json")


def main(package: Path) -> None:
    spec = json.loads((package / SOURCE).read_text())
    version = json.loads((package / "package.json").read_text())["version"]
    paths: dict[str, dict[str, Any]] = {}
    for method, path in OPERATIONS:
        paths.setdefault(path, {})[method] = spec["paths"][path][method]
    components: dict[str, dict[str, Any]] = {}
    todo = _refs(paths)
    while todo:
        ref = todo.pop()
        _, _, kind, name = ref.split("/")
        if name in components.get(kind, {}):
            continue
        components.setdefault(kind, {})[name] = spec["components"][kind][name]
        todo |= _refs(spec["components"][kind][name])
    subset = {
        "x-source": {"package": "@octokit/openapi", "version": version, "file": SOURCE,
                     "kept": "the operations ipa calls and what they refer to, without prose"},
        "openapi": spec["openapi"],
        "info": {"title": spec["info"]["title"], "version": spec["info"]["version"]},
        "paths": _plain(paths),
        "components": {kind: dict(sorted(_plain(items).items()))
                       for kind, items in sorted(components.items())},
    }
    OUT.write_text(json.dumps(subset, indent=1, sort_keys=False) + "\n")


def _refs(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {value["$ref"]} if isinstance(value.get("$ref"), str) else set()
        for item in value.values():
            found |= _refs(item)
        return found
    if isinstance(value, list):
        return set().union(*map(_refs, value)) if value else set()
    return set()


DATA = {"value", "default", "enum"}
"""Keys whose values are data (an example's value, a default), kept as they are."""


def _plain(value: Any, names: bool = False) -> Any:
    """``value`` without prose keys; under ``properties`` the keys are names, kept all."""
    if isinstance(value, dict):
        return {k: v if k in DATA and not names else _plain(
                    v, names=(k == "properties" and not names))
                for k, v in value.items() if names or k not in PROSE}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


if __name__ == "__main__":
    main(Path(sys.argv[1]))
