"""Steps with effects (a scripted effect runner on a dedicated server): function tools suspend
and resume with SubmitToolResults, retryable failures retry with backoff, step timeouts; and
recovery: Redis flushed mid-run (ready queue, leases and timers lost) → rebuilt from PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

import grpc
from engine_flows import finished, output, run_to_end, start, transitions, value, wait_for, wait_status

from mintleaf import v1
from support.errors import expect_error

S = v1.ExecutionStatus
TOOLS = [
    {"name": n, "type": "function", "function": {"parameters": {"type": "object"}}}
    for n in ("flaky", "slow", "ask", "echo")
]


def task(main: list[Any], **extra: Any) -> dict[str, Any]:
    return {"name": "fx", "tools": TOOLS, "main": main, **extra}


def test_function_tool_waits_for_submitted_results(fx_client: Any) -> None:
    ex = start(
        fx_client, task([{"tool": "ask", "arguments": {"q": "$ _.q"}}, {"evaluate": {"a": "$ _"}}]), {"q": 1}
    )
    ex = wait_status(fx_client, ex.id, S.AWAITING_INPUT)
    assert len(ex.waits) == 1 and ex.waits[0].kind == "tool_calls"
    call = ex.waits[0].tool_calls[0]
    assert call.name == "ask" and call.arguments.to_dict() == {"q": 1}
    expect_error(
        lambda: fx_client.executions.submit_tool_results(
            v1.SubmitToolResultsRequest(
                id=ex.id, results=[v1.ToolResult(tool_call_id="call_nope", output=value(1))]
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    fx_client.executions.submit_tool_results(
        v1.SubmitToolResultsRequest(
            id=ex.id, results=[v1.ToolResult(tool_call_id=call.id, output=value({"r": 42}))]
        )
    )
    ex = finished(fx_client, ex.id)
    assert ex.status == S.SUCCEEDED and output(ex) == {"a": {"r": 42}}


def test_retryable_failure_retries_then_succeeds(fx_client: Any, fx: Any) -> None:
    retry = {"max_attempts": 4, "initial_interval": 0.1, "backoff_coefficient": 2}
    began = time.monotonic()
    ex, _ = run_to_end(fx_client, task([{"tool": "flaky", "arguments": {"ok_at": 3}, "retry": retry}]))
    assert ex.status == S.SUCCEEDED, ex.error
    assert output(ex) == {"attempt": 3}
    assert time.monotonic() - began >= 0.3  # 0.1 s + 0.2 s of durable backoff timers
    attempts = [c["attempt"] for c in fx[1].calls if c["execution_id"] == ex.id]
    assert attempts == [1, 2, 3]


def test_retries_run_out(fx_client: Any) -> None:
    retry = {"max_attempts": 2, "initial_interval": 0.05}
    ex, _ = run_to_end(fx_client, task([{"tool": "flaky", "arguments": {"ok_at": 9}, "retry": retry}]))
    assert ex.status == S.FAILED and "after 2 attempts" in ex.error, ex.error


def test_step_timeout(fx_client: Any) -> None:
    retry = {"max_attempts": 1}
    began = time.monotonic()
    ex, _ = run_to_end(
        fx_client, task([{"tool": "slow", "arguments": {"seconds": 30}, "timeout": 0.3, "retry": retry}])
    )
    assert ex.status == S.FAILED and "timed out" in ex.error, ex.error
    assert time.monotonic() - began < 10


def test_cancel_during_an_effect(fx_client: Any) -> None:
    ex = start(fx_client, task([{"tool": "slow", "arguments": {"seconds": 1.0}}, {"log": "after"}]))
    wait_for(fx_client, ex.id, lambda e: e.status == S.RUNNING)
    fx_client.executions.cancel_execution(v1.CancelExecutionRequest(id=ex.id))
    ex = finished(fx_client, ex.id)
    assert ex.status == S.CANCELLED
    assert not any(t.step_type == "log" for t in transitions(fx_client, ex.id))


def _flush(fx: Any) -> None:
    srv = fx[0]
    srv.call(srv.app.runtime.redis.flushdb())


def test_redis_flushed_mid_run_is_rebuilt_from_postgres(fx_client: Any, fx: Any) -> None:
    doc = task(
        [
            {
                "foreach": {
                    "in": "list(range(40))",
                    "parallelism": 4,
                    "do": {"tool": "slow", "arguments": {"seconds": 0.05, "i": "$ _"}},
                }
            },
            {"evaluate": {"n": "$ len(_)"}},
        ]
    )
    ex = start(fx_client, doc)
    wait_for(fx_client, ex.id, lambda e: e.transition_count >= 10)
    _flush(fx)
    ex = finished(fx_client, ex.id, timeout=60)
    assert ex.status == S.SUCCEEDED and output(ex) == {"n": 40}
    ts = transitions(fx_client, ex.id)
    assert [t.sequence for t in ts] == list(range(1, len(ts) + 1))


def test_durable_timers_survive_a_redis_flush(fx_client: Any, fx: Any) -> None:
    retry = {"max_attempts": 3, "initial_interval": 1.0}
    doc = task(
        [
            {"parallel": [{"sleep": 1.0}, {"tool": "flaky", "arguments": {"ok_at": 2}, "retry": retry}]},
            {"evaluate": {"done": "$ _[1]"}},
        ]
    )
    began = time.monotonic()
    ex = start(fx_client, doc)
    wait_for(fx_client, ex.id, lambda e: e.transition_count >= 3)
    _flush(fx)  # the sleep's timer and the retry's backoff timer live only in PostgreSQL now
    ex = finished(fx_client, ex.id, timeout=30)
    assert ex.status == S.SUCCEEDED and output(ex) == {"done": {"attempt": 2}}
    assert time.monotonic() - began < 8


def test_recovery_requeues_only_runs_whose_lease_expired(fx_client: Any, fx: Any) -> None:
    srv = fx[0]
    worker = srv.app.runtime.extras["worker"]
    ex = start(fx_client, task([{"tool": "slow", "arguments": {"seconds": 1.5}}]))
    wait_for(fx_client, ex.id, lambda e: e.status == S.RUNNING and e.transition_count >= 1)
    key = f"{worker.queue.key}"

    async def queued() -> list[str]:
        await worker.recover()
        return [m.decode() for m in await srv.app.runtime.redis.zrange(key, 0, -1)]

    # the effect holds a live lease (renewed by time): the sweep leaves the run alone
    assert not [m for m in srv.call(queued()) if m.startswith(ex.id)]
    assert finished(fx_client, ex.id).status == S.SUCCEEDED
