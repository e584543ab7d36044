"""Markdown as JIRA wiki markup (``pods/sync/wiki.py``): what ipa writes in Markdown reads in
JIRA as it does on GitHub."""

from __future__ import annotations

import pytest

from ipa.pods.sync.wiki import to_wiki


@pytest.mark.parametrize(("markdown", "wiki"), [
    ("# Title", "h1. Title"),
    ("### A *small* title", "h3. A _small_ title"),
    ("**bold**, *italic*, _italic_ and ~~gone~~", "*bold*, _italic_, _italic_ and -gone-"),
    ("run `make {all}`", "run {{make \\{all\\}}}"),
    ("see [the docs](https://x.test/a?b=1)", "see [the docs|https://x.test/a?b=1]"),
    ("<https://x.test>", "[https://x.test]"),
    ("![diagram](https://x.test/d.png)", "!https://x.test/d.png!"),
    ("one\ntwo", "one two"),
    ("one  \ntwo", "one\ntwo"),
    ("---", "----"),
    ("> quoted *text*", "{quote}\nquoted _text_\n{quote}"),
    ("<!-- ipa:task:1 -->\n\nshown", "shown"),
    ("snake_case and re-run stay; a {macro} [link] |bar| !x! *lone", (
        "snake_case and re-run stay; a \\{macro\\} \\[link\\] \\|bar\\| \\!x\\! \\*lone")),
])
def test_inline_and_simple_blocks(markdown: str, wiki: str) -> None:
    assert to_wiki(markdown) == wiki


def test_lists_nest_with_their_marks() -> None:
    markdown = "- a\n- b **B**\n  - nested\n    1. deep\n\n1. one\n2. two\n"

    assert to_wiki(markdown) == "* a\n* b *B*\n** nested\n**# deep\n\n# one\n# two"


def test_code_blocks_keep_their_text_and_known_languages() -> None:
    assert to_wiki('```python\nprint("{x}")\n```') == '{code:python}\nprint("{x}")\n{code}'
    assert to_wiki("```brainfuck\n+.\n```") == "{code}\n+.\n{code}"
    assert to_wiki("    indented *not bold*") == "{code}\nindented *not bold*\n{code}"
    assert to_wiki("```\nsay {code}\n```") == "{noformat}\nsay {code}\n{noformat}"


def test_paragraphs_headings_and_tables() -> None:
    markdown = "## Plan\n\nFirst.\n\nSecond.\n\n| a | b |\n|---|---|\n| 1 | `2` |\n"

    assert to_wiki(markdown) == "h2. Plan\n\nFirst.\n\nSecond.\n\n||a||b||\n|1|{{2}}|"
