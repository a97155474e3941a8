"""The documents package's exception tree. The API layer maps these to gRPC statuses:
InvalidArgument (and its subclasses) → INVALID_ARGUMENT with a field violation naming `field`;
DocNotFound → NOT_FOUND; EmbeddingUnavailable → FAILED_PRECONDITION; EmbeddingFailed → UNAVAILABLE."""

from __future__ import annotations

__all__ = [
    "DimensionsUnsupported",
    "DocInvalid",
    "DocNotFound",
    "DocumentsError",
    "EmbeddingFailed",
    "EmbeddingUnavailable",
    "InvalidArgument",
    "SearchInvalid",
]


class DocumentsError(Exception):
    """Base of every error raised by mintleaf_server.documents."""


class InvalidArgument(DocumentsError):
    """A request field is invalid; `field` is its path (e.g. `language`, `content[2]`)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class DocInvalid(InvalidArgument):
    """A document to create (title, content, owner, id, chunking) is invalid."""


class SearchInvalid(InvalidArgument):
    """A search request is invalid (language, limit, confidence, alpha, empty query, vector size...)."""


class DimensionsUnsupported(InvalidArgument):
    """An embedding size that no pgvector HNSW index can hold (> 4,000) or that is not positive."""


class DocNotFound(DocumentsError):
    """No document with this id for this developer (another developer's doc is reported the same way)."""

    def __init__(self, doc_id: object) -> None:
        self.doc_id = doc_id
        super().__init__(f"doc {doc_id} not found")


class EmbeddingUnavailable(DocumentsError):
    """Vector or hybrid search (or re-embedding) was asked for but no embedding backend is configured,
    or the configured local backend's package is not installed."""


class EmbeddingFailed(DocumentsError):
    """The embedding backend was reached but failed or answered with vectors of the wrong size."""
