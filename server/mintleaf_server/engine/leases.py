"""Redis leases: a token with a TTL, renewed by time (every TTL/3) while a run is processed.

Design note. The lease only avoids duplicate work; correctness comes from PostgreSQL: taking a
run increments its `lease_epoch`, and every commit is conditional on that epoch, so a worker that
lost its lease (paused, partitioned, its Redis key expired) can never write. A worker that pops a
run someone else holds leaves a *dirty* mark (atomically with the failed acquire); the holder
reads and clears it atomically with its release and re-queues the run, so a wake-up that arrives
while a run is held is never lost. Rejected: renewing on every step (a Lua round trip per step
costs ~0.55x the commit floor, perf-floor.md), PostgreSQL advisory locks (held per connection: a
pool connection per running execution), and dropping the wake-up on a failed acquire (the run
would wait for the recovery sweep).

Releasing never depends on the renewal task obeying its cancel: the Redis client can turn a
cancel that lands inside a command into an ordinary error, and a renewal loop that swallowed it
kept renewing for ever while `release` awaited it: the run stayed leased (so the sweep skipped
it) and its dirty mark was never read. So the release does not cancel the loop: it sets a stop
event the loop waits on between renewals (a renewal in flight completes, no cancel ever lands
inside a Redis command), waits for it a bounded time, and cancels only a renewal stuck past that;
a renewal that still lands after the release cannot revive the lease (the script checks the
token). Renewals also extend the dirty mark, so a wake-up that arrives early in a long hold is
still there at the release."""

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
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
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
# The same, for many runs in one round trip (a burst of branches of one fan-out): one token for
# the batch, KEYS in (lease, dirty) pairs; returns one flag per pair.
_ACQUIRE_MANY = """
local out = {}
for i = 1, #KEYS, 2 do
  if redis.call('SET', KEYS[i], ARGV[1], 'NX', 'PX', ARGV[2]) then
    out[#out + 1] = 1
  else
    redis.call('SET', KEYS[i + 1], '1', 'PX', ARGV[3])
    out[#out + 1] = 0
  end
end
return out
"""
_RELEASE_MANY = """
local out = {}
for i = 1, #KEYS, 2 do
  local r = 0
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
    if redis.call('DEL', KEYS[i + 1]) == 1 then r = 2 else r = 1 end
  end
  out[#out + 1] = r
end
return out
"""
_STOP_WAIT_S = 1.0  # how long a release waits for its renewal loop to end


class Lease:
    def __init__(self, leases: Leases, name: str, token: str) -> None:
        self.leases = leases
        self.name = name
        self.token = token
        self.lost = False
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def keep(self, on_lost: Callable[[], None] | None = None) -> None:
        """Renew every TTL/3 until released (by time: a long effect keeps its lease)."""
        stop = self._stop

        async def renew() -> None:
            leases = self.leases
            ttl = leases.ttl_ms
            keys = [leases.key(self.name), leases.dirty_key(self.name)]
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=ttl / 3000)
                if stop.is_set():
                    return
                if leases.crash_hook is not None:
                    leases.crash_hook("mid_lease_renewal")
                try:
                    ok = await leases.renew_script(keys=keys, args=[self.token, ttl, ttl * 4])
                except Exception:
                    if stop.is_set() or _cancelling():
                        return  # a cancel the client turned into an error: stop, never renew on
                    continue  # Redis unavailable: the fencing epoch still protects every write
                if not ok:
                    self.lost = True
                    if on_lost is not None:
                        on_lost()
                    return

        self._task = asyncio.create_task(renew())

    async def release(self) -> bool:
        """Give the run up. True when a wake-up arrived while it was held (re-queue it)."""
        self._stop.set()  # the loop ends between renewals; a renewal in flight just completes
        task = self._task
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=_STOP_WAIT_S)
            if not done:  # a renewal stuck in Redis: give up on it (bounded, never awaited again)
                task.cancel()
        leases = self.leases
        try:
            got = await leases.release_script(
                keys=[leases.key(self.name), leases.dirty_key(self.name)], args=[self.token]
            )
        except Exception:
            return True  # unknown: looking again costs one read
        return int(got) == 2


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class Leases:
    def __init__(self, redis: Any, ttl_ms: int = 15_000, prefix: str = "ml:") -> None:
        self.redis = redis
        self.ttl_ms = ttl_ms
        self.prefix = prefix
        self.crash_hook: Callable[[str], None] | None = None
        self.acquire_script = redis.register_script(_ACQUIRE)
        self.renew_script = redis.register_script(_RENEW)
        self.release_script = redis.register_script(_RELEASE)
        self.acquire_many_script = redis.register_script(_ACQUIRE_MANY)
        self.release_many_script = redis.register_script(_RELEASE_MANY)

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

    async def acquire_many(self, names: list[str]) -> list[Lease | None]:
        """`acquire` for many runs in one round trip (one token shared by the batch)."""
        if not names:
            return []
        token = uuid.uuid4().hex
        keys = [k for name in names for k in (self.key(name), self.dirty_key(name))]
        got = await self.acquire_many_script(keys=keys, args=[token, self.ttl_ms, self.ttl_ms * 4])
        return [
            Lease(self, name, token) if int(ok) == 1 else None for name, ok in zip(names, got, strict=True)
        ]

    async def release_many(self, leases: list[Lease]) -> list[bool]:
        """Release leases that were never kept (no renewal loop), all from one `acquire_many`, in
        one round trip. One flag per lease: True when a wake-up arrived meanwhile."""
        if not leases:
            return []
        keys = [k for lease in leases for k in (self.key(lease.name), self.dirty_key(lease.name))]
        try:
            got = await self.release_many_script(keys=keys, args=[leases[0].token])
        except Exception:
            return [True] * len(leases)  # unknown: looking again costs one read
        return [int(x) == 2 for x in got]

    async def held(self, names: list[str]) -> list[bool]:
        """Which of these runs are leased right now (one pipelined round trip)."""
        if not names:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.exists(self.key(name))
        return [bool(x) for x in await pipe.execute()]
