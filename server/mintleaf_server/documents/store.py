"""Documents: create, read, list, delete, re-embed and search, over one psycopg async connection.

Design note. Every function takes an open `psycopg.AsyncConnection` (from the caller's pool) and
runs the named statements of `queries`; none needs per-connection setup (vectors travel as text).
A create embeds *before* its transaction opens, so no transaction waits on an embedding API, then
inserts the doc and all its chunks atomically. Search is chunk-level in SQL (text: GIN + ts_rank_cd;
vector: HNSW partial index per size) and doc-level in Python: fusion, one best chunk per doc, MMR
(`ranking`). Rejected: embedding in a background job (Julep's vectorizer; a doc was not
vector-searchable for a while and nothing said so) and fusing in SQL (MMR needs the embeddings in
Python anyway, and the candidate lists are small: limit × k_multiplier rows per side).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, NamedTuple

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

from mintleaf_server.store.base import new_id, now
from mintleaf_server.store.docs import Doc, check_dimensions, hnsw_index_name, hnsw_index_statement

from . import queries
from .chunking import ChunkingConfig, chunk_content
from .embeddings import Embedder, embed_batched
from .errors import DocInvalid, DocNotFound, EmbeddingUnavailable, InvalidArgument, SearchInvalid
from .languages import resolve_language
from .ranking import fuse_alpha, fuse_rrf, mmr

__all__ = [
    "MAX_CONTENT_ITEM_CHARS",
    "MAX_SEARCH_LIMIT",
    "ChunkHit",
    "DocPage",
    "ExtensionSupport",
    "Mode",
    "Owner",
    "SearchHit",
    "SearchResults",
    "create_doc",
    "delete_doc",
    "delete_docs_by_filter",
    "embedding_input",
    "ensure_vector_index",
    "extension_support",
    "get_doc",
    "list_docs",
    "reembed",
    "search",
]

MAX_TITLE_CHARS = 800
MAX_CONTENT_ITEM_CHARS = 30_000
MAX_SEARCH_LIMIT = 50
MAX_PAGE_SIZE = 1000
DEFAULT_EF_SEARCH = 100  # measured in bench/bench_docs.py: recall@10 ≥ 0.95 at 100k chunks
MAX_EF_SEARCH = 1000  # pgvector's upper bound

Conn = psycopg.AsyncConnection[Any]


class Owner(NamedTuple):
    type: str  # 'agent' | 'user'
    id: uuid.UUID


@dataclass(frozen=True)
class DocPage:
    docs: list[Doc]
    # Pass back as `after` for the next page; None on the last page.
    next_after: tuple[datetime, uuid.UUID] | None


@dataclass(frozen=True)
class ChunkHit:
    chunk_index: int
    content_index: int
    content: str


@dataclass(frozen=True)
class SearchHit:
    doc: Doc
    chunk: ChunkHit
    # text: ts_rank_cd normalised to [0, 1); vector: cosine similarity (1 − distance);
    # hybrid: fused score in [0, 1]. Higher is better in every mode.
    score: float


@dataclass(frozen=True)
class SearchResults:
    hits: list[SearchHit]
    mode: str
    # "pg_trgm" when fuzzy matching took part in this search, else None.
    fuzzy: str | None


@dataclass(frozen=True)
class ExtensionSupport:
    pg_trgm: bool
    unaccent: bool

    @property
    def fuzzy(self) -> str | None:
        """The active fuzzy-match extension, if any."""
        return "pg_trgm" if self.pg_trgm else None


# ---------------------------------------------------------------------------------------------
# Helpers


def _vector_text(vector: Sequence[float]) -> str:
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


def _doc(row: dict[str, Any]) -> Doc:
    fields = dict(row)
    return Doc(metadata_=fields.pop("metadata"), **fields)


def _check_owner(owner: Owner, field: str = "owner") -> Owner:
    kind, owner_id = owner
    if kind not in ("agent", "user"):
        raise DocInvalid(f"{field}.type", f"must be 'agent' or 'user', got {kind!r}")
    if not isinstance(owner_id, uuid.UUID):
        raise DocInvalid(f"{field}.id", "must be a UUID")
    return Owner(kind, owner_id)


def _check_filter(
    metadata_filter: Mapping[str, Any] | None, error: type[DocInvalid | SearchInvalid]
) -> Jsonb:
    if metadata_filter is None:
        return Jsonb({})
    if not isinstance(metadata_filter, Mapping):
        raise error("metadata_filter", "must be a JSON object")
    return Jsonb(dict(metadata_filter))


def embedding_input(title: str, chunk: str, embed_instruction: str | None) -> str:
    """The text embedded for a chunk: the instruction (if any), the doc title, then the chunk."""
    head = f"{embed_instruction.strip()}\n\n" if embed_instruction and embed_instruction.strip() else ""
    return f"{head}Title: {title}\n\n{chunk}"


async def extension_support(conn: Conn) -> ExtensionSupport:
    """Which optional extensions are installed in this database (the embedded PostgreSQL has neither)."""
    cur = conn.cursor(row_factory=tuple_row)  # whatever the connection's own row factory is
    await cur.execute(queries.EXTENSIONS)
    names = {row[0] for row in await cur.fetchall()}
    return ExtensionSupport(pg_trgm="pg_trgm" in names, unaccent="unaccent" in names)


async def ensure_vector_index(conn: Conn, dimensions: int) -> None:
    """Create the HNSW index for this embedding size if it does not exist yet."""
    cur = conn.cursor(row_factory=tuple_row)
    await cur.execute(queries.INDEX_EXISTS, {"name": hnsw_index_name(dimensions)})
    row = await cur.fetchone()
    if row is not None and row[0]:
        return
    try:
        async with conn.transaction():
            await conn.execute(hnsw_index_statement(dimensions))  # built from a checked int
    except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
        pass  # a concurrent create made it first


# ---------------------------------------------------------------------------------------------
# Docs


async def create_doc(
    conn: Conn,
    *,
    developer_id: uuid.UUID,
    owner: Owner | tuple[str, uuid.UUID],
    title: str,
    content: str | Sequence[str],
    metadata: Mapping[str, Any] | None = None,
    embed_instruction: str | None = None,
    language: str | None = None,
    embedder: Embedder | None = None,
    chunking: ChunkingConfig = ChunkingConfig(),
    doc_id: uuid.UUID | None = None,
) -> Doc:
    """Chunk, embed (when an embedder is given) and store a doc with its chunks in one transaction.

    A client-chosen `doc_id` makes the call idempotent: a retry returns the doc stored first."""
    owner = _check_owner(Owner(*owner))
    if not isinstance(title, str) or not title.strip():
        raise DocInvalid("title", "must not be empty")
    if len(title) > MAX_TITLE_CHARS:
        raise DocInvalid("title", f"must be at most {MAX_TITLE_CHARS} characters")
    items = [content] if isinstance(content, str) else list(content)
    if not items:
        raise DocInvalid("content", "must not be empty")
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item.strip():
            raise DocInvalid(f"content[{i}]", "must be a non-empty string")
        if len(item) > MAX_CONTENT_ITEM_CHARS:
            raise DocInvalid(f"content[{i}]", f"must be at most {MAX_CONTENT_ITEM_CHARS} characters")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise DocInvalid("metadata", "must be a JSON object")
    try:
        config = resolve_language(language)
    except InvalidArgument as exc:
        raise DocInvalid(exc.field, exc.message) from exc

    if doc_id is not None:
        existing = await _existing(conn, developer_id, doc_id, owner)
        if existing is not None:
            return existing

    chunks = chunk_content(items, chunking)
    vectors: list[list[float]] | list[None] = [None] * len(chunks)
    if embedder is not None:
        check_dimensions(embedder.dimensions)
        vectors = await embed_batched(
            embedder, [embedding_input(title, c.text, embed_instruction) for c in chunks]
        )
        await ensure_vector_index(conn, embedder.dimensions)

    new_doc_id = doc_id or new_id()
    model = embedder.model if embedder else None
    dims = embedder.dimensions if embedder else None
    async with conn.transaction():
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            queries.INSERT_DOC,
            {
                "developer_id": developer_id,
                "id": new_doc_id,
                "owner_type": owner.type,
                "owner_id": owner.id,
                "title": title,
                "content": Jsonb(items),
                "embed_instruction": embed_instruction,
                "metadata": Jsonb(dict(metadata or {})),
                "language": config,
                "embedding_model": model,
                "embedding_dimensions": dims,
                "now": now(),
            },
        )
        row = await cur.fetchone()
        if row is not None:
            await cur.executemany(
                queries.INSERT_CHUNK,
                [
                    {
                        "developer_id": developer_id,
                        "doc_id": new_doc_id,
                        "chunk_index": chunk.chunk_index,
                        "content_index": chunk.content_index,
                        "owner_type": owner.type,
                        "owner_id": owner.id,
                        "title": title,
                        "content": chunk.text,
                        "search_config": config,
                        "embedding": None if vector is None else _vector_text(vector),
                        "embedding_model": model,
                        "embedding_dimensions": dims,
                    }
                    for chunk, vector in zip(chunks, vectors, strict=True)
                ],
            )
            return _doc(row)
    # A concurrent create with the same client-chosen id won the race.
    existing = await _existing(conn, developer_id, new_doc_id, owner)
    if existing is None:  # pragma: no cover - deleted between the two statements
        raise DocNotFound(new_doc_id)
    return existing


async def _existing(conn: Conn, developer_id: uuid.UUID, doc_id: uuid.UUID, owner: Owner) -> Doc | None:
    try:
        doc = await get_doc(conn, developer_id=developer_id, doc_id=doc_id)
    except DocNotFound:
        return None
    if (doc.owner_type, doc.owner_id) != (owner.type, owner.id):
        raise DocInvalid("id", f"doc {doc_id} already exists with another owner")
    return doc


async def get_doc(conn: Conn, *, developer_id: uuid.UUID, doc_id: uuid.UUID) -> Doc:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(queries.GET_DOC, {"developer_id": developer_id, "id": doc_id})
    row = await cur.fetchone()
    if row is None:
        raise DocNotFound(doc_id)
    return _doc(row)


async def list_docs(
    conn: Conn,
    *,
    developer_id: uuid.UUID,
    owner: Owner | tuple[str, uuid.UUID] | None = None,
    metadata_filter: Mapping[str, Any] | None = None,
    page_size: int = 100,
    after: tuple[datetime, uuid.UUID] | None = None,
) -> DocPage:
    """One page of docs, oldest first, keyset-paged on (created_at, id)."""
    if not 1 <= page_size <= MAX_PAGE_SIZE:
        raise DocInvalid("page_size", f"must be between 1 and {MAX_PAGE_SIZE}")
    checked = _check_owner(Owner(*owner)) if owner is not None else None
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        queries.LIST_DOCS,
        {
            "developer_id": developer_id,
            "owner_type": checked.type if checked else None,
            "owner_id": checked.id if checked else None,
            "metadata_filter": _check_filter(metadata_filter, DocInvalid),
            "after_created_at": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": page_size + 1,
        },
    )
    rows = await cur.fetchall()
    docs = [_doc(row) for row in rows[:page_size]]
    next_after = (docs[-1].created_at, docs[-1].id) if len(rows) > page_size else None
    return DocPage(docs=docs, next_after=next_after)


async def delete_doc(
    conn: Conn,
    *,
    developer_id: uuid.UUID,
    doc_id: uuid.UUID,
    owner: Owner | tuple[str, uuid.UUID] | None = None,
) -> None:
    """Delete a doc and its chunks; with `owner`, only if it belongs to that owner. DocNotFound if none."""
    checked = _check_owner(Owner(*owner)) if owner is not None else None
    async with conn.transaction():
        cur = await conn.execute(
            queries.DELETE_DOC,
            {
                "developer_id": developer_id,
                "id": doc_id,
                "owner_type": checked.type if checked else None,
                "owner_id": checked.id if checked else None,
            },
        )
        if cur.rowcount == 0:
            raise DocNotFound(doc_id)


async def delete_docs_by_filter(
    conn: Conn,
    *,
    developer_id: uuid.UUID,
    owner: Owner | tuple[str, uuid.UUID],
    metadata_filter: Mapping[str, Any] | None,
    delete_all: bool = False,
) -> int:
    """Delete an owner's docs whose metadata contains `metadata_filter`; returns how many.
    An empty filter matches every doc, so it needs `delete_all=True` (Julep's rule)."""
    checked = _check_owner(Owner(*owner))
    if not metadata_filter and not delete_all:
        raise DocInvalid("metadata_filter", "an empty filter deletes every doc of the owner; set delete_all")
    async with conn.transaction():
        cur = await conn.execute(
            queries.DELETE_DOCS_BY_FILTER,
            {
                "developer_id": developer_id,
                "owner_type": checked.type,
                "owner_id": checked.id,
                "metadata_filter": _check_filter(metadata_filter, DocInvalid),
            },
        )
        return cur.rowcount


async def reembed(
    conn: Conn,
    *,
    developer_id: uuid.UUID,
    embedder: Embedder,
    owner: Owner | tuple[str, uuid.UUID] | None = None,
    only_stale: bool = True,
) -> int:
    """Re-embed the chunks of an owner's docs (or all the developer's docs) with `embedder`, one
    transaction per doc. `only_stale` skips docs already embedded with this model and size.
    Returns the number of docs re-embedded."""
    checked = _check_owner(Owner(*owner)) if owner is not None else None
    check_dimensions(embedder.dimensions)
    await ensure_vector_index(conn, embedder.dimensions)
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        queries.STALE_DOCS,
        {
            "developer_id": developer_id,
            "owner_type": checked.type if checked else None,
            "owner_id": checked.id if checked else None,
            "only_stale": only_stale,
            "model": embedder.model,
            "dimensions": embedder.dimensions,
        },
    )
    docs = await cur.fetchall()
    for doc in docs:
        await cur.execute(queries.CHUNKS_FOR_REEMBED, {"developer_id": developer_id, "doc_id": doc["id"]})
        chunks = await cur.fetchall()
        vectors = await embed_batched(
            embedder, [embedding_input(doc["title"], c["content"], doc["embed_instruction"]) for c in chunks]
        )
        async with conn.transaction():
            common = {
                "developer_id": developer_id,
                "doc_id": doc["id"],
                "model": embedder.model,
                "dimensions": embedder.dimensions,
            }
            await cur.executemany(
                queries.UPDATE_CHUNK_EMBEDDING,
                [
                    {**common, "chunk_index": c["chunk_index"], "embedding": _vector_text(v)}
                    for c, v in zip(chunks, vectors, strict=True)
                ],
            )
            await cur.execute(queries.UPDATE_DOC_EMBEDDING, common)
    return len(docs)


