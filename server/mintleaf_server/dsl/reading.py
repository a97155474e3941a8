"""How a string in a task is read: a Python expression, a Jinja template, or plain text.

The rules (issue 4; user documentation in docs/expressions.md), applied in this order:
5. raw newlines that YAML put inside a Python string literal are read as `\\n` (only when the
   string is read as an expression);
1. `$ ` (dollar, space) starts a Python expression;
2. a string containing `{{` or `{%` is a Jinja template;
3. in expression slots (`if`, `case`, `foreach.in`, `over`, `reduce`) anything else is an expression;
4. in value slots (`evaluate`, `set`, `return`, arguments, `info`) a string is an expression when it
   is exactly `_`, has one of Julep's shapes (`[…]`, `_.…`, `_[…`, `…inputs[…`, `…outputs[…`), or
   parses as Python with some structure and uses a name in scope; otherwise it is text;
6./7. in text slots and tool definitions, anything else is text;
8. `describe` shows how each string was read.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from mintleaf_server.dsl.errors import ReadError
from mintleaf_server.dsl.expressions import (
    MAX_EXPRESSION_LENGTH,
    CompiledExpression,
    compile_expression,
    free_names,
)
from mintleaf_server.dsl.library import BUILTIN_NAMES, Limits
from mintleaf_server.dsl.templates import CompiledTemplate, compile_template

__all__ = [
    "BUILTIN_NAMES",
    "TASK_SCOPE_NAMES",
    "Expression",
    "Kind",
    "Readable",
    "Slot",
    "Template",
    "Text",
    "describe",
    "escape_literal_newlines",
    "evaluate_value",
    "read_string",
    "read_tree",
    "read_value",
]

#: Names in scope of a task step's expressions and templates (JULEP-SPEC 3.3).
TASK_SCOPE_NAMES: frozenset[str] = frozenset(
    {
        "_",
        "inputs",
        "outputs",
        "steps",
        "state",
        "agent",
        "task",
        "execution",
        "arguments",
        "agent_tools",
        "user",
        "session",
        "cursor",
        "current_input",
        "developer_id",
    }
)


class Kind(StrEnum):
    EXPRESSION = "expression"
    TEMPLATE = "template"
    TEXT = "text"


class Slot(StrEnum):
    EXPRESSION = "expression"  # if, case, foreach.in, over, reduce: any non-template string (rule 3)
    VALUE = "value"  # evaluate, set, return, tool/yield arguments, wait_for_input.info (rule 4)
    TEXT = "text"  # prompt message content, log, error (rule 6)
    TOOL_DEF = "tool_def"  # strings inside tool definitions (rule 7)


@dataclass(frozen=True)
class Expression:
    """A checked, compiled Python expression. `names`: the scope names it reads."""

    source: str
    names: frozenset[str]
    _compiled: CompiledExpression = field(repr=False, compare=False)
    kind: ClassVar[Kind] = Kind.EXPRESSION

    def evaluate(self, scope: Mapping[str, Any], limits: Limits | None = None) -> Any:
        """Plain JSON-like data; raises EvaluationError or LimitExceeded."""
        return self._compiled.evaluate(scope, limits)


@dataclass(frozen=True)
class Template:
    """A checked, compiled Jinja template. `names`: the scope names it reads."""

    source: str
    names: frozenset[str]
    _compiled: CompiledTemplate = field(repr=False, compare=False)
    kind: ClassVar[Kind] = Kind.TEMPLATE

    def render(self, scope: Mapping[str, Any], limits: Limits | None = None) -> str:
        """Raises EvaluationError or LimitExceeded."""
        return self._compiled.render(scope, limits)


@dataclass(frozen=True)
class Text:
    """A string used as written."""

    source: str
    kind: ClassVar[Kind] = Kind.TEXT


Readable = Expression | Template | Text


def escape_literal_newlines(source: str) -> str:
    """Rule 5: turn raw newlines (and carriage returns) inside single-quoted Python string literals
    into `\\n` escapes, leaving everything else as written."""
    out: list[str] = []
    quote = ""
    i, n = 0, len(source)
    while i < n:
        c = source[i]
        if not quote:
            if c in "'\"":
                quote = c * 3 if source.startswith(c * 3, i) else c
                out.append(quote)
                i += len(quote)
                continue
            out.append(c)
            i += 1
            continue
        if c == "\\" and i + 1 < n:
            out.append(source[i : i + 2])
            i += 2
            continue
        if source.startswith(quote, i):
            out.append(quote)
            i += len(quote)
            quote = ""
            continue
        if len(quote) == 1 and c in "\n\r":
            out.append("\\n" if c == "\n" else "\\r")
        else:
            out.append(c)
        i += 1
    return "".join(out)


def _parses(source: str) -> ast.Expression | None:
    try:
        return ast.parse(source, mode="eval")
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None


def _expression_text(text: str) -> str:
    """Rule 5 applied only when it turns a failing parse into a working one."""
    if ("\n" in text or "\r" in text) and _parses(text) is None:
        fixed = escape_literal_newlines(text)
        if fixed != text and _parses(fixed) is not None:
            return fixed
    return text


_STRUCTURE = (
    ast.BinOp,
    ast.BoolOp,
    ast.Compare,
    ast.UnaryOp,
    ast.Call,
    ast.Attribute,
    ast.Subscript,
    ast.ListComp,
    ast.DictComp,
    ast.SetComp,
    ast.GeneratorExp,
    ast.IfExp,
    ast.Lambda,
    ast.NamedExpr,
)


def _julep_shape(text: str) -> bool:
    return (
        text == "_"
        or (text.startswith("[") and text.endswith("]"))
        or text.startswith(("_.", "_["))
        or "inputs[" in text
        or "outputs[" in text
    )


def _is_value_expression(text: str, names: frozenset[str]) -> bool:
    """Rule 4."""
    if _julep_shape(text):
        return True
    if len(text) > MAX_EXPRESSION_LENGTH:
        return False
    tree = _parses(_expression_text(text))
    if tree is None:
        return False
    if not any(isinstance(node, _STRUCTURE) for node in ast.walk(tree)):
        return False
    return bool(free_names(tree) & (names | BUILTIN_NAMES))


def _expression(text: str, names: frozenset[str]) -> Expression:
    source = _expression_text(text)
    compiled, used = compile_expression(source, names)
    return Expression(compiled.source, used, compiled)


def _template(raw: str, names: frozenset[str]) -> Template:
    compiled, used = compile_template(raw, names)
    return Template(raw, used, compiled)


def read_string(raw: str, slot: Slot, names: frozenset[str]) -> Readable:
    """Read one string found in `slot`; `names` are the scope names available there (the
    whitelisted built-ins, modules and constants are always available). Raises ReadError."""
    text = raw.strip()
    if text.startswith("$") and (len(text) == 1 or text[1].isspace()):
        body = text[1:].strip()
        if not body:
            raise ReadError("empty expression after '$ '")
        return _expression(body, names)
    if "{{" in raw or "{%" in raw:
        return _template(raw, names)
    if slot is Slot.EXPRESSION:
        if text.startswith("$"):
            raise ReadError(f"an expression starts with '$ ' (dollar and space), not {text[:20]!r}")
        return _expression(text, names)
    if slot is Slot.VALUE and _is_value_expression(text, names):
        return _expression(text, names)
    return Text(raw)


def read_tree(value: Any, slot: Slot, names: frozenset[str], path: str) -> tuple[Any, list[tuple[str, str]]]:
    """Read every string in a YAML value (dict keys are left alone). Returns the read tree (dicts
    and lists, strings replaced by Expression/Template/Text) and the problems as (path, message),
    with paths like `main[0].evaluate.queries`."""
    problems: list[tuple[str, str]] = []
    return _read(value, slot, names, path, problems), problems


def _read(value: Any, slot: Slot, names: frozenset[str], path: str, problems: list[tuple[str, str]]) -> Any:
    if isinstance(value, str):
        try:
            return read_string(value, slot, names)
        except ReadError as exc:
            problems.append((path, str(exc)))
            return Text(value)
    if isinstance(value, Mapping):
        return {
            k: _read(v, slot, names, f"{path}.{k}" if path else str(k), problems) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_read(v, slot, names, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    return value


def read_value(value: Any, slot: Slot, names: frozenset[str], path: str = "") -> Any:
    """Like `read_tree`, raising ReadError for the first problem (prefixed with its path)."""
    tree, problems = read_tree(value, slot, names, path)
    if problems:
        where, message = problems[0]
        raise ReadError(f"{where}: {message}" if where else message)
    return tree


def evaluate_value(value: Any, scope: Mapping[str, Any], limits: Limits | None = None) -> Any:
    """Evaluate a read tree: expressions are evaluated, templates rendered, text used as written;
    mappings become dicts and sequences lists. Raises EvaluationError or LimitExceeded."""
    if isinstance(value, Expression):
        return value.evaluate(scope, limits)
    if isinstance(value, Template):
        return value.render(scope, limits)
    if isinstance(value, Text):
        return value.source
    if isinstance(value, Mapping):
        return {k: evaluate_value(v, scope, limits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [evaluate_value(v, scope, limits) for v in value]
    return value


def describe(value: Any) -> Any:
    """Rule 8: a JSON view of a read tree, each string as {"expression"|"template"|"text": source}."""
    if isinstance(value, Expression | Template | Text):
        return {value.kind.value: value.source}
    if isinstance(value, Mapping):
        return {k: describe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [describe(v) for v in value]
    return value
