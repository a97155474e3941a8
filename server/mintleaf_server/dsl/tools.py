"""Tool definitions as a task's `tools:` holds them (and as the API hands over an agent's tools).

A definition is `{name, type?, description?, <type>: {...}}` with exactly one kind key matching
`type` (JULEP-SPEC 1.9, 7). An omitted `type` is inferred when exactly one kind key is present:
the seed's Story and Comic Creator writes its dalle tool that way.

Strings in the kind's fields are read with `Slot.TOOL_DEF` (`$ ` expressions and templates,
otherwise text) with `secrets` in scope, because task tool specs are evaluated once, with the
developer's secrets, when the tool list is built (JULEP-SPEC 7.5). JSON Schemas (a function's
`parameters`, an api_call's `schema`) are data, not text to render: they are kept as written.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jsonschema import exceptions as jsonschema_exceptions
from jsonschema import validators

from mintleaf_server.dsl.errors import Violation
from mintleaf_server.dsl.reading import BUILTIN_NAMES, Slot, read_tree
from mintleaf_server.dsl.steps import FrozenMap, ReadTree, freeze

__all__ = [
    "API_CALL_METHODS",
    "SYSTEM_OPERATIONS",
    "SYSTEM_RESOURCES",
    "SYSTEM_SUBRESOURCES",
    "TOOL_DEF_NAMES",
    "TOOL_TYPES",
    "ToolDef",
    "check_schema",
    "is_identifier",
    "parse_tool",
]

TOOL_TYPES = ("function", "integration", "system", "api_call")
SYSTEM_RESOURCES = frozenset({"agent", "user", "task", "execution", "doc", "session", "job"})
SYSTEM_SUBRESOURCES = frozenset({"tool", "doc", "execution", "transition"})
SYSTEM_OPERATIONS = frozenset(
    {
        "create",
        "update",
        "patch",
        "create_or_update",
        "embed",
        "change_status",
        "search",
        "chat",
        "history",
        "delete",
        "get",
        "list",
    }
)
API_CALL_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE"})

# Names in scope for strings inside tool definitions.
# `arguments` are the call's arguments: an api_call definition templates its URL, headers, body from them.
TOOL_DEF_NAMES: frozenset[str] = frozenset({"secrets", "arguments"}) | frozenset(BUILTIN_NAMES)

# JULEP-SPEC 1.1 validPythonIdentifier: tool names, tool refs, workflow keys.
_IDENTIFIER = re.compile(r"^[^\W0-9]\w*$")
_MAX_IDENTIFIER = 40

# Keys the API adds to a stored tool; accepted and ignored so agent tools can be passed as given.
_READ_ONLY_KEYS = frozenset({"id", "created_at", "updated_at", "inherited"})

# kind -> (required fields, optional fields)
_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "function": (frozenset(), frozenset({"name", "description", "parameters"})),
    "integration": (frozenset({"provider"}), frozenset({"method", "setup", "arguments"})),
    "system": (
        frozenset({"resource", "operation"}),
        frozenset({"resource_id", "subresource", "arguments"}),
    ),
    "api_call": (
        frozenset({"method", "url"}),
        frozenset(
            {
                "headers",
                "params",
                "json",
                "data",
                "content",
                "files",
                "cookies",
                "follow_redirects",
                "timeout",
                "include_response_content",
                "schema",
                "secrets",
            }
        ),
    ),
}

# Fields kept as written (frozen, not read): JSON Schemas are data, and names of providers,
# methods, resources and operations select code, so they are never expressions.
_PLAIN = frozenset(
    {
        "parameters",
        "schema",
        "name",
        "description",
        "provider",
        "method",
        "resource",
        "operation",
        "subresource",
        "follow_redirects",
        "timeout",
        "include_response_content",
        "secrets",
    }
)


@dataclass(frozen=True)
class ToolDef:
    """A validated tool definition.

    `spec` is a FrozenMap of the kind's fields as given. Strings in free-form fields (`setup`,
    `arguments`, `url`, `headers`, `params`, `json`, `data`, `content`, `files`, `cookies`,
    `resource_id`) are read (`Slot.TOOL_DEF`); the others (`_PLAIN`) stay plain frozen data."""

    name: str
    type: str
    description: str | None
    spec: ReadTree


def is_identifier(value: object) -> bool:
    """A validPythonIdentifier: `^[^\\W0-9]\\w*$`, at most 40 characters."""
    return isinstance(value, str) and len(value) <= _MAX_IDENTIFIER and bool(_IDENTIFIER.match(value))


def _type_name(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer"}.get(
        type(value), type(value).__name__
    )


def _read(value: Any, path: str, violations: list[Violation]) -> ReadTree:
    tree, problems = read_tree(value, Slot.TOOL_DEF, TOOL_DEF_NAMES, path)
    violations.extend(Violation(p, m) for p, m in problems)
    return freeze(tree)


def check_schema(schema: Any, path: str, violations: list[Violation]) -> None:
    """Append a violation unless `schema` is a valid JSON Schema object (its own $schema decides
    the draft; the latest draft otherwise)."""
    if not isinstance(schema, Mapping):
        violations.append(Violation(path, f"must be a JSON Schema object, not {_type_name(schema)}"))
        return
    try:
        validators.validator_for(schema).check_schema(dict(schema))
    except jsonschema_exceptions.SchemaError as exc:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in exc.path)
        violations.append(Violation(path + where, f"invalid JSON Schema: {exc.message}"))


def _string_map(value: Any, path: str, violations: list[Violation]) -> bool:
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        violations.append(Violation(path, "must be an object of string values"))
        return False
    return True


def _check_kind(kind: str, body: Mapping[str, Any], path: str, violations: list[Violation]) -> None:
    """Field-level checks of one kind's body (types and enumerations)."""
    if kind == "function":
        for key in ("name", "description"):
            if key in body and body[key] is not None and not isinstance(body[key], str):
                violations.append(Violation(f"{path}.{key}", "must be a string"))
        if "parameters" in body:
            check_schema(body["parameters"], f"{path}.parameters", violations)
    elif kind == "integration":
        if not isinstance(body.get("provider"), str) or not body.get("provider"):
            violations.append(Violation(f"{path}.provider", "must be a non-empty string"))
        if "method" in body and body["method"] is not None and not isinstance(body["method"], str):
            violations.append(Violation(f"{path}.method", "must be a string"))
        for key in ("setup", "arguments"):
            if key in body and body[key] is not None and not isinstance(body[key], Mapping):
                violations.append(Violation(f"{path}.{key}", "must be an object"))
    elif kind == "system":
        if body.get("resource") not in SYSTEM_RESOURCES:
            violations.append(
                Violation(f"{path}.resource", f"must be one of {', '.join(sorted(SYSTEM_RESOURCES))}")
            )
        if body.get("operation") not in SYSTEM_OPERATIONS:
            violations.append(
                Violation(f"{path}.operation", f"must be one of {', '.join(sorted(SYSTEM_OPERATIONS))}")
            )
        sub = body.get("subresource")
        if sub is not None and sub not in SYSTEM_SUBRESOURCES:
            violations.append(
                Violation(f"{path}.subresource", f"must be one of {', '.join(sorted(SYSTEM_SUBRESOURCES))}")
            )
        rid = body.get("resource_id")
        if rid is not None and not isinstance(rid, str):
            violations.append(Violation(f"{path}.resource_id", "must be a string"))
        if (
            "arguments" in body
            and body["arguments"] is not None
            and not isinstance(body["arguments"], Mapping)
        ):
            violations.append(Violation(f"{path}.arguments", "must be an object"))
    elif kind == "api_call":
        method = body.get("method")
        if not isinstance(method, str) or method.upper() not in API_CALL_METHODS:
            violations.append(
                Violation(f"{path}.method", f"must be one of {', '.join(sorted(API_CALL_METHODS))}")
            )
        if not isinstance(body.get("url"), str) or not body.get("url"):
            violations.append(Violation(f"{path}.url", "must be a non-empty string"))
        for key in ("headers", "cookies"):
            if body.get(key) is not None:
                _string_map(body[key], f"{path}.{key}", violations)
        for key in ("json", "data", "files"):
            if body.get(key) is not None and not isinstance(body[key], Mapping):
                violations.append(Violation(f"{path}.{key}", "must be an object"))
        params = body.get("params")
        if params is not None and not isinstance(params, str | Mapping):
            violations.append(Violation(f"{path}.params", "must be a string or an object"))
        if body.get("content") is not None and not isinstance(body["content"], str):
            violations.append(Violation(f"{path}.content", "must be a string"))
        for key in ("follow_redirects", "include_response_content"):
            if body.get(key) is not None and not isinstance(body[key], bool):
                violations.append(Violation(f"{path}.{key}", "must be a boolean"))
        timeout = body.get("timeout")
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
        ):
            violations.append(Violation(f"{path}.timeout", "must be a positive number of seconds"))
        if body.get("schema") is not None:
            check_schema(body["schema"], f"{path}.schema", violations)
        secrets = body.get("secrets")
        if secrets is not None and not (
            isinstance(secrets, Mapping)
            and all(isinstance(v, Mapping) and isinstance(v.get("name"), str) for v in secrets.values())
        ):
            violations.append(Violation(f"{path}.secrets", "must map each alias to {name: <secret name>}"))


