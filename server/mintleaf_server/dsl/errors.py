"""The DSL's exception tree. The API layer maps these to gRPC statuses (INVALID_ARGUMENT with field
violations for TaskInvalid; a failed step for EvaluationError)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DslError", "EvaluationError", "LimitExceeded", "ReadError", "TaskInvalid", "Violation"]


class DslError(Exception):
    """Base of every error raised by mintleaf_server.dsl."""


class ReadError(DslError):
    """A string could not be read in its slot (syntax error, unknown name, unsafe construct).

    The message says what is wrong; the caller adds the field path."""


@dataclass(frozen=True)
class Violation:
    """One problem in a task document: `path` like `main[3].map_reduce.map.tool`."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class TaskInvalid(DslError):
    """A task document failed validation; carries every violation found, not just the first."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = list(violations)
        super().__init__("; ".join(str(v) for v in self.violations) or "invalid task")


class EvaluationError(DslError):
    """Evaluating an expression or rendering a template failed at run time.

    `source` is the expression text; the engine adds the step path when it fails the step."""

    def __init__(self, message: str, source: str = "") -> None:
        self.source = source
        super().__init__(message)


class LimitExceeded(EvaluationError):
    """An evaluation went over a sandbox limit (time, memory, size, recursion)."""
