"""The effect executor against a scripted OpenAI-compatible model server on loopback, local fakes of
the providers, and the real database (the shared `server` fixture's runtime): prompts (unwrap,
server-side and function tools, response formats, rate limits), tool calls, embeddings, search,
and the execution context the executor runs with."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import yaml
from psycopg.types.json import Jsonb

from fakes import brave, openai_images
from fakes.httpserver import FakeHttpServer, Request, Response
from fakes.toolkit import LoopbackOnlyTransport
from mintleaf_server.documents import store as docstore
from mintleaf_server.dsl.parse import parse_task
from mintleaf_server.engine import (
    EffectDone,
    EffectFailed,
    EffectSuspended,
    Environment,
    Fail,
    Finish,
    Machine,
    OpenWait,
    Resume,
    RunEffect,
    Start,
    unwrap_completion,
)
from mintleaf_server.engine.executors import EffectExecutor
from mintleaf_server.engine.resolve import ExecutionContext, ExecutionContextError, load_execution_context
from mintleaf_server.llm import ErrorReply, ModelRegistry, Reply, RetryPolicy, ScriptedModelServer, ToolCall
from mintleaf_server.store.base import new_id
from support.harness import ServerThread

STEP = {"workflow": "main", "loc": [], "index": 0, "path": "main[0]", "label": ""}
WEATHER_PARAMS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedModelServer]:
    model = ScriptedModelServer()
    with model.run_in_thread():
        yield model


@pytest.fixture
def model(scripted: ScriptedModelServer) -> ScriptedModelServer:
    scripted.reset()
    return scripted


class FakeEmbedder:
    """Deterministic bag-of-words vectors (texts sharing words are close)."""

    model = "fake-hash-64"
    dimensions = 64

    def __init__(self) -> None:
        self.inputs: list[str] = []

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.inputs += texts
        out = []
        for text in texts:
            v = [0.0] * self.dimensions
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                if word == "title":
                    continue
                h = int.from_bytes(hashlib.sha1(word.encode()).digest()[:4], "big")
                v[h % self.dimensions] += 1.0 if h & 1 << 31 else -1.0
            norm = math.sqrt(sum(x * x for x in v)) or 1.0
            out.append([x / norm for x in v])
        return out


class TestRuntime:
    """The server's runtime with some attributes replaced (models, settings, embedder, db)."""

    __test__ = False

    def __init__(self, base: Any, **overrides: Any) -> None:
        self._base = base
        self.__dict__.update(overrides)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)


def runtime_for(
    server: ServerThread,
    model: ScriptedModelServer,
    *,
    integrations: dict[str, Any] | None = None,
    retry: RetryPolicy | None = None,
    **overrides: Any,
) -> TestRuntime:
    base = server.app.runtime
    settings = dataclasses.replace(
        base.settings, integrations=integrations or {}, api_call_allow_networks=("127.0.0.0/8",)
    )
    registry = ModelRegistry.scripted(model.base_url, retry=retry)
    _OPEN.append(registry)
    return TestRuntime(base, models=registry, settings=settings, **overrides)


def task_doc(text: str) -> dict[str, Any]:
    doc = yaml.safe_load(text)
    assert isinstance(doc, dict)
    return doc


SIMPLE_TASK = """\
name: Effects
main:
  - prompt: hello
"""


