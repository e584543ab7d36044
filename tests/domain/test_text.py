"""Text from outside: lone surrogates become U+FFFD; everything else, NUL included, stays."""

from __future__ import annotations

import json

from ipa.domain import clean_text


def test_lone_surrogates_become_the_replacement_character_in_nested_values() -> None:
    parsed = json.loads('{"a\\ud800": ["x\\udfff", {"k": "\\ud800\\ud800"}], "n": 3}')

    cleaned = clean_text(parsed)

    assert cleaned == {"a\ufffd": ["x\ufffd", {"k": "\ufffd\ufffd"}], "n": 3}
    json.dumps(cleaned, ensure_ascii=False).encode("utf-8")  # encodable now


def test_pairs_nul_and_other_text_are_kept_and_clean_values_are_returned_as_they_are() -> None:
    value = {"emoji": json.loads('"\\ud83d\\ude00"'), "nul": "a\x00b", "t": ("é", 1.5, None)}

    assert clean_text(value) is value
    assert value["emoji"] == "\U0001f600"
    assert clean_text("a\x00b") == "a\x00b"
