"""Property tests of the step machine: random tasks, random schedules, random crashes.

Invariants (checked by the simulator on every advance and at the end): sequence numbers are
gap-free; nothing is recorded after the execution's terminal transition; every branch started
finishes exactly once (unless its fan-out was cancelled); never more branches run than the window;
states survive a JSON round trip; commands never follow a run's end. And confluence: whatever the
interleaving of branches and effects and wherever workers crash, each run records the same
transitions and the execution ends with the same output as a plain sequential run.
"""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from mintleaf_server.engine import EffectDone, EffectFailed, Event

from .simulator import Sim

# -- random tasks ----------------------------------------------------------------------------------

LEAVES: list[dict[str, Any]] = [
    {"evaluate": {"v": "$ len(str(_)) % 7"}},
    {"set": {"k": "$ len(str(_))"}},
    {"get": "k"},
    {"log": "n={{ _ }}"},
    {"sleep": {"seconds": 1}},
    {"tool": "echo", "arguments": {"x": "$ str(_)[:12]"}},
    {"yield": {"workflow": "sub", "arguments": "_"}},
    {"evaluate": {"s": "$ state.get('k')"}},
]
RETURN = {"return": {"r": "$ len(str(_))"}}


def bodies(depth: int, in_fanout: bool) -> st.SearchStrategy[list[dict[str, Any]]]:
    return st.lists(step_strategy(depth, in_fanout), min_size=1, max_size=3)


