"""SessionService: sessions (participants fixed at creation) and their history (entries)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import empty_pb2, json_format

from .._proto.mintleaf.v1 import docs_pb2, executions_pb2, sessions_pb2, sessions_pb2_grpc
from ..store.db import ResourceSpec
from .agents import AGENTS, USERS
from .common import (
    Servicer,
    check_metadata,
    page_size,
    parse_id,
    to_struct,
    to_timestamp,
    unary,
)
from .crud import Crud
from .errors import InvalidArgument, NotFoundError
from .validate import max_len

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["ENTRIES", "SESSIONS", "SESSION_CRUD", "SessionServicer", "entry_to_proto", "session_to_proto"]

SESSIONS = ResourceSpec(
    kind="session",
    table="sessions",
    columns=(
        "id",
        "agents",
        "users",
        "situation",
        "system_template",
        "render_templates",
        "token_budget",
        "context_overflow",
        "auto_run_tools",
        "forward_tool_calls",
        "recall_options",
        "metadata",
    ),
    json_columns=frozenset({"recall_options", "metadata"}),
)
ENTRIES = ResourceSpec(
    kind="entry",
    table="entries",
    columns=(
        "id",
        "session_id",
        "seq",
        "role",
        "name",
        "content",
        "tool_calls",
        "tool_call_id",
        "source",
        "token_count",
        "tokenizer",
        "model",
        "timestamp",
    ),
    json_columns=frozenset({"content", "tool_calls"}),
    has_updated_at=False,
)
_FIELDS = (
    "situation",
    "system_template",
    "render_templates",
    "token_budget",
    "context_overflow",
    "auto_run_tools",
    "forward_tool_calls",
    "recall_options",
    "metadata",
)
_OVERFLOW = {
    sessions_pb2.CONTEXT_OVERFLOW_UNSPECIFIED: "none",
    sessions_pb2.CONTEXT_OVERFLOW_NONE: "none",
    sessions_pb2.CONTEXT_OVERFLOW_TRUNCATE: "truncate",
    sessions_pb2.CONTEXT_OVERFLOW_ADAPTIVE: "adaptive",
}
_OVERFLOW_ENUM = {
    "none": sessions_pb2.CONTEXT_OVERFLOW_NONE,
    "truncate": sessions_pb2.CONTEXT_OVERFLOW_TRUNCATE,
    "adaptive": sessions_pb2.CONTEXT_OVERFLOW_ADAPTIVE,
}


def session_kind(agents: int, users: int) -> str:
    a = "single_agent" if agents == 1 else "multi_agent"
    u = {0: "no_user", 1: "single_user"}.get(users, "multi_user")
    return f"{a}_{u}"


def session_to_proto(row: dict[str, Any]) -> sessions_pb2.Session:
    s = sessions_pb2.Session(
        id=str(row["id"]),
        agents=[str(a) for a in row["agents"]],
        users=[str(u) for u in row["users"]],
        situation=row["situation"],
        system_template=row["system_template"],
        summary=row["summary"],
        render_templates=row["render_templates"],
        token_budget=row["token_budget"],
        context_overflow=_OVERFLOW_ENUM.get(row["context_overflow"], sessions_pb2.CONTEXT_OVERFLOW_NONE),
        auto_run_tools=row["auto_run_tools"],
        forward_tool_calls=row["forward_tool_calls"],
        metadata=to_struct(row["metadata"]),
        kind=session_kind(len(row["agents"]), len(row["users"])),
        created_at=to_timestamp(row["created_at"]),
        updated_at=to_timestamp(row["updated_at"]),
    )
    if row["recall_options"] is not None:
        json_format.ParseDict(row["recall_options"], s.recall_options, ignore_unknown_fields=True)
    return s


def _recall(session: sessions_pb2.Session, f: str) -> dict[str, Any] | None:
    if not session.HasField("recall_options"):
        return None
    r = session.recall_options
    if r.limit < 0 or r.limit > 100:
        raise InvalidArgument(f"{f}.limit", "must be between 1 and 100 (0 = default 10)")
    for name in ("confidence", "alpha", "mmr_strength"):
        value = getattr(r, name)
        if not 0.0 <= value <= 1.0:
            raise InvalidArgument(f"{f}.{name}", "must be between 0 and 1")
    for name in ("num_search_messages", "max_query_length"):
        if getattr(r, name) < 0:
            raise InvalidArgument(f"{f}.{name}", "must not be negative")
    if r.mode not in (
        docs_pb2.DOC_SEARCH_MODE_UNSPECIFIED,
        docs_pb2.DOC_SEARCH_MODE_TEXT,
        docs_pb2.DOC_SEARCH_MODE_VECTOR,
        docs_pb2.DOC_SEARCH_MODE_HYBRID,
    ):
        raise InvalidArgument(f"{f}.mode", "is not a known search mode")
    options: dict[str, Any] = json_format.MessageToDict(r, preserving_proto_field_name=True)
    return options


def _values(session: sessions_pb2.Session, paths: list[str], prefix: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in paths:
        f = f"{prefix}.{path}"
        if path in ("situation", "system_template"):
            values[path] = max_len(getattr(session, path), f, 100_000)
        elif path == "render_templates":
            values[path] = session.render_templates if session.HasField("render_templates") else True
        elif path == "token_budget":
            if session.token_budget < 0:
                raise InvalidArgument(f, "must not be negative")
            values[path] = session.token_budget
        elif path == "context_overflow":
            if session.context_overflow not in _OVERFLOW:
                raise InvalidArgument(f, "is not none, truncate or adaptive")
            values[path] = _OVERFLOW[session.context_overflow]
        elif path in ("auto_run_tools", "forward_tool_calls"):
            values[path] = getattr(session, path)
        elif path == "recall_options":
            values[path] = _recall(session, f)
        elif path == "metadata":
            values[path] = check_metadata(session.HasField("metadata"), session.metadata, f)
    return values


def message_content(row: dict[str, Any]) -> dict[str, Any]:
    return row["content"] if isinstance(row["content"], dict) else {"text": row["content"]}


def entry_to_proto(row: dict[str, Any]) -> sessions_pb2.Entry:
    content = row["content"]
    msg = sessions_pb2.ChatMessage(role=row["role"], name=row["name"], tool_call_id=row["tool_call_id"])
    if isinstance(content, str):
        msg.content = content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                json_format.ParseDict(part, msg.content_parts.add(), ignore_unknown_fields=True)
    for call in row["tool_calls"] or []:
        msg.tool_calls.append(
            executions_pb2.ToolCall(
                id=call.get("id", ""),
                type=call.get("type", "function"),
                name=call.get("name", ""),
                arguments=to_struct(call.get("arguments") or {}),
            )
        )
    return sessions_pb2.Entry(
        id=str(row["id"]),
        session_id=str(row["session_id"]),
        message=msg,
        source=row["source"],
        token_count=row["token_count"],
        tokenizer=row["tokenizer"],
        model=row["model"],
        timestamp=to_timestamp(row["timestamp"]),
        created_at=to_timestamp(row["created_at"]),
    )


async def _delete_entries(rt: Runtime, conn: Any, dev: uuid.UUID, id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM entries WHERE developer_id = %s AND session_id = %s", (dev, id))


SESSION_CRUD = Crud(
    spec=SESSIONS,
    field="session",
    fields=_FIELDS,
    to_proto=session_to_proto,
    values=_values,
    list_response=sessions_pb2.ListSessionsResponse,
    list_field="sessions",
    on_delete=_delete_entries,
)


class SessionServicer(Servicer, sessions_pb2_grpc.SessionServiceServicer):
    @unary
    async def CreateSession(
        self, request: sessions_pb2.CreateSessionRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> sessions_pb2.Session:
        s = request.session
        agents = [parse_id(s.agent, "session.agent")] if s.agent else []
        agents += [parse_id(a, f"session.agents[{i}]") for i, a in enumerate(s.agents)]
        users = [parse_id(s.user, "session.user")] if s.user else []
        users += [parse_id(u, f"session.users[{i}]") for i, u in enumerate(s.users)]
        if not agents:
            raise InvalidArgument("session.agents", "at least one agent is required (agent or agents)")
        agents = list(dict.fromkeys(agents))
        users = list(dict.fromkeys(users))
        found = await self.rt.db.exists(AGENTS, dev, agents)
        for i, a in enumerate(agents):
            if a not in found:
                raise NotFoundError(
                    f"agent {a} not found",
                    reason="AGENT_NOT_FOUND",
                    metadata={"id": str(a), "field": f"session.agents[{i}]"},
                )
        found = await self.rt.db.exists(USERS, dev, users)
        for i, u in enumerate(users):
            if u not in found:
                raise NotFoundError(
                    f"user {u} not found",
                    reason="USER_NOT_FOUND",
                    metadata={"id": str(u), "field": f"session.users[{i}]"},
                )
        return await SESSION_CRUD.create(
            self, request, context, dev, extra={"agents": agents, "users": users}
        )

    GetSession = unary(SESSION_CRUD.get)
    ListSessions = unary(SESSION_CRUD.list)
    UpdateSession = unary(SESSION_CRUD.update)
    DeleteSession = unary(SESSION_CRUD.delete)

    @unary
    async def ListEntries(
        self, request: sessions_pb2.ListEntriesRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> sessions_pb2.ListEntriesResponse:
        session_id = parse_id(request.session_id, "session_id")
        await self.rt.db.get(SESSIONS, dev, session_id)
        size = page_size(request.page_size, self.rt)
        after = -1
        if request.page_token:
            try:
                after = int(request.page_token)
            except ValueError:
                raise InvalidArgument("page_token", "is not a token this server issued") from None
        async with self.rt.db.connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT * FROM entries WHERE developer_id = %s AND session_id = %s AND seq > %s ORDER BY seq LIMIT %s",
                    (dev, session_id, after, size + 1),
                )
            ).fetchall()
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = str(rows[-1]["seq"])
        return sessions_pb2.ListEntriesResponse(
            entries=[entry_to_proto(r) for r in rows], next_page_token=token
        )

    @unary
    async def DeleteEntries(
        self, request: sessions_pb2.DeleteEntriesRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> empty_pb2.Empty:
        session_id = parse_id(request.session_id, "session_id")
        async with self.rt.db.transaction() as conn:
            await self.rt.db.get(SESSIONS, dev, session_id, conn=conn)
            await conn.execute(
                "DELETE FROM entries WHERE developer_id = %s AND session_id = %s", (dev, session_id)
            )
        return empty_pb2.Empty()
