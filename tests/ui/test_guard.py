"""The Host allow-list, the Origin check, JSON-only bodies and trusted proxies, against a real
uvicorn on a real socket (``live_server``) and a real ``ipa serve``."""

from __future__ import annotations

import httpx
import pytest

from ipa.eventstore import ConnectionParams, EventStore
from ipa.ui.guard import GuardPolicy, HostPolicy, origin_of
from ipa.ui.serve import NotLoopback, allowed_hosts

from .live import live_server
from .test_cli import ipa, url_of
from .test_serve import served

pytestmark = pytest.mark.anyio

KEYS = {"alice": "alice-secret-key"}
EVIL = "http://evil.example"


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


async def test_a_cross_origin_post_is_refused_without_keys(store: EventStore, tmp_path) -> None:
    async with live_server(store, tmp_path) as live:
        task = (await live.client.post("/api/tasks", json={"title": "t"})).json()

        create = await live.client.post("/api/tasks", json={"title": "evil", "repo": "/etc"},
                                        headers={"origin": EVIL})
        plain = await live.client.post("/api/tasks", content='{"title": "evil"}',
                                       headers={"origin": EVIL, "content-type": "text/plain"})
        cancel = await live.client.post(f"/api/tasks/{task['id']}/cancel",
                                        headers={"origin": EVIL})
        by_referer = await live.client.post(f"/api/tasks/{task['id']}/cancel",
                                            headers={"referer": f"{EVIL}/page.html"})
        null = await live.client.post(f"/api/tasks/{task['id']}/cancel",
                                      headers={"origin": "null"})

        written = [e.type for e in await store.read_log()]
    assert written.count("TaskCreated") == 1 and "TaskCancelled" not in written
    error = assert_error(create, 403, "origin_not_allowed")
    assert "evil.example" in error["message"] and "--allowed-origins" in error["message"]
    for response in (plain, cancel, by_referer, null):
        assert_error(response, 403, "origin_not_allowed")


async def test_same_origin_and_configured_origins_may_post(store: EventStore, tmp_path) -> None:
    friend = "https://dashboard.example:8443"
    async with live_server(store, tmp_path,
                           guard=GuardPolicy(allowed_origins=(friend,))) as live:
        own = await live.client.post("/api/tasks", json={"title": "a"},
                                     headers={"origin": live.url})
        by_name = await live.client.post(
            "/api/tasks", json={"title": "b"},
            headers={"origin": live.url.replace("127.0.0.1", "localhost"),
                     "host": live.url.removeprefix("http://").replace("127.0.0.1", "localhost")})
        referer = await live.client.post("/api/tasks", json={"title": "c"},
                                         headers={"referer": f"{live.url}/pods/x?y=1"})
        configured = await live.client.post("/api/tasks", json={"title": "d"},
                                            headers={"origin": friend})
        other_port = await live.client.post("/api/tasks", json={"title": "e"},
                                            headers={"origin": "http://127.0.0.1:1"})

    for response in (own, by_name, referer, configured):
        assert response.status_code == 201, response.text
    assert_error(other_port, 403, "origin_not_allowed")


async def test_non_json_bodies_are_415_and_empty_posts_pass(store: EventStore, tmp_path) -> None:
    async with live_server(store, tmp_path) as live:
        before = await store.head_position()
        plain = await live.client.post("/api/tasks", content='{"title": "t"}',
                                       headers={"content-type": "text/plain"})
        form = await live.client.post("/api/tasks", data={"title": "t"})
        multipart = await live.client.post("/api/tasks", files={"title": ("t", b"t")})
        untyped = await live.client.post("/api/tasks", content=b'{"title": "t"}')
        assert await store.head_position() == before

        task = (await live.client.post("/api/tasks", json={"title": "t"})).json()
        empty = await live.client.post(f"/api/tasks/{task['id']}/cancel")
        charset = await live.client.post(
            "/api/tasks", content=b'{"title": "u"}',
            headers={"content-type": "application/json; charset=utf-8"})

    error = assert_error(plain, 415, "unsupported_media_type")
    assert "'text/plain'" in error["message"] and "application/json" in error["message"]
    for response in (form, multipart, untyped):
        assert_error(response, 415, "unsupported_media_type")
    assert empty.status_code == 200 and empty.json()["status"] == "cancelled"
    assert charset.status_code == 201


async def test_with_keys_a_logged_in_browser_cannot_be_driven_from_another_site(
    store: EventStore, tmp_path
) -> None:
    async with live_server(store, tmp_path, api_keys=KEYS) as live:
        login = await live.client.post("/login", data={"key": KEYS["alice"], "next": "/"},
                                       headers={"origin": live.url})
        assert login.status_code == 303 and "ipa_session" in live.client.cookies
        before = await store.head_position()

        cross_plain = await live.client.post(
            "/api/tasks", content='{"title": "t"}',
            headers={"origin": EVIL, "content-type": "text/plain"})
        cross_form = await live.client.post("/api/tasks", data={"title": "t"},
                                            headers={"origin": EVIL})
        cross_json = await live.client.post("/api/tasks", json={"title": "t"},
                                            headers={"origin": EVIL})
        own_form = await live.client.post("/api/tasks", data={"title": "t"},
                                          headers={"origin": live.url})
        cross_login = await live.client.post("/login", data={"key": KEYS["alice"]},
                                             headers={"origin": EVIL})
        cross_logout = await live.client.post("/logout", headers={"origin": EVIL})
        assert await store.head_position() == before

        own_json = await live.client.post("/api/tasks", json={"title": "t"},
                                          headers={"origin": live.url})

    for response in (cross_plain, cross_form, cross_json, cross_login, cross_logout):
        assert_error(response, 403, "origin_not_allowed")
    assert_error(own_form, 415, "unsupported_media_type")
    assert own_json.status_code == 201 and own_json.json()["created_by"] == "api-key:alice"


