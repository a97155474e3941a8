"""DocService: documents of agents and users, chunked and embedded on create, searchable by text,
vector or both. Storage and search live in mintleaf_server.documents; this maps the API onto it."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
from google.protobuf import empty_pb2

from .._proto.mintleaf.v1 import docs_pb2, docs_pb2_grpc
from ..documents import errors as doc_errors
from ..documents import store as docstore
from ..store.db import decode_page_token, encode_page_token
from .agents import AGENTS, USERS
from .common import (
    Servicer,
    check_metadata,
    page_size,
    parse_id,
    struct_to_dict,
    to_struct,
    to_timestamp,
    unary,
)
from .errors import FailedPrecondition, InvalidArgument

__all__ = ["DocServicer", "doc_to_proto"]

_OWNER_ENUM = {"agent": docs_pb2.DOC_OWNER_TYPE_AGENT, "user": docs_pb2.DOC_OWNER_TYPE_USER}
_MODES = {
    docs_pb2.DOC_SEARCH_MODE_TEXT: "text",
    docs_pb2.DOC_SEARCH_MODE_VECTOR: "vector",
    docs_pb2.DOC_SEARCH_MODE_HYBRID: "hybrid",
}
MAX_EMBED_TEXTS = 100


def doc_to_proto(doc: Any, chunk_count: int = 0) -> docs_pb2.Doc:
    return docs_pb2.Doc(
        id=str(doc.id),
        owner_type=_OWNER_ENUM.get(doc.owner_type, docs_pb2.DOC_OWNER_TYPE_UNSPECIFIED),
        owner_id=str(doc.owner_id),
        title=doc.title,
        content=list(doc.content),
        embed_instruction=doc.embed_instruction or "",
        metadata=to_struct(doc.metadata_),
        language=doc.language,
        embedding_model=doc.embedding_model or "",
        embedding_dimensions=doc.embedding_dimensions or 0,
        chunk_count=chunk_count,
        created_at=to_timestamp(doc.created_at),
        updated_at=to_timestamp(doc.updated_at),
    )


class DocServicer(Servicer, docs_pb2_grpc.DocServiceServicer):
    async def _owner(self, dev: uuid.UUID, agent_id: str, user_id: str) -> docstore.Owner:
        """Exactly one of agent_id / user_id, naming an existing owner of this developer."""
        if bool(agent_id) == bool(user_id):
            raise InvalidArgument("agent_id", "give exactly one of agent_id and user_id")
        if agent_id:
            owner = docstore.Owner("agent", parse_id(agent_id, "agent_id"))
            await self.rt.db.get(AGENTS, dev, owner.id)
        else:
            owner = docstore.Owner("user", parse_id(user_id, "user_id"))
            await self.rt.db.get(USERS, dev, owner.id)
        return owner

    @unary
    async def CreateDoc(
        self, request: docs_pb2.CreateDocRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> docs_pb2.Doc:
        owner = await self._owner(dev, request.agent_id, request.user_id)
        if not request.HasField("doc"):
            raise InvalidArgument("doc", "is required")
        d = request.doc
        doc_id = parse_id(d.id, "doc.id") if d.id else None
        if request.request_id and doc_id is None:
            # A retried create with the same request_id maps onto the same client-side id.
            doc_id = uuid.uuid5(uuid.NAMESPACE_URL, f"mintleaf:{dev}:doc:{request.request_id}")
        with _fields_of("doc"):
            async with self.rt.db.connection() as conn:
                doc = await docstore.create_doc(
                    conn,
                    developer_id=dev,
                    owner=owner,
                    title=d.title,
                    content=list(d.content),
                    metadata=check_metadata(d.HasField("metadata"), d.metadata, "doc.metadata"),
                    embed_instruction=d.embed_instruction or None,
                    language=d.language or None,
                    embedder=self.rt.embedder,
                    doc_id=doc_id,
                )
                count = await _chunk_count(conn, dev, doc.id)
        return doc_to_proto(doc, count)

    @unary
    async def GetDoc(
        self, request: docs_pb2.GetDocRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> docs_pb2.Doc:
        doc_id = parse_id(request.id, "id")
        async with self.rt.db.connection() as conn:
            doc = await docstore.get_doc(conn, developer_id=dev, doc_id=doc_id)
            return doc_to_proto(doc, await _chunk_count(conn, dev, doc_id))

    @unary
    async def ListDocs(
        self, request: docs_pb2.ListDocsRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> docs_pb2.ListDocsResponse:
        owner = await self._owner(dev, request.agent_id, request.user_id)
        after = None
        if request.page_token:
            try:
                after = decode_page_token(request.page_token)
            except Exception:
                raise InvalidArgument("page_token", "is not a token this server issued") from None
        async with self.rt.db.connection() as conn:
            page = await docstore.list_docs(
                conn,
                developer_id=dev,
                owner=owner,
                metadata_filter=struct_to_dict(request.metadata_filter) or None,
                page_size=page_size(request.page_size, self.rt),
                after=after,
            )
        token = encode_page_token(*page.next_after) if page.next_after else ""
        return docs_pb2.ListDocsResponse(docs=[doc_to_proto(d) for d in page.docs], next_page_token=token)

    @unary
    async def DeleteDoc(
        self, request: docs_pb2.DeleteDocRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> empty_pb2.Empty:
        doc_id = parse_id(request.id, "id")
        owner = None
        if request.agent_id or request.user_id:
            owner = await self._owner(dev, request.agent_id, request.user_id)
        async with self.rt.db.connection() as conn:
            await docstore.delete_doc(conn, developer_id=dev, doc_id=doc_id, owner=owner)
        return empty_pb2.Empty()

    @unary
    async def DeleteDocs(
        self, request: docs_pb2.DeleteDocsRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> docs_pb2.DeleteDocsResponse:
        owner = await self._owner(dev, request.agent_id, request.user_id)
        async with self.rt.db.connection() as conn:
            n = await docstore.delete_docs_by_filter(
                conn,
                developer_id=dev,
                owner=owner,
                metadata_filter=struct_to_dict(request.metadata_filter),
                delete_all=request.delete_all,
            )
        return docs_pb2.DeleteDocsResponse(deleted_count=n)

    @unary
    async def SearchDocs(
        self, request: docs_pb2.SearchDocsRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> docs_pb2.SearchDocsResponse:
        owner = await self._owner(dev, request.agent_id, request.user_id)
        started = time.perf_counter()
        mode = _MODES.get(request.mode)
        if mode is None:
            if request.mode != docs_pb2.DOC_SEARCH_MODE_UNSPECIFIED:
                raise InvalidArgument("mode", "is not a known search mode")
            mode = (
                "hybrid"
                if self.rt.embedder is not None and request.text
                else ("vector" if request.vector else "text")
            )
        if mode in ("text", "hybrid") and not request.text.strip():
            raise InvalidArgument("text", f"is required for {mode} search")
        if mode == "vector" and not request.text.strip() and not request.vector:
            raise InvalidArgument("vector", "give a vector or a text to embed")
        async with self.rt.db.connection() as conn:
            results = await docstore.search(
                conn,
                developer_id=dev,
                owners=[owner],
                mode=mode,  # type: ignore[arg-type]
                text=request.text or None,
                vector=list(request.vector) or None,
                embedder=self.rt.embedder,
                limit=request.limit or 10,
                confidence=request.confidence,
                alpha=request.alpha if request.HasField("alpha") else 0.5,
                mmr_strength=request.mmr_strength,
                metadata_filter=struct_to_dict(request.metadata_filter) or None,
                language=request.lang or None,
            )
        return docs_pb2.SearchDocsResponse(
            results=[
                docs_pb2.DocSearchResult(
                    doc=doc_to_proto(hit.doc),
                    chunk_index=hit.chunk.chunk_index,
                    snippet=hit.chunk.content,
                    score=hit.score,
                )
                for hit in results.hits
            ],
            time=time.perf_counter() - started,
        )

    @unary
    async def Embed(
        self, request: docs_pb2.EmbedRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> docs_pb2.EmbedResponse:
        texts = list(request.text)
        if not texts:
            raise InvalidArgument("text", "give at least one text")
        if len(texts) > MAX_EMBED_TEXTS:
            raise InvalidArgument("text", f"at most {MAX_EMBED_TEXTS} texts per call")
        for i, t in enumerate(texts):
            if not t.strip():
                raise InvalidArgument(f"text[{i}]", "must not be empty")
        if self.rt.embedder is None:
            raise FailedPrecondition(
                "no embedding backend is configured ([embeddings] in the config)",
                reason="EMBEDDINGS_UNAVAILABLE",
            )
        prefix = f"{request.embed_instruction}\n" if request.embed_instruction else ""
        vectors = await self.rt.embedder.embed([prefix + t for t in texts])
        return docs_pb2.EmbedResponse(vectors=[docs_pb2.Vector(values=v) for v in vectors])


async def _chunk_count(conn: Any, dev: uuid.UUID, doc_id: uuid.UUID) -> int:
    cur = await conn.execute(
        "SELECT count(*) AS n FROM doc_chunks WHERE developer_id = %s AND doc_id = %s", (dev, doc_id)
    )
    row = await cur.fetchone()
    return int(row["n"] if isinstance(row, dict) else row[0])


@contextlib.contextmanager
def _fields_of(prefix: str) -> Iterator[None]:
    """The documents package names fields relative to the document (`title`); the API names them
    from the request (`doc.title`)."""
    try:
        yield
    except doc_errors.InvalidArgument as exc:
        raise doc_errors.InvalidArgument(f"{prefix}.{exc.field}", exc.message) from exc