async def seed(
    rt: Any,
    *,
    task: str = SIMPLE_TASK,
    agent_tools: list[dict[str, Any]] = (),  # type: ignore[assignment]
    agent_model: str = "",
    default_settings: dict[str, Any] | None = None,
    agent_metadata: dict[str, Any] | None = None,
    task_metadata: dict[str, Any] | None = None,
    secrets: dict[str, str] | None = None,
) -> ExecutionContext:
    """Store a developer, agent (with tools), task, version and secrets; resolve the context."""
    dev = (await rt.auth.create_key()).developer_id
    agent_id, task_id = new_id(), new_id()
    doc = task_doc(task)
    parse_task(doc, agent_tools=[t["name"] for t in agent_tools])  # the API validated it
    async with rt.db.connection() as conn:
        await conn.execute(
            "INSERT INTO agents (developer_id, id, name, project, model, default_settings, metadata)"
            " VALUES (%s, %s, %s, '', %s, %s, %s)",
            (
                dev,
                agent_id,
                "Effector",
                agent_model,
                Jsonb(default_settings or {}),
                Jsonb(agent_metadata or {}),
            ),
        )
        for t in agent_tools:
            kind = t["type"]
            await conn.execute(
                "INSERT INTO tools (developer_id, id, agent_id, name, type, description, spec)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (dev, new_id(), agent_id, t["name"], kind, t.get("description", ""), Jsonb(t[kind])),
            )
        task_row = await (
            await conn.execute(
                "INSERT INTO tasks (developer_id, id, agent_id, latest_version, metadata)"
                " VALUES (%s, %s, %s, 1, %s) RETURNING *",
                (dev, task_id, agent_id, Jsonb(task_metadata or {})),
            )
        ).fetchone()
        version_row = await (
            await conn.execute(
                "INSERT INTO task_versions (developer_id, task_id, version, name, definition, explain)"
                " VALUES (%s, %s, 1, %s, %s, '{}') RETURNING *",
                (dev, task_id, doc["name"], Jsonb(doc)),
            )
        ).fetchone()
        for name, value in (secrets or {}).items():
            await conn.execute(
                "INSERT INTO secrets (developer_id, id, name, value) VALUES (%s, %s, %s, %s)",
                (dev, new_id(), name, value),
            )
        assert task_row is not None and version_row is not None
        return await load_execution_context(rt, conn, dev, new_id(), task_row, version_row, agent_id)


def request(ctx: ExecutionContext, kind: str, **body: Any) -> dict[str, Any]:
    return {
        "kind": kind,
        "effect_id": "e1",
        "attempt": 1,
        "step": dict(STEP),
        "execution_id": str(ctx.execution_id),
        "developer_id": str(ctx.developer_id),
        **body,
    }


def prompt(ctx: ExecutionContext, text: str = "hello", **body: Any) -> dict[str, Any]:
    body.setdefault("tools", "all")
    body.setdefault("tool_choice", None)
    body.setdefault("settings", None)
    body.setdefault("unwrap", False)
    body.setdefault("auto_run_tools", True)
    body.setdefault("disable_cache", False)
    return request(ctx, "prompt", messages=[{"role": "user", "content": text}], **body)


# Model clients and transports made by a scenario, closed when it ends (sockets left open are
# ResourceWarnings, and warnings are errors).
_OPEN: list[Any] = []


def loopback() -> LoopbackOnlyTransport:
    transport = LoopbackOnlyTransport()
    _OPEN.append(transport)
    return transport


async def _close_all() -> None:
    while _OPEN:
        item = _OPEN.pop()
        await (item.aclose() if hasattr(item, "aclose") else item.close())


