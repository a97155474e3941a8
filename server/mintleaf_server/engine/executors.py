"""The effect executor: runs the effects the step machine asks for (engine/effects.py describes the
requests) against models, tools and documents, and answers with the machine's events.

Design note. `EffectExecutor.run(request)` never raises: every outcome is an `EffectDone`,
`EffectFailed` (error = {kind, message, retryable}) or `EffectSuspended`. The machine owns retries
and unwrap; the executor owns one attempt (the model client retries 429/5xx inside it, honouring
`retry-after`, before the attempt fails as retryable).

A prompt step is a loop: call the model with the step's tools in OpenAI function format (every
model gets them: JULEP-SPEC 9.4); when `auto_run_tools` is on and the model calls tools, run the
server-side ones (integration, system, api_call) here and feed their results back as `tool`
messages, at most `max_tool_rounds` rounds; when it calls function tools, suspend with those calls
and a continuation (the messages so far, rounds and usage), and carry on from it when the machine
runs the effect again with the client's results. A retryable model failure after tool rounds
carries the same continuation in its error, and the step's retry resumes from it: a retry never
runs a server-side tool twice or asks the client again. Mixed turns run the server-side calls first and
suspend for the function calls only, so one resume completes the turn. Rejected: returning to the
machine after every round (a durable transition per tool call, and the machine would have to know
the model protocol), and re-running the whole prompt on resume (server-side tools would run twice).

Calls to unknown tools and arguments that are not a JSON object go back to the model as error
tool messages (it can correct itself) rather than failing the step.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import httpx
import psycopg

from mintleaf_server.documents import store as docstore
from mintleaf_server.documents.embeddings import embed_batched
from mintleaf_server.documents.errors import (
    DocumentsError,
    EmbeddingFailed,
    EmbeddingUnavailable,
    InvalidArgument,
)
from mintleaf_server.dsl.steps import Step
from mintleaf_server.dsl.tools import ToolDef
from mintleaf_server.engine.events import EffectDone, EffectFailed, EffectSuspended
from mintleaf_server.engine.resolve import ExecutionContext
from mintleaf_server.llm.client import merge_settings
from mintleaf_server.llm.errors import (
    ModelAuthError,
    ModelBadRequest,
    ModelConfigError,
    ModelContextOverflow,
    ModelError,
    ModelNotFound,
    ModelRateLimited,
    ModelResponseError,
    ModelTimeout,
    ModelUnavailable,
)
from mintleaf_server.tools import ToolContext, ToolError, run_tool, tool_schema
from mintleaf_server.tools.context import Resolver

__all__ = [
    "DEFAULT_MAX_TOOL_ROUNDS",
    "MAX_EMBED_TEXTS",
    "EffectExecutor",
    "EffectResult",
    "ExecutionContext",
    "StepLookup",
]

log = logging.getLogger("mintleaf.engine")

EffectResult = EffectDone | EffectFailed | EffectSuspended
StepLookup = Callable[[Mapping[str, Any]], Step]

DEFAULT_MAX_TOOL_ROUNDS = 8
MAX_EMBED_TEXTS = 128

# Settings keys the executor handles itself rather than passing to the model as-is.
_OWN_SETTINGS = ("model", "response_format", "tools", "tool_choice", "timeout")
# Message keys the OpenAI protocol knows; `continue` (Julep's prefill marker) is not sent.
_MESSAGE_KEYS = ("role", "content", "name", "tool_call_id", "tool_calls")


class _Failure(Exception):
    """An effect that cannot complete: becomes EffectFailed(kind, message, retryable)."""

    def __init__(self, kind: str, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retryable = retryable


def _model_failure(exc: ModelError) -> _Failure:
    """The model layer's errors as effect errors (retryable: rate limits, outages, timeouts)."""
    text = str(exc)
    if isinstance(exc, ModelRateLimited):
        return _Failure("rate_limit", text, True)
    if isinstance(exc, ModelTimeout):
        return _Failure("timeout", text, True)
    if isinstance(exc, ModelUnavailable):
        return _Failure("unavailable", text, True)
    if isinstance(exc, ModelContextOverflow):
        return _Failure("context_overflow", text)
    if isinstance(exc, ModelBadRequest):
        return _Failure("bad_request", text)
    if isinstance(exc, ModelAuthError):
        return _Failure("auth", text)
    if isinstance(exc, ModelNotFound):
        return _Failure("model_not_found", text)
    if isinstance(exc, ModelConfigError):
        return _Failure("model_config", text)
    if isinstance(exc, ModelResponseError):
        # A malformed answer from an endpoint (often a proxy hiccup): worth another attempt.
        return _Failure("bad_response", text, True)
    return _Failure("model_error", text)


