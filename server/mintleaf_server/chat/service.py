"""A chat turn: load the session, build the context, call the model, store the turn.

Design note. A turn reads with three statements (the session with its agents and users as JSON in
one query, the answering agent's tools, the active history) and writes with one transaction that
locks the session row, numbers the new entries after the current last `seq` and inserts them in
one statement; concurrent turns of one session therefore queue on the lock and never share a
`seq`. The answer is stored before a streamed turn's final event is sent, so a client that saw
the final event reads the answer from history. Nothing is stored when `save` is false (an
adaptive summary included: it is then used for this turn only).

Tool calls: the answering agent's tools plus the request's (a request tool whose name an agent
tool already has is dropped, as in Julep) are offered to every model. When auto-run is on and
every call names a server-side tool (integration, system, api_call), the calls run and the model
is called again with their results (at most MAX_TOOL_ROUNDS times); otherwise the calls are
returned to the client, which answers with `tool` messages in its next turn. Rejected: running
the server-side calls of a mixed batch and returning the rest (the client could not tell which
results the model already has).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg.types.json import Jsonb

from ..dsl.tools import ToolDef, parse_tool
from ..llm.client import StreamDelta, StreamDone, merge_settings
from ..llm.errors import ModelError
from ..llm.tokens import encoding_name_for_model
from ..store.base import new_id, now
from .context import (
    DEFAULT_SYSTEM_TEMPLATE,
    HistoryItem,
    active_history,
    budget_for,
    fit_context,
    message_tokens,
    render_template,
    summary_content,
    to_model_message,
)
from .errors import BadRequest, ModelFailed, NotFound
from .recall import RecalledDoc, recall, recall_options

__all__ = ["MAX_TOOL_ROUNDS", "ChatService", "TurnContext", "TurnRequest", "TurnResult", "TurnTool"]

log = logging.getLogger("mintleaf.chat")

MAX_TOOL_ROUNDS = 8
SUMMARY_RESERVE = 512  # tokens kept free for an adaptive summary (at most a quarter of the budget)
SUMMARY_PROMPT = (
    "You summarise the earlier part of a conversation so it can continue without it. Keep every"
    " fact, name, number, decision, preference and open question; drop small talk. Write plain"
    " prose in the third person, at most {words} words."
)
SUMMARY_PREFIX = "Summary of the earlier conversation: "

_LOAD_SESSION = """
SELECT s.*,
  (SELECT coalesce(jsonb_agg(to_jsonb(a) - 'developer_id' ORDER BY array_position(s.agents, a.id)), '[]'::jsonb)
     FROM agents a WHERE a.developer_id = s.developer_id AND a.id = ANY(s.agents)) AS agent_rows,
  (SELECT coalesce(jsonb_agg(to_jsonb(u) - 'developer_id' ORDER BY array_position(s.users, u.id)), '[]'::jsonb)
     FROM users u WHERE u.developer_id = s.developer_id AND u.id = ANY(s.users)) AS user_rows
FROM sessions s WHERE s.developer_id = %s AND s.id = %s
"""
# The answering agent's tools: the requested agent's, else the session's first agent's (one
# statement, so it can be pipelined with the others).
_LOAD_TOOLS = """
SELECT * FROM tools
WHERE developer_id = %(dev)s
  AND agent_id = coalesce(%(agent)s::uuid,
                          (SELECT agents[1] FROM sessions WHERE developer_id = %(dev)s AND id = %(sid)s))
ORDER BY created_at, id
"""
# The active history: entries after the seq the latest summary replaces (that summary included).
_LOAD_HISTORY = """
WITH latest AS (
  SELECT coalesce((content->0->>'summarizes_through')::bigint, 0) AS through
  FROM entries
  WHERE developer_id = %(dev)s AND session_id = %(sid)s AND source = 'summarizer'
  ORDER BY seq DESC LIMIT 1)
SELECT id, seq, role, name, content, tool_calls, tool_call_id, source, token_count, tokenizer
FROM entries
WHERE developer_id = %(dev)s AND session_id = %(sid)s
  AND source IN ('api_request', 'api_response', 'tool_response', 'summarizer')
  AND seq > coalesce((SELECT through FROM latest), 0)
ORDER BY seq
"""
_LOCK_SESSION = "SELECT id FROM sessions WHERE developer_id = %s AND id = %s FOR UPDATE"
_INSERT_ENTRIES = """
INSERT INTO entries (developer_id, id, session_id, seq, role, name, content, tool_calls, tool_call_id,
                     source, token_count, tokenizer, model, timestamp)
