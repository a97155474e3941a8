"""Helpers for tool tests: building tools and contexts, and transports that guard the network."""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from mintleaf_server.dsl.tools import ToolDef, parse_tool
from mintleaf_server.tools import ToolContext


def tool(raw: Mapping[str, Any]) -> ToolDef:
    parsed, violations = parse_tool(raw, "tools[0]")
    assert parsed is not None, violations
    return parsed


def context(
    *,
    integrations: Mapping[str, Any] | None = None,
    allow: Sequence[str] = (),
    secrets: Mapping[str, str] | None = None,
    setup_sources: Sequence[Mapping[str, Any]] = (),
    transport: httpx.AsyncBaseTransport | None = None,
    resolver: Any = None,
    runtime: Any = None,
) -> ToolContext:
    if runtime is None:
        settings = SimpleNamespace(
            integrations=dict(integrations or {}), api_call_allow_networks=tuple(allow)
        )
        runtime = SimpleNamespace(settings=settings)
    return ToolContext(
        developer_id=uuid.uuid4(),
        runtime=runtime,
        secrets=dict(secrets or {}),
        setup_sources=list(setup_sources),
        transport=transport,
        resolver=resolver,
    )


class FailTransport(httpx.AsyncBaseTransport):
    """Fails the test if anything tries to connect."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        pytest.fail(f"a connection to {request.url.host} was attempted")


class LoopbackOnlyTransport(httpx.AsyncBaseTransport):
    """The real network, for loopback destinations only; anything else fails the test."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.hosts: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        self.hosts.append(host)
        if not ipaddress.ip_address(host).is_loopback:
            pytest.fail(f"a connection to non-loopback {host} was attempted")
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


class StubResolver:
    """Answers from a table (a list of answers per name is consumed in order); records calls."""

    def __init__(self, answers: Mapping[str, list[str] | list[list[str]]]) -> None:
        self.answers = {k: list(v) for k, v in answers.items()}
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        answer = self.answers.get(host)
        if answer is None:
            raise OSError(f"unknown name {host}")
        if answer and isinstance(answer[0], list):
            return list(answer.pop(0))  # type: ignore[arg-type,unused-ignore]
        return list(answer)  # type: ignore[arg-type]
