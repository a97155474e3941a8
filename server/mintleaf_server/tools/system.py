"""System tools: operations on Mintleaf's own resources, run in-process through the API servicers
under the calling developer's identity (`InternalContext(ctx.developer_id)`), never another's.

Design note. Each (resource, subresource, operation) maps to one servicer method and a builder
that turns the call's arguments into that method's request message with `json_format.ParseDict`,
so unknown or mistyped arguments are rejected by the proto schema itself and new proto fields
work without code here. Rejected: SQL against the store (would bypass the API's validation and
tenancy) and a loopback gRPC call (needs an API key, and costs a network hop).

Arguments (JULEP-SPEC 7.2, with Mintleaf's fix): the definition's `arguments` lie under the call's;
the definition's `resource_id` names the resource (else `<resource>_id` or `id`). `limit` is
accepted for `page_size`. A `developer_id` argument is ignored: the caller's identity is the only
one used. Results are plain dicts (proto field names); lists are `{items, next_page_token}`."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from mintleaf_server.dsl.tools import ToolDef

from .context import ToolContext
from .errors import SystemOperationFailed, ToolArgumentsInvalid, ToolNotImplemented
from .specs import evaluate_spec

__all__ = ["SYSTEM_OPERATIONS", "operation_schema", "run_system"]

_PROTO = "mintleaf_server._proto.mintleaf.v1"
_CONTROL = frozenset(
    {"id", "request_id", "developer_id", "limit", "page_size", "page_token", "metadata_filter"}
)
_RETRYABLE_REASONS = frozenset({"UNAVAILABLE", "ABORTED", "CONFLICT", "DEADLINE_EXCEEDED"})

Builder = Callable[[dict[str, Any], str | None], dict[str, Any]]


@dataclass(frozen=True)
class _Op:
    servicer: str  # "module:Class" under mintleaf_server.api
    rpc: str
    request: str  # "module_pb2:Message"
    build: Builder  # (arguments, resource id) -> request as a dict
    list_field: str | None = None  # the repeated field of a List response
    schema_hint: str | None = None  # the message whose fields the model fills (create/update)


def _message_class(ref: str) -> type[Message]:
    module, name = ref.split(":")
    cls = getattr(importlib.import_module(f"{_PROTO}.{module}"), name)
    assert isinstance(cls, type) and issubclass(cls, Message)
    return cls


def _id(args: dict[str, Any], rid: str | None, *names: str) -> str:
    for value in (rid, *(args.get(n) for n in names)):
        if value:
            return str(value)
    raise ToolArgumentsInvalid(names[0], "is required (or the tool's resource_id)")


def _mask(paths: Any) -> str:
    """A FieldMask in its JSON form (camelCase paths, comma-separated)."""
    return ",".join(
        "".join(w if i == 0 else w.capitalize() for i, w in enumerate(str(p).split("_"))) for p in paths
    )


def _page(args: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    size = args.get("page_size", args.get("limit"))
    if size is not None:
        out["page_size"] = size
    for key in ("page_token", "metadata_filter"):
        if args.get(key) is not None:
            out[key] = args[key]
    return out


def _fields(args: dict[str, Any], extra_control: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The resource's fields: `data` when given (Julep's shape), else the other arguments."""
    data = args.get("data")
    if isinstance(data, Mapping):
        return dict(data)
    return {k: v for k, v in args.items() if k not in _CONTROL and k not in extra_control and k != "data"}


def _instructions(fields: dict[str, Any]) -> dict[str, Any]:
    if isinstance(fields.get("instructions"), str):  # Julep accepted one string
        fields = {**fields, "instructions": [fields["instructions"]]}
    return fields


