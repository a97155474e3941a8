"""Outbound connections for tools: the address policy (SSRF protection), DNS resolution with the
result pinned, and bounded response reading.

Design note. Every host a tool reaches on a user's behalf is resolved here, once; each resolved
address is checked; and the connection goes to that very address (the URL's host is replaced by
the IP, the Host header and TLS SNI/certificate check keep the name), so a second resolution
cannot return something else (DNS rebinding). Redirects pass through the same transport, so every
hop is checked. Rejected alternatives: checking the name and letting httpcore resolve it again
(rebinding window); a custom `socket` connect hook (httpcore offers no public one); refusing only
some of a name's addresses (an attacker mixes public and private answers), so one bad address
refuses the name. Environment proxies are ignored (`trust_env=False`): a proxy would resolve the
name itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Sequence

import httpx

from .context import Resolver, ToolContext
from .errors import ToolAddressRefused, ToolConnectionFailed, ToolResponseTooLarge, ToolTimeout

__all__ = [
    "DEFAULT_MAX_RESPONSE_BYTES",
    "GuardedTransport",
    "IPNetwork",
    "check_address",
    "default_resolver",
    "describe_url",
    "http_client",
    "read_capped",
    "resolve_checked",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_MAX_RESPONSE_BYTES = 10 * 1024 * 1024
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# inet_aton accepts 127.1, 0x7f000001, 2130706433, 0177.0.0.1: all of them are IPv4 literals.
_NUMERIC_HOST = re.compile(r"^[0-9a-fA-FxX.]+$")


async def default_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _literal(host: str) -> IPAddress | None:
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        pass
    if _NUMERIC_HOST.match(text) and any(c.isdigit() for c in text):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(text))
        except OSError:
            return None
    return None


def _embedded(ip: IPAddress) -> list[IPAddress]:
    """The addresses to judge: an IPv4-mapped address is its IPv4 address (the socket reaches
    that); 6to4, Teredo and NAT64 addresses are judged with the IPv4 address they carry."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    out: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.sixtofour is not None:
            out.append(ip.sixtofour)
        if ip.teredo is not None:
            out.append(ip.teredo[1])
        if ip in _NAT64:
            out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return out


def _forbidden(ip: IPAddress) -> str | None:
    for label, flag in (
        ("loopback", ip.is_loopback),
        ("unspecified", ip.is_unspecified),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if flag:
            return label
    if not ip.is_global:  # shared address space (100.64/10), documentation ranges, ...
        return "non-global"
    return None


def check_address(ip: IPAddress, allow: Sequence[IPNetwork]) -> None:
    """Raises ToolAddressRefused unless `ip` (and every address it embeds) is public or inside
    an allowed network."""
    for candidate in _embedded(ip):
        if any(candidate.version == net.version and candidate in net for net in allow):
            continue
        why = _forbidden(candidate)
        if why is not None:
            raise ToolAddressRefused(
                f"refused to connect to {ip} ({why} address); the server's api_call_allow_networks"
                " setting lists the private networks tools may reach"
            )


async def resolve_checked(
    host: str, port: int, allow: Sequence[IPNetwork], resolver: Resolver | None = None
) -> str:
    """Resolve `host` once, check every address, and return the one to connect to."""
    literal = _literal(host)
    if literal is not None:
        check_address(literal, allow)
        return str(literal)
    try:
        answers = await (resolver or default_resolver)(host, port)
    except (OSError, UnicodeError) as exc:
        raise ToolConnectionFailed(f"could not resolve {host!r}: {exc.__class__.__name__}") from exc
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            addresses.append(ipaddress.ip_address(answer.split("%", 1)[0]))
        except ValueError:
            raise ToolAddressRefused(f"{host!r} resolved to a malformed address") from None
    if not addresses:
        raise ToolConnectionFailed(f"{host!r} has no address")
    for ip in addresses:
        try:
            check_address(ip, allow)
        except ToolAddressRefused as exc:
            raise ToolAddressRefused(f"{host!r} resolves to a refused address: {exc.message}") from None
    return str(addresses[0])


def describe_url(url: httpx.URL | str) -> str:
    """scheme://host[:port]/path, without userinfo or query (which may hold keys)."""
    u = httpx.URL(url) if isinstance(url, str) else url
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{u.host}{port}{u.path}"


class GuardedTransport(httpx.AsyncBaseTransport):
    """Checks and pins the destination of every request (each redirect hop included), then
    hands the request, addressed to the vetted IP, to `inner`."""

    def __init__(
        self,
        inner: httpx.AsyncBaseTransport,
        allow: Sequence[IPNetwork],
        resolver: Resolver | None = None,
    ) -> None:
        self.inner = inner
        self.allow = list(allow)
        self.resolver = resolver

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise ToolAddressRefused(f"only http and https URLs may be called, not {url.scheme!r}")
        host = url.host
        if not host:
            raise ToolAddressRefused("the URL has no host")
        port = url.port or (443 if url.scheme == "https" else 80)
        ip = await resolve_checked(host, port, self.allow, self.resolver)
        if _literal(host) is None:
            # Host header was set by httpx from the original URL and is kept as is.
            request.url = url.copy_with(host=ip)
            if url.scheme == "https":
                request.extensions = {**request.extensions, "sni_hostname": host}
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def http_client(
    ctx: ToolContext,
    *,
    guarded: bool,
    timeout: float,
    follow_redirects: bool = False,
    max_redirects: int = 5,
    headers: dict[str, str] | None = None,
) -> httpx.AsyncClient:
    """An httpx client for a tool. `guarded` applies the address policy (every destination a
    user chose); unguarded clients are for base URLs from the server's own configuration."""
    inner: httpx.AsyncBaseTransport = ctx.transport or httpx.AsyncHTTPTransport(retries=0)
    transport = GuardedTransport(inner, ctx.allow_networks(), ctx.resolver) if guarded else inner
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(timeout),
        follow_redirects=follow_redirects,
        max_redirects=max_redirects,
        trust_env=False,
        headers=headers,
    )


async def read_capped(response: httpx.Response, limit: int, what: str) -> bytes:
    """The (decoded) body of a streamed response, aborting once it passes `limit` bytes."""
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ToolResponseTooLarge(
            f"{what}: the response declares {declared} bytes, over the {limit}-byte cap"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise ToolResponseTooLarge(f"{what}: the response is over the {limit}-byte cap")
        chunks.append(chunk)
    return b"".join(chunks)


def translate_http_error(exc: Exception, what: str) -> Exception:
    """Maps httpx transport errors to tool errors (messages name only `what`)."""
    if isinstance(exc, httpx.TimeoutException):
        return ToolTimeout(f"{what}: timed out")
    if isinstance(exc, httpx.TooManyRedirects):
        return ToolConnectionFailed(f"{what}: too many redirects")
    if isinstance(exc, httpx.HTTPError):
        return ToolConnectionFailed(f"{what}: {exc.__class__.__name__}")
    return exc
