"""The expression evaluator: scope, whitelist, conversions, errors and limits."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from mintleaf_server.dsl.errors import EvaluationError, LimitExceeded, ReadError
from mintleaf_server.dsl.library import BUILTIN_NAMES, Limits, get_default_limits, set_default_limits
from mintleaf_server.dsl.reading import TASK_SCOPE_NAMES, Expression, Slot, read_string


def ev(source: str, scope: dict[str, Any] | None = None, limits: Limits | None = None) -> Any:
    r = read_string("$ " + source, Slot.VALUE, TASK_SCOPE_NAMES | frozenset(scope or {}))
    assert isinstance(r, Expression)
    return r.evaluate(scope or {}, limits)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("_.x + 1", 2),
        ("_['x'] * 3", 3),
        ("[q.strip() for q in _.text.split('\\n') if q.strip()]", ["a", "b"]),
        ("{k: v for k, v in _.items() if k != 'text'}", {"x": 1}),
        ("_.get('missing', 'd')", "d"),
        ("', '.join(sorted(_.keys()))", "text, x"),
        ("_.text[:2]", "a\n"),
        ("_.text[::-1]", "b \na"),
        ("sum(x for x in range(5))", 10),
        ("list(zip([1, 2], 'ab'))", [[1, "a"], [2, "b"]]),
        ("list(enumerate('ab'))", [[0, "a"], [1, "b"]]),
        ("list(map(str, [1, 2]))", ["1", "2"]),
        ("reduce(max, [3, 9, 2])", 9),
        ("f'{_.x:03d}-{_.text!r}'", "001-'a\\n b'"),
        ("true and not false and null is None", True),
        ("NEWLINE", "\n"),
        ("1 if _.x else 2", 1),
        ("[*[1, 2], *(3,)]", [1, 2, 3]),
        ("{**{'a': 1}, 'b': 2}", {"a": 1, "b": 2}),
        ("dict(a=1)", {"a": 1}),
        ("round(2.567, 2)", 2.57),
        ("abs(-3) + min(4, 5) + max([1, 2])", 9),
        ("hasattr(_, 'x') and not hasattr(_, '__class__')", True),
        ("'%s=%d' % ('a', 1)", "a=1"),
        ("3 // 2 + 7 % 4 - (1 << 3) + (8 >> 1) + (6 & 3) + (6 | 1) + (6 ^ 1)", 1 + 3 - 8 + 4 + 2 + 7 + 7),
        ("'abc' in _.text or 'a' in _.text", True),
    ],
)
def test_evaluates(source: str, expected: Any) -> None:
    assert ev(source, {"_": {"x": 1, "text": "a\n b"}}) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("load_json('{\"a\": [1]}')", {"a": [1]}),
        ("dump_json({'a': 1}, indent=2)", '{\n  "a": 1\n}'),
        ("load_yaml('a: [1, 2]')", {"a": [1, 2]}),
        ("dump_yaml({'a': 1})", "a: 1\n"),
        ("extract_json('text ```json\\n{\"a\": 1}\\n``` more')", {"a": 1}),
        ("extract_json('[1]')", [1]),
        ("match_regex(r'\\d+', '123')", True),
        ("search_regex('b', 'abc').group()", "b"),
        ("re.sub(r'(\\w)', r'<\\1>', 'ab')", "<a><b>"),
        ("re.subn('a', 'b', 'aa')", ["bb", 2]),
        ("re.split(',', 'a,b')", ["a", "b"]),
        ("[m.group() for m in re.finditer(r'\\d', 'a1b2')]", ["1", "2"]),
        ("re.findall(r'\\d+\\.\\s*(.*?)(?=\\d+\\.\\s*|$)', '1. a 2. b')", ["a ", "b"]),
        ("re.escape('a.b')", "a\\.b"),
        ("json.loads('1') + len(json.dumps([1]))", 4),
        ("yaml.safe_load('x: 1')", {"x": 1}),
        ("string.digits", "0123456789"),
        ("math.floor(math.sqrt(17)) + math.ceil(math.pi)", 8),
        ("statistics.median([3, 1, 2])", 2),
        ("base64.b64decode(base64.b64encode('héllo'))", "héllo"),
        ("urllib.parse.urlparse('https://a.b/c?d=1').query", "d=1"),
        ("urllib.parse.parse_qs('a=1&a=2')", {"a": ["1", "2"]}),
        ("urllib.parse.quote('a b')", "a%20b"),
        ("csv.DictReader('a,b\\n1,2')", [{"a": "1", "b": "2"}]),
        ("random.choice([7])", 7),
        ("random.randint(3, 3)", 3),
        ("datetime.datetime(2024, 1, 1) + datetime.timedelta(days=1)", "2024-01-02T00:00:00"),
        ("datetime.datetime.fromisoformat('2024-01-01T00:00:00').year", 2024),
        ("datetime.timedelta(hours=1)", 3600.0),
        ("datetime.date(2024, 1, 2).isoformat()", "2024-01-02"),
        ("markdown_to_html('*a*')", "<p><em>a</em></p>"),
        ("html_to_markdown('<b>a</b>')", "**a**"),
    ],
)
def test_library(source: str, expected: Any) -> None:
    assert ev(source) == expected


def test_now_is_aware_utc() -> None:
    now = datetime.datetime.fromisoformat(ev("datetime.now()"))
    assert now.tzinfo is not None


@pytest.mark.parametrize(
    ("source", "expected"),
    [("(1, 2)", [1, 2]), ("set([3, 1, 2])", [1, 2, 3]), ("range(3)", [0, 1, 2]), ("map(abs, [-1])", [1])],
)
def test_results_are_plain_data(source: str, expected: Any) -> None:
    assert ev(source) == expected


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("set([1, 'a'])", "sortable"),
        ("re.search('a', 'a')", "match object"),
        ("len", "not data"),
        ("float('nan')", "NaN"),
        ("{(1, 2): 3}", "dict key"),
    ],
)
def test_results_that_are_not_data(source: str, message: str) -> None:
    with pytest.raises(EvaluationError, match=message):
        ev(source)


def test_scope_is_not_mutated_and_mutators_are_absent() -> None:
    data = {"_": [3, 1, 2]}
    with pytest.raises(EvaluationError, match="no attribute 'sort'"):
        ev("_.sort()", data)
    with pytest.raises(EvaluationError, match="no attribute 'append'"):
        ev("_.append(1)", data)
    assert data == {"_": [3, 1, 2]}


def test_method_names_win_over_keys_on_mappings() -> None:
    assert ev("_['items']", {"_": {"items": [1]}}) == [1]
    assert ev("list(_.items())", {"_": {"items": [1]}}) == [["items", [1]]]


def test_int_keyed_scopes_and_labels() -> None:
    steps = {0: {"output": 1}, "inc": {"output": 2}}
    assert ev("steps[0].output + steps['inc'].output", {"steps": steps}) == 3


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("_.missing", "no key 'missing'"),
        ("1 / 0", "ZeroDivisionError"),
        ("_.x.y", "has no attribute 'y'"),
        ("int('x')", "ValueError"),
        ("sum(['a', 'b'])", "TypeError"),
        ("sum([[1]], [])", "sum\\(\\) adds numbers"),
        ("load_json('{')", "invalid JSON"),
        ("math.nope", "has no member 'nope'"),
        ("re(1)", "module, not a function"),
    ],
)
def test_evaluation_errors_name_the_problem_and_expression(source: str, message: str) -> None:
    with pytest.raises(EvaluationError, match=message) as info:
        ev(source, {"_": {"x": 1}})
    assert "in expression" in str(info.value)
    assert info.value.source == source


def test_missing_scope_value() -> None:
    r = read_string("$ state.x", Slot.VALUE, TASK_SCOPE_NAMES)
    assert isinstance(r, Expression)
    assert r.names == frozenset({"state"})
    with pytest.raises(EvaluationError, match="'state' is not available"):
        r.evaluate({})


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("lambda: 1", "lambda"),
        ("(x := 1)", "assignment"),
        ("{x for x in _}", "set comprehension"),
        ("_.__class__", "dunder"),
        ("_._private", "private"),
        ("'{}'.format(_)", "format"),
        ("'{x}'.format_map(_)", "format_map"),
        ("__import__('os')", "unsafe name"),
        ("b'x'", "bytes"),
        ("1j", "complex"),
        ("...", "ellipsis"),
        ("_ @ _", "@"),
        ("[x async for x in _]", "async"),
        ("undefined_thing + 1", "unknown name 'undefined_thing'"),
        ("1 +", "invalid Python expression"),
    ],
)
def test_rejected_when_read(source: str, message: str) -> None:
    with pytest.raises(ReadError, match=message):
        ev(source, {"_": [1]})


def test_limits_are_configurable() -> None:
    small = Limits(max_string_length=10)
    assert ev("'a' * 10", limits=small) == "a" * 10
    with pytest.raises(LimitExceeded):
        ev("'a' * 11", limits=small)
    previous = set_default_limits(small)
    try:
        with pytest.raises(LimitExceeded):
            ev("'a' * 11")
    finally:
        set_default_limits(previous)
    assert get_default_limits() == previous


def test_names_exposes_scope_names_only() -> None:
    r = read_string("$ [len(x) for x in _] + list(inputs)", Slot.VALUE, TASK_SCOPE_NAMES)
    assert isinstance(r, Expression)
    assert r.names == frozenset({"_", "inputs"})


def test_builtin_names() -> None:
    assert {"re", "json", "true", "NEWLINE", "range", "reduce", "load_json"} <= BUILTIN_NAMES
    assert not {"nlp", "chunk_doc", "humanize_text_alpha", "open", "eval", "getattr", "type"} & BUILTIN_NAMES


def test_scope_names_shadow_builtins() -> None:
    r = read_string("$ json + 1", Slot.VALUE, frozenset({"json"}))
    assert isinstance(r, Expression)
    assert r.evaluate({"json": 1}) == 2
