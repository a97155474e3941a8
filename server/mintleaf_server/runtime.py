"""The runtime: what a server process holds while it runs (settings, database pool, Redis,
authenticator, model registry), built in start-up order and closed in reverse."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from .api.auth import Authenticator, load_key_secret
from .api.ratelimit import RateLimiter
from .config import Settings
from .store.db import Database
from .store.embedded import EmbeddedPostgres, EmbeddedRedis, start_postgres, start_redis
from .store.migrate import upgrade

__all__ = ["Runtime"]

log = logging.getLogger("mintleaf")


@dataclass
class Runtime:
    settings: Settings
    db: Database = field(init=False)
    redis: aioredis.Redis = field(init=False)
    auth: Authenticator = field(init=False)
    database_url: str = ""
    redis_url: str = ""
    embedded_pg: EmbeddedPostgres | None = None
    embedded_redis: EmbeddedRedis | None = None
    models: Any = None
    embedder: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
    early_postgres: Any = None  # a concurrent.futures.Future of EmbeddedPostgres
    rate_limiter: RateLimiter | None = None  # per-developer request rate (limits.rate_per_second)

    async def start(self) -> None:
        s = self.settings
        if s.limits.rate_per_second:
            self.rate_limiter = RateLimiter(s.limits.rate_per_second, s.limits.rate_burst)
        # Both embedded servers start at once, in threads (their start-up is mostly waiting).
        pg_task: asyncio.Future[EmbeddedPostgres] | None = None
        redis_task: asyncio.Future[EmbeddedRedis] | None = None
        if self.early_postgres is not None:  # started by the CLI before the heavy imports
            pg_task = asyncio.wrap_future(self.early_postgres)
        elif s.embedded_database:
            pg_task = asyncio.ensure_future(asyncio.to_thread(start_postgres, s.data_dir))
        if s.embedded_redis:
            redis_task = asyncio.ensure_future(asyncio.to_thread(start_redis, s.data_dir))
        if pg_task is not None:
            self.embedded_pg = await pg_task
            self.database_url = self.embedded_pg.url
        else:
            self.database_url = s.database_url or ""
        if redis_task is not None:
            self.embedded_redis = await redis_task
            self.redis_url = self.embedded_redis.url
        else:
            self.redis_url = s.redis_url or ""
        await asyncio.to_thread(upgrade, self.database_url)
        self.db = Database(
            self.database_url,
            min_size=s.pool_min_size,
            max_size=s.pool_max_size,
            timeout=s.pool_timeout_seconds,
        )
        await self.db.open()
        self.redis = aioredis.Redis.from_url(self.redis_url)
        await self.redis.ping()
        self.auth = Authenticator(self.db, await load_key_secret(self.db, s.key_secret))
        self.models = _model_registry(s)
        self.embedder = make_embedder(s.embeddings)

    async def close(self) -> None:
        if self.models is not None and hasattr(self.models, "aclose"):
            await self.models.aclose()
        await self.redis.aclose()
        await self.db.close()
        if self.embedded_redis is not None:
            self.embedded_redis.stop()
        if self.embedded_pg is not None:
            self.embedded_pg.stop()

    async def ensure_local_key(self) -> Path | None:
        """Embedded mode: on first start, create a local developer and key and write the key to
        `<data_dir>/api_key` (mode 0600). Returns the file's path when a key was created."""
        path = self.settings.data_dir / "api_key"
        if path.exists():
            return None
        async with self.db.connection() as conn:
            row = await (await conn.execute("SELECT count(*) AS n FROM api_keys")).fetchone()
        if row and row["n"] > 0:
            return None
        new = await self.auth.create_key(name="local")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(new.key + "\n")
        return path

    # -- hooks other packages use -------------------------------------------------------------

    async def on_agent_deleted(self, conn: Any, dev: uuid.UUID, agent_id: uuid.UUID) -> None:
        await conn.execute(
            "DELETE FROM task_versions WHERE developer_id = %s AND task_id IN"
            " (SELECT id FROM tasks WHERE developer_id = %s AND agent_id = %s)",
            (dev, dev, agent_id),
        )
        await conn.execute("DELETE FROM tasks WHERE developer_id = %s AND agent_id = %s", (dev, agent_id))
        await self._delete_owned_docs(conn, dev, "agent", agent_id)

    async def on_user_deleted(self, conn: Any, dev: uuid.UUID, user_id: uuid.UUID) -> None:
        await self._delete_owned_docs(conn, dev, "user", user_id)

    async def _delete_owned_docs(
        self, conn: Any, dev: uuid.UUID, owner_type: str, owner_id: uuid.UUID
    ) -> None:
        # doc_chunks go with their doc (ON DELETE CASCADE).
        await conn.execute(
            "DELETE FROM docs WHERE developer_id = %s AND owner_type = %s AND owner_id = %s",
            (dev, owner_type, owner_id),
        )

    def model_list(self) -> list[dict[str, Any]]:
        cfg = self.settings.models or {}
        default = str(cfg.get("default", ""))
        out: list[dict[str, Any]] = []
        for ep in cfg.get("endpoints", []) or []:
            name = str(ep.get("match") or ep.get("model") or "")
            out.append(
                {
                    "name": name,
                    "context_window": int(ep.get("context_window", 0) or 0),
                    "is_default": name == default,
                }
            )
        if default and not any(m["name"] == default for m in out):
            out.insert(0, {"name": default, "context_window": 0, "is_default": True})
        return out


def make_embedder(cfg: dict[str, Any]) -> Any:
    """The configured embedding backend ([embeddings] backend = "openai" | "local" | "none")."""
    from .config import ConfigError

    backend = str(cfg.get("backend", "none"))
    if backend == "none":
        return None
    if backend == "local":
        from .documents.embeddings import LocalEmbedder

        try:
            return LocalEmbedder(dimensions=int(cfg.get("dimensions", 256)))
        except Exception as exc:
            raise ConfigError(f"setting 'embeddings': {exc}") from exc
    if backend == "openai":
        from .documents.embeddings import OpenAIEmbedder

        key_env = cfg.get("api_key_env")
        api_key = cfg.get("api_key") or (os.environ.get(str(key_env)) if key_env else None)
        if "model" not in cfg or "dimensions" not in cfg:
            raise ConfigError("setting 'embeddings': backend 'openai' needs 'model' and 'dimensions'")
        return OpenAIEmbedder(
            model=str(cfg["model"]),
            dimensions=int(cfg["dimensions"]),
            base_url=cfg.get("base_url"),
            api_key=api_key or "unused",
            send_dimensions=bool(cfg.get("send_dimensions", True)),
        )
    raise ConfigError(f"setting 'embeddings.backend': {backend!r} is not openai, local or none")


def _model_registry(s: Settings) -> Any:
    try:
        from .llm.client import ModelRegistry
    except ImportError:  # pragma: no cover - the model layer is part of the package
        return None
    try:
        return ModelRegistry.from_config(s.models or {})
    except Exception as exc:  # a bad model configuration must fail at start, clearly
        from .config import ConfigError

        raise ConfigError(f"setting 'models': {exc}") from exc
