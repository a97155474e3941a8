"""The address policy: every private, loopback, link-local... form is refused before any
connection (the transport fails the test if it is reached); DNS answers are pinned."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from fakes.toolkit import FailTransport, StubResolver, context, tool
from mintleaf_server.tools import ToolAddressRefused, ToolConnectionFailed, run_tool
from mintleaf_server.tools.network import check_address, resolve_checked

REFUSED = [
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "127.0.0.1",
    "127.8.9.10",
    "169.254.169.254",
    "0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "100.64.0.1",
    "240.0.0.1",
    "192.0.2.1",
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "ff02::1",
    "::ffff:10.0.0.1",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::a00:1",
    "2002:a00:1::1",
]


@pytest.mark.parametrize("address", REFUSED)
def test_private_addresses_are_refused(address: str) -> None:
    with pytest.raises(ToolAddressRefused):
        check_address(ipaddress.ip_address(address), [])


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    check_address(ipaddress.ip_address(address), [])


def test_allow_networks_open_only_their_range() -> None:
    allow = [ipaddress.ip_network("127.0.0.0/8")]
    check_address(ipaddress.ip_address("127.0.0.1"), allow)
    check_address(ipaddress.ip_address("::ffff:127.0.0.1"), allow)
    with pytest.raises(ToolAddressRefused):
        check_address(ipaddress.ip_address("10.0.0.1"), allow)
    with pytest.raises(ToolAddressRefused):
        check_address(ipaddress.ip_address("::1"), allow)


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "127.1", "017700000001", "0177.0.0.1", "[::1]"])
async def test_numeric_host_forms_are_literals(host: str) -> None:
    resolver = StubResolver({})
    with pytest.raises(ToolAddressRefused):
        await resolve_checked(host, 80, [], resolver)
    assert resolver.calls == []


def _get(url: str, **extra: object) -> object:
    return tool({"name": "probe", "type": "api_call", "api_call": {"method": "GET", "url": url, **extra}})


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5/admin",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:10.0.0.1]/",
        "http://[::ffff:7f00:1]:8080/",
        "http://[fe80::1]/",
        "http://0.0.0.0:22/",
        "http://2130706433/",
        "https://127.0.0.1/",
    ],
)
async def test_api_call_to_private_literal_is_refused(url: str) -> None:
    ctx = context(transport=FailTransport(), resolver=StubResolver({}))
    with pytest.raises(ToolAddressRefused):
        await run_tool(_get(url), {}, ctx)  # type: ignore[arg-type]


async def test_public_name_resolving_to_private_is_refused() -> None:
    resolver = StubResolver({"internal.example.com": ["10.20.30.40"]})
    ctx = context(transport=FailTransport(), resolver=resolver)
    with pytest.raises(ToolAddressRefused, match=r"internal\.example\.com"):
        await run_tool(_get("https://internal.example.com/x"), {}, ctx)  # type: ignore[arg-type]
    assert resolver.calls == ["internal.example.com"]


async def test_mixed_public_and_private_answers_are_refused() -> None:
    resolver = StubResolver({"mixed.example.com": ["93.184.216.34", "127.0.0.1"]})
    ctx = context(transport=FailTransport(), resolver=resolver)
    with pytest.raises(ToolAddressRefused):
        await run_tool(_get("http://mixed.example.com/"), {}, ctx)  # type: ignore[arg-type]


async def test_allow_networks_do_not_cover_other_private_ranges() -> None:
    resolver = StubResolver({"db.internal": ["192.168.0.10"]})
    ctx = context(transport=FailTransport(), resolver=resolver, allow=["127.0.0.0/8"])
    with pytest.raises(ToolAddressRefused):
        await run_tool(_get("http://db.internal/"), {}, ctx)  # type: ignore[arg-type]


async def test_unresolvable_name_is_a_connection_error() -> None:
    ctx = context(transport=FailTransport(), resolver=StubResolver({}))
    with pytest.raises(ToolConnectionFailed):
        await run_tool(_get("http://nowhere.invalid/"), {}, ctx)  # type: ignore[arg-type]


async def test_dns_answer_is_pinned_against_rebinding() -> None:
    """The first answer is public, a second lookup would say loopback: the request must go to
    the first address, with the name kept in Host and SNI, and no second lookup."""
    resolver = StubResolver({"rebind.example.com": [["93.184.216.34"], ["127.0.0.1"]]})
    seen: list[httpx.Request] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    ctx = context(transport=httpx.MockTransport(respond), resolver=resolver)
    out = await run_tool(_get("https://rebind.example.com/path?q=1"), {}, ctx)  # type: ignore[arg-type]
    assert out["json"] == {"ok": True}
    assert resolver.calls == ["rebind.example.com"]
    assert len(seen) == 1
    assert seen[0].url.host == "93.184.216.34"
    assert seen[0].url.path == "/path" and seen[0].url.query == b"q=1"
    assert seen[0].headers["host"] == "rebind.example.com"
    assert seen[0].extensions["sni_hostname"] == "rebind.example.com"


async def test_redirect_hop_to_private_address_is_refused() -> None:
    seen: list[str] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.host != "93.184.216.34":
            pytest.fail(f"redirected request reached {request.url.host}")
        return httpx.Response(302, headers={"Location": "http://metadata.internal/latest"})

    resolver = StubResolver(
        {"public.example.com": ["93.184.216.34"], "metadata.internal": ["169.254.169.254"]}
    )
    ctx = context(transport=httpx.MockTransport(respond), resolver=resolver)
    with pytest.raises(ToolAddressRefused):
        await run_tool(_get("http://public.example.com/start", follow_redirects=True), {}, ctx)  # type: ignore[arg-type]
    assert len(seen) == 1


async def test_non_http_scheme_is_refused() -> None:
    from mintleaf_server.tools import ToolArgumentsInvalid

    ctx = context(transport=FailTransport(), resolver=StubResolver({}))
    with pytest.raises(ToolArgumentsInvalid, match="url"):
        await run_tool(_get("http://x.example/"), {"url": "file:///etc/passwd"}, ctx)  # type: ignore[arg-type]
