"""Reading the rich error details (google.rpc.Status) of a failed call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

__all__ = ["CallError", "expect_error"]


@dataclass
class CallError:
    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    violations: dict[str, str] = field(default_factory=dict)


def expect_error(
    call: Callable[[], Any], code: grpc.StatusCode, *, field: str | None = None, reason: str | None = None
) -> CallError:
    """Runs `call`, asserts it fails with `code` (and names `field` among the violations)."""
    with pytest.raises(grpc.RpcError) as info:
        call()
    exc: Any = info.value
    err = CallError(code=exc.code(), message=exc.details() or "")
    for key, value in exc.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    ei = error_details_pb2.ErrorInfo()
                    detail.Unpack(ei)
                    err.reason, err.metadata = ei.reason, dict(ei.metadata)
                elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    br = error_details_pb2.BadRequest()
                    detail.Unpack(br)
                    err.violations = {v.field: v.description for v in br.field_violations}
    assert err.code == code, f"expected {code}, got {err.code}: {err.message}"
    if code != grpc.StatusCode.UNIMPLEMENTED:
        assert err.reason, "every error carries an ErrorInfo reason"
    if field is not None:
        assert field in err.violations, (
            f"expected a violation for {field!r}, got {err.violations} ({err.message})"
        )
        assert field in err.message
    if reason is not None:
        assert err.reason == reason, err.reason
    return err
