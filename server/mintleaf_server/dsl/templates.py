"""Sandboxed Jinja templates with the expression library as globals and the same budget.

Design note. We use `ImmutableSandboxedEnvironment` (no dunder or internal attributes, no mutation
of lists/dicts/sets) and tighten it where Jinja alone would let a template exhaust the process:
- attribute access goes through the expression guards (same dict-key reading, same method tables,
  so `format`/`format_map` are unavailable, as in expressions);
- `+ - * / // % **` and `~` go through the guarded operators; every `{% for %}` iterable is
  wrapped by a counting iterator; every call charges the budget; the output is counted as it is
  produced; only a reviewed subset of filters is available, with size-taking ones pre-checked;
- `{% include %}`, `{% import %}`, `{% extends %}` and recursive loops are rejected when read.
Jinja's default globals (`range`, `dict`, `lipsum`, `cycler`, `joiner`, `namespace`) are replaced
by the expression library. Rejected: Julep's rewrite of templates into f-strings (breaks on literal
braces, no `{% for %}`), and a plain `SandboxedEnvironment` (no CPU or size bound).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError
from jinja2.filters import FILTERS
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from mintleaf_server.dsl.errors import EvaluationError, LimitExceeded, ReadError
from mintleaf_server.dsl.library import (
    BLOCKED_ATTRIBUTES,
    BUILTIN_NAMES,
    BUILTINS,
    Limits,
    Namespace,
    current_budget,
    dump_json,
    get_default_limits,
    guarded_getattr,
    guarded_iter,
    op_add,
    op_floordiv,
    op_mod,
    op_mul,
    op_pow,
    op_sub,
    op_truediv,
    pop_budget,
    push_budget,
    safe_round,
    safe_str,
    safe_sum,
)
from mintleaf_server.dsl.library import _check_result as check_result
from mintleaf_server.dsl.library import _cost as cost
from mintleaf_server.dsl.library import _padded as padded
from mintleaf_server.dsl.library import _str_replace as str_replace

__all__ = ["MAX_TEMPLATE_LENGTH", "CompiledTemplate", "compile_template"]

MAX_TEMPLATE_LENGTH = 100_000  # characters of template source

# Types whose attributes follow the expression rules; Jinja's own objects (loop, macros) keep the
# sandbox's rules.
_DATA_TYPES = (dict, list, tuple, str, int, float, set, frozenset, Namespace)


def _guard_filter(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)  # keeps jinja_pass_arg (pass_environment / pass_eval_context)
    def call(*args: Any, **kwargs: Any) -> Any:
        budget = current_budget()
        budget.charge(1 + sum(cost(a) for a in args[:2]))
        return check_result(fn(*args, **kwargs), budget)

    return call


def _join(value: Any, d: Any = "", attribute: Any = None) -> str:
    budget = current_budget()
    items = [x for x in guarded_iter(value)]
    if attribute is not None:
        items = [guarded_getattr(x, str(attribute)) for x in items]
    parts = [safe_str(x) for x in items]
    return str(check_result(str(d).join(parts), budget))


def _indent(s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> str:
    text = str(s)
    pad = len(width) if isinstance(width, str) else width
    cap = current_budget().limits.max_string_length
    if not isinstance(pad, int) or len(text) + (text.count("\n") + 1) * pad > cap:
        raise LimitExceeded("indent's result would exceed the string size limit")
    return str(check_result(FILTERS["indent"](text, width, first, blank), current_budget()))


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    if args and kwargs:
        raise EvaluationError("format takes positional or keyword arguments, not both")
    return str(op_mod(str(value), kwargs or (args if len(args) != 1 else args[0])))


def _round(value: Any, precision: Any = 0, method: str = "common") -> Any:
    if method != "common":
        raise EvaluationError("round: only method='common' is available")
    return safe_round(float(value), precision)


def _sum(iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    if attribute is not None:
        iterable = [guarded_getattr(x, str(attribute)) for x in guarded_iter(iterable)]
    return safe_sum(iterable, start)


def _concat(parts: list[Any]) -> str:
    return str(check_result("".join(safe_str(p) for p in parts), current_budget()))


_SIMPLE_FILTERS = [
    "abs",
    "capitalize",
    "default",
    "d",
    "dictsort",
    "first",
    "float",
    "int",
    "last",
    "length",
    "count",
    "lower",
    "upper",
    "map",
    "max",
    "min",
    "reject",
    "rejectattr",
    "select",
    "selectattr",
    "reverse",
    "sort",
    "title",
    "trim",
    "truncate",
    "unique",
    "wordcount",
    "items",
    "attr",
    "list",
    "filesizeformat",
    "urlencode",
    "e",
    "escape",
    "safe",
]

_FILTERS: dict[str, Callable[..., Any]] = {name: _guard_filter(FILTERS[name]) for name in _SIMPLE_FILTERS}
_FILTERS |= {
    "join": _join,
    "replace": lambda s, old, new, count=None: str_replace(
        str(s), str(old), str(new), -1 if count is None else int(count)
    ),
    "center": lambda s, width=80: padded(str.center)(str(s), width),
    "indent": _indent,
    "format": _format,
    "round": _round,
    "sum": _sum,
    "string": safe_str,
    "tojson": lambda value, indent=None: dump_json(value, indent=indent),
    "__ml_iter": guarded_iter,
    "__ml_concat": _concat,
}


class _Guards(NodeTransformer):
    """Count `{% for %}` iterations and route `~` through the size-checked concatenation."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, "__ml_iter", [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(
            nodes.List(node.nodes, lineno=node.lineno), "__ml_concat", [], [], None, None, lineno=node.lineno
        )


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def __init__(self) -> None:
        super().__init__(
            autoescape=False,
            trim_blocks=True,
            lstrip_blocks=True,
            undefined=jinja2.StrictUndefined,
            finalize=safe_str,
            cache_size=0,
            auto_reload=False,
        )
        self.globals.clear()
        self.globals.update(BUILTINS)
        self.filters = dict(_FILTERS)
        self.binop_table = {
            "+": op_add,
            "-": op_sub,
            "*": op_mul,
            "/": op_truediv,
            "//": op_floordiv,
            "%": op_mod,
            "**": op_pow,
        }

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return attr not in BLOCKED_ATTRIBUTES and super().is_safe_attribute(obj, attr, value)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, _DATA_TYPES) or type(obj).__module__ in ("datetime", "urllib.parse"):
            if attribute.startswith("_") or attribute in BLOCKED_ATTRIBUTES:
                return self.unsafe_undefined(obj, attribute)
            try:
                return guarded_getattr(obj, attribute)
            except EvaluationError as exc:
                return self.undefined(str(exc), obj=obj, name=attribute)
        if attribute in BLOCKED_ATTRIBUTES:
            return self.unsafe_undefined(obj, attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        try:
            return obj[argument]
        except (TypeError, LookupError):
            if isinstance(argument, str):
                return self.getattr(obj, argument)
        return self.undefined(obj=obj, name=argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        current_budget().charge(1)
        return super().call(__context, __obj, *args, **kwargs)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        result: nodes.Template = _Guards().visit(tree)
        return result


_ENV = _Environment()


def _check_tree(tree: nodes.Template) -> None:
    for node in tree.find_all((nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)):
        raise ReadError(f"{type(node).__name__.lower()} is not available in templates (line {node.lineno})")
    for loop in tree.find_all(nodes.For):
        if loop.recursive:
            raise ReadError(f"recursive loops are not available in templates (line {loop.lineno})")
    for getattr_node in tree.find_all(nodes.Getattr):
        _check_attribute(getattr_node.attr, getattr_node.lineno)
    for getitem in tree.find_all(nodes.Getitem):
        arg = getitem.arg
        if isinstance(arg, nodes.Const) and isinstance(arg.value, str) and arg.value.startswith("_"):
            _check_attribute(arg.value, getitem.lineno)


def _check_attribute(attr: str, line: int) -> None:
    if attr.startswith("_"):
        kind = "dunder" if attr.startswith("__") else "private"
        raise ReadError(
            f"unsafe attribute {attr!r} in template (line {line}): {kind} attributes are not allowed"
        )
    if attr in BLOCKED_ATTRIBUTES:
        raise ReadError(f"unsafe attribute {attr!r} in template (line {line}) is not allowed")


def _short(source: str, limit: int = 120) -> str:
    return repr(source if len(source) <= limit else source[:limit] + "…")


class CompiledTemplate:
    """A checked, compiled template."""

    __slots__ = ("_template", "source")

    def __init__(self, source: str, template: jinja2.Template) -> None:
        self.source = source
        self._template = template

    def render(self, scope: Mapping[str, Any], limits: Limits | None = None) -> str:
        """Render with `scope`; raise EvaluationError or LimitExceeded."""
        budget, previous = push_budget(limits if limits is not None else get_default_limits())
        cap = budget.limits.max_string_length
        try:
            out: list[str] = []
            total = 0
            for chunk in self._template.generate(dict(scope)):
                total += len(chunk)
                if total > cap:
                    raise LimitExceeded(f"template output would exceed {cap:,} characters")
                budget.charge(1 + (len(chunk) >> 3))
                out.append(chunk)
            return "".join(out)
        except LimitExceeded as exc:
            raise LimitExceeded(f"{exc}, in template {_short(self.source)}", self.source) from exc
        except SecurityError as exc:
            raise EvaluationError(
                f"unsafe operation: {exc}, in template {_short(self.source)}", self.source
            ) from exc
        except EvaluationError as exc:
            raise EvaluationError(f"{exc}, in template {_short(self.source)}", self.source) from exc
        except (RecursionError, MemoryError) as exc:
            raise LimitExceeded(
                f"rendering ran out of {'stack' if isinstance(exc, RecursionError) else 'memory'}"
                f", in template {_short(self.source)}",
                self.source,
            ) from exc
        except TemplateError as exc:
            raise EvaluationError(
                f"{exc.message or exc}, in template {_short(self.source)}", self.source
            ) from exc
        except Exception as exc:
            raise EvaluationError(
                f"{type(exc).__name__}: {exc}, in template {_short(self.source)}", self.source
            ) from exc
        finally:
            pop_budget(previous)


def compile_template(source: str, names: frozenset[str]) -> tuple[CompiledTemplate, frozenset[str]]:
    """Check and compile a template; returns it and the scope names it uses.

    Raises ReadError for syntax errors, unsafe constructs and unknown names."""
    if len(source) > MAX_TEMPLATE_LENGTH:
        raise ReadError(f"template longer than {MAX_TEMPLATE_LENGTH:,} characters")
    try:
        tree = _ENV.parse(source)
    except TemplateSyntaxError as exc:
        raise ReadError(f"invalid template (line {exc.lineno}): {exc.message}: {_short(source)}") from exc
    except (RecursionError, MemoryError) as exc:
        raise ReadError(f"template nested too deeply: {_short(source)}") from exc
    _check_tree(tree)
    try:
        undeclared = meta.find_undeclared_variables(tree)
    except TemplateSyntaxError as exc:  # e.g. an unknown filter
        raise ReadError(f"invalid template (line {exc.lineno}): {exc.message}: {_short(source)}") from exc
    unknown = sorted(undeclared - names - BUILTIN_NAMES)
    if unknown:
        quoted = ", ".join(repr(n) for n in unknown)
        raise ReadError(
            f"unknown name{'s' if len(unknown) > 1 else ''} {quoted} in template {_short(source)}"
        )
    try:
        with warnings.catch_warnings():  # Python's compile warns on `0[:1]`: a mistake, reported
            warnings.simplefilter("error", SyntaxWarning)
            template = _ENV.from_string(tree)
    except TemplateSyntaxError as exc:
        raise ReadError(f"invalid template (line {exc.lineno}): {exc.message}: {_short(source)}") from exc
    except SyntaxError as exc:
        raise ReadError(f"invalid template: {exc.msg}: {_short(source)}") from exc
    except (RecursionError, MemoryError) as exc:
        raise ReadError(f"template nested too deeply: {_short(source)}") from exc
    return CompiledTemplate(source, template), frozenset(undeclared & names)
