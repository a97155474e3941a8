"""Validation at task creation: every kind of violation, with its field path, all at once."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mintleaf_server.dsl import DslLimits, TaskInvalid, Text, Violation, parse_task

TOOLS = [{"name": "web_search", "integration": {"provider": "brave"}}]


def task(steps: Any = None, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": "t", "tools": TOOLS, **extra}
    if steps is not None:
        doc["main"] = steps
    return doc


def violations(doc: Any, **kw: Any) -> list[Violation]:
    with pytest.raises(TaskInvalid) as info:
        parse_task(doc, **kw)
    return info.value.violations


def first(doc: Any, **kw: Any) -> Any:
    """The first step of main, parsed (typed Any: tests reach into any step type)."""
    return parse_task(doc, **kw).main[0]


def paths(doc: Any, **kw: Any) -> dict[str, str]:
    return {v.path: v.message for v in violations(doc, **kw)}


# -- the document ----------------------------------------------------------------------------------


def test_yaml_json_bytes_and_mappings_are_accepted() -> None:
    doc = task([{"log": "hi"}])
    as_yaml = "name: t\ntools: [{name: web_search, integration: {provider: brave}}]\nmain:\n  - log: hi\n"
    for source in (doc, json.dumps(doc), json.dumps(doc).encode(), as_yaml, as_yaml.encode()):
        assert parse_task(source).main[0].kind == "log"


def test_yaml_dates_stay_strings() -> None:
    step = first("name: t\nmain:\n  - set: {when: 2024-01-01}\n")
    assert isinstance(step.values["when"], Text)


@pytest.mark.parametrize("source", ["main: [", "- just\n- a list\n", "42", ""])
def test_bad_documents(source: str) -> None:
    found = violations(source)
    assert len(found) == 1 and found[0].path == ""


def test_task_defaults() -> None:
    parsed = parse_task({"name": "t", "main": {"log": "x"}})
    assert parsed.description == "" and parsed.inherit_tools is True
    assert parsed.tools == () and parsed.input_schema is None and parsed.metadata == {}
    assert len(parsed.main) == 1  # a single step where a list is expected


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"main": [{"log": "x"}]}, "name"),
        ({"name": "", "main": [{"log": "x"}]}, "name"),
        ({"name": "x" * 256, "main": [{"log": "x"}]}, "name"),
        ({"name": "t"}, "main"),
        ({"name": "t", "main": []}, "main"),
        ({"name": "t", "main": "log"}, "main"),
        ({"name": "t", "main": [{"log": "x"}], "description": ["x"]}, "description"),
        ({"name": "t", "main": [{"log": "x"}], "canonical_name": "1abc"}, "canonical_name"),
        ({"name": "t", "main": [{"log": "x"}], "inherit_tools": "yes"}, "inherit_tools"),
        ({"name": "t", "main": [{"log": "x"}], "metadata": [1]}, "metadata"),
        ({"name": "t", "main": [{"log": "x"}], "tools": {"web_search": {}}}, "tools"),
        ({"name": "t", "main": [{"log": "x"}], "input_schema": {"type": "nonsense"}}, "input_schema.type"),
        ({"name": "t", "main": [{"log": "x"}], "input_schema": "string"}, "input_schema"),
        ({"name": "t", "main": [{"log": "x"}], "timeout": -1}, "timeout"),
        ({"name": "t", "main": [{"log": "x"}], "retry": {"max_attempts": "3"}}, "retry.max_attempts"),
        ({"name": "t", "main": [{"log": "x"}], "workflows": {"main": []}}, "workflows"),
        ({"name": "t", "main": [{"log": "x"}], "my-flow": [{"log": "x"}]}, "my-flow"),
        ({"name": "t", "main": [{"log": "x"}], "x" * 41: [{"log": "x"}]}, "x" * 41),
        ({"name": "t", "main": [{"log": "x"}], "sub": 3}, "sub"),
    ],
)
def test_document_violations(doc: dict[str, Any], path: str) -> None:
    assert path in paths(doc)


def test_subworkflows_are_the_other_top_level_keys() -> None:
    parsed = parse_task(task([{"workflow": "second"}], second=[{"log": "x"}], third={"log": "y"}))
    assert list(parsed.workflows) == ["main", "second", "third"]


def test_reserved_keys_cannot_name_a_subworkflow() -> None:
    found = paths(task([{"workflow": "metadata"}, {"yield": {"workflow": "tools"}}], metadata={"a": 1}))
    assert "unknown workflow 'metadata'" in found["main[0].workflow"]
    assert "unknown workflow 'tools'" in found["main[1].yield.workflow"]


def test_read_only_api_fields_are_ignored() -> None:
    parsed = parse_task(task([{"log": "x"}], id="0190-...", created_at="2025-01-01T00:00:00Z"))
    assert list(parsed.workflows) == ["main"]


# -- steps -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "path", "words"),
    [
        ({"log": "x", "colour": "red"}, "main[0].colour", "unknown field"),
        ({"log": "x", "tool": "web_search"}, "main[0]", "log, tool"),
        ({"colour": "red"}, "main[0]", "not a step"),
        ("log: x", "main[0]", "must be an object"),
        ({"evaluate": {"x": "$ foo + 1"}}, "main[0].evaluate.x", "foo"),
        ({"evaluate": {"x": "$ _.a +"}}, "main[0].evaluate.x", ""),
        ({"if": "score > 0.8", "then": {"log": "x"}}, "main[0].if", "score"),
        ({"log": "Hello {{ who }}"}, "main[0].log", "who"),
        ({"tool": "web_serch"}, "main[0].tool", "web_search"),
        ({"yield": {"workflow": "nowhere"}}, "main[0].yield.workflow", "nowhere"),
        ({"foreach": {"in": "_", "do": {"log": "x"}, "parallelism": 0}}, "main[0].foreach.parallelism", "1"),
        ({"sleep": {"days": 40}}, "main[0].sleep", "seconds"),
        ({"sleep": {"seconds": 0}}, "main[0].sleep", "more than 0"),
        ({"switch": []}, "main[0].switch", "non-empty"),
    ],
)
def test_step_violations(step: Any, path: str, words: str) -> None:
    found = paths(task([step]))
    assert path in found, found
    assert words in found[path]


def test_unknown_name_message_names_it() -> None:
    found = paths(task([{"evaluate": {"average_score": "sum(scores) / len(scores)"}}]))
    assert "scores" in found["main[0].evaluate.average_score"]


def test_path_example_from_the_issue() -> None:
    steps = [{"log": "a"}, {"log": "b"}, {"log": "c"}, {"map_reduce": {"over": "_", "map": {"tool": "nope"}}}]
    assert "unknown tool 'nope'" in paths(task(steps))["main[3].map_reduce.map.tool"]


def test_paths_in_subworkflows() -> None:
    found = paths(task([{"log": "x"}], sub=[{"log": "y"}, {"tool": "nope"}]))
    assert set(found) == {"sub[1].tool"}


# -- tools -----------------------------------------------------------------------------------------


def test_agent_tools_are_inherited_by_default() -> None:
    assert first(task([{"tool": "agent_tool"}]), agent_tools=["agent_tool"]).tool == "agent_tool"


def test_inherit_tools_false_hides_agent_tools() -> None:
    found = paths(task([{"tool": "agent_tool"}], inherit_tools=False), agent_tools=["agent_tool"])
    assert "inherit_tools: false" in found["main[0].tool"]
    # the task's own tools stay visible
    assert parse_task(task([{"tool": "web_search"}], inherit_tools=False), agent_tools=["x"]).main


def test_prompt_tool_refs_are_checked() -> None:
    assert "main[0].tools[1]" in paths(task([{"prompt": "x", "tools": ["web_search", "nope"]}]))


def test_duplicate_tool_names() -> None:
    doc = task([{"log": "x"}], tools=[*TOOLS, {"name": "web_search", "function": {}}])
    assert "duplicate" in paths(doc)["tools[1].name"]


def test_an_invalid_tool_is_not_also_unknown() -> None:
    doc = task([{"tool": "broken"}], tools=[{"name": "broken", "type": "system", "system": {}}])
    found = paths(doc)
    assert "main[0].tool" not in found
    assert {"tools[0].system.resource", "tools[0].system.operation"} <= set(found)


# -- limits ----------------------------------------------------------------------------------------


def nested_ifs(depth: int) -> dict[str, Any]:
    step: dict[str, Any] = {"log": "leaf"}
    for _ in range(depth - 1):
        step = {"if": "$ _", "then": step}
    return step


def test_nesting_depth_limit() -> None:
    assert parse_task(task([nested_ifs(16)])).main
    found = paths(task([nested_ifs(17)]))
    assert list(found) == ["main[0]" + ".then" * 16]
    assert "nested too deep" in next(iter(found.values()))
    assert paths(task([nested_ifs(4)]), limits=DslLimits(max_depth=3))


def test_step_count_limit() -> None:
    limits = DslLimits(max_steps=5)
    assert parse_task(task([{"log": "x"}] * 5), limits=limits)
    found = paths(
        task([{"log": "x"}] * 3 + [{"foreach": {"in": "_", "do": [{"log": "x"}] * 3}}]), limits=limits
    )
    assert list(found) == ["main[3].foreach.do[1]"]
    assert "too many steps" in found["main[3].foreach.do[1]"]


def test_parallelism_limit() -> None:
    limits = DslLimits(max_parallelism=10)
    step = {"over": "_", "map": {"log": "x"}, "parallelism": 11}
    assert "between 1 and 10" in paths(task([step]), limits=limits)["main[0].parallelism"]
    # an omitted parallelism never exceeds the maximum
    assert first(task([{"over": "_", "map": {"log": "x"}}]), limits=limits).parallelism == 10


def test_parallel_branch_limit() -> None:
    limits = DslLimits(max_parallel_branches=2)
    assert "main[0].parallel" in paths(task([{"parallel": [{"log": "x"}] * 3}]), limits=limits)


def test_sleep_limit() -> None:
    limits = DslLimits(max_sleep_s=60)
    assert "main[0].sleep" in paths(task([{"sleep": {"minutes": 2}}]), limits=limits)
    assert first(task([{"sleep": {"minutes": 1}}]), limits=limits).seconds == 60


# -- labels ----------------------------------------------------------------------------------------


def test_labels_unique_per_workflow() -> None:
    steps = [{"log": "a", "label": "x"}, {"foreach": {"in": "_", "do": {"log": "b", "label": "x"}}}]
    found = paths(task(steps))
    assert "duplicate label 'x'" in found["main[1].foreach.do.label"]
    assert "main[0]" in found["main[1].foreach.do.label"]
    # the same label in two workflows is fine
    assert parse_task(task([{"log": "a", "label": "x"}], sub=[{"log": "b", "label": "x"}]))


# -- all at once -----------------------------------------------------------------------------------


def test_all_violations_are_returned_at_once() -> None:
    doc = {
        "tools": [{"name": "bad-name", "function": {}}],
        "input_schema": {"type": 5},
        "main": [
            {"tool": "missing"},
            {"evaluate": {"x": "$ nope(1)"}},
            {"sleep": {"seconds": -5}},
            {"switch": []},
            {"over": "_", "map": [{"log": "x", "label": "12"}], "parallelism": 0},
        ],
        "sub-flow": [{"log": "x"}],
    }
    found = paths(doc)
    assert {
        "name",
        "tools[0].name",
        "input_schema.type",
        "main[0].tool",
        "main[1].evaluate.x",
        "main[2].sleep.seconds",
        "main[3].switch",
        "main[4].map[0].label",
        "main[4].parallelism",
        "sub-flow",
    } <= set(found)
    with pytest.raises(TaskInvalid) as info:
        parse_task(doc)
    assert "main[0].tool" in str(info.value)


def test_alias_bombs_are_rejected_quickly() -> None:
    lines = ["name: t", "a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 12)]
    lines += ["main:", "  - evaluate: {x: *a11}"]
    found = violations("\n".join(lines))
    assert [v.path for v in found] == [""]
    assert "more than 200000 values" in found[0].message


def test_steps_past_the_limit_are_not_parsed() -> None:
    found = paths(task([{"tool": "nope"}] * 20), limits=DslLimits(max_steps=3))
    assert set(found) == {"main[0].tool", "main[1].tool", "main[2].tool", "main[3]"}
