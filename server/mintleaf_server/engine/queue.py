"""The ready queue: a Redis sorted set of runs to look at, popped with BZPOPMIN (a blocking pop:
wake-ups, not polling). ZADD NX deduplicates: a run queued twice is looked at once. Redis holds
nothing that cannot be rebuilt: the recovery sweep re-queues runs from PostgreSQL.

A member is `<execution id>|<run>|<developer id>`: the developer id lets the worker address the
execution row by its primary key (developer_id, id); the lease is named by `<execution id>|<run>`."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["ReadyQueue", "lease_name", "member", "parse_member"]


def member(execution_id: str, run: str = "main", developer_id: str = "") -> str:
    return f"{execution_id}|{run}|{developer_id}"


def parse_member(value: bytes | str) -> tuple[str, str, str]:
    """(execution id, run, developer id or "")."""
    text = value.decode() if isinstance(value, bytes) else value
    eid, _, rest = text.partition("|")
    run, _, dev = rest.partition("|")
    return eid, run or "main", dev


def lease_name(value: str) -> str:
    eid, run, _ = parse_member(value)
    return f"{eid}|{run}"


class ReadyQueue:
    def __init__(self, redis: Any, prefix: str = "ml:") -> None:
        self.redis = redis
        self.key = f"{prefix}ready"

    async def push(self, *members: str) -> None:
        if members:
            now = time.time()
            await self.redis.zadd(self.key, dict.fromkeys(members, now), nx=True)

    async def pop(self, timeout: float) -> str | None:
        got = await self.redis.bzpopmin(self.key, timeout=timeout)
        if not got:
            return None
        value = got[1]
        return value.decode() if isinstance(value, bytes) else str(value)

    async def pop_more(self, count: int) -> list[str]:
        """Up to `count` more members without blocking (drains a burst in one round trip)."""
        if count <= 0:
            return []
        got = await self.redis.zpopmin(self.key, count)
        return [v.decode() if isinstance(v, bytes) else str(v) for v, _ in got]
