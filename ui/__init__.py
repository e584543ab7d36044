"""Where people and scripts meet ipa: the ``ipa`` command line and the HTTP API.

Nothing else in ipa imports this package.
"""

from typing import Any

__all__ = ["create_app", "main"]


def __getattr__(name: str) -> Any:
    # Loaded when asked for: the `ipa` command imports `ipa.ui.cli` alone, and `ipa task ...`
    # starts without loading the server (about 1.9 s of imports, the agents' SDK among them).
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "main":
        from .cli import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
