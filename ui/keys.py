"""API keys as the operator configures them (``IPA_API_KEYS``, ``IPA_API_KEYS_FILE``).

Apart from :mod:`.auth` (which checks them on requests) so that the ``ipa`` command reads them
without loading the server.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class KeysError(ValueError):
    """The configured keys cannot be read (the message says where and why)."""


def parse_keys(text: str, where: str, *, separator: str = ",") -> dict[str, str]:
    """``name:key`` entries into {name: key}; a malformed entry is a :class:`KeysError`."""
    keys: dict[str, str] = {}
    entries = text.split(separator) if separator != "\n" else text.splitlines()
    for number, raw in enumerate(entries, start=1):
        entry = raw.strip()
        if not entry or entry.startswith("#"):
            continue
        name, colon, key = entry.partition(":")
        name, key = name.strip(), key.strip()
        if not colon or not _NAME.fullmatch(name) or len(key) < 8:
            raise KeysError(f"{where}: entry {number} is not name:key (a name of letters, "
                            "digits, '.', '_', '@', '-' and a key of at least 8 characters)")
        if name in keys:
            raise KeysError(f"{where}: the name {name!r} appears twice")
        keys[name] = key
    return keys


def load_keys(keys_file: str | None = None,
              environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The configured keys: ``keys_file`` (or ``IPA_API_KEYS_FILE``) and ``IPA_API_KEYS``."""
    environ = os.environ if environ is None else environ
    keys: dict[str, str] = {}
    path = keys_file or environ.get("IPA_API_KEYS_FILE")
    if path:
        try:
            text = Path(path).expanduser().read_text()
        except OSError as e:
            raise KeysError(f"cannot read the API keys file {path}: {e.strerror}") from None
        keys.update(parse_keys(text, f"API keys file {path}", separator="\n"))
    if environ.get("IPA_API_KEYS"):
        for name, key in parse_keys(environ["IPA_API_KEYS"], "IPA_API_KEYS").items():
            if name in keys:
                raise KeysError(f"the API key name {name!r} is in both IPA_API_KEYS and the "
                                "keys file")
            keys[name] = key
    return keys
