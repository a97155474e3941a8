"""Conventions shared by every table.

Every tenant-owned row carries `developer_id`; the primary key is (developer_id, id) so a client-chosen
id never collides with (or reveals) another developer's row. Timestamps are UTC `timestamptz`.
Free-form JSON is JSONB. Table classes are SQLModel models registered on `SQLModel.metadata`, which
alembic compares against the migrated schema."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Column, DateTime, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field

__all__ = ["created_at_field", "jsonb_field", "metadata_field", "new_id", "now", "updated_at_field"]


def now() -> datetime:
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    """Time-ordered UUIDv7, so ids sort by creation and index locality stays good."""
    ms = int(datetime.now(UTC).timestamp() * 1000)
    rand = uuid.uuid4().int & ((1 << 74) - 1)
    value = (
        (ms & ((1 << 48) - 1)) << 80
        | (0x7 << 76)
        | ((rand >> 62) & 0xFFF) << 64
        | (0b10 << 62)
        | (rand & ((1 << 62) - 1))
    )
    return uuid.UUID(int=value)


def jsonb_field(default: Any = None, nullable: bool = False) -> Any:
    factory = (lambda: {}) if default is None and not nullable else (lambda: default)
    return Field(
        default_factory=factory,
        sa_column=Column(JSONB, nullable=nullable, server_default=None if nullable else text("'{}'::jsonb")),
    )


def metadata_field() -> Any:
    """The free-form `metadata` JSONB column (the attribute is `metadata_`: SQLAlchemy reserves
    `metadata` on declarative classes)."""
    return Field(
        default_factory=dict,
        sa_column=Column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    )


def created_at_field() -> Any:
    return Field(
        default_factory=now,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=text("now()")),
    )


def updated_at_field() -> Any:
    return Field(
        default_factory=now,
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=text("now()")),
    )
