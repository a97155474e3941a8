import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecutionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTION_STATUS_UNSPECIFIED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_QUEUED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_STARTING: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_RUNNING: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_AWAITING_INPUT: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_SUCCEEDED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_FAILED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_CANCELLED: _ClassVar[ExecutionStatus]

class TransitionType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRANSITION_TYPE_UNSPECIFIED: _ClassVar[TransitionType]
    TRANSITION_TYPE_INIT: _ClassVar[TransitionType]
    TRANSITION_TYPE_INIT_BRANCH: _ClassVar[TransitionType]
    TRANSITION_TYPE_STEP: _ClassVar[TransitionType]
    TRANSITION_TYPE_WAIT: _ClassVar[TransitionType]
    TRANSITION_TYPE_RESUME: _ClassVar[TransitionType]
    TRANSITION_TYPE_FINISH: _ClassVar[TransitionType]
    TRANSITION_TYPE_FINISH_BRANCH: _ClassVar[TransitionType]
    TRANSITION_TYPE_ERROR: _ClassVar[TransitionType]
    TRANSITION_TYPE_CANCELLED: _ClassVar[TransitionType]
EXECUTION_STATUS_UNSPECIFIED: ExecutionStatus
EXECUTION_STATUS_QUEUED: ExecutionStatus
EXECUTION_STATUS_STARTING: ExecutionStatus
EXECUTION_STATUS_RUNNING: ExecutionStatus
EXECUTION_STATUS_AWAITING_INPUT: ExecutionStatus
EXECUTION_STATUS_SUCCEEDED: ExecutionStatus
EXECUTION_STATUS_FAILED: ExecutionStatus
EXECUTION_STATUS_CANCELLED: ExecutionStatus
TRANSITION_TYPE_UNSPECIFIED: TransitionType
TRANSITION_TYPE_INIT: TransitionType
TRANSITION_TYPE_INIT_BRANCH: TransitionType
TRANSITION_TYPE_STEP: TransitionType
TRANSITION_TYPE_WAIT: TransitionType
TRANSITION_TYPE_RESUME: TransitionType
TRANSITION_TYPE_FINISH: TransitionType
TRANSITION_TYPE_FINISH_BRANCH: TransitionType
TRANSITION_TYPE_ERROR: TransitionType
TRANSITION_TYPE_CANCELLED: TransitionType

