"""The sync engine's process-wide settings: where the outside systems are, the credentials to
reach them, and the timings of batching, polling and retries.

Credentials come from the environment or from a secrets file (``IPA_SECRETS_FILE``: lines of
``NAME=value``, or one JSON object), never from a task: they are not in any event, and the
settings' ``repr`` leaves them out.

- ``IPA_GITHUB_TOKEN``: GitHub token (sent as Bearer); none by default.
- ``IPA_GITHUB_URL``: GitHub's REST base URL (Enterprise: ``https://HOST/api/v3``);
  ``https://api.github.com`` by default.
- ``IPA_GITHUB_GIT_URL``: where ``owner/name.git`` is pushed when a task names no remote;
  derived from ``IPA_GITHUB_URL`` by default.
- ``IPA_JIRA_URL``, ``IPA_JIRA_TOKEN`` (Bearer; Basic with ``IPA_JIRA_USER``, e.g. the e-mail
  on JIRA Cloud).
- ``IPA_SYNC_BATCH_WINDOW`` (seconds changes are gathered into one update, default 1) and
  ``IPA_SYNC_POLL_INTERVAL`` (seconds between polls, default 60).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class SettingsError(Exception):
    """The secrets file or a variable cannot be read; the message says which and why."""


@dataclass(frozen=True)
class SyncSettings:
    """What every pod's sync engine shares (see the module docstring)."""

    github_token: str | None = field(default=None, repr=False)
    github_url: str = "https://api.github.com"
    github_git_url: str | None = None
    jira_url: str | None = None
    jira_token: str | None = field(default=None, repr=False)
    jira_user: str | None = None
    batch_window: float = 1.0
    poll_interval: float = 60.0
    request_timeout: float = 10.0
    push_timeout: float = 120.0
    retry_base: float = 1.0
    retry_cap: float = 300.0
    max_attempts: int = 8
    alert_after: int = 3
    rate_limit_wait: float = 60.0
    """A rate limit that names no wait: GitHub asks for at least a minute, more each time."""
    rate_limit_cap: float = 3600.0

    @property
    def git_url(self) -> str:
        """The base URL of GitHub's git remotes: ``https://github.com`` for github.com, the
        API's host for Enterprise (``https://HOST/api/v3`` → ``https://HOST``)."""
        if self.github_git_url:
            return self.github_git_url.rstrip("/")
        url = self.github_url.rstrip("/")
        if url == "https://api.github.com":
            return "https://github.com"
        return url.removesuffix("/api/v3")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> SyncSettings:
        """Settings from ``IPA_*`` variables, over the secrets file named by
        ``IPA_SECRETS_FILE`` (a variable wins over the file)."""
        environ = os.environ if environ is None else environ
        values: dict[str, str] = {}
        secrets = environ.get("IPA_SECRETS_FILE")
        if secrets:
            values.update(_read_secrets(Path(secrets).expanduser()))
        values.update({k: v for k, v in environ.items() if k.startswith("IPA_")})

        def number(name: str, default: float) -> float:
            raw = values.get(name)
            if raw is None or raw == "":
                return default
            try:
                return float(raw)
            except ValueError:
                raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None

        return cls(
            github_token=values.get("IPA_GITHUB_TOKEN") or None,
            github_url=values.get("IPA_GITHUB_URL") or "https://api.github.com",
            github_git_url=values.get("IPA_GITHUB_GIT_URL") or None,
            jira_url=values.get("IPA_JIRA_URL") or None,
            jira_token=values.get("IPA_JIRA_TOKEN") or None,
            jira_user=values.get("IPA_JIRA_USER") or None,
            batch_window=number("IPA_SYNC_BATCH_WINDOW", 1.0),
            poll_interval=number("IPA_SYNC_POLL_INTERVAL", 60.0),
        )


def _read_secrets(path: Path) -> dict[str, str]:
    try:
        content = path.read_text()
    except OSError as e:
        raise SettingsError(f"secrets file {path}: {e.strerror or e}") from e
    if content.lstrip().startswith("{"):
        try:
            data = json.loads(content)
        except json.JSONDecodeError as e:
            raise SettingsError(f"secrets file {path}: not valid JSON ({e})") from None
        return {str(k): str(v) for k, v in data.items()}
    values = {}
    for number, line in enumerate(content.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise SettingsError(f"secrets file {path}, line {number}: expected NAME=value")
        values[name.strip()] = value.strip().strip('"').strip("'")
    return values