def _tool_content(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)


def _response_format(value: Any) -> dict[str, Any] | None:
    """Settings' `response_format` in the OpenAI shape. Accepts the shorthands "json" /
    "json_object" / "text" and `{type: json_schema, schema: ...}` without the `json_schema`
    wrapper (Julep documents both spellings)."""
    if value is None:
        return None
    if isinstance(value, str):
        if value in ("json", "json_object"):
            return {"type": "json_object"}
        if value == "text":
            return {"type": "text"}
        raise _Failure("invalid_request", f"settings.response_format: unknown format {value!r}")
    if not isinstance(value, Mapping):
        raise _Failure("invalid_request", "settings.response_format must be an object or a string")
    out = dict(value)
    if out.get("type") == "json_schema" and "json_schema" not in out:
        schema = out.pop("schema", None)
        if not isinstance(schema, Mapping):
            raise _Failure("invalid_request", "settings.response_format: json_schema needs a schema")
        inner: dict[str, Any] = {"name": str(out.pop("name", "response")), "schema": dict(schema)}
        if "strict" in out:
            inner["strict"] = bool(out.pop("strict"))
        out["json_schema"] = inner
    return out


def _tool_choice(value: Any) -> Any:
    """`auto` / `none` / `required`, or a named function (`{function: {name}}` gets its `type`)."""
    if isinstance(value, Mapping):
        choice = dict(value)
        if "function" in choice and "type" not in choice:
            choice["type"] = "function"
        return choice
    return value


