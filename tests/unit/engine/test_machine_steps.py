"""The pure step machine, step type by step type, and in nestings."""

from __future__ import annotations

from typing import Any

import pytest

from mintleaf_server.dsl.parse import parse_task
from mintleaf_server.engine import (
    EffectDone,
    EffectFailed,
    EffectSuspended,
    Environment,
    Event,
    Limits,
    Machine,
    Start,
    TimerFired,
)

from .simulator import Sim, run_task


def task(*main: Any, **workflows: Any) -> dict[str, Any]:
    return {"name": "t", "main": list(main), **{k: list(v) for k, v in workflows.items()}}


# -- leaf steps ------------------------------------------------------------------------------------


def test_evaluate_chain_and_scope_names() -> None:
    sim = run_task(
        task(
            {"evaluate": {"a": "$ _.x + 1"}},
            {"evaluate": {"b": "$ _.a * 10", "first": "$ inputs[0].x", "prev": "$ outputs[0].a"}},
        ),
        {"x": 1},
    )
    assert sim.status == "succeeded"
    assert sim.output == {"b": 20, "first": 1, "prev": 2}
    assert sim.types() == ["init", "step", "finish"]


def test_labels_in_outputs_inputs_and_steps() -> None:
    sim = run_task(
        task(
            {"label": "one", "evaluate": {"v": "$ 1"}},
            {"evaluate": {"o": "$ outputs['one'].v", "i": "$ inputs['one']", "s": "$ steps['one'].output"}},
        ),
        {"q": 2},
    )
    assert sim.output == {"o": 1, "i": {"q": 2}, "s": {"v": 1}}


def test_set_get_log_pass_through() -> None:
    sim = run_task(
        task(
            {"set": {"color": "$ _.c"}},
            {"log": "color is {{ state.color }}"},
            {"get": "color"},
            {"evaluate": {"missing": "$ state.get('nope')"}},
        ),
        {"c": "red"},
    )
    assert sim.output == {"missing": None}
    log = next(t for t in sim.log if t["step_type"] == "log")
    assert log["metadata"] == {"log": "color is red"}
    assert log["output"] == {"color": "red"}  # log passes `_` through
    get = next(t for t in sim.log if t["step_type"] == "get")
    assert get["output"] == "red"


def test_get_of_unset_key_is_null() -> None:
    assert run_task(task({"get": "k"})).output is None


def test_error_step_fails_with_one_error_transition() -> None:
    sim = run_task(task({"evaluate": {"a": "$ 1"}}, {"error": "bad {{ _.a }}"}, {"evaluate": {"b": "$ 2"}}))
    assert sim.status == "failed"
    assert sim.types() == ["init", "step", "error"]
    err = sim.log[-1]
    assert err["output"] == {"error": "bad 1"}
    assert err["error"] == "bad 1"
    assert sim.main["error"]["step"] == "main[1]"
    assert sim.main["error"]["kind"] == "error_step"


def test_evaluation_error_names_step_and_expression() -> None:
    sim = run_task(task({"evaluate": {"a": "$ 1"}}, {"evaluate": {"b": "$ _.a / 0"}}))
    assert sim.status == "failed"
    error = sim.main["error"]
    assert error["step"] == "main[1]"
    assert error["kind"] == "evaluation"
    assert "_.a / 0" in error["expression"]
    assert "_.a / 0" in error["error"]


def test_return_ends_main_early() -> None:
    sim = run_task(task({"return": {"r": "$ _.x"}}, {"error": "never"}), {"x": 3})
    assert sim.status == "succeeded"
    assert sim.output == {"r": 3}
    assert sim.types() == ["init", "finish"]


def test_sleep_passes_through_with_a_timer() -> None:
    sim = Sim(task({"sleep": {"seconds": 5}}, {"evaluate": {"v": "$ _"}})).start({"a": 1})
    sim.tick()  # start
    assert next(iter(sim.timers.values()))[1] == sim.now + 5000
    sim.run()
    sim.check()
    assert sim.output == {"v": {"a": 1}}
    assert sim.now >= 1_000_000 + 5000


