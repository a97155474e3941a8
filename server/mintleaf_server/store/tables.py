"""SQLModel tables of the core resources (tenancy, agents, tools, users, sessions, entries, tasks,
secrets). Documents live in docs.py and executions in executions.py; all register on one
SQLModel.metadata that alembic compares with the migrated schema.

These are persistence models, not API models: api/convert.py maps them to and from the protos."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, Index, LargeBinary, UniqueConstraint, Uuid, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.types import Text
from sqlmodel import Field, SQLModel

from .base import created_at_field, jsonb_field, metadata_field, updated_at_field

__all__ = [
    "Agent",
    "ApiKey",
    "Developer",
    "Entry",
    "ExecutionContextRow",
    "IdempotencyKey",
    "Secret",
    "ServerState",
    "Session",
    "Task",
    "TaskVersion",
    "Tool",
    "User",
]


class Developer(SQLModel, table=True):
    __tablename__ = "developers"

    id: uuid.UUID = Field(primary_key=True)
    name: str = Field(default="")
    created_at: datetime = created_at_field()


class ApiKey(SQLModel, table=True):
    """An API key. Only an HMAC-SHA-256 of the key is stored (a keyed fast hash: every call checks
    one, so bcrypt-class hashing would cost a millisecond per request); `prefix` is shown in lists."""

    __tablename__ = "api_keys"

    id: uuid.UUID = Field(primary_key=True)
    developer_id: uuid.UUID = Field(foreign_key="developers.id", index=True, ondelete="CASCADE")
    key_hash: bytes = Field(sa_column=Column(LargeBinary, nullable=False, unique=True))
    prefix: str
    name: str = Field(default="")
    created_at: datetime = created_at_field()
    revoked_at: datetime | None = Field(default=None)


class IdempotencyKey(SQLModel, table=True):
    """Maps a create's request_id to the resource it created, so a retried create returns it."""

    __tablename__ = "idempotency_keys"

    developer_id: uuid.UUID = Field(primary_key=True, foreign_key="developers.id", ondelete="CASCADE")
    kind: str = Field(primary_key=True)
    request_id: str = Field(primary_key=True)
    resource_id: uuid.UUID
    created_at: datetime = created_at_field()


class Agent(SQLModel, table=True):
    __tablename__ = "agents"
    __table_args__ = (
        UniqueConstraint("developer_id", "canonical_name", name="agents_canonical_name_key"),
        Index("agents_metadata_gin", "metadata", postgresql_using="gin"),
    )

    developer_id: uuid.UUID = Field(primary_key=True, foreign_key="developers.id", ondelete="CASCADE")
    id: uuid.UUID = Field(primary_key=True)
    name: str
    canonical_name: str | None = Field(default=None)
    project: str = Field(default="")
    about: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    model: str = Field(default="")
    instructions: list[str] = Field(
        default_factory=list, sa_column=Column(ARRAY(Text), nullable=False, server_default=text("'{}'"))
    )
    default_settings: dict[str, Any] = jsonb_field()
    default_system_template: str = Field(
        default="", sa_column=Column(Text, nullable=False, server_default="")
    )
    metadata_: dict[str, Any] = metadata_field()
    created_at: datetime = created_at_field()
    updated_at: datetime = updated_at_field()


class Tool(SQLModel, table=True):
    """An agent's tool. `spec` holds the kind-specific definition (function/integration/...)."""

    __tablename__ = "tools"
    __table_args__ = (
        UniqueConstraint("developer_id", "agent_id", "name", name="tools_agent_name_key"),
        Index("tools_agent_idx", "developer_id", "agent_id"),
    )

    developer_id: uuid.UUID = Field(primary_key=True, foreign_key="developers.id", ondelete="CASCADE")
    id: uuid.UUID = Field(primary_key=True)
    agent_id: uuid.UUID
    name: str
    type: str
    description: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    spec: dict[str, Any] = jsonb_field()
    created_at: datetime = created_at_field()
    updated_at: datetime = updated_at_field()


class User(SQLModel, table=True):
    __tablename__ = "users"
    __table_args__ = (Index("users_metadata_gin", "metadata", postgresql_using="gin"),)

    developer_id: uuid.UUID = Field(primary_key=True, foreign_key="developers.id", ondelete="CASCADE")
    id: uuid.UUID = Field(primary_key=True)
    name: str = Field(default="")
    about: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    project: str = Field(default="")
    metadata_: dict[str, Any] = metadata_field()
    created_at: datetime = created_at_field()
    updated_at: datetime = updated_at_field()


