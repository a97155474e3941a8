"""The string-reading rules (issue 4, rules 1-8), including every string of the seed's tasks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mintleaf_server.dsl.errors import ReadError
from mintleaf_server.dsl.reading import (
    TASK_SCOPE_NAMES,
    Expression,
    Kind,
    Slot,
    Template,
    Text,
    describe,
    escape_literal_newlines,
    evaluate_value,
    read_string,
    read_tree,
    read_value,
)

SEED = Path("/work/shared/seed-tasks")
NAMES = TASK_SCOPE_NAMES


def kind(raw: str, slot: Slot = Slot.VALUE, names: frozenset[str] = NAMES) -> Kind:
    return read_string(raw, slot, names).kind


# --- rule 1: `$ ` ------------------------------------------------------------------------------


def test_dollar_prefix_is_an_expression_in_every_slot() -> None:
    for slot in Slot:
        r = read_string("$ 1 + 2", slot, NAMES)
        assert isinstance(r, Expression)
        assert r.evaluate({}) == 3


def test_dollar_prefix_wins_over_template_braces() -> None:
    r = read_string("$ '{{' + _", Slot.TEXT, NAMES)
    assert isinstance(r, Expression)
    assert r.evaluate({"_": "x"}) == "{{x"


def test_dollar_alone_is_an_error() -> None:
    with pytest.raises(ReadError, match="empty expression"):
        read_string("$ ", Slot.VALUE, NAMES)


def test_dollar_without_space_in_expression_slot_explains() -> None:
    with pytest.raises(ReadError, match=r"'\$ '"):
        read_string("$x", Slot.EXPRESSION, NAMES)


# --- rule 2: templates -------------------------------------------------------------------------


@pytest.mark.parametrize("slot", list(Slot))
def test_braces_make_a_template_in_every_slot(slot: Slot) -> None:
    r = read_string("Hello {{ _.name }}", slot, NAMES)
    assert isinstance(r, Template)
    assert r.render({"_": {"name": "Ada"}}) == "Hello Ada"
    assert r.names == frozenset({"_"})


def test_block_tag_makes_a_template() -> None:
    r = read_string("{% for x in _ %}{{ x }};{% endfor %}", Slot.TEXT, NAMES)
    assert isinstance(r, Template)
    assert r.render({"_": [1, 2]}) == "1;2;"


def test_single_braces_are_plain_text() -> None:
    r = read_string('{"a": {name}}', Slot.TEXT, NAMES)
    assert r == Text('{"a": {name}}')


# --- rule 3: expression slots ------------------------------------------------------------------


def test_expression_slot_reads_any_string_as_an_expression() -> None:
    r = read_string("_ > 0.8", Slot.EXPRESSION, NAMES)
    assert isinstance(r, Expression)
    assert r.evaluate({"_": 0.9}) is True


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("score > 0.8", "score"),
        ("category == 'A'", "category"),
        ("data_list", "data_list"),
        ("numbers", "numbers"),
    ],
)
def test_expression_slot_names_unknown_names(raw: str, name: str) -> None:
    with pytest.raises(ReadError, match=f"unknown name '{name}'"):
        read_string(raw, Slot.EXPRESSION, NAMES)


def test_expression_slot_syntax_error_quotes_the_text() -> None:
    with pytest.raises(ReadError, match="invalid Python expression 'a b c'"):
        read_string("a b c", Slot.EXPRESSION, NAMES)


def test_reduce_scope() -> None:
    r = read_string("sum(results)", Slot.EXPRESSION, frozenset({"results", "_"}))
    assert isinstance(r, Expression)
    assert r.evaluate({"results": [1, 2, 3], "_": None}) == 6


# --- rule 4: value slots -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "hi",
        "json",
        "task",
        "dark_mode",
        "Latest AI developments",
        "42",
        "2024-01-01",
        "2024-12-25",
        "user_preference",
        "Task completed successfully",
        "New York",
        "Please provide additional information.",
        "Hello, world",
        "x > 0",
        "input.txt",
        "True",
    ],
)
def test_value_slot_text(raw: str) -> None:
    r = read_string(raw, Slot.VALUE, NAMES)
    assert r == Text(raw)
    assert evaluate_value(r, {}) == raw


@pytest.mark.parametrize(
    ("raw", "scope", "expected"),
    [
        ("_", {"_": {"a": 1}}, {"a": 1}),
        ("_.split('\n')", {"_": "a\nb"}, ["a", "b"]),
        ("_.split('\\n')", {"_": "a\nb"}, ["a", "b"]),
        ("'\n'.join([r.result for r in _])", {"_": [{"result": "a"}, {"result": "b"}]}, "a\nb"),
        (r"re.findall(r'\d+', _)", {"_": "a1b22"}, ["1", "22"]),
        ("outputs[1].story", {"outputs": {1: {"story": "S"}}}, "S"),
        ("inputs[0].topic", {"inputs": {0: {"topic": "T"}}}, "T"),
        ("[1, 2]", {}, [1, 2]),
        ("_[0]", {"_": [5]}, 5),
        ("_ ** 2", {"_": 3}, 9),
        ("max(3, 4)", {}, 4),
        ("len(_) + 1", {"_": [1]}, 2),
    ],
)
def test_value_slot_expressions(raw: str, scope: dict[str, Any], expected: Any) -> None:
    r = read_string(raw, Slot.VALUE, NAMES)
    assert isinstance(r, Expression)
    assert r.evaluate(scope) == expected


def test_value_slot_mistyped_expression_is_an_error_not_text() -> None:
    with pytest.raises(ReadError, match="unknown name 'scores'"):
        read_string("sum(scores) / len(scores)", Slot.VALUE, NAMES)


def test_value_slot_julep_shapes_must_parse() -> None:
    with pytest.raises(ReadError, match="invalid Python expression"):
        read_string("[citation needed]", Slot.VALUE, NAMES)
    with pytest.raises(ReadError, match="invalid Python expression"):
        read_string("see outputs[1 for details", Slot.VALUE, NAMES)


# --- rule 5: raw newlines inside literals ------------------------------------------------------


def test_escape_literal_newlines_only_touches_literals() -> None:
    assert escape_literal_newlines("_.split('\n')") == "_.split('\\n')"
    assert escape_literal_newlines('x\n + "a\rb"') == 'x\n + "a\\rb"'
    assert escape_literal_newlines("'''a\nb'''") == "'''a\nb'''"
    assert escape_literal_newlines(r"'it\'s' + '\n'") == r"'it\'s' + '\n'"


def test_research_agent_comprehension_with_raw_newline() -> None:
    raw = yaml.safe_load("x: \"$ [q.strip() for q in _.split('\\n') if q.strip()]\"")["x"]
    assert "\n" in raw
    r = read_string(raw, Slot.VALUE, NAMES)
    assert isinstance(r, Expression)
    assert r.evaluate({"_": " a \n\n b\n"}) == ["a", "b"]


# --- rules 6 and 7 -----------------------------------------------------------------------------


@pytest.mark.parametrize("slot", [Slot.TEXT, Slot.TOOL_DEF])
@pytest.mark.parametrize("raw", ["_", "_.x", "outputs[1]", "1 + 2", "Content-Type: application/json", "[x]"])
def test_text_and_tool_def_slots_are_text(slot: Slot, raw: str) -> None:
    assert read_string(raw, slot, NAMES) == Text(raw)


def test_tool_def_secrets() -> None:
    r = read_string("$ secrets.api_key", Slot.TOOL_DEF, frozenset({"secrets"}))
    assert isinstance(r, Expression)
    assert r.evaluate({"secrets": {"api_key": "k"}}) == "k"
    with pytest.raises(ReadError, match="unknown name 'secrets'"):
        read_string("$ secrets.api_key", Slot.VALUE, NAMES)


def test_template_unknown_names_are_named() -> None:
    with pytest.raises(ReadError, match="unknown name 'item_id'"):
        read_string("Processing completed for item {{item_id}}", Slot.TEXT, NAMES)


# --- rule 8, trees -----------------------------------------------------------------------------


def test_read_tree_collects_problems_with_paths() -> None:
    value = {"a": "sum(scores)", "b": ["_", "hi", "{{ nope }}"], "c": 3}
    tree, problems = read_tree(value, Slot.VALUE, NAMES, "main[0].evaluate")
    assert problems == [
        ("main[0].evaluate.a", "unknown name 'scores' in expression 'sum(scores)'"),
        ("main[0].evaluate.b[2]", "unknown name 'nope' in template '{{ nope }}'"),
    ]
    assert describe(tree) == {
        "a": {"text": "sum(scores)"},
        "b": [{"expression": "_"}, {"text": "hi"}, {"text": "{{ nope }}"}],
        "c": 3,
    }


def test_read_value_raises_first_problem_with_path() -> None:
    with pytest.raises(ReadError, match=r"^args\[1\]: unknown name 'zz'"):
        read_value(["_", "zz + _"], Slot.VALUE, NAMES, "args")


def test_evaluate_value_walks_the_tree() -> None:
    tree = read_value({"a": ["_.x", "hi", "{{ _.x }}!"], "n": None}, Slot.VALUE, NAMES)
    assert evaluate_value(tree, {"_": {"x": 2}}) == {"a": [2, "hi", "2!"], "n": None}


def test_describe_kinds() -> None:
    tree = read_value({"e": "$ 1", "t": "{{ 1 }}", "x": "x"}, Slot.VALUE, NAMES)
    assert describe(tree) == {"e": {"expression": "1"}, "t": {"template": "{{ 1 }}"}, "x": {"text": "x"}}


# --- the seed's tasks --------------------------------------------------------------------------


def load(name: str) -> Any:
    return yaml.safe_load((SEED / name).read_text())


def read_kind(raw: str, slot: Slot) -> str:
    return describe(read_string(raw, slot, NAMES)).popitem()[0]  # type: ignore[no-any-return]


def test_research_agent_strings() -> None:
    main = load("research-agent.yaml")["main"]
    assert read_kind(main[0]["prompt"][0]["content"], Slot.TEXT) == "template"
    queries = read_string(main[1]["evaluate"]["search_queries"], Slot.VALUE, NAMES)
    assert isinstance(queries, Expression)
    assert queries.evaluate({"_": "q1\nq2"}) == ["q1", "q2"]
    assert read_kind(main[2]["over"], Slot.EXPRESSION) == "expression"
    assert read_kind(main[2]["map"]["arguments"]["query"], Slot.VALUE) == "expression"
    results = read_string(main[3]["evaluate"]["results"], Slot.VALUE, NAMES)
    assert isinstance(results, Expression)
    assert results.evaluate({"_": [{"result": "a"}, {"result": "b"}]}) == "a\nb"
    summary = read_string(main[4]["prompt"][0]["content"], Slot.TEXT, NAMES)
    assert isinstance(summary, Template)
    assert summary.names == frozenset({"inputs", "_"})
    discord = read_string(main[5]["arguments"]["content"], Slot.VALUE, NAMES)
    assert isinstance(discord, Template)
    text = discord.render({"inputs": {0: {"topic": "AI"}}, "_": "sum"})
    assert text.startswith("**Research Summary for AI**") and "sum" in text
    tools = load("research-agent.yaml")["tools"]
    assert read_kind(tools[0]["integration"]["setup"]["api_key"], Slot.TOOL_DEF) == "text"
    assert read_kind(tools[1]["api_call"]["headers"]["Content-Type"], Slot.TOOL_DEF) == "text"
    assert read_kind(tools[1]["api_call"]["url"], Slot.TOOL_DEF) == "text"


def test_story_and_comic_creator_strings() -> None:
    main = load("story-and-comic-creator.yaml")["main"]
    system = read_string(main[0]["prompt"][0]["content"], Slot.TEXT, NAMES)
    assert isinstance(system, Template)
    assert system.render({"agent": {"name": "A", "about": "B"}}) == "You are A. B"
    story = "Once.\n1. A cat sits. 2. It jumps. 3. It flies. 4. It lands."
    ev = read_value(main[1]["evaluate"], Slot.VALUE, NAMES)
    out = evaluate_value(ev, {"_": story})
    assert out["story"] == "Once."
    assert out["panels"] == ["A cat sits. ", "It jumps. ", "It flies. ", "It lands."]
    assert read_kind(main[2]["foreach"]["in"], Slot.EXPRESSION) == "expression"
    assert read_kind(main[2]["foreach"]["do"]["arguments"]["description"], Slot.VALUE) == "expression"
    ret = read_value(main[4]["return"], Slot.VALUE, NAMES)
    outputs = {1: {"story": "S"}, 2: [{"image": {"url": "u1"}}, {"image": {"url": "u2"}}], 3: "Title"}
    assert evaluate_value(ret, {"outputs": outputs}) == {
        "title": "Title",
        "story": "S",
        "comic_panels": ["u1", "u2"],
    }


def test_tool_examples_strings() -> None:
    api = load("api-call.yaml")["main"][0]["arguments"]
    assert describe(read_value(api, Slot.VALUE, NAMES)) == {"params": {"test": {"expression": "_.input"}}}
    fn = load("function-tool.yaml")["main"][0]["arguments"]
    assert describe(read_value(fn, Slot.VALUE, NAMES)) == {"content": {"text": "hi"}}
    system = load("system-tool.yaml")["main"][0]["arguments"]
    assert read_value(system, Slot.VALUE, NAMES) == {"limit": 10}


SNIPPET_SLOTS: list[tuple[str, Any, Slot, str | None]] = [
    ("prompt", lambda s: s["prompt"], Slot.TEXT, "data"),
    ("tool_call", lambda s: s["arguments"]["query"], Slot.VALUE, None),
    ("evaluate", lambda s: s["evaluate"]["average_score"], Slot.VALUE, "scores"),
    ("wait_for_input", lambda s: s["wait_for_input"]["info"]["message"], Slot.VALUE, None),
    ("log", lambda s: s["log"], Slot.TEXT, "item_id"),
    ("set", lambda s: s["set"]["user_preference"], Slot.VALUE, None),
    ("foreach", lambda s: s["foreach"]["in"], Slot.EXPRESSION, "data_list"),
    ("foreach", lambda s: s["foreach"]["do"][0]["log"], Slot.TEXT, None),
    ("map_reduce", lambda s: s["map_reduce"]["over"], Slot.EXPRESSION, "numbers"),
    ("map_reduce", lambda s: s["map_reduce"]["map"][0]["evaluate"]["squared"], Slot.VALUE, None),
    ("parallel", lambda s: s["parallel"][0]["arguments"]["query"], Slot.VALUE, None),
    ("parallel", lambda s: s["parallel"][1]["arguments"]["location"], Slot.VALUE, None),
    ("if_else", lambda s: s["if"], Slot.EXPRESSION, "score"),
    ("if_else", lambda s: s["then"][0]["log"], Slot.TEXT, None),
    ("switch", lambda s: s["switch"][0]["case"], Slot.EXPRESSION, "category"),
    ("switch", lambda s: s["switch"][1]["case"], Slot.EXPRESSION, "category"),
    ("switch", lambda s: s["switch"][2]["case"], Slot.EXPRESSION, None),
    ("return", lambda s: s["return"]["result"], Slot.VALUE, None),
    ("yield", lambda s: s["yield"]["arguments"]["input_data"], Slot.VALUE, "raw_data"),
    ("error", lambda s: s["error"], Slot.TEXT, None),
]


@pytest.mark.parametrize(("key", "pick", "slot", "unknown"), SNIPPET_SLOTS)
def test_step_table_snippets(key: str, pick: Any, slot: Slot, unknown: str | None) -> None:
    raw = pick(load("step-table-snippets.yaml")[key])
    if unknown is None:
        read_string(raw, slot, NAMES)
    else:
        with pytest.raises(ReadError, match=f"unknown name '{unknown}'"):
            read_string(raw, slot, NAMES)


def test_snippet_texts_stay_text() -> None:
    snippets = load("step-table-snippets.yaml")
    assert read_kind(snippets["tool_call"]["arguments"]["query"], Slot.VALUE) == "text"
    assert read_kind(snippets["set"]["set"]["user_preference"], Slot.VALUE) == "text"
    assert read_kind(snippets["return"]["return"]["result"], Slot.VALUE) == "text"
    assert (
        read_kind(snippets["map_reduce"]["map_reduce"]["map"][0]["evaluate"]["squared"], Slot.VALUE)
        == "expression"
    )
