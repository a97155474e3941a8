"""Fixtures shared by every tier. Integration and e2e tests get real PostgreSQL (embedded, or
MINTLEAF_TEST_DATABASE_URL) and Redis (embedded, or MINTLEAF_TEST_REDIS_URL), one set per xdist
worker, and a real gRPC server on a free loopback port. Tests are isolated by tenancy: each test
gets a fresh developer and API key, and every query is scoped by developer."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.harness import ServerThread, private_runtime_dir, start_test_postgres, start_test_redis

private_runtime_dir()


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mintleaf")


@pytest.fixture(scope="session")
def pg_url(data_root: Path) -> Iterator[str]:
    external = os.environ.get("MINTLEAF_TEST_DATABASE_URL")
    if external:
        yield external
        return
    url, pg = start_test_postgres(data_root)
    yield url
    pg.stop()


@pytest.fixture(scope="session")
def redis_url(data_root: Path) -> Iterator[str]:
    external = os.environ.get("MINTLEAF_TEST_REDIS_URL")
    if external:
        yield external
        return
    url, r = start_test_redis(data_root)
    yield url
    r.stop()


@pytest.fixture(scope="session")
def server(pg_url: str, redis_url: str, data_root: Path) -> Iterator[ServerThread]:
    srv = ServerThread(pg_url, redis_url, data_root / "app").start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server: ServerThread) -> Iterator[object]:
    c = server.client()
    yield c
    c.close()


@pytest.fixture
def other_client(server: ServerThread) -> Iterator[object]:
    """A second developer, for tenant-isolation checks."""
    c = server.client()
    yield c
    c.close()
