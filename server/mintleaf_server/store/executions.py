"""Tables and named queries of the execution engine: executions, transitions, branches (+ fan-outs),
waits and timers.

Design note. The execution row holds the execution flow's machine state (JSONB), its status column
and the transition counter; a transition row is appended in the same statement as each state
change, fenced by `lease_epoch`. Each branch of a fan-out is its own row with its own state and
lease epoch, so branches never rewrite the parent's state. Transitions are numbered per execution,
gap-free: a branch's commit takes its numbers from `executions.transition_count` in the same
statement (a short row lock held for one commit; the parent's state is not rewritten).
Rejected: a sequence object (gaps on rollback), numbering at read time (streams could not resume
from a number), and branch transitions in their own numbering (the API promises one sequence).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, DateTime, Index, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from .base import created_at_field, updated_at_field

__all__ = [
    "ACTIVE_STATUSES",
    "Branch",
    "Execution",
    "Fanout",
    "Q",
    "Timer",
    "Transition",
    "Wait",
    "ddl_statements",
]

ACTIVE_STATUSES = ("queued", "starting", "running", "awaiting_input")


def _jsonb(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(JSONB, nullable=nullable))


class Execution(SQLModel, table=True):
    __tablename__ = "executions"
    __table_args__ = (
        Index("executions_task_idx", "developer_id", "task_id", "created_at"),
        Index("executions_status_idx", "developer_id", "status", "created_at"),
        Index(
            "executions_active_idx",
            "status",
            postgresql_where=text("status IN ('queued','starting','running','awaiting_input')"),
        ),
        Index(
            "executions_request_idx",
            "developer_id",
            "request_id",
            unique=True,
            postgresql_where=text("request_id IS NOT NULL"),
        ),
    )

    developer_id: uuid.UUID = Field(primary_key=True, foreign_key="developers.id", ondelete="CASCADE")
    id: uuid.UUID = Field(primary_key=True)
    task_id: uuid.UUID
    task_version: int
    status: str = Field(default="queued", sa_column=Column(Text, nullable=False, server_default="queued"))
    input: Any = _jsonb(nullable=False)
    output: Any = _jsonb()
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    metadata_: Any = Field(
        default=None, sa_column=Column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    )
    state: Any = _jsonb()
    lease_epoch: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    transition_count: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    cancel_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    request_id: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    created_at: datetime = created_at_field()
    updated_at: datetime = updated_at_field()


class Transition(SQLModel, table=True):
    __tablename__ = "transitions"

    execution_id: uuid.UUID = Field(primary_key=True)
    sequence: int = Field(sa_column=Column(BigInteger, primary_key=True))
    developer_id: uuid.UUID
    type: str
    step_type: str = Field(default="")
    label: str = Field(default="")
    run: str = Field(default="main")
    current: Any = _jsonb()
    next: Any = _jsonb()
    output: Any = _jsonb()
    error: str = Field(default="", sa_column=Column(Text, nullable=False, server_default=""))
    metadata_: Any = Field(
        default=None, sa_column=Column("metadata", JSONB, nullable=False, server_default=text("'{}'::jsonb"))
    )
    created_at: datetime = created_at_field()


class Fanout(SQLModel, table=True):
    __tablename__ = "fanouts"

    execution_id: uuid.UUID = Field(primary_key=True)
    id: str = Field(primary_key=True)
    parent_run: str
    parallelism: int
    total: int
    shared: Any = _jsonb(nullable=False)
    status: str = Field(default="running")
    created_at: datetime = created_at_field()


class Branch(SQLModel, table=True):
    __tablename__ = "branches"
    __table_args__ = (
        Index("branches_fanout_idx", "execution_id", "fanout_id", "idx"),
        Index(
            "branches_pending_idx",
            "execution_id",
            "fanout_id",
            "idx",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    execution_id: uuid.UUID = Field(primary_key=True)
    key: str = Field(primary_key=True)
    fanout_id: str
    idx: int
    # pending (outside the window) | ready | succeeded | failed | cancelled
    status: str = Field(default="pending")
    branch: Any = _jsonb(nullable=False)
    state: Any = _jsonb()
    result: Any = _jsonb()
    lease_epoch: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, server_default="0"))
    updated_at: datetime = updated_at_field()


class Wait(SQLModel, table=True):
    __tablename__ = "waits"

    execution_id: uuid.UUID = Field(primary_key=True)
    id: str = Field(primary_key=True)
    developer_id: uuid.UUID
    run: str
    kind: str
    info: Any = _jsonb()
    tool_calls: Any = _jsonb()
    at: Any = _jsonb()
    status: str = Field(default="open")  # open | answered | closed
    input: Any = _jsonb()
    created_at: datetime = created_at_field()


class Timer(SQLModel, table=True):
    __tablename__ = "timers"
    __table_args__ = (Index("timers_due_idx", "fire_at"),)

    execution_id: uuid.UUID = Field(primary_key=True)
    id: str = Field(primary_key=True)
    run: str
    purpose: str
    fire_at: datetime = Field(sa_column=Column("fire_at", DateTime(timezone=True), nullable=False))


def ddl_statements() -> list[str]:
    """What SQLModel cannot express: none needed today (indexes are declared above)."""
    return []


# What a claim of an execution's own flow returns (CLAIM_MAIN, CLAIM_MAIN_BY_ID).
_CLAIMED_MAIN = """RETURNING developer_id, id, task_id, task_version, status, input, metadata, state, lease_epoch,
  cancel_reason,
  (SELECT jsonb_build_object('agent', c.context->'agent', 'tools', c.context->'agent_tool_names')
   FROM execution_contexts c WHERE c.developer_id = executions.developer_id AND c.execution_id = executions.id) AS ctx
