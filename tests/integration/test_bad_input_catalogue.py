"""A catalogue of bad input for every RPC, generated from the service descriptors.

The product's rule: bad input gets a clear error (a gRPC status and a message naming the field and
the problem) and changes nothing; the server stays up and loses no data. Each case below is one
request that breaks one thing in an otherwise valid request, sent as serialized protobuf over a raw
channel (no client-side checks or limits in the way), with its own test id
(`AgentService/GetAgent:id=not-a-uuid`).

Design: the cases are derived from the descriptors (field names, types and the
`google.api.field_behavior` annotations), so a new RPC or field is covered without editing this
file; only a valid base request per RPC is written by hand (a new RPC without one fails
`test_every_rpc_has_a_base_request`, as test_tenancy does). Rejected: one hand-written case per RPC
and problem (hundreds of near-identical tests, and a new field would go untested), and reading the
.proto comments to find which fields are ids (the runtime descriptors carry no comments, so the
few id fields not named `*_id` are listed in REFERENCES).

The cases share one developer ("the world": one resource of each kind, made once per module and
worker); after every case on a mutating RPC the developer's lists must be unchanged. The module is
marked as one xdist group, but does not depend on it (with pytest 9 and xdist 3.8 the group marks
have no effect: xdist renames `item._nodeid`, which pytest 9 no longer reads): each worker has its
own server and world, and checks at the end of its share that its server is SERVING and the world's
resources are intact (`_healthy_at_the_end`, and the last test)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.api import field_behavior_pb2  # type: ignore[import-untyped]
from google.protobuf import descriptor, field_mask_pb2, message_factory, struct_pb2
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mintleaf_server._proto.mintleaf.v1 import (
    agents_pb2,
    chat_pb2,
    docs_pb2,
    executions_pb2,
    secrets_pb2,
    sessions_pb2,
    tasks_pb2,
    tools_pb2,
    users_pb2,
)
from mintleaf_server.config import Limits
from support.errors import CallError, expect_error
from support.harness import ServerThread

pytestmark = pytest.mark.xdist_group("bad-input")

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
TIMEOUT = 15.0  # seconds per call: an error must come back, not a hang

_MODULES = (
    agents_pb2,
    users_pb2,
    tools_pb2,
    tasks_pb2,
    executions_pb2,
    sessions_pb2,
    chat_pb2,
    docs_pb2,
    secrets_pb2,
)
SERVICES = [service for module in _MODULES for service in module.DESCRIPTOR.services_by_name.values()]
METHODS: dict[str, descriptor.MethodDescriptor] = {
    f"{service.name}/{method.name}": method for service in SERVICES for method in service.methods
}
MAX_PAGE_SIZE = Limits().max_page_size  # docs/README.md: "at most 1000"
MAX_MESSAGE_BYTES = Limits().max_message_bytes
MAX_METADATA_BYTES = 64 * 1024  # api/common.check_metadata

# `*_id` fields that are not UUIDs: an idempotency key and a wait's name (executions.proto:
# "Identifies this wait"; the engine names waits itself).
NOT_UUIDS = frozenset({"request_id", "wait_id"})
# Ids of other resources in fields not named `*_id` (sessions.proto, chat.proto), with the answer
# to a well-formed id that names nothing: a session's participants must exist (NOT_FOUND); a chat's
# `agent` picks one of the session's agents, so any other id is INVALID_ARGUMENT naming it.
REFERENCES: dict[str, dict[str, grpc.StatusCode]] = {
    "SessionService/CreateSession": {
        "session.agent": grpc.StatusCode.NOT_FOUND,
        "session.user": grpc.StatusCode.NOT_FOUND,
        "session.agents[0]": grpc.StatusCode.NOT_FOUND,
        "session.users[0]": grpc.StatusCode.NOT_FOUND,
    },
    **{
        f"ChatService/{name}": {"agent": grpc.StatusCode.INVALID_ARGUMENT}
        for name in ("Chat", "StreamChat", "RenderChat")
    },
}
# The fields that identify the resource an Update changes, beyond `<resource>.id`
# (tools.proto: Tool.agent_id "identifies the tool on update").
IDENTITY: dict[str, tuple[str, ...]] = {"ToolService/UpdateTool": ("tool.agent_id",)}
# DocService takes exactly one owner (agent_id or user_id): the base requests name the agent, so a
# case about user_id drops agent_id.
EXCLUSIVE = {"user_id": "agent_id"}
# A task is given as `definition` or as `yaml`, not both: a case about the definition drops the
# base request's yaml.
ALTERNATIVES = {"task.definition": "task.yaml"}
# RPCs that change nothing by design (reads): no before/after comparison needed.
READ_PREFIXES = ("Get", "List", "Search", "Validate", "Render", "Stream", "Embed")

HELLO = "name: Hello\nmain:\n  - return: {x: '1 + 1'}\n"
UNKNOWN = "0b5e7d4a-9c1e-4f3a-8d2b-7a6c5e4f3b2a"  # a well-formed UUID no resource has


def _behaviors(field: descriptor.FieldDescriptor) -> list[int]:
    return list(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def _required(field: descriptor.FieldDescriptor) -> bool:
    return field_behavior_pb2.REQUIRED in _behaviors(field)


def _output_only(field: descriptor.FieldDescriptor) -> bool:
    return field_behavior_pb2.OUTPUT_ONLY in _behaviors(field)


def _is_id(field: descriptor.FieldDescriptor) -> bool:
    return (
        field.type == descriptor.FieldDescriptor.TYPE_STRING
        and (field.name == "id" or field.name.endswith("_id"))
        and field.name not in NOT_UUIDS
    )


def _resource(method: descriptor.MethodDescriptor) -> descriptor.FieldDescriptor | None:
    """The resource message a Create or Update carries (`agent` in CreateAgentRequest)."""
    if not method.name.startswith(("Create", "Update")):
        return None
    for field in method.input_type.fields:
        if (
            field.message_type is not None
            and field.message_type.full_name.startswith("mintleaf.")
            and not field.is_repeated
        ):
            return field
    return None


# -- requests -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """One developer's resources, one of each kind; every base request names them."""

    agent: str
    tool: str
    user: str
    session: str
    task: str
    execution: str
    secret: str
    doc: str


