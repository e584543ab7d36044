"""Markdown (CommonMark, with GitHub's tables and strikethrough) as JIRA wiki markup, which
JIRA's REST v2 renders in comments and descriptions: ipa writes Markdown, JIRA would show
its ``**`` and backticks as they are.

Built on markdown-it-py, the parser ipa's pages already use, rather than a converter package:
the ones on PyPI are unmaintained or one-way (JIRA to Markdown). What maps:

============================  ====================================
Markdown                      wiki markup
============================  ====================================
``# Title`` … ``######``      ``h1. Title`` … ``h6.``
``**bold**``, ``*it*``        ``*bold*``, ``_it_``
``~~gone~~``                  ``-gone-``
```code```                    ``{{code}}``
fenced / indented code        ``{code:lang}`` … ``{code}`` (``{noformat}`` for other text)
``[text](url)``, ``<url>``    ``[text|url]``, ``[url]``
``![alt](src)``               ``!src!``
``- item`` / ``1. item``      ``* item`` / ``# item`` (``**``, ``#*`` … nested)
``> quote``                   ``{quote}`` … ``{quote}``
``---``                       ``----``
tables                        ``||head||`` / ``|cell|``
============================  ====================================

Text that wiki markup would read as formatting (``*``, ``_``, ``{``, ``[`` …) is escaped with
a backslash; HTML comments (the hidden markers ipa puts in GitHub comments) are dropped, other
HTML is kept as text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from markdown_it import MarkdownIt
from markdown_it.token import Token

_PARSER = MarkdownIt("commonmark").enable(["table", "strikethrough"])

_SPECIAL = re.compile(r"[{}\[\]|!]|(?<!\w)[*_+^~-]|[*_+^~-](?!\w)")
"""What wiki markup would read as formatting: braces (macros), brackets (links), bars, ``!``
(images) anywhere; ``*_+^~-`` where they can open or close a run (not inside a word)."""

_LANGUAGES = frozenset({
    "actionscript", "ada", "applescript", "bash", "c", "c#", "c++", "cpp", "css", "erlang",
    "go", "groovy", "haskell", "html", "java", "javascript", "js", "json", "lua", "nyan",
    "objc", "perl", "php", "python", "r", "rainbow", "ruby", "scala", "sh", "sql", "swift",
    "visualbasic", "xml", "yaml",
})
"""The languages JIRA's ``{code}`` macro knows; another one would be an error in the page."""

_INLINE_MARKS = {"strong": "*", "em": "_", "s": "-"}


def to_wiki(markdown: str) -> str:
    """``markdown`` as JIRA wiki markup (see the module docstring for what maps to what)."""
    return _Writer().blocks(_PARSER.parse(markdown)).strip("\n")


class _Writer:
    """Walks markdown-it's block tokens; ``bullets`` is the marks of the list items it is in."""

    def __init__(self) -> None:
        self.bullets = ""

    def blocks(self, tokens: Sequence[Token]) -> str:
        out: list[str] = []
        i = 0
        while i < len(tokens):
            token = tokens[i]
            kind = token.type
            if kind == "heading_open":
                out.append(f"{token.tag}. {inline(tokens[i + 1])}\n\n")
                i += 3
            elif kind == "paragraph_open":
                # In a list an empty line would end it: an item's lines follow one another.
                out.append(inline(tokens[i + 1]) + ("\n" if self.bullets else "\n\n"))
                i += 3
            elif kind in ("bullet_list_open", "ordered_list_open"):
                close = _closing(tokens, i)
                out.append(self.items(tokens[i + 1:close],
                                      "*" if kind == "bullet_list_open" else "#"))
                out.append("" if self.bullets else "\n")
                i = close + 1
            elif kind == "blockquote_open":
                close = _closing(tokens, i)
                inner = _Writer().blocks(tokens[i + 1:close]).strip("\n")
                out.append(f"{{quote}}\n{inner}\n{{quote}}\n\n")
                i = close + 1
            elif kind == "table_open":
                close = _closing(tokens, i)
                out.append(_table(tokens[i + 1:close]) + "\n")
                i = close + 1
            else:
                if kind in ("fence", "code_block"):
                    out.append(_code(token.content, token.info.strip().split(" ")[0].lower()))
                elif kind == "hr":
                    out.append("----\n\n")
                elif kind == "html_block" and not token.content.lstrip().startswith("<!--"):
                    out.append(_escape(token.content.strip()) + "\n\n")
                i += 1
        return "".join(out)

    def items(self, tokens: Sequence[Token], mark: str) -> str:
        """The items of one list (the tokens between its open and close): each item's first
        line after the marks of every level (``*``, ``**``, ``#*`` …)."""
        outer, self.bullets = self.bullets, self.bullets + mark
        out: list[str] = []
        i = 0
        while i < len(tokens):  # list_item_open … list_item_close, one after another
            close = _closing(tokens, i)
            item = tokens[i + 1:close]
            body = self.blocks(item)
            body = body if body.endswith("\n") else body + "\n"
            nested_first = bool(item) and item[0].type in ("bullet_list_open",
                                                           "ordered_list_open")
            out.append(body if nested_first else f"{self.bullets} {body}")
            i = close + 1
        self.bullets = outer
        return "".join(out)


