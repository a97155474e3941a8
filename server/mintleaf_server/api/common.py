"""What every servicer shares: the handler wrapper (auth + error mapping), id parsing, paging and
conversions between protobuf well-known types and plain Python values."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

import grpc
from google.protobuf import json_format, struct_pb2, timestamp_pb2

from ..store.db import decode_page_token
from .errors import InvalidArgument, ResourceExhausted, abort, from_exception
from .requests import Undecodable, nul_field

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = [
    "InternalContext",
    "Servicer",
    "integral_numbers",
    "page_size",
    "parse_id",
    "parse_optional_id",
    "streaming",
    "struct_to_dict",
    "to_struct",
    "to_timestamp",
    "to_value",
    "unary",
    "value_to_python",
]

log = logging.getLogger("mintleaf.api")

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class InternalContext:
    """A call made in-process on a developer's behalf (system tools): no API key to check.

    Servicer methods accept it in place of a grpc.aio.ServicerContext; errors are raised as
    ApiError instead of aborting a call."""

    def __init__(self, developer_id: uuid.UUID) -> None:
        self.developer_id = developer_id

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def time_remaining(self) -> float | None:
        return None


async def _developer(self: Servicer, context: Any) -> uuid.UUID:
    if isinstance(context, InternalContext):
        return context.developer_id  # system tools run inside a call that was already admitted
    developer = await self.rt.auth.authenticate(context)
    limiter = self.rt.rate_limiter
    if limiter is not None:
        wait = limiter.take(developer)
        if wait is not None:
            raise ResourceExhausted(
                f"too many requests: this developer may send {limiter.rate:g} per second; retry in {wait:.2f}s",
                reason="RATE_LIMITED",
                metadata={"retry_after_seconds": f"{wait:.3f}", "limit_per_second": f"{limiter.rate:g}"},
                retry_after=wait,
            )
    return developer


def _check_request(request: Any) -> None:
    """Before any handler: a body that did not decode, or text PostgreSQL cannot store."""
    if isinstance(request, Undecodable):
        raise InvalidArgument(request.field, request.problem, reason="REQUEST_UNDECODABLE")
    field = nul_field(request)
    if field is not None:
        raise InvalidArgument(field, "must not contain NUL (\\u0000) characters")


class Servicer:
    """Base of every servicer: holds the runtime (settings, database, redis, authenticator...)."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime


def unary(
    fn: Callable[[Any, Req, grpc.aio.ServicerContext, uuid.UUID], Awaitable[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
    """Authenticates the call, runs the handler with the developer id, maps any error to a status."""

    @functools.wraps(fn)
    async def handler(self: Servicer, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        try:
            developer_id = await _developer(self, context)
            _check_request(request)
            return await fn(self, request, context, developer_id)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            if isinstance(context, InternalContext):
                raise from_exception(exc) from exc
            error = from_exception(exc)
            if error.reason == "INTERNAL":
                log.exception("internal error in %s", fn.__name__)
            await abort(context, error)
            raise  # unreachable: abort raises

    return _measured_unary(handler)  # metrics


def streaming(
    fn: Callable[[Any, Req, grpc.aio.ServicerContext, uuid.UUID], AsyncIterator[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]:
    """The same as `unary`, for server-streaming handlers (async generators)."""

    @functools.wraps(fn)
    async def handler(self: Servicer, request: Req, context: grpc.aio.ServicerContext) -> AsyncIterator[Resp]:
        try:
            developer_id = await _developer(self, context)
            _check_request(request)
            async for item in fn(self, request, context, developer_id):
                yield item
        except (asyncio.CancelledError, grpc.aio.AbortError, GeneratorExit):
            raise
        except Exception as exc:
            if isinstance(context, InternalContext):
                raise from_exception(exc) from exc
            error = from_exception(exc)
            if error.reason == "INTERNAL":
                log.exception("internal error in %s", fn.__name__)
            await abort(context, error)

    return _measured_streaming(handler)  # metrics


# -- metrics hooks (docs/operations.md) ------------------------------------------------------------
# A gRPC call is counted once it ends, by method and status code; unary calls are timed, streams
# are not (their lifetime is the client's). Calls made in-process (InternalContext) are not RPCs.
# With metrics off (no runtime.extras["metrics"]) a call costs one dict lookup more.


def _method_name(servicer: Any, handler: Any) -> str:
    """`AgentService/CreateAgent`: the attribute the handler is bound to (`CreateAgent =
    unary(CRUD.create)` names no function after the RPC), the service from the generated base the
    servicer extends. Looked up once per servicer class."""
    classes = type(servicer).__mro__
    name = next((a for c in classes for a, v in vars(c).items() if v is handler), handler.__name__)
    for base in classes:
        if base.__module__.endswith("_pb2_grpc") and base.__name__.endswith("Servicer"):
            return f"{base.__name__.removesuffix('Servicer')}/{name}"
    return f"{type(servicer).__name__}/{name}"


def _status_name(context: Any) -> str:
    try:
        code = context.code()
    except Exception:
        code = None
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    for candidate in grpc.StatusCode:
        if candidate.value[0] == code:
            return str(candidate.name)
    return "UNKNOWN"


def _ended_by(exc: BaseException, context: Any) -> str:
    """The status name of a call that ended with `exc` (an abort carries the call's status)."""
    if isinstance(exc, grpc.aio.AbortError):
        return _status_name(context)
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    return "UNKNOWN"


def _metrics_of(servicer: Any, context: Any) -> Any:
    if isinstance(context, InternalContext):
        return None
    rt = getattr(servicer, "rt", None)
    return None if rt is None else rt.extras.get("metrics")


def _measured_unary(
    handler: Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext], Awaitable[Resp]]:
    names: dict[type[Any], str] = {}

    @functools.wraps(handler)
    async def measured(self: Servicer, request: Req, context: grpc.aio.ServicerContext) -> Resp:
        metrics = _metrics_of(self, context)
        if metrics is None:
            return await handler(self, request, context)
        started = time.perf_counter()
        code = "OK"
        try:
            return await handler(self, request, context)
        except BaseException as exc:
            code = _ended_by(exc, context)
            raise
        finally:
            method = names.get(type(self)) or names.setdefault(type(self), _method_name(self, measured))
            metrics.rpc(method, code, time.perf_counter() - started)

    return measured


def _measured_streaming(
    handler: Callable[[Any, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]],
) -> Callable[[Any, Req, grpc.aio.ServicerContext], AsyncIterator[Resp]]:
    names: dict[type[Any], str] = {}

    @functools.wraps(handler)
    async def measured(
        self: Servicer, request: Req, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Resp]:
        metrics = _metrics_of(self, context)
        # aclosing: the handler's own clean-up (unsubscribing...) runs when the stream ends
        if metrics is None:
            async with contextlib.aclosing(
                cast(AsyncGenerator[Resp], handler(self, request, context))
            ) as items:
                async for item in items:
                    yield item
            return
        code = "OK"
        try:
            async with contextlib.aclosing(
                cast(AsyncGenerator[Resp], handler(self, request, context))
            ) as items:
                async for item in items:
                    yield item
        except BaseException as exc:
            code = _ended_by(exc, context)
            raise
        finally:
            method = names.get(type(self)) or names.setdefault(type(self), _method_name(self, measured))
            metrics.rpc(method, code, None)

    return measured


def parse_id(value: str, field: str) -> uuid.UUID:
    if not value:
        raise InvalidArgument(field, "is required")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument(field, f"{value[:80]!r} is not a UUID") from None


def parse_optional_id(value: str, field: str) -> uuid.UUID | None:
    return parse_id(value, field) if value else None


def page_size(requested: int, runtime: Runtime, field: str = "page_size") -> int:
    limits = runtime.settings.limits
    if requested < 0:
        raise InvalidArgument(field, "must not be negative")
    if requested > limits.max_page_size:
        raise InvalidArgument(field, f"must be at most {limits.max_page_size}")
    return requested or limits.default_page_size


def page_token(token: str) -> str:
    """Validates a page token up front so a bad one is INVALID_ARGUMENT, not INTERNAL."""
    if token:
        try:
            decode_page_token(token)
        except Exception:
            raise InvalidArgument("page_token", "is not a token this server issued") from None
    return token


def struct_to_dict(message: struct_pb2.Struct) -> dict[str, Any]:
    result: dict[str, Any] = integral_numbers(json_format.MessageToDict(message))
    return result


def value_to_python(message: struct_pb2.Value) -> Any:
    return integral_numbers(json_format.MessageToDict(message))


# Struct/Value carry every number as a double, but JSON (and the task DSL, which checks that
# `parallelism: 100` is an integer) does not distinguish 100 from 100.0. A whole number within the
# exactly representable range is read back as the integer the client wrote.
_MAX_EXACT = 2**53


def integral_numbers(value: Any) -> Any:
    if isinstance(value, float):
        return int(value) if value.is_integer() and -_MAX_EXACT <= value <= _MAX_EXACT else value
    if isinstance(value, dict):
        return {k: integral_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral_numbers(v) for v in value]
    return value


def to_struct(value: Mapping[str, Any] | None) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    if value:
        s.update(_jsonable(dict(value)))
    return s


def to_value(value: Any) -> struct_pb2.Value:
    v = struct_pb2.Value()
    json_format.ParseDict(_jsonable(value), v)
    return v


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def to_timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def check_metadata(struct_present: bool, message: struct_pb2.Struct, field: str) -> dict[str, Any]:
    """Free-form metadata: any JSON object, at most 64 KiB serialized."""
    if not struct_present:
        return {}
    value = struct_to_dict(message)
    if len(message.SerializeToString()) > 64 * 1024:
        raise InvalidArgument(field, "must be at most 64 KiB")
    return value
