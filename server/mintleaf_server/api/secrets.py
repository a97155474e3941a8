"""SecretService: named values tool definitions reference as `secrets.NAME`; values are write-only."""

from __future__ import annotations

from typing import Any

from .._proto.mintleaf.v1 import secrets_pb2, secrets_pb2_grpc
from ..store.db import ResourceSpec
from .common import (
    Servicer,
    check_metadata,
    to_struct,
    to_timestamp,
    unary,
)
from .crud import Crud
from .errors import InvalidArgument
from .validate import identifier, max_len

__all__ = ["SECRETS", "SECRET_CRUD", "SecretServicer"]

SECRETS = ResourceSpec(
    kind="secret",
    table="secrets",
    columns=("id", "name", "description", "value", "metadata"),
    json_columns=frozenset({"metadata"}),
    unique={"secrets_name_key": "name"},
)
_FIELDS = ("name", "description", "value", "metadata")
MAX_SECRET_BYTES = 64 * 1024


def secret_to_proto(row: dict[str, Any]) -> secrets_pb2.Secret:
    return secrets_pb2.Secret(
        id=str(row["id"]),
        name=row["name"],
        description=row["description"],
        metadata=to_struct(row["metadata"]),
        created_at=to_timestamp(row["created_at"]),
        updated_at=to_timestamp(row["updated_at"]),
    )


def _values(secret: secrets_pb2.Secret, paths: list[str], prefix: str) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in paths:
        f = f"{prefix}.{path}"
        if path == "name":
            values["name"] = identifier(secret.name, f, limit=120)
        elif path == "description":
            values["description"] = max_len(secret.description, f, 10_000)
        elif path == "value":
            if not secret.value:
                raise InvalidArgument(f, "is required")
            if len(secret.value.encode()) > MAX_SECRET_BYTES:
                raise InvalidArgument(f, f"must be at most {MAX_SECRET_BYTES} bytes")
            values["value"] = secret.value
        elif path == "metadata":
            values["metadata"] = check_metadata(secret.HasField("metadata"), secret.metadata, f)
    return values


SECRET_CRUD = Crud(
    spec=SECRETS,
    field="secret",
    fields=_FIELDS,
    to_proto=secret_to_proto,
    values=_values,
    list_response=secrets_pb2.ListSecretsResponse,
    list_field="secrets",
)


class SecretServicer(Servicer, secrets_pb2_grpc.SecretServiceServicer):
    CreateSecret = unary(SECRET_CRUD.create)
    GetSecret = unary(SECRET_CRUD.get)
    ListSecrets = unary(SECRET_CRUD.list)
    UpdateSecret = unary(SECRET_CRUD.update)
    DeleteSecret = unary(SECRET_CRUD.delete)
