"""Recall: the documents of the answering agent and of the session's users that a turn's last
messages are about (JULEP-SPEC 5.5), searched with the documents package.

Design note. The query is built from the last `num_search_messages` user/assistant messages
with text content: the text query is the last one's content reduced to its keywords joined with
`or` (`websearch_to_tsquery` would otherwise AND every word of a sentence and rarely match), the
vector query embeds `"<name or role>: <content>"` lines joined by blank lines, keeping the last
`max_query_length` characters, with Julep's retrieval instruction. Recall never fails a turn
for want of an embedder: vector and hybrid fall back to text search when none is configured or
it fails (logged). Rejected: embedding the whole history (slow, and old turns dilute the query)
and asking the model for a search query (a second model call per turn).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg

from .errors import BadRequest

__all__ = [
    "EMBED_INSTRUCTION",
    "RecallOptions",
    "RecalledDoc",
    "keywords",
    "recall",
    "recall_options",
    "search_queries",
]

log = logging.getLogger("mintleaf.chat")

EMBED_INSTRUCTION = "Represent the query for retrieving supporting documents: "
_MODES: dict[Any, Literal["text", "vector", "hybrid"] | None] = {
    0: None,
    1: "text",
    2: "vector",
    3: "hybrid",
    "DOC_SEARCH_MODE_UNSPECIFIED": None,
    "DOC_SEARCH_MODE_TEXT": "text",
    "DOC_SEARCH_MODE_VECTOR": "vector",
    "DOC_SEARCH_MODE_HYBRID": "hybrid",
    "text": "text",
    "vector": "vector",
    "hybrid": "hybrid",
}
_STOP_WORDS = frozenset(
    [
        "a",
        "about",
        "above",
        "after",
        "again",
        "against",
        "all",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "herself",
        "him",
        "himself",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "ourselves",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "themselves",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "tell",
        "know",
        "please",
        "thanks",
        "thank",
    ]
)
_WORD = re.compile(r"\w+", re.UNICODE)
_MAX_KEYWORDS = 16


@dataclass(frozen=True)
class RecallOptions:
    """A session's `recall_options` with defaults applied (0 in the proto means "default")."""

    mode: Literal["text", "vector", "hybrid"] | None = None  # None: hybrid with an embedder, else text
    limit: int = 10
    confidence: float = 0.0
    alpha: float = 0.5
    mmr_strength: float = 0.0
    num_search_messages: int = 4
    max_query_length: int = 1000
    lang: str | None = None
    metadata_filter: Mapping[str, Any] = field(default_factory=dict)


def recall_options(raw: Mapping[str, Any] | None) -> RecallOptions | None:
    """The stored `recall_options` (the proto as JSON), or None when recall is off."""
    if raw is None:
        return None
    return RecallOptions(
        mode=_MODES.get(raw.get("mode", 0)),
        limit=min(int(raw.get("limit") or 10), 50),
        confidence=float(raw.get("confidence") or 0.0),
        alpha=float(raw.get("alpha") or 0.5),
        mmr_strength=min(float(raw.get("mmr_strength") or 0.0), 0.99),
        num_search_messages=int(raw.get("num_search_messages") or 4),
        max_query_length=int(raw.get("max_query_length") or 1000),
        lang=str(raw.get("lang") or "") or None,
        metadata_filter=dict(raw.get("metadata_filter") or {}),
    )


@dataclass(frozen=True)
class RecalledDoc:
    """A doc put into the prompt: its best chunk(s) and score."""

    id: uuid.UUID
    owner_type: str
    owner_id: uuid.UUID
    title: str
    snippets: tuple[str, ...]
    score: float
    metadata: Mapping[str, Any]

    def template_value(self) -> dict[str, Any]:
        """What templates see as an item of `docs` (JULEP-SPEC 3.5)."""
        return {"title": self.title, "content": list(self.snippets), "metadata": dict(self.metadata)}


def keywords(text: str) -> list[str]:
    """The distinct non-stop words of `text` (in order), at most 16."""
    out: list[str] = []
    seen: set[str] = set()
    for word in _WORD.findall(text.lower()):
        if len(word) < 3 or word in _STOP_WORDS or word.isdigit() or word in seen:
            continue
        seen.add(word)
        out.append(word)
        if len(out) == _MAX_KEYWORDS:
            break
    return out


def search_queries(messages: Sequence[Mapping[str, Any]], options: RecallOptions) -> tuple[str, str] | None:
    """(text query, text to embed) from the last messages, or None when there is nothing to search."""
    recent = [
        m
        for m in messages[-options.num_search_messages :]
        if m.get("role") in ("user", "assistant")
        and isinstance(m.get("content"), str)
        and m["content"].strip()
    ]
    if not recent:
        return None
    words = keywords(recent[-1]["content"][: options.max_query_length])
    text_query = " or ".join(words)
    lines = "\n\n".join(f"{m.get('name') or m['role']}: {m['content']}" for m in recent)
    embed_text = lines[-options.max_query_length :]
    if not text_query:
        return None
    return text_query, embed_text


def _embedder(runtime: Any) -> Any:
    """The documents' embedder, wherever the runtime keeps it (None when none is configured)."""
    found = getattr(runtime, "embedder", None) or (getattr(runtime, "extras", None) or {}).get("embedder")
    if found is not None:
        return found
    try:
        from ..documents import service  # type: ignore[attr-defined]
    except ImportError:
        return None
    getter = getattr(service, "get_embedder", None) or getattr(service, "embedder_for", None)
    return getter(runtime) if callable(getter) else None


async def recall(
    runtime: Any,
    developer_id: uuid.UUID,
    owners: Sequence[tuple[str, uuid.UUID]],
    messages: Sequence[Mapping[str, Any]],
    options: RecallOptions,
) -> list[RecalledDoc]:
    """Search the owners' docs with the last messages; [] when there is nothing to search."""
    queries = search_queries(messages, options)
    if queries is None or not owners:
        return []
    text_query, embed_text = queries
    from ..documents import errors as doc_errors
    from ..documents import store

    embedder = _embedder(runtime)
    mode = options.mode or ("hybrid" if embedder is not None else "text")
    vector: list[float] | None = None
    if mode != "text":
        if embedder is None:
            mode = "text"
        else:
            try:
                vector = (await embedder.embed([EMBED_INSTRUCTION + embed_text]))[0]
            except doc_errors.DocumentsError as exc:
                log.warning("recall: embedding the query failed, searching text only: %s", exc)
                mode = "text"
    try:
        async with runtime.db.connection() as conn:
            results = await store.search(
                conn,
                developer_id=developer_id,
                owners=list(owners),
                mode=mode,
                text=text_query,
                vector=vector,
                embedder=embedder if vector is not None else None,
                limit=options.limit,
                confidence=options.confidence,
                alpha=options.alpha,
                mmr_strength=options.mmr_strength if mode != "text" else 0.0,
                metadata_filter=options.metadata_filter,
                language=options.lang,
            )
    except doc_errors.InvalidArgument as exc:
        raise BadRequest(f"session.recall_options.{exc.field}", exc.message) from exc
    except psycopg.errors.UndefinedTable:
        # The documents tables are not migrated on this server: nothing to recall.
        log.warning("recall: the documents tables do not exist; recall returns nothing")
        return []
    return [
        RecalledDoc(
            id=hit.doc.id,
            owner_type=hit.doc.owner_type,
            owner_id=hit.doc.owner_id,
            title=hit.doc.title,
            snippets=(hit.chunk.content,),
            score=hit.score,
            metadata=dict(hit.doc.metadata_ or {}),
        )
        for hit in results.hits
    ]
