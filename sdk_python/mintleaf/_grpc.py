"""The grpcio plumbing of the sync Client: the API key on every call, and errors as MintleafError.

Design note. The betterproto2 sync stubs only ever call `channel.unary_unary(path, ser, de)(message)`
and `channel.unary_stream(...)(message)`, so errors are translated by a thin grpc.Channel wrapper
handed to the stubs, not by editing or wrapping each generated method. The client's own `channel`
attribute stays the plain intercepted grpcio channel (raw calls on it keep raising grpcio's errors).
Rejected: translating in a grpc interceptor (grpcio defers a unary failure into an outcome object
that the interceptor would have to rebuild through private classes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from .errors import MintleafError

__all__ = ["AuthInterceptor", "ErrorChannel"]


class AuthInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds `authorization: Bearer <key>` to every call's metadata."""

    def __init__(self, api_key: str) -> None:
        self._metadata = (("authorization", f"Bearer {api_key}"),)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_Details(details, self._metadata), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_Details(details, self._metadata), request)


class _Details(grpc.ClientCallDetails):  # type: ignore[misc]
    def __init__(self, base: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = tuple(base.metadata or ()) + metadata
        self.credentials = base.credentials
        self.wait_for_ready = base.wait_for_ready
        self.compression = getattr(base, "compression", None)


class ErrorChannel(grpc.Channel):  # type: ignore[misc]
    """Wraps a channel so that every call raises MintleafError instead of grpc.RpcError.

    With `deadline` (a time.monotonic() instant), calls without an explicit timeout get the time
    left until then as their timeout."""

    def __init__(self, inner: grpc.Channel, *, deadline: float | None = None) -> None:
        self._inner = inner
        self._deadline = deadline

    def _timeout(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self._deadline is not None and kwargs.get("timeout") is None:
            kwargs["timeout"] = max(0.0, self._deadline - time.monotonic())
        return kwargs

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        return _Unary(self._inner.unary_unary(method, *args, **kwargs), self._timeout)

    def stream_unary(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., Any]:
        return _Unary(self._inner.stream_unary(method, *args, **kwargs), self._timeout)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., Iterator[Any]]:
        return _Streaming(self._inner.unary_stream(method, *args, **kwargs), self._timeout)

    def stream_stream(self, method: str, *args: Any, **kwargs: Any) -> Callable[..., Iterator[Any]]:
        return _Streaming(self._inner.stream_stream(method, *args, **kwargs), self._timeout)

    def subscribe(self, callback: Any, try_to_connect: bool = False) -> None:
        self._inner.subscribe(callback, try_to_connect)

    def unsubscribe(self, callback: Any) -> None:
        self._inner.unsubscribe(callback)

    def close(self) -> None:
        self._inner.close()


class _Unary:
    def __init__(self, call: Any, timeout: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self._call, self._timeout = call, timeout

    def __call__(self, request: Any, **kwargs: Any) -> Any:
        try:
            return self._call(request, **self._timeout(kwargs))
        except grpc.RpcError as exc:
            raise MintleafError.from_rpc_error(exc) from exc


class _Streaming:
    def __init__(self, call: Any, timeout: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        self._call, self._timeout = call, timeout

    def __call__(self, request: Any, **kwargs: Any) -> Iterator[Any]:
        return _translated(self._call(request, **self._timeout(kwargs)))


def _translated(call: Any) -> Iterator[Any]:
    try:
        yield from call
    except grpc.RpcError as exc:
        raise MintleafError.from_rpc_error(exc) from exc
    finally:
        # A caller that stops iterating early ends the call now, not when it is garbage collected.
        call.cancel()