class Session(SQLModel, table=True):
    __tablename__ = "sessions"
    __table_args__ = (Index("sessions_metadata_gin", "metadata", postgresql_using="gin"),)

    developer_id: uuid.UUID = Field(primary_key=True, foreign_key="developers.id", ondelete="CASCADE")
    id: uuid.UUID = Field(primary_key=True)
    agents: list[uuid.UUID] = Field(sa_column=Column(ARRAY(Uuid), nullable=False))
    users: list[uuid.UUID] = Field(
        default_factory=list,
        sa_column=Column(ARRAY(Uuid), nullable=False, server_default=text("'{}'")),
    )
    situation: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    system_template: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    summary: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    render_templates: bool = Field(default=True)
    token_budget: int = Field(default=0)
    context_overflow: str = Field(default="none")
    auto_run_tools: bool = Field(default=False)
    forward_tool_calls: bool = Field(default=False)
    recall_options: dict[str, Any] | None = jsonb_field(nullable=True)
    metadata_: dict[str, Any] = metadata_field()
    created_at: datetime = created_at_field()
    updated_at: datetime = updated_at_field()


class Entry(SQLModel, table=True):
    """A stored chat message. `seq` orders a session's history (ids are UUIDv7 too)."""

    __tablename__ = "entries"
    __table_args__ = (Index("entries_session_seq_idx", "developer_id", "session_id", "seq"),)

    developer_id: uuid.UUID = Field(primary_key=True, foreign_key="developers.id", ondelete="CASCADE")
    id: uuid.UUID = Field(primary_key=True)
    session_id: uuid.UUID
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    role: str
    name: str = Field(default="")
    content: Any = Field(default=None, sa_column=Column(JSONB, nullable=True))
    tool_calls: Any = Field(default=None, sa_column=Column(JSONB, nullable=True))
    tool_call_id: str = Field(default="")
    source: str = Field(default="api_request")
    token_count: int = Field(default=0)
    tokenizer: str = Field(default="")
    model: str = Field(default="")
    timestamp: datetime = created_at_field()
    created_at: datetime = created_at_field()


class Task(SQLModel, table=True):
    """A task's identity and latest version; every version's document is in task_versions."""

    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("developer_id", "canonical_name", name="tasks_canonical_name_key"),
        Index("tasks_agent_idx", "developer_id", "agent_id"),
        Index("tasks_metadata_gin", "metadata", postgresql_using="gin"),
    )

    developer_id: uuid.UUID = Field(primary_key=True, foreign_key="developers.id", ondelete="CASCADE")
    id: uuid.UUID = Field(primary_key=True)
    agent_id: uuid.UUID
    canonical_name: str | None = Field(default=None)
    latest_version: int = Field(default=1)
    metadata_: dict[str, Any] = metadata_field()
    created_at: datetime = created_at_field()
    updated_at: datetime = updated_at_field()


class TaskVersion(SQLModel, table=True):
    """One immutable version of a task document; executions pin (task_id, version)."""

    __tablename__ = "task_versions"

    developer_id: uuid.UUID = Field(primary_key=True, foreign_key="developers.id", ondelete="CASCADE")
    task_id: uuid.UUID = Field(primary_key=True)
    version: int = Field(primary_key=True)
    name: str
    description: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    definition: dict[str, Any] = jsonb_field()
    explain: dict[str, Any] = jsonb_field()
    warnings: list[str] = Field(
        default_factory=list, sa_column=Column(ARRAY(Text), nullable=False, server_default=text("'{}'"))
    )
    created_at: datetime = created_at_field()


class Secret(SQLModel, table=True):
    """A developer's secret. The value is stored as given: protect the database (docs/security)."""

    __tablename__ = "secrets"
    __table_args__ = (UniqueConstraint("developer_id", "name", name="secrets_name_key"),)

    developer_id: uuid.UUID = Field(primary_key=True, foreign_key="developers.id", ondelete="CASCADE")
    id: uuid.UUID = Field(primary_key=True)
    name: str
    description: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    value: str = Field(sa_column=Column(Text, nullable=False))
    metadata_: dict[str, Any] = metadata_field()
    created_at: datetime = created_at_field()
    updated_at: datetime = updated_at_field()


class ServerState(SQLModel, table=True):
    """Server-wide values every replica must agree on (the API-key HMAC secret)."""

    __tablename__ = "server_state"

    key: str = Field(primary_key=True)
    value: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class ExecutionContextRow(SQLModel, table=True):
    """What an execution resolved once and keeps: its agent and tool definitions (never secrets,
    which are read fresh at each call so a rotated key takes effect)."""

    __tablename__ = "execution_contexts"

    developer_id: uuid.UUID = Field(primary_key=True, foreign_key="developers.id", ondelete="CASCADE")
    execution_id: uuid.UUID = Field(primary_key=True)
    context: dict[str, Any] = jsonb_field()
    created_at: datetime = created_at_field()
