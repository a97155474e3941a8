"""Documents storage and search on the real embedded PostgreSQL + pgvector."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from mintleaf_server.documents.chunking import ChunkingConfig
from mintleaf_server.documents.embeddings import Embedder
from mintleaf_server.documents.errors import (
    DimensionsUnsupported,
    DocInvalid,
    DocNotFound,
    EmbeddingUnavailable,
    SearchInvalid,
)
from mintleaf_server.documents.store import (
    Owner,
    create_doc,
    delete_doc,
    delete_docs_by_filter,
    extension_support,
    get_doc,
    list_docs,
    reembed,
    search,
)
from mintleaf_server.store.docs import check_dimensions, vector_cast

Conn = psycopg.AsyncConnection[Any]

CORPUS = {
    "volcano": "Volcanic eruptions spew lava and ash across the island villages.",
    "bakery": "The bakery sells sourdough bread and croissants every morning.",
    "orbit": "Satellites orbit the planet and relay radio signals to ground stations.",
    "garden": "Tomatoes and basil grow well in a sunny garden with rich compost.",
}


async def seed(conn: Conn, embedder: Embedder, developer: uuid.UUID, owner: Owner) -> dict[str, uuid.UUID]:
    ids = {}
    for name, text in CORPUS.items():
        doc = await create_doc(
            conn,
            developer_id=developer,
            owner=owner,
            title=name,
            content=text,
            metadata={"topic": name, "tags": {"lang": "en"}},
            embedder=embedder,
        )
        ids[name] = doc.id
    return ids


def names(results: Any, ids: dict[str, uuid.UUID]) -> list[str]:
    by_id = {v: k for k, v in ids.items()}
    return [by_id[h.doc.id] for h in results.hits]


@pytest.fixture
def developer() -> uuid.UUID:
    return uuid.uuid4()


@pytest.fixture
def agent() -> Owner:
    return Owner("agent", uuid.uuid4())


async def test_each_mode_finds_the_right_doc(
    conn: Conn, embedder: Embedder, developer: uuid.UUID, agent: Owner
) -> None:
    ids = await seed(conn, embedder, developer, agent)
    common: dict[str, Any] = {"developer_id": developer, "owners": [agent], "embedder": embedder}

    text = await search(conn, mode="text", text="sourdough croissants", **common)
    assert names(text, ids) == ["bakery"]
    assert 0 < text.hits[0].score < 1
    assert text.hits[0].chunk.content == CORPUS["bakery"]

    # English stemming: "erupting volcanoes" matches "Volcanic eruptions"? No: different stems.
    # "eruption" does match "eruptions".
    stemmed = await search(conn, mode="text", text="eruption", **common)
    assert names(stemmed, ids) == ["volcano"]

    vector = await search(
        conn, mode="vector", text="satellites relay radio signals", confidence=0.3, **common
    )
    assert names(vector, ids)[0] == "orbit"
    assert all(h.score >= 0.3 for h in vector.hits)
    assert [h.score for h in vector.hits] == sorted((h.score for h in vector.hits), reverse=True)

    # Vector given directly instead of text.
    [query] = await embedder.embed(["tomatoes basil compost"])
    direct = await search(conn, mode="vector", vector=query, confidence=0.3, **common)
    assert names(direct, ids)[0] == "garden"

    hybrid = await search(conn, mode="hybrid", text="lava ash", confidence=-1, **common)
    assert names(hybrid, ids)[0] == "volcano"
    assert len(hybrid.hits) == len(CORPUS)  # the vector side brings every doc at confidence -1
    rrf = await search(conn, mode="hybrid", text="lava ash", confidence=-1, fusion="rrf", **common)
    assert names(rrf, ids)[0] == "volcano"


async def test_confidence_threshold_keeps_only_similar_chunks(
    conn: Conn, embedder: Embedder, developer: uuid.UUID, agent: Owner
) -> None:
    ids = await seed(conn, embedder, developer, agent)
    everything = await search(
        conn,
        developer_id=developer,
        owners=[agent],
        mode="vector",
        text="bakery bread",
        confidence=-1,
        embedder=embedder,
    )
    assert len(everything.hits) == len(CORPUS)
    strict = await search(
        conn,
        developer_id=developer,
        owners=[agent],
        mode="vector",
        text="bakery bread",
        confidence=0.99,
        embedder=embedder,
    )
    assert strict.hits == []
    some = await search(
        conn,
        developer_id=developer,
        owners=[agent],
        mode="vector",
        text="bakery bread",
        confidence=0.2,
        embedder=embedder,
    )
    assert names(some, ids) == ["bakery"]


async def test_alpha_weights_the_vector_side(
    conn: Conn, embedder: Embedder, developer: uuid.UUID, agent: Owner
) -> None:
    ids = await seed(conn, embedder, developer, agent)
    # Text matches only the bakery; the query vector is the orbit doc's own vector.
    [orbit_vector] = await embedder.embed(["Title: orbit\n\n" + CORPUS["orbit"]])
    common: dict[str, Any] = {
        "developer_id": developer,
        "owners": [agent],
        "mode": "hybrid",
        "text": "sourdough",
        "vector": orbit_vector,
        "confidence": -1,
        "embedder": embedder,
    }
    assert names(await search(conn, alpha=0.0, **common), ids)[0] == "bakery"
    assert names(await search(conn, alpha=1.0, **common), ids)[0] == "orbit"


async def test_mmr_diversifies(conn: Conn, embedder: Embedder, developer: uuid.UUID, agent: Owner) -> None:
    ids = {}
    for name, text in {
        "a1": "red apple orchard harvest",
        "a2": "red apple orchard harvest season",
        "b": "green pear orchard",
    }.items():
        ids[name] = (
            await create_doc(
                conn, developer_id=developer, owner=agent, title=name, content=text, embedder=embedder
            )
        ).id
    common: dict[str, Any] = {
        "developer_id": developer,
        "owners": [agent],
        "mode": "vector",
        "text": "red apple orchard harvest",
        "confidence": -1,
        "embedder": embedder,
        "limit": 2,
    }
    assert names(await search(conn, **common), ids) == ["a1", "a2"]
    assert names(await search(conn, mmr_strength=0.9, **common), ids) == ["a1", "b"]


async def test_metadata_filter_excludes(
    conn: Conn, embedder: Embedder, developer: uuid.UUID, agent: Owner
) -> None:
    ids = await seed(conn, embedder, developer, agent)
    for mode in ("text", "vector", "hybrid"):
        results = await search(
            conn,
            developer_id=developer,
            owners=[agent],
            mode=mode,
            text="bakery sourdough bread",
            confidence=-1,
            embedder=embedder,
            metadata_filter={"topic": "garden"},
        )
        assert names(results, ids) == ([] if mode == "text" else ["garden"]), mode
    nested = await search(
        conn,
        developer_id=developer,
        owners=[agent],
        mode="vector",
        text="bread",
        confidence=-1,
        embedder=embedder,
        metadata_filter={"tags": {"lang": "en"}},
    )
    assert len(nested.hits) == len(CORPUS)
    none = await search(
        conn,
        developer_id=developer,
        owners=[agent],
        mode="vector",
        text="bread",
        confidence=-1,
        embedder=embedder,
        metadata_filter={"tags": {"lang": "fr"}},
    )
    assert none.hits == []
    page = await list_docs(conn, developer_id=developer, metadata_filter={"topic": "orbit"})
    assert [d.id for d in page.docs] == [ids["orbit"]]


async def test_developers_and_owners_are_isolated(conn: Conn, embedder: Embedder, agent: Owner) -> None:
    alice, bob = uuid.uuid4(), uuid.uuid4()
    user = Owner("user", uuid.uuid4())
    ids = await seed(conn, embedder, alice, agent)
    # Bob uses the *same owner id* and even the same doc id: still invisible to each other.
    bob_doc = await create_doc(
        conn,
        developer_id=bob,
        owner=agent,
        title="bob",
        content="sourdough bread secrets",
        embedder=embedder,
        doc_id=ids["bakery"],
    )
    assert bob_doc.developer_id == bob
    await create_doc(
        conn,
        developer_id=alice,
        owner=user,
        title="user doc",
        content="sourdough for the user",
        embedder=embedder,
    )

    for mode in ("text", "vector", "hybrid"):
        results = await search(
            conn,
            developer_id=alice,
            owners=[agent],
            mode=mode,
            text="sourdough bread",
            confidence=-1,
            embedder=embedder,
        )
        assert all(h.doc.developer_id == alice and h.doc.owner_id == agent.id for h in results.hits), mode
        assert "secrets" not in " ".join(h.chunk.content for h in results.hits)
        bob_results = await search(
            conn,
            developer_id=bob,
            owners=[agent],
            mode=mode,
            text="sourdough bread",
            confidence=-1,
            embedder=embedder,
        )
        assert [h.doc.title for h in bob_results.hits] == ["bob"], mode

    both = await search(
        conn, developer_id=alice, owners=[agent, user], mode="text", text="sourdough", embedder=embedder
    )
    assert {h.doc.owner_type for h in both.hits} == {"agent", "user"}
    assert (await get_doc(conn, developer_id=alice, doc_id=ids["bakery"])).title == "bakery"
    with pytest.raises(DocNotFound):
        await get_doc(conn, developer_id=uuid.uuid4(), doc_id=ids["bakery"])
    with pytest.raises(DocNotFound):
        await delete_doc(conn, developer_id=bob, doc_id=ids["volcano"])


async def test_delete_removes_chunks_from_every_search(
    conn: Conn, embedder: Embedder, developer: uuid.UUID, agent: Owner
) -> None:
    ids = await seed(conn, embedder, developer, agent)
    await delete_doc(conn, developer_id=developer, doc_id=ids["bakery"])
    cur = await conn.execute("SELECT count(*) FROM doc_chunks WHERE doc_id = %s", (ids["bakery"],))
    assert (await cur.fetchone()) == (0,)
    for mode in ("text", "vector", "hybrid"):
        results = await search(
            conn,
            developer_id=developer,
            owners=[agent],
            mode=mode,
            text="sourdough bread croissants",
            confidence=-1,
            embedder=embedder,
        )
        assert ids["bakery"] not in {h.doc.id for h in results.hits}, mode
    with pytest.raises(DocNotFound):
        await delete_doc(conn, developer_id=developer, doc_id=ids["bakery"])

    with pytest.raises(DocInvalid):
        await delete_docs_by_filter(conn, developer_id=developer, owner=agent, metadata_filter={})
    assert (
        await delete_docs_by_filter(
            conn, developer_id=developer, owner=agent, metadata_filter={"topic": "orbit"}
        )
        == 1
    )
    assert (
        await delete_docs_by_filter(
            conn, developer_id=developer, owner=agent, metadata_filter=None, delete_all=True
        )
        == 2
    )
    results = await search(
        conn,
        developer_id=developer,
        owners=[agent],
        mode="vector",
        text="lava",
        confidence=-1,
        embedder=embedder,
    )
    assert results.hits == []


async def test_long_content_is_chunked_and_each_chunk_is_searchable(
    conn: Conn, embedder: Embedder, developer: uuid.UUID, agent: Owner
) -> None:
    filler = " ".join(["lorem ipsum dolor sit amet"] * 40)
    doc = await create_doc(
        conn,
        developer_id=developer,
        owner=agent,
        title="long",
        content=[filler + " zebra stripes", "short second item"],
        embedder=embedder,
        chunking=ChunkingConfig(chunk_tokens=50, overlap_tokens=10),
    )
    cur = await conn.execute(
        "SELECT chunk_index, content_index FROM doc_chunks WHERE doc_id = %s ORDER BY chunk_index", (doc.id,)
    )
    rows = await cur.fetchall()
    assert len(rows) > 3 and rows[-1] == (len(rows) - 1, 1)
    hit = (await search(conn, developer_id=developer, owners=[agent], mode="text", text="zebra")).hits[0]
    assert hit.chunk.content_index == 0 and hit.chunk.chunk_index > 0 and "zebra" in hit.chunk.content


async def test_create_is_idempotent_list_pages_and_reembed(
    conn: Conn, embedder: Embedder, developer: uuid.UUID, agent: Owner
) -> None:
    doc_id = uuid.uuid4()
    first = await create_doc(
        conn, developer_id=developer, owner=agent, title="t", content="x y", doc_id=doc_id
    )
    again = await create_doc(
        conn, developer_id=developer, owner=agent, title="other", content="z", doc_id=doc_id
    )
    assert again.title == first.title == "t"
    with pytest.raises(DocInvalid) as exc:
        await create_doc(
            conn, developer_id=developer, owner=Owner("user", agent.id), title="t", content="x", doc_id=doc_id
        )
    assert exc.value.field == "id"
    for i in range(4):
        await create_doc(conn, developer_id=developer, owner=agent, title=f"d{i}", content=f"doc {i}")
    seen, after = [], None
    while True:
        page = await list_docs(conn, developer_id=developer, owner=agent, page_size=2, after=after)
        seen += [d.title for d in page.docs]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == ["t", "d0", "d1", "d2", "d3"]

    # Created without an embedder: text works, vector finds nothing until re-embedded.
    assert first.embedding_model is None
    found = await search(
        conn,
        developer_id=developer,
        owners=[agent],
        mode="vector",
        text="doc 2",
        confidence=-1,
        embedder=embedder,
    )
    assert found.hits == []
    assert await reembed(conn, developer_id=developer, owner=agent, embedder=embedder) == 5
    assert await reembed(conn, developer_id=developer, owner=agent, embedder=embedder) == 0  # nothing stale
    found = await search(
        conn,
        developer_id=developer,
        owners=[agent],
        mode="vector",
        text="d2 doc 2",
        confidence=-1,
        embedder=embedder,
    )
    assert found.hits[0].doc.title == "d2"
    assert (await get_doc(conn, developer_id=developer, doc_id=doc_id)).embedding_model == embedder.model


async def test_without_embedder_text_works_and_vector_is_a_clear_error(
    conn: Conn, developer: uuid.UUID, agent: Owner
) -> None:
    await create_doc(
        conn, developer_id=developer, owner=agent, title="plain", content="granite quarry stones"
    )
    results = await search(conn, developer_id=developer, owners=[agent], mode="text", text="quarry")
    assert [h.doc.title for h in results.hits] == ["plain"]
    for mode in ("vector", "hybrid"):
        with pytest.raises(EmbeddingUnavailable, match="embedding backend"):
            await search(conn, developer_id=developer, owners=[agent], mode=mode, text="quarry")


async def test_languages(conn: Conn, developer: uuid.UUID, agent: Owner) -> None:
    text = "Les chevaux galopaient dans les prés."
    await create_doc(conn, developer_id=developer, owner=agent, title="fr", content=text, language="fr-FR")
    await create_doc(conn, developer_id=developer, owner=agent, title="en", content=text, language="english")
    # French stemming maps "chevaux" to "cheval"; the doc stored with English rules keeps "chevaux".
    french = await search(
        conn, developer_id=developer, owners=[agent], mode="text", text="cheval", language="french"
    )
    assert [(h.doc.title, h.doc.language) for h in french.hits] == [("fr", "french")]
    # No stemmer for Polish: `simple`.
    await create_doc(
        conn, developer_id=developer, owner=agent, title="pl", content="Kot śpi na kanapie.", language="pl"
    )
    polish = await search(
        conn, developer_id=developer, owners=[agent], mode="text", text="kanapie", language="pl"
    )
    assert [h.doc.language for h in polish.hits] == ["simple"]


async def test_fuzzy_matching_reports_what_is_active(conn: Conn, developer: uuid.UUID, agent: Owner) -> None:
    support = await extension_support(conn)
    # The embedded PostgreSQL ships neither extension: fuzzy matching is off, and says so.
    assert (support.pg_trgm, support.unaccent, support.fuzzy) == (False, False, None)
    await create_doc(conn, developer_id=developer, owner=agent, title="t", content="photosynthesis in leaves")
    results = await search(
        conn,
        developer_id=developer,
        owners=[agent],
        mode="text",
        text="photosynthesis",
        trigram_threshold=0.3,
    )
    assert results.fuzzy is None and len(results.hits) == 1


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"mode": "text", "text": "x", "language": "klingon"}, SearchInvalid, "language"),
        ({"mode": "text", "text": "   "}, SearchInvalid, "text"),
        ({"mode": "hybrid", "text": ""}, SearchInvalid, "text"),
        ({"mode": "vector", "vector": []}, SearchInvalid, "vector"),
        ({"mode": "vector", "vector": [0.1] * 4001}, DimensionsUnsupported, "vector"),
        ({"mode": "vector", "vector": [0.1] * 3}, SearchInvalid, "vector"),  # embedder has 64 dims
        ({"mode": "vector", "text": "x", "confidence": 1.5}, SearchInvalid, "confidence"),
        ({"mode": "vector", "text": "x", "confidence": -1.01}, SearchInvalid, "confidence"),
        ({"mode": "hybrid", "text": "x", "alpha": 2}, SearchInvalid, "alpha"),
        ({"mode": "hybrid", "text": "x", "mmr_strength": 1.0}, SearchInvalid, "mmr_strength"),
        ({"mode": "text", "text": "x", "limit": 0}, SearchInvalid, "limit"),
        ({"mode": "text", "text": "x", "limit": 51}, SearchInvalid, "limit"),
        ({"mode": "text", "text": "x", "metadata_filter": ["a"]}, SearchInvalid, "metadata_filter"),
        ({"mode": "fuzzy", "text": "x"}, SearchInvalid, "mode"),
        ({"mode": "text", "text": "x", "owners": [("robot", uuid.uuid4())]}, SearchInvalid, "owners[0].type"),
        ({"mode": "text", "text": "x", "owners": []}, SearchInvalid, "owners"),
    ],
)
async def test_bad_search_inputs(
    conn: Conn,
    embedder: Embedder,
    developer: uuid.UUID,
    agent: Owner,
    kwargs: dict[str, Any],
    error: type[Exception],
    field: str,
) -> None:
    args: dict[str, Any] = {"developer_id": developer, "owners": [agent], "embedder": embedder, **kwargs}
    with pytest.raises(error) as exc:
        await search(conn, **args)
    assert getattr(exc.value, "field", None) == field


async def test_bad_doc_inputs(conn: Conn, developer: uuid.UUID, agent: Owner) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"title": "", "content": "x"}, "title"),
        ({"title": "t" * 801, "content": "x"}, "title"),
        ({"title": "t", "content": []}, "content"),
        ({"title": "t", "content": ["ok", " "]}, "content[1]"),
        ({"title": "t", "content": "x", "language": "elvish"}, "language"),
    ]
    for kwargs, field in cases:
        with pytest.raises(DocInvalid) as exc:
            await create_doc(conn, developer_id=developer, owner=agent, **kwargs)
        assert exc.value.field == field
    with pytest.raises(DocInvalid):
        ChunkingConfig(chunk_tokens=10, overlap_tokens=10)


def test_dimensions_decide_vector_or_halfvec() -> None:
    assert vector_cast(2000) == "vector(2000)"
    assert vector_cast(2001) == "halfvec(2001)"
    assert vector_cast(4000) == "halfvec(4000)"
    for bad in (0, 4001):
        with pytest.raises(DimensionsUnsupported):
            check_dimensions(bad)


async def test_halfvec_sized_embeddings_are_indexed_and_searchable(
    conn: Conn, embedder: Embedder, developer: uuid.UUID, agent: Owner
) -> None:
    class Wide:
        model = "wide"
        dimensions = 2048

        async def embed(self, texts: list[str]) -> list[list[float]]:
            return [v * 32 for v in await embedder.embed(texts)]  # 64 × 32 = 2048

    wide = Wide()
    await create_doc(
        conn, developer_id=developer, owner=agent, title="w", content="quartz crystals", embedder=wide
    )
    cur = await conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'doc_chunks_embedding_hnsw_2048'"
    )
    row = await cur.fetchone()
    assert row is not None and "halfvec(2048)" in row[0] and "halfvec_cosine_ops" in row[0]
    results = await search(
        conn, developer_id=developer, owners=[agent], mode="vector", text="w quartz crystals", embedder=wide
    )
    assert [h.doc.title for h in results.hits] == ["w"]
    assert results.hits[0].score == pytest.approx(1.0, abs=1e-3)