"""


class Q:
    """Named queries (psycopg, %s placeholders)."""

    # The hot path: one statement, fenced by the lease epoch, appending N transitions (unnest).
    COMMIT_MAIN = """
WITH u AS (
  UPDATE executions SET state = %(state)s, status = %(status)s, output = %(output)s, error = %(error)s,
         transition_count = transition_count + %(n)s, updated_at = now()
  WHERE developer_id = %(dev)s AND id = %(eid)s AND lease_epoch = %(epoch)s
  RETURNING transition_count - %(n)s AS base, cancel_reason
), t AS (
  INSERT INTO transitions (execution_id, sequence, developer_id, type, step_type, label, run, current, next,
                           output, error, metadata)
  SELECT %(eid)s, u.base + r.ord, %(dev)s, r.j->>'type', r.j->>'step_type', r.j->>'label', %(run)s,
         r.j->'current', r.j->'next', r.j->'output', r.j->>'error', r.j->'metadata'
  FROM u, jsonb_array_elements(%(rows)s) WITH ORDINALITY AS r(j, ord)
)
SELECT base, cancel_reason FROM u
"""

    # A branch's commit: its own row fenced by its own epoch; numbers from the execution counter.
    # When the branch ends (%(ended)s) the sliding window moves on in the same statement: the
    # next pending branch of its fan-out becomes ready, so a crash can never shrink the window.
    COMMIT_BRANCH = """