def parse_tool(raw: Mapping[str, Any], path: str) -> tuple[ToolDef | None, list[Violation]]:
    """Validate one tool definition; returns the tool (None if invalid) and every violation found."""
    violations: list[Violation] = []
    if not isinstance(raw, Mapping):
        return None, [Violation(path, f"a tool must be an object, not {_type_name(raw)}")]

    name = raw.get("name")
    if not is_identifier(name):
        violations.append(
            Violation(f"{path}.name", "must be a valid Python identifier of at most 40 characters")
        )
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        violations.append(Violation(f"{path}.description", "must be a string"))
        description = None

    allowed = {"name", "type", "description", *TOOL_TYPES, *_READ_ONLY_KEYS}
    for key in raw:
        if key not in allowed:
            violations.append(Violation(f"{path}.{key}", f"unknown tool field {key!r}"))

    present = [k for k in TOOL_TYPES if k in raw]
    kind = raw.get("type")
    if kind is None:
        if len(present) != 1:
            violations.append(
                Violation(
                    f"{path}.type",
                    "is required unless exactly one of function, integration, system, api_call is given",
                )
            )
            return None, violations
        kind = present[0]
    elif kind not in TOOL_TYPES:
        violations.append(Violation(f"{path}.type", f"must be one of {', '.join(TOOL_TYPES)}"))
        return None, violations
    for other in present:
        if other != kind:
            violations.append(Violation(f"{path}.{other}", f"does not match the tool type {kind!r}"))

    body = raw.get(kind)
    if body is None and kind == "function":
        body = {}  # a function with no parameters
    if not isinstance(body, Mapping):
        violations.append(Violation(f"{path}.{kind}", f"must be an object for a {kind} tool"))
        return None, violations

    kpath = f"{path}.{kind}"
    required, optional = _FIELDS[kind]
    for key in sorted(required - body.keys()):
        violations.append(Violation(f"{kpath}.{key}", "is required"))
    for key in body:
        if key not in required and key not in optional:
            violations.append(Violation(f"{kpath}.{key}", f"unknown {kind} field {key!r}"))
    _check_kind(kind, body, kpath, violations)

    spec: dict[str, Any] = {}
    for key, value in body.items():
        if key in _PLAIN:
            spec[key] = freeze(value)
        elif key in required or key in optional:
            spec[key] = _read(value, f"{kpath}.{key}", violations)
    if kind == "function" and description is None and isinstance(body.get("description"), str):
        description = body["description"]

    if violations:
        return None, violations
    assert isinstance(name, str)
    return ToolDef(name=name, type=kind, description=description, spec=FrozenMap(spec)), violations
