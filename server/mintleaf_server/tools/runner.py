"""Running a server-side tool, and describing any tool to a model.

`run_tool` dispatches on the tool's kind: integration, system and api_call run here; function
tools never do (the execution pauses for the client, which submits the result by call id).
`tool_schema` gives the OpenAI function-calling description of every kind, so prompt steps and
chat can offer all of them to any model (JULEP-SPEC 9.4)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mintleaf_server.dsl.steps import thaw
from mintleaf_server.dsl.tools import ToolDef

from .api_call import run_api_call
from .context import ToolContext
from .errors import FunctionToolNotRunnable, ToolArgumentsInvalid, ToolNotImplemented
from .integrations import provider_method, run_integration
from .system import operation_schema, run_system

__all__ = ["run_tool", "tool_schema"]


async def run_tool(tool: ToolDef, arguments: Mapping[str, Any], ctx: ToolContext) -> Any:
    """Run a server-side tool with the call's (already evaluated) arguments. Raises ToolError."""
    if not isinstance(arguments, Mapping):
        raise ToolArgumentsInvalid("", f"must be an object, not {type(arguments).__name__}")
    args = dict(arguments)
    if tool.type == "function":
        raise FunctionToolNotRunnable(
            f"tool {tool.name!r} is a function tool: the client runs it, so the execution pauses"
            " until the client submits the result for this call"
        )
    if tool.type == "integration":
        return await run_integration(tool, args, ctx)
    if tool.type == "system":
        return await run_system(tool, args, ctx)
    if tool.type == "api_call":
        return await run_api_call(tool, args, ctx)
    raise ToolNotImplemented(f"tool {tool.name!r} has an unknown type {tool.type!r}")


_API_CALL_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "params": {"type": "object", "description": "Query string parameters."},
        "json": {"type": "object", "description": "A JSON request body."},
        "content": {"type": "string", "description": "A text request body."},
        "data": {"type": "object", "description": "Form fields."},
        "headers": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def _plain(value: Any) -> Any:
    return thaw(value)


def tool_schema(tool: ToolDef) -> dict[str, Any]:
    """`{"type": "function", "function": {name, description, parameters}}` for any tool kind."""
    spec = tool.spec
    description = tool.description or ""
    if tool.type == "function":
        parameters = _plain(spec.get("parameters")) or {"type": "object", "properties": {}}
    elif tool.type == "integration":
        provider_name = spec.get("provider")
        method_name = spec.get("method")
        try:
            provider, method = provider_method(str(provider_name), str(method_name) if method_name else None)
        except ToolNotImplemented:
            parameters = {"type": "object"}
        else:
            parameters = _plain(dict(method.arguments))
            fixed = set(spec.get("arguments") or {})
            if fixed and isinstance(parameters.get("required"), list):
                # arguments the definition already gives are not the model's to supply
                parameters["required"] = [r for r in parameters["required"] if r not in fixed]
            description = description or f"{provider.description} {method.description}".strip()
    elif tool.type == "system":
        parameters = operation_schema(
            str(spec.get("resource")),
            spec.get("subresource"),
            str(spec.get("operation")),
            spec.get("resource_id") is not None,
        )
        description = description or f"{spec.get('operation')} {spec.get('resource')}" + (
            f" {spec.get('subresource')}s" if spec.get("subresource") else ""
        )
    elif tool.type == "api_call":
        parameters = _plain(_API_CALL_PARAMETERS)
        description = description or f"HTTP {spec.get('method')} request"
    else:
        parameters = {"type": "object"}
    function: dict[str, Any] = {"name": tool.name, "parameters": parameters}
    if description:
        function["description"] = description
    return {"type": "function", "function": function}