WITH b AS (
  UPDATE branches SET state = %(state)s, status = %(status)s, result = %(result)s, updated_at = now()
  WHERE execution_id = %(eid)s AND key = %(run)s AND lease_epoch = %(epoch)s
  RETURNING key
), u AS (
  UPDATE executions SET transition_count = transition_count + %(n)s, updated_at = now()
  WHERE developer_id = %(dev)s AND id = %(eid)s AND EXISTS (SELECT 1 FROM b)
  RETURNING transition_count - %(n)s AS base
), t AS (
  INSERT INTO transitions (execution_id, sequence, developer_id, type, step_type, label, run, current, next,
                           output, error, metadata)
  SELECT %(eid)s, u.base + r.ord, %(dev)s, r.j->>'type', r.j->>'step_type', r.j->>'label', %(run)s,
         r.j->'current', r.j->'next', r.j->'output', r.j->>'error', r.j->'metadata'
  FROM u, jsonb_array_elements(%(rows)s) WITH ORDINALITY AS r(j, ord)
), p AS (
  UPDATE branches SET status = 'ready' WHERE (execution_id, key) IN (
    SELECT execution_id, key FROM branches
    WHERE %(ended)s AND execution_id = %(eid)s AND fanout_id = %(fanout)s AND status = 'pending'
      AND EXISTS (SELECT 1 FROM b)
    ORDER BY idx LIMIT 1 FOR UPDATE SKIP LOCKED)
  RETURNING key
)
SELECT (SELECT key FROM b) AS key, (SELECT base FROM u) AS base, ARRAY(SELECT key FROM p) AS promoted
"""

    # The terminal commit of many branches of one fan-out that each ended in one advance (a burst
    # of trivial branches): each is fenced by its own lease epoch, only those that pass get their
    # transitions (numbered in branch order after one bump of the execution's counter), and the
    # sliding window moves on by as many as ended.
    COMMIT_BRANCHES = """
WITH i AS (
  SELECT x.key, x.epoch, x.state, x.result, x.rows, jsonb_array_length(x.rows) AS n
  FROM jsonb_to_recordset(%(items)s) AS x(key text, epoch bigint, state jsonb, result jsonb, rows jsonb)
), b AS (
  UPDATE branches br SET state = i.state, status = 'succeeded', result = i.result, updated_at = now()
  FROM i WHERE br.execution_id = %(eid)s AND br.key = i.key AND br.lease_epoch = i.epoch
  RETURNING br.key, br.idx
), o AS (
  SELECT i.key, i.rows, i.n, (sum(i.n) OVER (ORDER BY b.idx) - i.n) AS off FROM b JOIN i ON i.key = b.key
), u AS (
  UPDATE executions SET transition_count = transition_count + (SELECT coalesce(sum(n), 0) FROM o),
         updated_at = now()
  WHERE developer_id = %(dev)s AND id = %(eid)s AND EXISTS (SELECT 1 FROM b)
  RETURNING transition_count - (SELECT coalesce(sum(n), 0) FROM o) AS base
), t AS (
  INSERT INTO transitions (execution_id, sequence, developer_id, type, step_type, label, run, current, next,
                           output, error, metadata)
  SELECT %(eid)s, u.base + o.off + r.ord, %(dev)s, r.j->>'type', r.j->>'step_type', r.j->>'label', o.key,
         r.j->'current', r.j->'next', r.j->'output', r.j->>'error', r.j->'metadata'
  FROM u, o, jsonb_array_elements(o.rows) WITH ORDINALITY AS r(j, ord)
), p AS (
  UPDATE branches SET status = 'ready' WHERE (execution_id, key) IN (
    SELECT execution_id, key FROM branches
    WHERE execution_id = %(eid)s AND fanout_id = %(fanout)s AND status = 'pending' AND EXISTS (SELECT 1 FROM b)
    ORDER BY idx LIMIT (SELECT count(*) FROM b) FOR UPDATE SKIP LOCKED)
  RETURNING key
)
SELECT ARRAY(SELECT key FROM b) AS committed, (SELECT base FROM u) AS base, ARRAY(SELECT key FROM p) AS promoted
"""

    # Taking a run bumps its lease epoch: from now on only this worker's commits can succeed. `ctx`
    # is what the execution resolved at its start (agent, agent tool names); NULL for executions
    # created before contexts were stored at the start.
    CLAIM_MAIN = (
        """
UPDATE executions SET lease_epoch = lease_epoch + 1,
       status = CASE WHEN status = 'queued' THEN 'starting' ELSE status END
