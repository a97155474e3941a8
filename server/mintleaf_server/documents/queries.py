"""Every SQL statement of the documents package, by name.

Parameters are named (`%(name)s`). Vector values travel as pgvector's text form (`'[0.1,0.2]'`)
with an explicit cast, so no connection needs `register_vector` and a pooled connection works as
is. Templates with `{cast}` / `{dims}` take the embedding size as a literal (via `vector_sql`): the
partial HNSW index is chosen only when the query repeats its cast and predicate with constants.
"""

from __future__ import annotations

from typing import LiteralString

from psycopg import sql

from mintleaf_server.store.docs import check_dimensions, vector_cast

__all__ = [
    "CHUNKS_FOR_REEMBED",
    "COUNT_CHUNKS",
    "DELETE_DOC",
    "DELETE_DOCS_BY_FILTER",
    "DOC_COLUMNS",
    "EXTENSIONS",
    "GET_DOC",
    "GET_DOCS",
    "INDEX_EXISTS",
    "INSERT_CHUNK",
    "INSERT_DOC",
    "LIST_DOCS",
    "SEARCH_TEXT",
    "SEARCH_TRIGRAM",
    "SEARCH_VECTOR",
    "SET_HNSW_SCAN",
    "STALE_DOCS",
    "UPDATE_CHUNK_EMBEDDING",
    "UPDATE_DOC_EMBEDDING",
    "vector_sql",
]

DOC_COLUMNS: LiteralString = (
    "developer_id, id, owner_type, owner_id, title, content, embed_instruction, metadata, language, "
    "embedding_model, embedding_dimensions, created_at, updated_at"
)

INSERT_DOC: LiteralString = f"""
INSERT INTO docs (developer_id, id, owner_type, owner_id, title, content, embed_instruction, metadata,
                  language, embedding_model, embedding_dimensions, created_at, updated_at)
VALUES (%(developer_id)s, %(id)s, %(owner_type)s, %(owner_id)s, %(title)s, %(content)s, %(embed_instruction)s,
        %(metadata)s, %(language)s, %(embedding_model)s, %(embedding_dimensions)s, %(now)s, %(now)s)
ON CONFLICT (developer_id, id) DO NOTHING
RETURNING {DOC_COLUMNS}
"""

INSERT_CHUNK: LiteralString = """
INSERT INTO doc_chunks (developer_id, doc_id, chunk_index, content_index, owner_type, owner_id, title, content,
                        search_config, embedding, embedding_model, embedding_dimensions)
VALUES (%(developer_id)s, %(doc_id)s, %(chunk_index)s, %(content_index)s, %(owner_type)s, %(owner_id)s, %(title)s,
        %(content)s, %(search_config)s::regconfig, %(embedding)s::vector, %(embedding_model)s,
        %(embedding_dimensions)s)
"""

GET_DOC: LiteralString = (
    f"SELECT {DOC_COLUMNS} FROM docs WHERE developer_id = %(developer_id)s AND id = %(id)s"
)

GET_DOCS: LiteralString = (
    f"SELECT {DOC_COLUMNS} FROM docs WHERE developer_id = %(developer_id)s AND id = ANY(%(ids)s::uuid[])"
)

# Keyset paging on (created_at, id); the row-value comparison uses docs_owner_created_idx.
LIST_DOCS: LiteralString = f"""
SELECT {DOC_COLUMNS} FROM docs
WHERE developer_id = %(developer_id)s
  AND (%(owner_type)s::text IS NULL OR (owner_type = %(owner_type)s AND owner_id = %(owner_id)s))
  AND metadata @> %(metadata_filter)s::jsonb
  AND (%(after_created_at)s::timestamptz IS NULL OR (created_at, id) > (%(after_created_at)s, %(after_id)s::uuid))
ORDER BY created_at, id
LIMIT %(limit)s
"""

# Chunks go with their doc (ON DELETE CASCADE on doc_chunks_doc_fkey).
DELETE_DOC: LiteralString = """
DELETE FROM docs WHERE developer_id = %(developer_id)s AND id = %(id)s
  AND (%(owner_type)s::text IS NULL OR (owner_type = %(owner_type)s AND owner_id = %(owner_id)s))
"""

DELETE_DOCS_BY_FILTER: LiteralString = """
DELETE FROM docs
WHERE developer_id = %(developer_id)s AND owner_type = %(owner_type)s AND owner_id = %(owner_id)s
  AND metadata @> %(metadata_filter)s::jsonb
"""

COUNT_CHUNKS: LiteralString = "SELECT count(*) FROM doc_chunks WHERE developer_id = %(developer_id)s"

# Docs whose chunks were embedded by another model or size (or not at all).
STALE_DOCS: LiteralString = """
SELECT id, title, embed_instruction FROM docs
WHERE developer_id = %(developer_id)s
  AND (%(owner_type)s::text IS NULL OR (owner_type = %(owner_type)s AND owner_id = %(owner_id)s))
  AND (NOT %(only_stale)s OR embedding_model IS DISTINCT FROM %(model)s
       OR embedding_dimensions IS DISTINCT FROM %(dimensions)s)
ORDER BY created_at, id
"""

CHUNKS_FOR_REEMBED: LiteralString = """
SELECT chunk_index, content FROM doc_chunks
WHERE developer_id = %(developer_id)s AND doc_id = %(doc_id)s ORDER BY chunk_index
"""

