"""What an execution runs with, resolved once when it starts: its agent, the tools its steps see,
the developer's secrets and where integration setup comes from (JULEP-SPEC 7.5, 7.6).

Design note. "An execution resolves its tools when it starts and keeps them": `ExecutionContext`
holds the tool *definitions* as the API stored them (plain JSON) next to their parsed `ToolDef`s,
so the engine can keep the context with the execution (`to_json`) and rebuild it after a restart
(`from_json`) with the same tools even if the agent's tools changed since. Rejected: storing only
the tool names and re-reading the agent's tools at each step (a tool edited mid-run would change a
running execution), and serialising the parsed `ToolDef`s (their read trees are compiled code).
Secrets are *not* written by `to_json` unless asked: tool definitions evaluate `secrets.X` at call
time (tools/specs.py), so the worker reloads them (`load_secrets`) and a rotated key takes effect;
execution state never holds a secret value.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from psycopg.rows import dict_row

from mintleaf_server.dsl.errors import DslError
from mintleaf_server.dsl.parse import parse_task
from mintleaf_server.dsl.task import Task
from mintleaf_server.dsl.tools import ToolDef, parse_tool
from mintleaf_server.engine.errors import EngineError

__all__ = [
    "CONTEXT_VERSION",
    "ExecutionContext",
    "ExecutionContextError",
    "agent_tool_definition",
    "build_execution_context",
    "load_agent",
    "load_execution_context",
    "load_secrets",
]

log = logging.getLogger("mintleaf.engine")

CONTEXT_VERSION = 1

_AGENT = (
    "SELECT id, name, canonical_name, about, model, instructions, default_settings, metadata"
    " FROM agents WHERE developer_id = %s AND id = %s"
)
_AGENT_TOOLS = (
    "SELECT name, type, description, spec FROM tools WHERE developer_id = %s AND agent_id = %s ORDER BY name"
)
_SECRETS = "SELECT name, value FROM secrets WHERE developer_id = %s"


class ExecutionContextError(EngineError):
    """The execution cannot be resolved (its agent is gone, its task no longer parses, a stored
    context is malformed). The message says which."""


def _uuid(value: Any, what: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise ExecutionContextError(f"{what} {value!r} is not a UUID") from exc


def _parsed(raw: Mapping[str, Any], path: str) -> ToolDef:
    tool, violations = parse_tool(raw, path)
    if tool is None:
        problems = "; ".join(f"{v.path}: {v.message}" for v in violations) or "invalid"
        raise ExecutionContextError(f"tool definition {path} is invalid: {problems}")
    return tool


@dataclass
class ExecutionContext:
    """Everything an execution's effects run with (see the module note).

    `tools` are the tools `tool:` steps and `prompt` steps with `tools: all` see: the task's tools
    plus, when the task inherits them, the agent's (a task tool shadows an agent tool of the same
    name). `tool_definitions` holds each one's plain definition `{name, type, description?,
    <type>: {...}}`; when `tools` is not given it is parsed from them. `setup_sources` are the
    metadata objects integration/api_call setup and arguments may come from, lowest precedence
    first (agent, then task). `task` = {id, agent_id, name, version, metadata, inherit_tools,
    definition}: the definition lets the executor find a prompt step's inline tools on its own."""

    developer_id: uuid.UUID
    execution_id: uuid.UUID
    agent: dict[str, Any]
    tools: dict[str, ToolDef] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    setup_sources: list[dict[str, Any]] = field(default_factory=list)
    task: dict[str, Any] = field(default_factory=dict)
    tool_definitions: dict[str, dict[str, Any]] = field(default_factory=dict)
    agent_tool_names: list[str] = field(default_factory=list)  # the agent's tools at the start

    def __post_init__(self) -> None:
        self.developer_id = _uuid(self.developer_id, "developer_id")
        self.execution_id = _uuid(self.execution_id, "execution_id")
        for name, raw in self.tool_definitions.items():
            if name not in self.tools:
                self.tools[name] = _parsed(raw, f"tools.{name}")

    @property
    def agent_id(self) -> uuid.UUID:
        return _uuid(self.agent.get("id"), "agent.id")

    def to_json(self, *, include_secrets: bool = False) -> dict[str, Any]:
        """Plain JSON for storing with the execution. Secrets only when `include_secrets`."""
        missing = sorted(set(self.tools) - set(self.tool_definitions))
        if missing:
            raise ExecutionContextError(
                f"tools {', '.join(missing)} have no stored definition; build the context from definitions"
            )
        out: dict[str, Any] = {
            "v": CONTEXT_VERSION,
            "developer_id": str(self.developer_id),
            "execution_id": str(self.execution_id),
            "agent": self.agent,
            "tools": [self.tool_definitions[name] for name in self.tools],
            "setup_sources": self.setup_sources,
            "task": self.task,
            "agent_tool_names": list(self.agent_tool_names),
        }
        if include_secrets:
            out["secrets"] = dict(self.secrets)
        return out

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any], *, secrets: Mapping[str, str] | None = None
    ) -> ExecutionContext:
        """The inverse of `to_json`. `secrets` (the developer's, from `load_secrets`) override any
        stored ones."""
        if not isinstance(data, Mapping) or data.get("v") != CONTEXT_VERSION:
            raise ExecutionContextError("the stored execution context is missing or of an unknown version")
        try:
            definitions: dict[str, dict[str, Any]] = {}
            for raw in data.get("tools") or []:
                definitions[str(raw["name"])] = dict(raw)
            return cls(
                developer_id=data["developer_id"],
                execution_id=data["execution_id"],
                agent=dict(data.get("agent") or {}),
                secrets=dict(secrets if secrets is not None else data.get("secrets") or {}),
                setup_sources=[dict(s) for s in data.get("setup_sources") or []],
                task=dict(data.get("task") or {}),
                tool_definitions=definitions,
                agent_tool_names=[str(n) for n in data.get("agent_tool_names") or []],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ExecutionContextError(f"the stored execution context is malformed: {exc}") from exc


def agent_tool_definition(row: Mapping[str, Any]) -> dict[str, Any]:
    """A `tools` row as a plain definition `{name, type, description?, <type>: spec}` (the shape
    api/tools.py stores and the DSL reads)."""
    raw: dict[str, Any] = {"name": row["name"], "type": row["type"]}
    if row.get("description"):
        raw["description"] = row["description"]
    raw[row["type"]] = dict(row.get("spec") or {})
    return raw


def _jsonable_agent(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": str(row["id"]),
        "name": row.get("name") or "",
        "canonical_name": row.get("canonical_name"),
        "about": row.get("about") or "",
        "model": row.get("model") or "",
        "instructions": list(row.get("instructions") or []),
        "default_settings": dict(row.get("default_settings") or {}),
        "metadata": dict(row.get("metadata") or {}),
    }


async def load_secrets(conn: Any, developer_id: uuid.UUID | str) -> dict[str, str]:
    """The developer's secrets, name → value."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_SECRETS, (_uuid(developer_id, "developer_id"),))
    return {r["name"]: r["value"] for r in await cur.fetchall()}


def _task_tools(definition: Mapping[str, Any], task: Task) -> list[tuple[str, dict[str, Any]]]:
    """The task's own tool definitions as written, in document order (the parse checked them)."""
    names = {t.name for t in task.tools}
    out = []
    for raw in definition.get("tools") or []:
        if isinstance(raw, Mapping) and raw.get("name") in names:
            out.append((str(raw["name"]), dict(raw)))
    return out


async def load_agent(
    conn: Any, developer_id: uuid.UUID | str, agent_id: uuid.UUID | str
) -> tuple[Any, list[Any]]:
    """The agent's row and its tools' rows (by name); raises ExecutionContextError if it is gone."""
    dev = _uuid(developer_id, "developer_id")
    aid = _uuid(agent_id, "agent_id")
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_AGENT, (dev, aid))
    agent_row = await cur.fetchone()
    if agent_row is None:
        raise ExecutionContextError(f"agent {aid} not found")
    await cur.execute(_AGENT_TOOLS, (dev, aid))
    return agent_row, list(await cur.fetchall())


async def load_execution_context(
    runtime: Any,
    conn: Any,
    developer_id: uuid.UUID | str,
    execution_id: uuid.UUID | str,
    task_row: Mapping[str, Any],
    task_version_row: Mapping[str, Any],
    agent_id: uuid.UUID | str,
    *,
    secrets: Mapping[str, str] | None = None,
) -> ExecutionContext:
    """Resolve an execution's context from the database (agent, agent tools, secrets) and the
    pinned task version. Raises ExecutionContextError when the agent is gone or the task no longer
    parses against the agent's current tools. `runtime` is accepted for server-level additions
    (it is not read today); `secrets` skips the secrets query when the caller has them."""
    del runtime  # reserved: nothing server-wide goes into the context yet
    dev = _uuid(developer_id, "developer_id")
    agent_row, tool_rows = await load_agent(conn, dev, agent_id)
    if secrets is None:
        secrets = await load_secrets(conn, dev)
    return build_execution_context(
        dev, execution_id, agent_row, tool_rows, task_row, task_version_row, secrets
    )


def build_execution_context(
    developer_id: uuid.UUID | str,
    execution_id: uuid.UUID | str,
    agent_row: Mapping[str, Any],
    tool_rows: list[Any],
    task_row: Mapping[str, Any],
    task_version_row: Mapping[str, Any],
    secrets: Mapping[str, str],
    task: Task | None = None,
) -> ExecutionContext:
    """The context from rows already read (`load_agent`, the task and its pinned version); `task`
    is the version parsed against these tools when the caller has it."""
    dev = _uuid(developer_id, "developer_id")
    aid = _uuid(agent_row["id"], "agent_id")
    definition = task_version_row.get("definition")
    if not isinstance(definition, Mapping):
        raise ExecutionContextError("the task version has no definition")
    agent_names = [str(r["name"]) for r in tool_rows]
    if task is None:
        try:
            task = parse_task(definition, agent_tools=agent_names)
        except DslError as exc:
            raise ExecutionContextError(f"the task no longer parses: {exc}") from exc

    definitions: dict[str, dict[str, Any]] = {}
    tools: dict[str, ToolDef] = {}
    if task.inherit_tools:
        for row in tool_rows:
            raw = agent_tool_definition(row)
            tool, violations = parse_tool(raw, f"agent.tools.{row['name']}")
            if tool is None:
                # A stored tool the parser now rejects: leave it out rather than fail tasks that
                # may never call it; a step that does gets "tool not found".
                log.warning(
                    "agent %s tool %r is not a valid definition and is left out: %s",
                    aid,
                    row["name"],
                    "; ".join(f"{v.path}: {v.message}" for v in violations),
                )
                continue
            definitions[tool.name], tools[tool.name] = raw, tool
    by_name = {t.name: t for t in task.tools}
    for name, raw in _task_tools(definition, task):
        definitions.pop(name, None)  # a task tool shadows the agent's (and comes after it)
        tools.pop(name, None)
        definitions[name], tools[name] = raw, by_name[name]

    task_metadata = dict(task_row.get("metadata") or {})
    if not task_metadata and isinstance(definition.get("metadata"), Mapping):
        task_metadata = dict(definition["metadata"])
    agent = _jsonable_agent(agent_row)
    return ExecutionContext(
        developer_id=dev,
        execution_id=_uuid(execution_id, "execution_id"),
        agent=agent,
        tools=tools,
        secrets=dict(secrets),
        setup_sources=[agent["metadata"], task_metadata],
        task={
            "id": str(task_row.get("id") or task_version_row.get("task_id") or ""),
            "agent_id": str(aid),
            "name": task.name,
            "version": task_version_row.get("version"),
            "metadata": task_metadata,
            "inherit_tools": task.inherit_tools,
            "definition": dict(definition),
        },
        tool_definitions=definitions,
        agent_tool_names=sorted(agent_names),
    )