SELECT %(dev)s, v.id, %(sid)s,
       (SELECT coalesce(max(seq), 0) FROM entries WHERE developer_id = %(dev)s AND session_id = %(sid)s) + v.ord,
       v.role, v.name, v.content, v.tool_calls, v.tool_call_id, v.source, v.token_count, v.tokenizer,
       v.model, v.ts
FROM jsonb_to_recordset(%(rows)s) AS v(id uuid, ord bigint, role text, name text, content jsonb,
     tool_calls jsonb, tool_call_id text, source text, token_count int, tokenizer text, model text,
     ts timestamptz)
WHERE EXISTS (SELECT 1 FROM sessions WHERE developer_id = %(dev)s AND id = %(sid)s)
RETURNING id, seq
"""
_SET_SUMMARY = "UPDATE sessions SET summary = %s WHERE developer_id = %s AND id = %s"
_LOAD_SECRETS = "SELECT name, value FROM secrets WHERE developer_id = %s"


@dataclass(frozen=True)
class TurnRequest:
    """A validated chat request. Messages are in the stored shape: `{role, content (a string or
    parts), name, tool_call_id, tool_calls: [{id, type, name, arguments: object}]}`; `tools` are
    validated definitions `{name, type, description, spec}` (api.tools.validated)."""

    session_id: uuid.UUID
    messages: list[dict[str, Any]]
    agent_id: uuid.UUID | None = None
    model: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)
    save: bool = True
    recall: bool = True
    auto_run_tools: bool | None = None
    tools: Sequence[Mapping[str, Any]] = ()
    tool_choice: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TurnTool:
    """A tool offered to the model: its definition, its schema, and its stored row if any."""

    name: str
    type: str
    description: str
    spec: Mapping[str, Any]
    definition: ToolDef
    schema: dict[str, Any]
    row: Mapping[str, Any] | None = None


@dataclass
class TurnContext:
    """Everything a turn sends (RenderChat returns it without calling the model)."""

    developer_id: uuid.UUID
    session: dict[str, Any]
    agent: dict[str, Any]
    agents: list[dict[str, Any]]
    users: list[dict[str, Any]]
    model: str
    settings: dict[str, Any]
    system: HistoryItem | None
    summary: HistoryItem | None
    history: list[HistoryItem]
    new: list[HistoryItem]
    new_stored: list[dict[str, Any]]
    docs: list[RecalledDoc]
    tools: list[TurnTool]
    tool_choice: Any
    tokens: int
    budget: int
    auto_run: bool

    def messages(self) -> list[dict[str, Any]]:
        items = [self.system, self.summary, *self.history, *self.new]
        return [i.message for i in items if i is not None]


@dataclass(frozen=True)
class TurnResult:
    """The answer of a turn. `id` is the stored answer entry's id (a fresh id when not saved)."""

    id: uuid.UUID
    session_id: uuid.UUID
    message: dict[str, Any]
    finish_reason: str
    usage: dict[str, int]
    docs: list[RecalledDoc]
    model: str
    created_at: datetime


def _plain(row: Mapping[str, Any]) -> dict[str, Any]:
    """Template data: JSON-like values only (ids and times as strings)."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key in ("developer_id", "agent_rows", "user_rows"):
            continue
        if isinstance(value, uuid.UUID | datetime):
            value = str(value)
        elif isinstance(value, list):
            value = [str(v) if isinstance(v, uuid.UUID) else v for v in value]
        out[key] = value
    return out


def parse_arguments(raw: Any) -> dict[str, Any]:
    """A tool call's arguments as an object (a model may send malformed JSON: kept under `_raw`)."""
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        value = json.loads(raw or "{}")
    except (TypeError, ValueError):
        return {"_raw": str(raw)}
    return value if isinstance(value, dict) else {"_value": value}


def stored_answer(message: Mapping[str, Any]) -> dict[str, Any]:
    """A model's message (OpenAI shape) in the stored shape."""
    calls = [
        {
            "id": c.get("id") or "",
            "type": "function",
            "name": (c.get("function") or {}).get("name") or "",
            "arguments": parse_arguments((c.get("function") or {}).get("arguments")),
        }
        for c in message.get("tool_calls") or []
    ]
    return {
        "role": "assistant",
        "content": message.get("content"),
        "name": "",
        "tool_call_id": "",
        "tool_calls": calls or None,
    }


