"""Durable timers: rows in PostgreSQL (the truth), mirrored in a Redis sorted set (score = fire
time in ms) that one loop per process watches. When a timer is due its run is re-queued; the
worker then sees the due row and delivers TimerFired. The sorted set is rebuilt from the rows by
the recovery sweep, so a flushed Redis loses nothing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mintleaf_server.engine.queue import ReadyQueue

__all__ = ["TimerWheel"]


class TimerWheel:
    def __init__(self, redis: Any, queue: ReadyQueue, prefix: str = "ml:", tick_s: float = 0.05) -> None:
        self.redis = redis
        self.queue = queue
        self.key = f"{prefix}timers"
        self.tick_s = tick_s

    async def schedule(self, run_member: str, timer_id: str, fire_at_ms: int) -> None:
        await self.redis.zadd(self.key, {f"{run_member}#{timer_id}": fire_at_ms})

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            now = int(time.time() * 1000)
            try:
                due = await self.redis.zrangebyscore(self.key, "-inf", now, start=0, num=500)
                for item in due:
                    text = item.decode() if isinstance(item, bytes) else str(item)
                    if await self.redis.zrem(self.key, item):
                        await self.queue.push(text.rsplit("#", 1)[0])
                nxt = await self.redis.zrange(self.key, 0, 0, withscores=True)
            except Exception:
                nxt = []
            wait = self.tick_s if not nxt else min(1.0, max(0.0, (nxt[0][1] - now) / 1000))
            await asyncio.sleep(max(wait, 0.005) if nxt else 0.25)