def test_wait_for_input_then_resume() -> None:
    sim = Sim(task({"wait_for_input": {"info": {"q": "$ _.question"}}}, {"evaluate": {"got": "$ _.answer"}}))
    sim.start({"question": "name?"}).run()
    assert sim.main["status"] == "pending"
    assert sim.types() == ["init", "wait"]
    assert sim.log[-1]["output"] == {"q": "name?"}
    (wait_id,) = sim.waits
    sim.resume(wait_id, {"answer": "Ada"})
    sim.run()
    sim.check()
    assert sim.output == {"got": "Ada"}
    assert sim.types() == ["init", "wait", "resume", "step", "finish"]
    assert not sim.waits and not sim.timers


def test_resume_with_unknown_wait_is_ignored() -> None:
    sim = Sim(task({"wait_for_input": {"info": {"q": "x"}}})).start({}).run()
    state = sim.main
    from mintleaf_server.engine import Resume

    new, cmds = sim.machine.advance(state, Resume(wait_id="nope", input={}))
    assert cmds == [] and new == state


def test_wait_times_out() -> None:
    sim = run_task(
        task({"wait_for_input": {"info": {"q": "x"}}}), limits=Limits(max_wait_s=60), fire_wait_timeouts=True
    )
    assert sim.status == "failed"
    assert sim.main["error"]["kind"] == "timeout"


def test_cancel_while_waiting_closes_the_wait() -> None:
    sim = Sim(task({"wait_for_input": {"info": {"q": "x"}}})).start({}).run()
    sim.cancel("user asked")
    sim.run()
    sim.check()
    assert sim.status == "cancelled"
    assert sim.types()[-1] == "cancelled"
    assert not sim.waits and not sim.timers


# -- if / switch -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("x", "expected"), [(5, {"big": 5}), (0, {"small": 0})])
def test_if_else(x: int, expected: dict[str, int]) -> None:
    sim = run_task(
        task(
            {
                "if": "_.x > 1",
                "then": {"evaluate": {"big": "$ _.x"}},
                "else": {"evaluate": {"small": "$ _.x"}},
            }
        ),
        {"x": x},
    )
    assert sim.output == expected
    assert sim.types() == ["init", "init_branch", "finish_branch", "finish"]


def test_if_without_else_passes_input_through() -> None:
    sim = run_task(task({"if": "_.x > 1", "then": {"evaluate": {"big": "$ 1"}}}), {"x": 0})
    assert sim.output == {"x": 0}


def test_switch_first_match_and_default() -> None:
    doc = task(
        {
            "switch": [
                {"case": "_.k == 'a'", "then": {"evaluate": {"r": "$ 'A'"}}},
                {"case": "_.k == 'b'", "then": {"evaluate": {"r": "$ 'B'"}}},
                {"case": "_", "then": {"evaluate": {"r": "$ 'default'"}}},
            ]
        }
    )
    assert run_task(doc, {"k": "b"}).output == {"r": "B"}
    assert run_task(doc, {"k": "z"}).output == {"r": "default"}
    assert run_task(doc, {"k": ""}).output == {"r": "default"}  # `_` matches even a falsy input


def test_switch_without_match_fails_naming_the_step() -> None:
    sim = run_task(
        task({"evaluate": {"k": "$ 1"}}, {"switch": [{"case": "_.k == 2", "then": {"log": "two"}}]})
    )
    assert sim.status == "failed"
    assert sim.main["error"]["kind"] == "no_case"
    assert "main[1]" in sim.main["error"]["error"]


# -- loops -----------------------------------------------------------------------------------------


def test_foreach_sequential_outputs_in_order() -> None:
    sim = run_task(
        task({"foreach": {"in": "_.xs", "do": [{"evaluate": {"sq": "$ _ * _"}}]}}), {"xs": [1, 2, 3]}
    )
    assert sim.output == [{"sq": 1}, {"sq": 4}, {"sq": 9}]
    assert not sim.fanouts  # sequential: no branches
    paths = [t["current"]["path"] for t in sim.log if t["type"] == "init_branch"]
    assert paths == ["main[0].foreach[0].do[0]", "main[0].foreach[1].do[0]", "main[0].foreach[2].do[0]"]


