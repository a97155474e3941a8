"""The store's exception tree; api/errors.py maps it to gRPC statuses."""

from __future__ import annotations

__all__ = ["AlreadyExists", "Conflict", "NotFound", "StoreError"]


class StoreError(Exception):
    """Base of every error raised by mintleaf_server.store."""


class NotFound(StoreError):
    """No such row for this developer (another developer's row is never found either)."""

    def __init__(self, kind: str, id: object) -> None:
        self.kind = kind
        self.id = str(id)
        super().__init__(f"{kind} {self.id} not found")


class AlreadyExists(StoreError):
    """A unique key is taken (an id with other content, a canonical name, a secret name...)."""

    def __init__(self, kind: str, field: str, value: object) -> None:
        self.kind = kind
        self.field = field
        self.value = str(value)
        super().__init__(f"{kind} with {field} {self.value!r} already exists")


class Conflict(StoreError):
    """The row changed under the request (e.g. a concurrent update); retrying may succeed."""
