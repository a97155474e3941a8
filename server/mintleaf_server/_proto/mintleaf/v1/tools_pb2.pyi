import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ToolType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOOL_TYPE_UNSPECIFIED: _ClassVar[ToolType]
    TOOL_TYPE_FUNCTION: _ClassVar[ToolType]
    TOOL_TYPE_INTEGRATION: _ClassVar[ToolType]
    TOOL_TYPE_SYSTEM: _ClassVar[ToolType]
    TOOL_TYPE_API_CALL: _ClassVar[ToolType]
TOOL_TYPE_UNSPECIFIED: ToolType
TOOL_TYPE_FUNCTION: ToolType
TOOL_TYPE_INTEGRATION: ToolType
TOOL_TYPE_SYSTEM: ToolType
TOOL_TYPE_API_CALL: ToolType

class Tool(_message.Message):
    __slots__ = ("id", "agent_id", "name", "type", "description", "function", "integration", "system", "api_call", "created_at", "updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    FUNCTION_FIELD_NUMBER: _ClassVar[int]
    INTEGRATION_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_FIELD_NUMBER: _ClassVar[int]
    API_CALL_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    agent_id: str
    name: str
    type: ToolType
    description: str
    function: FunctionDef
    integration: IntegrationDef
    system: SystemDef
    api_call: ApiCallDef
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., agent_id: _Optional[str] = ..., name: _Optional[str] = ..., type: _Optional[_Union[ToolType, str]] = ..., description: _Optional[str] = ..., function: _Optional[_Union[FunctionDef, _Mapping]] = ..., integration: _Optional[_Union[IntegrationDef, _Mapping]] = ..., system: _Optional[_Union[SystemDef, _Mapping]] = ..., api_call: _Optional[_Union[ApiCallDef, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class FunctionDef(_message.Message):
    __slots__ = ("name", "description", "parameters")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    parameters: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class IntegrationDef(_message.Message):
    __slots__ = ("provider", "method", "setup", "arguments")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SETUP_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    provider: str
    method: str
    setup: _struct_pb2.Struct
    arguments: _struct_pb2.Struct
    def __init__(self, provider: _Optional[str] = ..., method: _Optional[str] = ..., setup: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., arguments: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class SystemDef(_message.Message):
    __slots__ = ("resource", "operation", "resource_id", "subresource", "arguments")
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_ID_FIELD_NUMBER: _ClassVar[int]
    SUBRESOURCE_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    resource: str
    operation: str
    resource_id: str
    subresource: str
    arguments: _struct_pb2.Struct
    def __init__(self, resource: _Optional[str] = ..., operation: _Optional[str] = ..., resource_id: _Optional[str] = ..., subresource: _Optional[str] = ..., arguments: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ApiCallDef(_message.Message):
    __slots__ = ("method", "url", "headers", "params", "json", "data", "content", "cookies", "follow_redirects", "timeout", "include_response_content", "parameters", "secrets")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class CookiesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class SecretsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    METHOD_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    COOKIES_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_REDIRECTS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_RESPONSE_CONTENT_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    SECRETS_FIELD_NUMBER: _ClassVar[int]
    method: str
    url: str
    headers: _containers.ScalarMap[str, str]
    params: _struct_pb2.Struct
    json: _struct_pb2.Value
    data: _struct_pb2.Struct
    content: str
    cookies: _containers.ScalarMap[str, str]
    follow_redirects: bool
    timeout: float
    include_response_content: bool
    parameters: _struct_pb2.Struct
    secrets: _containers.ScalarMap[str, str]
    def __init__(self, method: _Optional[str] = ..., url: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ..., params: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., json: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., content: _Optional[str] = ..., cookies: _Optional[_Mapping[str, str]] = ..., follow_redirects: _Optional[bool] = ..., timeout: _Optional[float] = ..., include_response_content: _Optional[bool] = ..., parameters: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., secrets: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CreateToolRequest(_message.Message):
    __slots__ = ("agent_id", "tool", "request_id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    tool: Tool
    request_id: str
    def __init__(self, agent_id: _Optional[str] = ..., tool: _Optional[_Union[Tool, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetToolRequest(_message.Message):
    __slots__ = ("agent_id", "id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    id: str
    def __init__(self, agent_id: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...

class ListToolsRequest(_message.Message):
    __slots__ = ("agent_id", "page_size", "page_token")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    page_size: int
    page_token: str
    def __init__(self, agent_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListToolsResponse(_message.Message):
    __slots__ = ("tools", "next_page_token")
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    tools: _containers.RepeatedCompositeFieldContainer[Tool]
    next_page_token: str
    def __init__(self, tools: _Optional[_Iterable[_Union[Tool, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateToolRequest(_message.Message):
    __slots__ = ("tool", "update_mask")
    TOOL_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    tool: Tool
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, tool: _Optional[_Union[Tool, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class DeleteToolRequest(_message.Message):
    __slots__ = ("agent_id", "id")
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    agent_id: str
    id: str
    def __init__(self, agent_id: _Optional[str] = ..., id: _Optional[str] = ...) -> None: ...
