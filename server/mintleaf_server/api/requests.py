"""Checks every request gets before its handler runs: a body that does not decode, and text that
PostgreSQL cannot store (NUL characters), answered INVALID_ARGUMENT naming the field.

Design note. gRPC decodes a request before any of our code runs and answers a decode failure (a
corrupt body, a Struct nested deeper than protobuf's limit) with UNKNOWN and no details. So the
services are registered with a deserializer that never raises: it returns an `Undecodable` naming
the innermost field whose bytes fail to decode (found by walking the wire format field by field,
only on that error path), and the `@unary`/`@streaming` wrappers turn it into the usual error.
NUL characters are refused at the edge for the same reason: PostgreSQL `text` and `jsonb` reject
them deep inside a write (an INTERNAL error naming no field). Rejected: catching the database error
(it cannot say which field), stripping NULs (silently changes data), and a gRPC server interceptor
(a per-call cost on every RPC for a once-a-year error)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import grpc
from google.protobuf import descriptor, message, message_factory

__all__ = ["Undecodable", "nul_field", "register_safely"]

_FREE_FORM = ("google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue")


class Undecodable:
    """What the deserializer hands the handler instead of a request it could not decode."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem


def _safe_deserializer(cls: Any) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return cls.FromString(data)
        except message.DecodeError as exc:
            field = _locate(cls.DESCRIPTOR, data, "")
            detail = str(exc).rsplit(": ", 1)[-1] if ": " in str(exc) else str(exc)
            where = field or "the request body"
            return Undecodable(field or "request", f"{where} is not a valid protobuf encoding ({detail})")

    return deserialize


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _locate(desc: descriptor.Descriptor, data: bytes, prefix: str) -> str:
    """The path of the innermost field whose bytes do not decode ('' when it is `data` itself)."""
    counts: dict[str, int] = {}
    pos = 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire = key >> 3, key & 7
            if wire == 0:
                _, pos = _varint(data, pos)
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                size, pos = _varint(data, pos)
                chunk, pos = data[pos : pos + size], pos + size
                field = desc.fields_by_number.get(number)
                if field is None or field.message_type is None:
                    continue
                name = field.name
                if field.is_repeated:
                    index = counts.get(name, 0)
                    counts[name] = index + 1
                    if not field.message_type.GetOptions().map_entry:
                        name = f"{name}[{index}]"
                path = f"{prefix}.{name}" if prefix else name
                try:
                    message_factory.GetMessageClass(field.message_type).FromString(chunk)
                except message.DecodeError:
                    if field.message_type.full_name in _FREE_FORM:
                        return path
                    return _locate(field.message_type, chunk, path) or path
            else:
                return prefix
    except ValueError:
        return prefix
    return prefix


def register_safely(add_to_server: Callable[[Any, Any], None], servicer: Any, server: Any) -> None:
    """`add_XServicer_to_server(servicer, server)` with every request deserializer made safe."""
    add_to_server(servicer, _SafeRegistrar(server))


class _SafeRegistrar:
    """Stands in for the server while generated code registers a service: the generic handler it
    builds is dropped and rebuilt from the same handlers with safe deserializers."""

    def __init__(self, server: Any) -> None:
        self._server = server

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # rebuilt in add_registered_method_handlers, which gets the handlers themselves

    def add_registered_method_handlers(self, service: str, handlers: Mapping[str, Any]) -> None:
        safe = {name: _with_safe_deserializer(h) for name, h in handlers.items()}
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, safe),))
        self._server.add_registered_method_handlers(service, safe)


def _with_safe_deserializer(handler: Any) -> Any:
    deserializer = handler.request_deserializer
    cls = getattr(deserializer, "__self__", None)  # a bound `FromString` of the request class
    if cls is None or not hasattr(cls, "DESCRIPTOR"):
        return handler
    return handler._replace(request_deserializer=_safe_deserializer(cls))


def nul_field(request: Any) -> str | None:
    """The path of the first field holding a NUL character (a Struct is named as a whole)."""
    if not isinstance(request, message.Message):
        return None
    return _nul_in(request, "")


def _nul_in(msg: message.Message, prefix: str) -> str | None:
    for field, value in msg.ListFields():
        path = f"{prefix}.{field.name}" if prefix else field.name
        if field.message_type is not None and field.message_type.full_name in _FREE_FORM:
            if _nul_in_json(value):
                return path
            continue
        if field.is_repeated:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                for key, item in value.items():
                    if isinstance(key, str) and "\x00" in key:
                        return path
                    if isinstance(item, str) and "\x00" in item:
                        return f"{path}.{key}"
                    if isinstance(item, message.Message) and (found := _nul_in(item, f"{path}.{key}")):
                        return found
                continue
            for i, item in enumerate(value):
                if isinstance(item, str) and "\x00" in item:
                    return f"{path}[{i}]"
                if isinstance(item, message.Message) and (found := _nul_in(item, f"{path}[{i}]")):
                    return found
            continue
        if isinstance(value, str):
            if "\x00" in value:
                return path
        elif isinstance(value, message.Message) and (found := _nul_in(value, path)):
            return found
    return None


def _nul_in_json(value: Any) -> bool:
    """A Struct, Value or ListValue holding a NUL in any key or string."""
    kind = value.DESCRIPTOR.full_name
    if kind == "google.protobuf.Struct":
        return any("\x00" in k or _nul_in_json(v) for k, v in value.fields.items())
    if kind == "google.protobuf.ListValue":
        return any(_nul_in_json(v) for v in value.values)
    which = value.WhichOneof("kind")
    if which == "string_value":
        return "\x00" in value.string_value
    if which == "struct_value":
        return _nul_in_json(value.struct_value)
    if which == "list_value":
        return _nul_in_json(value.list_value)
    return False
