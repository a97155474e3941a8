"""Runs a real Mintleaf App (gRPC over loopback, real PostgreSQL and Redis) in a background thread
with its own event loop, so synchronous tests can use the generated SDK against it."""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import mintleaf
from mintleaf_server.config import load_settings
from mintleaf_server.server import App

T = TypeVar("T")

__all__ = ["ServerThread", "private_runtime_dir", "start_test_postgres", "start_test_redis"]


def private_runtime_dir() -> None:
    """pgserver warns without XDG_RUNTIME_DIR, and warnings are errors in our tests."""
    if not os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(tempfile.gettempdir()) / f"mintleaf-test-runtime-{os.getuid()}"
        path.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(path)


def start_test_postgres(base: Path) -> tuple[str, Any]:
    private_runtime_dir()
    from mintleaf_server.store.embedded import start_postgres

    pg = start_postgres(base, database="mintleaf")
    return pg.url, pg


def start_test_redis(base: Path) -> tuple[str, Any]:
    from mintleaf_server.store.embedded import start_redis

    r = start_redis(base)
    return r.url, r


class ServerThread:
    """An App serving on 127.0.0.1:<free port> in its own thread and event loop."""

    def __init__(self, database_url: str, redis_url: str, data_dir: Path, **overrides: Any) -> None:
        self.settings = load_settings(
            env={},
            listen="127.0.0.1:0",
            database_url=database_url,
            redis_url=redis_url,
            data_dir=data_dir,
            **overrides,
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="mintleaf-test-server", daemon=True)
        self.app = App(self.settings)
        self.port = 0

    def start(self) -> ServerThread:
        self.thread.start()
        self.port = self.call(self.app.start())
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def new_key(self) -> str:
        return self.call(self.app.runtime.auth.create_key()).key

    def client(self, key: str | None = None) -> mintleaf.Client:
        return mintleaf.Client(self.target, api_key=key or self.new_key())

    def stop(self) -> None:
        try:
            self.call(self.app.stop(grace=1.0))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()
