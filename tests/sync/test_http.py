"""The REST adapter's answers are storable text: lone surrogates in remote JSON become U+FFFD."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from ipa.pods.sync import SyncError
from ipa.pods.sync.http import RestApi

pytestmark = pytest.mark.anyio

BODY = b'{"title": "bad \\ud800 title", "labels": ["\\udfff"], "\\ud800": "k", "nul": "a\\u0000b"}'


def api(status: int) -> RestApi:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=BODY.replace(b'"title"', b'"message"')
                              if status >= 400 else BODY)

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    return RestApi("github", client, "http://remote.test", {}, lambda: datetime.now(UTC))


async def test_lone_surrogates_in_remote_json_become_replacement_characters() -> None:
    data = await api(200).get("/x")

    assert data == {"title": "bad \ufffd title", "labels": ["\ufffd"], "\ufffd": "k",
                    "nul": "a\x00b"}


async def test_an_error_answer_with_a_lone_surrogate_gives_a_storable_message() -> None:
    with pytest.raises(SyncError) as caught:
        await api(422).send("POST", "/x", {})

    assert "bad \ufffd title" in str(caught.value)
    str(caught.value).encode("utf-8")
