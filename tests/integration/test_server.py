"""The server around the servicers: health, reflection, message size limits, deadlines, the
services other issues implement, and the schema migrations."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mintleaf import v1
from mintleaf_server._proto.mintleaf.v1 import chat_pb2, docs_pb2, executions_pb2
from mintleaf_server.config import Limits
from mintleaf_server.server import SERVICE_NAMES
from mintleaf_server.store.migrate import schema_diff, upgrade
from support.harness import ServerThread

SMALL_LIMIT = 64 * 1024


def _health(target: str, service: str = "") -> int:
    with grpc.insecure_channel(target) as channel:
        return (
            health_pb2_grpc.HealthStub(channel)
            .Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            .status
        )


def _still_serving(server: ServerThread, client) -> None:
    assert _health(server.target) == health_pb2.HealthCheckResponse.SERVING
    assert client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="after"))).name == "after"


def test_health_serving(server):
    # No API key: load balancers probe without credentials.
    assert _health(server.target) == health_pb2.HealthCheckResponse.SERVING
    for name in SERVICE_NAMES:
        assert _health(server.target, name) == health_pb2.HealthCheckResponse.SERVING, name
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as info:
        health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_reflection_lists_our_services(server):
    with grpc.insecure_channel(server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = list(
            stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
        )
        listed = {s.name for s in replies[0].list_services_response.service}
        files = list(
            stub.ServerReflectionInfo(
                iter(
                    [reflection_pb2.ServerReflectionRequest(file_containing_symbol="mintleaf.v1.TaskService")]
                ),
                timeout=5,
            )
        )
    expected = {
        f"mintleaf.v1.{name}Service"
        for name in ("Agent", "Tool", "User", "Session", "Chat", "Task", "Execution", "Doc", "Secret")
    }
    assert expected <= listed
    assert "grpc.health.v1.Health" in listed
    assert files[0].file_descriptor_response.file_descriptor_proto  # descriptors are served too


@pytest.fixture(scope="module")
def small_server(pg_url: str, redis_url: str, data_root: Path) -> Iterator[ServerThread]:
    srv = ServerThread(
        pg_url, redis_url, data_root / "small", limits=Limits(max_message_bytes=SMALL_LIMIT)
    ).start()
    yield srv
    srv.stop()


def test_message_over_the_limit(small_server):
    with small_server.client() as client:
        big = v1.CreateAgentRequest(agent=v1.Agent(name="big", about="x" * (SMALL_LIMIT + 1)))
        with pytest.raises(grpc.RpcError) as info:
            client.agents.create_agent(big)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        _still_serving(small_server, client)
        # Just under the limit is fine.
        ok = client.agents.create_agent(
            v1.CreateAgentRequest(agent=v1.Agent(name="ok", about="x" * (SMALL_LIMIT - 1024)))
        )
        assert len(ok.about) == SMALL_LIMIT - 1024


def test_deadline_is_honoured(server, client):
    # A deadline far shorter than any call: the client gets DEADLINE_EXCEEDED and the server,
    # which sees the call already expired (or cancelled mid-way), carries on serving others.
    call = client.channel.unary_unary("/mintleaf.v1.TaskService/ValidateTask")
    doc = "name: slow\nmain:\n" + "".join(f"  - evaluate: {{x{i}: '{i} + 1'}}\n" for i in range(900))
    for _ in range(5):
        with pytest.raises(grpc.RpcError) as info:
            call(bytes(v1.ValidateTaskRequest(task=v1.Task(yaml=doc))), timeout=0.001)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    _still_serving(server, client)
    # A generous deadline on the same call succeeds.
    reply = v1.ValidateTaskResponse.parse(
        call(bytes(v1.ValidateTaskRequest(task=v1.Task(yaml=doc))), timeout=60)
    )
    assert reply.valid


OTHER_ISSUES = [
    executions_pb2.DESCRIPTOR.services_by_name["ExecutionService"],
    docs_pb2.DESCRIPTOR.services_by_name["DocService"],
    chat_pb2.DESCRIPTOR.services_by_name["ChatService"],
]


@pytest.mark.parametrize(
    "method",
    [m for s in OTHER_ISSUES for m in s.methods],
    ids=lambda m: f"{m.containing_service.name}.{m.name}",
)
def test_services_of_other_issues_answer(server, client, method):
    """Whether implemented yet or not, an empty request gets an answer and the server stays up."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    try:
        if method.server_streaming:
            for _ in client.channel.unary_stream(path)(b"", timeout=5):
                break
        else:
            client.channel.unary_unary(path)(b"", timeout=5)
    except grpc.RpcError as exc:
        assert exc.code() is not None
    _still_serving(server, client)


def _database_url(base: str, name: str) -> str:
    parts = urlsplit(base)
    return urlunsplit(parts._replace(path=f"/{name}"))


def test_migrated_schema_equals_the_models(pg_url):
    name = f"migrate_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _database_url(pg_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        upgrade(url)
        assert schema_diff(url) == []
        upgrade(url)  # a second upgrade is a no-op
        assert schema_diff(url) == []
        with psycopg.connect(url) as conn:
            tables = {
                r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            }
        assert {
            "agents",
            "tools",
            "users",
            "sessions",
            "entries",
            "tasks",
            "task_versions",
            "secrets",
            "api_keys",
        } <= tables
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_schema_diff_sees_a_drift(pg_url):
    """The check above can fail: a column the models lack is reported."""
    name = f"drift_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = _database_url(pg_url, name)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER TABLE agents ADD COLUMN stray integer")
        diff = schema_diff(url)
        assert any("stray" in repr(d) for d in diff), diff
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
