"""The audit key: the secret that keys the hash chain, the manifest and the keyed-from record.

ipa keeps it outside the database, so whoever holds only the database cannot forge what the
audit checks: ``IPA_AUDIT_KEY`` in the environment (read by ``ui/runtime.py``; it wins), else
``<data dir>/audit.key``, created with mode 0600 (64 random hex characters) the first time a
writing ipa starts there. The key is the text itself (UTF-8, surrounding whitespace stripped),
so the file's content can be given as ``IPA_AUDIT_KEY`` on another node.

Every MAC is HMAC-SHA256 in hex; each kind of message starts differently (an event's starts
with its stream id), so one kind's MAC never verifies as another's.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

from .errors import AuditKeyError

KEY_FILE = "audit.key"
MIN_KEY_CHARS = 32


@dataclass(frozen=True)
class AuditKey:
    """A secret to key MACs with (never printed: ``repr`` leaves it out)."""

    secret: bytes = field(repr=False)
    source: str = "IPA_AUDIT_KEY"
    """Where it came from, for messages (an environment variable or a file path)."""
    _keyed: Any = field(init=False, repr=False, compare=False)
    """HMAC-SHA256 with the key taken in: each MAC copies it (a third cheaper than
    ``hmac.digest``, which takes the key in again every time; two MACs at every append)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_keyed", hmac.new(self.secret, digestmod=hashlib.sha256))

    @classmethod
    def from_text(cls, text: str, source: str = "IPA_AUDIT_KEY") -> AuditKey:
        """The key written as ``text``; too short a text is an :class:`AuditKeyError`."""
        text = text.strip()
        if len(text) < MIN_KEY_CHARS:
            raise AuditKeyError(
                f"the audit key in {source} is too short ({len(text)} characters; at least "
                f"{MIN_KEY_CHARS}, e.g. 64 random hex characters)"
            )
        return cls(text.encode(), source)

    def mac(self, *message: bytes) -> str:
        """HMAC-SHA256 of ``message`` (its parts one after the other) in hex (64 characters)."""
        keyed = self._keyed.copy()
        for part in message:
            keyed.update(part)
        return keyed.hexdigest()

    @property
    def key_id(self) -> str:
        """A short fingerprint that tells keys apart without revealing them."""
        return self.mac(b"ipa audit key id")[:16]

    def manifest_mac(self, stream_id: UUID, version: int, head_digest: str) -> str:
        """The MAC of a manifest row: the stream is at ``version``, whose digest is
        ``head_digest``."""
        return self.mac(f"ipa manifest\n{stream_id}\n{version}\n{head_digest}".encode())

    def keyed_from_mac(self, position: int, key_id: str) -> str:
        """The MAC of the keyed-from record: events from global ``position`` on are keyed."""
        return self.mac(f"ipa keyed from\n{position}\n{key_id}".encode())


def load_audit_key(data_dir: Path, *, create: bool) -> AuditKey | None:
    """The key in ``<data_dir>/audit.key``; when there is none, a new one written there if
    ``create`` (mode 0600), else ``None``.

    A key file that others may read, or that cannot be read, is an :class:`AuditKeyError`.
    """
    path = data_dir.expanduser() / KEY_FILE
    if create and not path.exists():
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: use theirs
        except OSError as e:
            raise AuditKeyError(f"cannot create the audit key {path}: {e.strerror or e}") from e
        else:
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_hex(32) + "\n")
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise AuditKeyError(
                f"the audit key {path} may be read by others (mode {stat.S_IMODE(mode):04o}): "
                f"chmod 600 {path}"
            )
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise AuditKeyError(f"cannot read the audit key {path}: {e}") from e
    return AuditKey.from_text(text, str(path))
