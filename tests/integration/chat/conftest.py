"""A server of its own for the chat tests, with every model routed to a scripted model server (so
the shared `server` fixture, and the tests that use it, are not disturbed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mintleaf_server.llm.scripted import ScriptedModelServer
from support.harness import ServerThread


@pytest.fixture(scope="session")
def scripted_model() -> Iterator[ScriptedModelServer]:
    model = ScriptedModelServer()
    with model.run_in_thread():
        yield model


@pytest.fixture(scope="session")
def chat_server(
    pg_url: str, redis_url: str, data_root: Path, scripted_model: ScriptedModelServer
) -> Iterator[ServerThread]:
    models = {
        "default": "gpt-4o-mini",
        "retry": {"max_attempts": 1},
        "default_endpoint": {
            "base_url": scripted_model.base_url,
            "api_key": "scripted",
            "context_window": 128000,
        },
    }
    srv = ServerThread(pg_url, redis_url, data_root / "chat", models=models, worker_enabled=False).start()
    yield srv
    srv.stop()


@pytest.fixture
def model(scripted_model: ScriptedModelServer) -> ScriptedModelServer:
    """The scripted model, with no queued replies and no recorded requests."""
    scripted_model.reset()
    return scripted_model


@pytest.fixture
def chat_client(chat_server: ServerThread) -> Iterator[object]:
    c = chat_server.client()
    yield c
    c.close()


@pytest.fixture
def other_chat_client(chat_server: ServerThread) -> Iterator[object]:
    """A second developer, for tenant-isolation checks."""
    c = chat_server.client()
    yield c
    c.close()
