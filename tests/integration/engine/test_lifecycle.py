"""The execution lifecycle through the gRPC API: waits and resumes (several at once), cancel
mid-fan-out and while waiting, illegal moves, input validation, listing and paging, transition
streams (replay, live, reconnect), and tenant isolation of every ExecutionService RPC."""

from __future__ import annotations

import threading
from typing import Any

import grpc
from engine_flows import (
    create_task,
    finished,
    output,
    run_to_end,
    start,
    transitions,
    value,
    wait_for,
    wait_status,
    wait_until,
)

from mintleaf import FieldMask, v1
from mintleaf_server._proto.mintleaf.v1 import executions_pb2, executions_pb2_grpc
from support.errors import expect_error

S = v1.ExecutionStatus


def test_wait_for_input_resume_finish(client: Any) -> None:
    doc = {
        "name": "ask",
        "main": [{"wait_for_input": {"info": {"q": "$ _.q"}}}, {"evaluate": {"got": "$ _.a"}}],
    }
    ex = start(client, doc, {"q": "name?"})
    ex = wait_status(client, ex.id, S.AWAITING_INPUT)
    assert len(ex.waits) == 1 and ex.waits[0].kind == "wait_for_input"
    assert ex.waits[0].info.to_dict() == {"q": "name?"}
    client.executions.resume_execution(
        v1.ResumeExecutionRequest(id=ex.id, wait_id=ex.waits[0].id, input=value({"a": "Ada"}))
    )
    ex = finished(client, ex.id)
    assert ex.status == S.SUCCEEDED and output(ex) == {"got": "Ada"}
    types = [t.type for t in transitions(client, ex.id)]
    assert types.count(v1.TransitionType.WAIT) == 1 and types.count(v1.TransitionType.RESUME) == 1
    # illegal moves on a finished execution
    expect_error(
        lambda: client.executions.resume_execution(v1.ResumeExecutionRequest(id=ex.id, input=value(1))),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    expect_error(
        lambda: client.executions.cancel_execution(v1.CancelExecutionRequest(id=ex.id)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )


def test_several_waits_in_parallel_branches(client: Any) -> None:
    doc = {
        "name": "many",
        "main": [
            {
                "parallel": [
                    {"wait_for_input": {"info": {"who": "a"}}},
                    {"wait_for_input": {"info": {"who": "b"}}},
                    {"wait_for_input": {"info": {"who": "c"}}},
                ]
            }
        ],
    }
    ex = start(client, doc)
    ex = wait_for(client, ex.id, lambda e: len(e.waits) == 3)
    assert ex.status == S.RUNNING  # the execution's own flow waits on branches, not on input
    expect_error(
        lambda: client.executions.resume_execution(v1.ResumeExecutionRequest(id=ex.id, input=value(0))),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="WAIT_AMBIGUOUS",
    )
    by_who = {w.info.to_dict()["who"]: w.id for w in ex.waits}
    for who in ("c", "a", "b"):
        client.executions.resume_execution(
            v1.ResumeExecutionRequest(id=ex.id, wait_id=by_who[who], input=value(who.upper()))
        )
    ex = finished(client, ex.id)
    assert ex.status == S.SUCCEEDED and output(ex) == ["A", "B", "C"]
    expect_error(
        lambda: client.executions.resume_execution(
            v1.ResumeExecutionRequest(id=ex.id, wait_id=by_who["a"], input=value(1))
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )


def test_cancel_mid_fanout_stops_the_siblings(client: Any) -> None:
    doc = {
        "name": "slow",
        "main": [{"foreach": {"in": "list(range(6))", "parallelism": 3, "do": {"sleep": 30}}}],
    }
    ex = start(client, doc)
    wait_for(client, ex.id, lambda e: e.transition_count >= 4)
    client.executions.cancel_execution(v1.CancelExecutionRequest(id=ex.id, reason="enough"))
    ex = finished(client, ex.id)
    assert ex.status == S.CANCELLED and ex.error == "enough"
    ts = transitions(client, ex.id)
    assert ts[-1].type == v1.TransitionType.CANCELLED
    assert not any(t.type == v1.TransitionType.FINISH_BRANCH for t in ts)  # no sibling went on
    count = ex.transition_count
    expect_error(
        lambda: client.executions.cancel_execution(v1.CancelExecutionRequest(id=ex.id)),
        grpc.StatusCode.FAILED_PRECONDITION,
        reason="EXECUTION_NOT_ACTIVE",
    )
    assert client.executions.get_execution(v1.GetExecutionRequest(id=ex.id)).transition_count == count


def test_cancel_while_waiting(client: Any) -> None:
    ex = start(client, {"name": "w", "main": [{"wait_for_input": {"info": {"q": "?"}}}]})
    wait_status(client, ex.id, S.AWAITING_INPUT)
    client.executions.cancel_execution(v1.CancelExecutionRequest(id=ex.id))
    ex = finished(client, ex.id)
    assert ex.status == S.CANCELLED and not ex.waits
    expect_error(
        lambda: client.executions.resume_execution(v1.ResumeExecutionRequest(id=ex.id, input=value(1))),
        grpc.StatusCode.FAILED_PRECONDITION,
    )


def test_input_is_validated_against_the_schema(client: Any) -> None:
    doc = {
        "name": "typed",
        "input_schema": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]},
        "main": [{"log": "hi"}],
    }
    task = create_task(client, doc)
    err = expect_error(lambda: start(client, task, {"n": "x"}), grpc.StatusCode.INVALID_ARGUMENT)
    assert "execution.input.n" in err.violations, err
    err = expect_error(lambda: start(client, task, {}), grpc.StatusCode.INVALID_ARGUMENT)
    assert any(k.startswith("execution.input") for k in err.violations), err
    assert finished(client, start(client, task, {"n": 1}).id).status == S.SUCCEEDED


def test_list_executions_filters_and_pages(client: Any) -> None:
    quick = create_task(client, {"name": "q", "main": [{"log": "x"}]})
    parked = create_task(client, {"name": "p", "main": [{"wait_for_input": {"info": {"q": 1}}}]})
    done = [start(client, quick).id for _ in range(5)]
    waiting = [start(client, parked).id for _ in range(2)]
    for eid in done:
        finished(client, eid)
    for eid in waiting:
        wait_status(client, eid, S.AWAITING_INPUT)
    seen: list[str] = []
    token = ""
    while True:
        page = client.executions.list_executions(
            v1.ListExecutionsRequest(task_id=quick.id, page_size=2, page_token=token)
        )
        assert len(page.executions) <= 2
        seen += [e.id for e in page.executions]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == sorted(done) and len(seen) == len(set(seen))
    got = client.executions.list_executions(v1.ListExecutionsRequest(status=S.AWAITING_INPUT, page_size=50))
    assert sorted(e.id for e in got.executions) == sorted(waiting)
    got = client.executions.list_executions(
        v1.ListExecutionsRequest(task_id=parked.id, status=S.SUCCEEDED, page_size=50)
    )
    assert not got.executions


def test_list_transitions_pages(client: Any) -> None:
    ex, ts = run_to_end(client, {"name": "l", "main": [{"log": str(i)} for i in range(9)]})
    seen: list[int] = []
    token = ""
    while True:
        page = client.executions.list_transitions(
            v1.ListTransitionsRequest(execution_id=ex.id, page_size=4, page_token=token)
        )
        seen += [t.sequence for t in page.transitions]
        token = page.next_page_token
        if not token:
            break
    assert seen == [t.sequence for t in ts] == list(range(1, len(ts) + 1))
    expect_error(
        lambda: client.executions.list_transitions(
            v1.ListTransitionsRequest(execution_id=ex.id, page_token="garbage!")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def test_stream_replays_then_follows_and_reconnects(client: Any) -> None:
    doc = {
        "name": "s",
        "main": [
            {"evaluate": {"i": "$ 1"}},
            {"wait_for_input": {"info": {"q": "go?"}}},
            {"evaluate": {"i": "$ 2"}},
            {"sleep": 0.2},
            {"evaluate": {"i": "$ 3"}},
        ],
    }
    ex = start(client, doc)
    ex = wait_status(client, ex.id, S.AWAITING_INPUT)
    first: list[int] = []
    stream = client.executions.stream_transitions(v1.StreamTransitionsRequest(execution_id=ex.id))
    for t in stream:  # replay from PostgreSQL, then live
        first.append(t.sequence)
        if t.type == v1.TransitionType.WAIT:
            break
    stream.close()
    cut = first[-1]
    assert first == list(range(1, cut + 1))
    live: list[Any] = []
    follower = threading.Thread(
        target=lambda: live.extend(
            client.executions.stream_transitions(
                v1.StreamTransitionsRequest(execution_id=ex.id, after_sequence=cut)
            )
        )
    )
    follower.start()
    client.executions.resume_execution(v1.ResumeExecutionRequest(id=ex.id, input=value("yes")))
    follower.join(timeout=30)
    assert not follower.is_alive(), "the stream did not end with the execution"
    ex = finished(client, ex.id)
    assert [t.sequence for t in live] == list(range(cut + 1, ex.transition_count + 1))
    assert live[-1].type == v1.TransitionType.FINISH
    # a finished execution's stream replays what follows the given sequence, then ends
    tail = list(
        client.executions.stream_transitions(
            v1.StreamTransitionsRequest(execution_id=ex.id, after_sequence=3)
        )
    )
    assert [t.sequence for t in tail] == list(range(4, ex.transition_count + 1))


def test_tenant_isolation_of_every_rpc(client: Any, other_client: Any) -> None:
    ex = start(client, {"name": "mine", "main": [{"wait_for_input": {"info": {"q": 1}}}]})
    ex = wait_status(client, ex.id, S.AWAITING_INPUT)
    task_id = ex.task_id
    nf = grpc.StatusCode.NOT_FOUND
    o = other_client.executions
    expect_error(lambda: o.get_execution(v1.GetExecutionRequest(id=ex.id)), nf)
    expect_error(lambda: o.cancel_execution(v1.CancelExecutionRequest(id=ex.id)), nf)
    expect_error(lambda: o.resume_execution(v1.ResumeExecutionRequest(id=ex.id, input=value(1))), nf)
    expect_error(
        lambda: o.submit_tool_results(
            v1.SubmitToolResultsRequest(
                id=ex.id, results=[v1.ToolResult(tool_call_id="call_x", output=value(1))]
            )
        ),
        nf,
    )
    expect_error(lambda: o.list_transitions(v1.ListTransitionsRequest(execution_id=ex.id)), nf)
    expect_error(lambda: list(o.stream_transitions(v1.StreamTransitionsRequest(execution_id=ex.id))), nf)
    expect_error(
        lambda: o.create_execution(v1.CreateExecutionRequest(task_id=task_id, execution=v1.Execution())), nf
    )
    assert not o.list_executions(v1.ListExecutionsRequest(page_size=100)).executions
    assert not o.list_executions(v1.ListExecutionsRequest(task_id=task_id)).executions
    # nothing the other tenant tried touched it
    again = client.executions.get_execution(v1.GetExecutionRequest(id=ex.id))
    assert again.status == S.AWAITING_INPUT and again.transition_count == ex.transition_count
    client.executions.cancel_execution(v1.CancelExecutionRequest(id=ex.id))
    assert finished(client, ex.id).status == S.CANCELLED


def test_create_is_idempotent_with_request_id(client: Any) -> None:
    task = create_task(client, {"name": "i", "main": [{"log": "x"}]})
    req = v1.CreateExecutionRequest(task_id=task.id, request_id="r-1", execution=v1.Execution())
    a = client.executions.create_execution(req)
    b = client.executions.create_execution(req)
    assert a.id == b.id
    wait_until(lambda: finished(client, a.id).status == S.SUCCEEDED, 30, "the execution")


def test_expressions_see_the_agent_as_it_was_when_the_execution_started(client: Any) -> None:
    doc = {
        "name": "who",
        "main": [{"wait_for_input": {"info": {"q": "go?"}}}, {"evaluate": {"name": "$ agent.name"}}],
    }
    task = create_task(client, doc)
    first = start(client, task)
    first = wait_status(client, first.id, S.AWAITING_INPUT)
    client.agents.update_agent(
        v1.UpdateAgentRequest(
            agent=v1.Agent(id=task.agent_id, name="Renamed"), update_mask=FieldMask(paths=["name"])
        )
    )
    second = wait_status(client, start(client, task).id, S.AWAITING_INPUT)
    for ex in (second, first):  # the later one first: no process-wide cache decides for the other
        client.executions.resume_execution(
            v1.ResumeExecutionRequest(id=ex.id, wait_id=ex.waits[0].id, input=value(True))
        )
        assert finished(client, ex.id).status == S.SUCCEEDED
    assert output(finished(client, first.id)) == {"name": "Runner"}
    assert output(finished(client, second.id)) == {"name": "Renamed"}


def test_a_finished_executions_stream_ends_once_its_log_is_sent(server: Any) -> None:
    """No wait for a notification that cannot come: the whole log, then the end. (The stream used
    to wait one poll interval, 1 s, first; the deadline below leaves twice the time it needs.)"""
    key = server.new_key()
    with server.client(key) as client:
        ex, log = run_to_end(client, {"name": "done", "main": [{"evaluate": {"i": "$ 1"}}]})
    with grpc.insecure_channel(server.target) as channel:
        stub = executions_pb2_grpc.ExecutionServiceStub(channel)
        request = executions_pb2.StreamTransitionsRequest(execution_id=ex.id)
        got = list(
            stub.StreamTransitions(request, metadata=(("authorization", f"Bearer {key}"),), timeout=0.5)
        )
    assert [t.sequence for t in got] == [t.sequence for t in log]
