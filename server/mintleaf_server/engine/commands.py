"""What the step machine asks the worker to do: the commands of `advance`.

Order matters within one advance: `Record`s are the transitions to append, in order, in the same
commit as the new state (and `StartBranches` / `OpenWait` / `StartTimer` rows); effects
(`RunEffect`) run after that commit. A terminal command (`Finish`, `Fail`, `Cancelled`) is always
the last one. Commands are plain data so golden logs can hold them (`to_json`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, TypeAlias

__all__ = [
    "TERMINAL_COMMANDS",
    "CancelBranches",
    "CancelEffect",
    "CancelTimer",
    "Cancelled",
    "CloseWait",
    "Command",
    "ContinueLater",
    "Fail",
    "Finish",
    "OpenWait",
    "Record",
    "RunEffect",
    "StartBranches",
    "StartTimer",
    "to_json",
]


@dataclass(frozen=True, slots=True)
class Record:
    """Append a transition. `current`/`next` are TransitionTargets as dicts:
    {workflow, step, scope_id, path, branch_id}. `type` is Julep's: init, init_branch, step, wait,
    resume, finish, finish_branch, error, cancelled."""

    type: str
    current: dict[str, Any]
    next: dict[str, Any] | None
    output: Any
    error: str = ""
    step_type: str = ""
    label: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunEffect:
    """Call the outside world; answer with EffectDone / EffectFailed / EffectSuspended.
    `request` is the JSON request (effects.py describes each kind)."""

    effect_id: str
    request: dict[str, Any]
    deadline_ms: int


@dataclass(frozen=True, slots=True)
class CancelEffect:
    effect_id: str


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Fire TimerFired(timer_id) at `fire_at_ms`. purpose: sleep | retry | step_timeout |
    wait_timeout | task_timeout."""

    timer_id: str
    fire_at_ms: int
    purpose: str


@dataclass(frozen=True, slots=True)
class CancelTimer:
    timer_id: str


@dataclass(frozen=True, slots=True)
class OpenWait:
    """The run waits for the client. kind: wait_for_input | tool_calls."""

    wait_id: str
    kind: str
    info: Any
    tool_calls: list[dict[str, Any]]
    at: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CloseWait:
    wait_id: str


@dataclass(frozen=True, slots=True)
class StartBranches:
    """Create durable branch records, one per item, in one batch; at most `parallelism` run at
    once (a sliding window: the next pending one starts when any finishes). Each branch is
    started with StartBranch(shared=shared, branch=branches[i]); the parent is answered with
    BranchesDone / BranchFailed / BranchReturned."""

    fanout_id: str
    parallelism: int
    branches: list[dict[str, Any]]
    shared: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CancelBranches:
    fanout_id: str


@dataclass(frozen=True, slots=True)
class ContinueLater:
    """The step budget of this advance is spent: commit, then advance again with Continue."""


@dataclass(frozen=True, slots=True)
class Finish:
    """The run ended. Execution flow: the execution succeeded with `output`. Branch: the branch
    finished; `state` holds the keys it `set`, `returned` whether it ended with a `return`."""

    output: Any
    state: dict[str, Any] = field(default_factory=dict)
    returned: bool = False


@dataclass(frozen=True, slots=True)
class Fail:
    """The run failed: error = {"error": message, "kind": ..., "step": path, ...}."""

    error: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Cancelled:
    reason: str


Command: TypeAlias = (
    Record
    | RunEffect
    | CancelEffect
    | StartTimer
    | CancelTimer
    | OpenWait
    | CloseWait
    | StartBranches
    | CancelBranches
    | ContinueLater
    | Finish
    | Fail
    | Cancelled
)

TERMINAL_COMMANDS = (Finish, Fail, Cancelled)


def to_json(command: Command) -> dict[str, Any]:
    """`{"cmd": <class name>, ...fields}` for golden logs and debugging."""
    return {"cmd": type(command).__name__, **asdict(command)}
