"""The audit key: a private file in the data dir, made once, or a text from the environment."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from ipa.eventstore import KEY_FILE, AuditKey, AuditKeyError, load_audit_key


def test_a_new_key_file_is_private_and_kept(tmp_path: Path) -> None:
    key = load_audit_key(tmp_path, create=True)

    path = tmp_path / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key is not None and len(path.read_text().strip()) == 64
    assert load_audit_key(tmp_path, create=True) == key
    assert load_audit_key(tmp_path, create=False) == key


def test_without_a_key_file_a_reader_gets_none_and_creates_nothing(tmp_path: Path) -> None:
    assert load_audit_key(tmp_path, create=False) is None
    assert list(tmp_path.iterdir()) == []


def test_a_key_file_others_may_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    path.write_text("k" * 64)
    path.chmod(0o644)

    with pytest.raises(AuditKeyError, match=r"may be read by others \(mode 0644\): chmod 600"):
        load_audit_key(tmp_path, create=True)


def test_the_file_and_the_environment_hold_the_same_key(tmp_path: Path) -> None:
    key = load_audit_key(tmp_path, create=True)
    assert key is not None

    same = AuditKey.from_text((tmp_path / KEY_FILE).read_text())

    assert same.secret == key.secret and same.key_id == key.key_id


def test_a_short_key_is_refused_and_a_key_is_never_shown() -> None:
    with pytest.raises(AuditKeyError, match="too short"):
        AuditKey.from_text("secret")

    key = AuditKey.from_text("s" * 40)

    assert "s" * 40 not in repr(key)
