"""A pure, in-memory stand-in for the worker loop: it plays the durable side (transition log,
branch records with a sliding window, timers, waits, effects) around the step machine, with a
seeded scheduler and simulated crashes, and checks the machine's invariants as it goes.

A crash drops an advance before its commit (nothing of it is kept) plus the effects in flight
for that run, then delivers Recover, as a worker that takes over an expired lease does.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mintleaf_server.dsl.parse import parse_task
from mintleaf_server.dsl.task import Task
from mintleaf_server.engine import (
    BranchesDone,
    BranchFailed,
    BranchReturned,
    Cancel,
    CancelBranches,
    CancelEffect,
    Cancelled,
    CancelTimer,
    CloseWait,
    Command,
    Continue,
    ContinueLater,
    EffectDone,
    EffectFailed,
    EffectSuspended,
    Environment,
    Event,
    Fail,
    Finish,
    Limits,
    Machine,
    OpenWait,
    Record,
    Recover,
    Resume,
    RunEffect,
    Start,
    StartBranch,
    StartBranches,
    StartTimer,
    TimerFired,
    to_json,
)

EffectFn = Callable[[dict[str, Any]], Event]


def default_effect(request: dict[str, Any]) -> Event:
    eid = request["effect_id"]
    kind = request["kind"]
    if kind == "tool_call":
        return EffectDone(effect_id=eid, output={"tool": request["tool"], "arguments": request["arguments"]})
    if kind == "prompt":
        text = " | ".join(str(m.get("content")) for m in request["messages"])
        return EffectDone(
            effect_id=eid,
            output={
                "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                ]
            },
        )
    if kind == "embed":
        return EffectDone(effect_id=eid, output={"vectors": [[float(len(t))] for t in request["text"]]})
    return EffectDone(effect_id=eid, output={"docs": [], "time": 0.0})


@dataclass
class Fanout:
    parent: str
    shared: dict[str, Any]
    branches: list[dict[str, Any]]
    window: int
    next: int = 0
    running: set[str] = field(default_factory=set)
    results: dict[int, dict[str, Any]] = field(default_factory=dict)
    closed: bool = False  # parent answered (done, failed, returned) or cancelled


class InvariantBroken(AssertionError):
    pass


class Sim:
    def __init__(
        self,
        task: Task | dict[str, Any] | str,
        *,
        effect: EffectFn = default_effect,
        limits: Limits | None = None,
        seed: int = 0,
        shuffle: bool = False,
        crash_rate: float = 0.0,
        env: Environment | None = None,
        fire_wait_timeouts: bool = False,
    ) -> None:
        self.fire_wait_timeouts = fire_wait_timeouts
        self.task = task if isinstance(task, Task) else parse_task(task)
        self.machine = Machine(self.task, env or Environment(execution_id="x1", developer_id="d1"), limits)
        self.effect = effect
        self.rng = random.Random(seed)
        self.shuffle = shuffle
        self.crash_rate = crash_rate
        self.now = 1_000_000
        self.log: list[dict[str, Any]] = []
        self.commands: list[dict[str, Any]] = []
        self.runs: dict[str, dict[str, Any]] = {}
        self.ready: list[tuple[str, Event]] = []
        self.inflight: dict[str, tuple[str, dict[str, Any]]] = {}
        self.timers: dict[str, tuple[str, int]] = {}
        self.timer_purpose: dict[str, str] = {}
        self.waits: dict[str, tuple[str, OpenWait]] = {}
        self.fanouts: dict[str, Fanout] = {}
        self.dead: set[str] = set()  # runs stopped by CancelBranches
        self.branch_ends: dict[str, int] = {}
        self.crashes = 0
        self.advances = 0
        self.max_running: dict[str, int] = {}

    # -- driving -------------------------------------------------------------------------------

    def start(self, input_: Any) -> Sim:
        self.ready.append(("main", Start(input=input_, now_ms=self.now)))
        return self

    def run(self, max_rounds: int = 100_000) -> Sim:
        for _ in range(max_rounds):
            if not self.tick():
                return self
        raise InvariantBroken("the simulation did not settle")

    def tick(self) -> bool:
        """One scheduling decision; False when nothing is left to do."""
        if self.ready:
            i = self.rng.randrange(len(self.ready)) if self.shuffle else 0
            run, event = self.ready.pop(i)
            self.deliver(run, event)
            return True
        if self.inflight:
            keys = sorted(self.inflight)
            eid = self.rng.choice(keys) if self.shuffle else keys[0]
            run, request = self.inflight.pop(eid)
            event = self.effect(request)
            self.deliver(run, _with_now(event, self.now))
            return True
        timers = [
            t for t in self.timers if self.fire_wait_timeouts or self.timer_purpose.get(t) != "wait_timeout"
        ]
        if timers:
            tid = min(timers, key=lambda t: (self.timers[t][1], t))
            run, at = self.timers.pop(tid)
            self.now = max(self.now, at)
            self.deliver(run, TimerFired(timer_id=tid, now_ms=self.now))
            return True
        return False

    def resume(self, wait_id: str, value: Any) -> None:
        run, _ = self.waits[wait_id]
        self.ready.append((run, Resume(wait_id=wait_id, input=value, now_ms=self.now)))

    def cancel(self, reason: str = "stop") -> None:
        self.ready.append(("main", Cancel(reason=reason, now_ms=self.now)))

    def deliver(self, run: str, event: Event) -> None:
        if run in self.dead:
            return
        state = self.runs.get(run)
        if state is None and not isinstance(event, Start | StartBranch):
            return
        new, cmds = self.machine.advance(state, event)
        self.advances += 1
        if state is not None and state.get("status") in ("succeeded", "failed", "cancelled") and cmds:
            raise InvariantBroken(f"run {run} emitted commands after it ended: {cmds}")
        if json.loads(json.dumps(new)) != new:
            raise InvariantBroken("the state does not survive a JSON round trip")
        if self.crash_rate and cmds and self.rng.random() < self.crash_rate:
            self.crash(run, event)
            return
        self.runs[run] = new
        for cmd in cmds:
            self.apply(run, cmd)
        if isinstance(event, Recover):
            self._answer_fanout(run)

    def crash(self, run: str, event: Event) -> None:
        """The worker died before committing: the advance is lost; a new worker recovers."""
        self.crashes += 1
        for eid in [e for e, (r, _) in self.inflight.items() if r == run]:
            del self.inflight[eid]
        if run not in self.runs:  # never committed: the start is retried
            self.ready.append((run, event))
            return
        if isinstance(event, Resume | TimerFired | Cancel | BranchesDone | BranchFailed | BranchReturned):
            # durable facts (a timer row, a branch record, an API call retried): delivered again
            self.ready.append((run, event))
        self.ready.append((run, Recover(now_ms=self.now)))

    # -- commands ------------------------------------------------------------------------------

    def apply(self, run: str, cmd: Command) -> None:
        self.commands.append({"run": run, **to_json(cmd)})
        if isinstance(cmd, Record):
            if (
                self.log
                and self.log[-1]["run"] == "main"
                and self.log[-1]["type"] in ("finish", "error", "cancelled")
            ):
                raise InvariantBroken(f"transition after the execution ended: {cmd}")
            self.log.append({"sequence": len(self.log) + 1, "run": run, **to_json(cmd)})
        elif isinstance(cmd, RunEffect):
            self.inflight[cmd.effect_id] = (run, cmd.request)
        elif isinstance(cmd, CancelEffect):
            self.inflight.pop(cmd.effect_id, None)
        elif isinstance(cmd, StartTimer):
            self.timers[cmd.timer_id] = (run, cmd.fire_at_ms)
            self.timer_purpose[cmd.timer_id] = cmd.purpose
        elif isinstance(cmd, CancelTimer):
            self.timers.pop(cmd.timer_id, None)
        elif isinstance(cmd, OpenWait):
            self.waits[cmd.wait_id] = (run, cmd)
        elif isinstance(cmd, CloseWait):
            self.waits.pop(cmd.wait_id, None)
        elif isinstance(cmd, StartBranches):
            if cmd.fanout_id in self.fanouts:
                return
            fo = Fanout(run, cmd.shared, cmd.branches, cmd.parallelism)
            self.fanouts[cmd.fanout_id] = fo
            self._fill_window(cmd.fanout_id)
        elif isinstance(cmd, CancelBranches):
            self._cancel_fanout(cmd.fanout_id)
        elif isinstance(cmd, ContinueLater):
            self.ready.append((run, Continue(now_ms=self.now)))
        elif isinstance(cmd, Finish | Fail | Cancelled):
            self._run_ended(run, cmd)

    def _fill_window(self, fid: str) -> None:
        fo = self.fanouts[fid]
        while not fo.closed and fo.next < len(fo.branches) and len(fo.running) < fo.window:
            branch = fo.branches[fo.next]
            fo.next += 1
            fo.running.add(branch["key"])
            self.ready.append((branch["key"], StartBranch(shared=fo.shared, branch=branch, now_ms=self.now)))
        self.max_running[fid] = max(self.max_running.get(fid, 0), len(fo.running))
        if len(fo.running) > fo.window:
            raise InvariantBroken(f"fan-out {fid} runs {len(fo.running)} branches, window {fo.window}")

    def _cancel_fanout(self, fid: str) -> None:
        fo = self.fanouts.get(fid)
        if fo is None or fo.closed:
            return
        fo.closed = True
        for key in list(fo.running):
            self._kill(key)

    def _kill(self, run: str) -> None:
        """Stop a branch silently (its parent ended): its timers, waits, effects and sub-fan-outs."""
        self.dead.add(run)
        for eid in [e for e, (r, _) in self.inflight.items() if r == run]:
            del self.inflight[eid]
        for tid in [t for t, (r, _) in self.timers.items() if r == run]:
            del self.timers[tid]
        for wid in [w for w, (r, _) in self.waits.items() if r == run]:
            del self.waits[wid]
        self.ready = [(r, e) for r, e in self.ready if r != run]
        for fid, fo in self.fanouts.items():
            if fo.parent == run:
                self._cancel_fanout(fid)

    def _run_ended(self, run: str, cmd: Finish | Fail | Cancelled) -> None:
        state = self.runs[run]
        parent = state["parent"]
        if parent is None:
            return
        self.branch_ends[run] = self.branch_ends.get(run, 0) + 1
        if self.branch_ends[run] > 1:
            raise InvariantBroken(f"branch {run} finished twice")
        fid, index = parent["fanout"], parent["index"]
        fo = self.fanouts[fid]
        fo.running.discard(run)
        if fo.closed:
            return
        if isinstance(cmd, Finish):
            fo.results[index] = {"output": cmd.output, "state": cmd.state, "returned": cmd.returned}
            if cmd.returned:
                fo.closed = True
                self.ready.append(
                    (
                        fo.parent,
                        BranchReturned(
                            fanout_id=fid, index=index, value=cmd.output, state=cmd.state, now_ms=self.now
                        ),
                    )
                )
                for key in list(fo.running):
                    self._kill(key)
                return
            self._fill_window(fid)
            self._answer_fanout(fo.parent)
        elif isinstance(cmd, Fail):
            fo.closed = True
            self.ready.append(
                (fo.parent, BranchFailed(fanout_id=fid, index=index, error=cmd.error, now_ms=self.now))
            )
            for key in list(fo.running):
                self._kill(key)

    def _answer_fanout(self, run: str) -> None:
        """What the worker does for a parent waiting on a fan-out: all done → BranchesDone."""
        state = self.runs.get(run)
        if state is None or state.get("pending") is None or state["pending"]["kind"] != "fanout":
            return
        fid = state["pending"]["fanout"]
        fo = self.fanouts.get(fid)
        if fo is None or len(fo.results) < len(fo.branches):
            return
        results = [
            {"output": fo.results[i]["output"], "state": fo.results[i]["state"]}
            for i in range(len(fo.branches))
        ]
        self.ready.append((run, BranchesDone(fanout_id=fid, results=results, now_ms=self.now)))

    # -- reading -------------------------------------------------------------------------------

    @property
    def main(self) -> dict[str, Any]:
        return self.runs["main"]

    @property
    def status(self) -> str:
        return str(self.main["status"])

    @property
    def output(self) -> Any:
        return self.main["result"]

    def types(self, run: str | None = "main") -> list[str]:
        return [t["type"] for t in self.log if run is None or t["run"] == run]

    def check(self) -> None:
        """Invariants over the whole log once settled."""
        seqs = [t["sequence"] for t in self.log]
        assert seqs == list(range(1, len(seqs) + 1))
        ends = [t for t in self.log if t["run"] == "main" and t["type"] in ("finish", "error", "cancelled")]
        assert len(ends) <= 1, ends
        if ends:
            assert self.log[-1] is ends[0]
        # every branch started finishes exactly once, unless its fan-out was cancelled
        for fid, fo in self.fanouts.items():
            started = [b["key"] for b in fo.branches[: fo.next]]
            for key in started:
                n = self.branch_ends.get(key, 0)
                if key in self.dead:
                    assert n <= 1
                else:
                    assert n == 1, (key, n)
            assert self.max_running.get(fid, 0) <= fo.window
        for t in self.log:
            json.dumps(t)


def _with_now(event: Event, now: int) -> Event:
    if isinstance(event, EffectDone):
        return EffectDone(effect_id=event.effect_id, output=event.output, metadata=event.metadata, now_ms=now)
    if isinstance(event, EffectFailed):
        return EffectFailed(effect_id=event.effect_id, error=event.error, now_ms=now)
    if isinstance(event, EffectSuspended):
        return EffectSuspended(
            effect_id=event.effect_id,
            tool_calls=event.tool_calls,
            resume=event.resume,
            continuation=event.continuation,
            now_ms=now,
        )
    return event


def run_task(doc: dict[str, Any] | str, input_: Any = None, **kwargs: Any) -> Sim:
    sim = Sim(doc, **kwargs).start(input_ if input_ is not None else {}).run()
    sim.check()
    return sim
