"""The recovery sweep re-queues only runs whose wake-up is really lost: not a run waiting its turn
in the ready queue, not a run written in the last second (most likely moving), but a run that is
neither queued nor leased and has not moved for a while.

An API-only server (no worker, so nothing consumes the queue) on a fresh database and its own Redis
database number, and a Worker object that is never started: the test drives `recover()` itself."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import _fresh_database

from mintleaf import Struct, v1
from mintleaf_server.engine.queue import member
from mintleaf_server.engine.worker import Worker
from support.harness import ServerThread


@pytest.fixture(scope="module")
def api_only(pg_url: str, redis_url: str, data_root: Path) -> Iterator[tuple[ServerThread, str]]:
    url = _fresh_database(pg_url)
    sep = "&" if "?" in redis_url else "?"
    srv = ServerThread(
        url, f"{redis_url}{sep}db=6", data_root / f"sweep-{uuid.uuid4().hex[:6]}", worker_enabled=False
    )
    srv.start()
    yield srv, url
    srv.stop()


def test_the_sweep_skips_queued_and_recent_runs(api_only: tuple[ServerThread, str]) -> None:
    srv, url = api_only
    rt = srv.app.runtime
    worker = srv.call(_idle_worker(rt))
    client = srv.client()
    agent = client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="sweep")))
    task = client.tasks.create_task(
        v1.CreateTaskRequest(
            agent_id=agent.id,
            task=v1.Task(definition=Struct.from_dict({"name": "t", "main": [{"evaluate": {"a": 1}}]})),
        )
    )
    ex = client.executions.create_execution(
        v1.CreateExecutionRequest(task_id=task.id, execution=v1.Execution())
    )
    run = member(ex.id, "main", srv.call(_developer(rt, ex.id)))

    def recovered() -> int:
        before = worker.stats.recovered
        srv.call(worker.recover())
        return int(worker.stats.recovered - before)

    def queued() -> bool:
        return srv.call(rt.redis.zscore(worker.queue.key, run)) is not None

    def backdate() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "UPDATE executions SET updated_at = now() - interval '1 hour' WHERE id = %s", (ex.id,)
            )

    assert queued()  # CreateExecution queued it; nobody consumes this queue
    assert recovered() == 0  # queued, and just written
    backdate()
    assert recovered() == 0  # still waiting its turn in the queue: not lost
    srv.call(rt.redis.zrem(worker.queue.key, run))  # the wake-up is lost
    assert recovered() == 1 and queued()  # found again
    srv.call(rt.redis.zrem(worker.queue.key, run))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE executions SET updated_at = now() WHERE id = %s", (ex.id,))
    assert recovered() == 0 and not queued()  # written a moment ago: the next sweep's business
    backdate()
    assert recovered() == 1 and queued()
    client.close()


async def _idle_worker(rt: Any) -> Worker:
    return Worker(rt.db, rt.redis)


async def _developer(rt: Any, eid: str) -> str:
    async with rt.db.connection() as conn:
        row = await (
            await conn.execute("SELECT developer_id FROM executions WHERE id = %s", (eid,))
        ).fetchone()
    return str(row["developer_id"])