def _struct(value: dict[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(value)
    return s


def _mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


# A valid request for every RPC (only its bad variants are sent). Deletes and updates name the
# world's resources: a case that is wrongly accepted shows up as a changed world.
BASE: dict[str, Callable[[World], Message]] = {
    "AgentService/CreateAgent": lambda w: agents_pb2.CreateAgentRequest(agent=agents_pb2.Agent(name="bad")),
    "AgentService/GetAgent": lambda w: agents_pb2.GetAgentRequest(id=w.agent),
    "AgentService/ListAgents": lambda w: agents_pb2.ListAgentsRequest(),
    "AgentService/UpdateAgent": lambda w: agents_pb2.UpdateAgentRequest(
        agent=agents_pb2.Agent(id=w.agent, about="changed"), update_mask=_mask("about")
    ),
    "AgentService/DeleteAgent": lambda w: agents_pb2.DeleteAgentRequest(id=w.agent),
    "AgentService/ListModels": lambda w: agents_pb2.ListModelsRequest(),
    "UserService/CreateUser": lambda w: users_pb2.CreateUserRequest(user=users_pb2.User(name="bad")),
    "UserService/GetUser": lambda w: users_pb2.GetUserRequest(id=w.user),
    "UserService/ListUsers": lambda w: users_pb2.ListUsersRequest(),
    "UserService/UpdateUser": lambda w: users_pb2.UpdateUserRequest(
        user=users_pb2.User(id=w.user, about="changed"), update_mask=_mask("about")
    ),
    "UserService/DeleteUser": lambda w: users_pb2.DeleteUserRequest(id=w.user),
    "ToolService/CreateTool": lambda w: tools_pb2.CreateToolRequest(
        agent_id=w.agent, tool=tools_pb2.Tool(name="bad_tool", function=tools_pb2.FunctionDef())
    ),
    "ToolService/GetTool": lambda w: tools_pb2.GetToolRequest(agent_id=w.agent, id=w.tool),
    "ToolService/ListTools": lambda w: tools_pb2.ListToolsRequest(agent_id=w.agent),
    "ToolService/UpdateTool": lambda w: tools_pb2.UpdateToolRequest(
        tool=tools_pb2.Tool(agent_id=w.agent, id=w.tool, description="changed"),
        update_mask=_mask("description"),
    ),
    "ToolService/DeleteTool": lambda w: tools_pb2.DeleteToolRequest(agent_id=w.agent, id=w.tool),
    "TaskService/CreateTask": lambda w: tasks_pb2.CreateTaskRequest(
        agent_id=w.agent, task=tasks_pb2.Task(yaml=HELLO)
    ),
    "TaskService/GetTask": lambda w: tasks_pb2.GetTaskRequest(id=w.task),
    "TaskService/ListTasks": lambda w: tasks_pb2.ListTasksRequest(),
    "TaskService/UpdateTask": lambda w: tasks_pb2.UpdateTaskRequest(
        task=tasks_pb2.Task(id=w.task, metadata=_struct({"changed": True})), update_mask=_mask("metadata")
    ),
    "TaskService/DeleteTask": lambda w: tasks_pb2.DeleteTaskRequest(id=w.task),
    "TaskService/ListTaskVersions": lambda w: tasks_pb2.ListTaskVersionsRequest(id=w.task),
    "TaskService/ValidateTask": lambda w: tasks_pb2.ValidateTaskRequest(
        agent_id=w.agent, task=tasks_pb2.Task(yaml=HELLO)
    ),
    "ExecutionService/CreateExecution": lambda w: executions_pb2.CreateExecutionRequest(
        task_id=w.task, execution=executions_pb2.Execution(input=_struct({}))
    ),
    "ExecutionService/GetExecution": lambda w: executions_pb2.GetExecutionRequest(id=w.execution),
    "ExecutionService/ListExecutions": lambda w: executions_pb2.ListExecutionsRequest(),
    "ExecutionService/CancelExecution": lambda w: executions_pb2.CancelExecutionRequest(id=w.execution),
    "ExecutionService/ResumeExecution": lambda w: executions_pb2.ResumeExecutionRequest(id=w.execution),
    "ExecutionService/SubmitToolResults": lambda w: executions_pb2.SubmitToolResultsRequest(
        id=w.execution, results=[executions_pb2.ToolResult(tool_call_id="call_1")]
    ),
    "ExecutionService/ListTransitions": lambda w: executions_pb2.ListTransitionsRequest(
        execution_id=w.execution
    ),
    "ExecutionService/StreamTransitions": lambda w: executions_pb2.StreamTransitionsRequest(
        execution_id=w.execution
    ),
    "SessionService/CreateSession": lambda w: sessions_pb2.CreateSessionRequest(
        session=sessions_pb2.Session(agent=w.agent, user=w.user)
    ),
    "SessionService/GetSession": lambda w: sessions_pb2.GetSessionRequest(id=w.session),
    "SessionService/ListSessions": lambda w: sessions_pb2.ListSessionsRequest(),
    "SessionService/UpdateSession": lambda w: sessions_pb2.UpdateSessionRequest(
        session=sessions_pb2.Session(id=w.session, situation="changed"), update_mask=_mask("situation")
    ),
    "SessionService/DeleteSession": lambda w: sessions_pb2.DeleteSessionRequest(id=w.session),
    "SessionService/ListEntries": lambda w: sessions_pb2.ListEntriesRequest(session_id=w.session),
    "SessionService/DeleteEntries": lambda w: sessions_pb2.DeleteEntriesRequest(session_id=w.session),
    "ChatService/Chat": lambda w: _chat(w),
    "ChatService/StreamChat": lambda w: _chat(w),
    "ChatService/RenderChat": lambda w: _chat(w),
    "DocService/CreateDoc": lambda w: docs_pb2.CreateDocRequest(
        agent_id=w.agent, doc=docs_pb2.Doc(title="bad", content=["bad"])
    ),
    "DocService/GetDoc": lambda w: docs_pb2.GetDocRequest(id=w.doc),
    "DocService/ListDocs": lambda w: docs_pb2.ListDocsRequest(agent_id=w.agent),
    "DocService/DeleteDoc": lambda w: docs_pb2.DeleteDocRequest(id=w.doc),
    "DocService/DeleteDocs": lambda w: docs_pb2.DeleteDocsRequest(
        agent_id=w.agent, metadata_filter=_struct({"matches": "nothing"})
    ),
    "DocService/SearchDocs": lambda w: docs_pb2.SearchDocsRequest(
        agent_id=w.agent, mode=docs_pb2.DOC_SEARCH_MODE_TEXT, text="hello"
    ),
    "DocService/Embed": lambda w: docs_pb2.EmbedRequest(text=["hello"]),
    "SecretService/CreateSecret": lambda w: secrets_pb2.CreateSecretRequest(
        secret=secrets_pb2.Secret(name="BAD", value="bad")
    ),
    "SecretService/GetSecret": lambda w: secrets_pb2.GetSecretRequest(id=w.secret),
    "SecretService/ListSecrets": lambda w: secrets_pb2.ListSecretsRequest(),
    "SecretService/UpdateSecret": lambda w: secrets_pb2.UpdateSecretRequest(
        secret=secrets_pb2.Secret(id=w.secret, description="changed"), update_mask=_mask("description")
    ),
    "SecretService/DeleteSecret": lambda w: secrets_pb2.DeleteSecretRequest(id=w.secret),
}


def _chat(w: World) -> chat_pb2.ChatRequest:
    return chat_pb2.ChatRequest(
        session_id=w.session, messages=[sessions_pb2.ChatMessage(role="user", content="hello")]
    )


# -- field paths ----------------------------------------------------------------------------------

_STEP = re.compile(r"^(\w+)(?:\[(\d+)\])?$")


def _step(part: str) -> tuple[str, int | None]:
    match = _STEP.match(part)
    assert match, part
    return match[1], None if match[2] is None else int(match[2])


def _parent(message: Message, path: str) -> tuple[Message, str, int | None]:
    *parents, last = path.split(".")
    for part in parents:
        name, index = _step(part)
        message = getattr(message, name) if index is None else getattr(message, name)[index]
    name, index = _step(last)
    return message, name, index


def _set(message: Message, path: str, value: Any) -> None:
    parent, name, index = _parent(message, path)
    field = parent.DESCRIPTOR.fields_by_name[name]
    if index is not None:
        items = getattr(parent, name)
        while len(items) <= index:
            items.append(value)
        items[index] = value
    elif field.is_repeated:
        del getattr(parent, name)[:]
        getattr(parent, name).extend(value)
    elif field.message_type is not None:
        getattr(parent, name).CopyFrom(value)
    else:
        setattr(parent, name, value)


def _clear(message: Message, path: str) -> None:
    parent, name, index = _parent(message, path)
    if index is None:
        parent.ClearField(name)
    else:
        del getattr(parent, name)[index]


# -- cases ----------------------------------------------------------------------------------------

CLEAR = object()  # a Case change that clears the field instead of setting it


@dataclass(frozen=True)
class Case:
    """One bad request: `changes` applied to the RPC's base request, and the answer expected."""

    rpc: str
    label: str
    changes: tuple[tuple[str, Any], ...]  # (path, value); value CLEAR clears the field
    code: grpc.StatusCode = INVALID
    field: str | None = None  # a violation must name this field (or a field inside it: `within`)
    within: bool = False

    @property
    def id(self) -> str:
        return f"{self.rpc}:{self.label}"

    def request(self, world: World) -> Message:
        request = BASE[self.rpc](world)
        method = METHODS[self.rpc]
        resource = _resource(method)
        for path, value in self.changes:
            top = path.split(".")[0].split("[")[0]
            if top in EXCLUSIVE and EXCLUSIVE[top] in request.DESCRIPTOR.fields_by_name:
                request.ClearField(EXCLUSIVE[top])
            if path in ALTERNATIVES:
                _clear(request, ALTERNATIVES[path])
            if value is CLEAR:
                _clear(request, path)
            else:
                _set(request, path, value)
            # An update changes only what its mask names: a bad field is put in the mask too.
            if (
                method.name.startswith("Update")
                and resource is not None
                and path.startswith(resource.name + ".")
                and path not in _identity(self.rpc)
            ):
                mask = request.update_mask
                name = path.split(".")[1].split("[")[0]
                if name not in mask.paths:
                    mask.paths.append(name)
        return request


def _identity(rpc: str) -> tuple[str, ...]:
    resource = _resource(METHODS[rpc])
    if resource is None or not rpc.split("/")[1].startswith("Update"):
        return ()
    return (f"{resource.name}.id", *IDENTITY.get(rpc, ()))


def _id_fields(rpc: str) -> list[str]:
    """The request's UUID fields: top level, `<resource>.id` (create and update), references."""
    method = METHODS[rpc]
    paths = [f.name for f in method.input_type.fields if _is_id(f) and not f.is_repeated]
    resource = _resource(method)
    if resource is not None:
        paths.append(f"{resource.name}.id")
    paths += [p for p in _identity(rpc) if p not in paths]
    return paths + list(REFERENCES.get(rpc, {}))


def _nested_required(rpc: str) -> list[str]:
    """REQUIRED fields inside the resource message (creates, updates) and inside the first item of
    the request's repeated messages (`messages[0].role`)."""
    method = METHODS[rpc]
    paths: list[str] = []
    resource = _resource(method)
    if resource is not None:
        paths += [f"{resource.name}.{f.name}" for f in resource.message_type.fields if _required(f)]
    for field in method.input_type.fields:
        if field.is_repeated and field.message_type is not None and _has_item(rpc, field.name):
            paths += [f"{field.name}[0].{f.name}" for f in field.message_type.fields if _required(f)]
    return paths


def _has_item(rpc: str, name: str) -> bool:
    """Whether the base request has an item in the repeated field (read with placeholder ids)."""
    probe = World(*(["00000000-0000-4000-8000-000000000000"] * 8))
    return len(getattr(BASE[rpc](probe), name)) > 0


def _list_filter(rpc: str, path: str) -> bool:
    """An optional filter of a List (ListTasks.agent_id): an unknown id lists nothing, rightly."""
    field = METHODS[rpc].input_type.fields_by_name.get(path)
    return rpc.split("/")[1].startswith("List") and field is not None and not _required(field)


def _nested(count: int) -> struct_pb2.Struct:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(count):
        value = {"k": value}
    return _struct(value)


def _field_cases() -> Iterator[Case]:
    for rpc, method in sorted(METHODS.items()):
        fields = method.input_type.fields_by_name
        required_top = [f.name for f in method.input_type.fields if _required(f)]
        # 1. ids: not a UUID, missing where required, unknown
        for path in _id_fields(rpc):
            yield Case(rpc, f"{path}=not-a-uuid", ((path, "not-a-uuid"),), field=path)
            if path in required_top or path in _identity(rpc):
                yield Case(rpc, f"{path}=empty", ((path, ""),), field=path)
            creates_it = path == f"{getattr(_resource(method), 'name', '')}.id" and method.name.startswith(
                "Create"
            )
            if not creates_it and not _list_filter(rpc, path):
                code = REFERENCES.get(rpc, {}).get(path, NOT_FOUND)
                yield Case(
                    rpc,
                    f"{path}=unknown",
                    ((path, UNKNOWN),),
                    code=code,
                    field=None if code == NOT_FOUND else path,
                )
        # ... and the other REQUIRED fields (messages, lists, fields inside them), left out
        for name in required_top:
            if not _is_id(fields[name]):
                yield Case(rpc, f"{name}=empty", ((name, CLEAR),), field=name, within=True)
        for path in _nested_required(rpc):
            yield Case(rpc, f"{path}=empty", ((path, CLEAR),), field=path)
        # 2. paging
        if "page_size" in fields:
            yield Case(rpc, "page_size=-1", (("page_size", -1),), field="page_size")
            yield Case(
                rpc, f"page_size={MAX_PAGE_SIZE + 1}", (("page_size", MAX_PAGE_SIZE + 1),), field="page_size"
            )
        if "page_token" in fields:
            for label, token in (
                ("garbage", "not-a-token"),
                ("superscript-digit", "\u00b2"),
                ("base64-json-object", "eyJhIjoxfQ"),
            ):
                yield Case(rpc, f"page_token={label}", (("page_token", token),), field="page_token")
        # 4. update masks
        resource = _resource(method)
        if "update_mask" in fields and resource is not None:
            output_only = next(f.name for f in resource.message_type.fields if _output_only(f))
            for path in ("no_such_field", output_only, "id"):
                yield Case(rpc, f"update_mask={path}", (("update_mask", _mask(path)),), field="update_mask")
        # unknown enum values (proto3 enums are open: any number arrives)
        for field in method.input_type.fields:
            if field.enum_type is not None and not field.is_repeated:
                yield Case(rpc, f"{field.name}=enum-99", ((field.name, 99),), field=field.name)
        if resource is not None:
            for field in resource.message_type.fields:
                if field.enum_type is not None and not _output_only(field):
                    path = f"{resource.name}.{field.name}"
                    yield Case(rpc, f"{path}=enum-99", ((path, 99),), field=path)
        # 7. metadata and strings of a created resource
        if resource is not None and method.name.startswith("Create"):
            yield from _create_abuse(rpc, resource)
    yield from EXTRAS


# Largest serialized size of free-form objects (api/common.check_metadata: metadata and agent
# default_settings) and of a task definition (api/tasks.MAX_DEFINITION_BYTES).
STRUCT_LIMITS = {"metadata": 64 * 1024, "default_settings": 64 * 1024, "definition": 1024 * 1024}
# Structs read as documents, not free-form: the abuse goes inside a valid document, and the
# violation may name a path inside the field (`task.definition.name`).
DOCUMENTS: dict[str, Callable[[Any, Any], dict[str, Any]]] = {
    "definition": lambda name, key: {"name": name, "main": [{"return": {key: "1 + 1"}}]},
}


def _struct_abuse(rpc: str, path: str, name: str) -> Iterator[Case]:
    document = DOCUMENTS.get(name)
    shape = document or (lambda value, key: {key: value})
    yield Case(rpc, f"{path}=nested-200", ((path, _nested(200)),), field=path)
    if name in STRUCT_LIMITS:
        huge = shape("x" * (STRUCT_LIMITS[name] + 1), "x")
        yield Case(rpc, f"{path}=huge", ((path, _struct(huge)),), field=path)
    for label, value in (("nul-in-value", shape("a\x00b", "x")), ("nul-in-key", shape("x", "a\x00b"))):
        yield Case(rpc, f"{path}={label}", ((path, _struct(value)),), field=path, within=document is not None)


def _create_abuse(rpc: str, resource: descriptor.FieldDescriptor) -> Iterator[Case]:
    """Structs and strings of a created resource: too deep, too big, NUL, too long."""
    r = resource.name
    for field in resource.message_type.fields:
        if _output_only(field):
            continue
        path = f"{r}.{field.name}"
        if field.message_type is not None and field.message_type.full_name == "google.protobuf.Struct":
            yield from _struct_abuse(rpc, path, field.name)
        if field.type != descriptor.FieldDescriptor.TYPE_STRING or _is_id(field):
            continue
        if path in REFERENCES.get(rpc, {}) or f"{path}[0]" in REFERENCES.get(rpc, {}):
            continue
        target = f"{path}[0]" if field.is_repeated else path
        yield Case(rpc, f"{target}=nul", ((target, "a\x00b"),), field=target)
        if field.name in ("name", "title"):
            yield Case(rpc, f"{path}=10000-chars", ((path, "n" * 10_000),), field=path)


# Numbers out of range, and a missing task version (its NOT_FOUND reason must be UPPER_SNAKE too).
EXTRAS = [
    Case("TaskService/GetTask", "version=-1", (("version", -1),), field="version"),
    Case("TaskService/GetTask", "version=unknown", (("version", 999),), code=NOT_FOUND),
    Case("DocService/SearchDocs", "limit=-1", (("limit", -1),), field="limit"),
    Case("DocService/SearchDocs", "limit=100000", (("limit", 100_000),), field="limit"),
    Case("DocService/SearchDocs", "confidence=2", (("confidence", 2.0),), field="confidence"),
    Case("DocService/SearchDocs", "alpha=2", (("alpha", 2.0),), field="alpha"),
    Case("DocService/SearchDocs", "mmr_strength=1", (("mmr_strength", 1.0),), field="mmr_strength"),
    Case(
        "SessionService/CreateSession",
        "session.token_budget=-1",
        (("session.token_budget", -1),),
        field="session.token_budget",
    ),
    Case("DocService/Embed", "text[0]=blank", (("text[0]", "  "),), field="text[0]"),
]

FIELD_CASES = list(_field_cases())

# Strings with control characters (not NUL) in a created resource's name: nothing in the docs
# forbids them, so either they are stored exactly or refused naming the field.
CONTROL = "a\x01b\x07c\x1b[31md\x7f"
CONTROL_CASES = [
    Case(rpc, f"{resource.name}.{f.name}=control-characters", ((f"{resource.name}.{f.name}", CONTROL),))
    for rpc, method in sorted(METHODS.items())
    if method.name.startswith("Create") and (resource := _resource(method)) is not None
    for f in resource.message_type.fields
    if f.name in ("name", "title") and not f.is_repeated and not _output_only(f)
]


# -- calls ----------------------------------------------------------------------------------------


class Api:
    """A raw channel with no client-side message limit, sending serialized requests."""

    def __init__(self, target: str, key: str) -> None:
        self.channel = grpc.insecure_channel(
            target,
            options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
        )
        self.metadata = (("authorization", f"Bearer {key}"),)

    def call(self, rpc: str, request: Message | bytes) -> Any:
        method = METHODS[rpc]
        body = request if isinstance(request, bytes) else request.SerializeToString()
        path = f"/{method.containing_service.full_name}/{method.name}"
        output = message_factory.GetMessageClass(method.output_type)
        if method.server_streaming:
            stream = self.channel.unary_stream(path, response_deserializer=output.FromString)
            return list(stream(body, metadata=self.metadata, timeout=TIMEOUT))
        unary = self.channel.unary_unary(path, response_deserializer=output.FromString)
        return unary(body, metadata=self.metadata, timeout=TIMEOUT)

    def serving(self) -> int:
        reply = health_pb2_grpc.HealthStub(self.channel).Check(
            health_pb2.HealthCheckRequest(), timeout=TIMEOUT
        )
        return int(reply.status)

    def close(self) -> None:
        self.channel.close()


def _make_world(api: Api) -> World:
    c = api.call
    agent = c("AgentService/CreateAgent", agents_pb2.CreateAgentRequest(agent=agents_pb2.Agent(name="w")))
    tool = c(
        "ToolService/CreateTool",
        tools_pb2.CreateToolRequest(
            agent_id=agent.id, tool=tools_pb2.Tool(name="w_tool", function=tools_pb2.FunctionDef())
        ),
    )
    user = c("UserService/CreateUser", users_pb2.CreateUserRequest(user=users_pb2.User(name="w")))
    session = c(
        "SessionService/CreateSession",
        sessions_pb2.CreateSessionRequest(session=sessions_pb2.Session(agent=agent.id, user=user.id)),
    )
    task = c(
        "TaskService/CreateTask",
        tasks_pb2.CreateTaskRequest(agent_id=agent.id, task=tasks_pb2.Task(yaml=HELLO)),
    )
    execution = c(
        "ExecutionService/CreateExecution",
        executions_pb2.CreateExecutionRequest(task_id=task.id, execution=executions_pb2.Execution()),
    )
    secret = c(
        "SecretService/CreateSecret",
        secrets_pb2.CreateSecretRequest(secret=secrets_pb2.Secret(name="W", value="w")),
    )
    doc = c(
        "DocService/CreateDoc",
        docs_pb2.CreateDocRequest(agent_id=agent.id, doc=docs_pb2.Doc(title="w", content=["hello world"])),
    )
    # The execution runs to its end first, so the world holds still while the catalogue runs.
    deadline = time.monotonic() + 60
    status = execution.status
    while status != executions_pb2.EXECUTION_STATUS_SUCCEEDED and time.monotonic() < deadline:
        time.sleep(0.05)
        status = c(
            "ExecutionService/GetExecution", executions_pb2.GetExecutionRequest(id=execution.id)
        ).status
    assert status == executions_pb2.EXECUTION_STATUS_SUCCEEDED, status
    return World(agent.id, tool.id, user.id, session.id, task.id, execution.id, secret.id, doc.id)


def _snapshot(api: Api, w: World) -> dict[str, bytes]:
    """Everything the world's developer can list, serialized."""
    size = MAX_PAGE_SIZE
    lists: dict[str, Message] = {
        "AgentService/ListAgents": agents_pb2.ListAgentsRequest(page_size=size),
        "UserService/ListUsers": users_pb2.ListUsersRequest(page_size=size),
        "ToolService/ListTools": tools_pb2.ListToolsRequest(agent_id=w.agent, page_size=size),
        "TaskService/ListTasks": tasks_pb2.ListTasksRequest(page_size=size),
        "TaskService/ListTaskVersions": tasks_pb2.ListTaskVersionsRequest(id=w.task, page_size=size),
        "ExecutionService/ListExecutions": executions_pb2.ListExecutionsRequest(page_size=size),
        "SessionService/ListSessions": sessions_pb2.ListSessionsRequest(page_size=size),
        "SessionService/ListEntries": sessions_pb2.ListEntriesRequest(session_id=w.session, page_size=size),
        "DocService/ListDocs": docs_pb2.ListDocsRequest(agent_id=w.agent, page_size=size),
        "SecretService/ListSecrets": secrets_pb2.ListSecretsRequest(page_size=size),
    }
    answers = {rpc: api.call(rpc, request) for rpc, request in lists.items()}
    # An execution wrongly created by a bad request runs on: what it is, not how far it got.
    for execution in answers["ExecutionService/ListExecutions"].executions:
        for name in ("status", "output", "error", "transition_count", "waits", "updated_at"):
            execution.ClearField(name)
    return {rpc: answer.SerializeToString(deterministic=True) for rpc, answer in answers.items()}


@pytest.fixture(scope="module")
def api(server: ServerThread) -> Iterator[Api]:
    a = Api(server.target, server.new_key())
    yield a
    a.close()


@pytest.fixture(scope="module")
def world(api: Api) -> World:
    return _make_world(api)


def _world_state(api: Api, w: World) -> dict[str, bytes]:
    """Each of the world's resources, read one by one, serialized."""
    reads: dict[str, Message] = {
        "AgentService/GetAgent": agents_pb2.GetAgentRequest(id=w.agent),
        "ToolService/GetTool": tools_pb2.GetToolRequest(agent_id=w.agent, id=w.tool),
        "UserService/GetUser": users_pb2.GetUserRequest(id=w.user),
        "SessionService/GetSession": sessions_pb2.GetSessionRequest(id=w.session),
        "TaskService/GetTask": tasks_pb2.GetTaskRequest(id=w.task),
        "ExecutionService/GetExecution": executions_pb2.GetExecutionRequest(id=w.execution),
        "SecretService/GetSecret": secrets_pb2.GetSecretRequest(id=w.secret),
        "DocService/GetDoc": docs_pb2.GetDocRequest(id=w.doc),
    }
    return {
        rpc: api.call(rpc, request).SerializeToString(deterministic=True) for rpc, request in reads.items()
    }


@pytest.fixture(scope="module")
def initial(api: Api, world: World) -> dict[str, bytes]:
    return _world_state(api, world)


@pytest.fixture(scope="module", autouse=True)
def _healthy_at_the_end(api: Api, world: World, initial: dict[str, bytes]) -> Iterator[None]:
    """The last check, on every worker: xdist may spread this module over several workers (each
    with its own server), so each checks its server once its share of the catalogue has run."""
    yield
    assert api.serving() == health_pb2.HealthCheckResponse.SERVING
    assert _world_state(api, world) == initial, "the catalogue changed or lost the world's resources"


def _mutating(rpc: str) -> bool:
    return not rpc.split("/")[1].startswith(READ_PREFIXES)


def _describe(err: CallError) -> str:
    return f"{err.code.name} reason={err.reason!r} violations={err.violations} message={err.message!r}"


# -- tests ----------------------------------------------------------------------------------------


def test_every_rpc_has_a_base_request() -> None:
    assert set(METHODS) - set(BASE) == set(), "add a valid base request for each new RPC"
    assert set(BASE) - set(METHODS) == set(), "a base request names an RPC that no longer exists"


def test_the_catalogue_covers_every_rpc_with_fields() -> None:
    covered = {case.rpc for case in FIELD_CASES}
    assert {rpc for rpc, m in METHODS.items() if m.input_type.fields} - covered == set()
    assert len({case.id for case in FIELD_CASES}) == len(FIELD_CASES), "duplicate case ids"


@pytest.mark.parametrize("case", FIELD_CASES, ids=[c.id for c in FIELD_CASES])
def test_bad_field(api: Api, world: World, initial: dict[str, bytes], case: Case) -> None:
    request = case.request(world)
    before = _snapshot(api, world) if _mutating(case.rpc) else None
    try:
        err = expect_error(lambda: api.call(case.rpc, request), case.code)
        if case.code == NOT_FOUND:
            assert re.fullmatch(r"[A-Z][A-Z0-9_]*_NOT_FOUND", err.reason), _describe(err)
        if case.field is not None:
            named = [
                f
                for f in err.violations
                if f == case.field or (case.within and f.startswith((case.field + ".", case.field + "[")))
            ]
            assert named, f"expected a violation naming {case.field!r}; got {_describe(err)}"
            assert any(f in err.message for f in named), _describe(err)
    finally:  # checked whatever the answer was, so a wrong answer also tells what it changed
        if before is not None:
            assert _snapshot(api, world) == before, "the request changed the developer's resources"


def _padded(request: Message, size: int) -> bytes:
    """The request plus an unknown length-delimited field (number 9999) making it `size` bytes."""
    body: bytes = request.SerializeToString()
    tag = _varint((9999 << 3) | 2)
    room = size - len(body) - len(tag) - 5
    return body + tag + _len5(room) + b"x" * room


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len5(n: int) -> bytes:
    """`n` as a 5-byte varint (padded with continuation bytes), so the total size is exact."""
    out = bytearray()
    for _ in range(4):
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n & 0x7F)
    return bytes(out)


def _transport_error(api: Api, world: World, rpc: str, body: bytes) -> grpc.StatusCode:
    """Sends a body the server refuses before any handler runs; returns the status code, having
    checked that the server still answers and nothing changed."""
    before = _snapshot(api, world) if _mutating(rpc) else None
    try:
        with pytest.raises(grpc.RpcError) as info:
            api.call(rpc, body)
        exc: Any = info.value
        code: grpc.StatusCode = exc.code()
        assert exc.details(), "the error says what is wrong"
        return code
    finally:
        assert api.serving() == health_pb2.HealthCheckResponse.SERVING
        agent = api.call("AgentService/GetAgent", agents_pb2.GetAgentRequest(id=world.agent))
        assert agent.id == world.agent
        if before is not None:
            assert _snapshot(api, world) == before, "the request changed the developer's resources"


@pytest.mark.parametrize("rpc", sorted(METHODS))
def test_request_over_the_message_limit(api: Api, world: World, rpc: str) -> None:
    # Raw channel without a send limit: the server's own limit (limits.max_message_bytes) answers.
    body = _padded(BASE[rpc](world), MAX_MESSAGE_BYTES + 1)
    assert len(body) == MAX_MESSAGE_BYTES + 1
    assert _transport_error(api, world, rpc, body) == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("rpc", sorted(METHODS))
def test_garbage_body(api: Api, world: World, rpc: str) -> None:
    # 0xff ff ff ff 0f: a tag with wire type 7, which does not exist; then a truncated varint.
    code = _transport_error(api, world, rpc, b"\xff\xff\xff\xff\x0f\x08\x96")
    assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL), code


