"""The tools package's one exception tree.

Every failure of a server-side tool is a `ToolError` with a stable `kind` (snake_case, for
transitions and the model), a human message and `retryable` (the engine retries only those).
Messages are built from the tool's name, the provider, the HTTP status and the destination's
scheme, host and path: never from header values, query strings, setup values or secrets.
Text that comes back from a provider passes through `redact` first."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = [
    "FunctionToolNotRunnable",
    "IntegrationError",
    "SystemOperationFailed",
    "ToolAddressRefused",
    "ToolArgumentsInvalid",
    "ToolConnectionFailed",
    "ToolError",
    "ToolHttpError",
    "ToolNotFound",
    "ToolNotImplemented",
    "ToolResponseTooLarge",
    "ToolSetupInvalid",
    "ToolTimeout",
    "redact",
]

# HTTP statuses worth another try (Julep retried 408/429/503/504/524; 500/502 are as transient).
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504, 524})


class ToolError(Exception):
    """A server-side tool failed. `kind` is stable and machine-readable."""

    kind = "tool_error"

    def __init__(self, message: str, *, kind: str | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind
        self.retryable = retryable

    def to_dict(self) -> dict[str, Any]:
        """What a transition or a tool message records."""
        return {"kind": self.kind, "message": self.message, "retryable": self.retryable}


class ToolNotFound(ToolError):
    kind = "tool_not_found"


class ToolNotImplemented(ToolError):
    """An unknown provider or method, or a system operation this server does not offer."""

    kind = "not_implemented"


class FunctionToolNotRunnable(ToolError):
    """Function tools run in the client: the execution pauses for its result."""

    kind = "function_tool"


class ToolArgumentsInvalid(ToolError):
    kind = "arguments_invalid"

    def __init__(self, argument: str, message: str) -> None:
        where = f"argument {argument!r}" if argument else "arguments"
        super().__init__(f"{where}: {message}")
        self.argument = argument


class ToolSetupInvalid(ToolError):
    """A setup value (API key, host...) is missing or malformed; names the key, never the value."""

    kind = "setup_invalid"

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"setup {key!r}: {message}")
        self.key = key


class ToolTimeout(ToolError):
    kind = "timeout"

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class ToolResponseTooLarge(ToolError):
    kind = "response_too_large"


class ToolAddressRefused(ToolError):
    """The destination resolves to an address the server may not reach (SSRF policy)."""

    kind = "address_refused"


class ToolConnectionFailed(ToolError):
    kind = "connection_failed"

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class ToolHttpError(ToolError):
    """An api_call got a 4xx/5xx answer."""

    kind = "http_error"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, retryable=status in RETRYABLE_STATUSES)
        self.status = status


class IntegrationError(ToolError):
    """A provider refused or failed a call. `status` is its HTTP (or SMTP) status, 0 if none."""

    kind = "integration_error"

    def __init__(self, provider: str, status: int, message: str, *, retryable: bool | None = None) -> None:
        prefix = f"{provider}: " + (f"status {status}: " if status else "")
        super().__init__(
            prefix + message,
            retryable=status in RETRYABLE_STATUSES if retryable is None else retryable,
        )
        self.provider = provider
        self.status = status


class SystemOperationFailed(ToolError):
    """A system tool's operation was rejected by the API (not found, invalid argument...).
    `reason` is the API's ErrorInfo reason (e.g. AGENT_NOT_FOUND)."""

    kind = "system_error"

    def __init__(self, reason: str, message: str, *, retryable: bool = False) -> None:
        super().__init__(message, retryable=retryable)
        self.reason = reason

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "reason": self.reason}


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value (4+ characters) replaced by `***`, longest first."""
    for value in sorted({s for s in secrets if isinstance(s, str) and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(value, "***")
    return text
