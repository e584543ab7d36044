"""The contract of a backlog: how an analyst's answer becomes items, and what makes items valid.

The product analyst's final answer (a custom agent's too) holds exactly one fenced ```json
block with ``{"items": [...]}``; each item is an object with

- ``id``: a short identifier (letters, digits, ``-``, ``_``, ``.``; at most 64, starting and
  ending with a letter or digit: it will name the item's child task and branch), unique in the
  backlog;
- ``title`` (one line, at most 200 characters: the child task's title) and ``description``
  (what the child must do), both non-blank text;
- ``kind``: the agent type that does it (one of the catalog's kinds);
- ``phase``: the work phase it runs in (one of those ipa passes in, in workflow order);
- ``priority``: a whole number, higher first;
- ``depends_on`` (optional, ``[]``): ids of the items that must finish first, in the same or an
  earlier phase, without cycles;
- ``acceptance`` (optional, ``[]``): the criteria its work is judged by, non-blank text.

Unknown fields are refused (a ``dependencies`` for ``depends_on`` would otherwise drop every
dependency unseen). ``parse_backlog`` finds the block line by line, parses it (at most
``MAX_BLOCK_CHARS`` characters, nested at most ``MAX_DEPTH`` deep; lone surrogates become
U+FFFD, NUL is kept as data) and checks every item. However malformed the answer, it raises
only ``BacklogInvalid``, which names every item and its problem, all of them, so the agent can
fix them all on its next attempt. ``backlog.py`` checks a person's edits with the same rules.
"""

from __future__ import annotations

import difflib
import json
import re
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from typing import Any

from .backlog_items import BacklogItem
from .errors import InvalidCommand
from .jobs import dependency_cycle
from .text import clean_text

MAX_BLOCK_CHARS = 1_000_000
"""The longest ```json block read, in characters (a backlog of 500 long items fits)."""

MAX_DEPTH = 32
"""How deep the JSON may nest (the contract needs 4); deeper is refused before parsing."""

MAX_ITEMS = 500
"""The most items a backlog may hold."""

MAX_SHOWN = 20
"""The most problems a ``BacklogInvalid`` message lists (``problems`` holds them all)."""

ID_MAX_LENGTH = 64
TITLE_MAX_LENGTH = 200  # an item's title becomes its child task's title: CreateTask's limit
PRIORITY_LIMIT = 1_000_000

FIELDS = ("id", "title", "description", "kind", "phase", "priority", "depends_on", "acceptance")
"""An item's fields in the contract; all but ``depends_on`` and ``acceptance`` are required."""

_REQUIRED = FIELDS[:6]
_SLUG = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?")
# A string (to its end when it is never closed, so each character is read once) or a bracket.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)


class BacklogInvalid(InvalidCommand):
    """A backlog breaks the contract: an analyst's answer, or what a person's edit would leave.

    ``problems`` names each item (by id, or by position when it has none) and what is wrong
    with it, all of them; ``hints`` says what is right (the known kinds, the phases). The
    message lists the first ``MAX_SHOWN`` problems, then the hints: it is what the agent reads
    on its next attempt and what the API answers (400).
    """

    def __init__(self, problems: Sequence[str], hints: Sequence[str] = ()) -> None:
        self.problems = tuple(problems)
        self.hints = tuple(hints)
        shown = [f"- {problem}" for problem in self.problems[:MAX_SHOWN]]
        if len(self.problems) > MAX_SHOWN:
            shown.append(f"- ... and {len(self.problems) - MAX_SHOWN} more")
        count = "1 problem" if len(self.problems) == 1 else f"{len(self.problems)} problems"
        super().__init__("\n".join([f"the backlog is not valid ({count}):", *shown, *self.hints]))