def test_foreach_over_empty_list() -> None:
    assert run_task(task({"foreach": {"in": "$ []", "do": {"log": "x"}}})).output == []


def test_foreach_over_non_list_fails() -> None:
    sim = run_task(task({"foreach": {"in": "$ 3", "do": {"log": "x"}}}))
    assert sim.status == "failed" and sim.main["error"]["kind"] == "type"


def test_foreach_parallel_uses_branches_with_window() -> None:
    sim = run_task(
        task(
            {"foreach": {"in": "$ list(range(10))", "parallelism": 3, "do": {"evaluate": {"v": "$ _ + 100"}}}}
        ),
        shuffle=True,
        seed=4,
    )
    assert sim.output == [{"v": 100 + i} for i in range(10)]
    (fo,) = sim.fanouts.values()
    assert fo.window == 3
    assert max(sim.max_running.values()) == 3


def test_map_reduce_sequential_with_reduce_and_initial() -> None:
    sim = run_task(
        task(
            {
                "over": "$ [1, 2, 3, 4]",
                "map": {"evaluate": {"sq": "$ _ ** 2"}},
                "reduce": "results + _.sq",
                "initial": 0,
            }
        )
    )
    assert sim.output == 30


def test_map_reduce_default_reduce_collects() -> None:
    sim = run_task(task({"over": "$ ['a', 'b']", "map": {"evaluate": {"u": "$ _.upper()"}}}))
    assert sim.output == [{"u": "A"}, {"u": "B"}]


def test_map_reduce_parallel_folds_in_item_order() -> None:
    doc = task(
        {
            "over": "$ list(range(12))",
            "map": {"evaluate": {"i": "$ _"}},
            "reduce": "results + [_.i]",
            "parallelism": 4,
        }
    )
    for seed in range(5):
        sim = run_task(doc, shuffle=True, seed=seed)
        assert sim.output == list(range(12))


def test_reduce_scope_is_only_results_and_underscore() -> None:
    from mintleaf_server.dsl.errors import TaskInvalid

    with pytest.raises(TaskInvalid, match="inputs"):
        parse_task(
            task({"over": "$ [1]", "map": {"evaluate": {"v": "$ 1"}}, "reduce": "$ results + [inputs[0]]"})
        )
    # and at run time the reduce scope holds nothing else, even if a tree slipped through
    from mintleaf_server.engine.run import reduce_scope

    scope = reduce_scope([1], 2)
    assert scope["results"] == [1] and scope["_"] == 2 and "inputs" not in scope


def test_reduce_names_with_underscores_and_results_substrings() -> None:
    # Julep rewrote `_` and `results` textually; names like `my_results` broke.
    sim = run_task(
        task(
            {
                "over": "$ [1, 2]",
                "map": {"evaluate": {"my_results": "$ _ * 3"}},
                "reduce": "results + [_.my_results]",
                "parallelism": 2,
            }
        )
    )
    assert sim.output == [3, 6]


def test_parallel_outputs_in_declaration_order_with_same_input() -> None:
    sim = run_task(
        task(
            {
                "parallel": [
                    {"evaluate": {"a": "$ _.n + 1"}},
                    {"evaluate": {"b": "$ _.n + 2"}},
                    [{"evaluate": {"c": "$ _.n + 3"}}, {"evaluate": {"c2": "$ _.c * 2"}}],
                ]
            }
        ),
        {"n": 10},
        shuffle=True,
        seed=2,
    )
    assert sim.output == [{"a": 11}, {"b": 12}, {"c2": 26}]
    roots = [t for t in sim.log if t["type"] == "init_branch" and t["current"]["branch_id"]]
    assert sorted(t["current"]["path"] for t in roots) == [f"main[0].parallel[{i}][0]" for i in range(3)]


