"""The engine's exception tree.

The step machine never raises: a failed step is a result (a `Fail` command and an `error`
transition). These exceptions belong to the durable side (worker, leases, store access) and are
translated to gRPC statuses at the API boundary."""

from __future__ import annotations

__all__ = [
    "EngineError",
    "ExecutionNotFound",
    "IllegalTransition",
    "LeaseLost",
    "WaitNotFound",
]


class EngineError(Exception):
    """Base of every error raised by mintleaf_server.engine."""


class LeaseLost(EngineError):
    """A fenced write found another lease epoch: this worker no longer owns the execution/branch."""


class ExecutionNotFound(EngineError):
    """No execution with that id for this developer."""


class IllegalTransition(EngineError):
    """A lifecycle move that the current status forbids (cancel a finished execution, resume a
    running one, ...). The API maps it to FAILED_PRECONDITION."""


class WaitNotFound(EngineError):
    """Resume named a wait that is not open (or several are open and none was named)."""
