"""Waiting for an execution: follow its transitions until it ends (or pauses for input).

Design note. Both clients' `wait_for` stream StreamTransitions (the server replays the transitions
after `after_sequence`, then follows live ones, and ends the stream when the execution ends), then
read the execution once with GetExecution. A stream that ends early, or breaks with UNAVAILABLE, is
resumed after the last sequence seen, so no transition is delivered twice. A WAIT transition may be
visible a moment before the execution's status says AWAITING_INPUT, hence the short poll after one.
Rejected: polling GetExecution alone (misses transitions for `on_transition`, and is slower), and
one sans-IO core driven by both a sync and an async shell (more code than the two short loops).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any

import grpc
from grpclib.metadata import Deadline

from ._gen.mintleaf import v1
from .errors import MintleafError

__all__ = ["TERMINAL", "wait_for_execution", "wait_for_execution_async"]

TERMINAL = frozenset({v1.ExecutionStatus.SUCCEEDED, v1.ExecutionStatus.FAILED, v1.ExecutionStatus.CANCELLED})
"""The statuses an execution never leaves."""

_RETRIES = 5  # consecutive UNAVAILABLE breaks without a new transition before giving up
_PAUSE_POLLS = 20  # × 50 ms after a WAIT transition, for the status to catch up


def _done(ex: v1.Execution, until_awaiting_input: bool) -> bool:
    return ex.status in TERMINAL or (until_awaiting_input and ex.status == v1.ExecutionStatus.AWAITING_INPUT)


def _timed_out(execution_id: str) -> MintleafError:
    return MintleafError(
        grpc.StatusCode.DEADLINE_EXCEEDED, f"execution {execution_id} was not done within the timeout"
    )


def _pause(seconds: float, deadline: float | None, execution_id: str) -> float:
    """How long to sleep, or raise when the deadline would pass first."""
    if deadline is not None and time.monotonic() + seconds >= deadline:
        raise _timed_out(execution_id)
    return seconds


def wait_for_execution(
    executions: v1.ExecutionServiceStub,
    execution_id: str,
    *,
    until_awaiting_input: bool = False,
    on_transition: Callable[[v1.Transition], object] | None = None,
    deadline: float | None = None,
    after_sequence: int = 0,
) -> v1.Execution:
    """Follows the execution with a sync ExecutionService stub; returns the v1.Execution once it has
    ended (or is AWAITING_INPUT, with `until_awaiting_input`). `deadline` is a time.monotonic()
    instant: the loop's own pauses respect it (the stub's calls must carry it themselves)."""
    after, failures = after_sequence, 0
    while True:
        paused = False
        stream = executions.stream_transitions(
            v1.StreamTransitionsRequest(execution_id=execution_id, after_sequence=after)
        )
        try:
            for transition in stream:
                after, failures = transition.sequence, 0
                if on_transition is not None:
                    on_transition(transition)
                if until_awaiting_input and transition.type == v1.TransitionType.WAIT:
                    paused = True
                    break
        except MintleafError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or failures >= _RETRIES:
                raise
            failures += 1
            time.sleep(_pause(0.1 * 2**failures, deadline, execution_id))
            continue
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        ex = executions.get_execution(v1.GetExecutionRequest(id=execution_id))
        if not paused:
            if ex.status in TERMINAL:
                return ex
            time.sleep(_pause(0.1, deadline, execution_id))  # the stream ended early: resume
            continue
        for _ in range(_PAUSE_POLLS):
            if _done(ex, until_awaiting_input):
                break
            time.sleep(_pause(0.05, deadline, execution_id))
            ex = executions.get_execution(v1.GetExecutionRequest(id=execution_id))
        if ex.status == v1.ExecutionStatus.AWAITING_INPUT:
            return ex
        # Resumed already, or ended: stream on after the WAIT so every later transition is seen.


async def wait_for_execution_async(
    executions: v1.ExecutionServiceAsyncStub,
    execution_id: str,
    *,
    until_awaiting_input: bool = False,
    on_transition: Callable[[v1.Transition], object | Awaitable[object]] | None = None,
    deadline: float | None = None,
    after_sequence: int = 0,
) -> v1.Execution:
    """wait_for_execution with an async ExecutionService stub (betterproto2/grpclib); every call
    carries the time left until `deadline`. `on_transition` may be a coroutine function."""

    def call_deadline() -> dict[str, Any]:
        if deadline is None:
            return {}
        return {"deadline": Deadline.from_timeout(max(0.0, deadline - time.monotonic()))}

    after, failures = after_sequence, 0
    while True:
        paused = False
        request = v1.StreamTransitionsRequest(execution_id=execution_id, after_sequence=after)
        try:
            async with aclosing(executions.stream_transitions(request, **call_deadline())) as stream:
                async for transition in stream:
                    after, failures = transition.sequence, 0
                    if on_transition is not None:
                        result = on_transition(transition)
                        if inspect.isawaitable(result):
                            await result
                    if until_awaiting_input and transition.type == v1.TransitionType.WAIT:
                        paused = True
                        break
        except MintleafError as exc:
            if exc.code() != grpc.StatusCode.UNAVAILABLE or failures >= _RETRIES:
                raise
            failures += 1
            await asyncio.sleep(_pause(0.1 * 2**failures, deadline, execution_id))
            continue
        get = v1.GetExecutionRequest(id=execution_id)
        ex = await executions.get_execution(get, **call_deadline())
        if not paused:
            if ex.status in TERMINAL:
                return ex
            await asyncio.sleep(_pause(0.1, deadline, execution_id))
            continue
        for _ in range(_PAUSE_POLLS):
            if _done(ex, until_awaiting_input):
                break
            await asyncio.sleep(_pause(0.05, deadline, execution_id))
            ex = await executions.get_execution(get, **call_deadline())
        if ex.status == v1.ExecutionStatus.AWAITING_INPUT:
            return ex
