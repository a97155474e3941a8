"""What the worker tells the step machine: the events of `advance(state, event)`.

Every event carries `now_ms` (wall clock in ms since the epoch, read by the worker) because the
machine has no clock of its own. Events naming an effect, timer, wait or fan-out that the state is
not waiting for are stale (a duplicate delivery, a timer that lost a race) and are ignored."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

__all__ = [
    "BranchFailed",
    "BranchReturned",
    "BranchesDone",
    "Cancel",
    "Continue",
    "EffectDone",
    "EffectFailed",
    "EffectSuspended",
    "Event",
    "Recover",
    "Resume",
    "Start",
    "StartBranch",
    "TimerFired",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class Start:
    """Start the execution's own flow: `main` step 0 with `_ = input`."""

    input: Any
    now_ms: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class StartBranch:
    """Start one branch of a fan-out: `shared` is StartBranches.shared, `branch` one of its items."""

    shared: dict[str, Any]
    branch: dict[str, Any]
    now_ms: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class Continue:
    """Run on after a `Continue` command (the per-advance step budget was spent)."""

    now_ms: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class Recover:
    """A worker took over the run (crash, lease expiry): re-emit what the pending point needs."""

    now_ms: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class EffectDone:
    effect_id: str
    output: Any
    metadata: dict[str, Any] = field(default_factory=dict)  # usage, model, ... (recorded)
    now_ms: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class EffectFailed:
    """`error` = {"kind": str, "message": str, "retryable": bool}; kind is matched against the
    retry policy's `non_retryable` names."""

    effect_id: str
    error: dict[str, Any]
    now_ms: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class EffectSuspended:
    """The effect needs the client: function tool calls. `resume` says what the client's answer
    becomes: "output" (it is the step's output: a tool step calling a function tool) or "effect"
    (the effect runs again with `{"continuation": ..., "results": ...}`: a prompt step that must
    call the model again with the tool results)."""

    effect_id: str
    tool_calls: list[dict[str, Any]]
    resume: Literal["output", "effect"] = "output"
    continuation: Any = None
    now_ms: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class TimerFired:
    timer_id: str
    now_ms: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class Resume:
    """The client answered a wait (ResumeExecution, or SubmitToolResults once complete)."""

    wait_id: str
    input: Any
    now_ms: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class BranchesDone:
    """Every branch of a fan-out finished. `results[i]` = {"output": ..., "state": {set keys}}
    for item i, in item order (the worker reads them ordered by index)."""

    fanout_id: str
    results: list[dict[str, Any]]
    now_ms: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class BranchFailed:
    fanout_id: str
    index: int
    error: dict[str, Any]
    now_ms: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class BranchReturned:
    """A branch ran a `return`: the enclosing workflow of the fan-out step returns `value`."""

    fanout_id: str
    index: int
    value: Any
    state: dict[str, Any] = field(default_factory=dict)
    now_ms: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class Cancel:
    reason: str = ""
    now_ms: int = 0


Event: TypeAlias = (
    Start
    | StartBranch
    | Continue
    | Recover
    | EffectDone
    | EffectFailed
    | EffectSuspended
    | TimerFired
    | Resume
    | BranchesDone
    | BranchFailed
    | BranchReturned
    | Cancel
)