def test_sets_in_branches_merge_in_item_order() -> None:
    sim = run_task(
        task(
            {"set": {"k": "$ 'start'"}},
            {
                "foreach": {
                    "in": "$ [1, 2, 3]",
                    "parallelism": 3,
                    "do": {"set": {"k": "$ _", "seen": "$ state.k"}},
                }
            },
            {"evaluate": {"k": "$ state.k", "seen": "$ state.seen"}},
        ),
        shuffle=True,
        seed=7,
    )
    assert sim.output == {"k": 3, "seen": "start"}


# -- yield -----------------------------------------------------------------------------------------


def test_yield_calls_subworkflow_in_new_scope() -> None:
    sim = run_task(
        task(
            {"evaluate": {"n": "$ 4"}},
            {"yield": {"workflow": "double", "arguments": {"v": "$ _.n"}}},
            {"evaluate": {"r": "$ _.d", "outer_first": "$ inputs[0]"}},
            double=[{"evaluate": {"d": "$ inputs[0].v * 2"}}, {"evaluate": {"d": "$ _.d + outputs[0].d"}}],
        ),
        {"top": True},
    )
    assert sim.output == {"r": 16, "outer_first": {"top": True}}
    scopes = {t["current"]["scope_id"] for t in sim.log}
    assert scopes == {"s0", "s1"}
    assert sim.types() == ["init", "step", "init_branch", "step", "finish_branch", "step", "finish"]


def test_return_in_subworkflow_ends_only_it() -> None:
    sim = run_task(
        task(
            {"yield": {"workflow": "sub", "arguments": {"v": "$ 1"}}},
            {"evaluate": {"after": "$ _.r"}},
            sub=[{"return": {"r": "$ _.v + 1"}}, {"error": "never"}],
        )
    )
    assert sim.output == {"after": 2}


def test_recursive_yield_stops_at_depth() -> None:
    doc = task(
        {"yield": {"workflow": "loop", "arguments": {"n": "$ 0"}}},
        loop=[{"yield": {"workflow": "loop", "arguments": {"n": "$ _.n + 1"}}}],
    )
    sim = run_task(doc, limits=Limits(max_yield_depth=5))
    assert sim.status == "failed"
    assert sim.main["error"]["kind"] == "limit"


def test_recursive_yield_with_if_terminates() -> None:
    doc = task(
        {"yield": {"workflow": "count", "arguments": {"n": "$ 0"}}},
        count=[
            {
                "if": "_.n < 5",
                "then": {"yield": {"workflow": "count", "arguments": {"n": "$ _.n + 1"}}},
                "else": {"evaluate": {"done": "$ _.n"}},
            }
        ],
    )
    assert run_task(doc).output == {"done": 5}


# -- return in nested bodies -----------------------------------------------------------------------


def test_return_inside_sequential_foreach_ends_the_workflow() -> None:
    sim = run_task(
        task(
            {"foreach": {"in": "$ [1, 2, 3]", "do": [{"if": "_ == 2", "then": {"return": {"hit": "$ _"}}}]}},
            {"error": "never"},
        )
    )
    assert sim.output == {"hit": 2}
    assert sim.types()[-1] == "finish"


def test_return_inside_parallel_foreach_ends_the_workflow_and_cancels_siblings() -> None:
    sim = run_task(
        task(
            {
                "foreach": {
                    "in": "$ list(range(6))",
                    "parallelism": 2,
                    "do": [{"if": "_ == 1", "then": {"return": {"hit": "$ _"}}}],
                }
            },
            {"error": "never"},
        )
    )
    assert sim.status == "succeeded"
    assert sim.output == {"hit": 1}


def test_return_in_branch_of_subworkflow_returns_from_subworkflow_only() -> None:
    sim = run_task(
        task(
            {"yield": {"workflow": "sub", "arguments": {"v": "$ 1"}}},
            {"evaluate": {"got": "$ _"}},
            sub=[{"parallel": [{"return": {"r": "$ 'early'"}}]}, {"error": "never"}],
        )
    )
    assert sim.output == {"got": {"r": "early"}}


# -- nestings --------------------------------------------------------------------------------------


