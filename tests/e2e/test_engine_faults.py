"""Fault tests of the execution engine with real `mintleaf-server serve` processes sharing one
PostgreSQL and one Redis: SIGKILL at seeded random points (each kill replayable from its seed,
printed in every assertion message), a crash at each named point of the step cycle
(MINTLEAF_TEST_CRASH_POINT), two replicas sharing the work, and Redis flushed mid-run. After each,
every execution must succeed with the right output, and its transition log must have no gap, no
duplicate and exactly one terminal transition.

Each test gets its own database (created in the session's PostgreSQL) and Redis database number,
so no other server of the test session takes its runs. Leases are short (MINTLEAF_ENGINE_LEASE_TTL_MS)
so a killed process's runs are taken over within about a second."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis

import mintleaf
from mintleaf import Struct, v1

pytestmark = pytest.mark.slow

S = v1.ExecutionStatus
DONE = {S.SUCCEEDED, S.FAILED, S.CANCELLED}
TERMINAL = {v1.TransitionType.FINISH, v1.TransitionType.ERROR, v1.TransitionType.CANCELLED}

# A long execution: a sequential loop of short sleeps (durable timers), a map_reduce fan-out whose
# branches sleep, a wide fan-out of trivial branches, a long run of pure steps (one processing
# session holds its lease a while), and a parallel step. Its output is known in advance.
LONG = {
    "name": "long",
    "main": [
        {"foreach": {"in": "list(range(inputs[0].n))", "do": [{"evaluate": {"i": "$ _"}}, {"sleep": 0.02}]}},
        {
            "over": "list(range(16))",
            "parallelism": 4,
            "map": [{"sleep": 0.02}, {"evaluate": {"v": "$ _ * 2"}}],
            "reduce": "results + _.v",
            "initial": 0,
        },
        {"set": {"total": "$ _"}},
        # a wide fan-out of trivial branches: taken in bursts, committed in batches
        {"foreach": {"in": "list(range(300))", "parallelism": 64, "do": {"evaluate": {"y": "$ _"}}}},
        {"foreach": {"in": "list(range(600))", "do": {"evaluate": {"x": "$ _ + 1"}}}},
        {"parallel": [{"get": "total"}, {"evaluate": {"last": "$ _[-1].x"}}]},
    ],
}


# LONG behind CPU-bound steps (~0.1 s each) that hold the run's lease across several renewals, so
# the mid_lease_renewal crash point is reached whatever the machine's speed.
HEAVY = {
    **LONG,
    "main": [
        {
            "foreach": {
                "in": "list(range(8))",
                "do": {"evaluate": {"w": "$ sum(i % 7 for i in range(200000))"}},
            }
        },
        *LONG["main"],
    ],
}


def expected(n: int) -> Any:
    return [float(sum(i * 2 for i in range(16))), {"last": 600.0}]


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Cluster:
    """Server processes on one fresh database and one Redis database number."""

    def __init__(self, work: Path, database_url: str, redis_url: str) -> None:
        self.work = work
        self.database_url = database_url
        self.redis_url = redis_url
        self.procs: list[subprocess.Popen[bytes]] = []
        self.outputs: list[Path] = []
        self.key = ""

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MINTLEAF_")}
        env.update(
            DATABASE_URL=self.database_url,
            REDIS_URL=self.redis_url,
            MINTLEAF_ENGINE_LEASE_TTL_MS="900",
            MINTLEAF_ENGINE_SWEEP_SECONDS="0.3",
            MINTLEAF_SHUTDOWN_GRACE_SECONDS="1",
        )
        env.update(extra)
        return env

    def spawn(self, name: str, **extra: str) -> tuple[subprocess.Popen[bytes], str]:
        port_file = self.work / f"{name}.port"
        out = self.work / f"{name}.out"
        with out.open("wb") as fh:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mintleaf_server.cli",
                    "--data-dir",
                    str(self.work / "data"),
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--port-file",
                    str(port_file),
                ],
                env=self.env(**extra),
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        self.outputs.append(out)

        def port() -> str | None:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{out.read_text()[-3000:]}")
            text = port_file.read_text().strip() if port_file.exists() else ""
            return text if text.isdigit() else None

        return proc, f"127.0.0.1:{wait_until(port, 60, f'{name} to listen')}"

    def make_key(self) -> str:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "mintleaf_server.cli",
                "--data-dir",
                str(self.work / "data"),
                "keys",
                "create",
            ],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        match = re.search(r"api key:\s+(\S+)", done.stdout)
        assert match, done.stdout
        return match.group(1)

    def stop_all(self) -> None:
        for p in self.procs:  # only the processes this test started
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str, redis_url: str) -> Iterator[Cluster]:
    name = f"faults_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(pg_url)._replace(path=f"/{name}"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    sep = "&" if "?" in redis_url else "?"
    rurl = f"{redis_url}{sep}db=7"
    r = redis.Redis.from_url(rurl)
    r.flushdb()
    r.close()
    c = Cluster(tmp_path, url, rurl)
    yield c
    c.stop_all()


def start_executions(
    target: str, key: str, count: int, n: int = 12, task: dict[str, Any] = LONG
) -> list[str]:
    with mintleaf.Client(target, api_key=key) as client:
        agent = client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="faults")))
        created = client.tasks.create_task(
            v1.CreateTaskRequest(agent_id=agent.id, task=v1.Task(definition=Struct.from_dict(task)))
        )
        return [
            client.executions.create_execution(
                v1.CreateExecutionRequest(
                    task_id=created.id, execution=v1.Execution(input=Struct.from_dict({"n": n}))
                )
            ).id
            for _ in range(count)
        ]


def statuses(target: str, key: str, ids: list[str]) -> list[Any]:
    with mintleaf.Client(target, api_key=key) as client:
        return [client.executions.get_execution(v1.GetExecutionRequest(id=i)) for i in ids]


def _dump_rows(conn: psycopg.Connection[Any], title: str, sql: str, args: tuple[Any, ...]) -> list[str]:
    rows = conn.execute(sql, args).fetchall()
    return [f"-- {title} ({len(rows)})", *(f"   {row}" for row in rows)]


def dump_stuck(cluster: Cluster, ids: list[str]) -> str:
    """What PostgreSQL and Redis hold for the executions that have not ended: the evidence a
    timed-out wait needs (state/pending of each run, branches, fan-outs, waits, timers, and the
    Redis ready/timer sets, leases, dirty marks and fan-out counters)."""
    out: list[str] = []
    with psycopg.connect(cluster.database_url, autocommit=True) as conn:
        for eid in ids:
            row = conn.execute(
                "SELECT status, lease_epoch, transition_count, cancel_reason, state->'pending' AS pending,"
                " state->'status' AS st FROM executions WHERE id = %s",
                (eid,),
            ).fetchone()
            if row is None or row[0] in ("succeeded", "failed", "cancelled"):
                continue
            out.append(f"== execution {eid}: {row}")
            time.sleep(1.0)  # a second look: is some worker still committing, or re-claiming it?
            again = conn.execute(
                "SELECT lease_epoch, transition_count, state->'pending' FROM executions WHERE id = %s", (eid,)
            ).fetchone()
            out.append(f"   one second later: {again}")
            out += _dump_rows(
                conn,
                "fanouts",
                "SELECT id, parent_run, parallelism, total, status FROM fanouts WHERE execution_id = %s",
                (eid,),
            )
            out += _dump_rows(
                conn,
                "branches not succeeded",
                "SELECT key, fanout_id, idx, status, lease_epoch, state->'pending', state->'status'"
                " FROM branches WHERE execution_id = %s AND status <> 'succeeded' ORDER BY fanout_id, idx",
                (eid,),
            )
            out += _dump_rows(
                conn,
                "branch counts",
                "SELECT fanout_id, status, count(*) FROM branches WHERE execution_id = %s GROUP BY 1, 2",
                (eid,),
            )
            out += _dump_rows(
                conn, "waits", "SELECT id, run, kind, status FROM waits WHERE execution_id = %s", (eid,)
            )
            out += _dump_rows(
                conn,
                "timers",
                "SELECT id, run, purpose, fire_at, now() FROM timers WHERE execution_id = %s",
                (eid,),
            )
            out += _dump_rows(
                conn,
                "last transitions",
                "SELECT sequence, run, type, label FROM transitions WHERE execution_id = %s"
                " ORDER BY sequence DESC LIMIT 5",
                (eid,),
            )
        out += _dump_rows(
            conn,
            "sessions (pg_stat_activity)",
            "SELECT pid, state, wait_event_type, wait_event, now() - xact_start AS xact_age,"
            " left(regexp_replace(query, '\\s+', ' ', 'g'), 120) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()",
            (),
        )
    r = redis.Redis.from_url(cluster.redis_url)
    try:
        out.append(f"-- redis ready: {r.zrange('ml:ready', 0, -1, withscores=True)}")
        out.append(f"-- redis timers: {r.zrange('ml:timers', 0, -1, withscores=True)}")
        for pattern in ("ml:lease:*", "ml:dirty:*", "ml:fo:*"):
            for k in sorted(r.scan_iter(pattern)):
                out.append(f"-- redis {k!r} = {r.get(k)!r} pttl {r.pttl(k)}")
    finally:
        r.close()
    return "\n".join(out)


def check_all(
    target: str, key: str, ids: list[str], why: str, timeout: float = 60, cluster: Cluster | None = None
) -> None:
    """Every execution succeeds with the right output; every log is gap-free, duplicate-free,
    with exactly one terminal transition. On a timeout, the stuck executions' rows and the Redis
    keys are dumped (with `cluster`) so the failure says where the run stopped."""
    try:
        exs = wait_until(
            lambda: (lambda xs: xs if all(x.status in DONE for x in xs) else None)(
                statuses(target, key, ids)
            ),
            timeout,
            f"every execution to end ({why})",
        )
    except AssertionError as exc:
        if cluster is None:
            raise
        raise AssertionError(f"{exc}\n{dump_stuck(cluster, ids)}") from None
    with mintleaf.Client(target, api_key=key) as client:
        for ex in exs:
            assert ex.status == S.SUCCEEDED, f"{why}: {ex.id} {ex.status} {ex.error}"
            assert ex.output.to_dict() == expected(12), f"{why}: {ex.id} output {ex.output.to_dict()}"
            ts: list[Any] = []
            token = ""
            while True:
                page = client.executions.list_transitions(
                    v1.ListTransitionsRequest(execution_id=ex.id, page_size=1000, page_token=token)
                )
                ts += list(page.transitions)
                token = page.next_page_token
                if not token:
                    break
            seqs = [t.sequence for t in ts]
            assert seqs == list(range(1, len(ts) + 1)), f"{why}: {ex.id} sequence gaps/duplicates"
            assert ex.transition_count == len(ts), f"{why}: {ex.id} count {ex.transition_count} != {len(ts)}"
            terminal = [t for t in ts if t.type in TERMINAL]
            assert len(terminal) == 1 and terminal[0].type == v1.TransitionType.FINISH, f"{why}: {ex.id}"
            assert ts[-1].type == v1.TransitionType.FINISH, f"{why}: {ex.id}"
            # each step of the main flow's first loop ran exactly once in the log
            inits = [t for t in ts if t.type == v1.TransitionType.INIT]
            assert len(inits) == 1, f"{why}: {ex.id} has {len(inits)} init transitions"


@pytest.mark.parametrize("group", range(4))
def test_sigkill_at_seeded_random_points(cluster: Cluster, group: int) -> None:
    """5 kills per group, 20 in all; kill k of group g uses seed 1000 + 5g + k."""
    seeds = [1000 + 5 * group + k for k in range(5)]
    proc, target = cluster.spawn(f"g{group}-0")
    key = cluster.make_key()
    ids = start_executions(target, key, 4)
    for k, seed in enumerate(seeds):
        delay = random.Random(seed).uniform(0.05, 0.6)
        time.sleep(delay)  # the kill point itself is what the seed chooses
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc, target = cluster.spawn(f"g{group}-{k + 1}")
    why = f"seeds {seeds} (kill after uniform(0.05, 0.6) s from Random(seed))"
    check_all(target, key, ids, why, cluster=cluster)


@pytest.mark.parametrize(
    "point",
    ["before_commit:40", "after_commit_before_publish:40", "mid_fanout:2", "mid_lease_renewal:2"],
)
def test_crash_at_each_named_point(cluster: Cluster, point: str) -> None:
    # The executions are created through an API-only replica, so no create races the crash.
    _, api = cluster.spawn("api", MINTLEAF_WORKER="false")
    key = cluster.make_key()
    ids = start_executions(api, key, 3, task=HEAVY if point.startswith("mid_lease_renewal") else LONG)
    proc, _ = cluster.spawn("crashy", MINTLEAF_TEST_CRASH_POINT=point)
    code = wait_until(lambda: proc.poll(), 60, f"the crash at {point}")
    assert code == 137, f"{point}: exit code {code}"
    _, target = cluster.spawn("after")
    check_all(target, key, ids, f"crash point {point}", cluster=cluster)


def test_two_replicas_share_the_work(cluster: Cluster) -> None:
    _, a = cluster.spawn("a", MINTLEAF_LOG_LEVEL="DEBUG")
    _, b = cluster.spawn("b", MINTLEAF_LOG_LEVEL="DEBUG")
    key = cluster.make_key()
    ids = start_executions(a, key, 4) + start_executions(b, key, 4)
    check_all(b, key, ids, "two replicas", cluster=cluster)
    took = [out.read_text().count("took ") for out in cluster.outputs]
    assert all(n > 0 for n in took), f"runs taken per replica: {took}"


def test_redis_flushed_mid_run(cluster: Cluster) -> None:
    _, target = cluster.spawn("a")
    _, _ = cluster.spawn("b")
    key = cluster.make_key()
    ids = start_executions(target, key, 4)
    wait_until(lambda: all(x.transition_count > 20 for x in statuses(target, key, ids)), 30, "some progress")
    r = redis.Redis.from_url(cluster.redis_url)
    r.flushdb()
    r.close()
    check_all(target, key, ids, "redis flushed", cluster=cluster)