WHERE developer_id = %s AND id = %s AND status IN ('queued','starting','running','awaiting_input')
"""
        + _CLAIMED_MAIN
    )
    # Without the developer id (a member queued by an older server): by id alone.
    CLAIM_MAIN_BY_ID = (
        """
UPDATE executions SET lease_epoch = lease_epoch + 1,
       status = CASE WHEN status = 'queued' THEN 'starting' ELSE status END
WHERE id = %s AND status IN ('queued','starting','running','awaiting_input')
"""
        + _CLAIMED_MAIN
    )

    # Branches of one execution (one, or a burst popped together), with their fan-out and their
    # execution, in one round trip.
    CLAIM_BRANCHES = """
WITH b AS (
  UPDATE branches SET lease_epoch = lease_epoch + 1
  WHERE execution_id = %(eid)s AND key = ANY(%(runs)s) AND status = 'ready'
  RETURNING key, fanout_id, idx, branch, state, lease_epoch
)
SELECT b.key, b.fanout_id, b.idx, b.branch, b.state, b.lease_epoch, f.parent_run, f.total,
       CASE WHEN b.state IS NULL THEN f.shared END AS shared,
       e.developer_id, e.id, e.task_id, e.task_version, e.input, e.metadata, e.status AS execution_status,
       (SELECT jsonb_build_object('agent', c.context->'agent', 'tools', c.context->'agent_tool_names')
        FROM execution_contexts c JOIN executions x ON c.developer_id = x.developer_id AND c.execution_id = x.id
        WHERE x.id = %(eid)s AND (%(dev)s::uuid IS NULL OR x.developer_id = %(dev)s::uuid)) AS ctx
FROM b JOIN fanouts f ON f.execution_id = %(eid)s AND f.id = b.fanout_id
JOIN executions e ON e.id = %(eid)s AND (%(dev)s::uuid IS NULL OR e.developer_id = %(dev)s::uuid)
ORDER BY b.idx
"""

    INSERT_FANOUT = """
INSERT INTO fanouts (execution_id, id, parent_run, parallelism, total, shared, status)
VALUES (%s, %s, %s, %s, %s, %s, 'running') ON CONFLICT DO NOTHING
"""

    # One statement for every branch of a fan-out; the first `parallelism` are ready at once.
    INSERT_BRANCHES = """
INSERT INTO branches (execution_id, key, fanout_id, idx, status, branch)
SELECT %(eid)s, b->>'key', %(fanout)s, (b->>'index')::int,
       CASE WHEN (b->>'index')::int < %(window)s THEN 'ready' ELSE 'pending' END, b
FROM jsonb_array_elements(%(branches)s) AS b
ON CONFLICT DO NOTHING
"""

    FANOUT_STATE = """
SELECT idx, key, status, result FROM branches WHERE execution_id = %s AND fanout_id = %s ORDER BY idx
"""

    CANCEL_FANOUT = """
WITH RECURSIVE f(id) AS (
  SELECT %(fanout)s::text
  UNION SELECT fo.id FROM fanouts fo JOIN branches b ON b.execution_id = fo.execution_id
        AND fo.parent_run = b.key JOIN f ON b.fanout_id = f.id WHERE fo.execution_id = %(eid)s
)
UPDATE branches SET status = 'cancelled', lease_epoch = lease_epoch + 1
WHERE execution_id = %(eid)s AND fanout_id IN (SELECT id FROM f) AND status IN ('pending','ready')
"""

    UPSERT_TIMER = """
INSERT INTO timers (execution_id, id, run, purpose, fire_at) VALUES (%s, %s, %s, %s, to_timestamp(%s / 1000.0))
ON CONFLICT (execution_id, id) DO UPDATE SET fire_at = EXCLUDED.fire_at
"""
    DELETE_TIMER = "DELETE FROM timers WHERE execution_id = %s AND id = %s"
    ALL_TIMERS = """