async def test_a_wrong_host_is_refused(store: EventStore, tmp_path) -> None:
    async with live_server(store, tmp_path) as live:
        port = live.url.rsplit(":", 1)[1]
        evil = await live.client.get("/api/tasks", headers={"host": f"evil.example:{port}"})
        evil_post = await live.client.post("/api/tasks", json={"title": "t"},
                                           headers={"host": "evil.example"})
        answered = [(await live.client.get("/api/tasks", headers={"host": host})).status_code
                    for host in (f"localhost:{port}", f"[::1]:{port}", "127.0.0.1",
                                 f"LOCALHOST:{port}")]
        health = await live.client.get("/healthz", headers={"host": "evil.example"})

    error = assert_error(evil, 400, "host_not_allowed")
    assert "'evil.example:" in error["message"] and "--allowed-hosts" in error["message"]
    assert_error(evil_post, 400, "host_not_allowed")
    assert answered == [200, 200, 200, 200]
    assert health.status_code == 200


async def test_allowed_hosts_add_names(store: EventStore, tmp_path) -> None:
    policy = GuardPolicy(allowed_hosts=("ipa.example.com", "*.corp.example"))
    async with live_server(store, tmp_path, guard=policy) as live:
        statuses = [(await live.client.get("/api/tasks", headers={"host": host})).status_code
                    for host in ("ipa.example.com", "ipa.example.com:443", "a.b.corp.example",
                                 "corp.example", "ipa.example.com.evil.example")]

    assert statuses == [200, 200, 200, 400, 400]


async def test_x_ipa_actor_is_ignored_from_an_untrusted_client(
    store: EventStore, tmp_path
) -> None:
    async with live_server(store, tmp_path) as live:
        created = await live.client.post("/api/tasks", json={"title": "t"},
                                         headers={"x-ipa-actor": "api-key:alice",
                                                  "x-forwarded-for": "10.1.2.3"})

    assert created.json()["created_by"] == "user:local"


async def test_with_keys_an_untrusted_x_ipa_actor_does_not_replace_the_key_name(
    store: EventStore, tmp_path
) -> None:
    async with live_server(store, tmp_path, api_keys=KEYS) as live:
        keyed = await live.client.post("/api/tasks", json={"title": "t"},
                                       headers={"x-ipa-actor": "user:mallory",
                                                "x-api-key": KEYS["alice"]})

    assert keyed.json()["created_by"] == "api-key:alice"


async def test_x_ipa_actor_is_honoured_from_a_trusted_proxy(store: EventStore, tmp_path) -> None:
    policy = GuardPolicy(trusted_proxies=("127.0.0.0/8",))
    async with live_server(store, tmp_path, guard=policy) as live:
        named = await live.client.post("/api/tasks", json={"title": "t"},
                                       headers={"x-ipa-actor": "user:alice"})
        unnamed = await live.client.post("/api/tasks", json={"title": "t"})
        control = await live.client.post("/api/tasks", json={"title": "t"},
                                         headers={"x-ipa-actor": "user:" + "x" * 300})

    assert named.json()["created_by"] == "user:alice"
    assert unnamed.json()["created_by"] == "user:local"
    assert_error(control, 400, "bad_request")


async def test_serve_options_reach_the_guard(database: ConnectionParams) -> None:
    async with served(database, "--allowed-hosts", "ipa.test,other.test",
                      "--allowed-origins", "https://ipa.test") as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as client:
            evil = await client.get("/api/tasks", headers={"host": "evil.example"})
            named = await client.get("/api/tasks", headers={"host": "ipa.test"})
            cross = await client.post("/api/tasks", json={"title": "t"},
                                      headers={"origin": EVIL})
            friend = await client.post("/api/tasks", json={"title": "t"},
                                       headers={"origin": "https://ipa.test"})

    assert_error(evil, 400, "host_not_allowed")
    assert named.status_code == 200
    assert_error(cross, 403, "origin_not_allowed")
    assert friend.status_code == 201


async def test_serve_on_every_interface_with_keys_needs_the_host_names(
    database: ConnectionParams,
) -> None:
    run = await ipa("serve", "--database-url", url_of(database), "--host", "0.0.0.0",
                    IPA_API_KEYS="ci:ci-key-123456")
    bad_origin = await ipa("serve", "--database-url", url_of(database),
                           "--allowed-origins", "evil.example")

    assert run.status == 2 and "--allowed-hosts" in run.error_line()
    assert bad_origin.status == 2 and "'evil.example'" in bad_origin.error_line()


def test_the_listening_host_is_allowed_and_every_interface_needs_names() -> None:
    assert allowed_hosts("10.0.0.5", {"ci": "k" * 8}, ()) == ("10.0.0.5",)
    assert allowed_hosts("0.0.0.0", {"ci": "k" * 8}, ("*",)) == ("*",)
    assert allowed_hosts("127.0.0.1", {}, ()) == ("127.0.0.1",)
    with pytest.raises(NotLoopback, match="--allowed-hosts"):
        allowed_hosts("::", {"ci": "k" * 8}, ())


def test_host_names_and_origins_are_normalised() -> None:
    hosts = HostPolicy(["::1", "Ipa.Example.com:8765"])

    assert hosts.allows("[::1]:9") and hosts.allows("ipa.example.com")
    assert not hosts.allows("") and not hosts.allows("[::2]")
    assert origin_of("HTTP://LocalHost:80/x") == "http://localhost"
    assert origin_of("https://[::1]:8443") == "https://[::1]:8443"
    assert origin_of("null") is None and origin_of("/relative") is None
