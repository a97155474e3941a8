"""One handler per step kind, in one registry (`HANDLERS`).

A handler's `begin` runs when the cursor reaches its step and does exactly one of: complete the
step (`run.complete`), enter a body or workflow (`run.push_body` / `run.push_workflow`), suspend
(effect, wait, timer, fan-out), `return`, or raise StepFailure. Containers get `body_done` when
their body ends; effect steps get `effect_done`; fan-out steps get `branches_done`.

Sequential foreach / map_reduce (parallelism 1) run their bodies inline, frame by frame, in this
run; with parallelism > 1 (and always for `parallel`) they become durable branches. Rejected:
always branching (a sequential loop would pay a branch record per item) and never branching
(one worker would run every item).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mintleaf_server.dsl.steps import (
    EmbedStep,
    ErrorStep,
    EvaluateStep,
    ForeachStep,
    GetStep,
    IfElseStep,
    LogStep,
    MapReduceStep,
    ParallelStep,
    PromptMessage,
    PromptStep,
    ReturnStep,
    SearchStep,
    SetStep,
    SleepStep,
    Step,
    SwitchStep,
    ToolCallStep,
    WaitForInputStep,
    YieldStep,
    thaw,
)
from mintleaf_server.engine.commands import StartBranches, StartTimer
from mintleaf_server.engine.effects import EffectError, tool_call_id, unwrap_completion
from mintleaf_server.engine.run import Run, StepFailure, reduce_scope

__all__ = ["HANDLERS", "Handler"]


class Handler:
    kind = ""

    def begin(self, run: Run, step: Step) -> None:
        raise NotImplementedError

    def body_done(self, run: Run, step: Step, frame: dict[str, Any], output: Any) -> None:
        raise StepFailure(f"step kind {step.kind} has no body", "internal")

    def effect_done(
        self, run: Run, step: Step, pending: dict[str, Any], output: Any, metadata: dict[str, Any]
    ) -> None:
        run.complete(step, output, {"attempts": pending["attempt"], **metadata})

    def branches_done(
        self, run: Run, step: Step, pending: dict[str, Any], results: list[dict[str, Any]]
    ) -> None:
        raise StepFailure(f"step kind {step.kind} has no branches", "internal")


# -- pure steps ------------------------------------------------------------------------------------


class EvaluateHandler(Handler):
    kind = "evaluate"

    def begin(self, run: Run, step: Step) -> None:
        assert isinstance(step, EvaluateStep)
        run.complete(step, run.eval(step.values))


class SetHandler(Handler):
    kind = "set"

    def begin(self, run: Run, step: Step) -> None:
        assert isinstance(step, SetStep)
        values = run.checked(run.eval(step.values), "value to set")
        if not isinstance(values, Mapping):
            raise StepFailure("set needs an object of keys and values", "type")
        run.set_state(values)
        run.complete(step, values)


class GetHandler(Handler):
    kind = "get"

    def begin(self, run: Run, step: Step) -> None:
        assert isinstance(step, GetStep)
        run.complete(step, run.wf_frame()["kv"].get(step.key))


class LogHandler(Handler):
    kind = "log"

    def begin(self, run: Run, step: Step) -> None:
        assert isinstance(step, LogStep)
        message = run.eval(step.message)
        run.complete(step, run.top()["cur"], {"log": message if isinstance(message, str) else str(message)})


class ReturnHandler(Handler):
    kind = "return"

    def begin(self, run: Run, step: Step) -> None:
        assert isinstance(step, ReturnStep)
        run.do_return(step, run.eval(step.value))


class ErrorHandler(Handler):
    kind = "error"

    def begin(self, run: Run, step: Step) -> None:
        assert isinstance(step, ErrorStep)
        message = run.eval(step.message)
        raise StepFailure(message if isinstance(message, str) else str(message), "error_step")


# -- control flow ----------------------------------------------------------------------------------


class IfElseHandler(Handler):
    kind = "if_else"

    def begin(self, run: Run, step: Step) -> None:
        assert isinstance(step, IfElseStep)
        cur = run.top()["cur"]
        if run.eval(step.condition):
            run.push_body(step, "then", 0, cur, None)
        elif step.else_ is not None:
            run.push_body(step, "else", 0, cur, None)
        else:  # Mintleaf: `_` passes through unchanged (Julep wrapped it in {"output": _})
            run.complete(step, cur)

    def body_done(self, run: Run, step: Step, frame: dict[str, Any], output: Any) -> None:
        run.complete(step, output)


class SwitchHandler(Handler):
    kind = "switch"

    def begin(self, run: Run, step: Step) -> None:
        assert isinstance(step, SwitchStep)
        cur = run.top()["cur"]
        scope = run.scope()
        for i, case in enumerate(step.cases):
            if case.case is None or run.eval(case.case, scope):
                run.push_body(step, f"case:{i}", 0, cur, None)
                return
        raise StepFailure(f"no case of the switch at {run.here()['path']} matched", "no_case")

    def body_done(self, run: Run, step: Step, frame: dict[str, Any], output: Any) -> None:
        run.complete(step, output)


class YieldHandler(Handler):
    kind = "yield"

    def begin(self, run: Run, step: Step) -> None:
        assert isinstance(step, YieldStep)
        arguments = run.checked(run.eval(step.arguments), "yield arguments")
        run.push_workflow(step, step.workflow, arguments)


class SleepHandler(Handler):
    kind = "sleep"

    def begin(self, run: Run, step: Step) -> None:
        assert isinstance(step, SleepStep)
        if step.seconds <= 0:  # the parser rejects it; a zero sleep is a no-op, not a timer
            run.complete(step, run.top()["cur"])
            return
        timer = run.new_id("timer", "t")
        fire_at = run.now + int(step.seconds * 1000)
        run.cmds.append(StartTimer(timer, fire_at, "sleep"))
        run.suspend({"kind": "sleep", "timer": timer, "at": fire_at})


class WaitForInputHandler(Handler):
    kind = "wait_for_input"

    def begin(self, run: Run, step: Step) -> None:
        assert isinstance(step, WaitForInputStep)
        info = run.checked(run.eval(step.info), "wait info")
        run.open_wait(step, "wait_for_input", info, [], {})


# -- fan-out ---------------------------------------------------------------------------------------


def _items(run: Run, value: Any, what: str) -> list[Any]:
    if isinstance(value, Mapping) or not isinstance(value, list | tuple):
        raise StepFailure(f"{what} must evaluate to a list, not {type(value).__name__}", "type")
    items = run.checked(list(value), what)
    limit = run.m.limits.max_fanout
    if len(items) > limit:
        raise StepFailure(f"{what} has {len(items)} items, over the limit of {limit}", "limit")
    return list(items)


def _start_branches(
    run: Run, step: Step, slots: list[str], inputs: list[Any], parallelism: int, ctl: dict[str, Any]
) -> None:
    """Suspend on a fan-out: one durable branch per input, run by any worker."""
    frame = run.top()
    wf = run.wf_frame()
    fanout = run.new_id("fanout", "f")
    window = max(1, min(parallelism, run.m.limits.max_parallelism, len(inputs)))
    shared = {
        "fanout": fanout,
        "kind": step.kind,
        "workflow": frame["wf"],
        "loc": frame["loc"],
        "index": frame["i"],
        "path": f"{frame['base']}[{frame['i']}]",
        "slots": slots,
        "scope": {
            "scope": wf["scope"],
            "input": wf["input"],
            "outs": wf["outs"],
            "kv": wf["kv"],
            "depth": wf["depth"],
            "wf": wf["wf"],
        },
    }
    branches = [
        {"key": f"{fanout}.{i}", "index": i, "input": value, "slot": 0 if len(slots) == 1 else i}
        for i, value in enumerate(inputs)
    ]
    run.cmds.append(StartBranches(fanout, window, branches, shared))
    run.suspend({"kind": "fanout", "fanout": fanout, "n": len(inputs), "ctl": ctl})


def _merge_states(run: Run, results: list[dict[str, Any]]) -> None:
    for result in results:  # item order: a later item's `set` wins
        delta = result.get("state") or {}
        if delta:
            run.set_state(delta)


class ForeachHandler(Handler):
    kind = "foreach"

    def begin(self, run: Run, step: Step) -> None:
        assert isinstance(step, ForeachStep)
        items = _items(run, run.eval(step.in_), "foreach.in")
        if not items:
            run.complete(step, [])
        elif step.parallelism > 1:
            _start_branches(run, step, ["do"], items, step.parallelism, {})
        else:
            run.push_body(step, "do", 0, items[0], {"k": 0, "items": items, "acc": []})

    def body_done(self, run: Run, step: Step, frame: dict[str, Any], output: Any) -> None:
        ctl = frame["ctl"]
        acc = [*ctl["acc"], output]
        k = ctl["k"] + 1
        if k < len(ctl["items"]):
            run.push_body(step, "do", k, ctl["items"][k], {"k": k, "items": ctl["items"], "acc": acc})
        else:
            run.complete(step, acc)

    def branches_done(
        self, run: Run, step: Step, pending: dict[str, Any], results: list[dict[str, Any]]
    ) -> None:
        _merge_states(run, results)
        run.complete(step, [r.get("output") for r in results])


class MapReduceHandler(Handler):
    kind = "map_reduce"

    def _reduce(self, run: Run, step: MapReduceStep, results: Any, output: Any) -> Any:
        if step.reduce is None:
            if not isinstance(results, list):
                raise StepFailure("map_reduce without reduce needs a list as `initial`", "type")
            return [*results, output]
        # Only `results` and `_` are in scope (JULEP-SPEC 2.3), bound as names: never rewritten.
        return run.checked(run.eval(step.reduce, reduce_scope(results, output)), "reduce result")

    def begin(self, run: Run, step: Step) -> None:
        assert isinstance(step, MapReduceStep)
        items = _items(run, run.eval(step.over), "map_reduce.over")
        initial = run.checked(run.eval(step.initial), "initial")
        if not items:
            run.complete(step, initial)
        elif step.parallelism > 1:
            _start_branches(run, step, ["map"], items, step.parallelism, {"initial": initial})
        else:
            run.push_body(step, "map", 0, items[0], {"k": 0, "items": items, "acc": initial})

    def body_done(self, run: Run, step: Step, frame: dict[str, Any], output: Any) -> None:
        assert isinstance(step, MapReduceStep)
        ctl = frame["ctl"]
        acc = self._reduce(run, step, ctl["acc"], output)
        k = ctl["k"] + 1
        if k < len(ctl["items"]):
            run.push_body(step, "map", k, ctl["items"][k], {"k": k, "items": ctl["items"], "acc": acc})
        else:
            run.complete(step, acc)

    def branches_done(
        self, run: Run, step: Step, pending: dict[str, Any], results: list[dict[str, Any]]
    ) -> None:
        assert isinstance(step, MapReduceStep)
        _merge_states(run, results)
        acc = pending["ctl"]["initial"]
        for result in results:  # fold in item order, whatever order the branches ended in
            acc = self._reduce(run, step, acc, result.get("output"))
        run.complete(step, acc)


class ParallelHandler(Handler):
    kind = "parallel"

    def begin(self, run: Run, step: Step) -> None:
        assert isinstance(step, ParallelStep)
        n = len(step.branches)
        if n > run.m.limits.max_fanout:
            raise StepFailure(
                f"parallel has {n} branches, over the limit of {run.m.limits.max_fanout}", "limit"
            )
        cur = run.top()["cur"]
        _start_branches(run, step, [f"par:{i}" for i in range(n)], [cur] * n, n, {})

    def branches_done(
        self, run: Run, step: Step, pending: dict[str, Any], results: list[dict[str, Any]]
    ) -> None:
        _merge_states(run, results)
        run.complete(step, [r.get("output") for r in results])  # declaration order


# -- effects ---------------------------------------------------------------------------------------


def _message(run: Run, message: PromptMessage) -> dict[str, Any]:
    content: Any
    if isinstance(message.content, tuple):
        content = []
        for part in message.content:
            item: dict[str, Any] = {"type": part.type}
            if part.text is not None:
                item["text"] = run.eval(part.text)
            if part.image_url is not None:
                item["image_url"] = {"url": run.eval(part.image_url)}
                if part.detail is not None:
                    item["image_url"]["detail"] = part.detail
            content.append(item)
    else:
        content = run.eval(message.content)
    out: dict[str, Any] = {"role": message.role, "content": content}
    if message.name is not None:
        out["name"] = message.name
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.continue_ is not None:
        out["continue"] = message.continue_
    if message.tool_calls is not None:
        out["tool_calls"] = run.eval(message.tool_calls)
    return out


class PromptHandler(Handler):
    kind = "prompt"

    def begin(self, run: Run, step: Step) -> None:
        assert isinstance(step, PromptStep)
        if isinstance(step.prompt, tuple):
            messages = [_message(run, m) for m in step.prompt]
        else:
            value = run.eval(step.prompt)
            if isinstance(value, list):  # an expression may build the message list itself
                messages = value
            else:
                messages = [{"role": "user", "content": value if isinstance(value, str) else str(value)}]
        tools: Any = step.tools
        if not isinstance(tools, str):
            tools = [
                t if isinstance(t, str) else {"inline": i, "name": t.name} for i, t in enumerate(step.tools)
            ]
        body = {
            "kind": "prompt",
            "messages": run.checked(messages, "prompt"),
            "tools": tools,
            "tool_choice": thaw(step.tool_choice),
            "settings": thaw(step.settings),
            "unwrap": step.unwrap,
            "auto_run_tools": step.auto_run_tools,
            "disable_cache": step.disable_cache,
        }
        run.start_effect(step, body)

    def effect_done(
        self, run: Run, step: Step, pending: dict[str, Any], output: Any, metadata: dict[str, Any]
    ) -> None:
        assert isinstance(step, PromptStep)
        if step.unwrap:
            try:
                output = unwrap_completion(output)
            except EffectError as exc:
                raise StepFailure(str(exc), "unwrap") from exc
        run.complete(step, output, {"attempts": pending["attempt"], **metadata})


class ToolCallHandler(Handler):
    kind = "tool_call"

    def begin(self, run: Run, step: Step) -> None:
        assert isinstance(step, ToolCallStep)
        arguments = run.checked(run.eval(step.arguments), "tool arguments")
        effect_id = run.new_id("effect", "e")
        body = {
            "kind": "tool_call",
            "tool": step.tool,
            "arguments": arguments,
            "call_id": tool_call_id(run.m.env.execution_id, effect_id),
        }
        run.start_effect(step, body, effect_id=effect_id)


class EmbedHandler(Handler):
    kind = "embed"

    def begin(self, run: Run, step: Step) -> None:
        assert isinstance(step, EmbedStep)
        texts = [run.eval(t) for t in step.text] if isinstance(step.text, tuple) else run.eval(step.text)
        if isinstance(texts, str):
            texts = [texts]
        instruction = run.eval(step.embed_instruction) if step.embed_instruction is not None else None
        run.start_effect(
            step, {"kind": "embed", "text": run.checked(texts, "text"), "embed_instruction": instruction}
        )


class SearchHandler(Handler):
    kind = "search"

    def begin(self, run: Run, step: Step) -> None:
        assert isinstance(step, SearchStep)
        body = {
            "kind": "search",
            "mode": step.mode,
            "text": run.eval(step.text) if step.text is not None else None,
            "vector": run.eval(step.vector) if step.vector is not None else None,
            "limit": step.limit,
            "lang": step.lang,
            "trigram_similarity_threshold": step.trigram_similarity_threshold,
            "confidence": step.confidence,
            "mmr_strength": step.mmr_strength,
            "alpha": step.alpha,
            "k_multiplier": step.k_multiplier,
            "metadata_filter": run.eval(step.metadata_filter),
        }
        run.start_effect(step, run.checked(body, "search request"))


HANDLERS: dict[str, Handler] = {
    h.kind: h
    for h in (
        EvaluateHandler(),
        SetHandler(),
        GetHandler(),
        LogHandler(),
        ReturnHandler(),
        ErrorHandler(),
        IfElseHandler(),
        SwitchHandler(),
        YieldHandler(),
        SleepHandler(),
        WaitForInputHandler(),
        ForeachHandler(),
        MapReduceHandler(),
        ParallelHandler(),
        PromptHandler(),
        ToolCallHandler(),
        EmbedHandler(),
        SearchHandler(),
    )
}