# ---------------------------------------------------------------------------------------------
# Search

Mode = Literal["text", "vector", "hybrid"]
Key = tuple[uuid.UUID, int]  # (doc_id, chunk_index)


@dataclass
class _Candidate:
    doc_id: uuid.UUID
    chunk: ChunkHit
    embedding: list[float] | None


async def search(
    conn: Conn,
    *,
    developer_id: uuid.UUID,
    owners: Sequence[Owner | tuple[str, uuid.UUID]],
    mode: Mode,
    text: str | None = None,
    vector: Sequence[float] | None = None,
    embedder: Embedder | None = None,
    limit: int = 10,
    confidence: float = 0.5,
    alpha: float = 0.5,
    mmr_strength: float = 0.0,
    metadata_filter: Mapping[str, Any] | None = None,
    language: str | None = None,
    fusion: Literal["alpha", "rrf"] = "alpha",
    k_multiplier: int = 5,
    trigram_threshold: float | None = None,
    one_per_doc: bool = True,
    ef_search: int | None = None,
    exact: bool = False,
) -> SearchResults:
    """Search the docs of `owners` (all of one developer).

    text: full-text search in `language`; vector: cosine similarity ≥ `confidence` with the query
    `vector` (or `text` embedded by `embedder`); hybrid: both, fused by `fusion` with `alpha`
    weighting the vector side (0 = text only, 1 = vector only). `mmr_strength` in [0, 1)
    diversifies vector and hybrid results. Each side fetches `limit × k_multiplier` chunks;
    with `one_per_doc` a doc appears once, with its best chunk. `exact` bypasses the HNSW index."""
    if mode not in ("text", "vector", "hybrid"):
        raise SearchInvalid("mode", "must be 'text', 'vector' or 'hybrid'")
    if not owners:
        raise SearchInvalid("owners", "must name at least one owner")
    scope = []
    for i, owner in enumerate(owners):
        try:
            scope.append(_check_owner(Owner(*owner), f"owners[{i}]"))
        except DocInvalid as exc:
            raise SearchInvalid(exc.field, exc.message) from exc
    if isinstance(limit, bool) or not 1 <= limit <= MAX_SEARCH_LIMIT:
        raise SearchInvalid("limit", f"must be between 1 and {MAX_SEARCH_LIMIT}")
    if not -1.0 <= confidence <= 1.0:
        raise SearchInvalid("confidence", "must be between -1 and 1")
    if not 0.0 <= alpha <= 1.0:
        raise SearchInvalid("alpha", "must be between 0 and 1")
    if not 0.0 <= mmr_strength < 1.0:
        raise SearchInvalid("mmr_strength", "must be in [0, 1)")
    if not 1 <= k_multiplier <= 10:
        raise SearchInvalid("k_multiplier", "must be between 1 and 10")
    if fusion not in ("alpha", "rrf"):
        raise SearchInvalid("fusion", "must be 'alpha' or 'rrf'")
    if trigram_threshold is not None and not 0.0 <= trigram_threshold <= 1.0:
        raise SearchInvalid("trigram_threshold", "must be between 0 and 1")
    if ef_search is not None and not 1 <= ef_search <= MAX_EF_SEARCH:
        raise SearchInvalid("ef_search", f"must be between 1 and {MAX_EF_SEARCH}")
    try:
        config = resolve_language(language)
    except InvalidArgument as exc:
        raise SearchInvalid(exc.field, exc.message) from exc
    filter_json = _check_filter(metadata_filter, SearchInvalid)

    query_text = text.strip() if isinstance(text, str) else None
    if mode in ("text", "hybrid") and not query_text:
        raise SearchInvalid("text", f"{mode} search needs a non-empty query text")
    query_vector: list[float] | None = None
    if mode in ("vector", "hybrid"):
        query_vector = await _query_vector(query_text, vector, embedder)

    k = limit * k_multiplier
    if mode != "text" and mmr_strength > 0:
        k = max(k, 3 * limit)
    need_embeddings = mode != "text" and mmr_strength > 0
    params: dict[str, Any] = {
        "developer_id": developer_id,
        "owner_types": [o.type for o in scope],
        "owner_ids": [o.id for o in scope],
        "metadata_filter": filter_json,
        "with_embedding": need_embeddings,
        "k": k,
    }
    fuzzy = None
    candidates: dict[Key, _Candidate] = {}
    text_scores: dict[Key, float] = {}
    vector_scores: dict[Key, float] = {}
    async with conn.transaction():
        cur = conn.cursor(row_factory=dict_row)
        if query_text is not None and mode != "vector":
            # Not prepared: a generic plan cannot see the query's selectivity.
            await cur.execute(
                queries.SEARCH_TEXT, {**params, "config": config, "text": query_text}, prepare=False
            )
            text_scores = _collect(await cur.fetchall(), candidates)
            if trigram_threshold is not None and (await extension_support(conn)).pg_trgm:
                fuzzy = "pg_trgm"
                await cur.execute(
                    queries.SEARCH_TRIGRAM, {**params, "text": query_text, "threshold": trigram_threshold}
                )
                for key, score in _collect(await cur.fetchall(), candidates).items():
                    text_scores.setdefault(key, score)
        if query_vector is not None:
            dims = len(query_vector)
            await cur.execute(
                queries.SET_HNSW_SCAN,
                {
                    "ef_search": str(ef_search or min(MAX_EF_SEARCH, max(DEFAULT_EF_SEARCH, k))),
                    "enable_indexscan": "off" if exact else "on",
                },
            )
            await cur.execute(
                queries.vector_sql(queries.SEARCH_VECTOR, dims),
                {**params, "query": _vector_text(query_vector), "max_distance": 1.0 - confidence},
                # A prepared (generic) plan does not see the query vector and may skip the HNSW index.
                prepare=False,
            )
            vector_scores = _collect(await cur.fetchall(), candidates)

    if mode == "text":
        scores = text_scores
    elif mode == "vector":
        scores = vector_scores
    elif fusion == "rrf":
        scores = fuse_rrf(_ranked(text_scores), _ranked(vector_scores), alpha)
    else:
        scores = fuse_alpha(text_scores, vector_scores, alpha)

    if one_per_doc:
        best: dict[uuid.UUID, Key] = {}
        for key in _ranked(scores):
            best.setdefault(key[0], key)
        scores = {key: scores[key] for key in best.values()}
    if mode == "text" or mmr_strength == 0:
        picked = _ranked(scores)[:limit]
    else:
        picked = mmr(scores, {key: candidates[key].embedding for key in scores}, limit, mmr_strength)

    docs = await _docs_by_id(conn, developer_id, list(dict.fromkeys(key[0] for key in picked)))
    hits = [
        SearchHit(doc=docs[key[0]], chunk=candidates[key].chunk, score=scores[key])
        for key in picked
        if key[0] in docs
    ]
    return SearchResults(hits=hits, mode=mode, fuzzy=fuzzy)


