"""Durable timers: rows in PostgreSQL (the truth), mirrored in a Redis sorted set (score = fire
time in ms) that one loop per process watches. When a timer is due its run is re-queued; the
worker then sees the due row, delivers TimerFired and deletes the row. The sorted set is rebuilt
from the rows when Redis was flushed, and a row overdue by more than a moment re-queues its run
from the recovery sweep, so neither a flushed Redis nor a crash between commit and ZADD loses
a timer. Rejected: one asyncio sleep per timer (lost with the process) and polling the table."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from mintleaf_server.engine.queue import ReadyQueue

__all__ = ["TimerWheel"]

# Pop the due members atomically (ZRANGEBYSCORE + ZREM in one step): two processes watching
# the same set never both fire one timer.
_POP_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 500)
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return due
"""


class TimerWheel:
    def __init__(self, redis: Any, queue: ReadyQueue, prefix: str = "ml:", tick_s: float = 0.05) -> None:
        self.redis = redis
        self.queue = queue
        self.key = f"{prefix}timers"
        self.tick_s = tick_s
        self._pop_due = redis.register_script(_POP_DUE)
        self._kick = asyncio.Event()

    async def schedule(self, run_member: str, timer_id: str, fire_at_ms: int) -> None:
        await self.schedule_many([(run_member, timer_id, fire_at_ms)])

    async def schedule_many(self, timers: list[tuple[str, str, int]]) -> None:
        if timers:
            await self.redis.zadd(self.key, {f"{m}#{t}": at for m, t, at in timers})
            self._kick.set()

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            now = int(time.time() * 1000)
            wait = 0.25
            try:
                due = await self._pop_due(keys=[self.key], args=[now])
                members = [(d.decode() if isinstance(d, bytes) else str(d)).rsplit("#", 1)[0] for d in due]
                await self.queue.push(*members)
                nxt = await self.redis.zrange(self.key, 0, 0, withscores=True)
                if nxt:
                    wait = min(0.25, max(0.002, (nxt[0][1] - time.time() * 1000) / 1000))
            except Exception:
                wait = 0.5
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), timeout=wait)
