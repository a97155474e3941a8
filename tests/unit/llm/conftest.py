from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from mintleaf_server.llm import ModelRegistry, RetryPolicy, ScriptedModelServer


@pytest.fixture
async def server() -> AsyncIterator[ScriptedModelServer]:
    srv = ScriptedModelServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def registry(server: ScriptedModelServer) -> AsyncIterator[ModelRegistry]:
    reg = ModelRegistry.scripted(
        server.base_url,
        retry=RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.05, jitter=0.0),
    )
    try:
        yield reg
    finally:
        await reg.aclose()
