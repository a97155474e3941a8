"""ExecutionService: create (validated, pinned to the task's latest version), get, list, cancel,
resume, submit tool results, list and stream transitions.

The stream subscribes to the execution's Redis channel *before* replaying from PostgreSQL, then
reads PostgreSQL again (`sequence > last sent`) on every notification and at least once a second,
so it never misses a transition (a lost publish only delays it) and never repeats one."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from psycopg.types.json import Jsonb
from redis.exceptions import RedisError

from .._proto.mintleaf.v1 import executions_pb2, executions_pb2_grpc
from ..dsl.errors import TaskInvalid
from ..dsl.parse import parse_task, validate_input
from ..engine.queue import ReadyQueue, member
from ..engine.resolve import ExecutionContextError, build_execution_context, load_agent
from ..store.base import new_id
from ..store.db import decode_page_token, encode_page_token
from ..store.errors import NotFound
from .common import (
    Servicer,
    check_metadata,
    page_size,
    page_token,
    parse_id,
    streaming,
    struct_to_dict,
    to_struct,
    to_timestamp,
    to_value,
    unary,
    value_to_python,
)
from .errors import FailedPrecondition, InvalidArgument
from .tasks import load_task_version

log = logging.getLogger("mintleaf.api")

__all__ = ["ExecutionServicer"]

_STATUS = {
    "queued": executions_pb2.EXECUTION_STATUS_QUEUED,
    "starting": executions_pb2.EXECUTION_STATUS_STARTING,
    "running": executions_pb2.EXECUTION_STATUS_RUNNING,
    "awaiting_input": executions_pb2.EXECUTION_STATUS_AWAITING_INPUT,
    "succeeded": executions_pb2.EXECUTION_STATUS_SUCCEEDED,
    "failed": executions_pb2.EXECUTION_STATUS_FAILED,
    "cancelled": executions_pb2.EXECUTION_STATUS_CANCELLED,
}
_STATUS_NAME = {v: k for k, v in _STATUS.items()}
_TYPE = {
    "init": executions_pb2.TRANSITION_TYPE_INIT,
    "init_branch": executions_pb2.TRANSITION_TYPE_INIT_BRANCH,
    "step": executions_pb2.TRANSITION_TYPE_STEP,
    "wait": executions_pb2.TRANSITION_TYPE_WAIT,
    "resume": executions_pb2.TRANSITION_TYPE_RESUME,
    "finish": executions_pb2.TRANSITION_TYPE_FINISH,
    "finish_branch": executions_pb2.TRANSITION_TYPE_FINISH_BRANCH,
    "error": executions_pb2.TRANSITION_TYPE_ERROR,
    "cancelled": executions_pb2.TRANSITION_TYPE_CANCELLED,
}
_TERMINAL = ("succeeded", "failed", "cancelled")


def _target(value: dict[str, Any] | None) -> executions_pb2.TransitionTarget | None:
    if not value:
        return None
    return executions_pb2.TransitionTarget(
        workflow=value.get("workflow", ""),
        step=int(value.get("step", 0)),
        scope_id=value.get("scope_id", ""),
        path=value.get("path", ""),
        branch_id=value.get("branch_id", ""),
    )


def transition_proto(row: dict[str, Any]) -> executions_pb2.Transition:
    msg = executions_pb2.Transition(
        id=f"{row['execution_id']}:{row['sequence']}",
        execution_id=str(row["execution_id"]),
        sequence=row["sequence"],
        type=_TYPE.get(row["type"], executions_pb2.TRANSITION_TYPE_UNSPECIFIED),
        error=row["error"] or "",
        step_label=row["label"] or "",
        step_type=row["step_type"] or "",
        metadata=to_struct(row["metadata"] or {}),
        created_at=to_timestamp(row["created_at"]),
    )
    msg.output.CopyFrom(to_value(row["output"]))
    current, nxt = _target(row["current"]), _target(row["next"])
    if current is not None:
        msg.current.CopyFrom(current)
    if nxt is not None:
        msg.next.CopyFrom(nxt)
    return msg


def _execution_proto(row: dict[str, Any], waits: list[dict[str, Any]]) -> executions_pb2.Execution:
    msg = executions_pb2.Execution(
        id=str(row["id"]),
        task_id=str(row["task_id"]),
        task_version=row["task_version"],
        status=_STATUS[row["status"]],
        input=to_struct(row["input"] if isinstance(row["input"], dict) else {}),
        error=row["error"] or "",
        transition_count=row["transition_count"],
        metadata=to_struct(row["metadata"] or {}),
        created_at=to_timestamp(row["created_at"]),
        updated_at=to_timestamp(row["updated_at"]),
    )
    if row["status"] == "succeeded":
        msg.output.CopyFrom(to_value(row["output"]))
    for w in waits:
        wait = msg.waits.add(id=w["id"], kind=w["kind"])
        if w["info"] is not None:
            wait.info.CopyFrom(to_value(w["info"]))
        for call in w["tool_calls"] or []:
            wait.tool_calls.add(
                id=str(call.get("id", "")),
                type=str(call.get("type", "function")),
                name=str(call.get("name", "")),
                arguments=to_struct(call.get("arguments") if isinstance(call.get("arguments"), dict) else {}),
            )
        at = _target(w["at"])
        if at is not None:
            wait.at.CopyFrom(at)
    return msg


class ExecutionServicer(Servicer, executions_pb2_grpc.ExecutionServiceServicer):
    @property
    def _queue(self) -> ReadyQueue:
        return ReadyQueue(self.rt.redis)

    async def _wake(self, run_member: str) -> None:
        """Queue a run whose change is already committed. PostgreSQL holds the truth: if Redis is
        unreachable the wake-up is lost, not the request, and the worker's recovery sweep finds the
        run (created, cancelled or answered) within its interval."""
        try:
            await self._queue.push(run_member)
        except (RedisError, OSError) as exc:
            log.warning("wake-up of %s not queued (%s); the recovery sweep will take it", run_member, exc)

    async def _load(self, conn: Any, dev: uuid.UUID, eid: uuid.UUID) -> executions_pb2.Execution:
        row = await (
            await conn.execute("SELECT * FROM executions WHERE developer_id = %s AND id = %s", (dev, eid))
        ).fetchone()
        if row is None:
            raise NotFound("execution", eid)
        waits = await (
            await conn.execute(
                "SELECT * FROM waits WHERE execution_id = %s AND status = 'open' ORDER BY created_at, id",
                (eid,),
            )
        ).fetchall()
        return _execution_proto(row, waits)

    @unary
    async def CreateExecution(self, request: Any, context: grpc.aio.ServicerContext, dev: uuid.UUID) -> Any:
        task_id = parse_id(request.task_id, "task_id")
        if not request.HasField("execution"):
            raise InvalidArgument("execution", "is required (an empty execution runs the task with no input)")
        ex = request.execution
        body = struct_to_dict(ex.input) if ex.HasField("input") else {}
        metadata = check_metadata(ex.HasField("metadata"), ex.metadata, "execution.metadata")
        eid = parse_id(ex.id, "execution.id") if ex.id else new_id()
        async with self.rt.db.connection() as conn:
            if request.request_id:
                found = await (
                    await conn.execute(
                        "SELECT id FROM executions WHERE developer_id = %s AND request_id = %s",
                        (dev, request.request_id),
                    )
                ).fetchone()
                if found is not None:
                    return await self._load(conn, dev, found["id"])
            task, version = await load_task_version(conn, dev, task_id)
            try:
                agent, tools = await load_agent(conn, dev, task["agent_id"])
            except ExecutionContextError as exc:
                raise FailedPrecondition(f"task {task_id}: {exc}", reason="AGENT_GONE") from exc
            names = [r["name"] for r in tools]
            try:
                parsed = parse_task(version["definition"], agent_tools=names)
            except TaskInvalid as exc:  # valid when stored: the agent's tools changed since
                raise FailedPrecondition(
                    f"task {task_id} version {version['version']} no longer fits its agent's tools: "
                    + "; ".join(f"task.definition.{v.path}: {v.message}" for v in exc.violations),
                    reason="TASK_INVALID",
                ) from exc
            problems = validate_input(parsed, body)
            if problems:
                raise InvalidArgument(
                    [(f"execution.{v.path}", v.message) for v in problems], reason="INPUT_INVALID"
                )
            # The execution keeps the agent and tools it started with (as it keeps its task
            # version): resolved here, stored with it in the same transaction.
            ctx = build_execution_context(dev, eid, agent, tools, task, version, {}, parsed)
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO executions (developer_id, id, task_id, task_version, status, input, metadata,"
                    " request_id) VALUES (%s, %s, %s, %s, 'queued', %s, %s, %s)",
                    (
                        dev,
                        eid,
                        task_id,
                        version["version"],
                        Jsonb(body),
                        Jsonb(metadata),
                        request.request_id or None,
                    ),
                )
                await conn.execute(
                    "INSERT INTO execution_contexts (developer_id, execution_id, context) VALUES (%s, %s, %s)",
                    (dev, eid, Jsonb(ctx.to_json())),
                )
            await self._wake(member(str(eid), "main", str(dev)))
            return await self._load(conn, dev, eid)

    @unary
    async def GetExecution(self, request: Any, context: grpc.aio.ServicerContext, dev: uuid.UUID) -> Any:
        async with self.rt.db.connection() as conn:
            return await self._load(conn, dev, parse_id(request.id, "id"))

    @unary
    async def ListExecutions(self, request: Any, context: grpc.aio.ServicerContext, dev: uuid.UUID) -> Any:
        size = page_size(request.page_size, self.rt)
        token = page_token(request.page_token)
        where: list[str] = ["developer_id = %s"]
        args: list[Any] = [dev]
        if request.task_id:
            where.append("task_id = %s")
            args.append(parse_id(request.task_id, "task_id"))
        if request.status:
            if request.status not in _STATUS_NAME:
                raise InvalidArgument("status", f"{request.status} is not an execution status")
            where.append("status = %s")
            args.append(_STATUS_NAME[request.status])
        if request.HasField("metadata_filter"):
            where.append("metadata @> %s")
            args.append(Jsonb(struct_to_dict(request.metadata_filter)))
        if token:
            created, last = decode_page_token(token)
            where.append("(created_at, id) < (%s, %s)")
            args += [created, last]
        sql = (
            f"SELECT * FROM executions WHERE {' AND '.join(where)} ORDER BY created_at DESC, id DESC LIMIT %s"
        )
        async with self.rt.db.connection() as conn:
            rows = await (await conn.execute(sql, (*args, size + 1))).fetchall()
        more = len(rows) > size
        rows = rows[:size]
        return executions_pb2.ListExecutionsResponse(
            executions=[_execution_proto(r, []) for r in rows],
            next_page_token=encode_page_token(rows[-1]["created_at"], rows[-1]["id"]) if more else "",
        )

    @unary
    async def CancelExecution(self, request: Any, context: grpc.aio.ServicerContext, dev: uuid.UUID) -> Any:
        eid = parse_id(request.id, "id")
        async with self.rt.db.connection() as conn:
            row = await (
                await conn.execute(
                    "UPDATE executions SET cancel_reason = %s WHERE developer_id = %s AND id = %s"
                    " AND status IN ('queued','starting','running','awaiting_input') RETURNING id",
                    (request.reason or "cancelled", dev, eid),
                )
            ).fetchone()
            if row is None:
                current = await self._load(conn, dev, eid)  # NOT_FOUND when missing
                raise FailedPrecondition(
                    f"execution {eid} is {_STATUS_NAME[current.status]}: it cannot be cancelled",
                    reason="EXECUTION_NOT_ACTIVE",
                )
            await self._wake(member(str(eid), "main", str(dev)))
            return await self._load(conn, dev, eid)

    async def _answer(
        self, conn: Any, dev: uuid.UUID, eid: uuid.UUID, wait_id: str, kind: str | None
    ) -> dict[str, Any]:
        await self._load(conn, dev, eid)
        rows = await (
            await conn.execute(
                "SELECT * FROM waits WHERE execution_id = %s AND status = 'open' ORDER BY created_at, id",
                (eid,),
            )
        ).fetchall()
        if kind is not None:
            rows = [r for r in rows if r["kind"] == kind]
        if wait_id:
            rows = [r for r in rows if r["id"] == wait_id]
            if not rows:
                raise FailedPrecondition(f"no open wait {wait_id!r}", reason="WAIT_NOT_OPEN")
        elif len(rows) != 1:
            raise FailedPrecondition(
                "no open wait" if not rows else f"{len(rows)} waits are open: name one with wait_id",
                reason="WAIT_NOT_OPEN" if not rows else "WAIT_AMBIGUOUS",
            )
        return dict(rows[0])

    @unary
    async def ResumeExecution(self, request: Any, context: grpc.aio.ServicerContext, dev: uuid.UUID) -> Any:
        eid = parse_id(request.id, "id")
        value = value_to_python(request.input) if request.HasField("input") else None
        async with self.rt.db.connection() as conn:
            wait = await self._answer(conn, dev, eid, request.wait_id, None)
            done = await (
                await conn.execute(
                    "UPDATE waits SET status = 'answered', input = %s WHERE execution_id = %s AND id = %s AND status = 'open'"
                    " RETURNING run",
                    (Jsonb(value), eid, wait["id"]),
                )
            ).fetchone()
            if done is None:
                raise FailedPrecondition(f"wait {wait['id']!r} was answered already", reason="WAIT_NOT_OPEN")
            await self._wake(member(str(eid), done["run"], str(dev)))
            return await self._load(conn, dev, eid)

    @unary
    async def SubmitToolResults(self, request: Any, context: grpc.aio.ServicerContext, dev: uuid.UUID) -> Any:
        eid = parse_id(request.id, "id")
        if not request.results:
            raise InvalidArgument("results", "at least one result is required")
        async with self.rt.db.connection() as conn:
            async with conn.transaction():
                await self._load(conn, dev, eid)
                rows = await (
                    await conn.execute(
                        "SELECT * FROM waits WHERE execution_id = %s AND status = 'open' AND kind = 'tool_calls' FOR UPDATE",
                        (eid,),
                    )
                ).fetchall()
                by_call = {str(c.get("id")): r for r in rows for c in (r["tool_calls"] or [])}
                touched: dict[str, dict[str, Any]] = {}
                for i, res in enumerate(request.results):
                    wait = by_call.get(res.tool_call_id)
                    if wait is None:
                        raise InvalidArgument(
                            f"results[{i}].tool_call_id", f"no open tool call {res.tool_call_id!r}"
                        )
                    got = touched.setdefault(wait["id"], dict(wait["input"] or {}))
                    got[res.tool_call_id] = (
                        {"error": res.error}
                        if res.error
                        else (value_to_python(res.output) if res.HasField("output") else None)
                    )
                for wid, got in touched.items():
                    wait = next(r for r in rows if r["id"] == wid)
                    calls = [str(c.get("id")) for c in wait["tool_calls"] or []]
                    if all(c in got for c in calls):
                        answer = got[calls[0]] if len(calls) == 1 else got
                        await conn.execute(
                            "UPDATE waits SET status = 'answered', input = %s WHERE execution_id = %s AND id = %s",
                            (Jsonb(answer), eid, wid),
                        )
                        await self._wake(member(str(eid), wait["run"], str(dev)))
                    else:
                        await conn.execute(
                            "UPDATE waits SET input = %s WHERE execution_id = %s AND id = %s",
                            (Jsonb(got), eid, wid),
                        )
            return await self._load(conn, dev, eid)

    @unary
    async def ListTransitions(self, request: Any, context: grpc.aio.ServicerContext, dev: uuid.UUID) -> Any:
        eid = parse_id(request.execution_id, "execution_id")
        size = page_size(request.page_size, self.rt)
        after = 0
        if request.page_token:
            try:
                after = int(json.loads(base64.urlsafe_b64decode(request.page_token + "==")))
            except Exception:
                raise InvalidArgument("page_token", "is not a token this server issued") from None
        async with self.rt.db.connection() as conn:
            await self._load(conn, dev, eid)
            rows = await (
                await conn.execute(
                    "SELECT * FROM transitions WHERE execution_id = %s AND sequence > %s ORDER BY sequence LIMIT %s",
                    (eid, after, size + 1),
                )
            ).fetchall()
        more = len(rows) > size
        rows = rows[:size]
        token = (
            base64.urlsafe_b64encode(json.dumps(rows[-1]["sequence"]).encode()).decode().rstrip("=")
            if more
            else ""
        )
        return executions_pb2.ListTransitionsResponse(
            transitions=[transition_proto(r) for r in rows], next_page_token=token
        )

    @streaming
    async def StreamTransitions(
        self, request: Any, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> AsyncIterator[Any]:
        eid = parse_id(request.execution_id, "execution_id")
        last = max(0, request.after_sequence)
        pubsub: Any = self.rt.redis.pubsub()
        try:
            await pubsub.subscribe(f"ml:tx:{eid}")
        except (RedisError, OSError):  # no notifications: poll PostgreSQL instead (more often)
            await _close(pubsub)
            pubsub = None
        try:
            while True:
                async with self.rt.db.connection() as conn:
                    ex = await (
                        await conn.execute(
                            "SELECT status, transition_count FROM executions WHERE developer_id = %s AND id = %s",
                            (dev, eid),
                        )
                    ).fetchone()
                    if ex is None:
                        raise NotFound("execution", eid)
                    rows = await (
                        await conn.execute(
                            "SELECT * FROM transitions WHERE execution_id = %s AND sequence > %s ORDER BY sequence LIMIT 1000",
                            (eid, last),
                        )
                    ).fetchall()
                for row in rows:
                    last = row["sequence"]
                    yield transition_proto(row)
                if ex["status"] in _TERMINAL and last >= ex["transition_count"]:  # all of a finished log
                    return
                if len(rows) == 1000:
                    continue
                if pubsub is None:
                    await asyncio.sleep(0.25)
                    continue
                try:
                    await _next_message(pubsub, 1.0)
                except (RedisError, OSError):
                    await _close(pubsub)
                    pubsub = None
        finally:
            if pubsub is not None:
                await _close(pubsub)


async def _close(pubsub: Any) -> None:
    with contextlib.suppress(Exception):
        await pubsub.unsubscribe()
    with contextlib.suppress(Exception):
        await pubsub.aclose()


async def _next_message(pubsub: Any, timeout: float) -> None:
    """Wait up to `timeout` seconds for a notification. No outer cancel: the client's own read
    timeout ends the wait (a cancel landing inside a Redis read can leave the connection mid-reply)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while (left := end - loop.time()) > 0:
        if await pubsub.get_message(ignore_subscribe_messages=True, timeout=left) is not None:
            return
