"""What sandboxed expressions and templates may use, and the guarded runtime behind it.

Design note. Expressions run in-process as compiled Python code in which every operation that can
allocate or loop (attribute access, method calls, `+ * ** % <<`, slicing, comprehension iteration,
f-string formatting, `*`/`**` unpacking) is routed through the helpers below. Each helper charges
a per-evaluation `Budget` (work units ~ items and characters touched or created), checks the
size caps *before* a blow-up would happen (`'a' * 10**10`, `9 ** 9 ** 9`, `s.replace('', big)`),
and checks the thread's CPU clock every few thousand units. Alternatives rejected:
- a worker process with rlimits: a pipe round trip costs ~40x a guarded evaluation (numbers in
  docs/expressions.md) and the engine evaluates on its hot path;
- an AST interpreter with an instruction budget: ~10x slower than compiled guarded code;
- simpleeval (Julep's choice): no CPU bound, its size checks miss several blow-ups;
- a watchdog thread raising an async exception: cannot interrupt C calls either, and a late
  delivery would land in the engine's own code.
C-level work on data that already exists (sorting a list, `x in s`) is bounded by the size caps
and charged in proportion to the operands' sizes, so the CPU check runs often enough.

Every callable reachable from an expression is one of the wrappers here (built-ins, module
members, methods from the per-type tables); scope data is plain JSON-like data, so nothing else is
callable. `nlp`, `chunk_doc` and `humanize_text_alpha` from Julep's list are not provided.
"""

from __future__ import annotations

import base64 as _base64
import csv as _csv
import datetime as _dt
import functools
import io
import json as _json
import math as _math
import random as _random
import statistics as _statistics
import string as _string
import threading
import time as _time
import urllib.parse as _urlparse
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import regex as _regex
import yaml as _yaml

from mintleaf_server.dsl.errors import EvaluationError, LimitExceeded

__all__ = [
    "BUILTINS",
    "BUILTIN_NAMES",
    "CONSTANTS",
    "DEFAULT_LIMITS",
    "RUNTIME",
    "Budget",
    "Limits",
    "Namespace",
    "budget_scope",
    "charge",
    "current_budget",
    "get_default_limits",
    "guarded_getattr",
    "guarded_getitem",
    "pop_budget",
    "push_budget",
    "safe_str",
    "set_default_limits",
    "to_plain",
]


@dataclass(frozen=True)
class Limits:
    """Limits enforced on every evaluation (an expression or a template render)."""

    cpu_seconds: float = 0.5  # CPU time of the evaluating thread
    max_work: int = 3_000_000  # work units: iterations, items created, characters created / 8
    max_string_length: int = 1_000_000  # any string created, and a template's output
    max_items: int = 1_000_000  # any list/tuple/set/dict created, and range()
    max_int_bits: int = 65_536  # results of *, ** and << on integers
    max_depth: int = 100  # nesting of results (and of data walked for str()/dump_json)
    regex_timeout: float = 0.25  # seconds per regex call (also capped by the CPU time left)
    max_regex_length: int = 10_000  # characters in a pattern
    max_format_width: int = 10_000  # width/precision in f-string and % format specs
    max_sample_population: int = 10_000  # random.choice / random.sample (as Julep)
    max_markup_length: int = 20_000  # markdown_to_html / html_to_markdown input (slow libraries)


DEFAULT_LIMITS = Limits()
_default_limits: list[Limits] = [DEFAULT_LIMITS]

_CHECK_EVERY = 2048  # work units between CPU-clock reads
_thread_time = _time.thread_time


def get_default_limits() -> Limits:
    """The limits used when an evaluation is not given its own."""
    return _default_limits[0]


def set_default_limits(limits: Limits) -> Limits:
    """Replace the process-wide default limits; returns the previous ones (to restore them)."""
    previous = _default_limits[0]
    _default_limits[0] = limits
    return previous


class Budget:
    """The work and CPU budget of one evaluation."""

    __slots__ = ("deadline", "limits", "max_work", "next_check", "used")

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.used = 0
        self.max_work = limits.max_work
        self.next_check = _CHECK_EVERY
        self.deadline = _thread_time() + limits.cpu_seconds

    def charge(self, units: int) -> None:
        self.used += units
        if self.used >= self.next_check:
            self.check()

    def check(self) -> None:
        if self.used > self.max_work:
            raise LimitExceeded(f"evaluation exceeded its work budget ({self.max_work:,} units)")
        if _thread_time() > self.deadline:
            raise LimitExceeded(f"evaluation exceeded its CPU time limit ({self.limits.cpu_seconds:g} s)")
        self.next_check = min(self.used + _CHECK_EVERY, self.max_work + 1)

    def remaining_seconds(self) -> float:
        return max(0.001, self.deadline - _thread_time())


class _State(threading.local):
    budget: Budget | None = None


_state = _State()


def current_budget() -> Budget:
    """The budget of the evaluation running on this thread (a fresh default one outside)."""
    budget = _state.budget
    if budget is None:
        budget = _state.budget = Budget(get_default_limits())
    return budget


class budget_scope:
    """Install a fresh budget for one evaluation on this thread (re-entrant)."""

    __slots__ = ("_budget", "_previous")

    def __init__(self, limits: Limits) -> None:
        self._budget = Budget(limits)
        self._previous: Budget | None = None

    def __enter__(self) -> Budget:
        self._previous = _state.budget
        _state.budget = self._budget
        return self._budget

    def __exit__(self, *exc: object) -> None:
        _state.budget = self._previous


def push_budget(limits: Limits) -> tuple[Budget, Budget | None]:
    """Start an evaluation on this thread: returns its budget and the one to restore after."""
    previous = _state.budget
    budget = _state.budget = Budget(limits)
    return budget, previous


def pop_budget(previous: Budget | None) -> None:
    _state.budget = previous


def charge(units: int) -> None:
    """Charge the running evaluation's budget."""
    current_budget().charge(units)


def _fail(message: str) -> NoReturn:
    raise EvaluationError(message)


def _too_big(what: str, size: int, cap: int) -> NoReturn:
    raise LimitExceeded(f"{what} would have {size:,} elements, over the limit of {cap:,}")


