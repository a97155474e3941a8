"""The PostgreSQL connection pool and the generic, tenant-scoped CRUD queries of the core resources.

Hot paths use psycopg directly (one round trip per statement, dict rows); the SQLModel tables only
describe the schema. Every query takes the developer id and filters by it: a row of another
developer is simply not found."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from .base import new_id
from .errors import AlreadyExists, NotFound

__all__ = ["Database", "Page", "ResourceSpec", "decode_page_token", "encode_page_token"]


@dataclass(frozen=True)
class ResourceSpec:
    """How a resource is stored: its table, writable columns and which of them are JSON."""

    kind: str
    table: str
    columns: tuple[str, ...]
    json_columns: frozenset[str] = frozenset()
    parent: str | None = None  # column naming the parent (tools: agent_id), filterable
    unique: Mapping[str, str] = field(default_factory=dict)  # constraint name -> field it guards
    has_updated_at: bool = True


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    next_page_token: str


def encode_page_token(created_at: datetime, id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str) -> tuple[datetime, uuid.UUID]:
    """Raises ValueError for a token this server did not make."""
    padded = token + "=" * (-len(token) % 4)
    created, id = json.loads(base64.urlsafe_b64decode(padded.encode()))
    return datetime.fromisoformat(created), uuid.UUID(id)


def _adapt(spec: ResourceSpec, column: str, value: Any) -> Any:
    if column in spec.json_columns and value is not None:
        return Jsonb(value)
    return value


class Database:
    """An async connection pool plus the CRUD queries. One per server process."""

    def __init__(self, url: str, *, min_size: int = 2, max_size: int = 16, timeout: float = 5.0) -> None:
        self.url = url
        self.pool = AsyncConnectionPool(
            url,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            open=False,
            kwargs={"autocommit": True, "row_factory": dict_row, "prepare_threshold": 0},
            name="mintleaf",
        )

    async def open(self) -> None:
        await self.pool.open(wait=True, timeout=30)

    async def close(self) -> None:
        await self.pool.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        async with self.pool.connection() as conn:
            yield conn  # type: ignore[misc]  # the pool's connections use dict_row (see __init__)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        async with self.pool.connection() as conn, conn.transaction():
            yield conn  # type: ignore[misc]

    # -- generic CRUD -------------------------------------------------------------------------

    async def insert(
        self,
        spec: ResourceSpec,
        developer_id: uuid.UUID,
        values: Mapping[str, Any],
        *,
        request_id: str = "",
        conn: psycopg.AsyncConnection[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Creates a row. Idempotent: a repeated `request_id`, or a client-chosen id whose row
        holds the same values, returns the existing row; an id taken with other values is
        AlreadyExists."""
        if conn is None:
            if not request_id:  # one autocommit statement: the common, fast path
                async with self.connection() as c:
                    return await self._insert_row(spec, developer_id, values, c, savepoint=False)
            async with self.transaction() as c:
                return await self.insert(spec, developer_id, values, request_id=request_id, conn=c)
        if request_id:
            # Concurrent retries of one create queue here, so only the first one inserts.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                (f"{developer_id}/{spec.kind}/{request_id}",),
            )
            row = await (
                await conn.execute(
                    "SELECT resource_id FROM idempotency_keys WHERE developer_id = %s AND kind = %s AND request_id = %s",
                    (developer_id, spec.kind, request_id),
                )
            ).fetchone()
            if row is not None:
                return await self.get(spec, developer_id, row["resource_id"], conn=conn)
        created = await self._insert_row(spec, developer_id, values, conn, savepoint=True)
        if request_id:
            await conn.execute(
                "INSERT INTO idempotency_keys (developer_id, kind, request_id, resource_id) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING",
                (developer_id, spec.kind, request_id, created["id"]),
            )
        return created

    async def _insert_row(
        self,
        spec: ResourceSpec,
        developer_id: uuid.UUID,
        values: Mapping[str, Any],
        conn: psycopg.AsyncConnection[dict[str, Any]],
        *,
        savepoint: bool,
    ) -> dict[str, Any]:
        id = values.get("id") or new_id()
        cols = ["developer_id", "id", *[c for c in spec.columns if c in values and c != "id"]]
        params = [developer_id, id, *[_adapt(spec, c, values[c]) for c in cols[2:]]]
        query = sql.SQL(
            "INSERT INTO {table} ({cols}) VALUES ({vals}) ON CONFLICT (developer_id, id) DO NOTHING RETURNING *"
        ).format(
            table=sql.Identifier(spec.table),
            cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
            vals=sql.SQL(", ").join(sql.Placeholder() * len(cols)),
        )
        try:
            if savepoint:  # inside a transaction a failed statement must not abort it
                async with conn.transaction():
                    created = await (await conn.execute(query, params)).fetchone()
            else:
                created = await (await conn.execute(query, params)).fetchone()
        except psycopg.errors.UniqueViolation as exc:
            name = exc.diag.constraint_name or ""
            fld = spec.unique.get(name, name)
            raise AlreadyExists(spec.kind, fld, values.get(fld, "")) from exc
        if created is None:
            existing = await self.get(spec, developer_id, id, conn=conn)
            same = all(_same(existing.get(c), values[c]) for c in spec.columns if c in values and c != "id")
            if not same:
                raise AlreadyExists(spec.kind, "id", id)
            created = existing
        return created

    async def get(
        self,
        spec: ResourceSpec,
        developer_id: uuid.UUID,
        id: uuid.UUID,
        *,
        parent: uuid.UUID | None = None,
        conn: psycopg.AsyncConnection[dict[str, Any]] | None = None,
        for_update: bool = False,
    ) -> dict[str, Any]:
        where: sql.Composable = sql.SQL("developer_id = %s AND id = %s")
        params: list[Any] = [developer_id, id]
        if parent is not None and spec.parent:
            where = sql.SQL("{} AND {} = %s").format(where, sql.Identifier(spec.parent))
            params.append(parent)
        query = sql.SQL("SELECT * FROM {} WHERE {}{}").format(
            sql.Identifier(spec.table), where, sql.SQL(" FOR UPDATE" if for_update else "")
        )
        if conn is None:
            async with self.connection() as c:
                row = await (await c.execute(query, params)).fetchone()
        else:
            row = await (await conn.execute(query, params)).fetchone()
        if row is None:
            raise NotFound(spec.kind, id)
        return row

    async def list(
        self,
        spec: ResourceSpec,
        developer_id: uuid.UUID,
        *,
        page_size: int,
        page_token: str = "",
        metadata_filter: Mapping[str, Any] | None = None,
        equals: Mapping[str, Any] | None = None,
    ) -> Page:
        clauses: list[sql.Composable] = [sql.SQL("developer_id = %s")]
        params: list[Any] = [developer_id]
        if page_token:
            created, last = decode_page_token(page_token)
            clauses.append(sql.SQL("(created_at, id) > (%s, %s)"))
            params += [created, last]
        if metadata_filter:
            clauses.append(sql.SQL("metadata @> %s"))
            params.append(Jsonb(dict(metadata_filter)))
        for column, value in (equals or {}).items():
            clauses.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            params.append(value)
        query = sql.SQL("SELECT * FROM {} WHERE {} ORDER BY created_at, id LIMIT %s").format(
            sql.Identifier(spec.table), sql.SQL(" AND ").join(clauses)
        )
        params.append(page_size + 1)
        async with self.connection() as conn:
            rows = await (await conn.execute(query, params)).fetchall()
        token = ""
        if len(rows) > page_size:
            rows = rows[:page_size]
            token = encode_page_token(rows[-1]["created_at"], rows[-1]["id"])
        return Page(rows=rows, next_page_token=token)

    async def update(
        self,
        spec: ResourceSpec,
        developer_id: uuid.UUID,
        id: uuid.UUID,
        values: Mapping[str, Any],
        *,
        parent: uuid.UUID | None = None,
        conn: psycopg.AsyncConnection[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        if not values:
            return await self.get(spec, developer_id, id, parent=parent, conn=conn)
        sets: list[sql.Composable] = [sql.SQL("{} = %s").format(sql.Identifier(c)) for c in values]
        params = [_adapt(spec, c, v) for c, v in values.items()]
        if spec.has_updated_at:
            sets.append(sql.SQL("updated_at = now()"))
        where: sql.Composable = sql.SQL("developer_id = %s AND id = %s")
        params += [developer_id, id]
        if parent is not None and spec.parent:
            where = sql.SQL("{} AND {} = %s").format(where, sql.Identifier(spec.parent))
            params.append(parent)
        query = sql.SQL("UPDATE {} SET {} WHERE {} RETURNING *").format(
            sql.Identifier(spec.table), sql.SQL(", ").join(sets), where
        )
        try:
            if conn is None:
                async with self.connection() as c:
                    row = await (await c.execute(query, params)).fetchone()
            else:
                row = await (await conn.execute(query, params)).fetchone()
        except psycopg.errors.UniqueViolation as exc:
            name = exc.diag.constraint_name or ""
            fld = spec.unique.get(name, name)
            raise AlreadyExists(spec.kind, fld, values.get(fld, "")) from exc
        if row is None:
            raise NotFound(spec.kind, id)
        return row

    async def delete(
        self,
        spec: ResourceSpec,
        developer_id: uuid.UUID,
        id: uuid.UUID,
        *,
        parent: uuid.UUID | None = None,
        conn: psycopg.AsyncConnection[dict[str, Any]] | None = None,
    ) -> None:
        where: sql.Composable = sql.SQL("developer_id = %s AND id = %s")
        params: list[Any] = [developer_id, id]
        if parent is not None and spec.parent:
            where = sql.SQL("{} AND {} = %s").format(where, sql.Identifier(spec.parent))
            params.append(parent)
        query = sql.SQL("DELETE FROM {} WHERE {} RETURNING id").format(sql.Identifier(spec.table), where)
        if conn is None:
            async with self.connection() as c:
                row = await (await c.execute(query, params)).fetchone()
        else:
            row = await (await conn.execute(query, params)).fetchone()
        if row is None:
            raise NotFound(spec.kind, id)

    async def exists(
        self, spec: ResourceSpec, developer_id: uuid.UUID, ids: Sequence[uuid.UUID]
    ) -> set[uuid.UUID]:
        """Which of `ids` exist for this developer."""
        query = sql.SQL("SELECT id FROM {} WHERE developer_id = %s AND id = ANY(%s)").format(
            sql.Identifier(spec.table)
        )
        async with self.connection() as conn:
            rows = await (await conn.execute(query, (developer_id, list(ids)))).fetchall()
        return {r["id"] for r in rows}


def _same(stored: Any, given: Any) -> bool:
    if isinstance(given, uuid.UUID) or isinstance(stored, uuid.UUID):
        return str(stored) == str(given)
    if isinstance(given, list) and isinstance(stored, list):
        return [str(x) for x in stored] == [str(x) for x in given]
    return bool(stored == given)
