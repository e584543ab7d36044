"""No credentials at rest: a URL a task keeps (its ``repo``, a git remote) must not carry them.

Events are kept forever and copied into snapshots, the read model and every API view, so a
token inside a URL would be readable by anyone who can read the task. Such a URL is refused
(:class:`~ipa.domain.errors.CredentialsInUrl`) with the URL stripped of its credentials and a
pointer to where tokens belong (the secrets file, ``IPA_SECRETS_FILE``, or the server's
environment). Refused:

- any user part in an ``http(s)://`` URL (``https://TOKEN@github.com/...`` is a common way to
  pass a token; git asks for a password otherwise, which ipa cannot answer anyway);
- a password in any URL (``scheme://user:password@host``, ``user:password@host:path``);
- a query parameter named like a secret (``?private_token=...``, ``access_token``, ``key``...).

A user name alone stays allowed for ssh (``ssh://git@host/x``, ``git@host:x``): it is not a
secret.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, urlsplit

from .errors import CredentialsInUrl

__all__ = ["refuse_credentials"]

_HTTP = frozenset({"http", "https", "ftp", "ftps"})
_SECRET_PARAMETER = re.compile(
    r"(?i)[?&;][^=&;#]*(token|passw|secret|key|auth|signature|credential)[^=&;#]*="
)
# scp-like ``user[:password]@host:path`` (no scheme): the user part ends at the first '@'.
_SCP_USER = re.compile(r"(?P<user>[^/@]*)@[^/@:]+:")


def refuse_credentials(url: str, field: str) -> None:
    """Raise :class:`CredentialsInUrl` when ``url`` holds credentials (see the module doc)."""
    what, bare = _credentials(url)
    if what is not None:
        raise CredentialsInUrl(field, bare, what)


def _credentials(url: str) -> tuple[str | None, str]:
    """(what kind of credentials ``url`` holds, or None; the URL without them)."""
    if "://" in url:
        try:
            parts = urlsplit(url)
        except ValueError:  # e.g. an unbalanced '[' in the host: not a URL ipa can use anyway
            return None, url
        user_info, at, host = parts.netloc.rpartition("@")
        if at:
            bare = _without_user(parts, host)
            if ":" in user_info:
                return "a password in the URL", bare
            if parts.scheme.lower() in _HTTP:
                return "a user or token in the URL", bare
        if parts.query and _SECRET_PARAMETER.search("?" + parts.query):
            return "a secret in the query string", parts._replace(query="", fragment="").geturl()
        return None, url
    match = _SCP_USER.match(url)
    if match is not None and ":" in match.group("user"):
        user = match.group("user").partition(":")[0]
        return "a password in the URL", f"{user}@{url[match.end('user') + 1:]}"
    return None, url


def _without_user(parts: SplitResult, host: str) -> str:
    return parts._replace(netloc=host, query="", fragment="").geturl()
