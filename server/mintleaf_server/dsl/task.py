"""The parsed task document (JULEP-SPEC 1.6): fields, tools and named workflows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mintleaf_server.dsl.steps import FrozenMap, RetryPolicy, Sequence
from mintleaf_server.dsl.tools import ToolDef

__all__ = ["READ_ONLY_KEYS", "RESERVED_KEYS", "Task"]

# Top-level keys with a meaning of their own: they can never name a subworkflow. Every other
# top-level key (that is a valid identifier) is a workflow reachable by `yield`.
RESERVED_KEYS = frozenset(
    {
        "name",
        "canonical_name",
        "description",
        "input_schema",
        "tools",
        "inherit_tools",
        "metadata",
        "retry",
        "timeout",
        "workflows",
        # Output-only fields the API returns; accepted (and ignored) so a fetched task parses.
        "id",
        "agent_id",
        "created_at",
        "updated_at",
    }
)
READ_ONLY_KEYS = frozenset({"id", "agent_id", "created_at", "updated_at"})


@dataclass(frozen=True)
class Task:
    """A validated task. `workflows` always holds `main`; its values are non-empty step tuples.

    `input_schema` and `metadata` are frozen plain data (`thaw` gives dicts back); `retry` and
    `timeout_s` are the task-level defaults the engine applies to steps that set none."""

    name: str
    workflows: FrozenMap[str, Sequence]
    description: str = ""
    canonical_name: str | None = None
    input_schema: FrozenMap[str, Any] | None = None
    tools: tuple[ToolDef, ...] = ()
    inherit_tools: bool = True  # Mintleaf: True (Julep: False); the seed's Story task relies on it
    metadata: FrozenMap[str, Any] = field(default_factory=FrozenMap)
    retry: RetryPolicy | None = None
    timeout_s: float | None = None
    # Names of the agent tools visible at parse time (only when inherit_tools), for the record.
    agent_tools: tuple[str, ...] = ()

    @property
    def main(self) -> Sequence:
        return self.workflows["main"]

    def tool(self, name: str) -> ToolDef | None:
        """The task's own tool of that name (agent tools are resolved by the engine)."""
        for tool in self.tools:
            if tool.name == name:
                return tool
        return None
