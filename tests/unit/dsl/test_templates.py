"""Sandboxed Jinja templates: rendering, globals, filters, errors."""

from __future__ import annotations

from typing import Any

import pytest

from mintleaf_server.dsl.errors import EvaluationError, LimitExceeded, ReadError
from mintleaf_server.dsl.library import Limits
from mintleaf_server.dsl.reading import TASK_SCOPE_NAMES, Slot, Template, read_string


def render(source: str, scope: dict[str, Any] | None = None, limits: Limits | None = None) -> str:
    t = read_string(source, Slot.TEXT, TASK_SCOPE_NAMES)
    assert isinstance(t, Template)
    return t.render(scope or {}, limits)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ _.topic }}", "AI"),
        ("{{ inputs[0].topic }}", "T"),
        ("{{ _['topic'] }}", "AI"),
        ("{% for x in _.items_ %}{{ loop.index }}:{{ x }} {% endfor %}", "1:a 2:b "),
        ("{{ _.items_ | join(', ') }}", "a, b"),
        ("{{ _.items_ | length }}", "2"),
        ("{{ _.topic | lower }}{{ _.topic | upper }}", "aiAI"),
        ("{{ 'a' ~ 1 ~ _.topic }}", "a1AI"),
        ("{{ 2 ** 3 + 1 }}", "9"),
        ("{{ '%s!' | format(_.topic) }}", "AI!"),
        ("{{ re.findall('a', 'aab') }}", "['a', 'a']"),
        ("{{ dump_json(_.items_) }}", '["a", "b"]'),
        ("{{ _.items_ | tojson }}", '["a", "b"]'),
        ("{{ _.topic.replace('A', 'B') }}", "BI"),
        ("{% set n = _.items_ | length %}{{ n * 2 }}", "4"),
        ("{% if _.topic == 'AI' %}yes{% else %}no{% endif %}", "yes"),
        ("{{ range(3) | list }}", "[0, 1, 2]"),
        ("{{ NEWLINE }}", "\n"),
        ('{"literal": "braces"} {{ 1 }}', '{"literal": "braces"} 1'),
        ("{{ none_key is not defined }}", "True"),
        ("{% macro greet(n) %}hi {{ n }}{% endmacro %}{{ greet('x') }}", "hi x"),
    ],
)
def test_renders(source: str, expected: str) -> None:
    scope = {"_": {"topic": "AI", "items_": ["a", "b"]}, "inputs": {0: {"topic": "T"}}}
    if "none_key" in source:
        source = source.replace("none_key", "_.nothing")
    assert render(source, scope) == expected


def test_trim_and_lstrip_blocks() -> None:
    source = "{% for x in _ %}\n  {% if x %}\n{{ x }}\n  {% endif %}\n{% endfor %}\n"
    assert render(source, {"_": [1, 2]}) == "1\n2\n"


def test_undefined_is_an_error() -> None:
    with pytest.raises(EvaluationError, match="no key 'nope'"):
        render("{{ _.nope }}", {"_": {}})


def test_names_are_checked_when_read() -> None:
    with pytest.raises(ReadError, match="unknown names 'a', 'b'"):
        read_string("{{ a }}{{ b }}", Slot.TEXT, TASK_SCOPE_NAMES)
    t = read_string("{% set a = 1 %}{% for b in _ %}{{ a }}{{ b }}{% endfor %}", Slot.TEXT, TASK_SCOPE_NAMES)
    assert isinstance(t, Template)
    assert t.names == frozenset({"_"})


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{{ 1 +", "invalid template"),
        ("{% include 'x' %}", "include"),
        ("{% import 'x' as y %}", "import"),
        ("{% extends 'x' %}", "extends"),
        ("{% for x in _ recursive %}{{ loop(x) }}{% endfor %}", "recursive"),
        ("{{ _.__class__ }}", "dunder"),
        ("{{ _['__class__'] }}", "dunder"),
        ("{{ 'x'.format }}", "format"),
        ("{{ lipsum() }}", "unknown name 'lipsum'"),
        ("{{ namespace() }}", "unknown name 'namespace'"),
    ],
)
def test_rejected_when_read(source: str, message: str) -> None:
    with pytest.raises(ReadError, match=message):
        read_string(source, Slot.TEXT, TASK_SCOPE_NAMES)


@pytest.mark.parametrize(
    "source",
    ["{{ _|pprint }}", "{{ _|batch(3) }}", "{{ _|urlize }}", "{{ _|wordwrap(3) }}", "{{ _|xmlattr }}"],
)
def test_unreviewed_filters_are_absent(source: str) -> None:
    with pytest.raises(ReadError, match="No filter named"):
        read_string(source, Slot.TEXT, TASK_SCOPE_NAMES)


def test_output_size_limit() -> None:
    with pytest.raises(LimitExceeded, match="template output"):
        render(
            "{% for i in range(20) %}{{ _ }}{% endfor %}", {"_": "x" * 100}, Limits(max_string_length=1000)
        )


def test_mutation_is_blocked() -> None:
    with pytest.raises(EvaluationError):
        render("{{ _.append(1) }}", {"_": []})