def test_foreach_inside_if_inside_map_reduce() -> None:
    doc = task(
        {
            "over": "$ [[1, 2], [], [3]]",
            "parallelism": 2,
            "map": {
                "if": "len(_) > 0",
                "then": {"foreach": {"in": "_", "do": {"evaluate": {"x": "$ _ * 10"}}}},
                "else": {"evaluate": {"empty": "$ True"}},
            },
        }
    )
    sim = run_task(doc, shuffle=True, seed=1)
    assert sim.output == [[{"x": 10}, {"x": 20}], {"empty": True}, [{"x": 30}]]


def test_yield_inside_parallel() -> None:
    sim = run_task(
        task(
            {
                "parallel": [
                    {"yield": {"workflow": "inc", "arguments": {"v": "$ _.n"}}},
                    {"yield": {"workflow": "inc", "arguments": {"v": "$ _.n * 100"}}},
                ]
            },
            inc=[{"evaluate": {"v": "$ _.v + 1"}}],
        ),
        {"n": 1},
        shuffle=True,
    )
    assert sim.output == [{"v": 2}, {"v": 101}]


def test_nested_fanout_inside_branch() -> None:
    doc = task(
        {
            "foreach": {
                "in": "$ [1, 2]",
                "parallelism": 2,
                "do": {
                    "over": "$ [_, _ + 1]",
                    "parallelism": 2,
                    "map": {"evaluate": {"v": "$ _"}},
                    "reduce": "results + [_.v]",
                },
            }
        }
    )
    sim = run_task(doc, shuffle=True, seed=3)
    assert sim.output == [[1, 2], [2, 3]]
    keys = {k for k in sim.runs if k != "main"}
    assert "f1.0/f1.1" in keys


def test_wait_inside_parallel_branches_each_addressed() -> None:
    sim = Sim(
        task(
            {
                "parallel": [
                    {"wait_for_input": {"info": {"who": "a"}}},
                    {"wait_for_input": {"info": {"who": "b"}}},
                ]
            }
        )
    ).start({})
    sim.run()
    assert len(sim.waits) == 2
    by_who = {w.info["who"]: wid for wid, (_, w) in sim.waits.items()}
    assert by_who["a"] != by_who["b"]
    sim.resume(by_who["b"], {"answer": "B"})
    sim.run()
    assert len(sim.waits) == 1
    sim.resume(by_who["a"], {"answer": "A"})
    sim.run()
    sim.check()
    assert sim.output == [{"answer": "A"}, {"answer": "B"}]


def test_failing_branch_fails_parent_and_cancels_siblings() -> None:
    doc = task(
        {
            "foreach": {
                "in": "$ [1, 2, 3, 4]",
                "parallelism": 4,
                "do": [{"if": "_ == 2", "then": {"error": "two!"}, "else": {"sleep": {"seconds": 10}}}],
            }
        }
    )
    sim = run_task(doc)
    assert sim.status == "failed"
    assert "branch 1 failed: two!" in sim.main["error"]["error"]
    assert not sim.timers  # the sleeping siblings were cancelled
    assert sim.log[-1]["type"] == "error" and sim.log[-1]["run"] == "main"


def test_cancel_mid_fanout_stops_everything() -> None:
    sim = Sim(
        task({"foreach": {"in": "$ list(range(5))", "parallelism": 2, "do": {"sleep": {"seconds": 30}}}})
    ).start({})
    while sim.ready:
        sim.tick()
    assert len(sim.timers) == 2
    sim.cancel("enough")
    sim.run()
    sim.check()
    assert sim.status == "cancelled"
    assert not sim.timers


# -- effects, retries, timeouts --------------------------------------------------------------------