def parse_backlog(
    answer: str, *, kinds: Collection[str], phases: Sequence[str]
) -> tuple[BacklogItem, ...]:
    """The items of the backlog in ``answer`` (an agent's final answer), in its order, each
    ``proposed``.

    ``kinds`` are the agent types an item may name (the catalog's); ``phases`` the work phases
    items may run in, in workflow order (``backlog_phases`` gives the domain's). Raises
    ``BacklogInvalid`` naming every problem, and nothing else, whatever ``answer`` holds.
    """
    data = _load(_json_block(answer))
    if not isinstance(data, dict):
        raise BacklogInvalid([f'the JSON must be an object {{"items": [...]}}, not {_a(data)}'])
    if "items" not in data:
        keys = ", ".join(_show(str(key)) for key in list(data)[:10]) or "none"
        raise BacklogInvalid([f'the JSON object has no "items" (its keys: {keys})'])
    if not isinstance(data["items"], list):
        raise BacklogInvalid([f'"items" must be a list of items, not {_a(data["items"])}'])
    return check_items(data["items"], kinds=kinds, phases=phases, order=phases)


def _json_block(answer: object) -> str:
    """The text of the one fenced ```json block in ``answer``, found line by line (as Markdown
    does: a fence of three or more backticks or tildes, closed by a fence as long of the same
    character), so that no answer costs more than one pass."""
    if not isinstance(answer, str):
        raise BacklogInvalid([f"the answer must be text, not {type(answer).__name__}"])
    lines = answer.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks: list[tuple[int, int]] = []  # (first line, end) of each json block, 0-based
    fence, is_json, start = "", False, 0
    for number, line in enumerate(lines):
        found = _fence(line)
        if not fence:
            if found is not None:
                (fence, info), start = found, number
                is_json = info.split(maxsplit=1)[:1] == ["json"]
        elif found is not None and found[0][0] == fence[0] and len(found[0]) >= len(fence) \
                and not found[1]:
            if is_json:
                blocks.append((start + 1, number))
            fence = ""
    if fence and is_json:
        raise BacklogInvalid([f"the ```json block opened on line {start + 1} is never closed"])
    if not blocks:
        raise BacklogInvalid(['the answer holds no fenced ```json block; end it with one, '
                              'holding {"items": [...]}'])
    if len(blocks) > 1:
        where = ", ".join(str(first) for first, _ in blocks[:10])
        raise BacklogInvalid([f"the answer holds {len(blocks)} fenced ```json blocks (opened on "
                              f"lines {where}); it must hold exactly one, with the whole backlog"])
    first, end = blocks[0]
    return "\n".join(lines[first:end])


def _fence(line: str) -> tuple[str, str] | None:
    """The fence a line opens or closes and its info string (``json``, lower-cased), or
    ``None``. Plain string operations: a regex would backtrack on a long line of spaces."""
    stripped = line.strip(" \t")
    mark = stripped[:1]
    if mark not in ("`", "~"):
        return None
    info = stripped.lstrip(mark)
    fence = stripped[: len(stripped) - len(info)]
    if len(fence) < 3 or (mark == "`" and "`" in info):
        return None
    return fence, info.strip().lower()


