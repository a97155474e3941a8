"""TaskService: task documents, validated whole at creation, versioned on every definition change.

A task row holds identity, canonical name, metadata and the latest version number; each version's
document (and how its strings were read) is an immutable task_versions row. Executions pin
(task_id, version), so editing a task never changes a running execution."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
from google.protobuf import empty_pb2
from psycopg.types.json import Jsonb

from .._proto.mintleaf.v1 import tasks_pb2, tasks_pb2_grpc
from ..dsl.errors import DslError, TaskInvalid
from ..dsl.parse import DslLimits, explain, load_document, parse_task
from ..dsl.steps import thaw
from ..store.base import new_id
from ..store.db import ResourceSpec
from ..store.errors import AlreadyExists, NotFound
from .agents import AGENTS
from .common import (
    Servicer,
    check_metadata,
    page_size,
    page_token,
    parse_id,
    parse_optional_id,
    struct_to_dict,
    to_struct,
    to_timestamp,
    unary,
)
from .errors import InvalidArgument
from .validate import canonical_name, update_paths

__all__ = ["TaskServicer", "compile_task", "load_task_version"]

_FIELDS = ("definition", "canonical_name", "metadata")
MAX_DEFINITION_BYTES = 1024 * 1024

_TASKS = ResourceSpec(
    kind="task",
    table="tasks",
    columns=("id", "agent_id", "canonical_name", "metadata"),
    json_columns=frozenset({"metadata"}),
)


def _document(task: tasks_pb2.Task, prefix: str = "task") -> dict[str, Any]:
    """The task document from `definition` or `yaml` (exactly one)."""
    has_def = task.HasField("definition")
    if has_def and task.yaml:
        raise InvalidArgument(f"{prefix}.yaml", "give either definition or yaml, not both")
    if task.yaml:
        if len(task.yaml.encode()) > MAX_DEFINITION_BYTES:
            raise InvalidArgument(f"{prefix}.yaml", f"must be at most {MAX_DEFINITION_BYTES} bytes")
        try:
            doc = load_document(task.yaml)
        except TaskInvalid as exc:
            raise InvalidArgument(
                [(f"{prefix}.yaml", v.message) for v in exc.violations], reason="TASK_INVALID"
            ) from None
        except DslError as exc:
            raise InvalidArgument(f"{prefix}.yaml", str(exc)) from None
        document: dict[str, Any] = thaw(doc)
        return document
    if not has_def:
        raise InvalidArgument(f"{prefix}.definition", "the task document is required (definition or yaml)")
    if task.definition.ByteSize() > MAX_DEFINITION_BYTES:
        raise InvalidArgument(f"{prefix}.definition", f"must be at most {MAX_DEFINITION_BYTES} bytes")
    return struct_to_dict(task.definition)


async def agent_tool_names(conn: Any, dev: uuid.UUID, agent_id: uuid.UUID) -> list[str]:
    """Names of an agent's tools: what a task of that agent may call (with inherit_tools)."""
    rows = await (
        await conn.execute(
            "SELECT name FROM tools WHERE developer_id = %s AND agent_id = %s", (dev, agent_id)
        )
    ).fetchall()
    return [r["name"] for r in rows]


def compile_task(
    doc: dict[str, Any], tool_names: list[str], limits: DslLimits
) -> tuple[Any, dict[str, Any], list[str]]:
    """Parses a document (raises TaskInvalid with every violation) and returns it with its explain view."""
    task = parse_task(doc, agent_tools=tool_names, limits=limits)
    view = explain(task)
    warnings = [str(w) for w in view.pop("warnings", [])] if isinstance(view, dict) else []
    return task, view, warnings


def _task_proto(task: dict[str, Any], version: dict[str, Any]) -> tasks_pb2.Task:
    return tasks_pb2.Task(
        id=str(task["id"]),
        agent_id=str(task["agent_id"]),
        definition=to_struct(version["definition"]),
        name=version["name"],
        description=version["description"],
        canonical_name=task["canonical_name"] or "",
        version=version["version"],
        metadata=to_struct(task["metadata"]),
        explain=to_struct(version["explain"]),
        warnings=version["warnings"],
        created_at=to_timestamp(task["created_at"]),
        updated_at=to_timestamp(task["updated_at"]),
    )


async def load_task_version(
    conn: Any, dev: uuid.UUID, task_id: uuid.UUID, version: int = 0
) -> tuple[dict[str, Any], dict[str, Any]]:
    task = await (
        await conn.execute("SELECT * FROM tasks WHERE developer_id = %s AND id = %s", (dev, task_id))
    ).fetchone()
    if task is None:
        raise NotFound("task", task_id)
    row = await (
        await conn.execute(
            "SELECT * FROM task_versions WHERE developer_id = %s AND task_id = %s AND version = %s",
            (dev, task_id, version or task["latest_version"]),
        )
    ).fetchone()
    if row is None:
        raise NotFound("task version", f"{task_id}@{version}")
    return task, row


