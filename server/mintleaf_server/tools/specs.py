"""Turning a parsed tool definition into plain values at call time.

A definition's free-form strings were read when the task (or agent tool) was created; here they
are evaluated with `secrets` (the developer's, plus an api_call's `secrets` aliases) and the
call's `arguments` in scope (JULEP-SPEC 7.5)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mintleaf_server.dsl.errors import DslError
from mintleaf_server.dsl.reading import evaluate_value
from mintleaf_server.dsl.steps import thaw
from mintleaf_server.dsl.tools import ToolDef

from .context import ToolContext
from .errors import ToolError, ToolSetupInvalid

__all__ = ["evaluate_spec", "merge_under", "secret_scope"]


def secret_scope(tool: ToolDef, ctx: ToolContext) -> dict[str, str]:
    """The developer's secrets plus the definition's `secrets: {alias: {name}}` aliases."""
    scope = {k: v for k, v in ctx.secrets.items() if isinstance(v, str)}
    aliases = tool.spec.get("secrets") or {}
    for alias, ref in aliases.items():
        name = ref.get("name") if isinstance(ref, Mapping) else None
        if not isinstance(name, str) or name not in ctx.secrets:
            raise ToolSetupInvalid(f"secrets.{alias}", f"the secret {name!r} does not exist")
        scope[alias] = ctx.secrets[name]
    return scope


def evaluate_spec(tool: ToolDef, ctx: ToolContext, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The definition's fields as plain data (expressions evaluated, templates rendered)."""
    scope = {"secrets": secret_scope(tool, ctx), "arguments": dict(arguments)}
    try:
        value = evaluate_value(tool.spec, scope)
    except (DslError, ValueError, TypeError, KeyError, AttributeError) as exc:
        # The evaluator's message names the expression, not the secret values.
        raise ToolError(
            f"tool {tool.name!r}: its definition could not be evaluated: {exc}", kind="spec_invalid"
        ) from exc
    result = thaw(value)
    assert isinstance(result, dict)
    return result


def merge_under(base: Mapping[str, Any] | None, top: Mapping[str, Any] | None) -> dict[str, Any]:
    """`base` with `top`'s keys on top (one level)."""
    out = dict(base or {})
    out.update(top or {})
    return out
