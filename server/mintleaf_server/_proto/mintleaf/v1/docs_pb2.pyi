import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DocOwnerType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DOC_OWNER_TYPE_UNSPECIFIED: _ClassVar[DocOwnerType]
    DOC_OWNER_TYPE_AGENT: _ClassVar[DocOwnerType]
    DOC_OWNER_TYPE_USER: _ClassVar[DocOwnerType]

class DocSearchMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DOC_SEARCH_MODE_UNSPECIFIED: _ClassVar[DocSearchMode]
    DOC_SEARCH_MODE_TEXT: _ClassVar[DocSearchMode]
    DOC_SEARCH_MODE_VECTOR: _ClassVar[DocSearchMode]
    DOC_SEARCH_MODE_HYBRID: _ClassVar[DocSearchMode]
DOC_OWNER_TYPE_UNSPECIFIED: DocOwnerType
DOC_OWNER_TYPE_AGENT: DocOwnerType
DOC_OWNER_TYPE_USER: DocOwnerType
DOC_SEARCH_MODE_UNSPECIFIED: DocSearchMode
DOC_SEARCH_MODE_TEXT: DocSearchMode
DOC_SEARCH_MODE_VECTOR: DocSearchMode
DOC_SEARCH_MODE_HYBRID: DocSearchMode

class Doc(_message.Message):
    __slots__ = ("id", "owner_type", "owner_id", "title", "content", "embed_instruction", "metadata", "language", "embedding_model", "embedding_dimensions", "chunk_count", "created_at", "updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_TYPE_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    EMBED_INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODEL_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    CHUNK_COUNT_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    owner_type: DocOwnerType
    owner_id: str
    title: str
    content: _containers.RepeatedScalarFieldContainer[str]
    embed_instruction: str
    metadata: _struct_pb2.Struct
    language: str
    embedding_model: str
    embedding_dimensions: int
    chunk_count: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., owner_type: _Optional[_Union[DocOwnerType, str]] = ..., owner_id: _Optional[str] = ..., title: _Optional[str] = ..., content: _Optional[_Iterable[str]] = ..., embed_instruction: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., language: _Optional[str] = ..., embedding_model: _Optional[str] = ..., embedding_dimensions: _Optional[int] = ..., chunk_count: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateDocRequest(_message.Message):
    __slots__ = ("agent_id", "user_id", "doc", "request_id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DOC_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    user_id: str
    doc: Doc
    request_id: str
    def __init__(self, agent_id: _Optional[str] = ..., user_id: _Optional[str] = ..., doc: _Optional[_Union[Doc, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetDocRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListDocsRequest(_message.Message):
    __slots__ = ("agent_id", "user_id", "page_size", "page_token", "metadata_filter")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    METADATA_FILTER_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    user_id: str
    page_size: int
    page_token: str
    metadata_filter: _struct_pb2.Struct
    def __init__(self, agent_id: _Optional[str] = ..., user_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., metadata_filter: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ListDocsResponse(_message.Message):
    __slots__ = ("docs", "next_page_token")
    DOCS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    docs: _containers.RepeatedCompositeFieldContainer[Doc]
    next_page_token: str
    def __init__(self, docs: _Optional[_Iterable[_Union[Doc, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteDocRequest(_message.Message):
    __slots__ = ("id", "agent_id", "user_id")
    ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    agent_id: str
    user_id: str
    def __init__(self, id: _Optional[str] = ..., agent_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class DeleteDocsRequest(_message.Message):
    __slots__ = ("agent_id", "user_id", "metadata_filter", "delete_all")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FILTER_FIELD_NUMBER: _ClassVar[int]
    DELETE_ALL_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    user_id: str
    metadata_filter: _struct_pb2.Struct
    delete_all: bool
    def __init__(self, agent_id: _Optional[str] = ..., user_id: _Optional[str] = ..., metadata_filter: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., delete_all: _Optional[bool] = ...) -> None: ...

class DeleteDocsResponse(_message.Message):
    __slots__ = ("deleted_count",)
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    def __init__(self, deleted_count: _Optional[int] = ...) -> None: ...

class SearchDocsRequest(_message.Message):
    __slots__ = ("agent_id", "user_id", "mode", "text", "vector", "limit", "confidence", "alpha", "mmr_strength", "metadata_filter", "lang")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    MMR_STRENGTH_FIELD_NUMBER: _ClassVar[int]
    METADATA_FILTER_FIELD_NUMBER: _ClassVar[int]
    LANG_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    user_id: str
    mode: DocSearchMode
    text: str
    vector: _containers.RepeatedScalarFieldContainer[float]
    limit: int
    confidence: float
    alpha: float
    mmr_strength: float
    metadata_filter: _struct_pb2.Struct
    lang: str
    def __init__(self, agent_id: _Optional[str] = ..., user_id: _Optional[str] = ..., mode: _Optional[_Union[DocSearchMode, str]] = ..., text: _Optional[str] = ..., vector: _Optional[_Iterable[float]] = ..., limit: _Optional[int] = ..., confidence: _Optional[float] = ..., alpha: _Optional[float] = ..., mmr_strength: _Optional[float] = ..., metadata_filter: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., lang: _Optional[str] = ...) -> None: ...

class DocSearchResult(_message.Message):
    __slots__ = ("doc", "chunk_index", "snippet", "score")
    DOC_FIELD_NUMBER: _ClassVar[int]
    CHUNK_INDEX_FIELD_NUMBER: _ClassVar[int]
    SNIPPET_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    doc: Doc
    chunk_index: int
    snippet: str
    score: float
    def __init__(self, doc: _Optional[_Union[Doc, _Mapping]] = ..., chunk_index: _Optional[int] = ..., snippet: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class SearchDocsResponse(_message.Message):
    __slots__ = ("results", "time")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[DocSearchResult]
    time: float
    def __init__(self, results: _Optional[_Iterable[_Union[DocSearchResult, _Mapping]]] = ..., time: _Optional[float] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("text", "embed_instruction")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    EMBED_INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    text: _containers.RepeatedScalarFieldContainer[str]
    embed_instruction: str
    def __init__(self, text: _Optional[_Iterable[str]] = ..., embed_instruction: _Optional[str] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("vectors",)
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[Vector]
    def __init__(self, vectors: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ...) -> None: ...
