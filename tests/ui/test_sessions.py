"""Login sessions (random tokens that expire and that logout revokes) and the throttle on wrong
keys, against a real uvicorn on a real socket."""

from __future__ import annotations

import httpx
import pytest

from ipa.eventstore import EventStore
from ipa.ui.guard import GuardPolicy
from ipa.ui.sessions import Sessions, Throttle

from .live import live_server

pytestmark = pytest.mark.anyio

KEYS = {"alice": "alice-secret-key", "ci": "ci-secret-key-1"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


async def login(client: httpx.AsyncClient, key: str = KEYS["alice"]) -> str:
    response = await client.post("/login", json={"key": key})
    assert response.status_code == 200, response.text
    return response.cookies["ipa_session"]


def with_cookie(url: str, token: str) -> httpx.AsyncClient:
    """A client that sends ``token`` as the session cookie and keeps no cookie jar of its own."""
    return httpx.AsyncClient(base_url=url, timeout=20, headers={"cookie": f"ipa_session={token}"})


async def test_logout_revokes_the_session(store: EventStore, tmp_path) -> None:
    async with live_server(store, tmp_path, api_keys=KEYS) as live:
        token = await login(live.client)
        async with with_cookie(live.url, token) as browser:
            before = await browser.get("/api/tasks")
            logout = await browser.post("/logout")
            after = await browser.get("/api/tasks")
            again = await browser.post("/logout")
        other = await login(live.client, KEYS["ci"])
        async with with_cookie(live.url, other) as second:
            untouched = await second.get("/api/tasks")

    assert before.status_code == 200
    assert logout.json() == {"logged_out": True, "session_revoked": True}
    assert "ipa_session=" in logout.headers["set-cookie"]
    assert_error(after, 401, "unauthorized")
    assert again.json()["session_revoked"] is False
    assert untouched.status_code == 200


async def test_an_expired_session_is_refused(store: EventStore, tmp_path) -> None:
    clock = Clock()
    sessions = Sessions(ttl=3600, clock=clock)
    async with live_server(store, tmp_path, api_keys=KEYS, sessions=sessions) as live:
        token = await login(live.client)
        async with with_cookie(live.url, token) as browser:
            clock.now += 3599
            fresh = await browser.get("/api/tasks")
            clock.now += 1
            expired = await browser.get("/api/tasks")
            page = await browser.get("/", headers={"accept": "text/html"})

    assert fresh.status_code == 200
    assert_error(expired, 401, "unauthorized")
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    assert len(sessions) == 0


async def test_a_forged_cookie_is_refused(store: EventStore, tmp_path) -> None:
    async with live_server(store, tmp_path, api_keys=KEYS) as live:
        async with with_cookie(live.url, "alice.0123456789abcdef") as forged:
            response = await forged.get("/api/tasks")

    assert_error(response, 401, "unauthorized")


async def test_the_cookie_is_httponly_samesite_and_secure_over_tls(
    store: EventStore, tmp_path
) -> None:
    policy = GuardPolicy(trusted_proxies=("127.0.0.1",))
    async with live_server(store, tmp_path, api_keys=KEYS, guard=policy,
                           sessions=Sessions(ttl=600)) as live:
        plain = await live.client.post("/login", json={"key": KEYS["alice"]})
        tls = await live.client.post("/login", json={"key": KEYS["alice"]},
                                     headers={"x-forwarded-proto": "https"})

    for response in (plain, tls):
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie and "max-age=600" in cookie
        assert "path=/" in cookie
    assert "secure" not in plain.headers["set-cookie"].lower()
    assert "secure" in tls.headers["set-cookie"].lower()
    tokens = [r.headers["set-cookie"].split(";")[0] for r in (plain, tls)]
    assert tokens[0] != tokens[1]


async def test_wrong_keys_are_throttled_per_client(store: EventStore, tmp_path) -> None:
    clock = Clock()
    throttle = Throttle(limit=3, window=60, clock=clock)
    async with live_server(store, tmp_path, api_keys=KEYS, throttle=throttle) as live:
        wrong = [await live.client.get("/api/tasks", headers={"x-api-key": f"guess-{i:04}"})
                 for i in range(3)]
        blocked = await live.client.get("/api/tasks", headers={"x-api-key": KEYS["alice"]})
        blocked_login = await live.client.post("/login", json={"key": KEYS["alice"]})
        blocked_form = await live.client.post("/login", data={"key": KEYS["alice"]})
        # Another client (another loopback address) is not affected.
        other = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        async with httpx.AsyncClient(base_url=live.url, transport=other, timeout=20) as client:
            elsewhere = await client.get("/api/tasks", headers={"x-api-key": KEYS["ci"]})
        clock.now += 60
        later = await live.client.get("/api/tasks", headers={"x-api-key": KEYS["alice"]})

    for response in wrong:
        assert_error(response, 401, "unauthorized")
    error = assert_error(blocked, 429, "too_many_attempts")
    assert blocked.headers["retry-after"] == "60" and "60 s" in error["message"]
    assert_error(blocked_login, 429, "too_many_attempts")
    assert blocked_form.status_code == 429 and blocked_form.headers["retry-after"] == "60"
    assert elsewhere.status_code == 200
    assert later.status_code == 200


async def test_wrong_logins_count_toward_the_throttle(store: EventStore, tmp_path) -> None:
    throttle = Throttle(limit=2, window=60)
    async with live_server(store, tmp_path, api_keys=KEYS, throttle=throttle) as live:
        wrong = [await live.client.post("/login", json={"key": "not-the-key"}) for _ in range(2)]
        blocked = await live.client.get("/api/tasks", headers={"x-api-key": KEYS["alice"]})

    for response in wrong:
        assert_error(response, 401, "unauthorized")
    assert_error(blocked, 429, "too_many_attempts")
    assert 0 < int(blocked.headers["retry-after"]) <= 60


def test_a_right_key_clears_the_count_and_ipv6_clients_count_by_network() -> None:
    clock = Clock()
    throttle = Throttle(limit=2, window=60, clock=clock)

    throttle.failed("10.0.0.1")
    throttle.succeeded("10.0.0.1")
    throttle.failed("10.0.0.1")
    throttle.failed("2001:db8::1")
    throttle.failed("2001:db8::2")

    assert throttle.retry_after("10.0.0.1") is None
    assert throttle.retry_after("2001:db8::ffff") == 60
    assert throttle.retry_after("2001:db8:0:1::1") is None


def test_sessions_are_bounded_and_keep_only_a_digest() -> None:
    sessions = Sessions(ttl=60, limit=2)

    first, second, third = (sessions.open(name) for name in ("a", "b", "c"))

    assert len(sessions) == 2
    assert sessions.name_for(first) is None
    assert (sessions.name_for(second), sessions.name_for(third)) == ("b", "c")
    assert second not in repr(sessions._open) and len(second) >= 43


class Rows:
    """The store's ``ipa_sessions`` rows, as a dict (what the nodes share)."""

    def __init__(self) -> None:
        self.rows: dict[bytes, tuple[str, float, str]] = {}

    async def put_session(self, digest: bytes, name: str, expires_at: float, mac: str) -> None:
        self.rows[digest] = (name, expires_at, mac)

    async def get_session(self, digest: bytes) -> tuple[str, float, str] | None:
        return self.rows.get(digest)

    async def delete_session(self, digest: bytes) -> None:
        self.rows.pop(digest, None)


async def test_a_shared_session_is_honoured_by_another_node_unless_its_row_was_forged() -> None:
    rows = Rows()
    here = Sessions(ttl=600, shared=rows, secret=b"from the audit key")
    there = Sessions(ttl=600, shared=rows, secret=b"from the audit key", recheck=0.0)
    token = await here.login("ann")
    assert await there.name_of(token) == "ann"

    [digest] = rows.rows
    name, expires_at, mac = rows.rows[digest]
    rows.rows[digest] = ("root", expires_at, mac)  # someone with the database only
    assert await there.name_of(token) is None
    rows.rows[digest] = (name, expires_at, mac)
    assert await there.name_of(token) == "ann"
    assert await here.logout(token) is True
    assert await there.name_of(token) is None  # ended everywhere
    with pytest.raises(ValueError, match="secret"):
        Sessions(shared=rows)
