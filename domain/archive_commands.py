"""The archive's commands, a person's (see ``archive.py``): never workflow moves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .commands import Command


@dataclass(frozen=True)
class Archive(Command):
    """Put a finished task (completed, failed or cancelled) away: it leaves the default task
    list; its events stay."""

    name: ClassVar[str] = "archive"


@dataclass(frozen=True)
class Unarchive(Command):
    """Bring an archived task back to the default task list."""

    name: ClassVar[str] = "unarchive"


ARCHIVE_COMMANDS: tuple[type[Command], ...] = (Archive, Unarchive)
"""The archive's commands."""
