"""DocService through the SDK: create/get/list/delete/search, with and without an embedder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from mintleaf import Struct, v1
from support.errors import expect_error
from support.harness import ServerThread

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _agent(client) -> str:
    return client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="librarian"))).id


def _doc(client, agent_id: str, title: str, content: list[str], **meta) -> v1.Doc:
    return client.docs.create_doc(
        v1.CreateDocRequest(
            agent_id=agent_id, doc=v1.Doc(title=title, content=content, metadata=Struct.from_dict(meta))
        )
    )


def test_doc_lifecycle_and_text_search(client, other_client):
    agent_id = _agent(client)
    d1 = _doc(client, agent_id, "Volcanoes", ["Lava flows from erupting volcanoes in Iceland."], topic="geo")
    d2 = _doc(client, agent_id, "Baking", ["Sourdough bread needs a lively starter."], topic="food")
    assert d1.chunk_count >= 1 and d1.owner_id == agent_id
    got = client.docs.get_doc(v1.GetDocRequest(id=d1.id))
    assert got.content == ["Lava flows from erupting volcanoes in Iceland."]
    listed = client.docs.list_docs(v1.ListDocsRequest(agent_id=agent_id))
    assert [d.id for d in listed.docs] == [d1.id, d2.id]
    food = client.docs.list_docs(
        v1.ListDocsRequest(agent_id=agent_id, metadata_filter=Struct.from_dict({"topic": "food"}))
    )
    assert [d.id for d in food.docs] == [d2.id]
    hits = client.docs.search_docs(
        v1.SearchDocsRequest(agent_id=agent_id, mode=v1.DocSearchMode.TEXT, text="volcano lava")
    )
    assert [r.doc.id for r in hits.results] == [d1.id]
    assert "Lava" in hits.results[0].snippet
    # Another developer sees none of it.
    expect_error(lambda: other_client.docs.get_doc(v1.GetDocRequest(id=d1.id)), grpc.StatusCode.NOT_FOUND)
    expect_error(
        lambda: other_client.docs.search_docs(
            v1.SearchDocsRequest(agent_id=agent_id, mode=v1.DocSearchMode.TEXT, text="lava")
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    client.docs.delete_doc(v1.DeleteDocRequest(id=d1.id))
    hits = client.docs.search_docs(
        v1.SearchDocsRequest(agent_id=agent_id, mode=v1.DocSearchMode.TEXT, text="volcano lava")
    )
    assert hits.results == []
    expect_error(lambda: client.docs.get_doc(v1.GetDocRequest(id=d1.id)), grpc.StatusCode.NOT_FOUND)


def test_user_docs_and_bulk_delete(client):
    user = client.users.create_user(v1.CreateUserRequest(user=v1.User(name="u")))
    for i in range(3):
        client.docs.create_doc(
            v1.CreateDocRequest(
                user_id=user.id,
                doc=v1.Doc(title=f"t{i}", content=[f"note {i}"], metadata=Struct.from_dict({"k": i % 2})),
            )
        )
    expect_error(lambda: client.docs.delete_docs(v1.DeleteDocsRequest(user_id=user.id)), INVALID)
    n = client.docs.delete_docs(
        v1.DeleteDocsRequest(user_id=user.id, metadata_filter=Struct.from_dict({"k": 0}))
    )
    assert n.deleted_count == 2
    assert len(client.docs.list_docs(v1.ListDocsRequest(user_id=user.id)).docs) == 1


def test_doc_bad_input(client):
    agent_id = _agent(client)
    expect_error(
        lambda: client.docs.create_doc(v1.CreateDocRequest(doc=v1.Doc(title="t", content=["c"]))),
        INVALID,
        field="agent_id",
    )
    expect_error(lambda: _doc(client, agent_id, "", ["c"]), INVALID)
    expect_error(lambda: _doc(client, agent_id, "t" * 801, ["c"]), INVALID)
    expect_error(lambda: _doc(client, agent_id, "t", ["x" * 30_001]), INVALID)
    expect_error(
        lambda: client.docs.search_docs(
            v1.SearchDocsRequest(agent_id=agent_id, mode=v1.DocSearchMode.TEXT, text="")
        ),
        INVALID,
        field="text",
    )
    expect_error(
        lambda: client.docs.search_docs(
            v1.SearchDocsRequest(agent_id=agent_id, mode=v1.DocSearchMode.TEXT, text="x", lang="klingon")
        ),
        INVALID,
    )
    expect_error(lambda: client.docs.embed(v1.EmbedRequest()), INVALID, field="text")


def test_vector_search_without_embedder_is_a_clear_error(client):
    agent_id = _agent(client)
    _doc(client, agent_id, "t", ["some text"])
    err = expect_error(
        lambda: client.docs.search_docs(
            v1.SearchDocsRequest(agent_id=agent_id, mode=v1.DocSearchMode.VECTOR, text="some")
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "embed" in err.message.lower()
    expect_error(lambda: client.docs.embed(v1.EmbedRequest(text=["hi"])), grpc.StatusCode.FAILED_PRECONDITION)


@pytest.fixture(scope="module")
def local_embedding_server(pg_url: str, redis_url: str, data_root: Path) -> Iterator[ServerThread]:
    srv = ServerThread(
        pg_url,
        redis_url,
        data_root / "emb",
        worker_enabled=False,
        embeddings={"backend": "local", "dimensions": 256},
    )
    srv.start()
    yield srv
    srv.stop()


def test_semantic_search_with_the_local_embedder(local_embedding_server):
    with local_embedding_server.client() as c:
        agent_id = _agent(c)
        target = _doc(c, agent_id, "Pets", ["My kitten loves chasing yarn around the living room."])
        _doc(c, agent_id, "Finance", ["Quarterly stock market earnings beat analyst expectations."])
        _doc(c, agent_id, "Weather", ["Heavy rain and thunderstorms are expected tomorrow."])
        hits = c.docs.search_docs(
            v1.SearchDocsRequest(
                agent_id=agent_id,
                mode=v1.DocSearchMode.VECTOR,
                text="a playful young cat",
                limit=3,
                confidence=-1,
            )
        )
        assert hits.results[0].doc.id == target.id
        hybrid = c.docs.search_docs(
            v1.SearchDocsRequest(
                agent_id=agent_id, mode=v1.DocSearchMode.HYBRID, text="feline pet", limit=3, confidence=-1
            )
        )
        assert hybrid.results[0].doc.id == target.id
        vectors = c.docs.embed(v1.EmbedRequest(text=["hello", "world"]))
        assert len(vectors.vectors) == 2 and len(vectors.vectors[0].values) == 256
