"""Branches taken in bursts: leases for many runs in one Redis round trip, and the terminal commit
of many trivial branches in one statement, each fenced by its own lease epoch."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from engine_flows import run_to_end
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from mintleaf import v1
from mintleaf_server.engine.commands import Finish, Record, StartTimer
from mintleaf_server.engine.leases import Leases
from mintleaf_server.engine.worker import _ends_quietly, _groups
from mintleaf_server.store.executions import Q
from support.harness import ServerThread

S = v1.ExecutionStatus


def test_a_wide_fanout_keeps_a_gap_free_log_with_each_branch_contiguous(client: Any) -> None:
    doc = {
        "name": "wide",
        "main": [
            {
                "foreach": {
                    "in": "list(range(300))",
                    "parallelism": 300,
                    "do": [{"evaluate": {"a": "$ _"}}, {"evaluate": {"b": "$ _.a * 2"}}],
                }
            }
        ],
    }
    ex, log = run_to_end(client, doc)
    assert ex.status == S.SUCCEEDED, ex.error
    assert ex.output.to_dict() == [{"b": float(i * 2)} for i in range(300)]
    seqs = [t.sequence for t in log]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert ex.transition_count == len(log)
    by_run: dict[str, list[int]] = {}
    for pos, t in enumerate(log):
        if t.current.branch_id:
            by_run.setdefault(t.current.branch_id, []).append(pos)
    assert len(by_run) == 300
    for positions in by_run.values():  # init_branch, step, finish_branch: written together
        assert positions == list(range(positions[0], positions[0] + 3))


def test_a_batch_commit_writes_only_the_branches_whose_epoch_holds(client: Any, pg_url: str) -> None:
    ex, _ = run_to_end(client, {"name": "tiny", "main": [{"evaluate": {"a": 1}}]})
    assert ex.status == S.SUCCEEDED
    with psycopg.connect(pg_url, autocommit=True, row_factory=dict_row) as conn:
        row = conn.execute(
            "SELECT developer_id, id, transition_count FROM executions WHERE id = %s", (ex.id,)
        ).fetchone()
        assert row is not None
        dev, eid, base = row["developer_id"], row["id"], row["transition_count"]
        # A finished execution: the recovery sweep leaves these hand-made branches alone.
        conn.execute(Q.INSERT_FANOUT, (eid, "fz", "main", 3, 5, Jsonb({})))
        branches = [{"key": f"fz.{i}", "index": i} for i in range(5)]
        conn.execute(
            Q.INSERT_BRANCHES, {"eid": eid, "fanout": "fz", "window": 3, "branches": Jsonb(branches)}
        )
        conn.execute(
            "UPDATE branches SET lease_epoch = 4 WHERE execution_id = %s AND fanout_id = 'fz' AND status = 'ready'",
            (eid,),
        )

        def rows(key: str, n: int) -> list[dict[str, Any]]:
            return [
                {
                    "type": "step",
                    "step_type": "evaluate",
                    "label": "",
                    "current": {"branch_id": key},
                    "next": None,
                    "output": {"k": key, "n": j},
                    "error": "",
                    "metadata": {},
                }
                for j in range(n)
            ]

        items = [
            {"key": "fz.0", "epoch": 4, "state": {"s": 0}, "result": {"output": 0}, "rows": rows("fz.0", 2)},
            {"key": "fz.1", "epoch": 3, "state": {"s": 1}, "result": {"output": 1}, "rows": rows("fz.1", 2)},
            {"key": "fz.2", "epoch": 4, "state": {"s": 2}, "result": {"output": 2}, "rows": rows("fz.2", 3)},
        ]
        got = conn.execute(
            Q.COMMIT_BRANCHES, {"items": Jsonb(items), "eid": eid, "dev": dev, "fanout": "fz"}
        ).fetchone()
        assert got is not None
        assert sorted(got["committed"]) == ["fz.0", "fz.2"]  # fz.1's epoch is stale: another worker took it
        assert got["base"] == base
        assert sorted(got["promoted"]) == ["fz.3", "fz.4"]  # the window moves by as many as ended
        status = dict(
            (r["key"], r["status"])
            for r in conn.execute(
                "SELECT key, status FROM branches WHERE execution_id = %s", (eid,)
            ).fetchall()
        )
        assert status == {
            "fz.0": "succeeded",
            "fz.1": "ready",
            "fz.2": "succeeded",
            "fz.3": "ready",
            "fz.4": "ready",
        }
        count = conn.execute("SELECT transition_count FROM executions WHERE id = %s", (eid,)).fetchone()
        assert count is not None and count["transition_count"] == base + 5
        written = conn.execute(
            "SELECT sequence, run, output FROM transitions WHERE execution_id = %s AND sequence > %s ORDER BY sequence",
            (eid, base),
        ).fetchall()
        assert [(w["sequence"], w["run"], w["output"]["n"]) for w in written] == [
            (base + 1, "fz.0", 0),
            (base + 2, "fz.0", 1),
            (base + 3, "fz.2", 0),
            (base + 4, "fz.2", 1),
            (base + 5, "fz.2", 2),
        ]

        # every epoch stale: nothing at all is written, the counter does not move
        items = [{"key": "fz.1", "epoch": 1, "state": {}, "result": {}, "rows": rows("fz.1", 1)}]
        got = conn.execute(
            Q.COMMIT_BRANCHES, {"items": Jsonb(items), "eid": eid, "dev": dev, "fanout": "fz"}
        ).fetchone()
        assert got is not None and got["committed"] == [] and got["base"] is None and got["promoted"] == []
        count = conn.execute("SELECT transition_count FROM executions WHERE id = %s", (eid,)).fetchone()
        assert count is not None and count["transition_count"] == base + 5


def test_leases_taken_and_released_in_one_round_trip(server: ServerThread) -> None:
    redis = server.app.runtime.redis
    prefix = f"t{uuid.uuid4().hex[:6]}:"
    leases = Leases(redis, 5_000, prefix)

    async def scenario() -> tuple[list[bool], list[bool], list[bool], bool]:
        other = await leases.acquire("e|b.1")  # held elsewhere
        assert other is not None
        got = await leases.acquire_many(["e|b.0", "e|b.1", "e|b.2"])
        taken = [g is not None for g in got]
        held = await leases.held(["e|b.0", "e|b.1", "e|b.2"])
        again = await leases.acquire_many(["e|b.0"])  # taken by the batch now: refused, marked dirty
        assert again == [None]
        mine = [g for g in got if g is not None]
        released = await leases.release_many(mine)
        after = await leases.held(["e|b.0", "e|b.1", "e|b.2"])
        dirty_seen_by_other = await other.release()  # the batch's pop marked b.1 dirty
        return taken, held, [*released, *after], dirty_seen_by_other

    taken, held, rest, dirty = server.call(scenario())
    assert taken == [True, False, True]
    assert held == [True, True, True]
    assert rest == [True, False, False, True, False]  # b.0 had a wake-up meanwhile; then all free but b.1
    assert dirty is True


def test_grouping_and_quiet_endings() -> None:
    items = ["e1|main|d", "e1|f1.0|d", "e2|f9.0|d", "e1|f1.1|d", "e1|main|d2"]
    assert _groups(items) == [["e1|main|d"], ["e1|f1.0|d", "e1|f1.1|d"], ["e2|f9.0|d"], ["e1|main|d2"]]
    rec = Record("step", {}, None, 1)
    assert _ends_quietly([rec, rec, Finish(1)])
    assert not _ends_quietly([rec, Finish(1, returned=True)])  # a return decides the fan-out
    assert not _ends_quietly([rec, StartTimer("t1", 0, "sleep")])
    assert not _ends_quietly([StartTimer("t1", 0, "deadline"), rec, Finish(1)])
    assert not _ends_quietly([])


def test_a_burst_mixing_trivial_and_parked_branches(client: Any) -> None:
    """Some branches of a burst end in one advance (committed together), others sleep (go on alone
    and come back through a timer): all finish, in item order, with a gap-free log."""
    body = {
        "if": "$ _ % 3 == 0",
        "then": [{"sleep": 0.01}, {"evaluate": {"v": "$ 'slept'"}}],
        "else": {"evaluate": {"v": "$ _ * 10"}},
    }
    doc = {"name": "mixed", "main": [{"foreach": {"in": "list(range(90))", "parallelism": 45, "do": body}}]}
    ex, log = run_to_end(client, doc)
    assert ex.status == S.SUCCEEDED, ex.error
    assert ex.output.to_dict() == [{"v": "slept"} if i % 3 == 0 else {"v": float(i * 10)} for i in range(90)]
    finished = [t for t in log if t.type == v1.TransitionType.FINISH_BRANCH and t.current.branch_id]
    assert len({t.current.branch_id for t in finished}) == 90
