"""Helpers for the engine's integration tests: start a task's execution through the SDK, wait
for a condition (never a bare sleep), read the transition log."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from mintleaf import Struct, Value, v1

__all__ = [
    "DONE",
    "create_task",
    "finished",
    "output",
    "run_to_end",
    "start",
    "transitions",
    "value",
    "wait_for",
    "wait_status",
    "wait_until",
]

DONE = {v1.ExecutionStatus.SUCCEEDED, v1.ExecutionStatus.FAILED, v1.ExecutionStatus.CANCELLED}


def wait_until(condition: Callable[[], Any], timeout: float = 30, what: str = "a condition") -> Any:
    """Polls `condition` until it returns something truthy; fails naming `what` after `timeout`."""
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        last = condition()
        if last:
            return last
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def create_task(client: Any, doc: dict[str, Any]) -> Any:
    agent = client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="Runner")))
    return client.tasks.create_task(
        v1.CreateTaskRequest(agent_id=agent.id, task=v1.Task(definition=Struct.from_dict(doc)))
    )


def start(client: Any, doc: dict[str, Any] | Any, value: dict[str, Any] | None = None) -> Any:
    task = create_task(client, doc) if isinstance(doc, dict) else doc
    return client.executions.create_execution(
        v1.CreateExecutionRequest(
            task_id=task.id, execution=v1.Execution(input=Struct.from_dict(value or {}))
        )
    )


def wait_for(client: Any, eid: str, ok: Callable[[Any], bool], timeout: float = 30) -> Any:
    def probe() -> Any:
        ex = client.executions.get_execution(v1.GetExecutionRequest(id=eid))
        return ex if ok(ex) else None

    return wait_until(probe, timeout, f"execution {eid}")


def wait_status(client: Any, eid: str, status: Any, timeout: float = 30) -> Any:
    return wait_for(client, eid, lambda e: e.status == status, timeout)


def finished(client: Any, eid: str, timeout: float = 30) -> Any:
    return wait_for(client, eid, lambda e: e.status in DONE, timeout)


def transitions(client: Any, eid: str) -> list[Any]:
    out: list[Any] = []
    token = ""
    while True:
        page = client.executions.list_transitions(
            v1.ListTransitionsRequest(execution_id=eid, page_size=1000, page_token=token)
        )
        out += list(page.transitions)
        token = page.next_page_token
        if not token:
            return out


def run_to_end(
    client: Any, doc: dict[str, Any], value: dict[str, Any] | None = None
) -> tuple[Any, list[Any]]:
    """Start, wait for the end, check the log's invariants; return (execution, transitions)."""
    ex = finished(client, start(client, doc, value).id)
    ts = transitions(client, ex.id)
    assert [t.sequence for t in ts] == list(range(1, len(ts) + 1)), "sequence has gaps or repeats"
    assert ex.transition_count == len(ts)
    assert ts[0].type == v1.TransitionType.INIT
    terminal = {v1.TransitionType.FINISH, v1.TransitionType.ERROR, v1.TransitionType.CANCELLED}
    main_ends = [t for t in ts if t.type in terminal and not t.current.branch_id]
    assert ts[-1].type in terminal and len([t for t in ts if t.type == v1.TransitionType.FINISH]) <= 1
    assert main_ends, "no terminal transition"
    return ex, ts


def output(ex: Any) -> Any:
    """The execution's output as plain Python."""
    return ex.output.to_dict()


def value(x: Any) -> Value:
    return Value.from_dict(x)
