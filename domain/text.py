"""Text from outside made storable: lone surrogates become U+FFFD.

JSON can spell a UTF-16 surrogate on its own (``"\\ud800"``), and Python's ``json`` module turns
it into a ``str`` that no UTF-8 encoder accepts: PostgreSQL, the event codec and every HTTP
response would fail on it. Whatever an agent, a remote API or another program sends is
cleaned once, where it enters ipa, so the rest never meets one. A surrogate *pair* in JSON
(``"\\ud83d\\ude00"``) is decoded by ``json`` into its one character and is untouched.

NUL and every other code point are data and are kept as they are.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["REPLACEMENT", "clean_text"]

REPLACEMENT = "\ufffd"
"""What a lone surrogate becomes."""

_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(value: Any) -> Any:
    """``value`` with every lone surrogate in its strings replaced by U+FFFD: a ``str``, or the
    strings (keys too) of nested lists, tuples and dicts; anything else is returned as it is.
    Values without a surrogate come back unchanged (the same objects)."""
    if isinstance(value, str):
        return _SURROGATE.sub(REPLACEMENT, value) if _SURROGATE.search(value) else value
    if isinstance(value, dict):
        pairs = [(clean_text(k), clean_text(v)) for k, v in value.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(pairs, value.items(), strict=True)):
            return value
        return dict(pairs)
    if isinstance(value, list | tuple):
        items = [clean_text(item) for item in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return items if isinstance(value, list) else tuple(items)
    return value
