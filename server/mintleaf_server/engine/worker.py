"""The worker loop: takes runs from the ready queue, leases them, feeds the step machine its events,
commits each advance fenced by the lease epoch, then carries out the commands.

Design note. One unit of work is a *run* (an execution's own flow, or one branch). A worker that
takes a run reads what happened while nobody held it (a due timer, an answered wait, finished
branches, a cancel request) and turns it into the machine's next event; so every wake-up source
only has to re-queue the run, and a lost wake-up is repaired by the recovery sweep. The commit of
an advance with only transitions is one statement (executions UPDATE fenced by lease_epoch + the
transitions INSERT in one CTE, which also returns a pending cancel request); an advance that also
creates waits, timers or branches adds those rows in the same transaction. Effects run after the
commit, with no database connection held; an advance whose only command is an effect is not
committed at all (a worker that dies replays it from the last committed state and emits the same
request: effects are at-least-once, transitions exactly-once). Redis publishes run off the
critical path (one background publisher, pipelined). A branch's end bumps a Redis counter of its
fan-out; the parent is woken when the counter reaches the total (or at once on a failure or a
`return`), so a 1,000-branch fan-out wakes its parent once, not 1,000 times; a lost counter is
repaired by the sweep, which finds fan-outs with no branch left to run. The branches of one
execution popped together are taken as a batch (leases, claim, and the terminal commits of those
that end in one quiet advance, each fenced by its own epoch, one round trip each); the others go
on alone.

Recovery (at start and every `sweep_interval_s`): one query lists the runs that could progress
now (runnable state, answered wait, overdue timer, finished fan-out); those whose lease has
expired are re-queued. A sentinel key tells a flushed Redis apart: then every timer row is put
back in the timer set as well. Rejected: re-queueing every active run on every sweep (work grows
with the number of parked executions), a message per event in a durable inbox table (one more
write per event), and Postgres LISTEN/NOTIFY for wake-ups (a connection per listener).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
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
from mintleaf_server.engine.errors import LeaseLost
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
from mintleaf_server.engine.leases import Lease, Leases
from mintleaf_server.engine.limits import Limits
from mintleaf_server.engine.machine import TERMINAL_STATUSES, Environment, Machine
from mintleaf_server.engine.queue import ReadyQueue, lease_name, member, parse_member
from mintleaf_server.engine.resolve import ExecutionContextError, load_agent
from mintleaf_server.engine.timers import TimerWheel
from mintleaf_server.metrics import EngineStats
from mintleaf_server.store.executions import Q

__all__ = ["CRASH_ENV", "EffectRunner", "Worker", "crash_point", "main_status"]

log = logging.getLogger("mintleaf.engine")

EffectRunner = Callable[[dict[str, Any], Machine], Awaitable[Event]]

CRASH_ENV = "MINTLEAF_TEST_CRASH_POINT"  # test-only: "<point>[:<nth>]" → os._exit at that point
_crash_counts: dict[str, int] = {}
_CRASH_SPEC = os.environ.get(CRASH_ENV, "")


def crash_point(name: str) -> None:
    """A named point of the step cycle where fault tests kill the process (off unless the env var
    is set at start): before_commit, after_commit_before_publish, mid_fanout, mid_lease_renewal."""
    if not _CRASH_SPEC:
        return
    point, _, nth = _CRASH_SPEC.partition(":")
    if point != name:
        return
    _crash_counts[name] = _crash_counts.get(name, 0) + 1
    if _crash_counts[name] >= int(nth or 1):
        os._exit(137)


def main_status(state: dict[str, Any]) -> str:
    status = state["status"]
    if status in TERMINAL_STATUSES:
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


def _groups(items: list[str]) -> list[list[str]]:
    """Popped members in the order taken: the branches of one execution together (a batch), every
    other member alone."""
    out: list[list[str]] = []
    by_execution: dict[str, list[str]] = {}
    for it in items:
        eid, run, _ = parse_member(it)
        if run == "main":
            out.append([it])
            continue
        group = by_execution.get(eid)
        if group is None:
            group = by_execution[eid] = []
            out.append(group)
        group.append(it)
    return out


def _ends_quietly(cmds: list[Command]) -> bool:
    """The branch ended with this one advance and needs nothing but its transitions written and
    its fan-out told: no timer, wait, effect, nested fan-out, failure or `return`."""
    end = cmds[-1] if cmds else None
    return isinstance(end, Finish) and not end.returned and all(isinstance(c, Record) for c in cmds[:-1])


def _branch_result(state: dict[str, Any]) -> dict[str, Any]:
    """A succeeded branch's result row: its output, the keys it `set`, whether it `return`ed."""
    root = state["frames"][0] if state["frames"] else {}
    return {
        "output": state.get("result"),
        "state": root.get("delta", {}),
        "returned": bool(state.get("returned")),
    }