def _crud(
    resource: str, module: str, message: str, servicer: str, rpc_noun: str, key_field: str
) -> dict[str, _Op]:
    """list/get/create/update/patch/delete/create_or_update for a top-level resource."""
    req = f"{module}:{{}}"
    id_names = (f"{resource}_id", "id")

    def create(a: dict[str, Any], rid: str | None) -> dict[str, Any]:
        fields = _instructions(_fields(a, frozenset({f"{resource}_id"})))
        if rid or a.get(f"{resource}_id") or a.get("id"):
            fields["id"] = _id(a, rid, *id_names)
        out: dict[str, Any] = {key_field: fields}
        if a.get("request_id"):
            out["request_id"] = a["request_id"]
        return out

    def update(a: dict[str, Any], rid: str | None) -> dict[str, Any]:
        fields = _instructions(_fields(a, frozenset({f"{resource}_id"})))
        if not fields:
            raise ToolArgumentsInvalid("", f"give the {resource} fields to update")
        return {key_field: {**fields, "id": _id(a, rid, *id_names)}, "update_mask": _mask(fields)}

    return {
        "list": _Op(
            servicer,
            f"List{rpc_noun}s",
            req.format(f"List{rpc_noun}sRequest"),
            lambda a, r: _page(a),
            list_field=f"{key_field}s",
        ),
        "get": _Op(
            servicer,
            f"Get{rpc_noun}",
            req.format(f"Get{rpc_noun}Request"),
            lambda a, r: {"id": _id(a, r, *id_names)},
        ),
        "create": _Op(
            servicer,
            f"Create{rpc_noun}",
            req.format(f"Create{rpc_noun}Request"),
            create,
            schema_hint=f"{module}:{message}",
        ),
        "update": _Op(
            servicer,
            f"Update{rpc_noun}",
            req.format(f"Update{rpc_noun}Request"),
            update,
            schema_hint=f"{module}:{message}",
        ),
        "delete": _Op(
            servicer,
            f"Delete{rpc_noun}",
            req.format(f"Delete{rpc_noun}Request"),
            lambda a, r: {"id": _id(a, r, *id_names)},
        ),
    }


def _task_definition(a: dict[str, Any]) -> dict[str, Any]:
    task: dict[str, Any] = {}
    if isinstance(a.get("yaml"), str):
        task["yaml"] = a["yaml"]
    elif isinstance(a.get("definition"), Mapping):
        task["definition"] = dict(a["definition"])
    else:
        definition = _fields(a, frozenset({"agent_id", "task_id", "canonical_name", "yaml", "definition"}))
        if definition:
            task["definition"] = definition
    if a.get("canonical_name"):
        task["canonical_name"] = a["canonical_name"]
    return task


def _task_create(a: dict[str, Any], rid: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"agent_id": _id(a, None, "agent_id"), "task": _task_definition(a)}
    if a.get("request_id"):
        out["request_id"] = a["request_id"]
    return out


def _task_update(a: dict[str, Any], rid: str | None) -> dict[str, Any]:
    task = _task_definition(a)
    if not task:
        raise ToolArgumentsInvalid("definition", "give the task's new definition (or yaml)")
    paths = ["definition" if k == "yaml" else k for k in task]
    return {"task": {**task, "id": _id(a, rid, "task_id", "id")}, "update_mask": _mask(paths)}


def _doc_ops(owner: str) -> dict[str, _Op]:
    owner_field = f"{owner}_id"
    svc = "docs:DocServicer"

    def owner_id(a: dict[str, Any], rid: str | None) -> str:
        return _id(a, rid, owner_field)

    def create(a: dict[str, Any], rid: str | None) -> dict[str, Any]:
        doc = _fields(a, frozenset({owner_field, "doc_id"}))
        if isinstance(doc.get("content"), str):
            doc["content"] = [doc["content"]]
        out: dict[str, Any] = {owner_field: owner_id(a, rid), "doc": doc}
        if a.get("request_id"):
            out["request_id"] = a["request_id"]
        return out

    def search(a: dict[str, Any], rid: str | None) -> dict[str, Any]:
        text, vector = a.get("text") or a.get("query"), a.get("vector")
        mode = (
            "DOC_SEARCH_MODE_HYBRID"
            if text and vector
            else "DOC_SEARCH_MODE_TEXT"
            if text
            else "DOC_SEARCH_MODE_VECTOR"
        )
        if not text and not vector:
            raise ToolArgumentsInvalid("text", "give text, vector or both")
        out: dict[str, Any] = {owner_field: owner_id(a, rid), "mode": mode, "limit": a.get("limit", 10)}
        for key in ("confidence", "mmr_strength", "metadata_filter", "lang"):
            if a.get(key) is not None:
                out[key] = a[key]
        if text:
            out["text"] = text
        if vector:
            out["vector"] = vector
        return out

    def list_docs(a: dict[str, Any], rid: str | None) -> dict[str, Any]:
        return {owner_field: owner_id(a, rid), **_page(a)}

    ops = {
        "list": _Op(svc, "ListDocs", "docs_pb2:ListDocsRequest", list_docs, list_field="docs"),
        "create": _Op(svc, "CreateDoc", "docs_pb2:CreateDocRequest", create, schema_hint="docs_pb2:Doc"),
        "search": _Op(svc, "SearchDocs", "docs_pb2:SearchDocsRequest", search, list_field="results"),
        "get": _Op(
            svc, "GetDoc", "docs_pb2:GetDocRequest", lambda a, r: {"id": _id(a, None, "doc_id", "id")}
        ),
    }
    ops["delete"] = _Op(
        svc,
        "DeleteDoc|DeleteDocs",
        "docs_pb2:DeleteDocRequest|docs_pb2:DeleteDocsRequest",
        lambda a, r: (
            {"id": _id(a, None, "doc_id", "id"), owner_field: owner_id(a, r)}
            if a.get("doc_id") or a.get("id")
            else {
                owner_field: owner_id(a, r),
                "metadata_filter": a.get("metadata_filter") or {},
                "delete_all": bool(a.get("delete_all", False)),
            }
        ),
    )
    return ops


