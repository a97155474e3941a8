"""The worker loop: takes runs from the ready queue, leases them, feeds the step machine its events,
commits each advance fenced by the lease epoch, then carries out the commands.

Design note. One unit of work is a *run* (an execution's own flow, or one branch). A worker that
takes a run reads what happened while nobody held it (a due timer, an answered wait, finished
branches, a cancel request) and turns it into the machine's next event; so every wake-up source
only has to re-queue the run, and a lost wake-up is repaired by the recovery sweep. The commit of
an advance with only transitions is one statement (executions UPDATE fenced by lease_epoch + the
transitions INSERT in one CTE); an advance that also creates waits, timers or branches adds those
rows in the same transaction. Effects run after the commit; an advance whose only command is an
effect is not committed at all (a worker that dies replays it from the last committed state and
emits the same request: effects are at-least-once, transitions exactly-once). Redis publishes run
off the critical path (a background task). Rejected: a message per event in a durable inbox table
(one more write per event), and Postgres LISTEN/NOTIFY for wake-ups (a connection per listener).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg.types.json import Jsonb

from mintleaf_server.dsl.parse import parse_task
from mintleaf_server.engine.commands import (
    CancelBranches,
    Cancelled,
    CancelTimer,
    CloseWait,
    Command,
    ContinueLater,
    Fail,
    Finish,
    OpenWait,
    Record,
    RunEffect,
    StartBranches,
    StartTimer,
)
from mintleaf_server.engine.events import (
    BranchesDone,
    BranchFailed,
    BranchReturned,
    Cancel,
    Continue,
    EffectFailed,
    Event,
    Recover,
    Resume,
    Start,
    StartBranch,
    TimerFired,
)
from mintleaf_server.engine.leases import Leases
from mintleaf_server.engine.limits import Limits
from mintleaf_server.engine.machine import Environment, Machine
from mintleaf_server.engine.queue import ReadyQueue, member, parse_member
from mintleaf_server.engine.timers import TimerWheel
from mintleaf_server.store.executions import Q

__all__ = ["EffectRunner", "Worker", "crash_point", "main_status"]

log = logging.getLogger("mintleaf.engine")

EffectRunner = Callable[[dict[str, Any], Machine], Awaitable[Event]]

CRASH_ENV = "MINTLEAF_TEST_CRASH_POINT"  # test-only: "<point>[:<nth>]" → os._exit at that point
_crash_counts: dict[str, int] = {}


def crash_point(name: str) -> None:
    """A named point of the step cycle where fault tests kill the process (off unless the env var
    is set): before_commit, after_commit_before_publish, mid_fanout, mid_lease_renewal."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] >= int(nth or 1):
        os._exit(137)


def main_status(state: dict[str, Any]) -> str:
    status = state["status"]
    if status in ("succeeded", "failed", "cancelled"):
        return str(status)
    pending = state.get("pending")
    if pending is not None and pending["kind"] == "wait":
        return "awaiting_input"
    return "running"


async def no_effects(request: dict[str, Any], machine: Machine) -> Event:
    return EffectFailed(
        effect_id=request["effect_id"],
        error={
            "kind": "unavailable",
            "message": f"no executor for {request['kind']} steps",
            "retryable": False,
        },
    )


@dataclass
class _Unit:
    eid: uuid.UUID
    run: str
    dev: uuid.UUID
    epoch: int
    state: dict[str, Any] | None
    machine: Machine
    row: dict[str, Any] = field(default_factory=dict)


