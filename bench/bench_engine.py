"""Execution engine benchmark: the worker loop against the fenced-commit floor, on one embedded
PostgreSQL + Redis started in a temporary directory, everything on uvloop (as `serve` runs).

Prints, in one run:
- the fenced-commit floor: the fastest durable fenced commit on the same database, one
  autocommit statement whose CTE does the conditional UPDATE and the transition INSERT;
- time per trivial sequential step through the worker loop, with one step per commit (the strict
  figure, `steps_per_advance=1`) and with the default batching (16 pure steps per commit), and
  the ratio of each to the floor;
- trivial steps/s across 16 concurrent executions (both modes);
- start -> first step latency (CreateExecution RPC sent -> first step committed), p50;
- transition -> stream client latency (commit -> StreamTransitions message received), p50/p99;
- wall time of a 1,000-branch fan-out (foreach, parallelism 100 and 1000), init -> finish, with
  bursts of branches batched (as served) and against every branch taken alone (the baseline).

Usage: python bench/bench_engine.py [--steps 300] [--rounds 5] [--only-fanout] [--profile FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import uvloop

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from mintleaf import Struct, v1  # noqa: E402
from support.harness import ServerThread, private_runtime_dir, start_test_postgres, start_test_redis  # noqa: E402

FLOOR_SETUP = [
    "DROP TABLE IF EXISTS bench_floor_tx, bench_floor_ex",
    "CREATE TABLE bench_floor_ex (id bigint PRIMARY KEY, version bigint, lease_epoch bigint, state jsonb)",
    "CREATE TABLE bench_floor_tx (execution_id bigint, seq bigint, type text, output jsonb,"
    " created_at timestamptz DEFAULT now(), PRIMARY KEY (execution_id, seq))",
    "INSERT INTO bench_floor_ex VALUES (1, 0, 7, '{}')",
]
FLOOR_CTE = (
    "WITH u AS (UPDATE bench_floor_ex SET version = version + 1, state = %s::jsonb WHERE id = 1 AND lease_epoch = 7"
    " RETURNING id, version) INSERT INTO bench_floor_tx (execution_id, seq, type, output)"
    " SELECT id, version, 'step', %s::jsonb FROM u RETURNING seq"
)
STATE = '{"v": 1, "run": "main", "status": "running", "frames": [{"t": "wf", "i": 3, "cur": {"i": 3}}]}'
OUT = '{"i": 3}'


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def floor(db: Any, n: int) -> list[float]:
    async with db.connection() as conn:
        for sql in FLOOR_SETUP:
            await conn.execute(sql)
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            row = await (await conn.execute(FLOOR_CTE, (STATE, OUT))).fetchone()
            out.append(time.perf_counter() - t0)
            assert row is not None
        await conn.execute("DROP TABLE bench_floor_tx, bench_floor_ex")
    return out[50:]


def task(client: Any, doc: dict[str, Any]) -> Any:
    agent = client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="bench")))
    return client.tasks.create_task(
        v1.CreateTaskRequest(agent_id=agent.id, task=v1.Task(definition=Struct.from_dict(doc)))
    )


def create(client: Any, t: Any) -> Any:
    return client.executions.create_execution(
        v1.CreateExecutionRequest(task_id=t.id, execution=v1.Execution())
    )


def wait_done(client: Any, ids: list[str], timeout: float = 300) -> list[Any]:
    end = time.monotonic() + timeout
    while True:
        exs = [client.executions.get_execution(v1.GetExecutionRequest(id=i)) for i in ids]
        if all(e.status == v1.ExecutionStatus.SUCCEEDED for e in exs):
            return exs
        assert not any(e.status in (v1.ExecutionStatus.FAILED, v1.ExecutionStatus.CANCELLED) for e in exs), (
            exs
        )
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def log_of(client: Any, eid: str) -> list[Any]:
    out: list[Any] = []
    token = ""
    while True:
        page = client.executions.list_transitions(
            v1.ListTransitionsRequest(execution_id=eid, page_size=1000, page_token=token)
        )
        out += list(page.transitions)
        token = page.next_page_token
        if not token:
            return out


def ts(t: Any) -> float:
    return float(t.created_at.timestamp())


def steps_doc(n: int) -> dict[str, Any]:
    return {"name": "trivial", "main": [{"evaluate": {"i": f"$ {i}"}} for i in range(n)]}


def per_step(client: Any, t: Any, n: int, rounds: int) -> list[float]:
    """Seconds per step of one execution at a time: (last commit - first commit) / steps between."""
    out = []
    for _ in range(rounds):
        eid = create(client, t).id
        wait_done(client, [eid])
        log = [x for x in log_of(client, eid) if x.type == v1.TransitionType.STEP]
        out.append((ts(log[-1]) - ts(log[0])) / (len(log) - 1))
    return out


def throughput(client: Any, t: Any, n: int, conc: int) -> float:
    ids = [create(client, t).id for _ in range(conc)]
    wait_done(client, ids)
    first, last, steps = float("inf"), 0.0, 0
    for eid in ids:
        log = log_of(client, eid)
        first = min(first, ts(log[0]))
        last = max(last, ts(log[-1]))
        steps += sum(1 for x in log if x.type in (v1.TransitionType.STEP, v1.TransitionType.FINISH))
    return steps / (last - first)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only-fanout", action="store_true", help="just the 1,000-branch fan-out figures")
    ap.add_argument("--profile", help="write a cProfile of the fan-out runs to this file")
    args = ap.parse_args()
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    private_runtime_dir()
    base = Path(tempfile.mkdtemp(prefix="mintleaf-bench-engine-"))
    pg_url, pg = start_test_postgres(base)
    redis_url, rd = start_test_redis(base)
    srv = ServerThread(pg_url, redis_url, base / "app").start()
    worker = srv.app.runtime.extras["worker"]
    key = srv.new_key()
    client = srv.client(key)
    try:
        if args.only_fanout:
            fanout(srv, client, args.profile)
            return
        fl = srv.call(floor(srv.app.runtime.db, 2050))
        floor_med = statistics.median(fl)
        print(
            f"fenced-commit floor (one CTE statement, autocommit): median {floor_med * 1e6:.0f} us, "
            f"p99 {pct(fl, 0.99) * 1e6:.0f} us (n={len(fl)})"
        )

        results: dict[str, Any] = {}
        for mode, spa in (("strict, 1 step per commit", 1), ("default, up to 16 pure steps per commit", 16)):
            worker.limits = dataclasses.replace(worker.limits, steps_per_advance=spa)
            worker._machines.clear()
            t = task(client, steps_doc(args.steps))
            per_step(client, t, args.steps, 1)  # warm-up
            ps = per_step(client, t, args.steps, args.rounds)
            med = statistics.median(ps)
            tp = [throughput(client, t, args.steps, 16) for _ in range(3)]
            results[mode] = (med, tp)
            print(
                f"sequential trivial step [{mode}]: median {med * 1e6:.0f} us/step = "
                f"{med / floor_med:.2f}x floor (rounds {[round(x * 1e6) for x in ps]})"
            )
            print(
                f"throughput [{mode}], 16 concurrent executions x {args.steps + 1} steps: "
                f"median {statistics.median(tp):.0f} steps/s (runs {[round(x) for x in tp]})"
            )
        worker.limits = dataclasses.replace(worker.limits, steps_per_advance=16)
        worker._machines.clear()

        one = task(client, {"name": "one", "main": [{"evaluate": {"i": "$ 1"}}, {"evaluate": {"i": "$ 2"}}]})
        lat = []
        for i in range(60):
            t0 = time.time()
            eid = create(client, one).id
            wait_done(client, [eid])
            first = next(x for x in log_of(client, eid) if x.type == v1.TransitionType.STEP)
            if i >= 10:
                lat.append(ts(first) - t0)
        print(
            f"start -> first step committed: p50 {statistics.median(lat) * 1e3:.2f} ms, "
            f"p99 {pct(lat, 0.99) * 1e3:.2f} ms (n={len(lat)})"
        )

        paced = task(
            client,
            {
                "name": "paced",
                "main": [s for i in range(100) for s in ({"evaluate": {"i": f"$ {i}"}}, {"sleep": 0.01})],
            },
        )
        got: list[float] = []
        for _ in range(2):
            eid = create(client, paced).id
            stream_client = srv.client(key)

            def follow(eid: str = eid, c: Any = stream_client) -> None:
                for x in c.executions.stream_transitions(v1.StreamTransitionsRequest(execution_id=eid)):
                    got.append(time.time() - ts(x))

            th = threading.Thread(target=follow)
            th.start()
            th.join(60)
            stream_client.close()
        live = got[5:]
        print(
            f"transition -> stream client: p50 {statistics.median(live) * 1e3:.2f} ms, "
            f"p99 {pct(live, 0.99) * 1e3:.2f} ms (n={len(live)}; created_at is the commit's start)"
        )

        fanout(srv, client, args.profile)
    finally:
        client.close()
        srv.stop()
        rd.stop()
        pg.stop()


async def _toggle(prof: Any, on: bool) -> None:
    if on:
        prof.enable()
    else:
        prof.disable()


def fanout(srv: Any, client: Any, profile: str | None = None) -> None:
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
    worker = srv.app.runtime.extras["worker"]
    medians: dict[tuple[int, bool], float] = {}
    for par, batched in ((100, False), (100, True), (1000, False), (1000, True)):
        worker.batch_branches = batched
        fan = task(
            client,
            {
                "name": "fan",
                "main": [
                    {
                        "foreach": {
                            "in": "list(range(1000))",
                            "parallelism": par,
                            "do": {"evaluate": {"i": "$ _"}},
                        }
                    }
                ],
            },
        )
        walls = []
        for _ in range(3):
            if prof is not None:
                srv.call(_toggle(prof, True))  # the server's loop thread is the one profiled
            eid = create(client, fan).id
            ex = wait_done(client, [eid])[0]
            if prof is not None:
                srv.call(_toggle(prof, False))
            assert ex.output.to_dict() == [{"i": float(i)} for i in range(1000)]
            log = log_of(client, eid)
            walls.append(ts(log[-1]) - ts(log[0]))
        medians[par, batched] = statistics.median(walls)
        how = "bursts batched" if batched else "baseline: every branch alone"
        ratio = f" = {medians[par, True] / medians[par, False]:.2f}x the baseline" if batched else ""
        print(
            f"1,000-branch fan-out (parallelism {par}, {how}): wall init -> finish median "
            f"{statistics.median(walls) * 1e3:.0f} ms{ratio} (runs {[round(w * 1e3) for w in walls]})"
        )
    worker.batch_branches = True
    if prof is not None and profile:
        prof.dump_stats(profile)


if __name__ == "__main__":
    main()
