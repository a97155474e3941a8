"""SecretService: named values tool definitions reference as `secrets.NAME`; values are write-only."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
from google.protobuf import empty_pb2

from .._proto.mintleaf.v1 import secrets_pb2, secrets_pb2_grpc
from ..store.db import ResourceSpec
from .common import (
    Servicer,
    check_metadata,
    page_size,
    page_token,
    parse_id,
    struct_to_dict,
    to_struct,
    to_timestamp,
    unary,
)
from .errors import InvalidArgument
from .validate import identifier, max_len, update_paths

__all__ = ["SECRETS", "SecretServicer"]

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


def _values(secret: secrets_pb2.Secret, paths: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for path in paths:
        f = f"secret.{path}"
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


class SecretServicer(Servicer, secrets_pb2_grpc.SecretServiceServicer):
    @unary
    async def CreateSecret(
        self, request: secrets_pb2.CreateSecretRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> secrets_pb2.Secret:
        values = _values(request.secret, list(_FIELDS))
        if request.secret.id:
            values["id"] = parse_id(request.secret.id, "secret.id")
        return secret_to_proto(await self.rt.db.insert(SECRETS, dev, values, request_id=request.request_id))

    @unary
    async def GetSecret(
        self, request: secrets_pb2.GetSecretRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> secrets_pb2.Secret:
        return secret_to_proto(await self.rt.db.get(SECRETS, dev, parse_id(request.id, "id")))

    @unary
    async def ListSecrets(
        self, request: secrets_pb2.ListSecretsRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> secrets_pb2.ListSecretsResponse:
        page = await self.rt.db.list(
            SECRETS,
            dev,
            page_size=page_size(request.page_size, self.rt),
            page_token=page_token(request.page_token),
            metadata_filter=struct_to_dict(request.metadata_filter),
        )
        return secrets_pb2.ListSecretsResponse(
            secrets=[secret_to_proto(r) for r in page.rows], next_page_token=page.next_page_token
        )

    @unary
    async def UpdateSecret(
        self, request: secrets_pb2.UpdateSecretRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> secrets_pb2.Secret:
        id = parse_id(request.secret.id, "secret.id")
        paths = update_paths(request.update_mask, _FIELDS)
        return secret_to_proto(await self.rt.db.update(SECRETS, dev, id, _values(request.secret, paths)))

    @unary
    async def DeleteSecret(
        self, request: secrets_pb2.DeleteSecretRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> empty_pb2.Empty:
        await self.rt.db.delete(SECRETS, dev, parse_id(request.id, "id"))
        return empty_pb2.Empty()
