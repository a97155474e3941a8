"""The offline local embedding backend (wordllama's packaged static embeddings) finds documents by
meaning: every query below shares no word with any document, so text search cannot help."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from mintleaf_server.documents.embeddings import LocalEmbedder
from mintleaf_server.documents.store import Owner, create_doc, search

DOCS = {
    "pets": "Kittens and their mothers purr and chase mice around the barn.",
    "markets": "Equity markets fell sharply after the central bank raised interest rates.",
    "cooking": "Simmer tomatoes, garlic and basil slowly to make a rich pasta sauce.",
    "space": "Astronauts aboard the orbiting station photographed a distant nebula.",
    "football": "The striker scored twice in the second half, securing the championship.",
}
QUERIES = {
    "pets": "feline animals as household companions",
    "markets": "investors lose money when share prices drop",
    "cooking": "recipe for an Italian dinner",
    "space": "rocket launch into outer space",
    "football": "soccer match result",
}


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture(scope="module")
def local() -> Iterator[LocalEmbedder]:
    # Proves the weights come from the installed package: any hub access would fail offline.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        yield LocalEmbedder()


async def test_semantic_query_finds_the_right_doc_among_distractors(
    conn: psycopg.AsyncConnection[Any], local: LocalEmbedder
) -> None:
    developer, owner = uuid.uuid4(), Owner("user", uuid.uuid4())
    titles = {name: f"item {i}" for i, name in enumerate(DOCS)}
    for name, text in DOCS.items():
        await create_doc(
            conn, developer_id=developer, owner=owner, title=titles[name], content=text, embedder=local
        )
    corpus_words = set().union(*(words(t) | words(titles[n]) | {"title"} for n, t in DOCS.items()))
    for name, query in QUERIES.items():
        assert not words(query) & corpus_words, f"query {query!r} shares words with the corpus"
        assert (
            await search(conn, developer_id=developer, owners=[owner], mode="text", text=query)
        ).hits == []
        results = await search(
            conn,
            developer_id=developer,
            owners=[owner],
            mode="vector",
            text=query,
            embedder=local,
            confidence=-1,
            limit=5,
        )
        assert results.hits[0].doc.title == titles[name], (query, [h.doc.title for h in results.hits])
        assert results.hits[0].score > results.hits[1].score + 0.05
    assert local.dimensions == 256 and local.model == "wordllama-l2-supercat-256"
