"""One advance of one run: the mutable working copy of a run's state and the moves every handler
uses (complete a step, enter a body, call a workflow, suspend, fail, finish).

A *run* is one flow of control: the execution's own flow (`run == "main"`) or one branch of a
fan-out (`run == "<fanout id>.<index>"`). Its state is plain JSON (see machine.py for the shape);
`Run` copies the mutable skeleton of the state on entry, so `advance` never mutates its input and
values (outputs, `_`) are shared, never modified in place.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from mintleaf_server.dsl.errors import EvaluationError
from mintleaf_server.dsl.library import BUILTINS
from mintleaf_server.engine.commands import (
    CancelBranches,
    CancelEffect,
    Cancelled,
    CancelTimer,
    CloseWait,
    Command,
    Fail,
    Finish,
    OpenWait,
    Record,
    RunEffect,
    StartTimer,
)
from mintleaf_server.engine.cursor import body_base
from mintleaf_server.engine.values import NotJson, jsonify, payload_size

if TYPE_CHECKING:
    from mintleaf_server.dsl.steps import Sequence, Step
    from mintleaf_server.engine.machine import Machine

__all__ = ["SCOPE_NAMES", "Run", "Scope", "StepFailure", "reduce_scope"]

SCOPE_NAMES = (
    "_",
    "inputs",
    "outputs",
    "steps",
    "state",
    "execution",
    "task",
    "agent",
    "agent_tools",
    "arguments",
    "developer_id",
    "cursor",
    "current_input",
    "user",
    "session",
)


class StepFailure(Exception):
    """Internal: the current step failed. Caught inside the machine, never escapes `advance`."""

    def __init__(
        self, message: str, kind: str = "step_failed", expression: str = "", retryable: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.expression = expression
        self.retryable = retryable


class Scope(Mapping[str, Any]):
    """The names an expression sees (JULEP-SPEC 3.3). `inputs`/`outputs`/`steps` are built only
    when an expression reads them (compiled expressions look up just the names they use)."""

    __slots__ = ("_cache", "_cur", "_cursor", "_m", "_wf")

    def __init__(self, machine: Machine, wf: dict[str, Any], cur: Any, cursor: dict[str, Any]) -> None:
        self._m = machine
        self._wf = wf
        self._cur = cur
        self._cursor = cursor
        self._cache: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key in ("_", "current_input"):
            return self._cur
        if key == "state":
            return self._wf["kv"]
        if key in ("inputs", "outputs", "steps"):
            if key not in self._cache:
                self._build_history()
            return self._cache[key]
        env = self._m.env
        if key == "execution":
            return env.execution
        if key == "arguments":
            return env.execution.get("input")
        if key == "task":
            return env.task
        if key == "agent":
            return env.agent
        if key == "agent_tools":
            return env.agent_tools
        if key == "developer_id":
            return env.developer_id
        if key == "cursor":
            return self._cursor
        if key in ("user", "session"):
            return None
        # Compiled expressions look whitelisted builtins up in the scope too (the parser
        # passes them as scope names); templates get them as Jinja globals.
        return BUILTINS[key]

    def _build_history(self) -> None:
        wf = self._wf
        first = wf["input"]
        outs: list[Any] = wf["outs"] or []
        labels = self._m.labels(wf["wf"])
        inputs: dict[Any, Any] = {0: first}
        outputs: dict[Any, Any] = {}
        steps: dict[Any, Any] = {}
        for i, out in enumerate(outs):
            inputs[i + 1] = out
            outputs[i] = out
            steps[i] = {"input": inputs[i], "output": out}
        for i, label in labels.items():
            if i < len(outs):
                inputs[label] = inputs[i]
                outputs[label] = outs[i]
                steps[label] = steps[i]
            elif i == len(outs):
                inputs[label] = first if i == 0 else outs[i - 1]
        self._cache.update(inputs=inputs, outputs=outputs, steps=steps)

    def __iter__(self) -> Iterator[str]:
        return iter(SCOPE_NAMES)

    def __len__(self) -> int:
        return len(SCOPE_NAMES)


def reduce_scope(results: Any, output: Any) -> Mapping[str, Any]:
    """The scope of a map_reduce `reduce`: only `results`, `_` and the builtins."""
    return ChainMap({"results": results, "_": output}, BUILTINS)


def _copy_frame(frame: dict[str, Any]) -> dict[str, Any]:
    out = dict(frame)
    if out.get("outs") is not None:
        out["outs"] = list(out["outs"])
    if "kv" in out:
        out["kv"] = dict(out["kv"])
    if "delta" in out:
        out["delta"] = dict(out["delta"])
    if "ctl" in out and out["ctl"] is not None:
        ctl = dict(out["ctl"])
        if isinstance(ctl.get("acc"), list):
            ctl["acc"] = list(ctl["acc"])
        out["ctl"] = ctl
    return out


def copy_state(state: dict[str, Any]) -> dict[str, Any]:
    """Copy of the mutable skeleton of a state; JSON values inside are shared (never mutated)."""
    out = dict(state)
    out["frames"] = [_copy_frame(f) for f in state["frames"]]
    out["ctr"] = dict(state["ctr"])
    return out


class Run:
    """Working copy of one run during one `advance`: state, emitted commands, step budget."""

    __slots__ = ("budget", "cmds", "m", "now", "st")

    def __init__(self, machine: Machine, state: dict[str, Any], now_ms: int) -> None:
        self.m = machine
        self.st = state
        self.now = now_ms
        self.cmds: list[Command] = []
        self.budget = machine.limits.steps_per_advance

    # -- where we are --------------------------------------------------------------------------

    @property
    def frames(self) -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = self.st["frames"]
        return frames

    @property
    def is_branch(self) -> bool:
        return self.st["parent"] is not None

    def top(self) -> dict[str, Any]:
        return self.frames[-1]

    def wf_frame(self) -> dict[str, Any]:
        for frame in reversed(self.frames):
            if frame["t"] == "wf":
                found: dict[str, Any] = frame
                return found
        raise RuntimeError("a run without a workflow frame")

    def seq(self, frame: dict[str, Any]) -> Sequence:
        return self.m.seqs.get(frame["wf"], frame["loc"])

    def current_step(self) -> Step:
        frame = self.top()
        step: Step = self.seq(frame)[frame["i"]]
        return step

    def target(self, frame: dict[str, Any], i: int) -> dict[str, Any]:
        return {
            "workflow": frame["wf"],
            "step": i,
            "scope_id": frame["scope"],
            "path": f"{frame['base']}[{i}]",
            "branch_id": self.st["run"] if self.is_branch else "",
        }

    def here(self) -> dict[str, Any]:
        frame = self.top()
        return self.target(frame, frame["i"])

    def next_target(self) -> dict[str, Any] | None:
        frame = self.top()
        i = frame["i"]
        return self.target(frame, i + 1) if i + 1 < len(self.seq(frame)) else None

    def new_id(self, counter: str, letter: str) -> str:
        ctr = self.st["ctr"]
        ctr[counter] = ctr.get(counter, 0) + 1
        prefix = f"{self.st['run']}/" if self.is_branch else ""
        return f"{prefix}{letter}{ctr[counter]}"

    # -- expressions ---------------------------------------------------------------------------

    def scope(self) -> Scope:
        top = self.top()
        return Scope(self.m, self.wf_frame(), top["cur"], self.here())

    def eval(self, tree: Any, scope: Mapping[str, Any] | None = None) -> Any:
        """Evaluate a read tree; an error fails the step naming its path and the expression."""
        try:
            return self.m.evaluate(tree, self.scope() if scope is None else scope)
        except EvaluationError as exc:
            raise StepFailure(str(exc), "evaluation", exc.source) from exc
        except StepFailure:
            raise
        except Exception as exc:  # the evaluator must not take the machine down
            raise StepFailure(f"{type(exc).__name__}: {exc}", "evaluation") from exc

    def checked(self, value: Any, what: str = "output") -> Any:
        try:
            out = jsonify(value)
        except NotJson as exc:
            raise StepFailure(f"the {what} is not JSON: {exc}", "not_json") from exc
        limit = self.m.limits.max_payload_bytes
        if limit and payload_size(out) > limit:
            raise StepFailure(f"the {what} is larger than the limit of {limit} bytes", "payload_too_large")
        return out

    # -- transitions ---------------------------------------------------------------------------

    def record(
        self,
        type_: str,
        current: dict[str, Any],
        next_: dict[str, Any] | None,
        output: Any,
        step: Step | None = None,
        metadata: dict[str, Any] | None = None,
        error: str = "",
    ) -> None:
        self.cmds.append(
            Record(
                type_,
                current,
                next_,
                output,
                error,
                step.kind if step is not None else "",
                (step.label or "") if step is not None else "",
                metadata or {},
            )
        )

    def count_step(self) -> None:
        self.st["n"] += 1
        if self.st["n"] > self.m.limits.max_steps:
            raise StepFailure(f"the run went over the limit of {self.m.limits.max_steps} steps", "limit")

    def complete(self, step: Step, output: Any, metadata: dict[str, Any] | None = None) -> None:
        """The current step finished with `output`: record it and move on."""
        out = self.checked(output)
        self.count_step()
        self.budget -= 1
        frame = self.top()
        i = frame["i"]
        seq = self.seq(frame)
        if frame["t"] == "wf" and not frame.get("nested") and frame.get("outs") is not None:
            frame["outs"].append(out)
        at = self.target(frame, i)
        frame["cur"] = out
        frame["i"] = i + 1
        if i + 1 < len(seq):
            self.record("step", at, self.target(frame, i + 1), out, step, metadata)
        else:
            self.end_sequence(out, step, at, metadata or {}, returned=False)

    def do_return(self, step: Step, value: Any) -> None:
        """`return`: end the nearest workflow (bodies in between are left)."""
        out = self.checked(value)
        self.count_step()
        self.budget -= 1
        at = self.here()
        while self.top()["t"] == "body":
            self.frames.pop()
        self.end_sequence(out, step, at, {}, returned=True)

    def end_sequence(
        self, out: Any, step: Step, at: dict[str, Any], metadata: dict[str, Any], returned: bool
    ) -> None:
        frame = self.top()
        if frame["t"] == "body":
            self.record("finish_branch", at, None, out, step, metadata)
            self.frames.pop()
            container = self.current_step()
            self.m.handler(container).body_done(self, container, frame, out)
            return
        if frame.get("nested"):  # a branch's root body
            md = {**metadata, "returned": True} if returned else metadata
            self.record("finish_branch", at, None, out, step, md)
            self.finish(out, returned)
            return
        if len(self.frames) == 1:  # the execution's main workflow
            self.record("finish", at, None, out, step, metadata)
            self.finish(out, False)
            return
        self.record("finish_branch", at, None, out, step, metadata)  # a yielded workflow
        self.frames.pop()
        caller = self.current_step()
        self.complete(caller, out)

    # -- entering bodies and workflows ---------------------------------------------------------

    def push_body(self, step: Step, slot: str, item: int, input_: Any, ctl: dict[str, Any] | None) -> None:
        parent = self.top()
        if len(self.frames) >= self.m.limits.max_frames:
            raise StepFailure(f"nesting deeper than {self.m.limits.max_frames} levels", "limit")
        i = parent["i"]
        frame = {
            "t": "body",
            "wf": parent["wf"],
            "loc": [*parent["loc"], [i, slot]],
            "base": body_base(f"{parent['base']}[{i}]", step.kind, slot, item),
            "i": 0,
            "cur": input_,
            "scope": parent["scope"],
            "ctl": ctl,
        }
        self.frames.append(frame)
        at = self.target(frame, 0)
        self.record("init_branch", at, at, input_, step)

    def push_workflow(self, step: Step, name: str, arguments: Any) -> None:
        caller = self.wf_frame()
        depth = caller["depth"] + 1
        limits = self.m.limits
        if depth > limits.max_yield_depth:
            raise StepFailure(f"yield went deeper than {limits.max_yield_depth} calls", "limit")
        if len(self.frames) >= limits.max_frames:
            raise StepFailure(f"nesting deeper than {limits.max_frames} levels", "limit")
        if name not in self.m.task.workflows:
            raise StepFailure(f"no workflow named {name!r}", "unknown_workflow")
        frame = {
            "t": "wf",
            "wf": name,
            "loc": [],
            "base": name,
            "i": 0,
            "cur": arguments,
            "scope": self.new_id("scope", "s"),
            "input": arguments,
            "outs": [] if self.m.keeps_history(name) else None,
            "kv": {},
            "depth": depth,
        }
        self.frames.append(frame)
        at = self.target(frame, 0)
        self.record("init_branch", at, at, arguments, step)

    def set_state(self, values: Mapping[str, Any]) -> None:
        wf = self.wf_frame()
        wf["kv"].update(values)
        if wf.get("nested"):
            wf["delta"].update(values)

    # -- suspending ----------------------------------------------------------------------------

    def suspend(self, pending: dict[str, Any]) -> None:
        self.st["pending"] = pending
        self.st["status"] = "pending"

    def unsuspend(self) -> dict[str, Any]:
        pending: dict[str, Any] = self.st["pending"]
        self.st["pending"] = None
        self.st["status"] = "running"
        return pending

    def start_effect(self, step: Step, body: dict[str, Any], attempt: int = 1, effect_id: str = "") -> None:
        """Ask the worker to run an effect. Nothing durable is needed first: if the worker dies
        before the next commit, replaying from the last committed state emits the same request."""
        eid = effect_id or self.new_id("effect", "e")
        frame = self.top()
        timeout = step.timeout_s or self.m.task.timeout_s or self.m.limits.effect_timeout_s
        deadline = self.now + int(timeout * 1000)
        request = {
            **body,
            "effect_id": eid,
            "attempt": attempt,
            "step": {
                "workflow": frame["wf"],
                "loc": frame["loc"],
                "index": frame["i"],
                "path": f"{frame['base']}[{frame['i']}]",
                "label": step.label or "",
            },
            "execution_id": self.m.env.execution_id,
            "developer_id": self.m.env.developer_id,
        }
        self.suspend(
            {"kind": "effect", "effect": eid, "attempt": attempt, "request": request, "deadline": deadline}
        )
        self.cmds.append(RunEffect(eid, request, deadline))

    def open_wait(
        self, step: Step, kind: str, info: Any, tool_calls: list[dict[str, Any]], extra: dict[str, Any]
    ) -> None:
        wait_id = self.new_id("wait", "w")
        timer = self.new_id("timer", "t")
        at = self.here()
        timeout = step.timeout_s or self.m.limits.max_wait_s
        output = info if kind == "wait_for_input" else tool_calls
        self.record("wait", at, None, output, step, {"wait_id": wait_id})
        self.cmds.append(OpenWait(wait_id, kind, info, tool_calls, at))
        self.cmds.append(StartTimer(timer, self.now + int(timeout * 1000), "wait_timeout"))
        self.suspend({"kind": "wait", "wait": wait_id, "mode": kind, "timer": timer, **extra})

    # -- endings -------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Cancel whatever the run still waits for (it is ending)."""
        pending = self.st["pending"]
        if pending is not None:
            kind = pending["kind"]
            if kind == "effect":
                self.cmds.append(CancelEffect(pending["effect"]))
            elif kind == "wait":
                self.cmds.append(CloseWait(pending["wait"]))
                self.cmds.append(CancelTimer(pending["timer"]))
            elif kind in ("sleep", "retry"):
                self.cmds.append(CancelTimer(pending["timer"]))
            elif kind == "fanout":
                self.cmds.append(CancelBranches(pending["fanout"]))
        deadline = self.st.get("deadline")
        if deadline is not None:
            self.cmds.append(CancelTimer(deadline["timer"]))
            self.st["deadline"] = None
        self.st["pending"] = None

    def finish(self, out: Any, returned: bool) -> None:
        self.cleanup()
        self.st["status"] = "succeeded"
        self.st["result"] = out
        self.st["returned"] = returned
        root = self.frames[0]
        state = dict(root.get("delta", {})) if self.is_branch else {}
        self.cmds.append(Finish(out, state, returned))

    def fail(self, failure: StepFailure) -> None:
        frame = self.top()
        i = min(frame["i"], len(self.seq(frame)) - 1)
        at = self.target(frame, i)
        step = self.seq(frame)[i]
        error: dict[str, Any] = {"error": failure.message, "kind": failure.kind, "step": at["path"]}
        if failure.expression:
            error["expression"] = failure.expression
        self.cleanup()
        self.record(
            "error", at, None, {"error": failure.message}, step, {"kind": failure.kind}, error=failure.message
        )
        self.st["status"] = "failed"
        self.st["error"] = error
        self.cmds.append(Fail(error))

    def cancel(self, reason: str) -> None:
        at = self.here() if self.frames else {}
        self.cleanup()
        self.record("cancelled", at, None, reason or "cancelled", None, {"reason": reason} if reason else {})
        self.st["status"] = "cancelled"
        self.st["error"] = {"error": reason or "cancelled", "kind": "cancelled"}
        self.cmds.append(Cancelled(reason))
