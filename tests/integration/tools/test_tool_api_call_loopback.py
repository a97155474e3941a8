"""api_call against a real HTTP server on 127.0.0.1 (allowed through api_call_allow_networks);
every other destination is refused before a connection (LoopbackOnlyTransport fails the test)."""

from __future__ import annotations

import base64
import json

import pytest

from fakes.httpserver import FakeHttpServer, Request, Response
from fakes.toolkit import LoopbackOnlyTransport, StubResolver, context, tool
from mintleaf_server.tools import ToolAddressRefused, ToolResponseTooLarge, ToolTimeout, run_tool

ALLOW = ["127.0.0.0/8"]


def handler(request: Request) -> Response:
    if request.path == "/echo":
        return Response.json(
            {
                "method": request.method,
                "query": request.query,
                "body": request.body.decode(),
                "auth": request.headers.get("authorization"),
            }
        )
    if request.path == "/slow":
        return Response.json({"late": True}, delay=3)
    if request.path == "/big":
        return Response(
            200,
            chunks=(b"x" * 65536 for _ in range(64)),
            headers={"Content-Type": "application/octet-stream"},
        )
    if request.path == "/to-private":
        return Response(302, headers={"Location": "http://10.0.0.8/steal"})
    if request.path == "/to-named-private":
        return Response(302, headers={"Location": "http://intranet.example.com/"})
    if request.path == "/hop":
        return Response(302, headers={"Location": "/echo?hopped=1"})
    return Response(404, b"no")


def _tool(path: str, **extra: object) -> object:
    return tool({"name": "svc", "type": "api_call", "api_call": {"method": "GET", "url": path, **extra}})


async def test_success_with_templated_arguments() -> None:
    async with FakeHttpServer(handler) as srv:
        t = tool(
            {
                "name": "svc",
                "api_call": {
                    "method": "POST",
                    "url": f"{srv.url}/echo",
                    "headers": {"Authorization": "Bearer {{ secrets.TOKEN }}"},
                },
            }
        )
        transport = LoopbackOnlyTransport()
        ctx = context(allow=ALLOW, transport=transport, secrets={"TOKEN": "s3cret-token"})
        out = await run_tool(t, {"params": {"topic": "cats"}, "json": {"n": 1}}, ctx)  # type: ignore[arg-type]
    assert out["status_code"] == 200
    assert out["json"] == {
        "method": "POST",
        "query": {"topic": "cats"},
        "body": '{"n":1}',
        "auth": "Bearer s3cret-token",
    }
    assert json.loads(base64.b64decode(out["content"]))["method"] == "POST"
    assert out["headers"]["content-type"] == "application/json"
    assert transport.hosts == ["127.0.0.1"]


async def test_redirects_are_followed_and_rechecked() -> None:
    async with FakeHttpServer(handler) as srv:
        ctx = context(allow=ALLOW, transport=LoopbackOnlyTransport())
        out = await run_tool(_tool(f"{srv.url}/hop", follow_redirects=True), {}, ctx)  # type: ignore[arg-type]
        assert out["json"]["query"] == {"hopped": "1"}
        # not followed unless asked
        out = await run_tool(_tool(f"{srv.url}/hop"), {}, ctx)  # type: ignore[arg-type]
        assert out["status_code"] == 302


async def test_loopback_refused_without_allow_networks() -> None:
    async with FakeHttpServer(handler) as srv:
        ctx = context(transport=LoopbackOnlyTransport())
        with pytest.raises(ToolAddressRefused):
            await run_tool(_tool(f"{srv.url}/echo"), {}, ctx)  # type: ignore[arg-type]
        assert srv.requests == []


async def test_redirect_to_private_address_refused() -> None:
    async with FakeHttpServer(handler) as srv:
        resolver = StubResolver({"intranet.example.com": ["192.168.10.10"]})
        ctx = context(allow=ALLOW, transport=LoopbackOnlyTransport(), resolver=resolver)
        with pytest.raises(ToolAddressRefused):
            await run_tool(_tool(f"{srv.url}/to-private", follow_redirects=True), {}, ctx)  # type: ignore[arg-type]
        with pytest.raises(ToolAddressRefused):
            await run_tool(_tool(f"{srv.url}/to-named-private", follow_redirects=True), {}, ctx)  # type: ignore[arg-type]
        assert resolver.calls == ["intranet.example.com"]
        assert [r.path for r in srv.requests] == ["/to-private", "/to-named-private"]


async def test_timeout() -> None:
    async with FakeHttpServer(handler) as srv:
        ctx = context(allow=ALLOW, transport=LoopbackOnlyTransport())
        with pytest.raises(ToolTimeout) as info:
            await run_tool(_tool(f"{srv.url}/slow", timeout=0.5), {}, ctx)  # type: ignore[arg-type]
    assert info.value.retryable


async def test_oversized_response_aborted() -> None:
    async with FakeHttpServer(handler) as srv:
        ctx = context(
            allow=ALLOW,
            transport=LoopbackOnlyTransport(),
            integrations={"api_call": {"max_response_bytes": 1024 * 1024}},
        )
        with pytest.raises(ToolResponseTooLarge):
            await run_tool(_tool(f"{srv.url}/big"), {}, ctx)  # type: ignore[arg-type]
        # under the default cap (10 MiB) the same 4 MiB body is fine
        ok = await run_tool(
            _tool(f"{srv.url}/big", include_response_content=False),
            {},
            context(allow=ALLOW, transport=LoopbackOnlyTransport()),
        )  # type: ignore[arg-type]
        assert ok["status_code"] == 200 and "content" not in ok
