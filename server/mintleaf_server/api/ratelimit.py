"""Per-developer request rate limits: a token bucket per developer, in this process.

Design note. The bucket lives in the server process, not in Redis: a shared counter would add a
Redis round trip to every call (the API's whole overhead budget is about 1 ms, bench_api.py), and a
limit meant to stop one developer from flooding the service works as well per replica (N replicas
admit up to N times the rate; docs/configuration.md says so). Rejected: a fixed window per second
(bursts of twice the rate at window edges), limits per API key (a developer with many keys would
multiply its share). Memory is bounded: when many developers have buckets, the full ones (nothing
to remember) are dropped."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

__all__ = ["RateLimiter"]

_PRUNE_AT = 10_000


class RateLimiter:
    def __init__(self, rate: float, burst: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst or max(1, int(2 * rate)))
        self.clock = clock
        self._buckets: dict[uuid.UUID, list[float]] = {}  # developer -> [tokens, last refill]

    def take(self, developer: uuid.UUID) -> float | None:
        """Spend one token: None when the call may go on, else the seconds until one is free."""
        now = self.clock()
        bucket = self._buckets.get(developer)
        if bucket is None:
            if len(self._buckets) >= _PRUNE_AT:
                self._prune(now)
            bucket = self._buckets[developer] = [self.burst, now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return None
        bucket[0] = tokens
        return (1.0 - tokens) / self.rate

    def _prune(self, now: float) -> None:
        full = [
            d
            for d, (tokens, last) in self._buckets.items()
            if tokens + (now - last) * self.rate >= self.burst
        ]
        for d in full:
            del self._buckets[d]
