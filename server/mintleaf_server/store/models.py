"""Every table, registered on one metadata (what alembic migrates and compares)."""

from __future__ import annotations

from sqlmodel import SQLModel

from . import docs, executions, tables  # noqa: F401  (registers the tables)
from .docs import HNSW_INDEX_PREFIX


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Per-dimension HNSW indexes are created on demand (documents), not by migrations."""
    return not (type_ == "index" and name is not None and name.startswith(HNSW_INDEX_PREFIX))


metadata = SQLModel.metadata

__all__ = ["include_object", "metadata"]