def run(server: ServerThread, scenario: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return server.call(scenario(), timeout=90)
    finally:
        server.call(_close_all())


BRAVE_TOOL = {
    "name": "web_search",
    "type": "integration",
    "description": "search the web",
    "integration": {"provider": "brave", "setup": {"api_key": "$ secrets.BRAVE_KEY"}},
}
WEATHER_TOOL = {
    "name": "get_weather",
    "type": "function",
    "function": {"description": "the weather in a city", "parameters": WEATHER_PARAMS},
}
TIME_TOOL = {"name": "get_time", "type": "function", "function": {"description": "the local time"}}


# -- the execution context ---------------------------------------------------------------------


def test_context_resolves_tools_once_and_round_trips(
    server: ServerThread, model: ScriptedModelServer
) -> None:
    task = """\
name: Tools
metadata: {x-integrations-setup: {web_search: {api_key: from-task}}}
tools:
  - name: lookup
    function: {description: the task's own lookup}
main:
  - tool: lookup
"""
    lookup_agent = {
        "name": "lookup",
        "type": "api_call",
        "api_call": {"method": "GET", "url": "http://127.0.0.1:9/x"},
    }

    async def scenario() -> None:
        rt = runtime_for(server, model)
        ctx = await seed(
            rt,
            task=task,
            agent_tools=[BRAVE_TOOL, lookup_agent],
            agent_model="gpt-4o",
            agent_metadata={"team": "a"},
            secrets={"BRAVE_KEY": brave.KEY},
        )
        # agent tools inherited, the task's `lookup` shadows the agent's
        assert sorted(ctx.tools) == ["lookup", "web_search"]
        assert ctx.tools["lookup"].type == "function" and ctx.tools["web_search"].type == "integration"
        assert ctx.secrets == {"BRAVE_KEY": brave.KEY}
        assert ctx.agent["model"] == "gpt-4o" and ctx.agent["metadata"] == {"team": "a"}
        assert ctx.setup_sources == [{"team": "a"}, task_doc(task)["metadata"]]
        assert ctx.task["name"] == "Tools" and ctx.task["inherit_tools"] is True

        stored = ctx.to_json()
        assert "secrets" not in stored and brave.KEY not in json.dumps(stored)
        again = ExecutionContext.from_json(json.loads(json.dumps(stored)), secrets={"BRAVE_KEY": "new"})
        assert list(again.tools) == list(ctx.tools)
        assert again.tools["lookup"].type == "function" and again.secrets == {"BRAVE_KEY": "new"}
        assert again.developer_id == ctx.developer_id and again.execution_id == ctx.execution_id
        assert ExecutionContext.from_json(ctx.to_json(include_secrets=True)).secrets == ctx.secrets

        # inherit_tools: false → only the task's tools
        own = await seed(
            rt, task=task.replace("tools:\n", "inherit_tools: false\ntools:\n", 1), agent_tools=[BRAVE_TOOL]
        )
        assert list(own.tools) == ["lookup"]

        # a vanished agent is a clear error
        async with rt.db.connection() as conn:
            with pytest.raises(ExecutionContextError, match="not found"):
                await load_execution_context(
                    rt, conn, ctx.developer_id, new_id(), {"id": new_id()}, {"definition": {}}, uuid.uuid4()
                )
        with pytest.raises(ExecutionContextError):
            ExecutionContext.from_json({"v": 99})

    run(server, scenario)


# -- prompt ------------------------------------------------------------------------------------


def test_prompt_returns_the_whole_completion_and_unwraps(
    server: ServerThread, model: ScriptedModelServer
) -> None:
    async def scenario() -> None:
        rt = runtime_for(server, model)
        ctx = await seed(rt, agent_model="gpt-4o", default_settings={"temperature": 0.2, "top_p": 0.5})
        ex = EffectExecutor(rt, ctx)
        model.script(Reply(text="Hello Ada"))
        result = await ex.run(prompt(ctx, "Say hello to Ada", settings={"max_tokens": 50, "top_p": None}))
        assert isinstance(result, EffectDone), result
        out = result.output
        assert out["choices"][0]["message"]["content"] == "Hello Ada" and out["usage"]["total_tokens"] > 0
        assert unwrap_completion(out) == "Hello Ada"  # what the machine does for unwrap: true
        assert result.metadata["model"] == "gpt-4o" and result.metadata["tool_rounds"] == 0
        assert result.metadata["usage"] == out["usage"]
        sent = model.chat_requests[-1]
        assert sent["model"] == "gpt-4o" and sent["messages"] == [
            {"role": "user", "content": "Say hello to Ada"}
        ]
        # agent defaults overlaid by the step's settings; a step null unsets an agent default
        assert sent["temperature"] == 0.2 and sent["max_tokens"] == 50 and "top_p" not in sent
        assert "tools" not in sent  # the execution has no tools

        # a step's settings may pick the model; an agent without one gets the configured default
        bare = await seed(rt)
        model.script(Reply(text="x"))
        done = await EffectExecutor(rt, bare).run(prompt(bare, settings={"model": "scripted"}))
        assert isinstance(done, EffectDone) and model.chat_requests[-1]["model"] == "scripted"
        model.script(Reply(text="y"))
        done = await EffectExecutor(rt, bare).run(prompt(bare))
        assert isinstance(done, EffectDone) and model.chat_requests[-1]["model"] == "gpt-4o-mini"

    run(server, scenario)


def test_prompt_runs_server_side_tools_and_feeds_results_back(
    server: ServerThread, model: ScriptedModelServer
) -> None:
    async def scenario() -> None:
        async with FakeHttpServer(brave.handler) as srv:
            rt = runtime_for(server, model, integrations={"brave": {"base_url": srv.url}})
            ctx = await seed(rt, agent_tools=[BRAVE_TOOL, WEATHER_TOOL], secrets={"BRAVE_KEY": brave.KEY})
            ex = EffectExecutor(rt, ctx, transport=loopback())
            model.script(
                Reply(tool_calls=[ToolCall("web_search", {"query": "turing"}, id="call_s1")]),
                Reply(text="Turing founded computer science."),
            )
            result = await ex.run(prompt(ctx, "Who was Turing?"))
            assert isinstance(result, EffectDone), result
            assert unwrap_completion(result.output) == "Turing founded computer science."
            assert result.metadata["tool_rounds"] == 1 and result.metadata["tools_run"] == ["web_search"]
            assert srv.requests[0].query["q"] == "turing"
        first, second = model.chat_requests
        offered = {t["function"]["name"]: t for t in first["tools"]}
        assert set(offered) == {"web_search", "get_weather"}  # every kind, as OpenAI functions
        assert offered["get_weather"]["function"]["parameters"] == WEATHER_PARAMS
        assert second["messages"][1]["role"] == "assistant"
        assert second["messages"][1]["tool_calls"][0]["id"] == "call_s1"
        tool_message = second["messages"][2]
        assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "call_s1"
        assert "Title: About turing" in tool_message["content"]
        # usage covers both model calls
        assert result.metadata["usage"]["total_tokens"] > result.output["usage"]["total_tokens"]

    run(server, scenario)


def test_prompt_with_function_tools_suspends_and_resumes(
    server: ServerThread, model: ScriptedModelServer
) -> None:
    async def scenario() -> None:
        rt = runtime_for(server, model)
        ctx = await seed(rt, agent_tools=[WEATHER_TOOL, TIME_TOOL])
        ex = EffectExecutor(rt, ctx)
        model.script(
            Reply(
                text="Let me check.",
                tool_calls=[
                    ToolCall("get_weather", {"city": "Paris"}, id="call_w"),
                    ToolCall("get_time", {}, id="call_t"),
                ],
            )
        )
        req = prompt(ctx, "Weather and time in Paris?")
        suspended = await ex.run(req)
        assert isinstance(suspended, EffectSuspended), suspended
        assert suspended.resume == "effect"
        assert suspended.tool_calls == [
            {"id": "call_w", "type": "function", "name": "get_weather", "arguments": {"city": "Paris"}},
            {"id": "call_t", "type": "function", "name": "get_time", "arguments": {}},
        ]
        continuation = json.loads(json.dumps(suspended.continuation))  # it is stored as JSON
        assert continuation["rounds"] == 1 and continuation["pending"] == ["call_w", "call_t"]

        # all results arrive, by id, in any order
        model.script(Reply(text="20 degrees at noon."))
        resumed = {
            **req,
            "resume": {"continuation": continuation, "results": {"call_t": "12:00", "call_w": {"temp": 20}}},
        }
        result = await ex.run(resumed)
        assert isinstance(result, EffectDone), result
        assert unwrap_completion(result.output) == "20 degrees at noon."
        assert result.metadata["tool_rounds"] == 1
        messages = model.chat_requests[-1]["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool"]
        assert messages[1]["content"] == "Let me check." and len(messages[1]["tool_calls"]) == 2
        assert {m["tool_call_id"]: m["content"] for m in messages[2:]} == {
            "call_w": '{"temp": 20}',
            "call_t": "12:00",
        }
        # usage: both model calls
        assert result.metadata["usage"]["total_tokens"] > result.output["usage"]["total_tokens"]

        # a missing result is a clear, final failure
        partial = {**req, "resume": {"continuation": continuation, "results": {"call_w": {"temp": 20}}}}
        failed = await ex.run(partial)
        assert isinstance(failed, EffectFailed)
        assert failed.error["kind"] == "tool_results_missing" and "call_t" in failed.error["message"]
        assert failed.error["retryable"] is False

    run(server, scenario)


def test_mixed_turn_runs_server_tools_then_waits_for_functions(
    server: ServerThread, model: ScriptedModelServer
) -> None:
    async def scenario() -> None:
        async with FakeHttpServer(brave.handler) as srv:
            rt = runtime_for(server, model, integrations={"brave": {"base_url": srv.url}})
            ctx = await seed(rt, agent_tools=[BRAVE_TOOL, WEATHER_TOOL], secrets={"BRAVE_KEY": brave.KEY})
            ex = EffectExecutor(rt, ctx, transport=loopback())
            model.script(
                Reply(
                    tool_calls=[
                        ToolCall("web_search", {"query": "paris"}, id="call_s"),
                        ToolCall("get_weather", {"city": "Paris"}, id="call_w"),
                        ToolCall("no_such_tool", {}, id="call_x"),
                    ]
                )
            )
            req = prompt(ctx, "Tell me about Paris")
            suspended = await ex.run(req)
            assert isinstance(suspended, EffectSuspended), suspended
            assert [c["id"] for c in suspended.tool_calls] == ["call_w"]
            assert len(srv.requests) == 1  # the server-side call ran once, before the pause
            model.script(Reply(text="Paris is sunny."))
            # one call pending: the bare output is accepted as its result
            result = await ex.run(
                {**req, "resume": {"continuation": suspended.continuation, "results": "sunny"}}
            )
            assert isinstance(result, EffectDone), result
            assert len(srv.requests) == 1  # not run again on resume
        messages = model.chat_requests[-1]["messages"]
        tools = {m["tool_call_id"]: m["content"] for m in messages if m["role"] == "tool"}
        assert set(tools) == {"call_s", "call_w", "call_x"}
        assert "Title: About paris" in tools["call_s"] and tools["call_w"] == "sunny"
        assert json.loads(tools["call_x"])["error"]["kind"] == "tool_not_found"

    run(server, scenario)


def test_prompt_tool_options(server: ServerThread, model: ScriptedModelServer) -> None:
    task = """\
name: Inline
main:
  - prompt: hi
    tools:
      - name: shout
        function:
          description: shout it
          parameters: {type: object, properties: {text: {type: string}}}
"""

    async def scenario() -> None:
        rt = runtime_for(server, model)
        ctx = await seed(rt, task=task, agent_tools=[WEATHER_TOOL, TIME_TOOL])
        ex = EffectExecutor(rt, ctx)
        # inline definitions of the step (found by the executor from the task definition)
        model.script(Reply(text="ok"))
        done = await ex.run(
            prompt(ctx, tools=[{"inline": 0, "name": "shout"}], tool_choice={"function": {"name": "shout"}})
        )
        assert isinstance(done, EffectDone), done
        sent = model.chat_requests[-1]
        assert [t["function"]["name"] for t in sent["tools"]] == ["shout"]
        assert sent["tool_choice"] == {"type": "function", "function": {"name": "shout"}}
        # named tools of the execution
        model.script(Reply(text="ok"))
        assert isinstance(await ex.run(prompt(ctx, tools=["get_time"], tool_choice="auto")), EffectDone)
        assert [t["function"]["name"] for t in model.chat_requests[-1]["tools"]] == ["get_time"]
        missing = await ex.run(prompt(ctx, tools=["nope"]))
        assert isinstance(missing, EffectFailed) and missing.error["kind"] == "tool_not_found"

        # auto_run_tools: false → the completion, tool calls and all, is the output
        model.script(Reply(tool_calls=[ToolCall("get_time", {}, id="call_1")]))
        raw = await ex.run(prompt(ctx, auto_run_tools=False))
        assert isinstance(raw, EffectDone)
        assert raw.output["choices"][0]["finish_reason"] == "tool_calls"

        # bounded rounds
        limited = EffectExecutor(rt, ctx, max_tool_rounds=1)
        model.script(
            Reply(tool_calls=[ToolCall("no_such_tool", {}, id="c1")]),
            Reply(tool_calls=[ToolCall("no_such_tool", {}, id="c2")]),
        )
        over = await limited.run(prompt(ctx))
        assert isinstance(over, EffectFailed) and over.error["kind"] == "tool_rounds"
        assert over.error["retryable"] is False

    run(server, scenario)


def test_prompt_response_format(server: ServerThread, model: ScriptedModelServer) -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}

    async def scenario() -> None:
        rt = runtime_for(server, model)
        ctx = await seed(rt)
        ex = EffectExecutor(rt, ctx)
        model.script(Reply.json({"title": "Dune"}))
        settings = {"response_format": {"type": "json_schema", "name": "book", "schema": schema}}
        done = await ex.run(prompt(ctx, settings=settings))
        assert isinstance(done, EffectDone), done
        assert json.loads(unwrap_completion(done.output)) == {"title": "Dune"}
        assert model.chat_requests[-1]["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "book", "schema": schema},
        }
        model.script(Reply.json({"a": 1}))
        done = await ex.run(prompt(ctx, settings={"response_format": {"type": "json_object"}}))
        assert isinstance(done, EffectDone)
        assert model.chat_requests[-1]["response_format"] == {"type": "json_object"}
        bad = await ex.run(prompt(ctx, settings={"response_format": "yaml"}))
        assert isinstance(bad, EffectFailed) and bad.error["kind"] == "invalid_request"

    run(server, scenario)