def _model_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A rendered prompt message as the model protocol takes it (unknown keys and nulls dropped;
    `content` is always present)."""
    out = {k: message[k] for k in _MESSAGE_KEYS if message.get(k) is not None}
    out.setdefault("content", None)
    return out


def _add_usage(total: dict[str, int], usage: Mapping[str, Any] | None) -> None:
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        total[key] = total.get(key, 0) + int((usage or {}).get(key) or 0)


class EffectExecutor:
    """Runs effect requests for one execution.

    `runtime` supplies `models` (a ModelRegistry), `embedder`, `db` and `settings`; `context` is
    the execution's resolved context. `step_at` finds the step a request names (pass
    `Machine.step_at`); without it the executor parses the task definition in the context. The
    `transport` / `resolver` are handed to tools (tests replace the network with them)."""

    def __init__(
        self,
        runtime: Any,
        context: ExecutionContext,
        *,
        step_at: StepLookup | None = None,
        max_tool_rounds: int = DEFAULT_MAX_TOOL_ROUNDS,
        transport: httpx.AsyncBaseTransport | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        if max_tool_rounds < 0:
            raise ValueError("max_tool_rounds must be at least 0")
        self.runtime = runtime
        self.context = context
        self.max_tool_rounds = max_tool_rounds
        self._step_at = step_at
        self.tool_context = ToolContext(
            developer_id=context.developer_id,
            runtime=runtime,
            secrets=context.secrets,
            setup_sources=context.setup_sources,
            transport=transport,
            resolver=resolver,
        )

    # -- entry point ---------------------------------------------------------------------------

    async def run(self, request: Mapping[str, Any]) -> EffectResult:
        """Run one effect request; never raises."""
        effect_id = str(request.get("effect_id", "")) if isinstance(request, Mapping) else ""
        try:
            if not isinstance(request, Mapping):
                raise _Failure("invalid_request", "the effect request is not an object")
            kind = request.get("kind")
            if kind == "prompt":
                return await self._prompt(effect_id, request)
            if kind == "tool_call":
                return await self._tool_call(effect_id, request)
            if kind == "embed":
                return await self._embed(effect_id, request)
            if kind == "search":
                return await self._search(effect_id, request)
            raise _Failure("invalid_request", f"unknown effect kind {kind!r}")
        except _Failure as exc:
            return self._failed(effect_id, exc.kind, exc.message, exc.retryable)
        except ModelError as exc:
            failure = _model_failure(exc)
            return self._failed(effect_id, failure.kind, failure.message, failure.retryable)
        except ToolError as exc:
            return EffectFailed(effect_id=effect_id, error=exc.to_dict())
        except Exception as exc:
            log.exception(
                "effect %s of execution %s failed unexpectedly", effect_id, self.context.execution_id
            )
            return self._failed(effect_id, "internal", f"internal error: {type(exc).__name__}: {exc}")

    @staticmethod
    def _failed(effect_id: str, kind: str, message: str, retryable: bool = False) -> EffectFailed:
        return EffectFailed(
            effect_id=effect_id, error={"kind": kind, "message": message, "retryable": retryable}
        )

    # -- tools ---------------------------------------------------------------------------------

    def step_at(self, ref: Mapping[str, Any]) -> Step:
        """The step a request names (for a prompt step's inline tools)."""
        if self._step_at is None:
            from mintleaf_server.dsl.parse import parse_task
            from mintleaf_server.engine.machine import Machine

            definition = self.context.task.get("definition")
            if not isinstance(definition, Mapping):
                raise _Failure("internal", "the execution context holds no task definition to find steps in")
            task = parse_task(definition, agent_tools=list(self.context.tools))
            self._step_at = Machine(task).step_at
        return self._step_at(ref)

    def _offered(self, request: Mapping[str, Any]) -> dict[str, ToolDef]:
        """The tools a prompt step offers the model (JULEP-SPEC 7.6)."""
        spec = request.get("tools", "all")
        if spec is None or spec == "all":
            return dict(self.context.tools)
        if not isinstance(spec, list):
            raise _Failure("invalid_request", f"prompt tools must be 'all' or a list, not {spec!r}")
        offered: dict[str, ToolDef] = {}
        for item in spec:
            if isinstance(item, str):
                tool = self.context.tools.get(item)
                if tool is None:
                    raise _Failure(
                        "tool_not_found", f"the prompt names tool {item!r}, which the execution does not have"
                    )
            elif isinstance(item, Mapping) and isinstance(item.get("inline"), int):
                step = self.step_at(request["step"])
                inline = getattr(step, "tools", ())
                index = item["inline"]
                candidate = inline[index] if isinstance(inline, tuple) and 0 <= index < len(inline) else None
                if not isinstance(candidate, ToolDef):
                    raise _Failure("internal", f"the step has no inline tool #{index}")
                tool = candidate
            else:
                raise _Failure("invalid_request", f"bad tool reference {item!r}")
            offered[tool.name] = tool
        return offered

    async def _run_server_tool(self, tool: ToolDef, arguments: Mapping[str, Any]) -> Any:
        try:
            return await run_tool(tool, arguments, self.tool_context)
        except ToolError as exc:
            return {"error": exc.to_dict()}

    # -- prompt --------------------------------------------------------------------------------

    async def _prompt(self, effect_id: str, request: Mapping[str, Any]) -> EffectResult:
        models = getattr(self.runtime, "models", None)
        if models is None:
            raise _Failure("models_unavailable", "no model layer is configured on this server")
        agent = self.context.agent
        settings = merge_settings(agent.get("default_settings") or {}, request.get("settings") or {})
        model = settings.get("model") or agent.get("model") or None
        response_format = _response_format(settings.get("response_format"))
        timeout = settings.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)):
            raise _Failure("invalid_request", "settings.timeout must be a number of seconds")
        call_settings = {k: v for k, v in settings.items() if k not in _OWN_SETTINGS}
        tool_choice = _tool_choice(request.get("tool_choice") or settings.get("tool_choice"))
        offered = self._offered(request)
        schemas = [tool_schema(t) for t in offered.values()]
        auto_run = bool(request.get("auto_run_tools", True))
        name = models.resolve(model).name

        usage: dict[str, int] = {}
        rounds = 0
        ran: list[str] = []
        resume = request.get("resume")
        if resume is not None:
            messages, rounds, usage, ran = self._resumed(resume)
        else:
            raw = request.get("messages")
            if not isinstance(raw, list) or not raw or not all(isinstance(m, Mapping) for m in raw):
                raise _Failure("invalid_request", "the prompt must be a non-empty list of messages")
            messages = [_model_message(m) for m in raw]

        while True:
            try:
                completion = await models.complete(
                    model,
                    messages,
                    settings=call_settings,
                    tools=schemas or None,
                    tool_choice=tool_choice,
                    response_format=response_format,
                    timeout=float(timeout) if timeout is not None else None,
                )
            except ModelError as exc:
                failure = _model_failure(exc)
                error: dict[str, Any] = {
                    "kind": failure.kind,
                    "message": failure.message,
                    "retryable": failure.retryable,
                }
                if failure.retryable and rounds:
                    # Tools already answered in this step (server-side ones run, a client's
                    # results): the step's retry carries on from here instead of asking again.
                    error["continuation"] = {
                        "messages": messages,
                        "pending": [],
                        "rounds": rounds,
                        "usage": usage,
                        "tools_run": ran,
                    }
                return EffectFailed(effect_id=effect_id, error=error)
            _add_usage(usage, completion.get("usage"))
            message = completion["choices"][0]["message"]
            calls = message.get("tool_calls") or []
            if not calls or not auto_run:
                metadata = {"model": name, "usage": usage, "tool_rounds": rounds}
                if ran:
                    metadata["tools_run"] = ran
                return EffectDone(effect_id=effect_id, output=completion, metadata=metadata)
            if rounds >= self.max_tool_rounds:
                raise _Failure(
                    "tool_rounds",
                    f"the model was still calling tools after {rounds} rounds (the limit is {self.max_tool_rounds})",
                )
            rounds += 1
            messages.append({"role": "assistant", "content": message.get("content"), "tool_calls": calls})
            pending = await self._answer_calls(calls, offered, messages, ran)
            if pending:
                continuation = {
                    "messages": messages,
                    "pending": [c["id"] for c in pending],
                    "rounds": rounds,
                    "usage": usage,
                    "tools_run": ran,
                }
                return EffectSuspended(
                    effect_id=effect_id, tool_calls=pending, resume="effect", continuation=continuation
                )

    async def _answer_calls(
        self,
        calls: Sequence[Mapping[str, Any]],
        offered: Mapping[str, ToolDef],
        messages: list[dict[str, Any]],
        ran: list[str],
    ) -> list[dict[str, Any]]:
        """Run the server-side calls (appending their tool messages); return the function calls
        the client must answer."""
        pending: list[dict[str, Any]] = []
        for call in calls:
            call_id = str(call.get("id") or "")
            function = call.get("function") or {}
            name = str(function.get("name") or "")
            tool = offered.get(name)
            if tool is None:
                result: Any = {
                    "error": {
                        "kind": "tool_not_found",
                        "message": f"there is no tool named {name!r}; the tools are: {', '.join(offered) or 'none'}",
                        "retryable": False,
                    }
                }
                messages.append({"role": "tool", "tool_call_id": call_id, "content": _tool_content(result)})
                continue
            raw_args = function.get("arguments")
            try:
                arguments = json.loads(raw_args) if isinstance(raw_args, str) and raw_args.strip() else {}
            except json.JSONDecodeError as exc:
                arguments = exc
            if not isinstance(arguments, dict):
                result = {
                    "error": {
                        "kind": "arguments_invalid",
                        "message": f"the arguments of {name!r} must be a JSON object",
                        "retryable": False,
                    }
                }
                messages.append({"role": "tool", "tool_call_id": call_id, "content": _tool_content(result)})
                continue
            if tool.type == "function":
                pending.append({"id": call_id, "type": "function", "name": name, "arguments": arguments})
                continue
            result = await self._run_server_tool(tool, arguments)
            ran.append(name)
            messages.append({"role": "tool", "tool_call_id": call_id, "content": _tool_content(result)})
        return pending

    def _resumed(self, resume: Any) -> tuple[list[dict[str, Any]], int, dict[str, int], list[str]]:
        """The conversation of a suspended prompt, with the client's results appended."""
        if not isinstance(resume, Mapping) or not isinstance(resume.get("continuation"), Mapping):
            raise _Failure("invalid_resume", "the resumed prompt has no continuation")
        cont = resume["continuation"]
        messages = cont.get("messages")
        pending = cont.get("pending")
        if not isinstance(messages, list) or not isinstance(pending, list):
            raise _Failure("invalid_resume", "the prompt's continuation is malformed")
        results = _results_by_id(resume.get("results"), [str(p) for p in pending])
        missing = [p for p in pending if p not in results]
        if missing:
            raise _Failure(
                "tool_results_missing",
                f"no result was submitted for tool call(s) {', '.join(map(str, missing))}",
            )
        out = [dict(m) for m in messages]
        for call_id in pending:
            out.append({"role": "tool", "tool_call_id": call_id, "content": _tool_content(results[call_id])})
        usage = {k: int(v) for k, v in (cont.get("usage") or {}).items()}
        return out, int(cont.get("rounds") or 0), usage, list(cont.get("tools_run") or [])

    # -- tool_call -----------------------------------------------------------------------------

    async def _tool_call(self, effect_id: str, request: Mapping[str, Any]) -> EffectResult:
        name = request.get("tool")
        tool = self.context.tools.get(name) if isinstance(name, str) else None
        if tool is None:
            raise _Failure(
                "tool_not_found",
                f"tool {name!r} is not one of this execution's tools ({', '.join(self.context.tools) or 'none'})",
            )
        arguments = request.get("arguments")
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, Mapping):
            raise _Failure("arguments_invalid", f"the arguments of tool {name!r} must be an object")
        if tool.type == "function":
            call = {
                "id": str(request.get("call_id") or ""),
                "type": "function",
                "name": tool.name,
                "arguments": dict(arguments),
            }
            return EffectSuspended(effect_id=effect_id, tool_calls=[call], resume="output")
        started = time.perf_counter()
        output = await run_tool(tool, arguments, self.tool_context)  # ToolError → EffectFailed in run()
        metadata = {
            "tool": tool.name,
            "tool_type": tool.type,
            "duration_s": round(time.perf_counter() - started, 6),
        }
        return EffectDone(effect_id=effect_id, output=output, metadata=metadata)

    # -- embed ---------------------------------------------------------------------------------

    async def _embed(self, effect_id: str, request: Mapping[str, Any]) -> EffectResult:
        texts = request.get("text")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts:
            raise _Failure("invalid_request", "embed needs a non-empty list of texts")
        if len(texts) > MAX_EMBED_TEXTS:
            raise _Failure(
                "invalid_request", f"embed takes at most {MAX_EMBED_TEXTS} texts, got {len(texts)}"
            )
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise _Failure("invalid_request", f"text[{i}] must be a non-empty string")
        embedder = getattr(self.runtime, "embedder", None)
        if embedder is None:
            raise _Failure(
                "embeddings_unavailable",
                "no embedding backend is configured on this server ([embeddings] backend in the configuration)",
            )
        instruction = request.get("embed_instruction")
        prefix = f"{instruction}\n" if isinstance(instruction, str) and instruction else ""
        try:
            vectors = await embed_batched(embedder, [prefix + t for t in texts])
        except EmbeddingUnavailable as exc:
            raise _Failure("embeddings_unavailable", str(exc)) from exc
        except EmbeddingFailed as exc:
            raise _Failure("embedding_failed", str(exc), True) from exc
        metadata = {"model": embedder.model, "dimensions": embedder.dimensions}
        return EffectDone(effect_id=effect_id, output={"vectors": vectors}, metadata=metadata)

    # -- search --------------------------------------------------------------------------------

    async def _search(self, effect_id: str, request: Mapping[str, Any]) -> EffectResult:
        started = time.perf_counter()
        vector = request.get("vector")
        text = request.get("text")
        mode = request.get("mode") or ("vector" if vector is not None and not text else "text")
        if mode not in ("text", "vector", "hybrid"):
            raise _Failure("invalid_argument", f"search mode must be text, vector or hybrid, not {mode!r}")
        threshold = request.get("trigram_similarity_threshold")
        owner = docstore.Owner("agent", self.context.agent_id)
        try:
            async with self.runtime.db.connection() as conn:
                results = await docstore.search(
                    conn,
                    developer_id=self.context.developer_id,
                    owners=[owner],
                    mode=cast(docstore.Mode, mode),
                    text=text if isinstance(text, str) else None,
                    vector=list(vector) if isinstance(vector, list | tuple) else None,
                    embedder=getattr(self.runtime, "embedder", None),
                    limit=int(request.get("limit") or 10),
                    confidence=float(request.get("confidence", 0.5)),
                    alpha=float(request.get("alpha", 0.5)),
                    mmr_strength=float(request.get("mmr_strength") or 0.0),
                    metadata_filter=request.get("metadata_filter") or None,
                    language=request.get("lang") or None,
                    k_multiplier=int(request.get("k_multiplier") or 5),
                    trigram_threshold=float(threshold) if threshold is not None else None,
                )
        except InvalidArgument as exc:
            raise _Failure("invalid_argument", f"search {exc.field}: {exc.message}") from exc
        except EmbeddingUnavailable as exc:
            raise _Failure("embeddings_unavailable", str(exc)) from exc
        except EmbeddingFailed as exc:
            raise _Failure("embedding_failed", str(exc), True) from exc
        except DocumentsError as exc:
            raise _Failure("search_failed", str(exc)) from exc
        except psycopg.OperationalError as exc:
            raise _Failure("unavailable", f"the database could not run the search: {exc}", True) from exc
        docs = [
            {
                "id": str(hit.doc.id),
                "title": hit.doc.title,
                "snippet": hit.chunk.content,
                "score": hit.score,
                "metadata": dict(hit.doc.metadata_ or {}),
                "chunk_index": hit.chunk.chunk_index,
            }
            for hit in results.hits
        ]
        output = {"docs": docs, "time": time.perf_counter() - started}
        return EffectDone(
            effect_id=effect_id, output=output, metadata={"mode": results.mode, "hits": len(docs)}
        )


def _results_by_id(results: Any, pending: Sequence[str]) -> dict[str, Any]:
    """The client's answer as {call_id: output}. Accepts `{call_id: output}`; a list of
    `{tool_call_id | id, output | result | content}`; or, when one call is pending, the bare
    output."""
    if isinstance(results, Mapping):
        if pending and all(p in results for p in pending):
            return {p: results[p] for p in pending}
        if len(pending) == 1:
            return {pending[0]: dict(results)}
        return {str(k): v for k, v in results.items()}
    if isinstance(results, list) and all(isinstance(r, Mapping) for r in results):
        out: dict[str, Any] = {}
        for item in results:
            call_id = item.get("tool_call_id") or item.get("id")
            if call_id is None:
                continue
            for key in ("output", "result", "content", "error"):
                if key in item:
                    out[str(call_id)] = item[key] if key != "error" else {"error": item["error"]}
                    break
        if out or len(pending) != 1:
            return out
    if len(pending) == 1:
        return {pending[0]: results}
    return {}
