"""Every table, registered on one metadata (what alembic migrates and compares)."""

from __future__ import annotations

from sqlmodel import SQLModel

from . import tables  # noqa: F401  (registers the core tables)

metadata = SQLModel.metadata

__all__ = ["metadata"]
