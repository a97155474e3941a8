"""AsyncClient: the betterproto2 async stubs over one grpclib channel, authenticated.

Design note. grpclib is what betterproto2's async stubs speak. The API key is added by a grpclib
`SendRequest` listener (so per-call `metadata=` still works and never drops it). Errors become
MintleafError in a subclass of each generated stub that overrides the two call primitives of
betterproto2's ServiceStub (`_unary_unary`, `_unary_stream`): the stub's typed methods, signatures
and isinstance checks stay as generated. The channel keeps the raw `grpc-status-details-bin` bytes
(a codec of our own) so the details decode without googleapis-common-protos. Rejected: grpc.aio stubs
(betterproto2 generates grpclib ones) and a `__getattr__` proxy per service (loses the types).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, TypeVar

import grpc
from betterproto2.grpclib import ServiceStub
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.encoding.base import StatusDetailsCodecBase
from grpclib.events import SendRequest, listen
from grpclib.exceptions import GRPCError, StreamTerminatedError

from ._gen.mintleaf import v1
from .errors import FieldViolation, MintleafError
from .waiting import wait_for_execution_async

__all__ = ["AsyncClient"]

S = TypeVar("S")


class AsyncClient:
    """An asyncio client: one async stub per service, all sharing one authenticated grpclib channel.

    `target` is host:port; `api_key` is sent as `authorization: Bearer <key>` on every call. Create
    it inside a running event loop (grpclib binds the channel to it); `async with` closes it."""

    def __init__(self, target: str, api_key: str, *, channel: Channel | None = None) -> None:
        if channel is None:
            host, port = _split_target(target)
            channel = Channel(host, port, status_details_codec=_RawStatusDetails())
        self.channel = channel
        self._authorization = f"Bearer {api_key}"
        listen(self.channel, SendRequest, self._authorize)
        self.agents = _stub(v1.AgentServiceAsyncStub, channel)
        self.tools = _stub(v1.ToolServiceAsyncStub, channel)
        self.users = _stub(v1.UserServiceAsyncStub, channel)
        self.sessions = _stub(v1.SessionServiceAsyncStub, channel)
        self.chat = _stub(v1.ChatServiceAsyncStub, channel)
        self.tasks = _stub(v1.TaskServiceAsyncStub, channel)
        self.executions = _stub(v1.ExecutionServiceAsyncStub, channel)
        self.docs = _stub(v1.DocServiceAsyncStub, channel)
        self.secrets = _stub(v1.SecretServiceAsyncStub, channel)

    async def _authorize(self, event: SendRequest) -> None:
        event.metadata["authorization"] = self._authorization

    async def wait_for(
        self,
        execution_id: str,
        *,
        until_awaiting_input: bool = False,
        on_transition: Callable[[v1.Transition], object | Awaitable[object]] | None = None,
        timeout: float | None = None,
    ) -> v1.Execution:
        """Streams the execution's transitions (calling `on_transition` with each, in order; it may
        be a coroutine function) until it has ended, or paused for input with `until_awaiting_input`,
        and returns it then. MintleafError DEADLINE_EXCEEDED after `timeout` seconds."""
        return await wait_for_execution_async(
            self.executions,
            execution_id,
            until_awaiting_input=until_awaiting_input,
            on_transition=on_transition,
            deadline=None if timeout is None else time.monotonic() + timeout,
        )

    async def close(self) -> None:
        """Closes the connection; calls still running fail."""
        self.channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _split_target(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or (host.count(":") and not host.startswith("[")):
        raise ValueError(f"target must be host:port (IPv6 as [addr]:port), not {target!r}")
    return host.strip("[]"), int(port)


class _RawStatusDetails(StatusDetailsCodecBase):
    """Hands the serialized google.rpc.Status through to MintleafError as is."""

    def encode(self, status: Status, message: str | None, details: Any) -> bytes:
        raise NotImplementedError("clients do not send status details")

    def decode(self, status: Status, message: str | None, data: bytes) -> Any:
        return data


def _translate(exc: BaseException) -> MintleafError | None:
    """The MintleafError for an error of a grpclib call; None for errors that are not the call's."""
    if isinstance(exc, MintleafError):
        return exc
    if isinstance(exc, GRPCError):
        code = grpc.StatusCode[exc.status.name]
        message = exc.message or ""
        details = exc.details
        if isinstance(details, bytes):
            return MintleafError(code, message, status_details=details)
        err = MintleafError(code, message)
        _adopt_decoded(err, details)
        return err
    if isinstance(exc, asyncio.TimeoutError):  # grpclib's own deadline
        return MintleafError(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    if isinstance(exc, StreamTerminatedError | OSError):
        return MintleafError(grpc.StatusCode.UNAVAILABLE, f"connection failed: {exc}")
    return None


def _adopt_decoded(err: MintleafError, details: Any) -> None:
    # A caller's own channel may decode details with googleapis-common-protos' messages.
    for detail in details or ():
        kind = type(detail).__name__
        if kind == "ErrorInfo":
            err.reason, err.domain, err.metadata = detail.reason, detail.domain, dict(detail.metadata)
        elif kind == "BadRequest":
            err.violations.extend(FieldViolation(v.field, v.description) for v in detail.field_violations)


class _Translating(ServiceStub):
    """Raises MintleafError from every call of the stub it is mixed into."""

    async def _unary_unary(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super()._unary_unary(*args, **kwargs)
        except Exception as exc:
            err = _translate(exc)
            if err is None or err is exc:
                raise
            raise err from exc

    async def _unary_stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        try:
            stream: AsyncGenerator[Any, None] = super()._unary_stream(*args, **kwargs)  # type: ignore[assignment]
            async with aclosing(stream):
                async for message in stream:
                    yield message
        except Exception as exc:
            err = _translate(exc)
            if err is None or err is exc:
                raise
            raise err from exc


_TRANSLATING: dict[type[Any], type[Any]] = {}


def _stub(stub: type[S], channel: Channel) -> S:
    cls = _TRANSLATING.get(stub)
    if cls is None:
        namespace = {"__module__": __name__, "__doc__": stub.__doc__, "__qualname__": stub.__qualname__}
        cls = _TRANSLATING[stub] = type(stub.__name__, (_Translating, stub), namespace)
    made: S = cls(channel)
    return made