def step_strategy(depth: int, in_fanout: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    leaves = st.sampled_from(LEAVES if in_fanout else [*LEAVES, RETURN])
    if depth <= 0:
        return leaves
    sub = depth - 1
    count = "$ list(range(len(str(_)) % 4))"
    par = st.sampled_from([1, 2, 3])
    containers = st.one_of(
        st.builds(
            lambda t, e: {"if": "$ len(str(_)) % 2 == 0", "then": t, "else": e},
            bodies(sub, in_fanout),
            bodies(sub, in_fanout),
        ),
        st.builds(
            lambda a, b: {
                "switch": [{"case": "$ len(str(_)) % 3 == 0", "then": a}, {"case": "_", "then": b}]
            },
            bodies(sub, in_fanout),
            bodies(sub, in_fanout),
        ),
        par.flatmap(
            lambda p: st.builds(
                lambda body: {"foreach": {"in": count, "do": body, "parallelism": p}},
                bodies(sub, in_fanout or p > 1),
            )
        ),
        par.flatmap(
            lambda p: st.builds(
                lambda body: {
                    "over": count,
                    "map": body,
                    "reduce": "results + [len(str(_))]",
                    "parallelism": p,
                },
                bodies(sub, in_fanout or p > 1),
            )
        ),
        st.builds(lambda a, b: {"parallel": [a, b]}, bodies(sub, True), bodies(sub, True)),
    )
    return st.one_of(leaves, containers)


def make_task(main: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": "random",
        "tools": [{"name": "echo", "type": "function", "function": {"parameters": {}}}],
        "main": main,
        "sub": [{"evaluate": {"s": "$ len(str(_))"}}, {"log": "sub {{ _ }}"}],
    }


def flaky_effect(request: dict[str, Any]) -> Event:
    """Deterministic: some effects fail (retryably) on their first attempt."""
    eid = request["effect_id"]
    if request["attempt"] == 1 and hashlib.sha256(eid.encode()).digest()[0] % 3 == 0:
        return EffectFailed(
            effect_id=eid, error={"kind": "connection", "message": "flaky", "retryable": True}
        )
    return EffectDone(effect_id=eid, output={"echo": request.get("arguments")})


def per_run(sim: Sim) -> dict[str, list[tuple[Any, ...]]]:
    out: dict[str, list[tuple[Any, ...]]] = {}
    for t in sim.log:
        out.setdefault(t["run"], []).append((t["type"], t["current"]["path"], repr(t["output"])))
    return out


PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@PROPERTY_SETTINGS
@given(
    main=st.lists(step_strategy(2), min_size=1, max_size=4),
    seed=st.integers(0, 2**32 - 1),
    crash_rate=st.sampled_from([0.0, 0.1, 0.3]),
    value=st.sampled_from([{"a": 1}, {"abc": [1, 2, 3]}, "xy", 12345]),
)
def test_any_interleaving_and_crashes_give_the_sequential_result(
    main: list[dict[str, Any]], seed: int, crash_rate: float, value: Any
) -> None:
    doc = make_task(main)
    reference = Sim(doc, effect=flaky_effect).start(value).run()
    reference.check()
    assert reference.status in ("succeeded", "failed")
    sim = Sim(doc, effect=flaky_effect, seed=seed, shuffle=True, crash_rate=crash_rate).start(value).run()
    sim.check()
    assert sim.status == reference.status
    assert sim.output == reference.output
    assert sim.main["error"] == reference.main["error"]
    assert per_run(sim) == per_run(reference)


@PROPERTY_SETTINGS
@given(main=st.lists(step_strategy(2), min_size=1, max_size=4), seed=st.integers(0, 2**32 - 1))
def test_cancel_at_any_point_ends_cleanly(main: list[dict[str, Any]], seed: int) -> None:
    sim = Sim(make_task(main), effect=flaky_effect, seed=seed, shuffle=True).start({"a": 1})
    import random

    stop_after = random.Random(seed).randrange(1, 40)
    for _ in range(stop_after):
        if not sim.tick():
            break
    sim.cancel("test")
    sim.run()
    sim.check()
    assert sim.status in ("succeeded", "failed", "cancelled")
    if sim.status == "cancelled":
        assert sim.log[-1]["type"] == "cancelled"
        assert not sim.timers and not sim.inflight and not sim.waits


# -- a state machine over one scheduler ------------------------------------------------------------

FIXED = make_task(
    [
        {"set": {"k": "$ 'x'"}},
        {
            "over": "$ list(range(5))",
            "parallelism": 2,
            "map": [
                {
                    "if": "$ _ % 2 == 0",
                    "then": {"tool": "echo", "arguments": {"x": "$ _"}},
                    "else": {"sleep": {"seconds": 2}},
                },
                {"yield": {"workflow": "sub", "arguments": "_"}},
            ],
            "reduce": "results + [_]",
        },
        {
            "parallel": [
                [{"foreach": {"in": "$ [1, 2]", "do": {"tool": "echo", "arguments": {"x": "$ _"}}}}],
                {"get": "k"},
            ]
        },
        {"evaluate": {"done": "$ _"}},
    ]
)


class SchedulerMachine(RuleBasedStateMachine):
    """Hypothesis drives the worker's choices: which event, effect or timer goes next, and when
    a worker crashes. Invariants hold after every step; the end result never depends on it."""

    @initialize()
    def setup(self) -> None:
        self.reference = Sim(FIXED, effect=flaky_effect).start({"in": 1}).run()
        self.sim = Sim(FIXED, effect=flaky_effect).start({"in": 1})

    @precondition(lambda self: bool(self.sim.ready))
    @rule(data=st.data())
    def deliver(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.sim.ready) - 1))
        run, event = self.sim.ready.pop(i)
        self.sim.deliver(run, event)

    @precondition(lambda self: bool(self.sim.ready))
    @rule(data=st.data())
    def crash_while_delivering(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(0, len(self.sim.ready) - 1))
        run, event = self.sim.ready.pop(i)
        if run in self.sim.runs or run == "main":
            self.sim.crash(run, event)
        else:
            self.sim.ready.append((run, event))

    @precondition(lambda self: bool(self.sim.inflight))
    @rule(data=st.data())
    def finish_effect(self, data: st.DataObject) -> None:
        eid = data.draw(st.sampled_from(sorted(self.sim.inflight)))
        run, request = self.sim.inflight.pop(eid)
        self.sim.deliver(run, flaky_effect(request))

    @precondition(lambda self: bool(self.sim.timers))
    @rule(data=st.data())
    def fire_timer(self, data: st.DataObject) -> None:
        from mintleaf_server.engine import TimerFired

        tid = data.draw(st.sampled_from(sorted(self.sim.timers)))
        run, at = self.sim.timers.pop(tid)
        self.sim.now = max(self.sim.now, at)
        self.sim.deliver(run, TimerFired(timer_id=tid, now_ms=self.sim.now))

    @rule()
    def wait_a_little(self) -> None:
        """A scheduler may do nothing for a while (also keeps a settled run drawable)."""

    @invariant()
    def log_is_consistent(self) -> None:
        seqs = [t["sequence"] for t in self.sim.log]
        assert seqs == list(range(1, len(seqs) + 1))
        for fid, fo in self.sim.fanouts.items():
            assert len(fo.running) <= fo.window, fid
        assert all(n == 1 for n in self.sim.branch_ends.values())

    def teardown(self) -> None:
        if not hasattr(self, "sim"):
            return
        self.sim.run()
        self.sim.check()
        assert self.sim.output == self.reference.output
        assert per_run(self.sim) == per_run(self.reference)


SchedulerMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
TestScheduler = SchedulerMachine.TestCase