def test_tool_call_effect_request_and_output() -> None:
    seen: list[dict[str, Any]] = []

    def effect(request: dict[str, Any]) -> Event:
        seen.append(request)
        return EffectDone(effect_id=request["effect_id"], output={"ok": request["arguments"]["q"]})

    doc = {
        "name": "t",
        "tools": [{"name": "search", "type": "function", "function": {"parameters": {}}}],
        "main": [{"tool": "search", "arguments": {"q": "$ _.q"}}],
    }
    sim = run_task(doc, {"q": "hi"}, effect=effect)
    assert sim.output == {"ok": "hi"}
    (request,) = seen
    assert request["kind"] == "tool_call" and request["tool"] == "search"
    assert request["call_id"].startswith("call_") and len(request["call_id"]) == 29
    assert request["step"]["path"] == "main[0]" and request["attempt"] == 1
    assert sim.log[-1]["metadata"]["attempts"] == 1


def test_prompt_unwrap_and_messages() -> None:
    seen: list[dict[str, Any]] = []

    def effect(request: dict[str, Any]) -> Event:
        seen.append(request)
        return EffectDone(
            effect_id=request["effect_id"],
            output={"choices": [{"finish_reason": "stop", "message": {"content": "hello"}}]},
            metadata={"usage": {"total_tokens": 3}},
        )

    sim = run_task(task({"prompt": "Say hi to {{ _.name }}", "unwrap": True}), {"name": "Ada"}, effect=effect)
    assert sim.output == "hello"
    assert seen[0]["messages"] == [{"role": "user", "content": "Say hi to Ada"}]
    assert sim.log[-1]["metadata"]["usage"] == {"total_tokens": 3}


def test_prompt_unwrap_of_tool_calls_fails() -> None:
    def effect(request: dict[str, Any]) -> Event:
        return EffectDone(
            effect_id=request["effect_id"],
            output={"choices": [{"finish_reason": "tool_calls", "message": {"tool_calls": [{"id": "1"}]}}]},
        )

    sim = run_task(task({"prompt": "x", "unwrap": True}), effect=effect)
    assert sim.status == "failed" and sim.main["error"]["kind"] == "unwrap"


def test_retry_with_backoff_timers_then_success() -> None:
    attempts: list[int] = []

    def effect(request: dict[str, Any]) -> Event:
        attempts.append(request["attempt"])
        if request["attempt"] < 3:
            return EffectFailed(
                effect_id=request["effect_id"],
                error={"kind": "connection", "message": "down", "retryable": True},
            )
        return EffectDone(effect_id=request["effect_id"], output="ok")

    sim = Sim(task({"embed": {"text": "abc"}}), effect=effect).start({})
    start = sim.now
    sim.run()
    sim.check()
    assert attempts == [1, 2, 3]
    assert sim.output == "ok"
    assert sim.now == start + 1000 + 2000  # 1 s then 2 s backoff
    assert sim.log[-1]["metadata"]["attempts"] == 3
    timer_cmds = [c for c in sim.commands if c["cmd"] == "StartTimer"]
    assert [c["purpose"] for c in timer_cmds] == ["retry", "retry"]


def test_a_retry_carries_on_from_the_failed_attempts_continuation() -> None:
    """A prompt that ran tools, then hit a retryable model error, says where it got to; the next
    attempt's request resumes from there (its tools are not run again). A failure without a
    continuation retries the request as it was."""
    seen: list[dict[str, Any]] = []
    cont = {"messages": [{"role": "tool", "tool_call_id": "c1", "content": "42"}], "pending": [], "rounds": 1}

    def effect(request: dict[str, Any]) -> Event:
        seen.append(request)
        if request["attempt"] == 1:
            error = {"kind": "model_unavailable", "message": "503", "retryable": True, "continuation": cont}
            return EffectFailed(effect_id=request["effect_id"], error=error)
        if request["attempt"] == 2:
            error = {"kind": "model_unavailable", "message": "503", "retryable": True}
            return EffectFailed(effect_id=request["effect_id"], error=error)
        return EffectDone(
            effect_id=request["effect_id"], output={"choices": [{"message": {"content": "ok"}}]}
        )

    sim = run_task(task({"prompt": "go", "unwrap": True}), effect=effect)
    assert sim.output == "ok"
    assert "resume" not in seen[0]
    assert seen[1]["resume"] == {"continuation": cont, "results": {}}
    assert seen[2]["resume"] == {"continuation": cont, "results": {}}  # kept by a later failure
    assert seen[1]["messages"] == seen[0]["messages"]


