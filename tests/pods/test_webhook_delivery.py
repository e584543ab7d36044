"""One webhook attempt (issue #17): the addresses ipa refuses, the HTTP client resolving names
only to the addresses just checked (DNS rebinding), the Standard Webhooks signature, and what a
failing receiver's answer becomes."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook

from ipa.eventstore.webhooks import Claimed
from ipa.pods import AddressGuard, AddressRefused
from ipa.pods.webhook_delivery import Courier, refused_address, retry_after_seconds, sign

from .webhook_receiver import Receiver

pytestmark = pytest.mark.anyio

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.mark.parametrize(("address", "words"), [
    ("127.0.0.1", "loopback"), ("127.9.9.9", "loopback"), ("::1", "loopback"),
    ("10.0.0.1", "private"), ("172.16.5.4", "private"), ("192.168.1.1", "private"),
    ("fc00::1", "private"), ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"),
    ("::", "unspecified"), ("100.64.0.1", "not a public address"),
    ("::ffff:127.0.0.1", "inside the IPv6 address"), ("::ffff:10.0.0.1", "inside the IPv6"),
    ("2002:7f00:1::", "inside the IPv6 address"), ("64:ff9b::a00:1", "inside the IPv6"),
    ("240.0.0.1", "reserved"),
])
def test_addresses_inside_a_network_are_refused_naming_why(address: str, words: str) -> None:
    why = refused_address(ipaddress.ip_address(address))

    assert why is not None and words in why


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refused_address(ipaddress.ip_address(address)) is None


class Resolving(AddressGuard):
    """The address check with a name server that answers ``addresses`` (then ``later``);
    ``resolved_for``: seconds an answer is used again (0: each check asks again)."""

    def __init__(self, *addresses: str, later: list[str] | None = None,
                 resolved_for: float = 0.0) -> None:
        super().__init__(allow_private=False)
        self.RESOLVED_FOR = resolved_for
        self.answers = [list(addresses), *([later] if later else [])]
        self.asked = 0

    async def _resolve(self, host: str, port: int) -> list:
        self.asked += 1
        answer = self.answers[0] if len(self.answers) == 1 else self.answers.pop(0)
        return [ipaddress.ip_address(a) for a in answer]


async def test_the_url_keeps_its_name_and_the_name_resolves_to_the_addresses_checked() -> None:
    guard = Resolving("93.184.215.14", "2606:4700::1111")

    plain = await guard.target("http://hooks.example.com/in?x=1")
    tls = await guard.target("https://hooks.example.com:8443/in")
    literal = await guard.target("http://[2606:4700::1111]:8080/in")
    idn = await guard.target("https://bücher.example/")
    asked = guard.asked

    assert (plain.raw_host, plain.port, plain.raw_path_qs) == ("hooks.example.com", 80,
                                                              "/in?x=1")
    assert (tls.scheme, tls.raw_host, tls.port) == ("https", "hooks.example.com", 8443)
    assert (literal.raw_host, literal.port) == ("2606:4700::1111", 8080)
    assert (idn.raw_host, idn.port) == ("xn--bcher-kva.example", 443)
    assert asked == 3  # the literal address is checked as it is
    assert await guard.addresses("hooks.example.com", 443) == ["93.184.215.14",
                                                               "2606:4700::1111"]


async def test_a_burst_to_one_host_resolves_it_once_and_later_checks_again() -> None:
    guard = Resolving("93.184.215.14", later=["10.0.0.1"], resolved_for=3600)
    for _ in range(3):
        await guard.target("http://hooks.example.com/h")
    guard.RESOLVED_FOR = 0.0  # the answer is old now

    with pytest.raises(AddressRefused, match="private"):
        await guard.target("http://hooks.example.com/h")
    assert guard.asked == 2


async def test_a_name_with_one_private_address_among_public_ones_is_refused() -> None:
    with pytest.raises(AddressRefused, match="10.0.0.7 is a private address"):
        await Resolving("93.184.215.14", "10.0.0.7").check("https://hooks.example.com/")


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(AddressRefused, match="does not resolve"):
        await AddressGuard().check("http://nowhere.invalid/hook")


async def test_allowing_private_addresses_checks_nothing() -> None:
    guard = Resolving("127.0.0.1")
    guard.allow_private = True

    target = await guard.target("http://localhost:9/h")
    asked = guard.asked

    assert (target.raw_host, target.port, target.raw_path) == ("localhost", 9, "/h")
    assert asked == 0
    assert await guard.addresses("localhost", 9) == ["127.0.0.1"]  # the client's resolving


def test_the_signature_verifies_with_the_standardwebhooks_package() -> None:
    body = '{"type":"task.failed","timestamp":"2026-11-21T09:00:00+00:00","data":{}}'
    headers = sign(SECRET, "a-delivery-id", datetime.now(UTC), body)

    assert Webhook(SECRET).verify(body, headers) == {
        "type": "task.failed", "timestamp": "2026-11-21T09:00:00+00:00", "data": {}}
    assert headers["webhook-id"] == "a-delivery-id"
    assert headers["webhook-signature"].startswith("v1,")


def _claimed(url: str) -> Claimed:
    return Claimed("d-1", "w-1", url, "plain:" + SECRET, '{"type":"task.failed"}', 0)


async def test_a_delivery_rebound_to_a_private_address_is_not_sent() -> None:
    guard = Resolving("93.184.215.14", later=["127.0.0.1"])
    await guard.check("http://hooks.example.com/h")  # registered while it was public
    courier = Courier(guard, timeout=2.0)
    try:
        attempt = await courier.attempt(_claimed("http://hooks.example.com/h"), SECRET)
    finally:
        await courier.aclose()

    assert not attempt.ok and attempt.status_code is None
    assert "127.0.0.1 is a loopback address" in attempt.error


@pytest.mark.parametrize(("status", "words"), [
    (302, "HTTP 302: redirected to nowhere; webhooks follow no redirects: register the "
          "final URL"),
    (500, "HTTP 500: ok"),
    (410, "HTTP 410: ok"),
])
async def test_an_answer_other_than_2xx_is_a_failure_saying_what_came(
    status: int, words: str,
) -> None:
    courier = Courier(AddressGuard(allow_private=True), timeout=5.0)
    try:
        with Receiver(status=status, secret=SECRET).running() as receiver:
            attempt = await courier.attempt(_claimed(receiver.url), SECRET)
    finally:
        await courier.aclose()

    assert not attempt.ok and attempt.status_code == status
    assert attempt.error == words
    assert receiver.received[0].verified and receiver.received[0].delivery_id == "d-1"


async def test_no_receiver_listening_is_a_failure_without_a_status() -> None:
    courier = Courier(AddressGuard(allow_private=True), timeout=5.0)
    try:
        with Receiver().running() as receiver:
            url = receiver.url
        attempt = await courier.attempt(_claimed(url), SECRET)
    finally:
        await courier.aclose()

    assert not attempt.ok and attempt.status_code is None
    assert attempt.error.startswith("cannot connect")


NOW = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(("header", "seconds"), [
    (None, None),
    ("120", 120.0),
    (" 0 ", 0.0),
    ("Sat, 21 Nov 2026 09:01:30 GMT", 90.0),
    ("Sat, 21 Nov 2026 08:00:00 GMT", 0.0),  # a date past: at once
    ("-5", None),
    ("1.5", None),
    ("soon", None),
    ("١٢٠", None),  # digits, but not ASCII ones
])
def test_retry_after_is_read_as_seconds_or_an_http_date(
    header: str | None, seconds: float | None,
) -> None:
    assert retry_after_seconds(header, NOW) == seconds


async def test_an_answer_with_retry_after_says_how_long_to_wait() -> None:
    courier = Courier(AddressGuard(allow_private=True), timeout=5.0)
    try:
        with Receiver(status=429, secret=SECRET, retry_after="7").running() as receiver:
            attempt = await courier.attempt(_claimed(receiver.url), SECRET)
    finally:
        await courier.aclose()

    assert (attempt.ok, attempt.status_code, attempt.retry_after) == (False, 429, 7.0)