def test_prompt_rate_limits_and_model_errors(server: ServerThread, model: ScriptedModelServer) -> None:
    async def scenario() -> None:
        rt = runtime_for(server, model)
        ctx = await seed(rt)
        model.script(ErrorReply(429, "slow down", retry_after=0.4), Reply(text="finally"))
        started = time.monotonic()
        done = await EffectExecutor(rt, ctx).run(prompt(ctx))
        assert isinstance(done, EffectDone), done
        assert time.monotonic() - started >= 0.4  # the client waited as the server asked
        assert unwrap_completion(done.output) == "finally" and len(model.chat_requests) == 2

        once = runtime_for(server, model, retry=RetryPolicy(max_attempts=1))
        cases = [
            (ErrorReply(429, "slow down"), "rate_limit", True),
            (ErrorReply(503, "overloaded"), "unavailable", True),
            (ErrorReply(401, "bad key"), "auth", False),
            (ErrorReply(400, "bad temperature"), "bad_request", False),
            (ErrorReply(404, "no such model"), "model_not_found", False),
        ]
        for reply, kind, retryable in cases:
            model.script(reply)
            failed = await EffectExecutor(once, ctx).run(prompt(ctx))
            assert isinstance(failed, EffectFailed), (reply, failed)
            assert failed.error["kind"] == kind and failed.error["retryable"] is retryable, failed.error
            assert failed.effect_id == "e1" and failed.error["message"]
        unrouted = TestRuntime(server.app.runtime, models=ModelRegistry([], default_model="gpt-4o"))
        failed = await EffectExecutor(unrouted, ctx).run(prompt(ctx))
        assert isinstance(failed, EffectFailed) and failed.error["kind"] == "model_not_found"
        none = TestRuntime(server.app.runtime, models=None)
        failed = await EffectExecutor(none, ctx).run(prompt(ctx))
        assert isinstance(failed, EffectFailed) and failed.error["kind"] == "models_unavailable"

    run(server, scenario)


