"""The worker's effect runner: resolves an execution's context once (agent, tools) and keeps it,
then hands each effect request to the EffectExecutor (prompt, tool_call, embed, search).

CreateExecution stores the context in `execution_contexts` with the execution, so every replica
and every later attempt (after a crash) sees the tools the execution started with, as it sees the
same task version; an execution created before contexts were stored at the start gets one here, the
first time it needs it. Secrets are not stored: they are read at each call."""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from typing import Any

from psycopg.types.json import Jsonb

from ..api.tasks import load_task_version
from .events import EffectFailed, Event
from .executors import EffectExecutor
from .machine import Machine
from .resolve import ExecutionContext, load_execution_context, load_secrets

__all__ = ["EffectRunner"]

log = logging.getLogger(__name__)

CACHE_SIZE = 1024


class EffectRunner:
    """`await runner(request, machine) -> Event`, as the worker expects (never raises)."""

    def __init__(self, runtime: Any) -> None:
        self.rt = runtime
        self._contexts: OrderedDict[uuid.UUID, dict[str, Any]] = OrderedDict()

    async def __call__(self, request: dict[str, Any], machine: Machine) -> Event:
        try:
            dev = uuid.UUID(str(request["developer_id"]))
            eid = uuid.UUID(str(request["execution_id"]))
            context = await self._context(dev, eid)
        except Exception as exc:
            log.exception("cannot resolve the context of execution %s", request.get("execution_id"))
            return EffectFailed(
                effect_id=request.get("effect_id", ""),
                error={
                    "kind": "context",
                    "message": f"cannot resolve the execution's agent and tools: {exc}",
                    "retryable": False,
                },
            )
        return await EffectExecutor(self.rt, context, step_at=machine.step_at).run(request)

    async def _context(self, dev: uuid.UUID, eid: uuid.UUID) -> ExecutionContext:
        async with self.rt.db.connection() as conn:
            secrets = await load_secrets(conn, dev)
            stored = self._contexts.get(eid)
            if stored is None:
                row = await (
                    await conn.execute(
                        "SELECT context FROM execution_contexts WHERE developer_id = %s AND execution_id = %s",
                        (dev, eid),
                    )
                ).fetchone()
                if row is not None:
                    stored = row["context"]
                else:
                    stored = await self._resolve(conn, dev, eid, secrets)
                self._contexts[eid] = stored
                if len(self._contexts) > CACHE_SIZE:
                    self._contexts.popitem(last=False)
            else:
                self._contexts.move_to_end(eid)
        return ExecutionContext.from_json(stored, secrets=secrets)

    async def _resolve(
        self, conn: Any, dev: uuid.UUID, eid: uuid.UUID, secrets: dict[str, str]
    ) -> dict[str, Any]:
        execution = await (
            await conn.execute(
                "SELECT task_id, task_version FROM executions WHERE developer_id = %s AND id = %s", (dev, eid)
            )
        ).fetchone()
        if execution is None:
            raise LookupError(f"execution {eid} not found")
        task, version = await load_task_version(conn, dev, execution["task_id"], execution["task_version"])
        ctx = await load_execution_context(
            self.rt, conn, dev, eid, task, version, task["agent_id"], secrets=secrets
        )
        data = ctx.to_json()
        # The first resolution wins (another replica may have raced us); read back what is stored.
        await conn.execute(
            "INSERT INTO execution_contexts (developer_id, execution_id, context) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (dev, eid, Jsonb(data)),
        )
        row = await (
            await conn.execute(
                "SELECT context FROM execution_contexts WHERE developer_id = %s AND execution_id = %s",
                (dev, eid),
            )
        ).fetchone()
        return dict(row["context"]) if row else data