def test_retry_exhausted_fails() -> None:
    def effect(request: dict[str, Any]) -> Event:
        return EffectFailed(
            effect_id=request["effect_id"], error={"kind": "connection", "message": "down", "retryable": True}
        )

    sim = run_task(task({"embed": {"text": "abc"}}), effect=effect)
    assert sim.status == "failed"
    assert sim.main["error"]["error"] == "down (after 3 attempts)"


def test_step_retry_policy_and_non_retryable_kinds() -> None:
    calls: list[int] = []

    def effect(request: dict[str, Any]) -> Event:
        calls.append(request["attempt"])
        return EffectFailed(
            effect_id=request["effect_id"], error={"kind": "auth", "message": "no key", "retryable": True}
        )

    doc = task({"embed": {"text": "abc"}, "retry": {"max_attempts": 5, "non_retryable": ["auth"]}})
    sim = run_task(doc, effect=effect)
    assert sim.status == "failed" and calls == [1]

    calls.clear()

    def final(request: dict[str, Any]) -> Event:
        calls.append(request["attempt"])
        return EffectFailed(
            effect_id=request["effect_id"], error={"kind": "bad", "message": "no", "retryable": False}
        )

    assert run_task(task({"embed": {"text": "abc"}}), effect=final).status == "failed"
    assert calls == [1]


def test_function_tool_suspends_and_resume_becomes_output() -> None:
    def effect(request: dict[str, Any]) -> Event:
        call = {
            "id": request["call_id"],
            "type": "function",
            "name": request["tool"],
            "arguments": request["arguments"],
        }
        return EffectSuspended(effect_id=request["effect_id"], tool_calls=[call], resume="output")

    doc = {
        "name": "t",
        "tools": [{"name": "fn", "type": "function", "function": {}}],
        "main": [{"tool": "fn", "arguments": {"a": "$ 1"}}],
    }
    sim = Sim(doc, effect=effect).start({}).run()
    assert sim.types() == ["init", "wait"]
    ((wait_id, (_, wait)),) = sim.waits.items()
    assert wait.kind == "tool_calls" and wait.tool_calls[0]["name"] == "fn"
    sim.resume(wait_id, {"result": 42})
    sim.run()
    assert sim.output == {"result": 42}


def test_prompt_with_function_tools_calls_model_again() -> None:
    def effect(request: dict[str, Any]) -> Event:
        if "resume" not in request:
            return EffectSuspended(
                effect_id=request["effect_id"],
                tool_calls=[{"id": "c1", "type": "function", "name": "fn", "arguments": {}}],
                resume="effect",
                continuation={"messages": request["messages"]},
            )
        results = request["resume"]["results"]
        return EffectDone(
            effect_id=request["effect_id"],
            output={"choices": [{"message": {"content": f"got {results['c1']}"}}]},
        )

    sim = Sim(task({"prompt": "go", "unwrap": True}), effect=effect).start({}).run()
    (wait_id,) = sim.waits
    sim.resume(wait_id, {"c1": 7})
    sim.run()
    assert sim.output == "got 7"


def test_effect_deadline_in_request() -> None:
    machine = Machine(parse_task(task({"embed": {"text": "x"}, "timeout": 30})))
    _, cmds = machine.advance(None, Start(input={}, now_ms=1000))
    effect = next(c for c in cmds if type(c).__name__ == "RunEffect")
    assert effect.deadline_ms == 1000 + 30_000


# -- limits and robustness -------------------------------------------------------------------------


def test_step_limit() -> None:
    doc = task({"foreach": {"in": "$ list(range(100))", "do": {"evaluate": {"v": "$ _"}}}})
    sim = run_task(doc, limits=Limits(max_steps=50))
    assert sim.status == "failed" and sim.main["error"]["kind"] == "limit"