# -- tool_call ---------------------------------------------------------------------------------


def test_tool_call_steps(server: ServerThread, model: ScriptedModelServer) -> None:
    def echo(request: Request) -> Response:
        return Response.json(
            {"path": request.path, "query": request.query, "auth": request.headers.get("authorization")}
        )

    async def scenario() -> None:
        async with FakeHttpServer(openai_images.handler) as images, FakeHttpServer(echo) as api:
            rt = runtime_for(server, model, integrations={"dalle": {"base_url": f"{images.url}/v1"}})
            image_tool = {
                "name": "image_generator",
                "type": "integration",
                "integration": {"provider": "dalle", "method": "generate_image"},
            }
            api_tool = {
                "name": "svc",
                "type": "api_call",
                "api_call": {
                    "method": "GET",
                    "url": api.url + "/items/{{ arguments.params.id }}",
                    "headers": {"Authorization": "Bearer {{ secrets.TOKEN }}"},
                },
            }
            ctx = await seed(
                rt,
                agent_tools=[image_tool, api_tool, WEATHER_TOOL],
                # setup from the agent's metadata (JULEP-SPEC 7.5)
                agent_metadata={"x-integrations-setup": {"image_generator": {"api_key": openai_images.KEY}}},
                secrets={"TOKEN": "tok-123456"},
            )
            ex = EffectExecutor(rt, ctx, transport=loopback())

            call = request(
                ctx, "tool_call", tool="get_weather", arguments={"city": "Oslo"}, call_id="call_abc"
            )
            paused = await ex.run(call)
            assert isinstance(paused, EffectSuspended) and paused.resume == "output"
            assert paused.tool_calls == [
                {"id": "call_abc", "type": "function", "name": "get_weather", "arguments": {"city": "Oslo"}}
            ]

            done = await ex.run(
                request(
                    ctx, "tool_call", tool="image_generator", arguments={"description": "a cat"}, call_id="c"
                )
            )
            assert isinstance(done, EffectDone), done
            assert done.output["image"]["url"].startswith("https://images.example/")
            assert (
                done.metadata["tool"] == "image_generator" and images.requests[-1].json()["prompt"] == "a cat"
            )

            done = await ex.run(
                request(ctx, "tool_call", tool="svc", arguments={"params": {"id": "7"}}, call_id="c")
            )
            assert isinstance(done, EffectDone), done
            assert done.output["status_code"] == 200
            assert done.output["json"] == {
                "path": "/items/7",
                "query": {"id": "7"},
                "auth": "Bearer tok-123456",
            }

            missing = await ex.run(request(ctx, "tool_call", tool="nope", arguments={}, call_id="c"))
            assert isinstance(missing, EffectFailed) and missing.error["kind"] == "tool_not_found"

            # a provider's refusal is a tool error, not a crash
            bad_ctx = await seed(
                rt,
                agent_tools=[image_tool],
                agent_metadata={"x-integrations-setup": {"image_generator": {"api_key": "sk-wrong"}}},
            )
            bad = await EffectExecutor(rt, bad_ctx, transport=loopback()).run(
                request(
                    bad_ctx, "tool_call", tool="image_generator", arguments={"description": "x"}, call_id="c"
                )
            )
            assert isinstance(bad, EffectFailed), bad
            assert bad.error["kind"] == "integration_error" and bad.error["retryable"] is False
            assert "sk-wrong" not in bad.error["message"]

    run(server, scenario)


