"""Tables for documents and their searchable chunks.

Design note. A doc keeps what the user sent (title, the content list, metadata); its chunks are
what search reads. Each chunk row carries copies of the doc's owner and title so the text and
vector indexes can be filtered without a join (a title change must rewrite `doc_chunks.title`).

Full-text search: `search_config regconfig` is stored per chunk (the doc's language mapped to a
built-in text search configuration) and `tsv` is a STORED generated column
`setweight(to_tsvector(search_config, title), 'A') || setweight(to_tsvector(search_config, content), 'B')`
with a GIN index. Rejected: one tsvector per language column (a column per language), and
`to_tsvector(text)` with the session's default config (results would depend on a GUC).

Embeddings: `embedding` is an *untyped* pgvector `vector` column plus `embedding_dimensions`, so the
size is a server setting that can change (re-embed) without a migration. Each size gets its own
partial expression HNSW index, created on demand by `ensure_vector_index` / `ddl_statements`:
  ≤ 2,000 dims:        ((embedding::vector(N)) vector_cosine_ops)   WHERE embedding_dimensions = N
  2,001–4,000 dims:    ((embedding::halfvec(N)) halfvec_cosine_ops) WHERE embedding_dimensions = N
  > 4,000:             rejected (pgvector's HNSW limit for halfvec).
Queries repeat the same cast and predicate (the size as a literal) so the planner picks the index.
Rejected: a typed `vector(1024)` column (Julep hard-coded 1024; a new size means a migration and
re-embedding everything at once) and one table per size (a new table per model change).
Index names start with `doc_chunks_embedding_hnsw_` so an alembic `include_name` hook can ignore them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pgvector.sqlalchemy import VECTOR
from sqlalchemy import (
    CheckConstraint,
    Column,
    Computed,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, REGCONFIG, TSVECTOR
from sqlmodel import Field, SQLModel

from mintleaf_server.documents.errors import DimensionsUnsupported

from .base import created_at_field, updated_at_field

__all__ = [
    "HNSW_INDEX_PREFIX",
    "MAX_HALFVEC_DIMENSIONS",
    "MAX_VECTOR_DIMENSIONS",
    "Doc",
    "DocChunk",
    "check_dimensions",
    "ddl_statements",
    "hnsw_index_name",
    "hnsw_index_statement",
    "vector_cast",
]

MAX_VECTOR_DIMENSIONS = 2000  # pgvector HNSW limit for `vector`
MAX_HALFVEC_DIMENSIONS = 4000  # pgvector HNSW limit for `halfvec`
HNSW_INDEX_PREFIX = "doc_chunks_embedding_hnsw_"

_TSV_EXPRESSION = (
    "setweight(to_tsvector(search_config, coalesce(title, '')), 'A') || "
    "setweight(to_tsvector(search_config, content), 'B')"
)


class Doc(SQLModel, table=True):
    __tablename__ = "docs"
    __table_args__ = (
        CheckConstraint("owner_type IN ('agent', 'user')", name="docs_owner_type_check"),
        CheckConstraint("jsonb_typeof(content) = 'array'", name="docs_content_array_check"),
        # Listing an owner's docs pages by keyset on (created_at, id).
        Index("docs_owner_created_idx", "developer_id", "owner_type", "owner_id", "created_at", "id"),
        Index(
            "docs_metadata_gin_idx",
            "metadata",
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
        ),
    )

    developer_id: uuid.UUID = Field(primary_key=True)
    id: uuid.UUID = Field(primary_key=True)
    owner_type: str = Field(sa_column=Column(String(16), nullable=False))
    owner_id: uuid.UUID = Field(nullable=False)
    title: str = Field(sa_column=Column(String(800), nullable=False))
    content: list[str] = Field(default_factory=list, sa_column=Column(JSONB, nullable=False))
    embed_instruction: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # `metadata` is reserved on declarative classes, hence the attribute name.
    metadata_: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    )
    language: str = Field(sa_column=Column(Text, nullable=False, server_default=text("'english'")))
    embedding_model: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    embedding_dimensions: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))
    created_at: datetime = created_at_field()
    updated_at: datetime = updated_at_field()


class DocChunk(SQLModel, table=True):
    __tablename__ = "doc_chunks"
    __table_args__ = (
        ForeignKeyConstraint(
            ["developer_id", "doc_id"],
            ["docs.developer_id", "docs.id"],
            ondelete="CASCADE",
            name="doc_chunks_doc_fkey",
        ),
        CheckConstraint(
            f"embedding_dimensions IS NULL OR embedding_dimensions BETWEEN 1 AND {MAX_HALFVEC_DIMENSIONS}",
            name="doc_chunks_embedding_dimensions_check",
        ),
        Index("doc_chunks_owner_idx", "developer_id", "owner_type", "owner_id"),
        Index("doc_chunks_tsv_gin_idx", "tsv", postgresql_using="gin"),
    )

    developer_id: uuid.UUID = Field(primary_key=True)
    doc_id: uuid.UUID = Field(primary_key=True)
    chunk_index: int = Field(primary_key=True)
    # Which item of the doc's content list this chunk came from (Julep's snippet `index`).
    content_index: int = Field(sa_column=Column(Integer, nullable=False))
    owner_type: str = Field(sa_column=Column(String(16), nullable=False))
    owner_id: uuid.UUID = Field(nullable=False)
    title: str = Field(sa_column=Column(String(800), nullable=False))
    content: str = Field(sa_column=Column(Text, nullable=False))
    search_config: str = Field(sa_column=Column(REGCONFIG, nullable=False))
    tsv: str | None = Field(
        default=None, sa_column=Column(TSVECTOR, Computed(_TSV_EXPRESSION, persisted=True))
    )
    embedding: Any = Field(default=None, sa_column=Column(VECTOR(), nullable=True))
    embedding_model: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    embedding_dimensions: int | None = Field(default=None, sa_column=Column(Integer, nullable=True))


def check_dimensions(dimensions: int, field: str = "dimensions") -> int:
    """Return `dimensions` if an HNSW index can hold it, else raise DimensionsUnsupported."""
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
        raise DimensionsUnsupported(field, f"must be a positive integer, got {dimensions!r}")
    if dimensions > MAX_HALFVEC_DIMENSIONS:
        raise DimensionsUnsupported(
            field,
            f"{dimensions} dimensions is more than pgvector's HNSW index holds "
            f"(≤ {MAX_VECTOR_DIMENSIONS} as vector, ≤ {MAX_HALFVEC_DIMENSIONS} as halfvec)",
        )
    return dimensions


def vector_cast(dimensions: int) -> str:
    """The SQL type the `embedding` column is cast to for this size: `vector(N)` or `halfvec(N)`."""
    n = check_dimensions(dimensions)
    return f"vector({n})" if n <= MAX_VECTOR_DIMENSIONS else f"halfvec({n})"


def hnsw_index_name(dimensions: int) -> str:
    return f"{HNSW_INDEX_PREFIX}{check_dimensions(dimensions)}"


def hnsw_index_statement(dimensions: int) -> str:
    n = check_dimensions(dimensions)
    ops = "vector_cosine_ops" if n <= MAX_VECTOR_DIMENSIONS else "halfvec_cosine_ops"
    return (
        f"CREATE INDEX IF NOT EXISTS {hnsw_index_name(n)} ON doc_chunks "
        f"USING hnsw ((embedding::{vector_cast(n)}) {ops}) WHERE embedding_dimensions = {n}"
    )


def ddl_statements(dimensions: list[int] | tuple[int, ...] = ()) -> list[str]:
    """DDL beyond what `SQLModel.metadata.create_all` emits for these tables, to run after it:
    one HNSW index per embedding size in `dimensions` (the configured size; others are created on
    demand). The `vector` extension must exist *before* the tables: `CREATE EXTENSION IF NOT EXISTS vector`."""
    return [hnsw_index_statement(n) for n in sorted(set(dimensions))]