def _load(block: str) -> Any:
    """The JSON value of ``block``, bounded in size and depth, its strings made storable."""
    if len(block) > MAX_BLOCK_CHARS:
        raise BacklogInvalid([f"the ```json block is {len(block):,} characters long; "
                              f"at most {MAX_BLOCK_CHARS:,} are read"])
    # Counted before parsing: the json module recurses once per level and would overflow.
    depth = 0
    for token in _TOKEN.finditer(block):
        if token[0] in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise BacklogInvalid([f"the JSON nests deeper than {MAX_DEPTH} levels"])
        elif token[0] in "]}":
            depth -= 1
    try:
        data = json.loads(block, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise BacklogInvalid([f"the ```json block is not valid JSON: {e.msg} (line {e.lineno}, "
                              f"column {e.colno} of the block)"]) from None
    except ValueError as e:  # a number of more digits than int() converts, NaN, Infinity
        raise BacklogInvalid([f"the ```json block is not valid JSON: {str(e)[:120]}"]) from None
    return clean_text(data)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


NO_ITEMS = "the backlog has no items"
"""The problem of an empty backlog (a perpetual cycle may have nothing to do)."""


def check_items(
    raw_items: Sequence[Any],
    *,
    kinds: Collection[str] | None,
    phases: Collection[str],
    order: Sequence[str],
) -> tuple[BacklogItem, ...]:
    """``raw_items`` (JSON objects) as items, checked one by one and then together.

    ``kinds`` ``None`` checks a kind's form only; ``phases`` are those items may run in,
    ``order`` every phase in workflow order (a dependency must not come later).
    """
    if not raw_items:
        raise BacklogInvalid([NO_ITEMS])
    if len(raw_items) > MAX_ITEMS:
        raise BacklogInvalid([f"the backlog has {len(raw_items)} items; at most {MAX_ITEMS}"])
    problems: list[str] = []
    hints: dict[str, None] = {}  # an ordered set
    items: list[BacklogItem] = []
    unreadable: list[str] = []  # ids of items with other problems: not unknown to the others
    for position, raw in enumerate(raw_items, 1):
        item_id, item = read_item(raw, f"item {position}", kinds, phases, problems, hints)
        if item is not None:
            items.append(item)
        elif item_id is not None:
            unreadable.append(item_id)
    problems += graph_problems(items, order, also_known=unreadable)
    if problems:
        raise BacklogInvalid(problems, list(hints))
    return tuple(items)


def read_item(
    raw: Any,
    label: str,
    kinds: Collection[str] | None,
    phases: Collection[str],
    problems: list[str],
    hints: dict[str, None],
) -> tuple[str | None, BacklogItem | None]:
    """``(id, item)``: the item ``raw`` describes, or ``None`` once each of its problems is in
    ``problems`` (the id too is ``None`` unless valid). ``label`` names an item without an id;
    ``hints`` collects what would be right."""
    if not isinstance(raw, dict):
        problems.append(f"{label}: must be an object with the fields {', '.join(FIELDS)}, "
                        f"not {_a(raw)}")
        return None, None
    item_id = raw.get("id")
    valid_id = _is_slug(item_id)
    if valid_id:
        label = f"item {item_id!r}"
    found: list[str] = []
    problem = found.append
    unknown = [_show(str(key)) for key in raw if key not in FIELDS]
    if unknown:
        problem(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown[:10])}")
        hints[f"an item's fields: {', '.join(FIELDS)}"] = None
    missing = [name for name in _REQUIRED if name not in raw]
    if missing:
        problem(f"has no {', '.join(missing)}")
    if "id" in raw and not valid_id:
        problem(f"id {_describe(item_id)} is not a short identifier (letters, digits, '-', '_', "
                f"'.'; at most {ID_MAX_LENGTH}, starting and ending with a letter or digit)")
    title = _text(raw, "title", problem, one_line=True)
    description = _text(raw, "description", problem)
    kind = _kind(raw, kinds, problem, hints)
    phase = raw.get("phase")
    if "phase" in raw and (not isinstance(phase, str) or phase not in phases):
        problem(f"phase {_describe(phase)} is not a phase items run in")
        hints["phases items run in: " + (", ".join(phases) or "none")] = None
    priority = raw.get("priority")
    if "priority" in raw and not _whole(priority):
        problem(f"priority must be a whole number from -{PRIORITY_LIMIT:,} to "
                f"{PRIORITY_LIMIT:,}, not {_describe(priority)}")
    depends_on = _ids(raw.get("depends_on", []), problem)
    if valid_id and item_id in depends_on:
        problem("depends on itself")
    acceptance = _texts(raw.get("acceptance", []), problem)
    problems += [f"{label}: {text}" for text in found]
    if found:
        return (item_id if valid_id else None), None
    return item_id, BacklogItem(item_id, title, description, kind, phase, priority,
                                depends_on, acceptance)


def _text(raw: dict[str, Any], name: str, problem: Callable[[str], None], *,
          one_line: bool = False) -> str:
    value = raw.get(name, "")
    if not isinstance(value, str):
        problem(f"{name} must be text, not {_a(value)}")
    elif name in raw and not value.strip():
        problem(f"{name} is blank")
    elif one_line and ("\n" in value or "\r" in value):
        problem(f"{name} must be a single line")
    elif one_line and len(value.strip()) > TITLE_MAX_LENGTH:
        problem(f"{name} is {len(value.strip())} characters long; at most {TITLE_MAX_LENGTH}")
    else:
        return value.strip() if one_line else value
    return ""


