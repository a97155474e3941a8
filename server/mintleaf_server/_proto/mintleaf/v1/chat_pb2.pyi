import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from . import docs_pb2 as _docs_pb2
from . import executions_pb2 as _executions_pb2
from . import sessions_pb2 as _sessions_pb2
from . import tools_pb2 as _tools_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChatRequest(_message.Message):
    __slots__ = ("session_id", "messages", "agent", "model", "settings", "save", "recall", "auto_run_tools", "tools", "tool_choice", "metadata")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    SAVE_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    AUTO_RUN_TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHOICE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    messages: _containers.RepeatedCompositeFieldContainer[_sessions_pb2.ChatMessage]
    agent: str
    model: str
    settings: _struct_pb2.Struct
    save: bool
    recall: bool
    auto_run_tools: bool
    tools: _containers.RepeatedCompositeFieldContainer[_tools_pb2.Tool]
    tool_choice: str
    metadata: _struct_pb2.Struct
    def __init__(self, session_id: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[_sessions_pb2.ChatMessage, _Mapping]]] = ..., agent: _Optional[str] = ..., model: _Optional[str] = ..., settings: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., save: _Optional[bool] = ..., recall: _Optional[bool] = ..., auto_run_tools: _Optional[bool] = ..., tools: _Optional[_Iterable[_Union[_tools_pb2.Tool, _Mapping]]] = ..., tool_choice: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "total_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ...) -> None: ...

class ChatChoice(_message.Message):
    __slots__ = ("index", "finish_reason", "message")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    index: int
    finish_reason: str
    message: _sessions_pb2.ChatMessage
    def __init__(self, index: _Optional[int] = ..., finish_reason: _Optional[str] = ..., message: _Optional[_Union[_sessions_pb2.ChatMessage, _Mapping]] = ...) -> None: ...

class DocReference(_message.Message):
    __slots__ = ("id", "owner_type", "owner_id", "title", "snippets", "score")
    ID_FIELD_NUMBER: _ClassVar[int]
    OWNER_TYPE_FIELD_NUMBER: _ClassVar[int]
    OWNER_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    SNIPPETS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    id: str
    owner_type: _docs_pb2.DocOwnerType
    owner_id: str
    title: str
    snippets: _containers.RepeatedScalarFieldContainer[str]
    score: float
    def __init__(self, id: _Optional[str] = ..., owner_type: _Optional[_Union[_docs_pb2.DocOwnerType, str]] = ..., owner_id: _Optional[str] = ..., title: _Optional[str] = ..., snippets: _Optional[_Iterable[str]] = ..., score: _Optional[float] = ...) -> None: ...

class ChatResponse(_message.Message):
    __slots__ = ("id", "session_id", "choices", "usage", "docs", "model", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    DOCS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    session_id: str
    choices: _containers.RepeatedCompositeFieldContainer[ChatChoice]
    usage: Usage
    docs: _containers.RepeatedCompositeFieldContainer[DocReference]
    model: str
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., session_id: _Optional[str] = ..., choices: _Optional[_Iterable[_Union[ChatChoice, _Mapping]]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., docs: _Optional[_Iterable[_Union[DocReference, _Mapping]]] = ..., model: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ChatDelta(_message.Message):
    __slots__ = ("index", "content", "tool_calls")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    index: int
    content: str
    tool_calls: _containers.RepeatedCompositeFieldContainer[_executions_pb2.ToolCall]
    def __init__(self, index: _Optional[int] = ..., content: _Optional[str] = ..., tool_calls: _Optional[_Iterable[_Union[_executions_pb2.ToolCall, _Mapping]]] = ...) -> None: ...

class ChatEvent(_message.Message):
    __slots__ = ("delta", "response")
    DELTA_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    delta: ChatDelta
    response: ChatResponse
    def __init__(self, delta: _Optional[_Union[ChatDelta, _Mapping]] = ..., response: _Optional[_Union[ChatResponse, _Mapping]] = ...) -> None: ...

class RenderChatResponse(_message.Message):
    __slots__ = ("messages", "docs", "token_count", "tools")
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    DOCS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[_sessions_pb2.ChatMessage]
    docs: _containers.RepeatedCompositeFieldContainer[DocReference]
    token_count: int
    tools: _containers.RepeatedCompositeFieldContainer[_tools_pb2.Tool]
    def __init__(self, messages: _Optional[_Iterable[_Union[_sessions_pb2.ChatMessage, _Mapping]]] = ..., docs: _Optional[_Iterable[_Union[DocReference, _Mapping]]] = ..., token_count: _Optional[int] = ..., tools: _Optional[_Iterable[_Union[_tools_pb2.Tool, _Mapping]]] = ...) -> None: ...