def _record_row(r: Record) -> dict[str, Any]:
    return {
        "type": r.type,
        "step_type": r.step_type,
        "label": r.label,
        "current": r.current,
        "next": r.next,
        "output": r.output,
        "error": r.error,
        "metadata": r.metadata,
    }


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class _Unit:
    eid: uuid.UUID
    run: str
    dev: uuid.UUID
    epoch: int
    state: dict[str, Any] | None
    machine: Machine
    row: dict[str, Any] = field(default_factory=dict)
    cancel_reason: str | None = None
    fired: str | None = None  # the timer whose TimerFired this run is about to commit
    promoted: list[str] = field(default_factory=list)  # branches the last commit made ready

    @property
    def member(self) -> str:
        return member(str(self.eid), self.run, str(self.dev))


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
        self.concurrency = concurrency
        self.sem = asyncio.Semaphore(concurrency)
        self.sweep_interval_s = sweep_interval_s
        self.batch_branches = True  # off: every branch alone (the benchmark's baseline)
        self.processed = 0  # runs taken by this worker (tests check that replicas share work)
        self.stats = EngineStats()  # metrics: plain counters, exported by mintleaf_server.metrics
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[Any]] = []
        self._stopping = asyncio.Event()
        self._machines: dict[tuple[Any, ...], Machine] = {}
        self._env_data: dict[Any, dict[str, Any]] = {}
        self._outbox: list[tuple[str, int]] = []
        self._outbox_ready = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.recover()
        self._loops = [
            asyncio.create_task(self._consume()),
            asyncio.create_task(self.timers.run(self._stopping)),
            asyncio.create_task(self._sweep()),
            asyncio.create_task(self._publisher()),
        ]

    async def stop(self, grace: float = 10.0) -> None:
        """Drain: stop taking work, let the runs in hand reach their next commit."""
        self._stopping.set()
        for task in self._loops[:3]:
            task.cancel()
        for task in self._loops[:3]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
        for task in self._loops[3:]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._flush_outbox()

    async def recover(self) -> None:
        """Re-queue the runs that can progress and whose lease expired; after a Redis flush also
        put every timer back (the sentinel key is gone only if Redis lost its data)."""
        flushed = bool(await self.redis.set(f"{self.prefix}alive", "1", nx=True))
        async with self.db.connection() as conn:
            rows = await (await conn.execute(Q.RECOVERY_CANDIDATES, {"overdue_s": 1.0})).fetchall()
            timers = await (await conn.execute(Q.ALL_TIMERS)).fetchall() if flushed else []
        runs = {member(str(r["execution_id"]), r["run"], str(r["developer_id"])) for r in rows}
        names = sorted(runs)
        held = await self.leases.held([lease_name(m) for m in names])
        stale = [m for m, h in zip(names, held, strict=True) if not h]
        if stale:  # a run waiting its turn in the ready queue is not lost: only the others count
            scores = await self.redis.zmscore(self.queue.key, stale)
            stale = [m for m, score in zip(stale, scores, strict=True) if score is None]
        await self.queue.push(*stale)
        self.stats.recovered += len(stale)  # metrics
        if timers:
            await self.timers.schedule_many(
                [
                    (member(str(t["execution_id"]), t["run"], str(t["developer_id"])), t["id"], int(t["at"]))
                    for t in timers
                ]
            )
        if stale or timers:
            log.info("recovery: re-queued %d runs, rescheduled %d timers", len(stale), len(timers))

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
            items = [item]
            free = min(self.sem._value, 32)
            if free > 0:
                with contextlib.suppress(Exception):
                    items += await self.queue.pop_more(free)
            for _ in items[1:]:
                await self.sem.acquire()
            for group in _groups(items) if self.batch_branches else [[it] for it in items]:
                if len(group) == 1:
                    task = asyncio.create_task(self._process(group[0]))
                else:
                    task = asyncio.create_task(self._process_batch(group))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _process(self, item: str) -> None:
        taken = 0  # metrics: runs held by this task
        try:
            eid, run, dev = parse_member(item)
            name = f"{eid}|{run}"
            lease = await self.leases.acquire(name)
            if lease is None:
                return  # held: the holder sees our dirty mark when it releases, and looks again
            self.processed += 1
            taken = 1  # metrics
            self.stats.in_progress += 1
            if run == "main":
                self.stats.runs_main += 1
            else:
                self.stats.runs_branch += 1
            log.debug("took %s", item)
            lease.keep()
            again = False
            try:
                await self.process(uuid.UUID(eid), run, uuid.UUID(dev) if dev else None)
            except LeaseLost as exc:
                log.info("%s", exc)
                self.stats.lease_lost += 1  # metrics
            finally:
                again = await lease.release()
            if again:
                await self.queue.push(item)
        except Exception:
            log.exception("processing %s failed", item)
        finally:
            self.stats.in_progress -= taken  # metrics
            self.sem.release()

    async def _process_batch(self, items: list[str]) -> None:
        """Several branches of one execution popped together (a fan-out's burst): their leases
        taken, their rows claimed and, for those that end in one advance (trivial branches), their
        terminal commits made in one round trip each; any other branch goes on alone as usual."""
        taken = 0  # metrics: runs held by this task (those going on alone included)
        try:
            parsed = [parse_member(it) for it in items]
            eid = uuid.UUID(parsed[0][0])
            dev = uuid.UUID(parsed[0][2]) if parsed[0][2] else None
            names = [f"{e}|{r}" for e, r, _ in parsed]
            leases = await self.leases.acquire_many(names)
            held = {r: lease for (_, r, _), lease in zip(parsed, leases, strict=True) if lease is not None}
            if not held:
                return
            self.processed += len(held)
            taken = len(held)  # metrics
            self.stats.in_progress += taken
            self.stats.runs_branch += taken
            quick: dict[str, list[tuple[_Unit, dict[str, Any], list[Command]]]] = {}
            slow: list[_Unit] = []
            going_on: set[str] = set()  # runs whose lease passes to `_go_on`
            try:
                async with self.db.connection() as conn:
                    rows = await (
                        await conn.execute(Q.CLAIM_BRANCHES, {"eid": eid, "runs": list(held), "dev": dev})
                    ).fetchall()
                    for row in rows:
                        if row["execution_status"] not in ("starting", "running", "awaiting_input"):
                            continue
                        machine = await self._machine(
                            conn, row["developer_id"], row, row["task_id"], row["task_version"]
                        )
                        unit = _Unit(
                            eid,
                            row["key"],
                            row["developer_id"],
                            row["lease_epoch"],
                            row["state"],
                            machine,
                            dict(row),
                        )
                        if unit.state is not None:
                            slow.append(unit)
                            continue
                        event = StartBranch(shared=row["shared"], branch=row["branch"], now_ms=_now_ms())
                        new, cmds = machine.advance(None, event)
                        if _ends_quietly(cmds):
                            quick.setdefault(row["fanout_id"], []).append((unit, new, cmds))
                        else:
                            slow.append(unit)
                    for group in quick.values():
                        await self._commit_batch(conn, group)
                going_on = {u.run for u in slow}
            finally:
                batch = [lease for run, lease in held.items() if run not in going_on]
                again = await self.leases.release_many(batch)
                await self.queue.push(
                    *(
                        member(str(eid), lease.name.partition("|")[2], parsed[0][2])
                        for lease, a in zip(batch, again, strict=True)
                        if a
                    )
                )
            if slow:
                await asyncio.gather(*(self._go_on(unit, held[unit.run]) for unit in slow))
        except Exception:
            log.exception("processing %d branches of %s failed", len(items), items[0])
        finally:
            self.stats.in_progress -= taken  # metrics
            for _ in items:
                self.sem.release()

    async def _go_on(self, unit: _Unit, lease: Lease) -> None:
        """A claimed branch of a batch that needs more than one quiet advance: on its own."""
        lease.keep()
        again = False
        try:
            await self.process(unit.eid, unit.run, unit.dev, claimed=unit)
        except LeaseLost as exc:
            log.info("%s", exc)
            self.stats.lease_lost += 1  # metrics
        except Exception:
            log.exception("processing %s failed", unit.member)
        finally:
            again = await lease.release()
        if again:
            await self.queue.push(unit.member)

    async def _commit_batch(
        self, conn: Any, group: list[tuple[_Unit, dict[str, Any], list[Command]]]
    ) -> None:
        """One statement for the terminal commits of several branches of one fan-out."""
        first = group[0][0]
        items: list[dict[str, Any]] = [
            {
                "key": unit.run,
                "epoch": unit.epoch,
                "state": new,
                "result": _branch_result(new),
                "rows": [_record_row(c) for c in cmds if isinstance(c, Record)],
            }
            for unit, new, cmds in group
        ]
        crash_point("before_commit")
        got = await (
            await conn.execute(
                Q.COMMIT_BRANCHES,
                {"items": Jsonb(items), "eid": first.eid, "dev": first.dev, "fanout": first.row["fanout_id"]},
            )
        ).fetchone()
        crash_point("after_commit_before_publish")
        committed = set(got["committed"] or []) if got is not None else set()
        lost = len(group) - len(committed)
        self.stats.lease_lost += lost  # metrics
        if lost:
            log.info("execution %s: %d branches lost their lease epoch before the commit", first.eid, lost)
        if not committed:
            return
        n = sum(len(item["rows"]) for item in items if item["key"] in committed)
        self.stats.commits_batch += 1  # metrics
        self.stats.transitions += n
        self._outbox.append((f"{self.prefix}tx:{first.eid}", n))
        self._outbox_ready.set()
        await self.queue.push(*await self._branches_ended(first, list(got["promoted"] or []), len(committed)))

    # -- one run -------------------------------------------------------------------------------

    async def _machine(
        self, conn: Any, dev: uuid.UUID, row: dict[str, Any], task_id: Any, version: int
    ) -> Machine:
        """The machine of the run's task version, with the agent and the agent tool names the
        execution resolved at its start (`row["ctx"]`, stored by CreateExecution); an execution
        created before that was stored reads the agent as it is now."""
        ctx = row.get("ctx") or {}
        names = ctx.get("tools")
        key = (dev, task_id, version, None if names is None else tuple(names))
        base = self._machines.get(key)
        if base is None:
            tv = await (
                await conn.execute(
                    "SELECT definition FROM task_versions WHERE developer_id = %s AND task_id = %s AND version = %s",
                    (dev, task_id, version),
                )
            ).fetchone()
            agent = None
            if names is None:  # an execution from before contexts: the agent as it is now
                task = await (
                    await conn.execute(
                        "SELECT agent_id FROM tasks WHERE developer_id = %s AND id = %s", (dev, task_id)
                    )
                ).fetchone()
                names = []
                if task is not None:
                    with contextlib.suppress(ExecutionContextError):
                        agent, tools = await load_agent(conn, dev, task["agent_id"])
                        names = [t["name"] for t in tools]
            # What `agent` and `task` mean in expressions and templates ({{agent.name}}).
            self._env_data[key] = {
                "agent": None if agent is None else {**agent, "id": str(agent["id"])},
                "task": {
                    "id": str(task_id),
                    "version": version,
                    "name": (tv or {}).get("definition", {}).get("name", ""),
                },
            }
            base = Machine(parse_task(tv["definition"], agent_tools=names), limits=self.limits)
            if len(self._machines) > 4096:  # a bound, not an LRU: parsing again is cheap enough
                self._machines.clear()
                self._env_data = {key: self._env_data[key]}
            self._machines[key] = base
        extra = self._env_data.get(key, {})
        env = Environment(
            agent=ctx.get("agent") or extra.get("agent"),
            task=extra.get("task") or {},
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

    async def process(
        self, eid: uuid.UUID, run: str, dev: uuid.UUID | None = None, *, claimed: _Unit | None = None
    ) -> None:
        """Take run `run` of execution `eid` as far as it goes now (`claimed`: already claimed by a
        batch). A database connection is held while steps advance and commit, and given back while
        an effect runs."""
        async with self.db.connection() as conn:
            unit = claimed if claimed is not None else await self._claim(conn, eid, run, dev)
            if unit is None:
                return
            event = await self._first_event(conn, unit)
            effect = await self._advance(conn, unit, event)
        while effect is not None:
            event = await self._run_effect(unit, effect)
            if unit.run == "main":
                async with self.db.connection() as conn:
                    row = await (
                        await conn.execute(
                            "SELECT cancel_reason FROM executions WHERE developer_id = %s AND id = %s",
                            (unit.dev, unit.eid),
                        )
                    ).fetchone()
                if row is not None and row["cancel_reason"] is not None:
                    event = Cancel(reason=row["cancel_reason"], now_ms=_now_ms())
            async with self.db.connection() as conn:
                effect = await self._advance(conn, unit, event)

    async def _advance(self, conn: Any, unit: _Unit, event: Event | None) -> RunEffect | None:
        """Feed the machine events and commit each advance until the run parks or needs an effect
        (returned, to run with no connection held)."""
        while event is not None:
            new, cmds = unit.machine.advance(unit.state, event)
            if not cmds:
                return None
            await self._commit(conn, unit, new, cmds)
            unit.state = new
            event, effect = await self._after(conn, unit, cmds)
            if effect is not None:
                return effect
        return None

    async def _claim(self, conn: Any, eid: uuid.UUID, run: str, dev: uuid.UUID | None) -> _Unit | None:
        if run == "main":
            if dev is not None:
                main = await (await conn.execute(Q.CLAIM_MAIN, (dev, eid))).fetchone()
            else:
                main = await (await conn.execute(Q.CLAIM_MAIN_BY_ID, (eid,))).fetchone()
            if main is None:
                return None
            machine = await self._machine(
                conn, main["developer_id"], main, main["task_id"], main["task_version"]
            )
            unit = _Unit(eid, run, main["developer_id"], main["lease_epoch"], main["state"], machine, main)
            unit.cancel_reason = main["cancel_reason"]
            return unit
        row = await (await conn.execute(Q.CLAIM_BRANCHES, {"eid": eid, "runs": [run], "dev": dev})).fetchone()
        if row is None or row["execution_status"] not in ("starting", "running", "awaiting_input"):
            return None
        machine = await self._machine(conn, row["developer_id"], row, row["task_id"], row["task_version"])
        return _Unit(eid, run, row["developer_id"], row["lease_epoch"], row["state"], machine, dict(row))

    async def _first_event(self, conn: Any, unit: _Unit) -> Event | None:
        now = _now_ms()
        if unit.run == "main" and unit.cancel_reason is not None:
            if unit.state is None:
                return Start(input=unit.row["input"], now_ms=now)  # then the cancel, next round
            return Cancel(reason=unit.cancel_reason, now_ms=now)
        if unit.state is None:
            if unit.run == "main":
                return Start(input=unit.row["input"], now_ms=now)
            return StartBranch(shared=unit.row["shared"], branch=unit.row["branch"], now_ms=now)
        state = unit.state
        pending = state.get("pending")
        deadline = state.get("deadline")
        wanted = {t for t in ((deadline or {}).get("timer"), (pending or {}).get("timer")) if t}
        due: set[str] = set()
        if wanted or pending is None or pending["kind"] in ("sleep", "retry", "wait"):
            rows = await (await conn.execute(Q.DUE_TIMER_IDS, (unit.eid, unit.run))).fetchall()
            due = {r["id"] for r in rows}
            stale = sorted(due - wanted)
            if stale:  # fired and consumed before a crash, or left by an ended wait: garbage
                await conn.execute(Q.DELETE_TIMERS, (unit.eid, stale))
        if deadline and deadline["timer"] in due:
            unit.fired = deadline["timer"]
            return TimerFired(timer_id=deadline["timer"], now_ms=now)
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
            unit.fired = pending["timer"]
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
        rows = [_record_row(r) for r in records]
        crash_point("before_commit")
        if side:
            async with conn.transaction():
                await self._fenced(conn, unit, new, rows)
                await self._side_rows(conn, unit, side)
        else:
            await self._fenced(conn, unit, new, rows)
        self.stats.commits_single += 1  # metrics
        self.stats.transitions += len(rows)
        crash_point("after_commit_before_publish")
        if unit.fired is not None:
            fired, unit.fired = unit.fired, None
            await conn.execute(Q.DELETE_TIMERS, (unit.eid, [fired]))
        if records:
            self._outbox.append((f"{self.prefix}tx:{unit.eid}", len(records)))
            self._outbox_ready.set()

    async def _fenced(self, conn: Any, unit: _Unit, new: dict[str, Any], rows: list[dict[str, Any]]) -> None:
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
            unit.cancel_reason = got["cancel_reason"]
            return
        status = new["status"]
        result: Any = None
        if status == "succeeded":
            result = _branch_result(new)
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
            "ended": branch_status != "ready",
            "fanout": unit.row["fanout_id"],
        }
        got = await (await conn.execute(Q.COMMIT_BRANCH, params)).fetchone()
        if got is None or got["key"] is None:
            raise LeaseLost(f"branch {unit.run}: lease epoch {unit.epoch} is stale")
        unit.promoted = list(got["promoted"] or [])

    async def _side_rows(self, conn: Any, unit: _Unit, side: Sequence[Command]) -> None:
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

    # -- publishing (off the critical path) ----------------------------------------------------

    async def _publisher(self) -> None:
        """Sends the pending notifications in one pipeline whenever there are any: a burst of
        commits costs one Redis round trip. A lost publish only delays a stream (it re-reads
        PostgreSQL at least once a second)."""
        while True:
            await self._outbox_ready.wait()
            self._outbox_ready.clear()
            await self._flush_outbox()

    async def _flush_outbox(self) -> None:
        batch, self._outbox = self._outbox, []
        if not batch:
            return
        merged: dict[str, int] = {}
        for channel, n in batch:
            merged[channel] = merged.get(channel, 0) + n
        with contextlib.suppress(Exception):
            pipe = self.redis.pipeline(transaction=False)
            for channel, n in merged.items():
                pipe.publish(channel, json.dumps({"n": n}))
            await pipe.execute()

    # -- after the commit ----------------------------------------------------------------------

    async def _after(
        self, conn: Any, unit: _Unit, cmds: list[Command]
    ) -> tuple[Event | None, RunEffect | None]:
        """Carry out the commands; return the next event for this run, or the effect to run."""
        next_event: Event | None = None
        wake: list[str] = []
        timers: list[tuple[str, str, int]] = []
        for cmd in cmds:
            if isinstance(cmd, StartBranches):
                wake += [
                    member(str(unit.eid), b["key"], str(unit.dev)) for b in cmd.branches[: cmd.parallelism]
                ]
            elif isinstance(cmd, StartTimer):
                timers.append((unit.member, cmd.timer_id, cmd.fire_at_ms))
            elif isinstance(cmd, ContinueLater):
                next_event = Continue(now_ms=_now_ms())
            elif isinstance(cmd, Finish | Fail | Cancelled) and unit.run != "main":
                wake += await self._branch_ended(conn, unit, cmd)
            elif isinstance(cmd, Cancelled | Fail | Finish) and unit.run == "main":
                await conn.execute("DELETE FROM timers WHERE execution_id = %s", (unit.eid,))
                if unit.state is not None:  # metrics
                    self.stats.finish(main_status(unit.state))
        await self.timers.schedule_many(timers)
        await self.queue.push(*wake)
        effect = next((c for c in cmds if isinstance(c, RunEffect)), None)
        if (
            unit.run == "main"
            and unit.cancel_reason is not None
            and unit.state is not None
            and unit.state["status"] not in TERMINAL_STATUSES
        ):
            return Cancel(reason=unit.cancel_reason, now_ms=_now_ms()), None
        if effect is not None:
            return None, effect
        return next_event, None

    async def _run_effect(self, unit: _Unit, cmd: RunEffect) -> Event:
        timeout = max(0.0, cmd.deadline_ms / 1000 - time.time())
        started = time.perf_counter()  # metrics
        try:
            event = await asyncio.wait_for(self.effects(cmd.request, unit.machine), timeout=timeout)
        except TimeoutError:
            event = EffectFailed(
                effect_id=cmd.effect_id,
                error={"kind": "timeout", "message": "the step timed out", "retryable": True},
            )
        except Exception as exc:
            event = EffectFailed(
                effect_id=cmd.effect_id,
                error={"kind": type(exc).__name__, "message": str(exc), "retryable": False},
            )
        self.stats.effect(cmd.request.get("kind"), event, time.perf_counter() - started)  # metrics
        # The machine's clock is its events' `now_ms`: an answer stamped 0 would put retry
        # backoffs and wait deadlines in 1970.
        if getattr(event, "now_ms", None) == 0:
            event = dataclasses.replace(event, now_ms=_now_ms())
        return event

    async def _branch_ended(self, conn: Any, unit: _Unit, cmd: Command) -> list[str]:
        """The sliding window moves on; the parent is woken when its fan-out is decided."""
        decisive = not isinstance(cmd, Finish) or cmd.returned
        if decisive:
            out = [member(str(unit.eid), key, str(unit.dev)) for key in unit.promoted]
            return [*out, member(str(unit.eid), unit.row["parent_run"], str(unit.dev))]
        return await self._branches_ended(unit, unit.promoted, 1)

    async def _branches_ended(self, unit: _Unit, promoted: list[str], n: int) -> list[str]:
        """`n` branches of `unit`'s fan-out ended without deciding it: in one round trip, queue the
        branches the window promoted and bump the fan-out's counter. Returns the parent to wake
        when the counter reaches the total, else nothing."""
        members = [member(str(unit.eid), key, str(unit.dev)) for key in promoted]
        key = f"{self.prefix}fo:{unit.eid}:{unit.row['fanout_id']}"
        pipe = self.redis.pipeline(transaction=False)
        if members:
            pipe.zadd(self.queue.key, dict.fromkeys(members, time.time()), nx=True)
        pipe.incrby(key, n)
        pipe.expire(key, 86_400)
        got = await pipe.execute()
        if int(got[-2]) >= int(unit.row["total"]):
            return [member(str(unit.eid), unit.row["parent_run"], str(unit.dev))]
        return []
