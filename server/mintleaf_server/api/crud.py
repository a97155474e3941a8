"""The standard methods (Create, Get, List, Update, Delete) of a plain resource, written once.

Each method has the shape of a `unary` handler, so a servicer names its RPCs and wraps them itself:
`GetAgent = unary(AGENT_CRUD.get)`; anything that differs stays in the servicer (CreateSession checks
its participants, then calls `create` with them as extra columns). Rejected: a base class that makes
the RPCs from a resource name (a reader could no longer see or grep a service's methods), and a
`@unary async def` stub per RPC that only calls this helper (a score of near-identical stubs)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import psycopg
from google.protobuf import empty_pb2

from ..store.db import ResourceSpec
from .common import Servicer, page_size, page_token, parse_id, struct_to_dict
from .errors import InvalidArgument
from .validate import update_paths

if TYPE_CHECKING:
    from ..runtime import Runtime

__all__ = ["Crud", "OnDelete"]

M = TypeVar("M")  # the resource message (agents_pb2.Agent)
L = TypeVar("L")  # its List response (agents_pb2.ListAgentsResponse)

# Runs inside the delete's transaction: removes what the resource owns, calls the runtime's hooks.
OnDelete = Callable[
    ["Runtime", psycopg.AsyncConnection[dict[str, Any]], uuid.UUID, uuid.UUID], Awaitable[None]
]


@dataclass(frozen=True)
class Crud(Generic[M, L]):
    """One resource's standard methods; each takes (servicer, request, context, developer id)."""

    spec: ResourceSpec
    field: str  # the request field holding the resource ("agent"), also the prefix of error fields
    fields: tuple[str, ...]  # what Create writes and Update's mask may name
    to_proto: Callable[[dict[str, Any]], M]
    values: Callable[[M, list[str], str], dict[str, Any]]  # (message, paths, prefix) -> columns
    list_response: Callable[..., L]
    list_field: str  # the List response's repeated field ("agents")
    on_delete: OnDelete | None = None  # None: a plain delete, no transaction

    async def create(
        self,
        svc: Servicer,
        request: Any,
        context: Any,
        dev: uuid.UUID,
        extra: Mapping[str, Any] | None = None,
    ) -> M:
        if not request.HasField(self.field):
            raise InvalidArgument(self.field, "is required")
        message = getattr(request, self.field)
        values = self.values(message, list(self.fields), self.field)
        values.update(extra or {})
        if message.id:
            values["id"] = parse_id(message.id, f"{self.field}.id")
        return self.to_proto(await svc.rt.db.insert(self.spec, dev, values, request_id=request.request_id))

    async def get(self, svc: Servicer, request: Any, context: Any, dev: uuid.UUID) -> M:
        return self.to_proto(await svc.rt.db.get(self.spec, dev, parse_id(request.id, "id")))

    async def list(self, svc: Servicer, request: Any, context: Any, dev: uuid.UUID) -> L:
        page = await svc.rt.db.list(
            self.spec,
            dev,
            page_size=page_size(request.page_size, svc.rt),
            page_token=page_token(request.page_token),
            metadata_filter=struct_to_dict(request.metadata_filter),
        )
        items = [self.to_proto(r) for r in page.rows]
        return self.list_response(**{self.list_field: items}, next_page_token=page.next_page_token)

    async def update(self, svc: Servicer, request: Any, context: Any, dev: uuid.UUID) -> M:
        message = getattr(request, self.field)
        id = parse_id(message.id, f"{self.field}.id")
        paths = update_paths(request.update_mask, self.fields)
        values = self.values(message, paths, self.field)
        return self.to_proto(await svc.rt.db.update(self.spec, dev, id, values))

    async def delete(self, svc: Servicer, request: Any, context: Any, dev: uuid.UUID) -> empty_pb2.Empty:
        id = parse_id(request.id, "id")
        if self.on_delete is None:
            await svc.rt.db.delete(self.spec, dev, id)
        else:
            async with svc.rt.db.transaction() as conn:
                await svc.rt.db.delete(self.spec, dev, id, conn=conn)
                await self.on_delete(svc.rt, conn, dev, id)
        return empty_pb2.Empty()
