"""The model layer's exception tree. Every failure of `mintleaf_server.llm` is a `ModelError`.

Each error names the model and the endpoint (scheme, host and path only: never a key, user info or
query string) so an operator can tell which configuration entry failed. The API layer maps them to
gRPC statuses: ModelConfigError/ModelNotFound → FAILED_PRECONDITION or NOT_FOUND, ModelBadRequest →
INVALID_ARGUMENT, ModelRateLimited → RESOURCE_EXHAUSTED, ModelUnavailable/ModelTimeout →
UNAVAILABLE/DEADLINE_EXCEEDED, ModelAuthError → FAILED_PRECONDITION (the server's key, not the
caller's, is wrong).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = [
    "ModelAuthError",
    "ModelBadRequest",
    "ModelConfigError",
    "ModelContextOverflow",
    "ModelError",
    "ModelNotFound",
    "ModelRateLimited",
    "ModelResponseError",
    "ModelTimeout",
    "ModelUnavailable",
    "display_endpoint",
    "redact",
]

# Provider error messages sometimes quote (part of) the key they rejected; scrub anything shaped
# like a secret before it reaches a log or an API error.
_SECRET_SHAPES = re.compile(r"(sk|pk|rk|key|gsk|xai)[-_][A-Za-z0-9_\-*]{6,}")


def display_endpoint(base_url: str) -> str:
    """`https://user:pw@host:8443/v1?key=x` → `https://host:8443/v1` (safe to print)."""
    try:
        parts = urlsplit(base_url)
    except ValueError:
        return "<invalid url>"
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}{parts.path}".rstrip("/")


def redact(text: str, *secrets: str | None) -> str:
    """Remove the given secrets and anything key-shaped from `text`."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _SECRET_SHAPES.sub("***", text)


class ModelError(Exception):
    """Base of every error raised by mintleaf_server.llm.

    Attributes: `model` (the requested name), `endpoint` (display form, see `display_endpoint`),
    `status` (HTTP status from the endpoint, if any), `attempts` (calls made, retries included)."""

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        endpoint: str | None = None,
        status: int | None = None,
        attempts: int = 0,
    ) -> None:
        self.model = model
        self.endpoint = endpoint
        self.status = status
        self.attempts = attempts
        self.reason = message
        where = []
        if model is not None:
            where.append(f"model {model!r}")
        if endpoint is not None:
            where.append(f"at {endpoint}")
        prefix = " ".join(where)
        suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
        super().__init__(f"{prefix}: {message}{suffix}" if prefix else f"{message}{suffix}")


class ModelConfigError(ModelError):
    """The model configuration is invalid or incomplete (bad entry, key env var not set)."""


class ModelNotFound(ModelError):
    """No endpoint is configured for the model, or the endpoint says the model does not exist."""


class ModelBadRequest(ModelError):
    """The endpoint rejected the request (HTTP 400/422): bad settings, schema, messages."""


class ModelContextOverflow(ModelBadRequest):
    """The prompt does not fit the model's context window."""


class ModelAuthError(ModelError):
    """The endpoint rejected the server's credentials (HTTP 401/403)."""


class ModelUnavailable(ModelError):
    """The endpoint could not be reached or kept failing (connection errors, HTTP 5xx)."""


class ModelTimeout(ModelUnavailable):
    """The endpoint did not answer within the timeout."""


class ModelRateLimited(ModelUnavailable):
    """The endpoint kept answering HTTP 429. `retry_after` is its last hint in seconds, if any."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        model: str | None = None,
        endpoint: str | None = None,
        status: int | None = 429,
        attempts: int = 0,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, model=model, endpoint=endpoint, status=status, attempts=attempts)


class ModelResponseError(ModelError):
    """The endpoint answered with something that is not a valid OpenAI-shaped response."""
