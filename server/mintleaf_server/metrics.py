"""Prometheus metrics: a private registry per App, the counters the API and the worker bump, and
a small HTTP endpoint (`metrics_listen`, off by default) that serves them at `/metrics`.

Design note. Every counter and histogram of our own is a plain Python int (or a list of bucket
counts) bumped on the event loop thread and turned into metric families only when scraped, by one
custom collector. A worker commit costs an integer increment, not a prometheus_client child
lookup and lock (`Counter.labels(...).inc()` is about a microsecond; a 1,000-branch fan-out does
thousands of them). There are no locks because there is no second thread: the endpoint is an
`asyncio.start_server` handler on the App's own loop, so a scrape runs between two callbacks of
the loop, never in the middle of an update, and its gauges are read fresh: the ready-queue depth
is one ZCARD awaited (with a short timeout, the last value kept if Redis does not answer) before
the page is built; pool statistics are `get_stats()` (no I/O). Building the page is synchronous
(about a millisecond for a few hundred series) — the price of the single thread.

Rejected: prometheus_client's `start_http_server` (a daemon thread per App: it can only read a
cached ready-queue depth, would need locks or care around every dict the loop mutates, and its
`shutdown()` blocks for up to half a second); the global default registry (tests run several Apps
in one process, and its duplicate-name checks would refuse the second); Counter/Histogram objects
on the hot path (a lock and a label lookup per increment, plus a `_created` series per child);
labels naming an execution, a developer or a tool (unbounded cardinality; effect kinds and RPC
methods are fixed by the code).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from bisect import bisect_left
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from mintleaf_server.engine.effects import EFFECT_KINDS
from mintleaf_server.engine.events import EffectDone, EffectFailed, EffectSuspended

if TYPE_CHECKING:
    from mintleaf_server.runtime import Runtime

__all__ = [
    "EFFECT_BUCKETS",
    "RPC_BUCKETS",
    "EngineStats",
    "Histogram",
    "Metrics",
    "MetricsEndpoint",
    "effect_outcome",
]

log = logging.getLogger("mintleaf.metrics")

# Seconds. RPCs: a cached read is ~1 ms, a CreateExecution a few ms, a slow store seconds.
RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Effects: tool calls and searches in ms, model calls in seconds to minutes.
EFFECT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

_READY_TIMEOUT_S = 0.5  # a scrape never waits longer than this for the ready-queue depth
_HEAD_TIMEOUT_S = 10.0  # a client that does not send its request head within this is dropped
_HEAD_LIMIT = 16 * 1024


class Histogram:
    """Bucket counts of observations (`le` buckets, cumulated only when exported)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def buckets(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


def effect_outcome(event: Any) -> str:
    """done | suspended | timeout | failed: what an effect's answer means for the metrics."""
    if isinstance(event, EffectDone):
        return "done"
    if isinstance(event, EffectSuspended):
        return "suspended"
    if isinstance(event, EffectFailed) and (event.error or {}).get("kind") == "timeout":
        return "timeout"
    return "failed"


class EngineStats:
    """What the worker counts as it goes (always on: plain integer increments); exported by the
    metrics collector of the App whose worker it is."""

    __slots__ = (
        "commits_batch",
        "commits_single",
        "effect_seconds",
        "effects",
        "finished",
        "in_progress",
        "lease_lost",
        "recovered",
        "runs_branch",
        "runs_main",
        "transitions",
    )

    def __init__(self) -> None:
        self.runs_main = 0  # runs taken (lease acquired), the execution's own flow
        self.runs_branch = 0  # ... and branches of a fan-out
        self.in_progress = 0  # runs taken and not yet let go
        self.commits_single = 0  # fenced commits of one run (a statement or a transaction)
        self.commits_batch = 0  # COMMIT_BRANCHES statements (several branches of one fan-out)
        self.transitions = 0  # transition rows those commits wrote
        self.lease_lost = 0  # commits refused because the run's lease epoch moved on
        self.recovered = 0  # runs the recovery sweep re-queued
        self.finished: dict[str, int] = {}  # executions by terminal status
        self.effects: dict[tuple[str, str], int] = {}  # (kind, outcome)
        self.effect_seconds: dict[str, Histogram] = {}

    def finish(self, status: str) -> None:
        self.finished[status] = self.finished.get(status, 0) + 1

    def effect(self, kind: Any, event: Any, seconds: float) -> None:
        name = kind if kind in EFFECT_KINDS else "other"
        key = (name, effect_outcome(event))
        self.effects[key] = self.effects.get(key, 0) + 1
        hist = self.effect_seconds.get(name)
        if hist is None:
            hist = self.effect_seconds[name] = Histogram(EFFECT_BUCKETS)
        hist.observe(seconds)


class Metrics:
    """One App's metrics: the private registry (our collector + process, platform and GC) and the
    RPC counts the `@unary`/`@streaming` decorators record (runtime.extras["metrics"])."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(_Collector(self))
        self.rpc_counts: dict[tuple[str, str], int] = {}  # (method, code)
        self.rpc_seconds: dict[str, Histogram] = {}
        self.ready_depth: int | None = None  # last ZCARD of the ready queue (None: never read)

    def rpc(self, method: str, code: str, seconds: float | None) -> None:
        """One finished RPC; `seconds` None for streams (their lifetime is the client's)."""
        key = (method, code)
        self.rpc_counts[key] = self.rpc_counts.get(key, 0) + 1
        if seconds is not None:
            hist = self.rpc_seconds.get(method)
            if hist is None:
                hist = self.rpc_seconds[method] = Histogram(RPC_BUCKETS)
            hist.observe(seconds)

    def worker(self) -> Any:
        return self.runtime.extras.get("worker")

    async def refresh(self) -> None:
        """Reads the gauges that need I/O (the ready-queue depth), before a scrape."""
        worker = self.worker()
        if worker is None:
            return
        try:
            self.ready_depth = int(
                await asyncio.wait_for(self.runtime.redis.zcard(worker.queue.key), _READY_TIMEOUT_S)
            )
        except Exception:  # Redis down or slow: the last value read stands
            log.debug("metrics: ready-queue depth not read", exc_info=True)

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition (Prometheus text or OpenMetrics, as `accept` asks) and its content type."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        m = self.metrics
        requests = CounterMetricFamily(
            "mintleaf_rpc_requests",
            "gRPC calls finished, by method and status code.",
            labels=["method", "code"],
        )
        for (method, code), n in sorted(m.rpc_counts.items()):
            requests.add_metric([method, code], n)
        yield requests
        duration = HistogramMetricFamily(
            "mintleaf_rpc_duration_seconds",
            "Time from a unary gRPC call's arrival to its answer (streams are not timed).",
            labels=["method"],
        )
        for method, hist in sorted(m.rpc_seconds.items()):
            duration.add_metric([method], hist.buckets(), hist.total)
        yield duration
        yield from _pool_families(m.runtime)
        worker = m.worker()
        if worker is not None:
            yield from _engine_families(worker.stats, worker, m.ready_depth)


def _pool_families(runtime: Runtime) -> Iterable[Metric]:
    db = getattr(runtime, "db", None)
    if db is None:
        return
    stats = db.pool.get_stats()  # counters are absent until they are not zero
    for key, name, doc in (
        ("pool_size", "mintleaf_db_pool_size", "PostgreSQL connections open (in use or idle)."),
        ("pool_available", "mintleaf_db_pool_available", "Idle connections ready in the pool."),
        ("pool_max", "mintleaf_db_pool_max_size", "The pool's maximum size (pool_max_size)."),
        ("requests_waiting", "mintleaf_db_pool_requests_waiting", "Requests waiting for a connection now."),
    ):
        yield GaugeMetricFamily(name, doc, value=stats.get(key, 0))
    for key, name, doc in (
        (
            "requests_queued",
            "mintleaf_db_pool_requests_queued",
            "Requests that had to wait for a connection.",
        ),
        ("requests_errors", "mintleaf_db_pool_request_errors", "Requests that got no connection (timeout)."),
        ("connections_lost", "mintleaf_db_pool_connections_lost", "Connections found broken and dropped."),
    ):
        yield CounterMetricFamily(name, doc, value=stats.get(key, 0))
    yield CounterMetricFamily(
        "mintleaf_db_pool_request_wait_seconds",
        "Total time requests spent waiting for a connection.",
        value=stats.get("requests_wait_ms", 0) / 1000,
    )


def _engine_families(stats: EngineStats, worker: Any, ready_depth: int | None) -> Iterable[Metric]:
    runs = CounterMetricFamily(
        "mintleaf_engine_runs", "Runs taken by this worker (lease acquired).", labels=["kind"]
    )
    runs.add_metric(["main"], stats.runs_main)
    runs.add_metric(["branch"], stats.runs_branch)
    yield runs
    commits = CounterMetricFamily(
        "mintleaf_engine_commits",
        "Fenced commits: one run's advance (single) or the ends of several branches (batch).",
        labels=["mode"],
    )
    commits.add_metric(["single"], stats.commits_single)
    commits.add_metric(["batch"], stats.commits_batch)
    yield commits
    yield CounterMetricFamily(
        "mintleaf_engine_transitions", "Transitions written by this worker.", value=stats.transitions
    )
    yield CounterMetricFamily(
        "mintleaf_engine_lease_lost",
        "Runs whose commit was refused: their lease epoch had moved on (another worker took them).",
        value=stats.lease_lost,
    )
    yield CounterMetricFamily(
        "mintleaf_engine_recovered_runs",
        "Runs the recovery sweep re-queued (no lease held, able to progress).",
        value=stats.recovered,
    )
    effects = CounterMetricFamily(
        "mintleaf_engine_effects", "Effects run, by kind and outcome.", labels=["kind", "outcome"]
    )
    for (kind, outcome), n in sorted(stats.effects.items()):
        effects.add_metric([kind, outcome], n)
    yield effects
    effect_seconds = HistogramMetricFamily(
        "mintleaf_engine_effect_duration_seconds", "Time an effect took, by kind.", labels=["kind"]
    )
    for kind, hist in sorted(stats.effect_seconds.items()):
        effect_seconds.add_metric([kind], hist.buckets(), hist.total)
    yield effect_seconds
    finished = CounterMetricFamily(
        "mintleaf_executions_finished",
        "Executions that reached a terminal status on this worker.",
        labels=["status"],
    )
    for status, n in sorted(stats.finished.items()):
        finished.add_metric([status], n)
    yield finished
    yield GaugeMetricFamily(
        "mintleaf_engine_runs_in_progress", "Runs this worker holds now.", value=stats.in_progress
    )
    yield GaugeMetricFamily(
        "mintleaf_engine_concurrency",
        "Runs this worker may hold at once (worker_concurrency).",
        value=worker.concurrency,
    )
    if ready_depth is not None:
        yield GaugeMetricFamily(
            "mintleaf_engine_ready_queue_depth",
            "Runs queued and not yet taken, shared by every worker (read at scrape time).",
            value=ready_depth,
        )


class MetricsEndpoint:
    """`GET /metrics` over plain HTTP/1.x on `listen` (host:port; port 0 picks a free one), served
    on the App's event loop. One request per connection; anything else is 404 or 405."""

    def __init__(self, metrics: Metrics, listen: str) -> None:
        self.metrics = metrics
        host, _, port = listen.rpartition(":")
        self.host = host.strip("[]")  # [::1]:9464
        self.port = int(port)
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        """Binds and returns the port bound (the real one when asked for port 0)."""
        try:
            self.server = await asyncio.start_server(self._serve, self.host, self.port, limit=_HEAD_LIMIT)
        except OSError as exc:
            raise RuntimeError(f"could not listen on {self.host}:{self.port} for metrics: {exc}") from exc
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _HEAD_TIMEOUT_S)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _version = lines[0].split(" ", 2)
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            path = target.split("?", 1)[0]
            if path != "/metrics":
                status, body, ctype = "404 Not Found", b"not found: try /metrics\n", "text/plain"
            elif method not in ("GET", "HEAD"):
                status, body, ctype = "405 Method Not Allowed", b"GET /metrics\n", "text/plain"
            else:
                await self.metrics.refresh()
                body, ctype = self.metrics.render(headers.get("accept", ""))
                status = "200 OK"
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        except (asyncio.LimitOverrunError, ValueError, UnicodeError):
            status, body, ctype, method = "400 Bad Request", b"bad request\n", "text/plain", "GET"
        except Exception:
            log.exception("metrics: scrape failed")
            status, body, ctype, method = "500 Internal Server Error", b"scrape failed\n", "text/plain", "GET"
        head_out = (
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode("latin-1")
        with contextlib.suppress(ConnectionError):
            writer.write(head_out if method == "HEAD" else head_out + body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
