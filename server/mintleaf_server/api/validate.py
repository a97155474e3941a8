"""Field checks shared by the servicers; each raises InvalidArgument naming the field."""

from __future__ import annotations

import re
from collections.abc import Iterable

from google.protobuf import field_mask_pb2

from .errors import InvalidArgument

__all__ = ["canonical_name", "display_name", "identifier", "max_len", "update_paths"]

_CANONICAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")
_IDENTIFIER = re.compile(r"^[^\W0-9]\w*$")


def display_name(value: str, field: str, *, required: bool = True, limit: int = 255) -> str:
    if required and not value.strip():
        raise InvalidArgument(field, "is required")
    return max_len(value, field, limit)


def max_len(value: str, field: str, limit: int) -> str:
    if len(value) > limit:
        raise InvalidArgument(field, f"must be at most {limit} characters (got {len(value)})")
    return value


def canonical_name(value: str, field: str) -> str | None:
    if not value:
        return None
    if len(value) > 255 or not _CANONICAL.match(value):
        raise InvalidArgument(field, "must match ^[a-zA-Z][a-zA-Z0-9_]*$ and be at most 255 characters")
    return value


def identifier(value: str, field: str, limit: int = 40) -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > limit or not _IDENTIFIER.match(value):
        raise InvalidArgument(field, f"must be a Python identifier of at most {limit} characters")
    return value


def update_paths(
    mask: field_mask_pb2.FieldMask, allowed: Iterable[str], field: str = "update_mask"
) -> list[str]:
    """The mask's paths (every allowed path when empty); unknown or read-only paths are rejected."""
    allowed = list(allowed)
    paths = list(mask.paths)
    if not paths:
        return allowed
    for path in paths:
        if path not in allowed:
            raise InvalidArgument(field, f"cannot update {path!r}; updatable fields: {', '.join(allowed)}")
    return paths
