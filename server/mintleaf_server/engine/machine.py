"""The step machine: `Machine(task).advance(state, event) -> (state, commands)`.

Design note. The machine is a pure function of (task, environment, limits, state, event): no I/O,
no clock (time arrives in events as `now_ms`), no randomness (ids come from counters in the state),
and it never raises (a failure is an `error` transition and a `Fail` command; an internal bug
becomes a failed run with kind "internal"). The worker loop is the only caller; it commits the new
state with the `Record`s of one advance in one statement, then carries out the other commands.

State (plain JSON, stored as JSONB, one per run: the execution's own flow and each branch):

    {"v": 1, "run": "main" | "<fanout>.<i>", "status": running | pending | succeeded | failed |
     cancelled, "frames": [frame, ...], "pending": null | {...}, "ctr": {...}, "n": steps done,
     "deadline": null | {"timer", "at"}, "parent": null | {"fanout", "index"},
     "result": output, "error": null | {"error", "kind", "step", "expression"?}}

    frame (wf = a workflow run / scope; body = a nested sequence in the same scope):
     {"t": "wf" | "body", "wf": workflow, "loc": locator (cursor.py), "base": display path,
      "i": step index, "cur": `_`, "scope": scope id,
      wf only:   "input" (inputs[0]), "outs" (outputs of its steps, or null when no expression of
                 the workflow reads inputs/outputs/steps), "kv" (get/set state), "depth" (yields),
                 "nested" + "delta" (a branch root: runs a body with a snapshot of the parent's
                 scope; `delta` collects its `set`s, merged into the parent in item order)
      body only: "ctl" (sequential foreach/map_reduce: {"k", "items", "acc"})}

    pending: {"kind": "continue"} | {"kind": "effect", "effect", "attempt", "request", "deadline"}
             | {"kind": "retry", "timer", "effect", "attempt", "request"}
             | {"kind": "sleep", "timer", "at"} | {"kind": "wait", "wait", "mode", "timer", ...}
             | {"kind": "fanout", "fanout", "n", "ctl"}

What grows: each workflow frame keeps the outputs of its own steps, because expressions may read
any of them (`outputs[i]`, every step visible, no window); it keeps none when no expression of
that workflow names inputs/outputs/steps. The full per-step outputs live in the transition rows.
Nested bodies and branch outputs are not kept beyond their step. Rejected: reading outputs back
from transition rows at each step (a query per expression on the hot path), and keeping a bounded
window (Julep's 100-transition window silently broke long workflows).

Rejected designs for the machine itself: an interpreter that runs steps and awaits effects inline
(Temporal-style replay of user code; needs deterministic user code and a history replayer), and a
state per step kind stored in separate tables (many writes per step).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mintleaf_server.dsl.steps import RetryPolicy, Step
from mintleaf_server.dsl.task import Task
from mintleaf_server.engine.commands import (
    CancelBranches,
    CancelTimer,
    CloseWait,
    Command,
    ContinueLater,
    Fail,
    RunEffect,
    StartTimer,
)
from mintleaf_server.engine.cursor import SequenceIndex, body_base
from mintleaf_server.engine.events import (
    BranchesDone,
    BranchFailed,
    BranchReturned,
    Cancel,
    Continue,
    EffectDone,
    EffectFailed,
    EffectSuspended,
    Event,
    Recover,
    Resume,
    Start,
    StartBranch,
    TimerFired,
)
from mintleaf_server.engine.handlers import HANDLERS, Handler
from mintleaf_server.engine.limits import Limits, backoff_ms
from mintleaf_server.engine.run import Run, StepFailure, copy_state
from mintleaf_server.engine.values import NotJson, jsonify

__all__ = [
    "EFFECT_STEP_KINDS",
    "TERMINAL_STATUSES",
    "Environment",
    "Evaluator",
    "Machine",
    "initial_counters",
]

Evaluator = Callable[[Any, Mapping[str, Any]], Any]

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
EFFECT_STEP_KINDS = frozenset({"prompt", "tool_call", "embed", "search"})
_HISTORY_NAMES = ("inputs", "outputs", "steps")


def initial_counters() -> dict[str, int]:
    return {"scope": 0, "wait": 0, "effect": 0, "timer": 0, "fanout": 0}


def _default_evaluator(tree: Any, scope: Mapping[str, Any]) -> Any:
    from mintleaf_server.dsl.reading import evaluate_value  # the DSL's single entry point

    return evaluate_value(tree, scope)


@dataclass(frozen=True)
class Environment:
    """What expressions may read besides the run's own data; fixed for an execution (the worker
    builds it from the execution row, the pinned task version and the agent)."""

    execution_id: str = ""
    developer_id: str = ""
    execution: Mapping[str, Any] = field(default_factory=dict)  # {id, task_id, input, metadata, ...}
    task: Mapping[str, Any] = field(default_factory=dict)
    agent: Mapping[str, Any] | None = None
    agent_tools: tuple[Any, ...] = ()


class _Unknown(StepFailure):
    pass


class Machine:
    """The step machine of one task version. Cheap to keep per task version (caches only)."""

    def __init__(
        self,
        task: Task,
        env: Environment | None = None,
        limits: Limits | None = None,
        evaluate: Evaluator | None = None,
    ) -> None:
        self.task = task
        self.env = env or Environment()
        self.limits = limits or Limits()
        self.evaluate: Evaluator = evaluate or _default_evaluator
        self.seqs = SequenceIndex(task)
        self._history: dict[str, bool] = {}
        self._labels: dict[str, dict[int, str]] = {}

    def with_env(self, env: Environment) -> Machine:
        """The same task and caches for another execution."""
        clone = Machine(self.task, env, self.limits, self.evaluate)
        clone.seqs = self.seqs
        clone._history = self._history
        clone._labels = self._labels
        return clone

    # -- static facts about the task -----------------------------------------------------------

    def handler(self, step: Step) -> Handler:
        handler = HANDLERS.get(getattr(step, "kind", ""))
        if handler is None:
            raise _Unknown(
                f"unknown step kind {getattr(step, 'kind', type(step).__name__)!r}", "unknown_step"
            )
        return handler

    def labels(self, workflow: str) -> dict[int, str]:
        labels = self._labels.get(workflow)
        if labels is None:
            labels = {i: s.label for i, s in enumerate(self.task.workflows[workflow]) if s.label}
            self._labels[workflow] = labels
        return labels

    def keeps_history(self, workflow: str) -> bool:
        """Whether any string of the workflow (nested bodies included) may read inputs/outputs/
        steps. Unknown readables count as "yes": correctness first, compactness second."""
        keep = self._history.get(workflow)
        if keep is None:
            keep = _mentions_history(self.task.workflows[workflow])
            self._history[workflow] = keep
        return keep

    def step_at(self, ref: Mapping[str, Any]) -> Step:
        """The step an effect request names (`request["step"]`)."""
        step: Step = self.seqs.get(ref["workflow"], ref["loc"])[ref["index"]]
        return step

    def retry_policy(self, step: Step) -> RetryPolicy:
        return step.retry or self.task.retry or self.limits.effect_retry

    # -- the transition function ---------------------------------------------------------------

    def advance(self, state: Mapping[str, Any] | None, event: Event) -> tuple[dict[str, Any], list[Command]]:
        """Apply `event` to `state`. Never raises; never mutates `state`. An empty command list
        means nothing happened (a stale or duplicate event): nothing to commit."""
        now = getattr(event, "now_ms", 0)
        if state is None:
            if isinstance(event, Start):
                return self._guard(self._main_state(), lambda run: self._start(run, event.input), now)
            if isinstance(event, StartBranch):
                try:
                    st = self._branch_state(event.shared, event.branch)
                except Exception as exc:  # a corrupt branch record: fail it, do not crash
                    return _broken(f"bad branch record: {type(exc).__name__}: {exc}")
                return self._guard(st, lambda run: self._start_branch(run), now)
            return _broken("the first event of a run must be Start or StartBranch")
        if state.get("status") in TERMINAL_STATUSES:
            return dict(state), []
        try:
            st = copy_state(dict(state))
        except Exception as exc:
            return _broken(f"unreadable state: {type(exc).__name__}: {exc}")
        return self._guard(st, lambda run: self._dispatch(run, event), now)

    def _guard(
        self, st: dict[str, Any], body: Callable[[Run], None], now: int
    ) -> tuple[dict[str, Any], list[Command]]:
        run = Run(self, st, now)
        try:
            try:
                body(run)
                self._loop(run)
            except StepFailure as failure:
                run.fail(failure)
        except Exception as exc:  # a bug in the machine or a corrupt state: fail, never raise
            try:
                run.fail(StepFailure(f"internal engine error: {type(exc).__name__}: {exc}", "internal"))
            except Exception:
                return _broken(f"internal engine error: {type(exc).__name__}: {exc}")
        return run.st, run.cmds

    def _loop(self, run: Run) -> None:
        """Run steps until the run suspends, ends, or spends its step budget."""
        while run.st["status"] == "running":
            if run.budget <= 0:
                run.suspend({"kind": "continue"})
                run.cmds.append(ContinueLater())
                return
            frame = run.top()
            seq = run.seq(frame)
            if frame["i"] >= len(seq):
                raise StepFailure("the cursor is past the end of its sequence", "internal")
            step = seq[frame["i"]]
            self.handler(step).begin(run, step)

    # -- starting ------------------------------------------------------------------------------

    def _main_state(self) -> dict[str, Any]:
        return {
            "v": 1,
            "run": "main",
            "status": "running",
            "frames": [],
            "pending": None,
            "ctr": initial_counters(),
            "n": 0,
            "deadline": None,
            "parent": None,
            "result": None,
            "error": None,
        }

    def _start(self, run: Run, input_: Any) -> None:
        try:
            value = jsonify(input_)
        except NotJson as exc:
            value = None
            problem: str | None = f"the execution input is not JSON: {exc}"
        else:
            problem = None
        frame = {
            "t": "wf",
            "wf": "main",
            "loc": [],
            "base": "main",
            "i": 0,
            "cur": value,
            "scope": "s0",
            "input": value,
            "outs": [] if self.keeps_history("main") else None,
            "kv": {},
            "depth": 0,
        }
        run.frames.append(frame)
        at = run.target(frame, 0)
        run.record("init", at, at, value)
        if problem is not None:
            raise StepFailure(problem, "not_json")
        timeout = self.limits.execution_timeout_s
        if timeout:
            run.st["deadline"] = {"timer": "deadline", "at": run.now + int(timeout * 1000)}
            run.cmds.append(StartTimer("deadline", run.st["deadline"]["at"], "task_timeout"))

    def _branch_state(self, shared: Mapping[str, Any], branch: Mapping[str, Any]) -> dict[str, Any]:
        scope = shared["scope"]
        slot = shared["slots"][branch["slot"]]
        index = branch["index"]
        base = body_base(shared["path"], shared["kind"], slot, index if shared["kind"] != "parallel" else 0)
        root = {
            "t": "wf",
            "nested": True,
            "wf": shared["workflow"],
            "loc": [*shared["loc"], [shared["index"], slot]],
            "base": base,
            "i": 0,
            "cur": branch["input"],
            "scope": scope["scope"],
            "input": scope["input"],
            "outs": list(scope["outs"]) if scope["outs"] is not None else None,
            "kv": dict(scope["kv"]),
            "delta": {},
            "depth": scope["depth"],
        }
        st = self._main_state()
        st["run"] = branch["key"]
        st["frames"] = [root]
        st["parent"] = {"fanout": shared["fanout"], "index": index}
        self.seqs.get(root["wf"], root["loc"])  # validate the locator now
        return st

    def _start_branch(self, run: Run) -> None:
        frame = run.top()
        at = run.target(frame, 0)
        step = run.m.seqs.get(frame["wf"], frame["loc"][:-1])[frame["loc"][-1][0]]
        run.record("init_branch", at, at, frame["cur"], step)

    # -- events --------------------------------------------------------------------------------

    def _dispatch(self, run: Run, event: Event) -> None:
        st = run.st
        pending = st["pending"]
        if isinstance(event, Cancel):
            run.cancel(event.reason)
            return
        if isinstance(event, TimerFired) and st.get("deadline") and event.timer_id == st["deadline"]["timer"]:
            st["deadline"] = None
            raise StepFailure("the execution went over its time limit", "timeout")
        if pending is None:
            return
        kind = pending["kind"]
        if isinstance(event, Continue | Recover):
            if kind == "continue":
                run.unsuspend()
            elif kind == "effect" and isinstance(event, Recover):
                run.cmds.append(RunEffect(pending["effect"], pending["request"], pending["deadline"]))
            return
        if isinstance(event, EffectDone):
            if kind == "effect" and event.effect_id == pending["effect"]:
                run.unsuspend()
                step = run.current_step()
                self.handler(step).effect_done(run, step, pending, event.output, dict(event.metadata))
            return
        if isinstance(event, EffectFailed):
            if kind == "effect" and event.effect_id == pending["effect"]:
                self._effect_failed(run, pending, event.error)
            return
        if isinstance(event, EffectSuspended):
            if kind == "effect" and event.effect_id == pending["effect"]:
                run.unsuspend()
                step = run.current_step()
                calls = jsonify(event.tool_calls)
                extra = {
                    "resume": event.resume,
                    "effect": pending["effect"],
                    "request": pending["request"],
                    "continuation": jsonify(event.continuation),
                }
                run.open_wait(step, "tool_calls", None, calls, extra)
            return
        if isinstance(event, TimerFired):
            if pending.get("timer") != event.timer_id:
                return
            if kind == "sleep":
                run.unsuspend()
                run.complete(run.current_step(), run.top()["cur"])
            elif kind == "retry":
                run.unsuspend()
                step = run.current_step()
                request = {**pending["request"], "attempt": pending["attempt"]}
                body = {k: v for k, v in request.items() if k not in ("effect_id", "attempt", "step")}
                run.start_effect(step, body, pending["attempt"], pending["effect"])
            elif kind == "wait":
                raise StepFailure("no input arrived before the wait's time limit", "timeout")
            return
        if isinstance(event, Resume):
            if kind == "wait" and event.wait_id == pending["wait"]:
                self._resume(run, pending, event.input)
            return
        if isinstance(event, BranchesDone):
            if kind == "fanout" and event.fanout_id == pending["fanout"]:
                if len(event.results) != pending["n"]:
                    raise StepFailure(
                        f"fan-out {pending['fanout']} reported {len(event.results)} results for {pending['n']} branches",
                        "internal",
                    )
                run.unsuspend()
                step = run.current_step()
                self.handler(step).branches_done(run, step, pending, [dict(r) for r in event.results])
            return
        if isinstance(event, BranchFailed):
            if kind == "fanout" and event.fanout_id == pending["fanout"]:
                message = str(event.error.get("error", "failed"))
                raise StepFailure(
                    f"branch {event.index} failed: {message}", str(event.error.get("kind", "branch_failed"))
                )
            return
        if isinstance(event, BranchReturned):
            if kind == "fanout" and event.fanout_id == pending["fanout"]:
                run.unsuspend()
                run.cmds.append(CancelBranches(pending["fanout"]))
                if event.state:
                    run.set_state(event.state)
                run.do_return(run.current_step(), event.value)
            return

    def _effect_failed(self, run: Run, pending: dict[str, Any], error: Mapping[str, Any]) -> None:
        step = run.current_step()
        policy = self.retry_policy(step)
        kind = str(error.get("kind", "error"))
        message = str(error.get("message", error.get("error", "the effect failed")))
        attempt = pending["attempt"]
        retryable = bool(error.get("retryable", True)) and kind not in policy.non_retryable
        if retryable and attempt < policy.max_attempts:
            run.unsuspend()
            timer = run.new_id("timer", "t")
            fire_at = run.now + backoff_ms(policy, attempt)
            run.cmds.append(StartTimer(timer, fire_at, "retry"))
            request = pending["request"]
            continuation = error.get("continuation")
            if isinstance(continuation, Mapping):  # the next attempt carries on from where this one failed
                try:
                    resume = {"continuation": jsonify(continuation), "results": {}}
                    request = {**request, "resume": resume}
                except NotJson:
                    pass  # not from our executor: retry from the start
            run.suspend(
                {
                    "kind": "retry",
                    "timer": timer,
                    "effect": pending["effect"],
                    "attempt": attempt + 1,
                    "request": request,
                    "last_error": {"kind": kind, "message": message},
                }
            )
            return
        suffix = f" (after {attempt} attempts)" if attempt > 1 else ""
        raise StepFailure(f"{message}{suffix}", kind)

    def _resume(self, run: Run, pending: dict[str, Any], value: Any) -> None:
        value = run.checked(value, "resume input")
        run.unsuspend()
        run.cmds.append(CloseWait(pending["wait"]))
        run.cmds.append(CancelTimer(pending["timer"]))
        step = run.current_step()
        run.record("resume", run.here(), run.next_target(), value, step, {"wait_id": pending["wait"]})
        if pending["mode"] == "tool_calls" and pending.get("resume") == "effect":
            body = {k: v for k, v in pending["request"].items() if k not in ("effect_id", "attempt", "step")}
            body["resume"] = {"continuation": pending.get("continuation"), "results": value}
            run.start_effect(step, body)
        else:
            run.complete(step, value)


def _broken(message: str) -> tuple[dict[str, Any], list[Command]]:
    error = {"error": message, "kind": "internal", "step": ""}
    state = {
        "v": 1,
        "run": "?",
        "status": "failed",
        "frames": [],
        "pending": None,
        "ctr": initial_counters(),
        "n": 0,
        "deadline": None,
        "parent": None,
        "result": None,
        "error": error,
    }
    return state, [Fail(error)]


def _mentions_history(node: Any, _depth: int = 0) -> bool:
    if _depth > 400:
        return True
    if node is None or isinstance(node, bool | int | float | str):
        return False
    if isinstance(node, Mapping):
        return any(_mentions_history(v, _depth + 1) for v in node.values())
    if isinstance(node, tuple | list):
        return any(_mentions_history(v, _depth + 1) for v in node)
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        if type(node).__module__.endswith("dsl.reading"):
            return _readable_mentions(node)
        return any(_mentions_history(getattr(node, f.name), _depth + 1) for f in dataclasses.fields(node))
    return _readable_mentions(node)


def _readable_mentions(node: Any) -> bool:
    """A read string: does its source text name inputs/outputs/steps? (conservative)."""
    for attr in ("names", "params"):
        names = getattr(node, attr, None)
        if isinstance(names, frozenset | set | tuple | list):
            return any(n in names for n in _HISTORY_NAMES)
    source = getattr(node, "source", None)
    if not isinstance(source, str):
        return True
    return any(n in source for n in _HISTORY_NAMES)
