"""Per-developer request rate limits (limits.rate_per_second / rate_burst): the token bucket on a
fake clock, the setting's validation, and a server that enforces it: RESOURCE_EXHAUSTED with a
retry delay, nothing changed by a refused call, other developers unaffected."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from mintleaf import v1
from mintleaf_server.api.ratelimit import RateLimiter
from mintleaf_server.config import ConfigError, Limits, load_settings
from support.errors import expect_error
from support.harness import ServerThread


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(2, burst=3, clock=clock)
    dev, other = uuid.uuid4(), uuid.uuid4()
    assert [limiter.take(dev) for _ in range(3)] == [None, None, None]
    wait = limiter.take(dev)
    assert wait == pytest.approx(0.5)  # one token every 1/2 s
    assert limiter.take(other) is None  # a bucket per developer
    clock.now += 0.5
    assert limiter.take(dev) is None
    assert limiter.take(dev) == pytest.approx(0.5)
    clock.now += 10  # refills up to the burst, not beyond
    assert [limiter.take(dev) for _ in range(4)][-1] == pytest.approx(0.5)


def test_default_burst_and_pruning() -> None:
    clock = Clock()
    limiter = RateLimiter(5, clock=clock)
    assert limiter.burst == 10
    for _ in range(10_000):
        limiter.take(uuid.uuid4())
    clock.now += 60  # every bucket is full again: nothing to remember
    limiter.take(uuid.uuid4())
    assert len(limiter._buckets) == 1
    with pytest.raises(ValueError):
        RateLimiter(0)


def test_setting_is_validated() -> None:
    assert load_settings(env={"MINTLEAF_LIMIT_RATE_PER_SECOND": "20"}).limits.rate_per_second == 20
    assert load_settings(env={}).limits.rate_per_second == 0  # off by default
    with pytest.raises(ConfigError, match=r"limits\.rate_per_second"):
        load_settings(env={"MINTLEAF_LIMIT_RATE_PER_SECOND": "-1"})
    with pytest.raises(ConfigError, match=r"limits\.max_page_size"):
        load_settings(env={"MINTLEAF_LIMIT_MAX_PAGE_SIZE": "0"})  # zero still means nothing elsewhere


@pytest.fixture(scope="module")
def limited(pg_url: str, redis_url: str, data_root: Path) -> Iterator[ServerThread]:
    # API only (no worker): it shares the session's database and Redis with the main test server.
    srv = ServerThread(
        pg_url,
        redis_url,
        data_root / "rate-limited",
        worker_enabled=False,
        limits=Limits(rate_per_second=1, rate_burst=3),  # slow refill: a stalled test stays exact
    )
    srv.start()
    yield srv
    srv.stop()


def _retry_delay(exc: Any) -> float:
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    info = error_details_pb2.RetryInfo()
                    detail.Unpack(info)
                    return info.retry_delay.ToNanoseconds() / 1e9
    raise AssertionError("no RetryInfo in the error")


def test_a_developer_over_the_rate_is_refused_and_nothing_changes(limited: ServerThread) -> None:
    client, other = limited.client(), limited.client()
    try:
        agent = client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="one")))
        client.agents.get_agent(v1.GetAgentRequest(id=agent.id))
        client.agents.get_agent(v1.GetAgentRequest(id=agent.id))  # the burst of 3 is spent
        err = expect_error(
            lambda: client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="two"))),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            reason="RATE_LIMITED",
        )
        assert "per second" in err.message
        assert 0 < float(err.metadata["retry_after_seconds"]) <= 1.0 + 1e-3
        # Another developer has a bucket of its own.
        other.agents.list_agents(v1.ListAgentsRequest())
        # After the delay the developer is served again; the refused create created nothing.
        with pytest.raises(grpc.RpcError) as info:
            client.agents.list_agents(v1.ListAgentsRequest())
        time.sleep(_retry_delay(info.value) + 0.05)
        names = [a.name for a in client.agents.list_agents(v1.ListAgentsRequest()).agents]
        assert names == ["one"]
    finally:
        client.close()
        other.close()


def test_streams_are_counted_too(limited: ServerThread) -> None:
    client = limited.client()
    try:
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as info:  # NOT_FOUND: admitted, then looked up
                list(
                    client.executions.stream_transitions(
                        v1.StreamTransitionsRequest(execution_id=str(uuid.uuid4()))
                    )
                )
            assert info.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as info:
            list(
                client.executions.stream_transitions(
                    v1.StreamTransitionsRequest(execution_id=str(uuid.uuid4()))
                )
            )
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        client.close()
