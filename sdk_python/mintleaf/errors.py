"""MintleafError: a failed call, with the server's google.rpc.Status details decoded.

Design note. The server puts a google.rpc.Status in the `grpc-status-details-bin` trailer, carrying an
ErrorInfo (reason, domain, metadata) and, for bad input, a BadRequest (field violations). The SDK
decodes those three small messages itself with a minimal protobuf wire reader (below). Rejected:
googleapis-common-protos' status_pb2/error_details_pb2 (it drags in the `protobuf` runtime, which the
betterproto2 SDK otherwise does without, and whose version the server pins tightly); and hand-written
betterproto2 message classes (they lean on the compiler's private output format).

MintleafError subclasses grpc.RpcError and keeps the grpc.Call methods code(), details(),
trailing_metadata(), so `except grpc.RpcError` and code reading `exc.code()` keep working. Because
`code()` must stay a method for that, the code's name is the `code_name` attribute.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import grpc

__all__ = ["STATUS_DETAILS_KEY", "FieldViolation", "MintleafError"]

STATUS_DETAILS_KEY = "grpc-status-details-bin"

_ERROR_INFO = "google.rpc.ErrorInfo"
_BAD_REQUEST = "google.rpc.BadRequest"

Metadata = tuple[tuple[str, str | bytes], ...]


class FieldViolation(NamedTuple):
    """A field of the request the server rejected (google.rpc.BadRequest.FieldViolation)."""

    field: str
    """The field's path in the request, e.g. "agent.canonical_name"."""
    description: str
    """What is wrong with it."""


class MintleafError(grpc.RpcError):  # type: ignore[misc]
    """A call the server (or the connection) failed, raised by every call of Client and AsyncClient.

    Attributes: `code_name` ("INVALID_ARGUMENT"), `message`, `reason` (ErrorInfo.reason, e.g.
    "AGENT_NOT_FOUND"; "" when absent), `domain`, `metadata` (ErrorInfo.metadata), `violations`
    (BadRequest field violations, in order), `raw_details` (every Status detail as (type_url, bytes)).
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        status_details: bytes | None = None,
        trailing_metadata: Sequence[tuple[str, str | bytes]] = (),
        initial_metadata: Sequence[tuple[str, str | bytes]] = (),
        debug_error_string: str = "",
    ) -> None:
        self._code = code
        self.code_name: str = code.name
        self.message = message
        self.reason = ""
        self.domain = ""
        self.metadata: dict[str, str] = {}
        self.violations: list[FieldViolation] = []
        self.raw_details: list[tuple[str, bytes]] = []
        self._trailing: Metadata = tuple(trailing_metadata)
        self._initial: Metadata = tuple(initial_metadata)
        self._debug = debug_error_string
        if status_details is None:
            status_details = next(
                (v for k, v in self._trailing if k == STATUS_DETAILS_KEY and isinstance(v, bytes)), None
            )
        elif not any(k == STATUS_DETAILS_KEY for k, _ in self._trailing):
            # Callers reading the trailer themselves (grpc style) find it there too.
            self._trailing += ((STATUS_DETAILS_KEY, status_details),)
        if status_details:
            self._decode(status_details)
        super().__init__(str(self))

    @classmethod
    def from_rpc_error(cls, exc: grpc.RpcError) -> MintleafError:
        """Wraps an error of a grpcio call (returned as is when it already is a MintleafError)."""
        if isinstance(exc, MintleafError):
            return exc
        call: Any = exc
        code = call.code() if callable(getattr(call, "code", None)) else None
        message = call.details() if callable(getattr(call, "details", None)) else None
        trailing = call.trailing_metadata() if callable(getattr(call, "trailing_metadata", None)) else None
        initial = call.initial_metadata() if callable(getattr(call, "initial_metadata", None)) else None
        debug = call.debug_error_string() if callable(getattr(call, "debug_error_string", None)) else ""
        return cls(
            code if isinstance(code, grpc.StatusCode) else grpc.StatusCode.UNKNOWN,
            message or str(exc),
            trailing_metadata=tuple(trailing or ()),
            initial_metadata=tuple(initial or ()),
            debug_error_string=debug or "",
        )

    # -- grpc.Call compatibility ---------------------------------------------------------------

    def code(self) -> grpc.StatusCode:
        """The status code (grpc.StatusCode), as grpc.Call.code()."""
        return self._code

    def details(self) -> str:
        """The status message, as grpc.Call.details()."""
        return self.message

    def trailing_metadata(self) -> Metadata:
        """The trailing metadata, including `grpc-status-details-bin` when the server sent details."""
        return self._trailing

    def initial_metadata(self) -> Metadata:
        return self._initial

    def debug_error_string(self) -> str:
        return self._debug

    # -- details -------------------------------------------------------------------------------

    def violation(self, field: str) -> str | None:
        """The description of the violation of `field`, or None when the server did not name it."""
        return next((v.description for v in self.violations if v.field == field), None)

    def __str__(self) -> str:
        text = f"{self.code_name}: {self.message}"
        return f"{text} [{self.reason}]" if self.reason else text

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's default would call __init__ with the one-string args; rebuild from state.
        return (type(self), (self._code, self.message), self.__dict__)

    def __repr__(self) -> str:
        return f"MintleafError({self.code_name}, {self.message!r}, reason={self.reason!r})"

    def _decode(self, status: bytes) -> None:
        # Malformed details never hide the error itself: keep what was decoded so far.
        try:
            for num, value in _fields(status):
                if num == 3 and isinstance(value, bytes):
                    self._add_detail(value)
        except ValueError:
            pass

    def _add_detail(self, any_bytes: bytes) -> None:
        type_url, value = "", b""
        for num, v in _fields(any_bytes):
            if num == 1 and isinstance(v, bytes):
                type_url = v.decode()
            elif num == 2 and isinstance(v, bytes):
                value = v
        self.raw_details.append((type_url, value))
        name = type_url.rsplit("/", 1)[-1]
        if name == _ERROR_INFO:
            for num, v in _fields(value):
                if not isinstance(v, bytes):
                    continue
                if num == 1:
                    self.reason = v.decode()
                elif num == 2:
                    self.domain = v.decode()
                elif num == 3:
                    entry = dict(_strings(v))
                    self.metadata[entry.get(1, "")] = entry.get(2, "")
        elif name == _BAD_REQUEST:
            for num, v in _fields(value):
                if num == 1 and isinstance(v, bytes):
                    fv = dict(_strings(v))
                    self.violations.append(FieldViolation(fv.get(1, ""), fv.get(2, "")))


def _strings(data: bytes) -> Iterator[tuple[int, str]]:
    for num, value in _fields(data):
        if isinstance(value, bytes):
            yield num, value.decode()


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """The (field number, value) pairs of a protobuf message: ints for varints, bytes otherwise."""
    i, end = 0, len(data)
    while i < end:
        key, i = _varint(data, i)
        num, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(data, i)
        elif wire == 2:
            size, i = _varint(data, i)
            value, i = data[i : i + size], i + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, i = data[i : i + size], i + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if i > end:
            raise ValueError("truncated message")
        yield num, value


def _varint(data: bytes, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= len(data):
            raise ValueError("truncated varint")
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7