# --- sizes -----------------------------------------------------------------------------------------

_SIZED_TYPES = (str, list, tuple, dict, set, frozenset)


def _cost(value: Any) -> int:
    """Work units for a C-level pass over `value` (a linear scan)."""
    t = type(value)
    if t is str:
        return len(value) >> 4
    if t is list or t is tuple:
        return len(value)
    return 0


def _check_result(value: Any, budget: Budget) -> Any:
    """Charge and cap a freshly created value."""
    t = type(value)
    if t is str:
        n = len(value)
        if n > budget.limits.max_string_length:
            _too_big("a string", n, budget.limits.max_string_length)
        budget.charge(1 + (n >> 3))
    elif t in _SIZED_TYPES:
        n = len(value)
        if n > budget.limits.max_items:
            _too_big(f"a {t.__name__}", n, budget.limits.max_items)
        budget.charge(1 + n)
    elif t is int and value.bit_length() > budget.limits.max_int_bits:
        raise LimitExceeded(f"an integer would exceed {budget.limits.max_int_bits:,} bits")
    else:
        budget.charge(1)
    return value


def _counted(iterable: Iterable[Any], budget: Budget) -> Iterator[Any]:
    n = 0
    for item in iterable:
        n += 1
        if n & 255 == 0:
            budget.charge(256)
        yield item
    budget.charge(n & 255)


def guarded_iter(iterable: Any) -> Iterator[Any]:
    """Comprehension iteration: every item costs a unit."""
    if isinstance(iterable, Namespace) or callable(iterable):
        _fail(f"cannot iterate over {_type_name(iterable)}")
    return _counted(iterable, current_budget())


def _consume(iterable: Any, budget: Budget, weight: int = 1) -> Any:
    """An argument a C function will iterate: charge sized data up front, count the rest."""
    t = type(iterable)
    if t in _SIZED_TYPES or t is range or isinstance(iterable, _VIEW_TYPES):
        budget.charge(1 + len(iterable) * weight)
        return iterable
    if isinstance(iterable, Namespace) or callable(iterable):
        _fail(f"cannot iterate over {_type_name(iterable)}")
    return _counted(iterable, budget)


def _type_name(value: Any) -> str:
    if isinstance(value, Namespace):
        return f"'{value._name}'"
    return f"a value of type {type(value).__name__}"


def estimate_size(value: Any, budget: Budget, cap: int, indent: int = 0) -> int:
    """Characters of str()/JSON of `value`, stopping as soon as it passes `cap`.

    Walks iteratively, visiting shared references every time they occur (as str() would), so a
    YAML alias bomb is caught here instead of in a C call that cannot be interrupted."""
    total = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    max_depth = budget.limits.max_depth
    while stack:
        item, depth = stack.pop()
        budget.charge(1)
        if depth > max_depth:
            raise LimitExceeded(f"data nested deeper than {max_depth} levels")
        t = type(item)
        if t is str:
            total += len(item) + 2
        elif t is dict:
            total += 2 + len(item) * (4 + indent * (depth + 1))
            for k, v in item.items():
                stack.append((k, depth + 1))
                stack.append((v, depth + 1))
        elif t in (list, tuple, set, frozenset):
            total += 2 + len(item) * (2 + indent * (depth + 1))
            stack.extend((x, depth + 1) for x in item)
        elif t is int:
            total += 2 + (item.bit_length() * 3) // 10
        else:
            total += 32
        if total > cap:
            raise LimitExceeded(f"the text of this value would exceed {cap:,} characters")
    return total


# --- conversion of results to plain data ---------------------------------------------------------


def to_plain(value: Any, budget: Budget | None = None) -> Any:
    """Convert a result to JSON-like data: tuples → lists, sets → sorted lists, iterators → lists,
    datetimes → ISO 8601 strings, timedeltas → seconds, named tuples → dicts. Unchanged values are
    returned as they are (no copy)."""
    b = budget if budget is not None else current_budget()
    return _plain(value, b, 0)


_SCALARS = (str, int, bool, type(None))


def _plain(value: Any, budget: Budget, depth: int) -> Any:
    t = type(value)
    if t in _SCALARS:
        return value
    budget.charge(1)
    if depth > budget.limits.max_depth:
        raise LimitExceeded(f"result nested deeper than {budget.limits.max_depth} levels")
    if t is float:
        if value != value or value in (float("inf"), float("-inf")):
            _fail("the result holds NaN or infinity, which JSON cannot represent")
        return value
    if t is dict:
        budget.charge(len(value))
        changed = False
        out: dict[Any, Any] = {}
        for k, v in value.items():
            pk = _plain_key(k)
            pv = _plain(v, budget, depth + 1)
            changed = changed or pk is not k or pv is not v
            out[pk] = pv
        return out if changed else value
    if t is list:
        budget.charge(len(value))
        items = [_plain(v, budget, depth + 1) for v in value]
        if any(a is not b for a, b in zip(items, value, strict=True)):
            return items
        return value
    if t in (set, frozenset):
        try:
            ordered = sorted(value)
        except TypeError:
            _fail("a set result must hold values of one sortable type; use list(...) or sorted(...)")
        return [_plain(v, budget, depth + 1) for v in ordered]
    if isinstance(value, tuple):
        fields = getattr(value, "_fields", None)
        if isinstance(fields, tuple):
            return {f: _plain(v, budget, depth + 1) for f, v in zip(fields, value, strict=False)}
        return [_plain(v, budget, depth + 1) for v in value]
    if isinstance(value, _dt.datetime | _dt.date | _dt.time):
        return value.isoformat()
    if t is _dt.timedelta:
        return value.total_seconds()
    if isinstance(value, Mapping):
        return {_plain_key(k): _plain(v, budget, depth + 1) for k, v in value.items()}
    if isinstance(value, (range, *_VIEW_TYPES)) or t in _ITERATOR_TYPES:
        items = [_plain(v, budget, depth + 1) for v in _counted(value, budget)]
        return _check_result(items, budget)
    if isinstance(value, Namespace) or callable(value):
        _fail(f"the result is {_type_name(value)}, not data (missing a call or parentheses?)")
    if isinstance(value, _regex.Match):
        _fail("the result is a regex match object; use .group(), .groups() or match_regex()")
    _fail(f"the result has type {t.__name__}, which is not JSON-like data")


