"""ToolService: an agent's tools. Definitions are validated by the DSL's tool parser, the same one
that reads a task's inline `tools:`, so both accept exactly the same definitions."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
from google.protobuf import empty_pb2, json_format

from .._proto.mintleaf.v1 import tools_pb2, tools_pb2_grpc
from ..dsl.tools import parse_tool
from ..store.db import ResourceSpec
from .agents import AGENTS
from .common import Servicer, integral_numbers, page_size, page_token, parse_id, to_timestamp, unary
from .errors import InvalidArgument
from .validate import update_paths

__all__ = ["TOOLS", "ToolServicer", "tool_definition", "tool_to_proto"]

TOOLS = ResourceSpec(
    kind="tool",
    table="tools",
    columns=("id", "agent_id", "name", "type", "description", "spec"),
    json_columns=frozenset({"spec"}),
    parent="agent_id",
    unique={"tools_agent_name_key": "name"},
)
_KINDS = ("function", "integration", "system", "api_call")
_TYPE_NAMES = {
    tools_pb2.TOOL_TYPE_FUNCTION: "function",
    tools_pb2.TOOL_TYPE_INTEGRATION: "integration",
    tools_pb2.TOOL_TYPE_SYSTEM: "system",
    tools_pb2.TOOL_TYPE_API_CALL: "api_call",
}
_TYPE_ENUMS = {v: k for k, v in _TYPE_NAMES.items()}
_FIELDS = ("name", "type", "description", "definition")


def tool_definition(tool: tools_pb2.Tool) -> dict[str, Any]:
    """The tool as a plain definition `{name, type?, description, <kind>: {...}}` (the DSL's shape)."""
    raw: dict[str, Any] = {"name": tool.name}
    if tool.type:
        raw["type"] = _TYPE_NAMES.get(tool.type, "unknown")
    if tool.description:
        raw["description"] = tool.description
    kind = tool.WhichOneof("kind")
    if kind:
        raw[kind] = integral_numbers(
            json_format.MessageToDict(getattr(tool, kind), preserving_proto_field_name=True)
        )
        if kind == "api_call":
            raw[kind] = _api_call_to_dsl(raw[kind])
    return raw


# The proto's ApiCallDef names the arguments' JSON Schema `parameters` (like a function's) and maps
# secret aliases straight to secret names; the DSL (Julep's task documents) writes `schema` and
# `{alias: {name: ...}}`. Stored specs use the DSL's shape, so agent tools and inline task tools
# read the same; these two functions translate at the API boundary.
def _api_call_to_dsl(body: dict[str, Any]) -> dict[str, Any]:
    body = dict(body)
    if "parameters" in body:
        body["schema"] = body.pop("parameters")
    if isinstance(body.get("secrets"), dict):
        body["secrets"] = {alias: {"name": name} for alias, name in body["secrets"].items()}
    return body


def _api_call_from_dsl(spec: dict[str, Any]) -> dict[str, Any]:
    spec = dict(spec)
    if "schema" in spec:
        spec["parameters"] = spec.pop("schema")
    if isinstance(spec.get("secrets"), dict):
        spec["secrets"] = {
            alias: ref.get("name", "") if isinstance(ref, dict) else str(ref)
            for alias, ref in spec["secrets"].items()
        }
    return spec


def _proto_path(path: str, prefix: str) -> str:
    """A violation's path in the request's terms (`schema` is `parameters` in ApiCallDef)."""
    dsl = f"{prefix}.api_call.schema"
    if path == dsl or path.startswith((dsl + ".", dsl + "[")):
        return f"{prefix}.api_call.parameters" + path[len(dsl) :]
    return path


def validated(tool: tools_pb2.Tool, prefix: str = "tool") -> dict[str, Any]:
    raw = tool_definition(tool)
    parsed, violations = parse_tool(raw, prefix)
    if violations or parsed is None:
        raise InvalidArgument(
            [(_proto_path(v.path, prefix), v.message) for v in violations]
            or [(prefix, "is not a valid tool")],
            reason="TOOL_INVALID",
        )
    kind = parsed.type
    return {"name": parsed.name, "type": kind, "description": tool.description, "spec": raw.get(kind, {})}


def tool_to_proto(row: dict[str, Any]) -> tools_pb2.Tool:
    tool = tools_pb2.Tool(
        id=str(row["id"]),
        agent_id=str(row["agent_id"]),
        name=row["name"],
        type=_TYPE_ENUMS.get(row["type"], tools_pb2.TOOL_TYPE_UNSPECIFIED),
        description=row["description"],
        created_at=to_timestamp(row["created_at"]),
        updated_at=to_timestamp(row["updated_at"]),
    )
    if row["type"] in _KINDS:
        spec = row["spec"] or {}
        if row["type"] == "api_call":
            spec = _api_call_from_dsl(spec)
        json_format.ParseDict(spec, getattr(tool, row["type"]), ignore_unknown_fields=True)
    return tool


class ToolServicer(Servicer, tools_pb2_grpc.ToolServiceServicer):
    @unary
    async def CreateTool(
        self, request: tools_pb2.CreateToolRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> tools_pb2.Tool:
        agent_id = parse_id(request.agent_id, "agent_id")
        values = validated(request.tool)
        await self.rt.db.get(AGENTS, dev, agent_id)
        values["agent_id"] = agent_id
        if request.tool.id:
            values["id"] = parse_id(request.tool.id, "tool.id")
        return tool_to_proto(await self.rt.db.insert(TOOLS, dev, values, request_id=request.request_id))

    @unary
    async def GetTool(
        self, request: tools_pb2.GetToolRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> tools_pb2.Tool:
        agent_id = parse_id(request.agent_id, "agent_id")
        return tool_to_proto(await self.rt.db.get(TOOLS, dev, parse_id(request.id, "id"), parent=agent_id))

    @unary
    async def ListTools(
        self, request: tools_pb2.ListToolsRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> tools_pb2.ListToolsResponse:
        agent_id = parse_id(request.agent_id, "agent_id")
        await self.rt.db.get(AGENTS, dev, agent_id)
        page = await self.rt.db.list(
            TOOLS,
            dev,
            page_size=page_size(request.page_size, self.rt),
            page_token=page_token(request.page_token),
            equals={"agent_id": agent_id},
        )
        return tools_pb2.ListToolsResponse(
            tools=[tool_to_proto(r) for r in page.rows], next_page_token=page.next_page_token
        )

    @unary
    async def UpdateTool(
        self, request: tools_pb2.UpdateToolRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> tools_pb2.Tool:
        agent_id = parse_id(request.tool.agent_id, "tool.agent_id")
        id = parse_id(request.tool.id, "tool.id")
        paths = update_paths(request.update_mask, _FIELDS)
        async with self.rt.db.transaction() as conn:
            current = tool_to_proto(
                await self.rt.db.get(TOOLS, dev, id, parent=agent_id, conn=conn, for_update=True)
            )
            merged = tools_pb2.Tool()
            merged.CopyFrom(current)
            for path in paths:
                if path == "definition":
                    kind = request.tool.WhichOneof("kind")
                    if kind is None:
                        raise InvalidArgument(
                            "tool", "a definition (function, integration, system or api_call) is required"
                        )
                    getattr(merged, kind).CopyFrom(getattr(request.tool, kind))
                    if not (request.tool.type or "type" in paths):
                        merged.type = tools_pb2.TOOL_TYPE_UNSPECIFIED
                else:
                    setattr(merged, path, getattr(request.tool, path))
            values = validated(merged)
            row = await self.rt.db.update(TOOLS, dev, id, values, parent=agent_id, conn=conn)
        return tool_to_proto(row)

    @unary
    async def DeleteTool(
        self, request: tools_pb2.DeleteToolRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> empty_pb2.Empty:
        agent_id = parse_id(request.agent_id, "agent_id")
        await self.rt.db.delete(TOOLS, dev, parse_id(request.id, "id"), parent=agent_id)
        return empty_pb2.Empty()
