"""Redis leases: a token with a TTL, renewed by time (every TTL/3) while a run is processed.

Design note. The lease only avoids duplicate work; correctness comes from PostgreSQL: taking a
run increments its `lease_epoch`, and every commit is conditional on that epoch, so a worker that
lost its lease (paused, partitioned, its Redis key expired) can never write. Rejected: renewing on
every step (a Lua round trip per step costs ~0.55x the commit floor, perf-floor.md) and
PostgreSQL advisory locks (held per connection: a pool connection per running execution)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any

__all__ = ["Lease", "Leases"]

_RENEW = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end"
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end"


class Lease:
    def __init__(self, leases: Leases, key: str, token: str) -> None:
        self.leases = leases
        self.key = key
        self.token = token
        self.lost = False
        self._task: asyncio.Task[None] | None = None

    def keep(self, on_lost: Callable[[], None] | None = None) -> None:
        async def renew() -> None:
            ttl = self.leases.ttl_ms
            while True:
                await asyncio.sleep(ttl / 3000)
                hook = self.leases.crash_hook
                if hook is not None:
                    hook("mid_lease_renewal")
                ok = await self.leases.redis.eval(_RENEW, 1, self.key, self.token, ttl)
                if not ok:
                    self.lost = True
                    if on_lost is not None:
                        on_lost()
                    return

        self._task = asyncio.create_task(renew())

    async def release(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        with contextlib.suppress(Exception):
            await self.leases.redis.eval(_RELEASE, 1, self.key, self.token)


class Leases:
    def __init__(self, redis: Any, ttl_ms: int = 15_000, prefix: str = "ml:") -> None:
        self.redis = redis
        self.ttl_ms = ttl_ms
        self.prefix = prefix
        self.crash_hook: Callable[[str], None] | None = None

    async def acquire(self, name: str) -> Lease | None:
        key = f"{self.prefix}lease:{name}"
        token = uuid.uuid4().hex
        if await self.redis.set(key, token, nx=True, px=self.ttl_ms):
            return Lease(self, key, token)
        return None