# -- embed and search --------------------------------------------------------------------------


def test_embed(server: ServerThread, model: ScriptedModelServer) -> None:
    async def scenario() -> None:
        none = runtime_for(server, model, embedder=None)
        ctx = await seed(none)
        failed = await EffectExecutor(none, ctx).run(
            request(ctx, "embed", text=["a"], embed_instruction=None)
        )
        assert isinstance(failed, EffectFailed)
        assert failed.error["kind"] == "embeddings_unavailable" and failed.error["retryable"] is False
        assert "embedding backend" in failed.error["message"]

        embedder = FakeEmbedder()
        rt = runtime_for(server, model, embedder=embedder)
        done = await EffectExecutor(rt, ctx).run(
            request(ctx, "embed", text=["red apples", "green pears"], embed_instruction="Represent:")
        )
        assert isinstance(done, EffectDone), done
        vectors = done.output["vectors"]
        assert len(vectors) == 2 and all(len(v) == 64 for v in vectors)
        assert embedder.inputs == ["Represent:\nred apples", "Represent:\ngreen pears"]
        assert done.metadata == {"model": "fake-hash-64", "dimensions": 64}
        empty = await EffectExecutor(rt, ctx).run(
            request(ctx, "embed", text=["ok", " "], embed_instruction=None)
        )
        assert isinstance(empty, EffectFailed) and "text[1]" in empty.error["message"]

    run(server, scenario)


