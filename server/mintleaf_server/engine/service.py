"""Starting the worker inside `mintleaf-server serve` (App calls `start_worker`).

Two engine timings are read from the environment (operators rarely need them; fault tests
shorten them so a killed process's runs are taken over within a second or two):
MINTLEAF_ENGINE_LEASE_TTL_MS (default 15000) and MINTLEAF_ENGINE_SWEEP_SECONDS (default 5)."""

from __future__ import annotations

import os
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
        # every yield call is a frame of its own: room for the full yield depth on top of the
        # nesting, so deep recursion stops with the yield limit's message
        max_frames=max(lim.max_nesting_depth * 2, 8) + lim.max_yield_depth + 1,
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
        lease_ttl_ms=int(os.environ.get("MINTLEAF_ENGINE_LEASE_TTL_MS", "15000")),
        sweep_interval_s=float(os.environ.get("MINTLEAF_ENGINE_SWEEP_SECONDS", "5")),
    )
    runtime.extras["worker"] = worker
    await worker.start()

    async def stop() -> None:
        await worker.stop(runtime.settings.shutdown_grace_seconds)

    return stop