async def _insert_version(
    conn: Any,
    dev: uuid.UUID,
    task_id: uuid.UUID,
    version: int,
    doc: dict[str, Any],
    parsed: Any,
    view: dict[str, Any],
    warnings: list[str],
) -> dict[str, Any]:
    row = await (
        await conn.execute(
            "INSERT INTO task_versions (developer_id, task_id, version, name, description, definition, explain, warnings)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING *",
            (dev, task_id, version, parsed.name, parsed.description, Jsonb(doc), Jsonb(view), warnings),
        )
    ).fetchone()
    assert row is not None
    inserted: dict[str, Any] = row
    return inserted


class TaskServicer(Servicer, tasks_pb2_grpc.TaskServiceServicer):
    def _limits(self) -> DslLimits:
        lim = self.rt.settings.limits
        return DslLimits(max_depth=lim.max_nesting_depth, max_parallelism=lim.max_parallelism)

    @unary
    async def CreateTask(
        self, request: tasks_pb2.CreateTaskRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> tasks_pb2.Task:
        agent_id = parse_id(request.agent_id, "agent_id")
        doc = _document(request.task)
        canonical = canonical_name(
            request.task.canonical_name or str(doc.get("canonical_name") or ""), "task.canonical_name"
        )
        metadata = check_metadata(request.task.HasField("metadata"), request.task.metadata, "task.metadata")
        if not metadata and isinstance(doc.get("metadata"), dict):
            metadata = doc["metadata"]
        task_id = parse_id(request.task.id, "task.id") if request.task.id else new_id()
        async with self.rt.db.transaction() as conn:
            await self.rt.db.get(AGENTS, dev, agent_id, conn=conn)
            if request.request_id:
                await conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    (f"{dev}/task/{request.request_id}",),
                )
                hit = await (
                    await conn.execute(
                        "SELECT resource_id FROM idempotency_keys WHERE developer_id = %s AND kind = 'task' AND request_id = %s",
                        (dev, request.request_id),
                    )
                ).fetchone()
                if hit:
                    return _task_proto(*await load_task_version(conn, dev, hit["resource_id"]))
            existing = await (
                await conn.execute("SELECT 1 FROM tasks WHERE developer_id = %s AND id = %s", (dev, task_id))
            ).fetchone()
            if existing:
                task, version = await load_task_version(conn, dev, task_id)
                if version["definition"] == doc and task["agent_id"] == agent_id:
                    return _task_proto(task, version)
                raise AlreadyExists("task", "id", task_id)
            parsed, view, warnings = compile_task(
                doc, await agent_tool_names(conn, dev, agent_id), self._limits()
            )
            try:
                async with conn.transaction():
                    task = await (  # type: ignore[assignment]
                        await conn.execute(
                            "INSERT INTO tasks (developer_id, id, agent_id, canonical_name, latest_version, metadata)"
                            " VALUES (%s, %s, %s, %s, 1, %s) RETURNING *",
                            (dev, task_id, agent_id, canonical, Jsonb(metadata)),
                        )
                    ).fetchone()
            except Exception as exc:
                if getattr(exc, "sqlstate", None) == "23505":
                    raise AlreadyExists("task", "canonical_name", canonical) from exc
                raise
            version = await _insert_version(conn, dev, task_id, 1, doc, parsed, view, warnings)
            if request.request_id:
                await conn.execute(
                    "INSERT INTO idempotency_keys (developer_id, kind, request_id, resource_id) VALUES (%s, 'task', %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    (dev, request.request_id, task_id),
                )
        assert task is not None
        return _task_proto(task, version)

    @unary
    async def GetTask(
        self, request: tasks_pb2.GetTaskRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> tasks_pb2.Task:
        if request.version < 0:
            raise InvalidArgument("version", "must not be negative")
        async with self.rt.db.connection() as conn:
            return _task_proto(
                *await load_task_version(conn, dev, parse_id(request.id, "id"), request.version)
            )

    @unary
    async def ListTasks(
        self, request: tasks_pb2.ListTasksRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> tasks_pb2.ListTasksResponse:
        agent_id = parse_optional_id(request.agent_id, "agent_id")
        size = page_size(request.page_size, self.rt)
        token = page_token(request.page_token)
        page = await self.rt.db.list(
            _TASKS,
            dev,
            page_size=size,
            page_token=token,
            metadata_filter=struct_to_dict(request.metadata_filter),
            equals={"agent_id": agent_id} if agent_id else None,
        )
        out = []
        async with self.rt.db.connection() as conn:
            for task in page.rows:
                version = await (
                    await conn.execute(
                        "SELECT * FROM task_versions WHERE developer_id = %s AND task_id = %s AND version = %s",
                        (dev, task["id"], task["latest_version"]),
                    )
                ).fetchone()
                if version is not None:
                    out.append(_task_proto(task, version))
        return tasks_pb2.ListTasksResponse(tasks=out, next_page_token=page.next_page_token)

    @unary
    async def UpdateTask(
        self, request: tasks_pb2.UpdateTaskRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> tasks_pb2.Task:
        task_id = parse_id(request.task.id, "task.id")
        mask = request.update_mask
        if not mask.paths:
            paths = ["definition", "canonical_name", "metadata"]
        else:
            paths = ["definition" if p == "yaml" else p for p in update_paths(mask, (*_FIELDS, "yaml"))]
        async with self.rt.db.transaction() as conn:
            task = await (
                await conn.execute(
                    "SELECT * FROM tasks WHERE developer_id = %s AND id = %s FOR UPDATE", (dev, task_id)
                )
            ).fetchone()
            if task is None:
                raise NotFound("task", task_id)
            sets: dict[str, Any] = {}
            if "canonical_name" in paths:
                sets["canonical_name"] = canonical_name(request.task.canonical_name, "task.canonical_name")
            if "metadata" in paths:
                sets["metadata"] = Jsonb(
                    check_metadata(request.task.HasField("metadata"), request.task.metadata, "task.metadata")
                )
            if "definition" in paths:
                doc = _document(request.task)
                _, current = await load_task_version(conn, dev, task_id)
                if doc != current["definition"]:
                    names = await agent_tool_names(conn, dev, task["agent_id"])
                    parsed, view, warnings = compile_task(doc, names, self._limits())
                    sets["latest_version"] = task["latest_version"] + 1
                    await _insert_version(
                        conn, dev, task_id, sets["latest_version"], doc, parsed, view, warnings
                    )
            if sets:
                cols = ", ".join(f"{k} = %s" for k in sets)
                try:
                    async with conn.transaction():
                        task = await (
                            await conn.execute(
                                f"UPDATE tasks SET {cols}, updated_at = now() WHERE developer_id = %s AND id = %s RETURNING *",
                                (*sets.values(), dev, task_id),
                            )
                        ).fetchone()
                except Exception as exc:
                    if getattr(exc, "sqlstate", None) == "23505":
                        raise AlreadyExists("task", "canonical_name", sets.get("canonical_name")) from exc
                    raise
            return _task_proto(*await load_task_version(conn, dev, task_id))

    @unary
    async def DeleteTask(
        self, request: tasks_pb2.DeleteTaskRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> empty_pb2.Empty:
        task_id = parse_id(request.id, "id")
        async with self.rt.db.transaction() as conn:
            row = await (
                await conn.execute(
                    "DELETE FROM tasks WHERE developer_id = %s AND id = %s RETURNING id", (dev, task_id)
                )
            ).fetchone()
            if row is None:
                raise NotFound("task", task_id)
            await conn.execute(
                "DELETE FROM task_versions WHERE developer_id = %s AND task_id = %s", (dev, task_id)
            )
        return empty_pb2.Empty()

    @unary
    async def ListTaskVersions(
        self, request: tasks_pb2.ListTaskVersionsRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> tasks_pb2.ListTaskVersionsResponse:
        task_id = parse_id(request.id, "id")
        size = page_size(request.page_size, self.rt)
        after = 0
        if request.page_token:
            if not (request.page_token.isascii() and request.page_token.isdigit()):
                raise InvalidArgument("page_token", "is not a token this server issued")
            after = int(request.page_token)
        async with self.rt.db.connection() as conn:
            task = await (
                await conn.execute("SELECT * FROM tasks WHERE developer_id = %s AND id = %s", (dev, task_id))
            ).fetchone()
            if task is None:
                raise NotFound("task", task_id)
            rows = await (
                await conn.execute(
                    "SELECT * FROM task_versions WHERE developer_id = %s AND task_id = %s AND version > %s ORDER BY version LIMIT %s",
                    (dev, task_id, after, size + 1),
                )
            ).fetchall()
        token = ""
        if len(rows) > size:
            rows = rows[:size]
            token = str(rows[-1]["version"])
        return tasks_pb2.ListTaskVersionsResponse(
            versions=[_task_proto(task, r) for r in rows], next_page_token=token
        )

    @unary
    async def ValidateTask(
        self, request: tasks_pb2.ValidateTaskRequest, context: grpc.aio.ServicerContext, dev: uuid.UUID
    ) -> tasks_pb2.ValidateTaskResponse:
        doc = _document(request.task)
        names: list[str] = []
        if request.agent_id:
            agent_id = parse_id(request.agent_id, "agent_id")
            async with self.rt.db.connection() as conn:
                await self.rt.db.get(AGENTS, dev, agent_id, conn=conn)
                names = await agent_tool_names(conn, dev, agent_id)
        try:
            _, view, warnings = compile_task(doc, names, self._limits())
        except TaskInvalid as exc:
            return tasks_pb2.ValidateTaskResponse(
                valid=False,
                issues=[tasks_pb2.TaskIssue(path=v.path, message=v.message) for v in exc.violations],
            )
        return tasks_pb2.ValidateTaskResponse(valid=True, explain=to_struct(view), warnings=warnings)
