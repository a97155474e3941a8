"""AgentService and UserService: plain resources with standard methods."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import grpc

from .._proto.mintleaf.v1 import agents_pb2, agents_pb2_grpc, users_pb2, users_pb2_grpc
from ..store.db import ResourceSpec
from .common import (
    Servicer,
    check_metadata,
    to_struct,
    to_timestamp,
    unary,
)
from .crud import Crud
from .validate import canonical_name, display_name, max_len

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = [
    "AGENTS",
    "AGENT_CRUD",
    "USERS",
    "USER_CRUD",
    "AgentServicer",
    "UserServicer",
    "agent_to_proto",
    "user_to_proto",
]

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


async def _agent_deleted(rt: Runtime, conn: Any, dev: uuid.UUID, id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM tools WHERE developer_id = %s AND agent_id = %s", (dev, id))
    await rt.on_agent_deleted(conn, dev, id)


AGENT_CRUD = Crud(
    spec=AGENTS,
    field="agent",
    fields=_AGENT_FIELDS,
    to_proto=agent_to_proto,
    values=_agent_values,
    list_response=agents_pb2.ListAgentsResponse,
    list_field="agents",
    on_delete=_agent_deleted,
)


class AgentServicer(Servicer, agents_pb2_grpc.AgentServiceServicer):
    CreateAgent = unary(AGENT_CRUD.create)
    GetAgent = unary(AGENT_CRUD.get)
    ListAgents = unary(AGENT_CRUD.list)
    UpdateAgent = unary(AGENT_CRUD.update)
    DeleteAgent = unary(AGENT_CRUD.delete)

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


async def _user_deleted(rt: Runtime, conn: Any, dev: uuid.UUID, id: uuid.UUID) -> None:
    await rt.on_user_deleted(conn, dev, id)


USER_CRUD = Crud(
    spec=USERS,
    field="user",
    fields=_USER_FIELDS,
    to_proto=user_to_proto,
    values=_user_values,
    list_response=users_pb2.ListUsersResponse,
    list_field="users",
    on_delete=_user_deleted,
)


class UserServicer(Servicer, users_pb2_grpc.UserServiceServicer):
    CreateUser = unary(USER_CRUD.create)
    GetUser = unary(USER_CRUD.get)
    ListUsers = unary(USER_CRUD.list)
    UpdateUser = unary(USER_CRUD.update)
    DeleteUser = unary(USER_CRUD.delete)
