"""API keys: creation, HMAC-SHA-256 hashing, and the per-call lookup (with a short in-process cache).

A key is `ml_` + 32 random url-safe bytes. Only HMAC-SHA-256(server key secret, key) is stored: a
keyed fast hash, because every call checks one (a slow password hash would add milliseconds to every
RPC, and keys are random, so there is nothing to brute-force). The key secret is shared by every
replica through the database (or set with MINTLEAF_KEY_SECRET). Revocation takes effect on other
replicas within the cache TTL (AUTH_CACHE_SECONDS)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

import grpc

from ..store.base import new_id
from ..store.db import Database
from .errors import Unauthenticated

__all__ = ["AUTH_CACHE_SECONDS", "Authenticator", "NewKey"]

AUTH_CACHE_SECONDS = 10.0
KEY_PREFIX = "ml_"


@dataclass(frozen=True)
class NewKey:
    id: uuid.UUID
    developer_id: uuid.UUID
    key: str  # shown once


class Authenticator:
    def __init__(self, db: Database, secret: bytes) -> None:
        self.db = db
        self._secret = secret
        self._cache: dict[bytes, tuple[uuid.UUID, float]] = {}

    def hash(self, key: str) -> bytes:
        return hmac.new(self._secret, key.encode(), hashlib.sha256).digest()

    async def create_key(self, developer_id: uuid.UUID | None = None, name: str = "") -> NewKey:
        """Creates a key (and the developer, when none is given)."""
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = new_id()
        async with self.db.transaction() as conn:
            if developer_id is None:
                developer_id = new_id()
                await conn.execute("INSERT INTO developers (id, name) VALUES (%s, %s)", (developer_id, name))
            await conn.execute(
                "INSERT INTO api_keys (id, developer_id, key_hash, prefix, name) VALUES (%s, %s, %s, %s, %s)",
                (key_id, developer_id, self.hash(key), key[:10], name),
            )
        return NewKey(id=key_id, developer_id=developer_id, key=key)

    async def revoke(self, key_id: uuid.UUID) -> bool:
        async with self.db.connection() as conn:
            row = await (
                await conn.execute(
                    "UPDATE api_keys SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL RETURNING key_hash",
                    (key_id,),
                )
            ).fetchone()
        if row:
            self._cache.pop(bytes(row["key_hash"]), None)
        return row is not None

    async def list_keys(self) -> list[dict[str, Any]]:
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT id, developer_id, prefix, name, created_at, revoked_at FROM api_keys ORDER BY created_at"
            )
            return await cur.fetchall()

    async def developer_for(self, key: str) -> uuid.UUID:
        digest = self.hash(key)
        cached = self._cache.get(digest)
        now = time.monotonic()
        if cached and cached[1] > now:
            return cached[0]
        async with self.db.connection() as conn:
            row = await (
                await conn.execute(
                    "SELECT developer_id FROM api_keys WHERE key_hash = %s AND revoked_at IS NULL", (digest,)
                )
            ).fetchone()
        if row is None:
            self._cache.pop(digest, None)
            raise Unauthenticated("the API key is not valid (unknown or revoked)", reason="API_KEY_INVALID")
        if len(self._cache) > 10_000:
            self._cache.clear()
        developer_id: uuid.UUID = row["developer_id"]
        self._cache[digest] = (developer_id, now + AUTH_CACHE_SECONDS)
        return developer_id

    async def authenticate(self, context: grpc.aio.ServicerContext) -> uuid.UUID:
        """The developer behind the call's `authorization: Bearer <key>` (or Julep's `x-auth-key`)."""
        key = ""
        for name, value in context.invocation_metadata() or ():
            if name == "authorization":
                text = value if isinstance(value, str) else value.decode()
                scheme, _, rest = text.partition(" ")
                if scheme.lower() != "bearer" or not rest.strip():
                    raise Unauthenticated(
                        "the authorization header must be 'Bearer <API key>'", reason="API_KEY_MALFORMED"
                    )
                key = rest.strip()
                break
            if name == "x-auth-key":
                key = value if isinstance(value, str) else value.decode()
        if not key:
            raise Unauthenticated(
                "missing API key: send 'authorization: Bearer <key>' (or 'x-auth-key')",
                reason="API_KEY_MISSING",
            )
        return await self.developer_for(key)


async def load_key_secret(db: Database, configured: str | None) -> bytes:
    """The HMAC key: the configured one, else one generated once and kept in the database."""
    if configured:
        return configured.encode()
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO server_state (key, value) VALUES ('api_key_secret', %s) ON CONFLICT (key) DO NOTHING",
            (secrets.token_bytes(32),),
        )
        row = await (
            await conn.execute("SELECT value FROM server_state WHERE key = 'api_key_secret'")
        ).fetchone()
    assert row is not None
    return bytes(row["value"])
