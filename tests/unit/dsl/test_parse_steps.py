"""Every step type: its valid forms parse into the right frozen object, its invalid forms are
rejected with the field path."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from mintleaf_server.dsl import (
    STEP_TYPES,
    TASK_NAMES,
    EmbedStep,
    ErrorStep,
    EvaluateStep,
    Expression,
    ForeachStep,
    FrozenMap,
    GetStep,
    IfElseStep,
    LogStep,
    MapReduceStep,
    ParallelStep,
    PromptMessage,
    PromptStep,
    RetryPolicy,
    ReturnStep,
    SearchStep,
    SetStep,
    SleepStep,
    Slot,
    SwitchStep,
    TaskInvalid,
    Template,
    Text,
    ToolCallStep,
    ToolDef,
    WaitForInputStep,
    YieldStep,
    describe,
    explain,
    nested_sequences,
    parse_task,
    read_string,
)

TOOLS = [
    {"name": "web_search", "type": "integration", "integration": {"provider": "brave"}},
    {"name": "notify", "type": "function", "function": {"parameters": {"type": "object"}}},
]


def task(steps: Any, **extra: Any) -> dict[str, Any]:
    return {"name": "t", "tools": TOOLS, "main": steps, **extra}


def one(step: dict[str, Any], **extra: Any) -> Any:
    """Parse a task whose main is this one step; return the step."""
    main = parse_task(task([step], **extra)).main
    assert len(main) == 1
    return main[0]


def errors(doc: dict[str, Any], **kw: Any) -> dict[str, str]:
    with pytest.raises(TaskInvalid) as info:
        parse_task(doc, **kw)
    return {v.path: v.message for v in info.value.violations}


def step_errors(step: Any) -> dict[str, str]:
    return errors(task([step]))


def test_every_kind_has_a_type_with_julep_kind_name() -> None:
    kinds = {cls.kind for cls in STEP_TYPES}
    assert kinds == {
        "prompt", "tool_call", "evaluate", "wait_for_input", "log", "get", "set", "foreach",
        "map_reduce", "parallel", "if_else", "switch", "sleep", "return", "yield", "error",
        "embed", "search",
    }  # fmt: skip
    for cls in STEP_TYPES:
        assert dataclasses.is_dataclass(cls)
        assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_steps_are_frozen_and_hashable() -> None:
    step = one({"evaluate": {"a": "$ _.x", "b": [1, {"c": "$ _"}]}, "label": "ev"})
    assert isinstance(step, EvaluateStep)
    assert hash(step) == hash(one({"evaluate": {"a": "$ _.x", "b": [1, {"c": "$ _"}]}, "label": "ev"}))
    with pytest.raises(dataclasses.FrozenInstanceError):
        step.label = "x"  # type: ignore[misc]
    assert isinstance(step.values, FrozenMap)
    assert isinstance(step.values["b"], tuple)


# -- prompt ----------------------------------------------------------------------------------------


def test_prompt_string() -> None:
    step = one({"prompt": "Summarise {{ _.topic }}", "unwrap": True})
    assert isinstance(step, PromptStep)
    assert isinstance(step.prompt, Template)
    assert step.unwrap is True and step.auto_run_tools is True and step.disable_cache is False
    assert step.tools == "all"


def test_prompt_plain_string_is_text() -> None:
    step = one({"prompt": "Say hello"})
    assert isinstance(step.prompt, Text)


def test_prompt_messages_and_options() -> None:
    step = one(
        {
            "prompt": [
                {"role": "system", "content": "You are {{ agent.name }}"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "hi"},
                        {"type": "image_url", "image_url": {"url": "$ _.url"}},
                    ],
                },
            ],
            "tools": ["web_search", {"name": "inline", "function": {"parameters": {"type": "object"}}}],
            "tool_choice": {"function": {"name": "web_search"}},
            "settings": {"temperature": 0.2},
            "auto_run_tools": False,
            "disable_cache": True,
        }
    )
    assert isinstance(step, PromptStep)
    assert isinstance(step.prompt, tuple) and all(isinstance(m, PromptMessage) for m in step.prompt)
    system, user = step.prompt
    assert system.role == "system" and isinstance(system.content, Template)
    assert isinstance(user.content, tuple) and isinstance(user.content[0].text, Text)
    assert isinstance(user.content[1].image_url, Expression)
    assert step.tools[0] == "web_search" and isinstance(step.tools[1], ToolDef)
    assert step.settings == {"temperature": 0.2}
    assert step.auto_run_tools is False and step.disable_cache is True


@pytest.mark.parametrize(
    ("step", "path"),
    [
        ({"prompt": 3}, "main[0].prompt"),
        ({"prompt": []}, "main[0].prompt"),
        ({"prompt": [{"role": "robot", "content": "x"}]}, "main[0].prompt[0].role"),
        ({"prompt": [{"role": "user"}]}, "main[0].prompt[0].content"),
        ({"prompt": [{"role": "user", "content": "x", "colour": 1}]}, "main[0].prompt[0].colour"),
        ({"prompt": "x", "unwrap": "yes"}, "main[0].unwrap"),
        ({"prompt": "x", "tools": "some"}, "main[0].tools"),
        ({"prompt": "x", "tools": ["nope"]}, "main[0].tools[0]"),
        ({"prompt": "x", "tool_choice": "maybe"}, "main[0].tool_choice"),
        ({"prompt": "x", "settings": []}, "main[0].settings"),
        ({"prompt": "x", "temperature": 1}, "main[0].temperature"),
    ],
)
def test_prompt_invalid(step: dict[str, Any], path: str) -> None:
    assert path in step_errors(step)


# -- tool ------------------------------------------------------------------------------------------


def test_tool_call_arguments_default_to_input() -> None:
    step = one({"tool": "notify"})
    assert isinstance(step, ToolCallStep)
    assert step.tool == "notify"
    assert isinstance(step.arguments, Expression)


def test_tool_call_arguments_read_as_values() -> None:
    step = one({"tool": "web_search", "arguments": {"query": "$ _.q", "count": 3, "label": "news"}})
    assert isinstance(step.arguments["query"], Expression)
    assert step.arguments["count"] == 3
    assert isinstance(step.arguments["label"], Text)


@pytest.mark.parametrize(
    ("step", "path"),
    [
        ({"tool": "missing"}, "main[0].tool"),
        ({"tool": "not a name"}, "main[0].tool"),
        ({"tool": "notify", "arguments": 5}, "main[0].arguments"),
        ({"tool": "notify", "args": {}}, "main[0].args"),
    ],
)
def test_tool_call_invalid(step: dict[str, Any], path: str) -> None:
    assert path in step_errors(step)


# -- evaluate, set, get, return, log, error, wait_for_input ------------------------------------------------


def test_evaluate_set_return() -> None:
    ev = one({"evaluate": {"n": "$ len(_)", "nested": {"x": ["$ _", 2]}}})
    assert isinstance(ev, EvaluateStep) and isinstance(ev.values["nested"]["x"][0], Expression)
    st = one({"set": {"user_preference": "dark_mode"}})
    assert isinstance(st, SetStep) and isinstance(st.values["user_preference"], Text)
    rt = one({"return": {"result": "$ _"}})
    assert isinstance(rt, ReturnStep) and isinstance(rt.value["result"], Expression)
    assert isinstance(one({"return": "_"}).value, Expression)


def test_get_log_error() -> None:
    g = one({"get": "user_preference"})
    assert isinstance(g, GetStep) and g.key == "user_preference"
    lg = one({"log": "done {{ _ }}"})
    assert isinstance(lg, LogStep) and isinstance(lg.message, Template)
    assert isinstance(one({"log": "plain"}).message, Text)
    er = one({"error": "bad input: {{ _.why }}"})
    assert isinstance(er, ErrorStep) and isinstance(er.message, Template)


def test_wait_for_input() -> None:
    step = one({"wait_for_input": {"info": {"message": "Please confirm", "data": "$ _"}}})
    assert isinstance(step, WaitForInputStep)
    assert isinstance(step.info["message"], Text) and isinstance(step.info["data"], Expression)


@pytest.mark.parametrize(
    ("step", "path"),
    [
        ({"evaluate": "x"}, "main[0].evaluate"),
        ({"evaluate": ["$ _"]}, "main[0].evaluate"),
        ({"set": 1}, "main[0].set"),
        ({"get": ""}, "main[0].get"),
        ({"get": {"k": 1}}, "main[0].get"),
        ({"log": 5}, "main[0].log"),
        ({"error": ["x"]}, "main[0].error"),
        ({"wait_for_input": "x"}, "main[0].wait_for_input"),
        ({"wait_for_input": {}}, "main[0].wait_for_input.info"),
        ({"wait_for_input": {"info": "x"}}, "main[0].wait_for_input.info"),
        ({"wait_for_input": {"info": {}, "timeout_days": 1}}, "main[0].wait_for_input.timeout_days"),
        ({"evaluate": {"a": "$ (("}}, "main[0].evaluate.a"),
    ],
)
def test_simple_steps_invalid(step: dict[str, Any], path: str) -> None:
    assert path in step_errors(step)


# -- foreach ---------------------------------------------------------------------------------------


def test_foreach_single_and_list_bodies() -> None:
    single = one({"foreach": {"in": "_.items", "do": {"log": "x"}}})
    assert isinstance(single, ForeachStep)
    assert isinstance(single.in_, Expression)
    assert len(single.do) == 1 and isinstance(single.do[0], LogStep)
    assert single.parallelism == 1
    listed = one({"foreach": {"in": "$ _", "do": [{"log": "a"}, {"get": "k"}], "parallelism": 4}})
    assert [s.kind for s in listed.do] == ["log", "get"]
    assert listed.parallelism == 4


@pytest.mark.parametrize(
    ("step", "path"),
    [
        ({"foreach": {"do": {"log": "x"}}}, "main[0].foreach.in"),
        ({"foreach": {"in": "_"}}, "main[0].foreach.do"),
        ({"foreach": {"in": "_", "do": []}}, "main[0].foreach.do"),
        ({"foreach": {"in": "_", "do": "log"}}, "main[0].foreach.do"),
        ({"foreach": {"in": "_", "do": {"log": "x"}, "parallelism": 0}}, "main[0].foreach.parallelism"),
        ({"foreach": {"in": "_", "do": {"log": "x"}, "parallelism": 2.5}}, "main[0].foreach.parallelism"),
        ({"foreach": {"in": "_", "do": {"log": "x"}, "each": 1}}, "main[0].foreach.each"),
        ({"foreach": {"in": "_", "do": {"tool": "missing"}}}, "main[0].foreach.do.tool"),
        ({"foreach": {"in": "_", "do": [{"log": "a"}, {"tool": "missing"}]}}, "main[0].foreach.do[1].tool"),
        ({"foreach": {"in": "1 +", "do": {"log": "x"}}}, "main[0].foreach.in"),
        ({"foreach": ["_"]}, "main[0].foreach"),
    ],
)
def test_foreach_invalid(step: dict[str, Any], path: str) -> None:
    assert path in step_errors(step)


# -- map_reduce ------------------------------------------------------------------------------------


def test_map_reduce_step_level_form() -> None:
    step = one(
        {"over": "_.queries", "map": {"tool": "web_search", "arguments": {"query": "_"}}, "parallelism": 5}
    )
    assert isinstance(step, MapReduceStep)
    assert isinstance(step.over, Expression)
    assert isinstance(step.map[0], ToolCallStep)
    assert step.reduce is None and step.initial == () and step.parallelism == 5


def test_map_reduce_block_form_with_reduce_and_initial() -> None:
    step = one(
        {
            "map_reduce": {
                "over": "$ _",
                "map": [{"evaluate": {"squared": "$ _ ** 2"}}],
                "reduce": "results + [_.squared]",
                "initial": [0],
            }
        }
    )
    assert isinstance(step, MapReduceStep)
    assert isinstance(step.reduce, Expression)
    assert step.initial == (0,)
    assert step.parallelism == 100  # DslLimits.default_parallelism


def test_reduce_sees_only_results_and_item() -> None:
    found = step_errors({"over": "_", "map": {"log": "x"}, "reduce": "results + [inputs[0]]"})
    assert "inputs" in found["main[0].reduce"]


@pytest.mark.parametrize(
    ("step", "path"),
    [
        ({"map": {"log": "x"}}, "main[0].over"),
        ({"over": "_"}, "main[0].map"),
        ({"over": "_", "map": {"log": "x"}, "parallelism": 0}, "main[0].parallelism"),
        ({"over": "_", "map": {"log": "x"}, "parallelism": 1001}, "main[0].parallelism"),
        ({"over": "_", "map": {"log": "x"}, "parallelism": True}, "main[0].parallelism"),
        ({"map_reduce": {"over": "_"}}, "main[0].map_reduce.map"),
        ({"map_reduce": {"over": "_", "map": {"tool": "nope"}}}, "main[0].map_reduce.map.tool"),
        ({"map_reduce": {"over": "_", "map": {"log": "x"}}, "reduce": "results"}, "main[0].reduce"),
        ({"map_reduce": {"over": "_", "map": {"log": "x"}, "fold": 1}}, "main[0].map_reduce.fold"),
        ({"map_reduce": "_"}, "main[0].map_reduce"),
    ],
)
def test_map_reduce_invalid(step: dict[str, Any], path: str) -> None:
    assert path in step_errors(step)


# -- parallel --------------------------------------------------------------------------------------


def test_parallel_branches_are_sequences() -> None:
    step = one(
        {
            "parallel": [
                {"tool": "web_search", "arguments": {"query": "AI news"}},
                [{"log": "a"}, {"log": "b"}],
            ]
        }
    )
    assert isinstance(step, ParallelStep)
    assert [len(b) for b in step.branches] == [1, 2]
    assert [slot for slot, _ in nested_sequences(step)] == ["parallel[0]", "parallel[1]"]


@pytest.mark.parametrize(
    ("step", "path"),
    [
        ({"parallel": []}, "main[0].parallel"),
        ({"parallel": {"log": "x"}}, "main[0].parallel"),
        ({"parallel": [{"log": "x"}, {"tool": "nope"}]}, "main[0].parallel[1].tool"),
        ({"parallel": [{"log": "x"}] * 101}, "main[0].parallel"),
    ],
)
def test_parallel_invalid(step: dict[str, Any], path: str) -> None:
    assert path in step_errors(step)


# -- if / switch -----------------------------------------------------------------------------------


def test_if_else() -> None:
    step = one({"if": "_.score > 0.8", "then": {"log": "high"}, "else": [{"log": "low"}, {"get": "k"}]})
    assert isinstance(step, IfElseStep)
    assert isinstance(step.condition, Expression)
    assert len(step.then) == 1 and len(step.else_ or ()) == 2
    no_else = one({"if": "$ _", "then": [{"log": "x"}]})
    assert no_else.else_ is None


def test_switch_with_default() -> None:
    step = one(
        {
            "switch": [
                {"case": "_.category == 'A'", "then": [{"log": "A"}]},
                {"case": "_", "then": {"log": "default"}},
            ]
        }
    )
    assert isinstance(step, SwitchStep)
    assert isinstance(step.cases[0].case, Expression)
    assert step.cases[1].case is None  # the literal `_` always matches
    assert isinstance(step.cases[1].then[0], LogStep)


@pytest.mark.parametrize(
    ("step", "path"),
    [
        ({"if": "_"}, "main[0].then"),
        ({"then": {"log": "x"}}, "main[0].if"),
        ({"if": "_ >", "then": {"log": "x"}}, "main[0].if"),
        ({"if": "_", "then": {"log": "x"}, "else": "nothing"}, "main[0].else"),
        ({"if": "_", "then": {"tool": "nope"}}, "main[0].then.tool"),
        ({"switch": []}, "main[0].switch"),
        ({"switch": {"case": "_", "then": {"log": "x"}}}, "main[0].switch"),
        ({"switch": [{"case": "_"}]}, "main[0].switch[0].then"),
        ({"switch": [{"then": {"log": "x"}}]}, "main[0].switch[0].case"),
        ({"switch": [{"case": "_", "then": {"log": "x"}, "when": 1}]}, "main[0].switch[0].when"),
        ({"switch": [{"case": "_", "then": [{"tool": "nope"}]}]}, "main[0].switch[0].then[0].tool"),
    ],
)
def test_conditionals_invalid(step: dict[str, Any], path: str) -> None:
    assert path in step_errors(step)


# -- sleep -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ({"seconds": 30}, 30.0),
        ({"minutes": 2, "seconds": 1}, 121.0),
        ({"hours": 1, "days": 1}, 90_000.0),
        ({"seconds": 0.5}, 0.5),
        (45, 45.0),
        ({"days": 31}, 31 * 86_400.0),
    ],
)
def test_sleep_total_seconds(value: Any, seconds: float) -> None:
    step = one({"sleep": value})
    assert isinstance(step, SleepStep) and step.seconds == seconds


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"seconds": 0}, "main[0].sleep"),
        ({}, "main[0].sleep"),
        ({"days": 32}, "main[0].sleep"),
        ({"seconds": -1}, "main[0].sleep.seconds"),
        ({"weeks": 1}, "main[0].sleep.weeks"),
        ({"seconds": "30"}, "main[0].sleep.seconds"),
        ("30s", "main[0].sleep"),
    ],
)
def test_sleep_invalid(value: Any, path: str) -> None:
    assert path in step_errors({"sleep": value})


# -- yield -----------------------------------------------------------------------------------------


def test_yield_both_forms() -> None:
    doc = task(
        [
            {"yield": {"workflow": "sub", "arguments": {"x": "$ _"}}},
            {"workflow": "sub"},
        ],
        sub=[{"return": {"ok": "$ _"}}],
    )
    block, step_level = parse_task(doc).main
    assert isinstance(block, YieldStep) and block.workflow == "sub"
    assert isinstance(block.arguments["x"], Expression)
    assert isinstance(step_level, YieldStep) and isinstance(step_level.arguments, Expression)


def test_yield_to_itself_is_allowed() -> None:
    doc = task(
        [{"workflow": "loop"}], loop=[{"if": "_ < 3", "then": {"workflow": "loop", "arguments": "$ _ + 1"}}]
    )
    assert parse_task(doc).workflows["loop"][0].kind == "if_else"


@pytest.mark.parametrize(
    ("step", "path"),
    [
        ({"yield": {"workflow": "nope"}}, "main[0].yield.workflow"),
        ({"workflow": "nope"}, "main[0].workflow"),
        ({"yield": {"arguments": {}}}, "main[0].yield.workflow"),
        ({"yield": {"workflow": "sub", "arguments": 3}}, "main[0].yield.arguments"),
        ({"yield": {"workflow": "sub"}, "workflow": "sub"}, "main[0].workflow"),
        ({"yield": "sub"}, "main[0].yield"),
    ],
)
def test_yield_invalid(step: dict[str, Any], path: str) -> None:
    assert path in errors(task([step], sub=[{"log": "x"}]))


# -- embed / search --------------------------------------------------------------------------------


def test_embed() -> None:
    step = one({"embed": {"text": ["a", "$ _.body"], "embed_instruction": "Represent the document"}})
    assert isinstance(step, EmbedStep)
    assert isinstance(step.text, tuple) and isinstance(step.text[1], Expression)
    assert isinstance(step.embed_instruction, Text)
    assert isinstance(one({"embed": {"text": "{{ _ }}"}}).text, Template)


def test_search_modes() -> None:
    text = one({"search": {"text": "$ _.query", "limit": 5, "metadata_filter": {"topic": "ai"}}})
    assert isinstance(text, SearchStep) and text.mode == "text" and text.limit == 5
    assert isinstance(text.text, Expression)
    vector = one({"search": {"vector": [0.1, 0.2], "confidence": 0.2, "mmr_strength": 0}})
    assert vector.mode == "vector" and vector.vector == (0.1, 0.2)
    hybrid = one({"search": {"text": "cats", "vector": "$ _.v", "alpha": 0.7, "k_multiplier": 3}})
    assert hybrid.mode == "hybrid" and hybrid.alpha == 0.7


@pytest.mark.parametrize(
    ("step", "path"),
    [
        ({"embed": {}}, "main[0].embed.text"),
        ({"embed": "x"}, "main[0].embed"),
        ({"embed": {"text": "x", "model": "m"}}, "main[0].embed.model"),
        ({"search": {}}, "main[0].search"),
        ({"search": {"text": "x", "limit": 0}}, "main[0].search.limit"),
        ({"search": {"text": "x", "limit": 51}}, "main[0].search.limit"),
        ({"search": {"vector": [1], "mmr_strength": 1}}, "main[0].search.mmr_strength"),
        ({"search": {"vector": [1], "confidence": -2}}, "main[0].search.confidence"),
        ({"search": {"vector": ["a"]}}, "main[0].search.vector"),
        ({"search": {"text": "x", "k_multiplier": 11}}, "main[0].search.k_multiplier"),
        ({"search": {"text": "x", "sort": "asc"}}, "main[0].search.sort"),
    ],
)
def test_embed_search_invalid(step: dict[str, Any], path: str) -> None:
    assert path in step_errors(step)


# -- common fields ---------------------------------------------------------------------------------


def test_label_retry_timeout_on_any_step() -> None:
    step = one(
        {
            "tool": "web_search",
            "label": "search it",
            "timeout": 30,
            "retry": {
                "max_attempts": 5,
                "initial_interval": 2,
                "backoff_coefficient": 3,
                "max_interval": 60,
                "non_retryable": ["ValueError"],
            },
        }
    )
    assert step.label == "search it" and step.timeout_s == 30.0
    assert step.retry == RetryPolicy(5, 2, 3, 60, ("ValueError",))


def test_task_level_retry_and_timeout() -> None:
    parsed = parse_task(task([{"log": "x"}], retry={"max_attempts": 2}, timeout=600))
    assert parsed.retry is not None and parsed.retry.max_attempts == 2
    assert parsed.timeout_s == 600.0


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ({"label": "123"}, "main[0].label"),
        ({"label": ""}, "main[0].label"),
        ({"label": "x" * 121}, "main[0].label"),
        ({"timeout": 0}, "main[0].timeout"),
        ({"timeout": "1h"}, "main[0].timeout"),
        ({"retry": 3}, "main[0].retry"),
        ({"retry": {"max_attempts": 0}}, "main[0].retry.max_attempts"),
        ({"retry": {"backoff_coefficient": 0.5}}, "main[0].retry.backoff_coefficient"),
        ({"retry": {"initial_interval": 10, "max_interval": 5}}, "main[0].retry.max_interval"),
        ({"retry": {"non_retryable": "ValueError"}}, "main[0].retry.non_retryable"),
        ({"retry": {"attempts": 2}}, "main[0].retry.attempts"),
    ],
)
def test_common_fields_invalid(extra: dict[str, Any], path: str) -> None:
    assert path in step_errors({"log": "x", **extra})


def test_labels_that_start_with_digits_are_fine() -> None:
    assert one({"log": "x", "label": "1st step"}).label == "1st step"


# -- explain ---------------------------------------------------------------------------------------


def test_explain_shows_how_each_string_was_read() -> None:
    parsed = parse_task(
        task(
            [
                {"evaluate": {"a": "$ _.x", "b": "hello"}, "label": "ev"},
                {"foreach": {"in": "_", "do": {"log": "item {{ _ }}"}}},
                {"switch": [{"case": "_", "then": {"log": "a"}}, {"case": "$ _", "then": {"log": "b"}}]},
            ]
        )
    )
    view = explain(parsed)
    evaluate, foreach, switch = view["workflows"]["main"]
    assert evaluate["kind"] == "evaluate" and evaluate["label"] == "ev"
    assert evaluate["values"] == describe(
        {"a": read_string("$ _.x", Slot.VALUE, TASK_NAMES), "b": read_string("hello", Slot.VALUE, TASK_NAMES)}
    )
    assert foreach["in"] == describe(read_string("_", Slot.EXPRESSION, TASK_NAMES))
    assert foreach["do"][0]["message"] == describe(read_string("item {{ _ }}", Slot.TEXT, TASK_NAMES))
    assert switch["cases"][0]["case"] == "_ (default)"
    assert view["tools"][0]["name"] == "web_search"
    assert view["warnings"] == [
        {"path": "main[2].switch[1]", "message": "unreachable: an earlier case `_` always matches"}
    ]