def test_search_the_agents_docs(server: ServerThread, model: ScriptedModelServer) -> None:
    def search(ctx: ExecutionContext, **body: Any) -> dict[str, Any]:
        defaults = {
            "mode": "text",
            "text": None,
            "vector": None,
            "limit": 10,
            "lang": "en-US",
            "confidence": 0.0,
            "alpha": 0.5,
            "mmr_strength": 0.0,
            "k_multiplier": 5,
            "trigram_similarity_threshold": None,
            "metadata_filter": {},
        }
        return request(ctx, "search", **{**defaults, **body})

    async def scenario() -> None:
        embedder = FakeEmbedder()
        rt = runtime_for(server, model, embedder=embedder)
        ctx = await seed(rt)
        other = await seed(rt)
        async with rt.db.connection() as conn:
            for owner_ctx, title, text, meta in (
                (ctx, "Apples", "Red apples grow on apple trees in orchards.", {"kind": "fruit"}),
                (ctx, "Engines", "Diesel engines compress air before injecting fuel.", {"kind": "tech"}),
                (other, "Apples too", "Another developer's apples.", {}),
            ):
                await docstore.create_doc(
                    conn,
                    developer_id=owner_ctx.developer_id,
                    owner=docstore.Owner("agent", owner_ctx.agent_id),
                    title=title,
                    content=text,
                    metadata=meta,
                    embedder=embedder,
                )
        ex = EffectExecutor(rt, ctx)
        done = await ex.run(search(ctx, text="apple orchards"))
        assert isinstance(done, EffectDone), done
        docs = done.output["docs"]
        assert [d["title"] for d in docs] == ["Apples"]  # only this agent's docs
        assert set(docs[0]) == {"id", "title", "snippet", "score", "metadata", "chunk_index"}
        assert docs[0]["metadata"] == {"kind": "fruit"} and "orchards" in docs[0]["snippet"]
        assert isinstance(done.output["time"], float)
        json.dumps(done.output)  # plain JSON for the transition

        done = await ex.run(search(ctx, mode="vector", text="diesel engines fuel"))
        assert isinstance(done, EffectDone), done
        assert done.output["docs"][0]["title"] == "Engines"
        done = await ex.run(search(ctx, mode="hybrid", text="apples", metadata_filter={"kind": "tech"}))
        assert isinstance(done, EffectDone), done
        assert [d["title"] for d in done.output["docs"]] in ([], ["Engines"])

        bad = await ex.run(search(ctx, text="x", limit=500))
        assert (
            isinstance(bad, EffectFailed)
            and bad.error["kind"] == "invalid_argument"
            and "limit" in bad.error["message"]
        )
        no_vectors = runtime_for(server, model, embedder=None)
        failed = await EffectExecutor(no_vectors, ctx).run(search(ctx, mode="vector", text="apples"))
        assert isinstance(failed, EffectFailed) and failed.error["kind"] == "embeddings_unavailable"

        class BrokenDb:
            def connection(self) -> Any:
                raise RuntimeError("pool exploded")

        broken = runtime_for(server, model, db=BrokenDb())
        crashed = await EffectExecutor(broken, ctx).run(search(ctx, text="apples"))
        assert isinstance(crashed, EffectFailed)
        assert crashed.error == {
            "kind": "internal",
            "message": "internal error: RuntimeError: pool exploded",
            "retryable": False,
        }
        odd = await ex.run({"kind": "teleport", "effect_id": "e9"})
        assert isinstance(odd, EffectFailed) and odd.error["kind"] == "invalid_request"

    run(server, scenario)


