"""API errors and their translation to gRPC statuses.

Every error leaves the server as a `google.rpc.Status` (in the `grpc-status-details-bin` trailer)
carrying an `ErrorInfo` (UPPER_SNAKE reason, values in metadata) and, for bad requests,
`BadRequest.FieldViolation`s naming each field. Errors of the other packages (store, dsl, ...) are
mapped here, in one place."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from ..dsl.errors import TaskInvalid
from ..store.errors import AlreadyExists, Conflict, NotFound

__all__ = [
    "ApiError",
    "FailedPrecondition",
    "InvalidArgument",
    "ResourceExhausted",
    "Unauthenticated",
    "Unimplemented",
    "from_exception",
]

DOMAIN = "mintleaf.dev"


class ApiError(Exception):
    """An error with a gRPC code, a reason for ErrorInfo, and optional field violations."""

    code = grpc.StatusCode.INTERNAL
    reason = "INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        violations: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason:
            self.reason = reason
        self.metadata = dict(metadata or {})
        self.violations = list(violations)

    def to_status(self) -> status_pb2.Status:
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN, metadata=self.metadata)
        details = [_pack(info)]
        if self.violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in self.violations
                ]
            )
            details.append(_pack(bad))
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=details)


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


class InvalidArgument(ApiError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(
        self, field_or_violations: str | list[tuple[str, str]], message: str = "", **kw: object
    ) -> None:
        if isinstance(field_or_violations, str):
            violations = [(field_or_violations, message)]
            text = f"{field_or_violations}: {message}"
        else:
            violations = field_or_violations
            text = "; ".join(f"{f}: {m}" for f, m in violations)
        super().__init__(text, violations=violations, **kw)  # type: ignore[arg-type]


class NotFoundError(ApiError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class AlreadyExistsError(ApiError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(ApiError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class Unauthenticated(ApiError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class Unimplemented(ApiError):
    code = grpc.StatusCode.UNIMPLEMENTED
    reason = "UNIMPLEMENTED"


class Aborted(ApiError):
    code = grpc.StatusCode.ABORTED
    reason = "ABORTED"


class ResourceExhausted(ApiError):
    """Over a limit (a request rate): `retry_after` seconds also go out as a google.rpc.RetryInfo."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after

    def to_status(self) -> status_pb2.Status:
        status = super().to_status()
        if self.retry_after is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_after * 1e9))
            status.details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        return status


class Unavailable(ApiError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


def from_exception(exc: BaseException) -> ApiError:
    """Maps an exception from any package to the ApiError the client sees."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, NotFound):
        return NotFoundError(
            str(exc),
            reason=f"{exc.kind.upper().replace(' ', '_')}_NOT_FOUND",
            metadata={"id": exc.id, "resource": exc.kind},
        )
    if isinstance(exc, AlreadyExists):
        return AlreadyExistsError(
            str(exc),
            reason=f"{exc.kind.upper()}_ALREADY_EXISTS",
            metadata={"field": exc.field, "value": exc.value},
        )
    if isinstance(exc, Conflict):
        return Aborted(str(exc), reason="CONFLICT")
    from ..documents import errors as doc_errors

    if isinstance(exc, doc_errors.InvalidArgument):
        return InvalidArgument(exc.field, exc.message)
    if isinstance(exc, doc_errors.DocNotFound):
        return NotFoundError(str(exc), reason="DOC_NOT_FOUND")
    if isinstance(exc, doc_errors.EmbeddingUnavailable):
        return FailedPrecondition(str(exc), reason="EMBEDDINGS_UNAVAILABLE")
    if isinstance(exc, doc_errors.EmbeddingFailed):
        return Unavailable(str(exc), reason="EMBEDDING_FAILED")
    unavailable = _unavailable(exc)
    if unavailable is not None:
        return unavailable
    if isinstance(exc, TaskInvalid):
        return InvalidArgument(
            [
                (f"task.definition.{v.path}" if v.path else "task.definition", v.message)
                for v in exc.violations
            ],
            reason="TASK_INVALID",
        )
    return ApiError("internal error", reason="INTERNAL")


def _unavailable(exc: BaseException) -> ApiError | None:
    """A store that cannot be reached (PostgreSQL down or restarting, the pool exhausted, Redis
    gone): UNAVAILABLE, which clients retry, instead of an internal error."""
    import psycopg
    import psycopg_pool
    import redis.exceptions

    if isinstance(exc, psycopg_pool.PoolTimeout | psycopg.OperationalError):
        return Unavailable(
            "the database is unavailable (down, restarting or overloaded); retry later",
            reason="DATABASE_UNAVAILABLE",
        )
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return Unavailable("the queue (Redis) is unavailable; retry later", reason="REDIS_UNAVAILABLE")
    return None


async def abort(context: grpc.aio.ServicerContext, error: ApiError) -> None:
    status = error.to_status()
    await context.abort(
        error.code,
        error.message,
        trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),),
    )
