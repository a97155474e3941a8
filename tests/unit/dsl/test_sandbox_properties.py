"""Property tests: random expressions and templates never crash the process, never exceed the
limits, and never reach outside the sandbox. Every outcome is a value of plain data, or one of
the DSL's errors."""

from __future__ import annotations

import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mintleaf_server.dsl.errors import DslError
from mintleaf_server.dsl.library import BUILTINS
from mintleaf_server.dsl.reading import TASK_SCOPE_NAMES, Slot, evaluate_value, read_string

SCOPE: dict[str, Any] = {
    "_": {"a": [1, 2, 3], "s": "ab\ncd", "n": 7, "d": {"k": "v"}},
    "inputs": {0: {"x": 1}},
}

ATOMS = [
    "_",
    "_.a",
    "_.s",
    "_.n",
    "_.d",
    "inputs[0]",
    "0",
    "1",
    "-1",
    "2",
    "10",
    "99",
    "1.5",
    "'x'",
    "''",
    "'\\n'",
    "[]",
    "[1, 2]",
    "{}",
    "{'k': 1}",
    "None",
    "True",
    "(1, 'a')",
    "range(5)",
]
FUNCTIONS = sorted(n for n, v in BUILTINS.items() if callable(v) and n not in {"markdown_to_html"})
ATTRIBUTES = [
    "split",
    "strip",
    "upper",
    "join",
    "replace",
    "get",
    "items",
    "keys",
    "count",
    "index",
    "__class__",
    "format",
    "gi_frame",
    "mro",
    "center",
    "x",
    "k",
]
BINOPS = ["+", "-", "*", "/", "//", "%", "**", "<<", ">>", "&", "|", "^", "==", "<", "in", "and", "or"]


def expressions() -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.one_of(
            st.tuples(inner, st.sampled_from(BINOPS), inner).map(lambda t: f"({t[0]} {t[1]} {t[2]})"),
            st.tuples(st.sampled_from(FUNCTIONS), st.lists(inner, max_size=3)).map(
                lambda t: f"{t[0]}({', '.join(t[1])})"
            ),
            st.tuples(inner, st.sampled_from(ATTRIBUTES)).map(lambda t: f"{t[0]}.{t[1]}"),
            st.tuples(inner, st.sampled_from(ATTRIBUTES), st.lists(inner, max_size=2)).map(
                lambda t: f"{t[0]}.{t[1]}({', '.join(t[2])})"
            ),
            st.tuples(inner, inner).map(lambda t: f"{t[0]}[{t[1]}]"),
            st.tuples(inner, inner).map(lambda t: f"{t[0]}[:{t[1]}]"),
            st.tuples(inner, inner).map(lambda t: f"[{t[0]} for x in {t[1]}]"),
            st.tuples(inner, inner).map(lambda t: f"f'{{{t[0]}}}{{{t[1]}!r}}'"),
            inner.map(lambda e: f"not {e}"),
            st.lists(inner, max_size=3).map(lambda xs: f"[{', '.join(xs)}]"),
        )

    return st.recursive(st.sampled_from([*ATOMS, "x"]), extend, max_leaves=12)


def _is_plain(value: Any) -> bool:
    if value is None or type(value) in (str, int, float, bool):
        return True
    if type(value) is list:
        return all(_is_plain(v) for v in value)
    if type(value) is dict:
        return all(type(k) in (str, int, float, bool) or k is None for k in value) and all(
            _is_plain(v) for v in value.values()
        )
    return False


def _run(raw: str, slot: Slot) -> None:
    start = time.thread_time()
    try:
        readable = read_string(raw, slot, TASK_SCOPE_NAMES)
        result = evaluate_value(readable, SCOPE)
    except DslError as exc:
        assert str(exc)
    else:
        assert _is_plain(result), repr(result)
    assert time.thread_time() - start < 1.0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions())
def test_random_expressions_stay_inside(source: str) -> None:
    _run("$ " + source, Slot.VALUE)
    assert SCOPE["_"]["a"] == [1, 2, 3]  # scope data is never mutated


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions())
def test_random_templates_stay_inside(source: str) -> None:
    _run("{{ " + source.replace("{", "(").replace("}", ")") + " }}", Slot.TEXT)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_is_read_or_rejected(raw: str) -> None:
    for slot in Slot:
        _run(raw, slot)
