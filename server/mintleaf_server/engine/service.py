"""Starting the worker inside `mintleaf-server serve` (App calls `start_worker`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mintleaf_server.engine.limits import Limits
from mintleaf_server.engine.worker import Worker

__all__ = ["engine_limits", "start_worker"]


def engine_limits(settings: Any) -> Limits:
    lim = settings.limits
    return Limits(
        max_steps=lim.max_steps_per_execution,
        max_fanout=lim.max_fan_out,
        max_payload_bytes=lim.max_transition_payload_bytes,
        max_frames=max(lim.max_nesting_depth * 2, 8),
        max_yield_depth=lim.max_yield_depth,
        max_parallelism=lim.max_parallelism,
    )


async def start_worker(runtime: Any) -> Callable[[], Awaitable[None]]:
    worker = Worker(
        runtime.db,
        runtime.redis,
        limits=engine_limits(runtime.settings),
        effects=runtime.extras.get("effect_runner"),
        concurrency=runtime.settings.worker_concurrency,
    )
    runtime.extras["worker"] = worker
    await worker.start()

    async def stop() -> None:
        await worker.stop(runtime.settings.shutdown_grace_seconds)

    return stop