def _plain_key(key: Any) -> Any:
    t = type(key)
    if t is str or t is int or t is bool or key is None:
        return key
    if t is float:
        return key
    _fail(f"a dict key of type {t.__name__} cannot be returned; use a string key")


# --- attribute access and methods ----------------------------------------------------------------


class Namespace:
    """A restricted module (or class) in the sandbox: a fixed set of members, optionally callable."""

    __slots__ = ("_call", "_members", "_name")

    def __init__(self, name: str, members: Mapping[str, Any], call: Callable[..., Any] | None = None) -> None:
        self._name = name
        self._members = dict(members)
        self._call = call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._call is None:
            _fail(f"'{self._name}' is a module, not a function")
        current_budget().charge(1)
        return self._call(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<{self._name}>"

    def member(self, name: str) -> Any:
        try:
            return self._members[name]
        except KeyError:
            _fail(f"'{self._name}' has no member {name!r} (available: {', '.join(sorted(self._members))})")


def _method(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A method that costs a scan of its receiver and is capped on its result."""

    def call(obj: Any, *args: Any, **kwargs: Any) -> Any:
        b = current_budget()
        b.charge(1 + _cost(obj))
        return _check_result(fn(obj, *args, **kwargs), b)

    return call


def _str_replace(s: str, old: str, new: str, count: int = -1) -> str:
    b = current_budget()
    if type(old) is str and type(new) is str and type(count) is int:
        n = s.count(old) if old else len(s) + 1
        if count >= 0:
            n = min(n, count)
        size = len(s) + n * (len(new) - len(old))
        if size > b.limits.max_string_length:
            _too_big("str.replace's result", size, b.limits.max_string_length)
    return str.replace(s, old, new, count)


def _str_join(sep: str, items: Any) -> str:
    b = current_budget()
    parts = list(_consume(items, b))
    size = sum(len(p) if type(p) is str else 0 for p in parts) + len(sep) * max(0, len(parts) - 1)
    if size > b.limits.max_string_length:
        _too_big("str.join's result", size, b.limits.max_string_length)
    return str.join(sep, parts)


def _padded(fn: Callable[..., str]) -> Callable[..., str]:
    def call(s: str, width: Any, *args: Any) -> str:
        cap = current_budget().limits.max_string_length
        if type(width) is int and width > cap:
            _too_big(f"str.{fn.__name__}'s result", width, cap)
        return fn(s, width, *args)

    return call


def _expandtabs(s: str, tabsize: Any = 8) -> str:
    cap = current_budget().limits.max_string_length
    if type(tabsize) is int and tabsize > 0 and len(s) + s.count("\t") * tabsize > cap:
        _too_big("str.expandtabs's result", len(s) + s.count("\t") * tabsize, cap)
    return str.expandtabs(s, tabsize)


_STR_NAMES = [
    "capitalize",
    "casefold",
    "count",
    "endswith",
    "find",
    "index",
    "isalnum",
    "isalpha",
    "isascii",
    "isdecimal",
    "isdigit",
    "isidentifier",
    "islower",
    "isnumeric",
    "isprintable",
    "isspace",
    "istitle",
    "isupper",
    "lower",
    "lstrip",
    "partition",
    "removeprefix",
    "removesuffix",
    "rfind",
    "rindex",
    "rpartition",
    "rsplit",
    "rstrip",
    "split",
    "splitlines",
    "startswith",
    "strip",
    "swapcase",
    "title",
    "upper",
]

_METHODS: dict[type, dict[str, Callable[..., Any]]] = {
    str: {name: _method(getattr(str, name)) for name in _STR_NAMES}
    | {
        "replace": _method(_str_replace),
        "join": _method(_str_join),
        "center": _method(_padded(str.center)),
        "ljust": _method(_padded(str.ljust)),
        "rjust": _method(_padded(str.rjust)),
        "zfill": _method(_padded(str.zfill)),
        "expandtabs": _method(_expandtabs),
    },
    # Mutating methods are left out on purpose: scope data is shared with the engine.
    list: {n: _method(getattr(list, n)) for n in ("count", "index", "copy")},
    tuple: {n: _method(getattr(tuple, n)) for n in ("count", "index")},
    dict: {n: _method(getattr(dict, n)) for n in ("get", "items", "keys", "values", "copy")},
    set: {
        n: _method(getattr(set, n))
        for n in (
            [
                "union",
                "intersection",
                "difference",
                "symmetric_difference",
                "issubset",
                "issuperset",
                "isdisjoint",
                "copy",
            ]
        )
    },
    int: {n: _method(getattr(int, n)) for n in ("bit_length", "conjugate")},
    float: {n: _method(getattr(float, n)) for n in ("is_integer", "conjugate")},
    _dt.datetime: {
        n: _method(getattr(_dt.datetime, n))
        for n in [
            "isoformat",
            "strftime",
            "timestamp",
            "date",
            "time",
            "weekday",
            "isoweekday",
            "replace",
            "astimezone",
            "utcoffset",
            "tzname",
            "toordinal",
            "isocalendar",
        ]
    },
    _dt.date: {
        n: _method(getattr(_dt.date, n))
        for n in ["isoformat", "strftime", "weekday", "isoweekday", "replace", "toordinal", "isocalendar"]
    },
    _dt.time: {n: _method(getattr(_dt.time, n)) for n in ["isoformat", "strftime", "replace"]},
    _dt.timedelta: {"total_seconds": _method(_dt.timedelta.total_seconds)},
}

_MATCH_METHODS = {
    n: _method(getattr(_regex.Match, n))
    for n in ("group", "groups", "groupdict", "start", "end", "span", "captures")
}
_FIELDS: dict[type, frozenset[str]] = {
    int: frozenset({"real", "imag", "numerator", "denominator"}),
    float: frozenset({"real", "imag"}),
    _dt.datetime: frozenset(
        [
            "year",
            "month",
            "day",
            "hour",
            "minute",
            "second",
            "microsecond",
            "tzinfo",
            "fold",
        ]  # tzinfo: see below
    ),
    _dt.date: frozenset(["year", "month", "day"]),
    _dt.time: frozenset(["hour", "minute", "second", "microsecond"]),
    _dt.timedelta: frozenset(["days", "seconds", "microseconds"]),
    _urlparse.ParseResult: frozenset(
        [
            "scheme",
            "netloc",
            "path",
            "params",
            "query",
            "fragment",
            "username",
            "password",
            "hostname",
            "port",
        ]
    ),
    _urlparse.SplitResult: frozenset(
        ["scheme", "netloc", "path", "query", "fragment", "username", "password", "hostname", "port"]
    ),
}
_MATCH_FIELDS = frozenset({"string", "pos", "endpos", "lastindex", "lastgroup"})
_URL_METHODS = {"geturl": _method(_urlparse.ParseResult.geturl)}

#: Attribute names that are rejected when reading, whatever the object.
BLOCKED_ATTRIBUTES = frozenset(
    [
        "format",
        "format_map",
        "mro",
        "gi_frame",
        "gi_code",
        "gi_yieldfrom",
        "cr_frame",
        "cr_code",
        "cr_await",
        "ag_frame",
        "ag_code",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_back",
        "f_code",
        "tb_frame",
        "tb_next",
        "func_globals",
        "func_code",
        "co_code",
        "im_func",
        "im_self",
    ]
)


def guarded_getattr(obj: Any, name: str) -> Any:
    """`obj.name` in the sandbox: mapping keys, whitelisted fields, and methods (bound wrappers)."""
    t = type(obj)
    if t is dict:
        method = _METHODS[dict].get(name)
        if method is not None:
            return functools.partial(method, obj)
        try:
            return obj[name]
        except KeyError:
            keys = ", ".join(repr(k) for k in list(obj)[:10])
            _fail(f"no key {name!r} in this mapping (keys: {keys or 'none'})")
    if t is Namespace:
        return obj.member(name)
    table = _METHODS.get(t)
    if table is not None and name in table:
        return functools.partial(table[name], obj)
    fields = _FIELDS.get(t)
    if fields is not None and name in fields:
        value = getattr(obj, name)
        if name == "tzinfo":
            return None if value is None else str(value)
        return value
    if isinstance(obj, _regex.Match):
        if name in _MATCH_FIELDS:
            return getattr(obj, name)
        if name in _MATCH_METHODS:
            return functools.partial(_MATCH_METHODS[name], obj)
    if t in (_urlparse.ParseResult, _urlparse.SplitResult) and name == "geturl":
        return functools.partial(_URL_METHODS["geturl"], obj)
    if isinstance(obj, Mapping) and not name.startswith("_"):
        try:
            return obj[name]
        except KeyError:
            _fail(f"no key {name!r} in this mapping")
    _fail(f"{_type_name(obj)} has no attribute {name!r} available in expressions")


def guarded_callmethod(obj: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    """`obj.name(...)` without creating a bound method first (the hot path)."""
    table = _METHODS.get(type(obj))
    if table is not None:
        method = table.get(name)
        if method is not None:
            return method(obj, *args, **kwargs)
    func = guarded_getattr(obj, name)
    if not callable(func):
        _fail(f"{name!r} is {_type_name(func)}, which cannot be called")
    return func(*args, **kwargs)


def guarded_getitem(obj: Any, key: Any) -> Any:
    """`obj[key]` for templates (expressions use native subscripts for non-slices)."""
    if isinstance(key, slice):
        return guarded_slice(obj, key.start, key.stop, key.step)
    return obj[key]


def guarded_slice(obj: Any, lower: Any, upper: Any, step: Any) -> Any:
    b = current_budget()
    result = obj[lower:upper:step]
    return _check_result(result, b)


# --- operators -----------------------------------------------------------------------------------


def _numeric(a: Any, b: Any) -> bool:
    ta, tb = type(a), type(b)
    return (ta is int or ta is float or ta is bool) and (tb is int or tb is float or tb is bool)


def op_add(a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int:
        return a + b
    budget = current_budget()
    if type(a) in _SIZED_TYPES and type(b) in _SIZED_TYPES:
        n = len(a) + len(b)
        cap = budget.limits.max_string_length if type(a) is str else budget.limits.max_items
        if n > cap:
            _too_big("the sum", n, cap)
    return _check_result(a + b, budget)


def _repeat(seq: Any, n: int, budget: Budget) -> Any:
    size = len(seq) * max(n, 0)
    cap = budget.limits.max_string_length if type(seq) is str else budget.limits.max_items
    if size > cap:
        _too_big("the repetition", size, cap)
    return _check_result(seq * n, budget)


def op_mul(a: Any, b: Any) -> Any:
    ta, tb = type(a), type(b)
    budget = current_budget()
    if ta is int and tb is int:
        if a.bit_length() + b.bit_length() > budget.limits.max_int_bits:
            raise LimitExceeded(f"an integer would exceed {budget.limits.max_int_bits:,} bits")
        return a * b
    if ta in _SIZED_TYPES and (tb is int or tb is bool):
        return _repeat(a, int(b), budget)
    if tb in _SIZED_TYPES and (ta is int or ta is bool):
        return _repeat(b, int(a), budget)
    return _check_result(a * b, budget)


def op_pow(a: Any, b: Any, *mod: Any) -> Any:
    budget = current_budget()
    if type(a) is int and type(b) is int and b > 0 and not mod:
        bits = max(a.bit_length(), 1) - 1 if abs(a) in (1, 0) else a.bit_length()
        if bits * b > budget.limits.max_int_bits:
            raise LimitExceeded(
                f"{a} ** {b} would exceed {budget.limits.max_int_bits:,} bits (the limit on integers)"
            )
    result = a**b
    if type(result) is complex:
        _fail("complex numbers are not supported")
    return _check_result(result, budget)


def op_lshift(a: Any, b: Any) -> Any:
    budget = current_budget()
    if type(a) is int and type(b) is int and a and a.bit_length() + b > budget.limits.max_int_bits:
        raise LimitExceeded(f"an integer would exceed {budget.limits.max_int_bits:,} bits")
    return a << b


_PERCENT_SPEC = _regex.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", _regex.S)


def op_mod(a: Any, b: Any) -> Any:
    budget = current_budget()
    if type(a) is str:
        for m in _PERCENT_SPEC.finditer(a):
            for part in (m.group(1), m.group(2)):
                if part == "*":
                    _fail("'*' widths are not allowed in % formatting")
                if part and int(part) > budget.limits.max_format_width:
                    _too_big("a % format width", int(part), budget.limits.max_format_width)
        args = b if type(b) is tuple else (b,)
        for arg in args:
            if type(arg) not in _SCALARS and type(arg) is not float:
                estimate_size(arg, budget, budget.limits.max_string_length)
        return _check_result(a % b, budget)
    if not _numeric(a, b) and not (type(a) in (int, float) or type(b) in (int, float)):
        _fail(f"unsupported operand types for %: {type(a).__name__} and {type(b).__name__}")
    return _check_result(a % b, budget)


def _simple_op(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def op(a: Any, b: Any) -> Any:
        if type(a) is int and type(b) is int:
            return fn(a, b)
        return _check_result(fn(a, b), current_budget())

    op.__name__ = fn.__name__
    return op


def _sub(a: Any, b: Any) -> Any:
    return a - b


def _truediv(a: Any, b: Any) -> Any:
    return a / b


def _floordiv(a: Any, b: Any) -> Any:
    return a // b


def _rshift(a: Any, b: Any) -> Any:
    return a >> b


def _or(a: Any, b: Any) -> Any:
    return a | b


def _and(a: Any, b: Any) -> Any:
    return a & b


def _xor(a: Any, b: Any) -> Any:
    return a ^ b


op_sub = _simple_op(_sub)
op_truediv = _simple_op(_truediv)
op_floordiv = _simple_op(_floordiv)
op_rshift = _simple_op(_rshift)
op_or = _simple_op(_or)
op_and = _simple_op(_and)
op_xor = _simple_op(_xor)


def operand(value: Any) -> Any:
    """A comparison operand: charge the linear scan `in` / `==` may make over it."""
    t = type(value)
    if t is str:
        if len(value) > 256:
            current_budget().charge(len(value) >> 4)
    elif (t is list or t is tuple) and len(value) > 16:
        current_budget().charge(len(value))
    return value


def unpack(value: Any) -> Any:
    """`*x` / `**x` in calls and displays: the copy costs its length."""
    return _consume(value, current_budget())


_FORMAT_SPEC = _regex.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?[a-zA-Z%]?")


def format_value(value: Any, conversion: int, spec: str) -> str:
    """One `{value!conversion:spec}` of an f-string."""
    budget = current_budget()
    if conversion == 114:  # !r
        value = safe_repr(value)
    elif conversion in (115, 97):  # !s, !a
        value = safe_str(value)
    if not spec:
        return value if type(value) is str else safe_str(value)
    if not isinstance(value, int | float | str | _dt.date | _dt.time | _dt.datetime):
        _fail(f"a format spec applies to numbers, strings and dates, not {type(value).__name__}")
    if not isinstance(value, _dt.date | _dt.time):
        m = _FORMAT_SPEC.fullmatch(spec)
        if m is None:
            _fail(f"invalid format spec {spec!r}")
        for part in m.groups():
            if part and int(part) > budget.limits.max_format_width:
                _too_big("a format width", int(part), budget.limits.max_format_width)
    elif len(spec) > 200:
        _fail("date format spec too long")
    return str(_check_result(format(value, spec), budget))


def join_fstring(*parts: str) -> str:
    return _check_result("".join(parts), current_budget())  # type: ignore[no-any-return]


# --- built-in functions --------------------------------------------------------------------------


def safe_str(value: Any = "") -> str:
    """`str(x)`: containers are measured before they are printed."""
    t = type(value)
    if t is str:
        return value  # type: ignore[no-any-return]
    budget = current_budget()
    if t not in _SCALARS and t is not float:
        estimate_size(value, budget, budget.limits.max_string_length)
    return _check_result(str(value), budget)  # type: ignore[no-any-return]


def safe_repr(value: Any) -> str:
    budget = current_budget()
    estimate_size(value, budget, budget.limits.max_string_length)
    return _check_result(repr(value), budget)  # type: ignore[no-any-return]


def _collection(kind: type) -> Callable[..., Any]:
    def make(*args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        if args:
            args = (_consume(args[0], budget), *args[1:])
        return _check_result(kind(*args, **kwargs), budget)

    make.__name__ = kind.__name__
    return make


def _lazy(fn: Callable[..., Any]) -> Callable[..., Any]:
    """map/zip/enumerate/filter/reversed: charge their iterables as they are consumed."""

    def make(*args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.charge(1)
        if fn is map or fn is filter:
            return fn(args[0], *(_consume(a, budget) for a in args[1:]))
        if fn is reversed:
            return fn(args[0]) if type(args[0]) is range else _counted(fn(_consume(args[0], budget)), budget)
        return fn(*(_consume(a, budget) for a in args), **kwargs)

    make.__name__ = getattr(fn, "__name__", "function")
    return make


def _consuming(fn: Callable[..., Any], weight: int = 1) -> Callable[..., Any]:
    """sum/min/max/any/all/sorted/statistics: charge the iterable they walk in C."""

    def call(*args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        if len(args) == 1:
            args = (_consume(args[0], budget, weight),)
        else:
            budget.charge(len(args))
        return _check_result(fn(*args, **kwargs), budget)

    call.__name__ = getattr(fn, "__name__", "function")
    return call


def safe_sum(iterable: Any, start: Any = 0) -> Any:
    if type(start) not in (int, float, bool):
        _fail("sum() adds numbers; to join strings use ''.join(...), to join lists use a comprehension")
    budget = current_budget()
    return _check_result(sum(_consume(iterable, budget), start), budget)


def safe_range(*args: Any) -> range:
    budget = current_budget()
    r = range(*args)
    if len(r) > budget.limits.max_items:
        _too_big("range()", len(r), budget.limits.max_items)
    budget.charge(1)
    return r


def safe_round(number: Any, ndigits: Any = None) -> Any:
    if ndigits is None:
        return round(number)
    if type(ndigits) is not int or abs(ndigits) > 400:
        _fail("round() takes ndigits between -400 and 400")
    return round(number, ndigits)


def safe_reduce(function: Any, iterable: Any, *initial: Any) -> Any:
    budget = current_budget()
    return _check_result(functools.reduce(function, _consume(iterable, budget), *initial), budget)


def safe_hasattr(obj: Any, name: Any) -> bool:
    if type(name) is not str or name.startswith("_") or name in BLOCKED_ATTRIBUTES:
        return False
    try:
        guarded_getattr(obj, name)
    except EvaluationError:
        return False
    return True


def safe_int(*args: Any) -> int:
    return int(*args)


# --- helper functions and modules ---------------------------------------------------------------


def _text_arg(value: Any, what: str, cap: int | None = None) -> str:
    if type(value) is not str:
        _fail(f"{what} takes a string, not {type(value).__name__}")
    budget = current_budget()
    limit = cap if cap is not None else budget.limits.max_string_length
    if len(value) > limit:
        _too_big(f"{what}'s input", len(value), limit)
    budget.charge(1 + (len(value) >> 3))
    return value


def load_json(s: Any) -> Any:
    text = _text_arg(s, "load_json")
    try:
        return _json.loads(text)
    except RecursionError:
        raise LimitExceeded("JSON nested too deeply") from None
    except ValueError as exc:
        _fail(f"invalid JSON: {exc}")


def dump_json(obj: Any, indent: Any = None, sort_keys: bool = False, ensure_ascii: bool = False) -> str:
    budget = current_budget()
    if indent is not None and (type(indent) is not int or not 0 <= indent <= 8):
        _fail("dump_json's indent must be an integer from 0 to 8")
    data = to_plain(obj, budget)
    estimate_size(data, budget, budget.limits.max_string_length, indent or 0)
    text = _json.dumps(data, indent=indent, sort_keys=bool(sort_keys), ensure_ascii=bool(ensure_ascii))
    return _check_result(text, budget)  # type: ignore[no-any-return]


_YAML_LOADER: Any = getattr(_yaml, "CSafeLoader", _yaml.SafeLoader)
_YAML_DUMPER: Any = getattr(_yaml, "CSafeDumper", _yaml.SafeDumper)


def load_yaml(s: Any) -> Any:
    """YAML with the safe loader only: `!!python/...` tags are errors, not objects."""
    text = _text_arg(s, "load_yaml")
    try:
        return _yaml.load(text, Loader=_YAML_LOADER)
    except RecursionError:
        raise LimitExceeded("YAML nested too deeply") from None
    except _yaml.YAMLError as exc:
        _fail(f"invalid YAML: {exc}")


def dump_yaml(obj: Any, sort_keys: bool = False) -> str:
    budget = current_budget()
    data = to_plain(obj, budget)
    estimate_size(data, budget, budget.limits.max_string_length // 2, 2)
    text = _yaml.dump(
        data, Dumper=_YAML_DUMPER, sort_keys=bool(sort_keys), allow_unicode=True, default_flow_style=False
    )
    return _check_result(text, budget)  # type: ignore[no-any-return]


_FENCE = _regex.compile(r"```(?:json)?[ \t]*\n?(.*?)```", _regex.S | _regex.I)


def extract_json(s: Any) -> Any:
    """JSON, taken from a ```json (or ```) code fence when there is one."""
    text = _text_arg(s, "extract_json")
    start = text.find("```")
    if start >= 0:
        m = _FENCE.search(text, start)
        if m is None:
            _fail("extract_json: a code fence is opened but never closed")
        text = m.group(1)
    return load_json(text.strip())


def _regex_call(name: str, pattern: Any, string: Any, *args: Any, **kwargs: Any) -> Any:
    budget = current_budget()
    if type(pattern) is not str:
        _fail(f"re.{name}: the pattern must be a string")
    if len(pattern) > budget.limits.max_regex_length:
        _too_big("a regex pattern", len(pattern), budget.limits.max_regex_length)
    if string is not None:
        _text_arg(string, f"re.{name}")
    flags = kwargs.pop("flags", 0)
    if kwargs:
        _fail(f"re.{name} takes no keyword arguments but flags")
    if type(flags) is not int:
        _fail("regex flags must be an integer")
    timeout = min(budget.limits.regex_timeout, budget.remaining_seconds())
    fn = getattr(_regex, name)
    call_args = args if string is None else (string, *args)
    try:
        result = fn(pattern, *call_args, flags=flags, timeout=timeout)
        if name == "finditer":
            result = list(_counted(result, budget))
    except TimeoutError:
        raise LimitExceeded(f"regex took longer than {timeout:.3g} s: {pattern!r}") from None
    except _regex.error as exc:
        _fail(f"invalid regex {pattern!r}: {exc}")
    return _check_result(result, budget)


def _regex_fn(name: str) -> Callable[..., Any]:
    def call(pattern: Any, string: Any, *args: Any, **kwargs: Any) -> Any:
        return _regex_call(name, pattern, string, *args, **kwargs)

    call.__name__ = name
    return call


def _regex_sub(name: str) -> Callable[..., Any]:
    """sub/subn: a replacement template is expanded per match so the output is charged as it
    grows (`re.sub('', 'x' * 10**5, s)` would otherwise be built in one C call)."""

    def call(pattern: Any, repl: Any, string: Any, count: Any = 0, flags: Any = 0) -> Any:
        budget = current_budget()
        cap = budget.limits.max_string_length
        total = [0]

        def expand(match: Any) -> str:
            out = match.expand(repl) if type(repl) is str else repl(match)
            if type(out) is not str:
                _fail(f"re.{name}: the replacement must produce a string")
            total[0] += len(out)
            if total[0] > cap:
                _too_big(f"re.{name}'s result", total[0], cap)
            budget.charge(1 + (len(out) >> 3))
            return out

        if type(repl) is not str and not callable(repl):
            _fail(f"re.{name}: the replacement must be a string")
        _text_arg(string, f"re.{name}")
        return _regex_call(name, pattern, None, expand, string, count, flags=flags)

    call.__name__ = name
    return call


def _regex_module() -> Namespace:
    def escape(s: Any) -> str:
        return _check_result(_regex.escape(_text_arg(s, "re.escape")), current_budget())  # type: ignore[no-any-return]

    def split(pattern: Any, string: Any, maxsplit: Any = 0, flags: Any = 0) -> Any:
        return _regex_call("split", pattern, string, maxsplit, flags=flags)

    members: dict[str, Any] = {
        n: _regex_fn(n) for n in ("fullmatch", "search", "findall", "finditer", "match")
    }
    members |= {"sub": _regex_sub("sub"), "subn": _regex_sub("subn"), "split": split, "escape": escape}
    for flag in ("IGNORECASE", "I", "MULTILINE", "M", "DOTALL", "S", "VERBOSE", "X", "ASCII", "A"):
        members[flag] = int(getattr(_regex, flag))
    return Namespace("re", members)


def search_regex(pattern: Any, string: Any) -> Any:
    return _regex_call("search", pattern, string)


def match_regex(pattern: Any, string: Any) -> bool:
    return _regex_call("fullmatch", pattern, string) is not None


def markdown_to_html(md: Any) -> str:
    import markdown as _markdown  # type: ignore[import-untyped]  # slow to import; only when used

    text = _text_arg(md, "markdown_to_html", current_budget().limits.max_markup_length)
    return _check_result(_markdown.markdown(text), current_budget())  # type: ignore[no-any-return]


def html_to_markdown(html: Any) -> str:
    import markdownify as _markdownify  # no stubs

    text = _text_arg(html, "html_to_markdown", current_budget().limits.max_markup_length)
    return _check_result(_markdownify.markdownify(text), current_budget())  # type: ignore[no-any-return]


def _b64encode(s: Any) -> str:
    text = _text_arg(s, "base64.b64encode")
    return _check_result(_base64.b64encode(text.encode()).decode("ascii"), current_budget())  # type: ignore[no-any-return]


def _b64decode(s: Any) -> str:
    text = _text_arg(s, "base64.b64decode")
    try:
        return _base64.b64decode(text.encode("ascii"), validate=False).decode("utf-8")
    except (ValueError, UnicodeError) as exc:
        _fail(f"base64.b64decode: {exc}")


def _population(seq: Any) -> Any:
    budget = current_budget()
    if type(seq) not in (list, tuple, str, range):
        _fail("random.choice/sample take a list, tuple, string or range")
    if len(seq) > budget.limits.max_sample_population:
        _too_big("a random population", len(seq), budget.limits.max_sample_population)
    budget.charge(1 + len(seq))
    return seq


def _choice(seq: Any) -> Any:
    return _random.choice(_population(seq))


def _sample(seq: Any, k: Any) -> Any:
    return _random.sample(_population(seq), k)


def _randint(a: Any, b: Any) -> int:
    if type(a) is not int or type(b) is not int or a.bit_length() > 256 or b.bit_length() > 256:
        _fail("random.randint takes integers of at most 256 bits")
    return _random.randint(a, b)


def _csv_rows(s: Any, kwargs: dict[str, Any]) -> tuple[io.StringIO, dict[str, Any]]:
    text = _text_arg(s, "csv.reader")
    allowed = {"dialect", "delimiter", "quotechar", "escapechar", "doublequote", "skipinitialspace"}
    allowed |= {"lineterminator", "quoting", "strict", "fieldnames", "restkey", "restval"}
    bad = set(kwargs) - allowed
    if bad:
        _fail(f"csv: unsupported arguments {sorted(bad)}")
    return io.StringIO(text), kwargs


def _csv_reader(s: Any, **kwargs: Any) -> list[list[str]]:
    budget = current_budget()
    f, kw = _csv_rows(s, kwargs)
    try:
        return _check_result(list(_counted(_csv.reader(f, **kw), budget)), budget)  # type: ignore[no-any-return]
    except _csv.Error as exc:
        _fail(f"csv: {exc}")


def _csv_dictreader(s: Any, **kwargs: Any) -> list[dict[str, Any]]:
    budget = current_budget()
    f, kw = _csv_rows(s, kwargs)
    try:
        return _check_result(list(_counted(_csv.DictReader(f, **kw), budget)), budget)  # type: ignore[no-any-return]
    except _csv.Error as exc:
        _fail(f"csv: {exc}")


def _time_strftime(fmt: Any, t: Any = None) -> str:
    text = _text_arg(fmt, "time.strftime", 1000)
    return _time.strftime(text) if t is None else _time.strftime(text, tuple(t))


def _dt_namespace() -> Namespace:
    utc = _dt.UTC

    def now(tz: Any = None) -> _dt.datetime:
        return _dt.datetime.now(utc)

    datetime_ns = Namespace(
        "datetime.datetime",
        {
            "now": now,
            "utcnow": now,
            "fromisoformat": _dt.datetime.fromisoformat,
            "fromtimestamp": lambda ts, tz=None: _dt.datetime.fromtimestamp(ts, utc),
            "strptime": lambda s, fmt: _dt.datetime.strptime(
                _text_arg(s, "strptime", 1000), _text_arg(fmt, "strptime", 1000)
            ),
            "combine": _dt.datetime.combine,
        },
        _dt.datetime,
    )
    date_ns = Namespace(
        "datetime.date",
        {"today": lambda: now().date(), "fromisoformat": _dt.date.fromisoformat},
        _dt.date,
    )
    return Namespace(
        "datetime",
        {
            "now": now,
            "datetime": datetime_ns,
            "date": date_ns,
            "time": Namespace("datetime.time", {}, _dt.time),
            "timedelta": Namespace("datetime.timedelta", {}, _dt.timedelta),
            "timezone": Namespace("datetime.timezone", {"utc": utc}),
            "UTC": utc,
        },
    )


_MATH_NAMES = [
    "sqrt",
    "exp",
    "ceil",
    "floor",
    "isinf",
    "isnan",
    "log",
    "log10",
    "log2",
    "pow",
    "sin",
    "cos",
    "tan",
    "asin",
    "acos",
    "atan",
    "atan2",
    "pi",
    "e",
]
_STATS_NAMES = ["mean", "stdev", "geometric_mean", "median", "median_low", "median_high", "mode", "quantiles"]
_STRING_NAMES = [
    "ascii_letters",
    "ascii_lowercase",
    "ascii_uppercase",
    "digits",
    "hexdigits",
    "octdigits",
    "punctuation",
    "whitespace",
    "printable",
]


def _urlencode(query: Any, doseq: bool = False) -> str:
    budget = current_budget()
    estimate_size(query, budget, budget.limits.max_string_length // 3)
    return _check_result(_urlparse.urlencode(query, doseq=bool(doseq)), budget)  # type: ignore[no-any-return]


def _url_text(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    def call(s: Any, *args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        _text_arg(s, f"urllib.parse.{name}")
        if name in ("parse_qs", "parse_qsl"):
            kwargs["max_num_fields"] = min(int(kwargs.get("max_num_fields") or 10_000), 10_000)
        return _check_result(fn(s, *args, **kwargs), budget)

    call.__name__ = name
    return call


def _modules() -> dict[str, Namespace]:
    url_names = ("urlparse", "unquote", "quote", "parse_qs", "parse_qsl", "urlsplit")
    parse = Namespace(
        "urllib.parse",
        {n: _url_text(getattr(_urlparse, n), n) for n in url_names} | {"urlencode": _urlencode},
    )
    return {
        "re": _regex_module(),
        "json": Namespace("json", {"loads": load_json, "dumps": dump_json}),
        "yaml": Namespace(
            "yaml", {"load": load_yaml, "safe_load": load_yaml, "dump": dump_yaml, "safe_dump": dump_yaml}
        ),
        "string": Namespace("string", {n: getattr(_string, n) for n in _STRING_NAMES}),
        "datetime": _dt_namespace(),
        "math": Namespace(
            "math",
            {n: getattr(_math, n) for n in _MATH_NAMES},
        ),
        "statistics": Namespace(
            "statistics", {n: _consuming(getattr(_statistics, n), 10) for n in _STATS_NAMES}
        ),
        "base64": Namespace("base64", {"b64encode": _b64encode, "b64decode": _b64decode}),
        "urllib": Namespace("urllib", {"parse": parse}),
        "random": Namespace(
            "random", {"choice": _choice, "sample": _sample, "randint": _randint, "random": _random.random}
        ),
        "time": Namespace(
            "time",
            {
                "strftime": _time_strftime,
                "strptime": lambda s, fmt="%a %b %d %H:%M:%S %Y": _time.strptime(
                    _text_arg(s, "time.strptime", 1000), _text_arg(fmt, "time.strptime", 1000)
                ),
                "time": _time.time,
            },
        ),
        "csv": Namespace(
            "csv",
            {
                "reader": _csv_reader,
                "DictReader": _csv_dictreader,
                "list_dialects": _csv.list_dialects,
                "excel": "excel",
                "excel_tab": "excel-tab",
                "unix_dialect": "unix",
                "QUOTE_ALL": _csv.QUOTE_ALL,
                "QUOTE_MINIMAL": _csv.QUOTE_MINIMAL,
                "QUOTE_NONE": _csv.QUOTE_NONE,
                "QUOTE_NONNUMERIC": _csv.QUOTE_NONNUMERIC,
            },
        ),
    }


CONSTANTS: dict[str, Any] = {"true": True, "false": False, "null": None, "NEWLINE": "\n"}

#: Every name an expression or template can use besides its scope.
BUILTINS: dict[str, Any] = {
    # Julep's built-ins (JULEP-SPEC 3.4)
    "abs": abs,
    "all": _consuming(all),
    "any": _consuming(any),
    "bool": bool,
    "dict": _collection(dict),
    "enumerate": _lazy(enumerate),
    "float": float,
    "int": safe_int,
    "len": len,
    "list": _collection(list),
    "map": _lazy(map),
    "max": _consuming(max),
    "min": _consuming(min),
    "round": safe_round,
    "set": _collection(set),
    "str": safe_str,
    "sum": safe_sum,
    "tuple": _collection(tuple),
    "zip": _lazy(zip),
    "reduce": safe_reduce,
    "range": safe_range,
    # ours: common and harmless
    "sorted": _consuming(sorted, 2),
    "reversed": _lazy(reversed),
    "filter": _lazy(filter),
    "hasattr": safe_hasattr,
    # Julep's helpers (nlp, chunk_doc and humanize_text_alpha are not provided)
    "load_json": load_json,
    "dump_json": dump_json,
    "load_yaml": load_yaml,
    "dump_yaml": dump_yaml,
    "extract_json": extract_json,
    "search_regex": search_regex,
    "match_regex": match_regex,
    "markdown_to_html": markdown_to_html,
    "html_to_markdown": html_to_markdown,
    **_modules(),
    **CONSTANTS,
}
BUILTIN_NAMES: frozenset[str] = frozenset(BUILTINS)

#: Helpers the expression compiler routes operations through (names users cannot write).
RUNTIME: dict[str, Any] = {
    "__ml_getattr": guarded_getattr,
    "__ml_callmethod": guarded_callmethod,
    "__ml_slice": guarded_slice,
    "__ml_iter": guarded_iter,
    "__ml_operand": operand,
    "__ml_unpack": unpack,
    "__ml_format": format_value,
    "__ml_fstring": join_fstring,
    "__ml_add": op_add,
    "__ml_sub": op_sub,
    "__ml_mul": op_mul,
    "__ml_truediv": op_truediv,
    "__ml_floordiv": op_floordiv,
    "__ml_mod": op_mod,
    "__ml_pow": op_pow,
    "__ml_lshift": op_lshift,
    "__ml_rshift": op_rshift,
    "__ml_or": op_or,
    "__ml_and": op_and,
    "__ml_xor": op_xor,
}

_VIEW_TYPES: tuple[type, ...] = (type({}.keys()), type({}.values()), type({}.items()))
_ITERATOR_SAMPLES: tuple[object, ...] = (
    map(abs, []),
    zip(),
    enumerate([]),
    filter(None, []),
    reversed([]),
    iter([]),
    iter(()),
    iter(range(0)),
    iter(()),
)
_ITERATOR_TYPES: frozenset[type] = frozenset(
    {*(type(x) for x in _ITERATOR_SAMPLES), type(_counted([], Budget(DEFAULT_LIMITS)))}
)