class Execution(_message.Message):
    __slots__ = ("id", "task_id", "task_version", "status", "input", "output", "error", "transition_count", "metadata", "waits", "created_at", "updated_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_COUNT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    WAITS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    task_id: str
    task_version: int
    status: ExecutionStatus
    input: _struct_pb2.Struct
    output: _struct_pb2.Value
    error: str
    transition_count: int
    metadata: _struct_pb2.Struct
    waits: _containers.RepeatedCompositeFieldContainer[Wait]
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., task_id: _Optional[str] = ..., task_version: _Optional[int] = ..., status: _Optional[_Union[ExecutionStatus, str]] = ..., input: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., output: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., error: _Optional[str] = ..., transition_count: _Optional[int] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., waits: _Optional[_Iterable[_Union[Wait, _Mapping]]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Wait(_message.Message):
    __slots__ = ("id", "kind", "info", "tool_calls", "at")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    info: _struct_pb2.Value
    tool_calls: _containers.RepeatedCompositeFieldContainer[ToolCall]
    at: TransitionTarget
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., info: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., tool_calls: _Optional[_Iterable[_Union[ToolCall, _Mapping]]] = ..., at: _Optional[_Union[TransitionTarget, _Mapping]] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("id", "type", "name", "arguments")
    ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    type: str
    name: str
    arguments: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., type: _Optional[str] = ..., name: _Optional[str] = ..., arguments: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class CreateExecutionRequest(_message.Message):
    __slots__ = ("task_id", "execution", "request_id")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    execution: Execution
    request_id: str
    def __init__(self, task_id: _Optional[str] = ..., execution: _Optional[_Union[Execution, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetExecutionRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListExecutionsRequest(_message.Message):
    __slots__ = ("task_id", "status", "page_size", "page_token", "metadata_filter")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    METADATA_FILTER_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    status: ExecutionStatus
    page_size: int
    page_token: str
    metadata_filter: _struct_pb2.Struct
    def __init__(self, task_id: _Optional[str] = ..., status: _Optional[_Union[ExecutionStatus, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., metadata_filter: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ListExecutionsResponse(_message.Message):
    __slots__ = ("executions", "next_page_token")
    EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    executions: _containers.RepeatedCompositeFieldContainer[Execution]
    next_page_token: str
    def __init__(self, executions: _Optional[_Iterable[_Union[Execution, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelExecutionRequest(_message.Message):
    __slots__ = ("id", "reason")
    ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    id: str
    reason: str
    def __init__(self, id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ResumeExecutionRequest(_message.Message):
    __slots__ = ("id", "wait_id", "input")
    ID_FIELD_NUMBER: _ClassVar[int]
    WAIT_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    id: str
    wait_id: str
    input: _struct_pb2.Value
    def __init__(self, id: _Optional[str] = ..., wait_id: _Optional[str] = ..., input: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ...) -> None: ...

class ToolResult(_message.Message):
    __slots__ = ("tool_call_id", "output", "error")
    TOOL_CALL_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    tool_call_id: str
    output: _struct_pb2.Value
    error: str
    def __init__(self, tool_call_id: _Optional[str] = ..., output: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class SubmitToolResultsRequest(_message.Message):
    __slots__ = ("id", "results")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    results: _containers.RepeatedCompositeFieldContainer[ToolResult]
    def __init__(self, id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[ToolResult, _Mapping]]] = ...) -> None: ...

class TransitionTarget(_message.Message):
    __slots__ = ("workflow", "step", "scope_id", "path", "branch_id")
    WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    SCOPE_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    BRANCH_ID_FIELD_NUMBER: _ClassVar[int]
    workflow: str
    step: int
    scope_id: str
    path: str
    branch_id: str
    def __init__(self, workflow: _Optional[str] = ..., step: _Optional[int] = ..., scope_id: _Optional[str] = ..., path: _Optional[str] = ..., branch_id: _Optional[str] = ...) -> None: ...

class Transition(_message.Message):
    __slots__ = ("id", "execution_id", "sequence", "type", "output", "error", "current", "next", "step_label", "step_type", "metadata", "created_at")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    STEP_LABEL_FIELD_NUMBER: _ClassVar[int]
    STEP_TYPE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    id: str
    execution_id: str
    sequence: int
    type: TransitionType
    output: _struct_pb2.Value
    error: str
    current: TransitionTarget
    next: TransitionTarget
    step_label: str
    step_type: str
    metadata: _struct_pb2.Struct
    created_at: _timestamp_pb2.Timestamp
    def __init__(self, id: _Optional[str] = ..., execution_id: _Optional[str] = ..., sequence: _Optional[int] = ..., type: _Optional[_Union[TransitionType, str]] = ..., output: _Optional[_Union[_struct_pb2.Value, _Mapping]] = ..., error: _Optional[str] = ..., current: _Optional[_Union[TransitionTarget, _Mapping]] = ..., next: _Optional[_Union[TransitionTarget, _Mapping]] = ..., step_label: _Optional[str] = ..., step_type: _Optional[str] = ..., metadata: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListTransitionsRequest(_message.Message):
    __slots__ = ("execution_id", "page_size", "page_token")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    page_size: int
    page_token: str
    def __init__(self, execution_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListTransitionsResponse(_message.Message):
    __slots__ = ("transitions", "next_page_token")
    TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    transitions: _containers.RepeatedCompositeFieldContainer[Transition]
    next_page_token: str
    def __init__(self, transitions: _Optional[_Iterable[_Union[Transition, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StreamTransitionsRequest(_message.Message):
    __slots__ = ("execution_id", "after_sequence")
    EXECUTION_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    execution_id: str
    after_sequence: int
    def __init__(self, execution_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...