async def _query_vector(
    query_text: str | None, vector: Sequence[float] | None, embedder: Embedder | None
) -> list[float]:
    if vector is not None:
        values = [float(x) for x in vector]
        if not values:
            raise SearchInvalid("vector", "must not be empty")
        check_dimensions(len(values), field="vector")
        if embedder is not None and len(values) != embedder.dimensions:
            raise SearchInvalid(
                "vector", f"has {len(values)} dimensions; docs are embedded with {embedder.dimensions}"
            )
        return values
    if embedder is None:
        raise EmbeddingUnavailable(
            "vector and hybrid search need an embedding backend (or a query vector); none is configured"
        )
    if not query_text:
        raise SearchInvalid("text", "vector search needs a query text or a vector")
    return (await embed_batched(embedder, [query_text]))[0]


def _collect(rows: list[dict[str, Any]], candidates: dict[Key, _Candidate]) -> dict[Key, float]:
    scores: dict[Key, float] = {}
    for row in rows:
        key = (row["doc_id"], row["chunk_index"])
        scores[key] = float(row["score"])
        known = candidates.get(key)
        embedding = json.loads(row["embedding"]) if row["embedding"] is not None else None
        if known is None:
            chunk = ChunkHit(row["chunk_index"], row["content_index"], row["content"])
            candidates[key] = _Candidate(row["doc_id"], chunk, embedding)
        elif known.embedding is None:
            known.embedding = embedding
    return scores


def _ranked(scores: Mapping[Key, float]) -> list[Key]:
    # Ties broken by (doc_id, chunk_index) so results are deterministic.
    return sorted(scores, key=lambda key: (-scores[key], key))


async def _docs_by_id(conn: Conn, developer_id: uuid.UUID, ids: list[uuid.UUID]) -> dict[uuid.UUID, Doc]:
    if not ids:
        return {}
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(queries.GET_DOCS, {"developer_id": developer_id, "ids": ids})
    return {row["id"]: _doc(row) for row in await cur.fetchall()}
