"""Redis leases: a token with a TTL, renewed by time (every TTL/3) while a run is processed.

Design note. The lease only avoids duplicate work; correctness comes from PostgreSQL: taking a
run increments its `lease_epoch`, and every commit is conditional on that epoch, so a worker that
lost its lease (paused, partitioned, its Redis key expired) can never write. A worker that pops a
run someone else holds leaves a *dirty* mark (atomically with the failed acquire); the holder
reads and clears it atomically with its release and re-queues the run, so a wake-up that arrives
while a run is held is never lost. Rejected: renewing on every step (a Lua round trip per step
costs ~0.55x the commit floor, perf-floor.md), PostgreSQL advisory locks (held per connection: a
pool connection per running execution), and dropping the wake-up on a failed acquire (the run
would wait for the recovery sweep)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from typing import Any

__all__ = ["Lease", "Leases"]

_ACQUIRE = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
return 0
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if redis.call('DEL', KEYS[2]) == 1 then return 2 end
  return 1
end
return 0
"""


class Lease:
    def __init__(self, leases: Leases, name: str, token: str) -> None:
        self.leases = leases
        self.name = name
        self.token = token
        self.lost = False
        self._task: asyncio.Task[None] | None = None

    def keep(self, on_lost: Callable[[], None] | None = None) -> None:
        """Renew every TTL/3 until released (by time: a long effect keeps its lease)."""

        async def renew() -> None:
            leases = self.leases
            ttl = leases.ttl_ms
            while True:
                await asyncio.sleep(ttl / 3000)
                if leases.crash_hook is not None:
                    leases.crash_hook("mid_lease_renewal")
                try:
                    ok = await leases.renew_script(keys=[leases.key(self.name)], args=[self.token, ttl])
                except Exception:
                    continue  # Redis unavailable: the fencing epoch still protects every write
                if not ok:
                    self.lost = True
                    if on_lost is not None:
                        on_lost()
                    return

        self._task = asyncio.create_task(renew())

    async def release(self) -> bool:
        """Give the run up. True when a wake-up arrived while it was held (re-queue it)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        leases = self.leases
        try:
            got = await leases.release_script(
                keys=[leases.key(self.name), leases.dirty_key(self.name)], args=[self.token]
            )
        except Exception:
            return True  # unknown: looking again costs one read
        return int(got) == 2


class Leases:
    def __init__(self, redis: Any, ttl_ms: int = 15_000, prefix: str = "ml:") -> None:
        self.redis = redis
        self.ttl_ms = ttl_ms
        self.prefix = prefix
        self.crash_hook: Callable[[str], None] | None = None
        self.acquire_script = redis.register_script(_ACQUIRE)
        self.renew_script = redis.register_script(_RENEW)
        self.release_script = redis.register_script(_RELEASE)

    def key(self, name: str) -> str:
        return f"{self.prefix}lease:{name}"

    def dirty_key(self, name: str) -> str:
        return f"{self.prefix}dirty:{name}"

    async def acquire(self, name: str) -> Lease | None:
        """The lease of run `name` (`<execution id>|<run>`), or None (marked dirty) if held."""
        token = uuid.uuid4().hex
        got = await self.acquire_script(
            keys=[self.key(name), self.dirty_key(name)], args=[token, self.ttl_ms, self.ttl_ms * 4]
        )
        return Lease(self, name, token) if int(got) == 1 else None

    async def held(self, names: list[str]) -> list[bool]:
        """Which of these runs are leased right now (one pipelined round trip)."""
        if not names:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.exists(self.key(name))
        return [bool(x) for x in await pipe.execute()]
