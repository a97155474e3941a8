"""The ready queue: a Redis sorted set of runs to look at, popped with BZPOPMIN (a blocking pop:
wake-ups, not polling). ZADD NX deduplicates: a run queued twice is looked at once. Redis holds
nothing that cannot be rebuilt: the recovery sweep re-queues every active run from PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["ReadyQueue", "member", "parse_member"]


def member(execution_id: str, run: str = "main") -> str:
    return f"{execution_id}|{run}"


def parse_member(value: bytes | str) -> tuple[str, str]:
    text = value.decode() if isinstance(value, bytes) else value
    eid, _, run = text.partition("|")
    return eid, run or "main"


class ReadyQueue:
    def __init__(self, redis: Any, prefix: str = "ml:") -> None:
        self.redis = redis
        self.key = f"{prefix}ready"

    async def push(self, *members: str) -> None:
        if members:
            now = time.time()
            await self.redis.zadd(self.key, {m: now for m in members}, nx=True)

    async def pop(self, timeout: float) -> str | None:
        got = await self.redis.bzpopmin(self.key, timeout=timeout)
        if not got:
            return None
        value = got[1]
        return value.decode() if isinstance(value, bytes) else str(value)