def _exec_create(a: dict[str, Any], rid: str | None) -> dict[str, Any]:
    execution = {k: a[k] for k in ("input", "metadata") if k in a}
    out: dict[str, Any] = {"task_id": _id(a, rid, "task_id"), "execution": execution}
    if a.get("request_id"):
        out["request_id"] = a["request_id"]
    return out


def _exec_list(a: dict[str, Any], rid: str | None) -> dict[str, Any]:
    out = _page(a)
    if rid or a.get("task_id"):
        out["task_id"] = _id(a, rid, "task_id")
    if a.get("status"):
        status = str(a["status"]).upper()
        out["status"] = status if status.startswith("EXECUTION_STATUS_") else f"EXECUTION_STATUS_{status}"
    return out


def _change_status(a: dict[str, Any], rid: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": _id(a, rid, "execution_id", "id")}
    if a.get("status") in ("cancelled", "canceled"):
        if a.get("reason"):
            out["reason"] = a["reason"]
    else:
        if a.get("wait_id"):
            out["wait_id"] = a["wait_id"]
        if "input" in a:
            out["input"] = a["input"]
    return out


_EXEC = "executions:ExecutionServicer"

SYSTEM_OPERATIONS: dict[tuple[str, str | None, str], _Op] = {}
for _res, _mod, _msg, _svc, _noun, _key in (
    ("agent", "agents_pb2", "Agent", "agents:AgentServicer", "Agent", "agent"),
    ("user", "users_pb2", "User", "agents:UserServicer", "User", "user"),
    ("session", "sessions_pb2", "Session", "sessions:SessionServicer", "Session", "session"),
):
    for _name, _op in _crud(_res, _mod, _msg, _svc, _noun, _key).items():
        SYSTEM_OPERATIONS[(_res, None, _name)] = _op
for _name, _op in _crud("task", "tasks_pb2", "Task", "tasks:TaskServicer", "Task", "task").items():
    if _name == "create":
        _op = _Op(_op.servicer, _op.rpc, _op.request, _task_create, schema_hint="tasks_pb2:Task")
    elif _name == "update":
        _op = _Op(_op.servicer, _op.rpc, _op.request, _task_update, schema_hint="tasks_pb2:Task")
    elif _name == "list":
        _op = _Op(
            _op.servicer,
            _op.rpc,
            _op.request,
            lambda a, r: {**_page(a), **({"agent_id": a["agent_id"]} if a.get("agent_id") else {})},
            list_field="tasks",
        )
    SYSTEM_OPERATIONS[("task", None, _name)] = _op
for _owner in ("agent", "user"):
    for _name, _op in _doc_ops(_owner).items():
        SYSTEM_OPERATIONS[(_owner, "doc", _name)] = _op
SYSTEM_OPERATIONS.update(
    {
        ("session", None, "history"): _Op(
            "sessions:SessionServicer",
            "ListEntries",
            "sessions_pb2:ListEntriesRequest",
            lambda a, r: {
                "session_id": _id(a, r, "session_id", "id"),
                **{k: v for k, v in _page(a).items() if k != "metadata_filter"},
            },
            list_field="entries",
        ),
        ("session", None, "chat"): _Op(
            "chat:ChatServicer",
            "Chat",
            "chat_pb2:ChatRequest",
            lambda a, r: {
                **{k: v for k, v in a.items() if k not in ("session_id", "id", "developer_id")},
                "session_id": _id(a, r, "session_id", "id"),
            },
        ),
        ("doc", None, "get"): _Op(
            "docs:DocServicer",
            "GetDoc",
            "docs_pb2:GetDocRequest",
            lambda a, r: {"id": _id(a, r, "doc_id", "id")},
        ),
        ("doc", None, "delete"): _Op(
            "docs:DocServicer",
            "DeleteDoc",
            "docs_pb2:DeleteDocRequest",
            lambda a, r: {"id": _id(a, r, "doc_id", "id")},
        ),
        ("doc", None, "embed"): _Op(
            "docs:DocServicer",
            "Embed",
            "docs_pb2:EmbedRequest",
            lambda a, r: {
                "text": [a["text"]] if isinstance(a.get("text"), str) else a.get("text") or [],
                **({"embed_instruction": a["embed_instruction"]} if a.get("embed_instruction") else {}),
            },
        ),
        ("execution", None, "list"): _Op(
            _EXEC,
            "ListExecutions",
            "executions_pb2:ListExecutionsRequest",
            _exec_list,
            list_field="executions",
        ),
        ("execution", None, "get"): _Op(
            _EXEC,
            "GetExecution",
            "executions_pb2:GetExecutionRequest",
            lambda a, r: {"id": _id(a, r, "execution_id", "id")},
        ),
        ("execution", None, "create"): _Op(
            _EXEC, "CreateExecution", "executions_pb2:CreateExecutionRequest", _exec_create
        ),
        ("execution", None, "change_status"): _Op(
            _EXEC,
            "CancelExecution|ResumeExecution",
            "executions_pb2:CancelExecutionRequest|executions_pb2:ResumeExecutionRequest",
            _change_status,
        ),
        ("execution", "transition", "list"): _Op(
            _EXEC,
            "ListTransitions",
            "executions_pb2:ListTransitionsRequest",
            lambda a, r: {
                "execution_id": _id(a, r, "execution_id", "id"),
                **{k: v for k, v in _page(a).items() if k != "metadata_filter"},
            },
            list_field="transitions",
        ),
    }
)
# create_or_update and patch are update-or-create / update (JULEP-SPEC 7.2 names).
for (_res, _sub, _name), _op in list(SYSTEM_OPERATIONS.items()):
    if _name == "update" and _sub is None:
        SYSTEM_OPERATIONS[(_res, None, "patch")] = _op
        if _res in ("agent", "user", "session"):
            SYSTEM_OPERATIONS[(_res, None, "create_or_update")] = _Op(
                _op.servicer, "create_or_update", "", _op.build, schema_hint=_op.schema_hint
            )


def _pick(op: _Op, args: dict[str, Any]) -> tuple[str, str]:
    """Operations served by two RPCs choose one from the arguments."""
    rpcs, requests = op.rpc.split("|"), op.request.split("|")
    if len(rpcs) == 1:
        return rpcs[0], requests[0]
    if op.rpc.startswith("DeleteDoc"):
        i = 0 if args.get("doc_id") or args.get("id") else 1
    else:  # execution change_status
        i = 0 if args.get("status") in ("cancelled", "canceled") else 1
    return rpcs[i], requests[i]


def _servicer(ctx: ToolContext, ref: str) -> Any:
    module, name = ref.split(":")
    try:
        cls = getattr(importlib.import_module(f"mintleaf_server.api.{module}"), name)
    except (ImportError, AttributeError):
        raise ToolNotImplemented(f"the {module} API is not available on this server yet") from None
    return cls(ctx.runtime)


def _to_request(ref: str, body: dict[str, Any]) -> Message:
    message = _message_class(ref)()
    try:
        json_format.ParseDict(body, message)
    except json_format.ParseError as exc:
        raise ToolArgumentsInvalid("", str(exc)[:300]) from None
    return message


def _result(op: _Op, response: Message, identifier: str | None) -> Any:
    data = json_format.MessageToDict(response, preserving_proto_field_name=True)
    if op.list_field is not None:
        return {"items": data.get(op.list_field, []), "next_page_token": data.get("next_page_token", "")}
    if not data and response.DESCRIPTOR.full_name == "google.protobuf.Empty":
        return {"success": True, **({"id": identifier} if identifier else {})}
    return data


async def _call(ctx: ToolContext, op: _Op, rpc: str, request_ref: str, body: dict[str, Any]) -> Message:
    from mintleaf_server.api.common import InternalContext
    from mintleaf_server.api.errors import ApiError

    servicer = _servicer(ctx, op.servicer)
    request = _to_request(request_ref, body)
    try:
        response = await getattr(servicer, rpc)(request, InternalContext(ctx.developer_id))
    except ApiError as exc:
        raise SystemOperationFailed(
            exc.reason, exc.message, retryable=exc.reason in _RETRYABLE_REASONS
        ) from None
    assert isinstance(response, Message)
    return response


async def run_system(tool: ToolDef, arguments: Mapping[str, Any], ctx: ToolContext) -> Any:
    spec = evaluate_spec(tool, ctx, arguments)
    key = (str(spec["resource"]), spec.get("subresource"), str(spec["operation"]))
    op = SYSTEM_OPERATIONS.get(key)
    if op is None:
        label = ".".join(p for p in key[:2] if p) + f" {key[2]}"
        raise ToolNotImplemented(f"system operation {label!r} is not available")
    args = dict(spec.get("arguments") or {})
    args.update(arguments)
    args.pop("developer_id", None)  # the caller's identity is the only one
    rid = str(spec["resource_id"]) if spec.get("resource_id") else None
    if op.rpc == "create_or_update":
        return await _create_or_update(ctx, key[0], op, args, rid)
    body = op.build(args, rid)
    rpc, request_ref = _pick(op, args)
    response = await _call(ctx, op, rpc, request_ref, body)
    return _result(op, response, body.get("id") if isinstance(body.get("id"), str) else None)


async def _create_or_update(
    ctx: ToolContext, resource: str, op: _Op, args: dict[str, Any], rid: str | None
) -> Any:
    get = SYSTEM_OPERATIONS[(resource, None, "get")]
    create = SYSTEM_OPERATIONS[(resource, None, "create")]
    update = SYSTEM_OPERATIONS[(resource, None, "update")]
    try:
        await _call(ctx, get, get.rpc, get.request, get.build(args, rid))
    except SystemOperationFailed as exc:
        if not exc.reason.endswith("NOT_FOUND"):
            raise
        return _result(
            create, await _call(ctx, create, create.rpc, create.request, create.build(args, rid)), None
        )
    return _result(
        update, await _call(ctx, update, update.rpc, update.request, update.build(args, rid)), None
    )


# -- schemas shown to models -----------------------------------------------------------------------

_SCALARS = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT32: {"type": "integer"},
    FieldDescriptor.TYPE_INT64: {"type": "integer"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer"},
    FieldDescriptor.TYPE_UINT64: {"type": "integer"},
}
_OUTPUT_ONLY = frozenset(
    {
        "created_at",
        "updated_at",
        "summary",
        "kind",
        "version",
        "explain",
        "warnings",
        "embedding_model",
        "embedding_dimensions",
        "chunk_count",
        "owner_type",
        "owner_id",
    }
)


def _field_schema(field: FieldDescriptor, depth: int) -> dict[str, Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        name = field.message_type.full_name
        if name == "google.protobuf.Struct":
            item: dict[str, Any] = {"type": "object"}
        elif name in ("google.protobuf.Value", "google.protobuf.ListValue"):
            item = {}
        elif name == "google.protobuf.Timestamp":
            item = {"type": "string", "format": "date-time"}
        else:
            item = _message_schema(field.message_type, depth + 1)
    elif field.type == FieldDescriptor.TYPE_ENUM:
        item = {"type": "string", "enum": [v.name for v in field.enum_type.values]}
    else:
        item = dict(_SCALARS.get(field.type, {"type": "string"}))
    return {"type": "array", "items": item} if field.is_repeated else item


def _message_schema(descriptor: Descriptor, depth: int = 0) -> dict[str, Any]:
    if depth > 2:
        return {"type": "object"}
    props = {f.name: _field_schema(f, depth) for f in descriptor.fields if f.name not in _OUTPUT_ONLY}
    return {"type": "object", "properties": props}


def operation_schema(
    resource: str, subresource: str | None, operation: str, has_resource_id: bool
) -> dict[str, Any]:
    """The parameters JSON Schema a model fills for this system operation."""
    op = SYSTEM_OPERATIONS.get((resource, subresource, operation))
    if op is None:
        return {"type": "object"}
    if op.schema_hint:
        schema = _message_schema(_message_class(op.schema_hint).DESCRIPTOR)
        props: dict[str, Any] = dict(schema["properties"])
        if resource == "task":
            props = {
                "agent_id": {"type": "string"},
                "definition": {"type": "object", "description": "The task document."},
                "yaml": {"type": "string"},
            }
        if operation != "create" and not has_resource_id:
            props["id"] = {"type": "string", "description": f"The {resource}'s id."}
            return {"type": "object", "properties": props, "required": ["id"]}
        return {"type": "object", "properties": props}
    ref = op.request.split("|")[-1] if op.rpc.startswith("DeleteDoc") else op.request.split("|")[0]
    schema = _message_schema(_message_class(ref).DESCRIPTOR)
    props = dict(schema["properties"])
    if op.list_field is not None and "page_size" in props:
        props["limit"] = {"type": "integer", "minimum": 1, "description": "How many to return."}
    if has_resource_id:
        for name in ("id", f"{resource}_id"):
            props.pop(name, None)
    return {"type": "object", "properties": props}