def inline(token: Token) -> str:
    """The wiki markup of one inline token (a paragraph's, a heading's or a cell's text)."""
    out: list[str] = []
    links: list[tuple[int, str]] = []  # where each open link's text starts, and its href
    for child in token.children or []:
        kind = child.type
        if kind == "text":
            out.append(_escape(child.content))
        elif kind.endswith("_open") and kind.removesuffix("_open") in _INLINE_MARKS:
            out.append(_INLINE_MARKS[kind.removesuffix("_open")])
        elif kind.endswith("_close") and kind.removesuffix("_close") in _INLINE_MARKS:
            out.append(_INLINE_MARKS[kind.removesuffix("_close")])
        elif kind == "code_inline":
            out.append("{{" + re.sub(r"([{}])", r"\\\1", child.content) + "}}")
        elif kind == "link_open":
            links.append((len(out), str(child.attrs.get("href", ""))))
        elif kind == "link_close" and links:
            start, href = links.pop()
            text = "".join(out[start:])
            bare = text.replace("\\", "") in (href, href.removeprefix("mailto:"))
            out[start:] = [f"[{href}]" if bare else f"[{text}|{href}]"]
        elif kind == "image":
            out.append(f"!{child.attrs.get('src', '')}!")
        elif kind == "softbreak":
            out.append(" ")  # Markdown joins the lines; in wiki markup a newline breaks
        elif kind == "hardbreak":
            out.append("\n")
        elif kind == "html_inline" and not child.content.startswith("<!--"):
            out.append(_escape(child.content))
    return "".join(out)


def _code(content: str, language: str) -> str:
    body = content if content.endswith("\n") else content + "\n"
    if "{code" in body:  # it would end the macro early
        return f"{{noformat}}\n{body}{{noformat}}\n\n"
    macro = f"code:{language}" if language in _LANGUAGES else "code"
    return f"{{{macro}}}\n{body}{{code}}\n\n"


def _table(tokens: Sequence[Token]) -> str:
    """A GitHub table: its first row (the header) with ``||``, the others with ``|``."""
    rows: list[str] = []
    cells: list[str] = []
    for token in tokens:
        if token.type == "tr_open":
            cells = []
        elif token.type == "inline":
            cells.append(inline(token))
        elif token.type == "tr_close":
            bar = "|" if rows else "||"
            rows.append(bar + bar.join(cells) + bar)
    return "\n".join(rows) + "\n"


def _closing(tokens: Sequence[Token], start: int) -> int:
    """The index of the token that closes ``tokens[start]`` (the same nesting level)."""
    level = tokens[start].level
    for i in range(start + 1, len(tokens)):
        if tokens[i].nesting == -1 and tokens[i].level == level:
            return i
    return len(tokens) - 1


def _escape(text: str) -> str:
    return _SPECIAL.sub(lambda m: "\\" + m.group(0), text)