# -- through the step machine -------------------------------------------------------------------


async def drive(machine: Machine, ex: EffectExecutor, input: Any, answer: Callable[[OpenWait], Any]) -> Any:
    """A minimal worker: advance, run effects with the executor, answer waits with `answer`."""
    state, commands = machine.advance(None, Start(input=input, now_ms=1))
    for _ in range(50):
        event: Any = None
        for command in commands:
            if isinstance(command, Finish):
                return command.output
            if isinstance(command, Fail):
                raise AssertionError(f"the execution failed: {command.error}")
            if isinstance(command, RunEffect):
                event = await ex.run(command.request)
            if isinstance(command, OpenWait):
                event = Resume(wait_id=command.wait_id, input=answer(command), now_ms=3)
        assert event is not None, commands
        state, commands = machine.advance(state, event)
    raise AssertionError("the execution did not finish")


def test_machine_prompt_function_tool_round_trip(server: ServerThread, model: ScriptedModelServer) -> None:
    task = """\
name: Forecast
main:
  - prompt:
      - role: user
        content: "What is the weather in {{ _.city }}?"
    unwrap: true
  - evaluate:
      answer: _
"""

    async def scenario() -> None:
        rt = runtime_for(server, model)
        ctx = await seed(rt, task=task, agent_tools=[WEATHER_TOOL])
        parsed = parse_task(task_doc(task), agent_tools=["get_weather"])
        env = Environment(execution_id=str(ctx.execution_id), developer_id=str(ctx.developer_id))
        machine = Machine(parsed, env)
        ex = EffectExecutor(rt, ctx, step_at=machine.step_at)
        model.script(
            Reply(tool_calls=[ToolCall("get_weather", {"city": "Oslo"}, id="call_o")]),
            Reply(text="Snowy in Oslo."),
        )
        seen: list[OpenWait] = []

        def answer(wait: OpenWait) -> Any:
            seen.append(wait)
            return {c["id"]: {"forecast": "snow"} for c in wait.tool_calls}

        output = await drive(machine, ex, {"city": "Oslo"}, answer)
        assert output == {"answer": "Snowy in Oslo."}
        assert seen[0].kind == "tool_calls" and seen[0].tool_calls[0]["name"] == "get_weather"
        first, second = model.chat_requests
        assert first["messages"] == [{"role": "user", "content": "What is the weather in Oslo?"}]
        assert second["messages"][-1] == {
            "role": "tool",
            "tool_call_id": "call_o",
            "content": '{"forecast": "snow"}',
        }

    run(server, scenario)