class Worker:
    def __init__(
        self,
        db: Any,
        redis: Any,
        *,
        limits: Limits | None = None,
        effects: EffectRunner | None = None,
        concurrency: int = 64,
        lease_ttl_ms: int = 15_000,
        sweep_interval_s: float = 5.0,
        prefix: str = "ml:",
    ) -> None:
        self.db = db
        self.redis = redis
        self.limits = limits or Limits()
        self.effects = effects or no_effects
        self.queue = ReadyQueue(redis, prefix)
        self.leases = Leases(redis, lease_ttl_ms, prefix)
        self.leases.crash_hook = crash_point
        self.timers = TimerWheel(redis, self.queue, prefix)
        self.prefix = prefix
        self.sem = asyncio.Semaphore(concurrency)
        self.sweep_interval_s = sweep_interval_s
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[Any]] = []
        self._stopping = asyncio.Event()
        self._machines: dict[tuple[Any, ...], Machine] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.recover()
        self._loops = [
            asyncio.create_task(self._consume()),
            asyncio.create_task(self.timers.run(self._stopping)),
            asyncio.create_task(self._sweep()),
        ]

    async def stop(self, grace: float = 10.0) -> None:
        """Drain: stop taking work, let the runs in hand reach their next commit."""
        self._stopping.set()
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)

    async def recover(self) -> None:
        """Rebuild Redis from PostgreSQL: every active run is queued, every timer scheduled."""
        async with self.db.connection() as conn:
            executions = await (await conn.execute(Q.ACTIVE_EXECUTIONS)).fetchall()
            branches = await (await conn.execute(Q.READY_BRANCHES)).fetchall()
            timers = await (await conn.execute(Q.DUE_TIMERS)).fetchall()
        await self.queue.push(*(member(str(r["id"])) for r in executions))
        await self.queue.push(*(member(str(r["execution_id"]), r["key"]) for r in branches))
        for t in timers:
            await self.timers.schedule(member(str(t["execution_id"]), t["run"]), t["id"], int(t["at"]))

    async def _sweep(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(self.sweep_interval_s)
            try:
                await self.recover()
            except Exception:
                log.exception("recovery sweep failed")

    async def _consume(self) -> None:
        while not self._stopping.is_set():
            await self.sem.acquire()
            try:
                item = await self.queue.pop(timeout=1.0)
            except Exception:
                self.sem.release()
                log.exception("ready queue unavailable")
                await asyncio.sleep(0.5)
                continue
            if item is None:
                self.sem.release()
                continue
            task = asyncio.create_task(self._process(item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _process(self, item: str) -> None:
        try:
            eid, run = parse_member(item)
            lease = await self.leases.acquire(item)
            if lease is None:
                return  # someone else holds it; they will see what woke us
            lease.keep()
            try:
                await self.process(uuid.UUID(eid), run)
            finally:
                await lease.release()
        except Exception:
            log.exception("processing %s failed", item)
        finally:
            self.sem.release()

    # -- one run -------------------------------------------------------------------------------

    async def _machine(
        self, conn: Any, dev: uuid.UUID, row: dict[str, Any], task_id: Any, version: int
    ) -> Machine:
        key = (dev, task_id, version)
        base = self._machines.get(key)
        if base is None:
            tv = await (
                await conn.execute(
                    "SELECT definition FROM task_versions WHERE developer_id = %s AND task_id = %s AND version = %s",
                    (dev, task_id, version),
                )
            ).fetchone()
            task = await (
                await conn.execute(
                    "SELECT agent_id FROM tasks WHERE developer_id = %s AND id = %s", (dev, task_id)
                )
            ).fetchone()
            names: list[str] = []
            if task is not None:
                rows = await (
                    await conn.execute(
                        "SELECT name FROM tools WHERE developer_id = %s AND agent_id = %s",
                        (dev, task["agent_id"]),
                    )
                ).fetchall()
                names = [r["name"] for r in rows]
            base = Machine(parse_task(tv["definition"], agent_tools=names), limits=self.limits)
            self._machines[key] = base
        env = Environment(
            execution_id=str(row["id"]),
            developer_id=str(dev),
            execution={
                "id": str(row["id"]),
                "task_id": str(task_id),
                "input": row["input"],
                "metadata": row["metadata"],
            },
        )
        return base.with_env(env)

    async def process(self, eid: uuid.UUID, run: str) -> None:
        async with self.db.connection() as conn:
            unit = await self._claim(conn, eid, run)
            if unit is None:
                return
            event = await self._first_event(conn, unit)
            while event is not None:
                new, cmds = unit.machine.advance(unit.state, event)
                if not cmds:
                    return
                await self._commit(conn, unit, new, cmds)
                unit.state = new
                event = await self._after(conn, unit, cmds)

    async def _claim(self, conn: Any, eid: uuid.UUID, run: str) -> _Unit | None:
        main = await (await conn.execute(Q.CLAIM_MAIN, (eid,))).fetchone() if run == "main" else None
        if run == "main":
            if main is None:
                return None
            machine = await self._machine(
                conn, main["developer_id"], main, main["task_id"], main["task_version"]
            )
            return _Unit(eid, run, main["developer_id"], main["lease_epoch"], main["state"], machine, main)
        row = await (await conn.execute(Q.CLAIM_BRANCH, (eid, run))).fetchone()
        if row is None:
            return None
        ex = await (
            await conn.execute(
                "SELECT developer_id, id, task_id, task_version, input, metadata, status FROM executions WHERE id = %s",
                (eid,),
            )
        ).fetchone()
        if ex is None or ex["status"] not in ("starting", "running", "awaiting_input"):
            return None
        machine = await self._machine(conn, ex["developer_id"], ex, ex["task_id"], ex["task_version"])
        return _Unit(eid, run, ex["developer_id"], row["lease_epoch"], row["state"], machine, dict(row))

    async def _first_event(self, conn: Any, unit: _Unit) -> Event | None:
        now = int(time.time() * 1000)
        if unit.run == "main" and unit.row.get("cancel_reason") is not None:
            if unit.state is None:
                return Start(input=unit.row["input"], now_ms=now)  # then the cancel, next round
            return Cancel(reason=unit.row["cancel_reason"], now_ms=now)
        if unit.state is None:
            if unit.run == "main":
                return Start(input=unit.row["input"], now_ms=now)
            fo = await (
                await conn.execute(
                    "SELECT shared FROM fanouts WHERE execution_id = %s AND id = %s",
                    (unit.eid, unit.row["fanout_id"]),
                )
            ).fetchone()
            return StartBranch(shared=fo["shared"], branch=unit.row["branch"], now_ms=now)
        state = unit.state
        deadline = state.get("deadline")
        due = {
            r["id"]
            for r in await (
                await conn.execute(
                    "SELECT id FROM timers WHERE execution_id = %s AND run = %s AND fire_at <= now()",
                    (unit.eid, unit.run),
                )
            ).fetchall()
        }
        if deadline and deadline["timer"] in due:
            return TimerFired(timer_id=deadline["timer"], now_ms=now)
        pending = state.get("pending")
        if pending is None:
            return None
        kind = pending["kind"]
        if kind in ("continue", "effect"):
            return Recover(now_ms=now)
        if kind == "wait":
            wait = await (
                await conn.execute(
                    "SELECT input FROM waits WHERE execution_id = %s AND id = %s AND status = 'answered'",
                    (unit.eid, pending["wait"]),
                )
            ).fetchone()
            if wait is not None:
                return Resume(wait_id=pending["wait"], input=wait["input"], now_ms=now)
        if pending.get("timer") in due:
            return TimerFired(timer_id=pending["timer"], now_ms=now)
        if kind == "fanout":
            return await self._fanout_event(conn, unit.eid, pending["fanout"], now)
        return None

    async def _fanout_event(self, conn: Any, eid: uuid.UUID, fanout: str, now: int) -> Event | None:
        rows = await (await conn.execute(Q.FANOUT_STATE, (eid, fanout))).fetchall()
        for r in rows:
            if r["status"] == "failed":
                return BranchFailed(fanout_id=fanout, index=r["idx"], error=r["result"] or {}, now_ms=now)
            if r["status"] == "succeeded" and (r["result"] or {}).get("returned"):
                res = r["result"]
                return BranchReturned(
                    fanout_id=fanout,
                    index=r["idx"],
                    value=res.get("output"),
                    state=res.get("state") or {},
                    now_ms=now,
                )
        if rows and all(r["status"] == "succeeded" for r in rows):
            results = [
                {"output": r["result"].get("output"), "state": r["result"].get("state") or {}} for r in rows
            ]
            return BranchesDone(fanout_id=fanout, results=results, now_ms=now)
        return None

    # -- commit --------------------------------------------------------------------------------

    async def _commit(self, conn: Any, unit: _Unit, new: dict[str, Any], cmds: list[Command]) -> None:
        records = [c for c in cmds if isinstance(c, Record)]
        side = [
            c
            for c in cmds
            if isinstance(c, StartTimer | CancelTimer | OpenWait | CloseWait | StartBranches | CancelBranches)
        ]
        if not records and not side and all(isinstance(c, RunEffect) for c in cmds):
            return  # replayable from the committed state: no write before an effect
        rows = [
            {
                "type": r.type,
                "step_type": r.step_type,
                "label": r.label,
                "current": r.current,
                "next": r.next,
                "output": r.output,
                "error": r.error,
                "metadata": r.metadata,
            }
            for r in records
        ]
        crash_point("before_commit")
        if side:
            async with conn.transaction():
                await self._fenced(conn, unit, new, rows)
                await self._side_rows(conn, unit, side)
        else:
            await self._fenced(conn, unit, new, rows)
        crash_point("after_commit_before_publish")
        if records:
            task = asyncio.create_task(self._publish(unit.eid, len(records)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _fenced(self, conn: Any, unit: _Unit, new: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        from mintleaf_server.engine.errors import LeaseLost

        if unit.run == "main":
            status = main_status(new)
            params = {
                "state": Jsonb(new),
                "status": status,
                "output": Jsonb(new.get("result")) if status == "succeeded" else None,
                "error": (new.get("error") or {}).get("error") if status in ("failed", "cancelled") else None,
                "n": len(rows),
                "dev": unit.dev,
                "eid": unit.eid,
                "epoch": unit.epoch,
                "run": unit.run,
                "rows": Jsonb(rows),
            }
            got = await (await conn.execute(Q.COMMIT_MAIN, params)).fetchone()
            if got is None or got["base"] is None:
                raise LeaseLost(f"execution {unit.eid}: lease epoch {unit.epoch} is stale")
            return
        status = new["status"]
        result: Any = None
        if status == "succeeded":
            root = new["frames"][0] if new["frames"] else {}
            result = {
                "output": new.get("result"),
                "state": root.get("delta", {}),
                "returned": bool(new.get("returned")),
            }
        elif status in ("failed", "cancelled"):
            result = new.get("error") or {}
        branch_status = {"succeeded": "succeeded", "failed": "failed", "cancelled": "cancelled"}.get(
            status, "ready"
        )
        params = {
            "state": Jsonb(new),
            "status": branch_status,
            "result": Jsonb(result),
            "n": len(rows),
            "dev": unit.dev,
            "eid": unit.eid,
            "epoch": unit.epoch,
            "run": unit.run,
            "rows": Jsonb(rows),
        }
        got = await (await conn.execute(Q.COMMIT_BRANCH, params)).fetchone()
        if got is None or got["key"] is None:
            raise LeaseLost(f"branch {unit.run}: lease epoch {unit.epoch} is stale")

    async def _side_rows(self, conn: Any, unit: _Unit, side: list[Command]) -> None:
        for cmd in side:
            if isinstance(cmd, StartTimer):
                await conn.execute(
                    Q.UPSERT_TIMER, (unit.eid, cmd.timer_id, unit.run, cmd.purpose, cmd.fire_at_ms)
                )
            elif isinstance(cmd, CancelTimer):
                await conn.execute(Q.DELETE_TIMER, (unit.eid, cmd.timer_id))
            elif isinstance(cmd, OpenWait):
                await conn.execute(
                    Q.INSERT_WAIT,
                    (
                        unit.eid,
                        cmd.wait_id,
                        unit.dev,
                        unit.run,
                        cmd.kind,
                        Jsonb(cmd.info),
                        Jsonb(cmd.tool_calls),
                        Jsonb(cmd.at),
                    ),
                )
            elif isinstance(cmd, CloseWait):
                await conn.execute(Q.CLOSE_WAIT, (unit.eid, cmd.wait_id))
            elif isinstance(cmd, StartBranches):
                await conn.execute(
                    Q.INSERT_FANOUT,
                    (
                        unit.eid,
                        cmd.fanout_id,
                        unit.run,
                        cmd.parallelism,
                        len(cmd.branches),
                        Jsonb(cmd.shared),
                    ),
                )
                crash_point("mid_fanout")
                await conn.execute(
                    Q.INSERT_BRANCHES,
                    {
                        "eid": unit.eid,
                        "fanout": cmd.fanout_id,
                        "window": cmd.parallelism,
                        "branches": Jsonb(cmd.branches),
                    },
                )
            elif isinstance(cmd, CancelBranches):
                await conn.execute(Q.CANCEL_FANOUT, {"eid": unit.eid, "fanout": cmd.fanout_id})

    async def _publish(self, eid: uuid.UUID, n: int) -> None:
        with contextlib.suppress(Exception):
            await self.redis.publish(f"{self.prefix}tx:{eid}", json.dumps({"n": n}))

    # -- after the commit ----------------------------------------------------------------------

    async def _after(self, conn: Any, unit: _Unit, cmds: list[Command]) -> Event | None:
        """Carry out the commands; return the next event for this run, if any."""
        next_event: Event | None = None
        wake: list[str] = []
        for cmd in cmds:
            if isinstance(cmd, StartBranches):
                wake += [member(str(unit.eid), b["key"]) for b in cmd.branches[: cmd.parallelism]]
            elif isinstance(cmd, StartTimer):
                await self.timers.schedule(member(str(unit.eid), unit.run), cmd.timer_id, cmd.fire_at_ms)
            elif isinstance(cmd, ContinueLater):
                next_event = Continue(now_ms=int(time.time() * 1000))
            elif isinstance(cmd, Finish | Fail | Cancelled) and unit.run != "main":
                wake += await self._branch_ended(conn, unit)
            elif isinstance(cmd, Cancelled | Fail | Finish) and unit.run == "main":
                await conn.execute("DELETE FROM timers WHERE execution_id = %s", (unit.eid,))
        if (
            unit.state is not None
            and unit.state.get("status") == "pending"
            and (unit.state.get("pending") or {}).get("kind") == "fanout"
        ):
            # branches may all have ended before this commit (tiny fan-outs): look again
            wake.append(member(str(unit.eid), unit.run))
        await self.queue.push(*wake)
        effect = next((c for c in cmds if isinstance(c, RunEffect)), None)
        if effect is not None:
            next_event = await self._run_effect(unit, effect)
        if next_event is None and unit.run == "main":
            row = await (
                await conn.execute("SELECT cancel_reason FROM executions WHERE id = %s", (unit.eid,))
            ).fetchone()
            if (
                row
                and row["cancel_reason"] is not None
                and unit.state
                and unit.state["status"] not in ("succeeded", "failed", "cancelled")
            ):
                next_event = Cancel(reason=row["cancel_reason"], now_ms=int(time.time() * 1000))
        return next_event

    async def _run_effect(self, unit: _Unit, cmd: RunEffect) -> Event:
        timeout = max(0.0, cmd.deadline_ms / 1000 - time.time())
        try:
            return await asyncio.wait_for(self.effects(cmd.request, unit.machine), timeout=timeout)
        except TimeoutError:
            return EffectFailed(
                effect_id=cmd.effect_id,
                error={"kind": "timeout", "message": "the step timed out", "retryable": True},
            )
        except Exception as exc:
            return EffectFailed(
                effect_id=cmd.effect_id,
                error={"kind": type(exc).__name__, "message": str(exc), "retryable": False},
            )

    async def _branch_ended(self, conn: Any, unit: _Unit) -> list[str]:
        """The sliding window moves on, and the parent looks at its fan-out."""
        fanout = unit.row["fanout_id"]
        promoted = await (await conn.execute(Q.PROMOTE_NEXT, (unit.eid, fanout, 1))).fetchall()
        fo = await (
            await conn.execute(
                "SELECT parent_run FROM fanouts WHERE execution_id = %s AND id = %s", (unit.eid, fanout)
            )
        ).fetchone()
        out = [member(str(unit.eid), r["key"]) for r in promoted]
        if fo is not None:
            out.append(member(str(unit.eid), fo["parent_run"]))
        return out