def _kind(raw: dict[str, Any], kinds: Collection[str] | None,
          problem: Callable[[str], None], hints: dict[str, None]) -> str:
    kind = raw.get("kind", "")
    if "kind" not in raw:
        return ""
    if kinds is None:
        if not _is_slug(kind):
            problem(f"kind {_describe(kind)} is not the name of an agent type")
        return kind if isinstance(kind, str) else ""
    if isinstance(kind, str) and kind in kinds:
        return kind
    close = difflib.get_close_matches(kind, sorted(kinds), n=3) if isinstance(kind, str) else []
    guess = f"; did you mean {', '.join(close)}?" if close else ""
    problem(f"kind {_describe(kind)} is not a known agent type{guess}")
    hints["known kinds: " + (", ".join(sorted(kinds)) or "none")] = None
    return ""


def _ids(value: Any, problem: Callable[[str], None]) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        problem(f"depends_on must be a list of item ids, not {_a(value)}")
        return ()
    bad = [_describe(v) for v in value if not _is_slug(v)]
    if bad:
        problem(f"depends_on holds {', '.join(bad[:5])}, not item ids")
        return ()
    return tuple(dict.fromkeys(value))


def _texts(value: Any, problem: Callable[[str], None]) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        problem(f"acceptance must be a list of criteria (text), not {_a(value)}")
        return ()
    if not all(isinstance(v, str) and v.strip() for v in value):
        problem("acceptance must hold non-blank text only")
        return ()
    return tuple(value)


def graph_problems(
    items: Sequence[BacklogItem],
    order: Sequence[str],
    *,
    also_known: Collection[str] = (),
    dropped: Collection[str] = (),
) -> list[str]:
    """What is wrong with ``items`` together: an id used twice, a dependency that is unknown,
    dropped or in a later phase (it could never finish first), cycles (each one named).
    ``also_known`` are ids of items left out for problems of their own."""
    problems = [
        f"item id {item_id!r} is used by {count} items"
        for item_id, count in Counter([*(item.id for item in items), *also_known]).items()
        if count > 1
    ]
    by_id: dict[str, BacklogItem] = {}
    for item in items:
        by_id.setdefault(item.id, item)
    rank = {phase: number for number, phase in enumerate(order)}
    for item in by_id.values():
        for dependency in item.depends_on:
            needed = by_id.get(dependency)
            if dependency in dropped:
                problems.append(f"item {item.id!r} depends on {dependency!r}, which was dropped")
            elif needed is None and dependency not in also_known:
                problems.append(f"item {item.id!r} depends on {dependency!r}, which is not an "
                                "item of the backlog")
            elif needed is not None and rank.get(needed.phase, 0) > rank.get(item.phase, 0):
                problems.append(f"item {item.id!r} ({item.phase}) depends on {dependency!r} of "
                                f"the later phase {needed.phase}; it could never start")
    # Each cycle found is reported and its items taken out, so the next search finds another.
    graph = {item.id: [d for d in item.depends_on if d in by_id and d != item.id]
             for item in by_id.values()}
    while (cycle := dependency_cycle(graph)) is not None:
        problems.append(f"items {' → '.join(map(repr, cycle))} depend on each other in a cycle")
        for item_id in cycle:
            graph.pop(item_id, None)
    return problems


def _is_slug(value: object) -> bool:
    return isinstance(value, str) and bool(_SLUG.fullmatch(value)) and ".." not in value


def _whole(value: object) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)
            and -PRIORITY_LIMIT <= value <= PRIORITY_LIMIT)


def _a(value: object) -> str:
    """What JSON calls the type of ``value``, with its article."""
    if isinstance(value, bool):
        return "true or false"
    for types, name in ((dict, "an object"), (list | tuple, "a list"), (str, "text"),
                        (int | float, "a number"), (type(None), "null")):
        if isinstance(value, types):
            return name
    return type(value).__name__


def _show(value: str, limit: int = 60) -> str:
    """``value`` quoted, cut short: an agent's text may be as long as the block."""
    return repr(value if len(value) <= limit else value[: limit - 3] + "...")


def _describe(value: object) -> str:
    return _show(value) if isinstance(value, str) else _a(value)
