"""Where people and scripts meet ipa: the ``ipa`` command line and the HTTP API.

Nothing else in ipa imports this package.
"""

from .app import create_app
from .cli import main

__all__ = ["create_app", "main"]