UPDATE_CHUNK_EMBEDDING: LiteralString = """
UPDATE doc_chunks SET embedding = %(embedding)s::vector, embedding_model = %(model)s,
                      embedding_dimensions = %(dimensions)s
WHERE developer_id = %(developer_id)s AND doc_id = %(doc_id)s AND chunk_index = %(chunk_index)s
"""

UPDATE_DOC_EMBEDDING: LiteralString = """
UPDATE docs SET embedding_model = %(model)s, embedding_dimensions = %(dimensions)s, updated_at = now()
WHERE developer_id = %(developer_id)s AND id = %(doc_id)s
"""

EXTENSIONS: LiteralString = "SELECT extname FROM pg_extension WHERE extname IN ('pg_trgm', 'unaccent')"

INDEX_EXISTS: LiteralString = "SELECT to_regclass(%(name)s) IS NOT NULL"

# Transaction-local scan settings: a wider candidate list for recall, and iterative scans so owner
# and metadata filters applied after the index still leave `limit` rows (pgvector ≥ 0.8).
SET_HNSW_SCAN: LiteralString = """
SELECT set_config('hnsw.ef_search', %(ef_search)s, true),
       set_config('hnsw.iterative_scan', 'relaxed_order', true),
       set_config('enable_indexscan', %(enable_indexscan)s, true)
"""

# The scope `(owner_type, owner_id) IN unnest(...)` lets one search cover several owners
# (chat recall: the session's users and its agent).
_SCOPE: LiteralString = """c.developer_id = %(developer_id)s
  AND (c.owner_type, c.owner_id) IN (SELECT * FROM unnest(%(owner_types)s::text[], %(owner_ids)s::uuid[]))
  AND d.metadata @> %(metadata_filter)s::jsonb"""

# ts_rank_cd normalisation 32 = rank / (rank + 1): a score in [0, 1), higher is better.
# Ranking happens on keys only; the text and (for MMR) the embedding are read for the `k` winners,
# not for every match (vector → text for thousands of matches dominated the latency).
_TEXT_WINNERS: LiteralString = """
SELECT t.doc_id, t.chunk_index, c.content_index, c.content, t.score,
       CASE WHEN %(with_embedding)s THEN c.embedding::text END AS embedding
FROM ({inner}) AS t
JOIN doc_chunks c ON c.developer_id = %(developer_id)s AND c.doc_id = t.doc_id AND c.chunk_index = t.chunk_index
ORDER BY t.score DESC, t.doc_id, t.chunk_index
"""

SEARCH_TEXT: LiteralString = _TEXT_WINNERS.replace(
    "{inner}",
    f"""
  SELECT c.doc_id, c.chunk_index, ts_rank_cd(c.tsv, q.query, 32) AS score
  FROM doc_chunks c
  JOIN docs d ON d.developer_id = c.developer_id AND d.id = c.doc_id
  CROSS JOIN websearch_to_tsquery(%(config)s::regconfig, %(text)s) AS q(query)
  WHERE {_SCOPE}
    AND c.tsv @@ q.query
  ORDER BY score DESC, c.doc_id, c.chunk_index
  LIMIT %(k)s
""",
)

# Only run when pg_trgm is installed: rows whose words resemble the query's, scored by similarity.
SEARCH_TRIGRAM: LiteralString = _TEXT_WINNERS.replace(
    "{inner}",
    f"""
  SELECT c.doc_id, c.chunk_index, word_similarity(%(text)s, c.title || ' ' || c.content) AS score
  FROM doc_chunks c
  JOIN docs d ON d.developer_id = c.developer_id AND d.id = c.doc_id
  WHERE {_SCOPE}
    AND word_similarity(%(text)s, c.title || ' ' || c.content) >= %(threshold)s
  ORDER BY score DESC, c.doc_id, c.chunk_index
  LIMIT %(k)s
""",
)

# The inner query is the index scan (ORDER BY the indexed expression, LIMIT k), on keys only; the
# chunk text and embedding are read for the k winners. MATERIALIZED keeps the planner from pushing
# the confidence filter into it. The outer query sorts by distance again
# because iterative scans in relaxed order may return rows slightly out of order.
SEARCH_VECTOR: LiteralString = f"""
WITH nearest AS MATERIALIZED (
  SELECT c.doc_id, c.chunk_index, (c.embedding::{{cast}}) <=> %(query)s::{{cast}} AS distance
  FROM doc_chunks c
  JOIN docs d ON d.developer_id = c.developer_id AND d.id = c.doc_id
  WHERE {_SCOPE}
    AND c.embedding_dimensions = {{dims}}
  ORDER BY (c.embedding::{{cast}}) <=> %(query)s::{{cast}}
  LIMIT %(k)s
)
SELECT n.doc_id, n.chunk_index, c.content_index, c.content, 1 - n.distance AS score,
       CASE WHEN %(with_embedding)s THEN c.embedding::text END AS embedding
FROM nearest n
JOIN doc_chunks c ON c.developer_id = %(developer_id)s AND c.doc_id = n.doc_id AND c.chunk_index = n.chunk_index
WHERE n.distance <= %(max_distance)s
ORDER BY n.distance, n.doc_id, n.chunk_index
"""


def vector_sql(template: LiteralString, dimensions: int) -> sql.Composed:
    """Fill a `{cast}`/`{dims}` template for one embedding size (validated, so safe as a literal)."""
    n = check_dimensions(dimensions)
    kind = sql.SQL("vector" if vector_cast(n).startswith("vector") else "halfvec")
    cast = sql.SQL("{}({})").format(kind, sql.Literal(n))
    return sql.SQL(template).format(cast=cast, dims=sql.Literal(n))
