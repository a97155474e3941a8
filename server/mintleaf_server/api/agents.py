"""AgentService and UserService: plain resources with standard methods."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
from google.protobuf import empty_pb2

from .._proto.mintleaf.v1 import agents_pb2, agents_pb2_grpc, users_pb2, users_pb2_grpc
from ..store.db import ResourceSpec
from .common import (
    Servicer,
    check_metadata,
    page_size,
    page_token,
    parse_id,
    struct_to_dict,
    to_struct,
    to_timestamp,
    unary,
)
from .validate import canonical_name, display_name, max_len, update_paths

__all__ = ["AGENTS", "USERS", "AgentServicer", "UserServicer", "agent_to_proto", "user_to_proto"]

AGENTS = ResourceSpec(
    kind="agent",
    table="agents",
    columns=(
        "id",
        "name",
        "canonical_name",
        "project",
        "about",
        "model",
        "instructions",
        "default_settings",
        "default_system_template",
        "metadata",
    ),
    json_columns=frozenset({"default_settings", "metadata"}),
    unique={"agents_canonical_name_key": "canonical_name"},
)
USERS = ResourceSpec(
    kind="user",
    table="users",
    columns=("id", "name", "about", "project", "metadata"),
    json_columns=frozenset({"metadata"}),
)

_AGENT_FIELDS = (
    "name",
    "canonical_name",
    "project",
    "about",
    "model",
    "instructions",
    "default_settings",
    "default_system_template",
    "metadata",
)
_USER_FIELDS = ("name", "about", "project", "metadata")


def agent_to_proto(row: dict[str, Any]) -> agents_pb2.Agent:
    return agents_pb2.Agent(
        id=str(row["id"]),
        name=row["name"],
        canonical_name=row["canonical_name"] or "",
        project=row["project"],
        about=row["about"],
        model=row["model"],
        instructions=row["instructions"],
        default_settings=to_struct(row["default_settings"]),
        default_system_template=row["default_system_template"],
        metadata=to_struct(row["metadata"]),
        created_at=to_timestamp(row["created_at"]),
        updated_at=to_timestamp(row["updated_at"]),
    )


def _agent_values(agent: agents_pb2.Agent, paths: list[str], prefix: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in paths:
        f = f"{prefix}.{path}"
        if path == "name":
            values["name"] = display_name(agent.name, f)
        elif path == "canonical_name":
            values["canonical_name"] = canonical_name(agent.canonical_name, f)
        elif path == "project":
            values["project"] = canonical_name(agent.project, f) or ""
        elif path == "about":
            values["about"] = max_len(agent.about, f, 100_000)
        elif path == "model":
            values["model"] = max_len(agent.model, f, 255)
        elif path == "instructions":
            for i, text in enumerate(agent.instructions):
                max_len(text, f"{f}[{i}]", 100_000)
            values["instructions"] = list(agent.instructions)
        elif path == "default_settings":
            values["default_settings"] = check_metadata(
                agent.HasField("default_settings"), agent.default_settings, f
            )
        elif path == "default_system_template":
            values["default_system_template"] = max_len(agent.default_system_template, f, 100_000)
        elif path == "metadata":
            values["metadata"] = check_metadata(agent.HasField("metadata"), agent.metadata, f)
    return values


class AgentServicer(Servicer, agents_pb2_grpc.AgentServiceServicer):
    @unary
    async def CreateAgent(
        self, request: agents_pb2.CreateAgentRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> agents_pb2.Agent:
        values = _agent_values(request.agent, list(_AGENT_FIELDS), "agent")
        if request.agent.id:
            values["id"] = parse_id(request.agent.id, "agent.id")
        row = await self.rt.db.insert(AGENTS, dev, values, request_id=request.request_id)
        return agent_to_proto(row)

    @unary
    async def GetAgent(
        self, request: agents_pb2.GetAgentRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> agents_pb2.Agent:
        return agent_to_proto(await self.rt.db.get(AGENTS, dev, parse_id(request.id, "id")))

    @unary
    async def ListAgents(
        self, request: agents_pb2.ListAgentsRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> agents_pb2.ListAgentsResponse:
        page = await self.rt.db.list(
            AGENTS,
            dev,
            page_size=page_size(request.page_size, self.rt),
            page_token=page_token(request.page_token),
            metadata_filter=struct_to_dict(request.metadata_filter),
        )
        return agents_pb2.ListAgentsResponse(
            agents=[agent_to_proto(r) for r in page.rows], next_page_token=page.next_page_token
        )

    @unary
    async def UpdateAgent(
        self, request: agents_pb2.UpdateAgentRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> agents_pb2.Agent:
        id = parse_id(request.agent.id, "agent.id")
        paths = update_paths(request.update_mask, _AGENT_FIELDS)
        row = await self.rt.db.update(AGENTS, dev, id, _agent_values(request.agent, paths, "agent"))
        return agent_to_proto(row)

    @unary
    async def DeleteAgent(
        self, request: agents_pb2.DeleteAgentRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> empty_pb2.Empty:
        id = parse_id(request.id, "id")
        async with self.rt.db.transaction() as conn:
            await self.rt.db.delete(AGENTS, dev, id, conn=conn)
            await conn.execute("DELETE FROM tools WHERE developer_id = %s AND agent_id = %s", (dev, id))
            await self.rt.on_agent_deleted(conn, dev, id)
        return empty_pb2.Empty()

    @unary
    async def ListModels(
        self, request: agents_pb2.ListModelsRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> agents_pb2.ListModelsResponse:
        return agents_pb2.ListModelsResponse(models=[agents_pb2.ModelInfo(**m) for m in self.rt.model_list()])


def user_to_proto(row: dict[str, Any]) -> users_pb2.User:
    return users_pb2.User(
        id=str(row["id"]),
        name=row["name"],
        about=row["about"],
        project=row["project"],
        metadata=to_struct(row["metadata"]),
        created_at=to_timestamp(row["created_at"]),
        updated_at=to_timestamp(row["updated_at"]),
    )


def _user_values(user: users_pb2.User, paths: list[str], prefix: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in paths:
        f = f"{prefix}.{path}"
        if path == "name":
            values["name"] = display_name(user.name, f, required=False, limit=120)
        elif path == "about":
            values["about"] = max_len(user.about, f, 100_000)
        elif path == "project":
            values["project"] = canonical_name(user.project, f) or ""
        elif path == "metadata":
            values["metadata"] = check_metadata(user.HasField("metadata"), user.metadata, f)
    return values


class UserServicer(Servicer, users_pb2_grpc.UserServiceServicer):
    @unary
    async def CreateUser(
        self, request: users_pb2.CreateUserRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> users_pb2.User:
        values = _user_values(request.user, list(_USER_FIELDS), "user")
        if request.user.id:
            values["id"] = parse_id(request.user.id, "user.id")
        return user_to_proto(await self.rt.db.insert(USERS, dev, values, request_id=request.request_id))

    @unary
    async def GetUser(
        self, request: users_pb2.GetUserRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> users_pb2.User:
        return user_to_proto(await self.rt.db.get(USERS, dev, parse_id(request.id, "id")))

    @unary
    async def ListUsers(
        self, request: users_pb2.ListUsersRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> users_pb2.ListUsersResponse:
        page = await self.rt.db.list(
            USERS,
            dev,
            page_size=page_size(request.page_size, self.rt),
            page_token=page_token(request.page_token),
            metadata_filter=struct_to_dict(request.metadata_filter),
        )
        return users_pb2.ListUsersResponse(
            users=[user_to_proto(r) for r in page.rows], next_page_token=page.next_page_token
        )

    @unary
    async def UpdateUser(
        self, request: users_pb2.UpdateUserRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> users_pb2.User:
        id = parse_id(request.user.id, "user.id")
        paths = update_paths(request.update_mask, _USER_FIELDS)
        return user_to_proto(
            await self.rt.db.update(USERS, dev, id, _user_values(request.user, paths, "user"))
        )

    @unary
    async def DeleteUser(
        self, request: users_pb2.DeleteUserRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> empty_pb2.Empty:
        id = parse_id(request.id, "id")
        async with self.rt.db.transaction() as conn:
            await self.rt.db.delete(USERS, dev, id, conn=conn)
            await self.rt.on_user_deleted(conn, dev, id)
        return empty_pb2.Empty()