SELECT t.execution_id, t.id, t.run, e.developer_id, (extract(epoch FROM t.fire_at) * 1000)::bigint AS at
FROM timers t JOIN executions e ON e.id = t.execution_id
WHERE e.status IN ('queued','starting','running','awaiting_input')
"""
    DUE_TIMER_IDS = "SELECT id FROM timers WHERE execution_id = %s AND run = %s AND fire_at <= now()"
    DELETE_TIMERS = "DELETE FROM timers WHERE execution_id = %s AND id = ANY(%s)"
    INSERT_WAIT = """
INSERT INTO waits (execution_id, id, developer_id, run, kind, info, tool_calls, at, status)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'open') ON CONFLICT DO NOTHING
"""
    CLOSE_WAIT = "UPDATE waits SET status = 'closed' WHERE execution_id = %s AND id = %s"

    # Runs that can make progress now but may have lost their wake-up (a crash between commit
    # and ZADD, a flushed Redis, a lease that expired under a dead worker). The sweep re-queues
    # those that nobody holds a lease on. Runs parked on a wait, a sleep or unfinished branches
    # are not here: their wake-up comes from an answer, a timer or the last branch. A run written
    # less than `overdue_s` ago is left out: it is most likely moving (a sweep that raced its
    # worker would re-queue it for nothing); if it is not, the next sweep takes it.
    RECOVERY_CANDIDATES = """
SELECT e.developer_id, e.id AS execution_id, 'main' AS run FROM executions e
WHERE e.status IN ('queued','starting','running','awaiting_input')
  AND e.updated_at <= now() - make_interval(secs => %(overdue_s)s)
  AND (e.state IS NULL OR e.cancel_reason IS NOT NULL
       OR jsonb_typeof(e.state->'pending') IS DISTINCT FROM 'object'
       OR e.state->'pending'->>'kind' IN ('continue','effect'))
UNION ALL
SELECT e.developer_id, b.execution_id, b.key FROM branches b JOIN executions e ON e.id = b.execution_id
WHERE b.status = 'ready' AND e.status IN ('starting','running','awaiting_input')
  AND b.updated_at <= now() - make_interval(secs => %(overdue_s)s)
  AND (b.state IS NULL OR jsonb_typeof(b.state->'pending') IS DISTINCT FROM 'object'
       OR b.state->'pending'->>'kind' IN ('continue','effect'))
UNION ALL
SELECT e.developer_id, w.execution_id, w.run FROM waits w
JOIN executions e ON e.developer_id = w.developer_id AND e.id = w.execution_id
WHERE w.status = 'answered' AND e.status IN ('starting','running','awaiting_input')
UNION ALL
SELECT e.developer_id, t.execution_id, t.run FROM timers t JOIN executions e ON e.id = t.execution_id
WHERE t.fire_at <= now() - make_interval(secs => %(overdue_s)s)
  AND e.status IN ('starting','running','awaiting_input')
UNION ALL
SELECT e.developer_id, f.execution_id, f.parent_run FROM fanouts f
JOIN executions e ON e.id = f.execution_id
LEFT JOIN branches pb ON pb.execution_id = f.execution_id AND pb.key = f.parent_run
WHERE e.status IN ('starting','running','awaiting_input')
  AND (CASE WHEN f.parent_run = 'main' THEN e.state ELSE pb.state END)->'pending'->>'fanout' = f.id
  AND (NOT EXISTS (SELECT 1 FROM branches b WHERE b.execution_id = f.execution_id AND b.fanout_id = f.id
                   AND b.status IN ('pending','ready'))
       OR EXISTS (SELECT 1 FROM branches b WHERE b.execution_id = f.execution_id AND b.fanout_id = f.id
                  AND (b.status = 'failed' OR (b.status = 'succeeded' AND b.result->>'returned' = 'true'))))
"""
