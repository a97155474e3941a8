"""A Mintleaf server wired to local stand-ins of the outside world: the scripted model server (chat,
embeddings, images) and any fake HTTP servers a test adds, all on loopback, all on one helper loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from mintleaf import v1
from mintleaf_server.llm.scripted import ScriptedModelServer
from support.harness import ServerThread

T = TypeVar("T")

__all__ = ["DONE", "World", "wait_done"]

DONE = {v1.ExecutionStatus.SUCCEEDED, v1.ExecutionStatus.FAILED, v1.ExecutionStatus.CANCELLED}


class World:
    """`model` is a ScriptedModelServer every model name routes to; `fakes` are started first so
    their URLs can go into the server's settings (`settings(fakes) -> dict`)."""

    def __init__(
        self,
        pg_url: str,
        redis_url: str,
        data_dir: Path,
        fakes: dict[str, Any] | None = None,
        **settings: Any,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="world", daemon=True)
        self.thread.start()
        self.model = ScriptedModelServer()
        self.call(self.model.start())
        self.fakes = fakes or {}
        for fake in self.fakes.values():
            self.call(fake.__aenter__())
        settings.setdefault(
            "models",
            {
                "default": "gpt-4o-mini",
                "endpoints": [{"match": "*", "base_url": self.model.base_url, "api_key": "test"}],
            },
        )
        self.server = ServerThread(pg_url, redis_url, data_dir, **settings).start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.server.stop()
        for fake in self.fakes.values():
            self.call(fake.__aexit__(None, None, None))
        self.call(self.model.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def wait_done(
    client: Any, execution_id: str, timeout: float = 60, statuses: set[Any] | None = None
) -> v1.Execution:
    """Polls until the execution reaches one of `statuses` (default: a terminal status)."""
    want = statuses or DONE
    deadline = time.monotonic() + timeout
    ex = None
    while time.monotonic() < deadline:
        ex = client.executions.get_execution(v1.GetExecutionRequest(id=execution_id))
        if ex.status in want:
            return ex
        time.sleep(0.03)
    raise AssertionError(
        f"execution {execution_id} did not reach {want}: {ex.status if ex else None} {ex.error if ex else ''}"
    )