def test_fanout_limit() -> None:
    sim = run_task(
        task({"foreach": {"in": "$ list(range(20))", "do": {"log": "x"}}}), limits=Limits(max_fanout=10)
    )
    assert sim.status == "failed" and "over the limit of 10" in sim.main["error"]["error"]


def test_payload_limit() -> None:
    sim = run_task(task({"evaluate": {"big": "$ 'x' * 5000"}}), limits=Limits(max_payload_bytes=1000))
    assert sim.status == "failed" and sim.main["error"]["kind"] == "payload_too_large"


def test_frame_limit() -> None:
    inner: dict[str, Any] = {"log": "deep"}
    for _ in range(6):
        inner = {"if": "True", "then": inner}
    sim = run_task(task(inner), limits=Limits(max_frames=4))
    assert sim.status == "failed" and sim.main["error"]["kind"] == "limit"


def test_step_budget_hands_back_control() -> None:
    doc = task(*[{"evaluate": {"i": f"$ {i}"}} for i in range(10)])
    sim = run_task(doc, limits=Limits(steps_per_advance=3))
    assert sim.output == {"i": 9}
    assert sum(1 for c in sim.commands if c["cmd"] == "ContinueLater") == 3


def test_execution_timeout() -> None:
    sim = run_task(task({"sleep": {"seconds": 100}}), limits=Limits(execution_timeout_s=10))
    assert sim.status == "failed" and sim.main["error"]["kind"] == "timeout"


def test_unknown_step_kind_is_an_explicit_error() -> None:
    from dataclasses import dataclass
    from typing import ClassVar

    from mintleaf_server.dsl.steps import FrozenMap, StepBase
    from mintleaf_server.dsl.task import Task

    @dataclass(frozen=True)
    class Strange(StepBase):
        kind: ClassVar[str] = "strange"

    machine = Machine(Task(name="t", workflows=FrozenMap({"main": (Strange(),)})))
    state, _cmds = machine.advance(None, Start(input={}))
    assert state["status"] == "failed"
    assert state["error"]["kind"] == "unknown_step"
    assert "strange" in state["error"]["error"]


def test_garbage_state_fails_without_raising() -> None:
    machine = Machine(parse_task(task({"log": "x"})))
    state, cmds = machine.advance({"status": "running", "frames": "nope"}, TimerFired(timer_id="t"))
    assert state["status"] == "failed"
    assert type(cmds[-1]).__name__ == "Fail"


def test_events_after_the_end_are_ignored() -> None:
    sim = run_task(task({"log": "x"}))
    state, cmds = sim.machine.advance(sim.main, TimerFired(timer_id="t1"))
    assert cmds == [] and state == sim.main


def test_advance_does_not_mutate_its_input() -> None:
    import copy

    machine = Machine(parse_task(task({"set": {"a": "$ 1"}}, {"wait_for_input": {"info": {"x": "$ 1"}}})))
    state, _ = machine.advance(None, Start(input={}))
    snapshot = copy.deepcopy(state)
    from mintleaf_server.engine import Resume

    machine.advance(state, Resume(wait_id=state["pending"]["wait"], input={"b": 2}))
    assert state == snapshot


def test_environment_names_in_scope() -> None:
    env = Environment(
        execution_id="e1", developer_id="d1", execution={"id": "e1", "input": {"a": 1}}, agent={"name": "bob"}
    )
    sim = Sim(
        task({"evaluate": {"who": "$ agent.name", "ex": "$ execution.id", "args": "$ arguments"}}), env=env
    )
    sim.start({"a": 1}).run()
    assert sim.output == {"who": "bob", "ex": "e1", "args": {"a": 1}}


def test_history_is_not_kept_when_no_expression_reads_it() -> None:
    sim = run_task(task({"evaluate": {"a": "$ 1"}}, {"wait_for_input": {"info": {"x": "$ _.a"}}}))
    assert sim.main["frames"][0]["outs"] is None
    sim2 = run_task(task({"evaluate": {"a": "$ 1"}}, {"wait_for_input": {"info": {"x": "$ outputs[0].a"}}}))
    assert sim2.main["frames"][0]["outs"] == [{"a": 1}]