def _tool_choice(choice: str, tools: Sequence[TurnTool]) -> Any:
    if not choice:
        return None
    if choice in ("auto", "none", "required"):
        return choice
    if any(t.name == choice for t in tools):
        return {"type": "function", "function": {"name": choice}}
    raise BadRequest("tool_choice", f"{choice!r} is not auto, none, required or the name of an offered tool")


class ChatService:
    """Chat turns for one server process (holds the runtime: database, models, settings)."""

    def __init__(self, runtime: Any) -> None:
        self.rt = runtime

    # -- loading -------------------------------------------------------------------------------

    async def _load(
        self, dev: uuid.UUID, req: TurnRequest
    ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
        # One round trip: the three reads are pipelined.
        async with self.rt.db.connection() as conn, conn.pipeline():
            session_cur = await conn.execute(_LOAD_SESSION, (dev, req.session_id))
            tools_cur = await conn.execute(
                _LOAD_TOOLS, {"dev": dev, "sid": req.session_id, "agent": req.agent_id}
            )
            history_cur = await conn.execute(_LOAD_HISTORY, {"dev": dev, "sid": req.session_id})
            session = await session_cur.fetchone()
            tools = await tools_cur.fetchall()
            history = await history_cur.fetchall()
        if session is None:
            raise NotFound("session", req.session_id, "session_id")
        agents: list[dict[str, Any]] = session["agent_rows"]
        users: list[dict[str, Any]] = session["user_rows"]
        if req.agent_id is None:
            agent_id = session["agents"][0]
        elif req.agent_id in session["agents"]:
            agent_id = req.agent_id
        else:
            raise BadRequest("agent", f"agent {req.agent_id} is not an agent of session {req.session_id}")
        agent = next((a for a in agents if a["id"] == str(agent_id)), None)
        if agent is None:
            raise NotFound("agent", agent_id, "agent")
        session["tool_rows"] = tools
        session["history_rows"] = history
        return session, agents, users, agent

    def _tools(self, rows: Sequence[Mapping[str, Any]], extra: Sequence[Mapping[str, Any]]) -> list[TurnTool]:
        from ..tools.runner import tool_schema

        out: list[TurnTool] = []
        names: set[str] = set()
        for row, prefix in [*((r, "tool") for r in rows), *((t, f"tools[{i}]") for i, t in enumerate(extra))]:
            if row["name"] in names:
                continue
            raw = {"name": row["name"], "type": row["type"], row["type"]: row["spec"] or {}}
            if row.get("description"):
                raw["description"] = row["description"]
            definition, violations = parse_tool(raw, prefix)
            if definition is None or violations:
                if prefix == "tool":  # a stored tool that no longer reads: leave it out
                    log.warning("chat: agent tool %s skipped: %s", row["name"], violations)
                    continue
                raise BadRequest(violations[0].path if violations else prefix, "is not a valid tool")
            names.add(row["name"])
            out.append(
                TurnTool(
                    name=row["name"],
                    type=row["type"],
                    description=row.get("description") or "",
                    spec=row["spec"] or {},
                    definition=definition,
                    schema=tool_schema(definition),
                    row=row if prefix == "tool" else None,
                )
            )
        return out

    # -- context -------------------------------------------------------------------------------

    async def prepare(self, dev: uuid.UUID, req: TurnRequest, *, summarise: bool) -> TurnContext:
        """Build the turn's context. With `summarise` false (RenderChat), an adaptive overflow is
        shown as a placeholder instead of calling the model."""
        if not req.messages:
            raise BadRequest("messages", "at least one message is required")
        session, agents, users, agent = await self._load(dev, req)
        # Julep's merge (JULEP-SPEC 5.1), with the *answering* agent's model and settings.
        merged = merge_settings(
            {"model": agent.get("model") or None},
            agent.get("default_settings") or {},
            req.settings,
            {"model": req.model} if req.model else None,
        )
        model = str(merged.pop("model", "") or self.rt.models.default_model)
        if not self.rt.models.is_known(model):
            raise BadRequest("model", f"no model endpoint serves {model!r}")
        tools = self._tools(session["tool_rows"], req.tools)
        history = active_history(session["history_rows"], model)

        agent_scope = _plain(agent)
        user_scopes = [_plain(u) for u in users]
        session_scope = _plain({k: v for k, v in session.items() if k not in ("tool_rows", "history_rows")})
        scope: dict[str, Any] = {
            "session": session_scope,
            "agents": [_plain(a) for a in agents],
            "agent": agent_scope,
            "current_agent": agent_scope,
            "user": user_scopes[0] if user_scopes else None,
            "users": user_scopes,
            "settings": merged,
            "tools": [{"name": t.name, "type": t.type, "description": t.description} for t in tools],
            "docs": [],
            "metadata": dict(req.metadata),
        }

        new_stored = [dict(m) for m in req.messages]
        if session["render_templates"]:
            for i, message in enumerate(new_stored):
                message["content"] = self._render_content(message.get("content"), scope, f"messages[{i}]")

        docs: list[RecalledDoc] = []
        options = recall_options(session["recall_options"])
        if req.recall and options is not None:
            owners = [("user", uuid.UUID(u["id"])) for u in users] + [("agent", uuid.UUID(agent["id"]))]
            recent = [i.message for i in history] + [to_model_message(m) for m in new_stored]
            docs = await recall(self.rt, dev, owners, recent, options)
            scope["docs"] = [d.template_value() for d in docs]

        if session["system_template"]:
            source, where, stored = session["system_template"], "session.system_template", True
        elif agent.get("default_system_template"):
            source, where, stored = agent["default_system_template"], "agent.default_system_template", True
        else:
            source, where, stored = DEFAULT_SYSTEM_TEMPLATE, "system_template", True
        text = render_template(source, scope, where, stored=stored)
        system = None
        if text.strip():
            message = {"role": "system", "content": text}
            system = HistoryItem(message=message, tokens=message_tokens(model, message))

        new = []
        for stored_message in new_stored:
            message = to_model_message(stored_message)
            new.append(HistoryItem(message=message, tokens=message_tokens(model, message)))

        budget = budget_for(session["token_budget"], self.rt.models.context_window(model), merged)
        policy = session["context_overflow"]
        reserve = min(SUMMARY_RESERVE, budget // 4)
        fit = fit_context(system, history, new, budget, policy, reserve=reserve)
        summary_item: HistoryItem | None = None
        tokens = fit.tokens
        if fit.cut and policy == "adaptive":
            if summarise:
                summary_item = await self._summarise(dev, req, model, fit.cut, reserve)
            else:
                placeholder = {
                    "role": "system",
                    "content": f"{SUMMARY_PREFIX}({len(fit.cut)} earlier messages would be summarised here)",
                }
                summary_item = HistoryItem(message=placeholder, tokens=message_tokens(model, placeholder))
            tokens += summary_item.tokens
        ctx = TurnContext(
            developer_id=dev,
            session=session,
            agent=agent,
            agents=agents,
            users=users,
            model=model,
            settings=merged,
            system=system,
            summary=summary_item,
            history=fit.kept,
            new=new,
            new_stored=new_stored,
            docs=docs,
            tools=tools,
            tool_choice=_tool_choice(req.tool_choice, tools),
            tokens=tokens,
            budget=budget,
            auto_run=req.auto_run_tools
            if req.auto_run_tools is not None
            else bool(session["auto_run_tools"]),
        )
        return ctx

    @staticmethod
    def _render_content(content: Any, scope: Mapping[str, Any], where: str) -> Any:
        if isinstance(content, str):
            return render_template(content, scope, f"{where}.content", stored=False) if content else content
        if isinstance(content, list):
            out = []
            for j, part in enumerate(content):
                if part.get("type") == "text" and part.get("text"):
                    rendered = render_template(
                        part["text"], scope, f"{where}.content_parts[{j}].text", stored=False
                    )
                    part = {**part, "text": rendered}
                out.append(part)
            return out
        return content

    async def _summarise(
        self, dev: uuid.UUID, req: TurnRequest, model: str, cut: list[HistoryItem], reserve: int
    ) -> HistoryItem:
        """Summarise the cut messages with the model; store the summary (when saving) in place of
        them, and return it as the context's summary message."""
        lines = []
        for item in cut:
            m = item.message
            content = m.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if p.get("type") == "text")
            text = content or ""
            if m.get("tool_calls"):
                calls = ", ".join(
                    f"{c['function']['name']}({c['function']['arguments']})" for c in m["tool_calls"]
                )
                text = f"{text} [called {calls}]".strip()
            who = m.get("name") or m["role"]
            lines.append(f"{who}: {text}")
        prompt = [
            {"role": "system", "content": SUMMARY_PROMPT.format(words=max(20, int(reserve * 0.6)))},
            {"role": "user", "content": "\n\n".join(lines)},
        ]
        try:
            completion = await self.rt.models.complete(model, prompt, settings={"max_tokens": reserve})
        except ModelError as exc:
            raise ModelFailed(exc) from exc
        text = (completion["choices"][0]["message"].get("content") or "").strip()
        message = {"role": "system", "content": SUMMARY_PREFIX + text}
        item = HistoryItem(message=message, tokens=message_tokens(model, message), source="summarizer")
        through = max(i.seq or 0 for i in cut)
        if req.save and through > 0:
            row = {
                "role": "system",
                "content": summary_content(message["content"], through, len(cut)),
                "name": "",
                "tool_call_id": "",
                "tool_calls": None,
            }
            async with self.rt.db.transaction() as conn:
                await self._insert(conn, dev, req.session_id, [(row, "summarizer", item.tokens)], model)
                await conn.execute(_SET_SUMMARY, (text, dev, req.session_id))
        return item

    # -- storing -------------------------------------------------------------------------------

    async def _insert(
        self,
        conn: Any,
        dev: uuid.UUID,
        session_id: uuid.UUID,
        rows: Sequence[tuple[dict[str, Any], str, int]],
        model: str,
    ) -> list[uuid.UUID]:
        tokenizer = encoding_name_for_model(model)
        stamp = now().isoformat()
        records = []
        for ord_, (message, source, tokens) in enumerate(rows, start=1):
            records.append(
                {
                    "id": str(new_id()),
                    "ord": ord_,
                    "role": message["role"],
                    "name": message.get("name") or "",
                    "content": message.get("content"),
                    "tool_calls": message.get("tool_calls") or None,
                    "tool_call_id": message.get("tool_call_id") or "",
                    "source": source,
                    "token_count": tokens,
                    "tokenizer": tokenizer,
                    "model": model,
                    "ts": stamp,
                }
            )
        # The lock makes concurrent turns of a session queue here, so the INSERT (a new snapshot
        # in READ COMMITTED) numbers after every committed entry. Both statements are pipelined.
        await conn.execute(_LOCK_SESSION, (dev, session_id))
        cur = await conn.execute(_INSERT_ENTRIES, {"dev": dev, "sid": session_id, "rows": Jsonb(records)})
        if not await cur.fetchall():
            raise NotFound("session", session_id, "session_id")  # deleted during the turn
        return [uuid.UUID(r["id"]) for r in records]

    async def _save(self, ctx: TurnContext, produced: list[tuple[dict[str, Any], str]]) -> uuid.UUID:
        rows = [(m, "api_request", item.tokens) for m, item in zip(ctx.new_stored, ctx.new, strict=True)]
        for message, source in produced:
            rows.append((message, source, message_tokens(ctx.model, to_model_message(message))))
        async with self.rt.db.transaction() as conn:
            ids = await self._insert(
                conn, ctx.developer_id, uuid.UUID(str(ctx.session["id"])), rows, ctx.model
            )
        return ids[-1]

    # -- tools ---------------------------------------------------------------------------------

    def _runnable(self, ctx: TurnContext, answer: Mapping[str, Any]) -> list[TurnTool] | None:
        """The server-side tools the answer's calls name, or None if they must go to the client."""
        calls = answer.get("tool_calls") or []
        if not calls or not ctx.auto_run:
            return None
        by_name = {t.name: t for t in ctx.tools}
        tools = [by_name.get(c["name"]) for c in calls]
        if any(t is None or t.type == "function" for t in tools):
            return None
        return [t for t in tools if t is not None]

    async def _run_tools(
        self, ctx: TurnContext, answer: Mapping[str, Any], tools: list[TurnTool]
    ) -> list[dict[str, Any]]:
        from ..tools.context import ToolContext
        from ..tools.errors import ToolError
        from ..tools.runner import run_tool

        async with self.rt.db.connection() as conn:
            secrets = {
                r["name"]: r["value"]
                for r in await (await conn.execute(_LOAD_SECRETS, (ctx.developer_id,))).fetchall()
            }
        sources = [ctx.agent.get("metadata") or {}, *(u.get("metadata") or {} for u in ctx.users[:1])]
        sources.append(ctx.session.get("metadata") or {})
        tool_ctx = ToolContext(
            developer_id=ctx.developer_id, runtime=self.rt, secrets=secrets, setup_sources=sources
        )
        results = []
        for call, tool in zip(answer["tool_calls"], tools, strict=True):
            try:
                value: Any = await run_tool(tool.definition, call["arguments"], tool_ctx)
            except ToolError as exc:
                value = {"error": exc.to_dict()}
            content = value if isinstance(value, str) else json.dumps(value, default=str)
            results.append(
                {
                    "role": "tool",
                    "content": content,
                    "name": "",
                    "tool_call_id": call["id"],
                    "tool_calls": None,
                }
            )
        return results

    # -- turns ---------------------------------------------------------------------------------

    def _call_args(self, ctx: TurnContext) -> dict[str, Any]:
        return {
            "settings": ctx.settings,
            "tools": [t.schema for t in ctx.tools] or None,
            "tool_choice": ctx.tool_choice,
        }

    async def chat(self, dev: uuid.UUID, req: TurnRequest) -> TurnResult:
        """One turn, answered whole."""
        ctx = await self.prepare(dev, req, summarise=True)
        messages = ctx.messages()
        produced: list[tuple[dict[str, Any], str]] = []
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for _ in range(MAX_TOOL_ROUNDS + 1):
            try:
                completion = await self.rt.models.complete(ctx.model, messages, **self._call_args(ctx))
            except ModelError as exc:
                raise ModelFailed(exc) from exc
            answer, finish = self._absorb(ctx, completion, usage)
            tools = self._runnable(ctx, answer)
            if tools is None:
                break
            results = await self._run_tools(ctx, answer, tools)
            produced.append((answer, "api_response"))
            produced += [(r, "tool_response") for r in results]
            messages += [to_model_message(answer), *(to_model_message(r) for r in results)]
        return await self._finish(ctx, req, answer, finish, usage, produced)

    async def stream(self, dev: uuid.UUID, req: TurnRequest) -> AsyncIterator[StreamDelta | TurnResult]:
        """One turn, streamed: the model's deltas, then the TurnResult (after it is stored)."""
        ctx = await self.prepare(dev, req, summarise=True)
        messages = ctx.messages()
        produced: list[tuple[dict[str, Any], str]] = []
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        for _ in range(MAX_TOOL_ROUNDS + 1):
            completion: dict[str, Any] | None = None
            try:
                async for event in self.rt.models.stream(ctx.model, messages, **self._call_args(ctx)):
                    if isinstance(event, StreamDone):
                        completion = event.completion
                    else:
                        yield event
            except ModelError as exc:
                raise ModelFailed(exc) from exc
            assert completion is not None
            answer, finish = self._absorb(ctx, completion, usage)
            tools = self._runnable(ctx, answer)
            if tools is None:
                break
            results = await self._run_tools(ctx, answer, tools)
            produced.append((answer, "api_response"))
            produced += [(r, "tool_response") for r in results]
            messages += [to_model_message(answer), *(to_model_message(r) for r in results)]
        yield await self._finish(ctx, req, answer, finish, usage, produced)

    def _absorb(
        self, ctx: TurnContext, completion: Mapping[str, Any], usage: dict[str, int]
    ) -> tuple[dict[str, Any], str]:
        choice = completion["choices"][0]
        answer = stored_answer(choice["message"])
        reported = completion.get("usage")
        if reported:
            for key in usage:
                usage[key] += int(reported.get(key) or 0)
        else:  # the endpoint reported none: count ourselves
            prompt = ctx.tokens
            done = message_tokens(ctx.model, to_model_message(answer))
            usage["prompt_tokens"] += prompt
            usage["completion_tokens"] += done
            usage["total_tokens"] += prompt + done
        finish = choice.get("finish_reason") or ("tool_calls" if answer["tool_calls"] else "stop")
        return answer, str(finish)

    async def _finish(
        self,
        ctx: TurnContext,
        req: TurnRequest,
        answer: dict[str, Any],
        finish: str,
        usage: dict[str, int],
        produced: list[tuple[dict[str, Any], str]],
    ) -> TurnResult:
        produced.append((answer, "api_response"))
        answer_id = await self._save(ctx, produced) if req.save else new_id()
        return TurnResult(
            id=answer_id,
            session_id=req.session_id,
            message=answer,
            finish_reason=finish,
            usage=usage,
            docs=ctx.docs,
            model=ctx.model,
            created_at=now(),
        )
