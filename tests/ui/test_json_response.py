"""The API's JSON answers through orjson (``ui/json_response.py``): the same JSON values as
Starlette's ``JSONResponse``, and the same refusals where orjson gives up."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from starlette.responses import JSONResponse as StarletteJSONResponse

from ipa.ui.json_response import JSONResponse, dumps

VALUES = [
    {"items": [{"id": "a", "attention": None, "node": "n1", "cost_usd": 0.1 + 0.2}],
     "next_cursor": None},
    {"title": "naïve café ✓ 日本", "nested": {"list": [1, 2.5, True, False, None, [], {}]}},
    {"escapes": "quote \" backslash \\ newline \n tab \t control \x01 slash /"},
    {1: "an int key", 2.5: "a float key", None: "a null key"},
    {False: "a bool key"},
    {"big": 2**63 - 1, "small": -(2**63), "tiny": 1e-7, "huge": 1e16, "tuple": (1, 2)},
    {"past 64 bits": 2**70},  # orjson refuses: the standard encoder writes it
    [],
    "text",
]


@pytest.mark.parametrize("value", VALUES)
def test_the_body_holds_the_same_json_as_starlettes(value) -> None:
    ours = JSONResponse(value)
    theirs = StarletteJSONResponse(value)

    assert json.loads(ours.body) == json.loads(theirs.body)
    assert ours.headers["content-type"] == theirs.headers["content-type"]
    assert ours.headers["content-length"] == str(len(ours.body))


@pytest.mark.parametrize("value", [
    {"at": datetime(2026, 1, 1, tzinfo=UTC)},  # orjson would write it: refused as before
    {"lone surrogate": "\ud800"},
])
def test_what_starlette_refuses_is_refused_the_same_way(value) -> None:
    with pytest.raises(Exception) as theirs:
        StarletteJSONResponse(value)
    with pytest.raises(type(theirs.value)):
        dumps(value)