@pytest.mark.parametrize(
    "rpc", [r for r in sorted(METHODS) if "page_size" in METHODS[r].input_type.fields_by_name]
)
def test_page_size_at_the_maximum_is_accepted(api: Api, world: World, rpc: str) -> None:
    request = BASE[rpc](world)
    request.page_size = MAX_PAGE_SIZE
    api.call(rpc, request)


@pytest.mark.parametrize("case", CONTROL_CASES, ids=[c.id for c in CONTROL_CASES])
def test_control_characters_are_kept_or_refused(api: Api, world: World, case: Case) -> None:
    (path, value), *_ = case.changes
    try:
        made = api.call(case.rpc, case.request(world))
    except grpc.RpcError:
        # Refused: the same request again, through expect_error, to read the error's details.
        err = expect_error(lambda: api.call(case.rpc, case.request(world)), INVALID)
        assert path in err.violations, _describe(err)
        return
    try:
        assert getattr(made, path.split(".")[1]) == value, "stored differently than sent"
        got = api.call(case.rpc.replace("/Create", "/Get"), _get_request(case.rpc, made))
        assert getattr(got, path.split(".")[1]) == value, "read back differently than sent"
    finally:
        api.call(case.rpc.replace("/Create", "/Delete"), _get_request(case.rpc, made, "Delete"))


def _get_request(rpc: str, made: Message, verb: str = "Get") -> Message:
    method = METHODS[rpc.replace("/Create", f"/{verb}")]
    request = message_factory.GetMessageClass(method.input_type)()
    request.id = made.id
    if "agent_id" in method.input_type.fields_by_name and "agent_id" in made.DESCRIPTOR.fields_by_name:
        request.agent_id = made.agent_id  # a tool, under its agent
    return request


def test_zz_after_the_catalogue_the_server_is_healthy_and_lost_nothing(
    api: Api, world: World, initial: dict[str, bytes]
) -> None:
    assert api.serving() == health_pb2.HealthCheckResponse.SERVING
    assert _world_state(api, world) == initial, "the catalogue changed or lost the world's resources"
