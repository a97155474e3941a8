"""Executions through the gRPC API on real PostgreSQL and Redis: control flow to the right output,
wait_for_input → resume, cancel mid-fan-out, sleep, transitions listed and streamed."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest

from mintleaf import Struct, Value, v1
from support.errors import expect_error

DONE = {v1.ExecutionStatus.SUCCEEDED, v1.ExecutionStatus.FAILED, v1.ExecutionStatus.CANCELLED}


def start(client: Any, doc: dict[str, Any], value: dict[str, Any] | None = None) -> Any:
    agent = client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="Runner")))
    task = client.tasks.create_task(
        v1.CreateTaskRequest(agent_id=agent.id, task=v1.Task(definition=Struct.from_dict(doc)))
    )
    return client.executions.create_execution(
        v1.CreateExecutionRequest(
            task_id=task.id, execution=v1.Execution(input=Struct.from_dict(value or {}))
        )
    )


def wait_until(client: Any, eid: str, ok: Any, timeout: float = 30) -> Any:
    end = time.monotonic() + timeout
    while True:
        ex = client.executions.get_execution(v1.GetExecutionRequest(id=eid))
        if ok(ex):
            return ex
        assert time.monotonic() < end, ex
        time.sleep(0.02)


def finished(client: Any, eid: str) -> Any:
    return wait_until(client, eid, lambda e: e.status in DONE)


def transitions(client: Any, eid: str) -> list[Any]:
    return list(
        client.executions.list_transitions(
            v1.ListTransitionsRequest(execution_id=eid, page_size=1000)
        ).transitions
    )


def test_control_flow_runs_to_the_right_output(client: Any) -> None:
    doc = {
        "name": "flow",
        "main": [
            {"set": {"who": "$ _.name"}},
            {"if": "len(_.who) > 2", "then": {"log": "long {{ _.who }}"}},
            {"foreach": {"in": "$ [1, 2, 3]", "do": {"evaluate": {"sq": "$ _ * _"}}}},
            {
                "over": "$ [1, 2, 3, 4]",
                "parallelism": 2,
                "map": {"evaluate": {"v": "$ _ * 10"}},
                "reduce": "results + [_.v]",
            },
            {"parallel": [{"evaluate": {"n": "$ len(_)"}}, {"get": "who"}]},
            {"yield": {"workflow": "wrap", "arguments": {"x": "$ _"}}},
        ],
        "wrap": [{"return": {"result": "$ _.x", "who": "$ inputs[0].x[1]"}}],
    }
    ex = start(client, doc, {"name": "Ada"})
    ex = finished(client, ex.id)
    assert ex.status == v1.ExecutionStatus.SUCCEEDED, ex.error
    assert ex.output.to_dict() == {"result": [{"n": 4}, "Ada"], "who": "Ada"} or ex.output
    ts = transitions(client, ex.id)
    assert [t.sequence for t in ts] == list(range(1, len(ts) + 1))
    assert ts[0].type == v1.TransitionType.INIT and ts[-1].type == v1.TransitionType.FINISH
    assert ex.transition_count == len(ts)


def test_wait_for_input_then_resume(client: Any) -> None:
    doc = {
        "name": "ask",
        "main": [{"wait_for_input": {"info": {"q": "$ _.q"}}}, {"evaluate": {"got": "$ _.a"}}],
    }
    ex = start(client, doc, {"q": "name?"})
    ex = wait_until(client, ex.id, lambda e: e.status == v1.ExecutionStatus.AWAITING_INPUT)
    assert len(ex.waits) == 1 and ex.waits[0].kind == "wait_for_input"
    client.executions.resume_execution(
        v1.ResumeExecutionRequest(id=ex.id, wait_id=ex.waits[0].id, input=Value.from_dict({"a": "Ada"}))
    )
    ex = finished(client, ex.id)
    assert ex.status == v1.ExecutionStatus.SUCCEEDED
    types = [t.type for t in transitions(client, ex.id)]
    assert v1.TransitionType.RESUME in types


def test_cancel_mid_fanout_and_illegal_cancel(client: Any) -> None:
    doc = {
        "name": "slow",
        "main": [{"foreach": {"in": "$ list(range(6))", "parallelism": 3, "do": {"sleep": {"seconds": 30}}}}],
    }
    ex = start(client, doc)
    wait_until(client, ex.id, lambda e: e.transition_count >= 4)
    client.executions.cancel_execution(v1.CancelExecutionRequest(id=ex.id, reason="enough"))
    ex = finished(client, ex.id)
    assert ex.status == v1.ExecutionStatus.CANCELLED
    assert transitions(client, ex.id)[-1].type == v1.TransitionType.CANCELLED
    expect_error(
        lambda: client.executions.cancel_execution(v1.CancelExecutionRequest(id=ex.id)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )


def test_sleep_and_error(client: Any) -> None:
    ex = start(
        client, {"name": "nap", "main": [{"sleep": {"seconds": 1}}, {"error": "woke up {{ _.x }}"}]}, {"x": 1}
    )
    began = time.monotonic()
    ex = finished(client, ex.id)
    assert time.monotonic() - began >= 0.9
    assert ex.status == v1.ExecutionStatus.FAILED and ex.error == "woke up 1"


def test_input_is_validated(client: Any) -> None:
    doc = {"name": "typed", "input_schema": {"type": "object", "required": ["x"]}, "main": [{"log": "hi"}]}
    with pytest.raises(grpc.RpcError) as info:
        start(client, doc, {})
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_stream_replays_then_follows_without_gaps(client: Any) -> None:
    doc = {
        "name": "s",
        "main": [{"evaluate": {"i": "$ 1"}}, {"sleep": {"seconds": 0.5}}, {"evaluate": {"i": "$ 2"}}],
    }
    ex = start(client, doc)
    seen = [
        t.sequence
        for t in client.executions.stream_transitions(v1.StreamTransitionsRequest(execution_id=ex.id))
    ]
    assert seen == list(range(1, len(seen) + 1)) and len(seen) >= 4
    again = [
        t.sequence
        for t in client.executions.stream_transitions(
            v1.StreamTransitionsRequest(execution_id=ex.id, after_sequence=2)
        )
    ]
    assert again == seen[2:]
