from __future__ import annotations

import json
import math
import time

import pytest

from mintleaf_server.llm import (
    Disconnect,
    Endpoint,
    ErrorReply,
    ModelBadRequest,
    ModelConfigError,
    ModelContextOverflow,
    ModelNotFound,
    ModelRateLimited,
    ModelRegistry,
    ModelTimeout,
    ModelUnavailable,
    Reply,
    RetryPolicy,
    ScriptedModelServer,
    StreamDelta,
    StreamDone,
    ToolCall,
    merge_settings,
)

USER = [{"role": "user", "content": "Hello"}]


async def test_plain_reply_shape_and_settings(server: ScriptedModelServer, registry: ModelRegistry) -> None:
    server.script(Reply(text="Hi!"))
    settings = merge_settings(
        {"temperature": 0.7, "top_p": 0.9, "seed": 3}, {"top_p": None, "max_tokens": 50}
    )
    completion = await registry.complete("gpt-4o", USER, settings={**settings, "min_p": 0.1})
    assert completion["choices"] == [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "Hi!", "tool_calls": None},
        }
    ]
    assert completion["model"] == "gpt-4o"
    assert set(completion["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    sent = server.chat_requests[-1]
    assert sent["temperature"] == 0.7 and sent["max_tokens"] == 50 and sent["seed"] == 3
    assert "top_p" not in sent  # null in a later layer unsets it
    assert sent["min_p"] == 0.1  # non-OpenAI settings travel as extra body fields
    assert sent["messages"] == USER
    assert json.loads(json.dumps(completion)) == completion  # plain JSON values only


async def test_tool_calls(server: ScriptedModelServer, registry: ModelRegistry) -> None:
    server.script(
        Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"}, id="call_a"), ToolCall("noop")])
    )
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    completion = await registry.complete("gpt-4o", USER, tools=tools, tool_choice="auto")
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"][0] == {
        "id": "call_a",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    assert choice["message"]["tool_calls"][1]["id"].startswith("call_")
    assert server.chat_requests[-1]["tools"] == tools
    assert server.chat_requests[-1]["tool_choice"] == "auto"


async def test_tool_choice_dropped_without_tools(
    server: ScriptedModelServer, registry: ModelRegistry
) -> None:
    await registry.complete("gpt-4o", USER, tool_choice="auto")
    assert "tool_choice" not in server.chat_requests[-1]


async def test_json_mode(server: ScriptedModelServer, registry: ModelRegistry) -> None:
    server.script(Reply.json({"title": "A story"}))
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}}
    completion = await registry.complete("gpt-4o", USER, response_format=fmt)
    assert json.loads(completion["choices"][0]["message"]["content"]) == {"title": "A story"}
    assert server.chat_requests[-1]["response_format"] == fmt


async def test_prompt_contains_earlier_turns(server: ScriptedModelServer, registry: ModelRegistry) -> None:
    history: list[dict[str, str]] = []
    for turn in ("one", "two", "three"):
        history.append({"role": "user", "content": turn})
        completion = await registry.complete("gpt-4o-mini", history)
        history.append({"role": "assistant", "content": completion["choices"][0]["message"]["content"]})
    assert history[-1]["content"] == "Scripted reply to: three"
    assert [m["content"] for m in server.chat_requests[-1]["messages"]][:2] == [
        "one",
        "Scripted reply to: one",
    ]


async def test_stream_deltas_join_into_final_text(
    server: ScriptedModelServer, registry: ModelRegistry
) -> None:
    server.script(Reply(text="Once upon a time, there was a cat."))
    events = [e async for e in registry.stream("gpt-4o", USER, settings={"temperature": 0})]
    deltas = [e for e in events if isinstance(e, StreamDelta)]
    done = events[-1]
    assert isinstance(done, StreamDone)
    assert len(deltas) > 3
    assert "".join(d.text for d in deltas) == "Once upon a time, there was a cat."
    assert done.completion["choices"][0]["message"]["content"] == "Once upon a time, there was a cat."
    assert done.completion["choices"][0]["finish_reason"] == "stop"
    assert done.completion["usage"]["completion_tokens"] > 0
    assert server.chat_requests[-1]["stream_options"] == {"include_usage": True}


async def test_stream_tool_calls_assembled(server: ScriptedModelServer, registry: ModelRegistry) -> None:
    server.script(Reply(tool_calls=[ToolCall("search", {"query": "a long query about cats"}, id="call_s")]))
    events = [e async for e in registry.stream("gpt-4o", USER)]
    done = events[-1]
    assert isinstance(done, StreamDone)
    call = done.completion["choices"][0]["message"]["tool_calls"][0]
    assert call == {
        "id": "call_s",
        "type": "function",
        "function": {"name": "search", "arguments": '{"query": "a long query about cats"}'},
    }
    assert done.completion["choices"][0]["finish_reason"] == "tool_calls"


async def test_stream_retries_before_first_chunk(
    server: ScriptedModelServer, registry: ModelRegistry
) -> None:
    server.script(ErrorReply(503), Reply(text="ok now"))
    events = [e async for e in registry.stream("gpt-4o", USER)]
    assert isinstance(events[-1], StreamDone)
    assert events[-1].completion["choices"][0]["message"]["content"] == "ok now"


async def test_stream_broken_midway_is_an_error(server: ScriptedModelServer, registry: ModelRegistry) -> None:
    server.script(Reply(text="a b c d e f", break_after=2))
    seen: list[str] = []
    with pytest.raises(ModelUnavailable):
        async for event in registry.stream("gpt-4o", USER):
            if isinstance(event, StreamDelta):
                seen.append(event.text)
    assert seen == ["a ", "b "]
    assert len(server.chat_requests) == 1  # not replayed after deltas were yielded


async def test_429_with_retry_after_then_success(
    server: ScriptedModelServer, registry: ModelRegistry
) -> None:
    server.script(ErrorReply(429, "slow down", retry_after=0.3), Reply(text="finally"))
    started = time.monotonic()
    completion = await registry.complete("gpt-4o", USER)
    assert time.monotonic() - started >= 0.3  # honoured the hint, not the 10 ms backoff
    assert completion["choices"][0]["message"]["content"] == "finally"
    assert len(server.chat_requests) == 2


async def test_retry_after_ms_is_preferred(server: ScriptedModelServer, registry: ModelRegistry) -> None:
    server.script(ErrorReply(429, retry_after=30, retry_after_ms=50), Reply(text="ok"))
    started = time.monotonic()
    await registry.complete("gpt-4o", USER)
    assert time.monotonic() - started < 5


async def test_rate_limit_hint_too_long_gives_up(
    server: ScriptedModelServer, registry: ModelRegistry
) -> None:
    server.script(ErrorReply(429, "quota", retry_after=3600))
    with pytest.raises(ModelRateLimited) as info:
        await registry.complete("gpt-4o", USER)
    assert info.value.retry_after == 3600
    assert len(server.chat_requests) == 1


async def test_500_retries_exhausted(server: ScriptedModelServer, registry: ModelRegistry) -> None:
    server.script(*[ErrorReply(500, "boom")] * 3)
    with pytest.raises(ModelUnavailable) as info:
        await registry.complete("gpt-4o", USER)
    message = str(info.value)
    assert (
        "gpt-4o" in message
        and server.base_url in message
        and "HTTP 500" in message
        and "3 attempts" in message
    )
    assert info.value.status == 500 and info.value.attempts == 3
    assert len(server.chat_requests) == 3


async def test_connection_dropped_is_retried(server: ScriptedModelServer, registry: ModelRegistry) -> None:
    server.script(Disconnect(), Reply(text="back"))
    completion = await registry.complete("gpt-4o", USER)
    assert completion["choices"][0]["message"]["content"] == "back"


async def test_timeout(server: ScriptedModelServer) -> None:
    reg = ModelRegistry.scripted(server.base_url, retry=RetryPolicy(max_attempts=1))
    server.script(Reply(text="too late", delay=2.0))
    started = time.monotonic()
    try:
        with pytest.raises(ModelTimeout):
            await reg.complete("gpt-4o", USER, timeout=0.2)
    finally:
        await reg.aclose()
    assert time.monotonic() - started < 1.5


async def test_bad_request_and_context_overflow(server: ScriptedModelServer, registry: ModelRegistry) -> None:
    server.script(
        ErrorReply(400, "Unrecognized request argument: foo"),
        ErrorReply(400, "This model's maximum context length is 10 tokens", code="context_length_exceeded"),
    )
    with pytest.raises(ModelBadRequest, match="Unrecognized request argument"):
        await registry.complete("gpt-4o", USER)
    with pytest.raises(ModelContextOverflow):
        await registry.complete("gpt-4o", USER)
    assert len(server.chat_requests) == 2  # 4xx are not retried


async def test_key_never_leaks(server: ScriptedModelServer) -> None:
    secret = "sk-live-0123456789abcdef"
    reg = ModelRegistry.from_config(
        {"models": {"endpoints": [{"match": "*", "base_url": server.base_url, "api_key_env": "MY_KEY"}]}},
        env={"MY_KEY": secret},
    )
    server.script(
        ErrorReply(401, f"Incorrect API key provided: {secret}"), ErrorReply(400, f"bad key {secret}")
    )
    try:
        for _ in range(2):
            with pytest.raises(Exception) as info:
                await reg.complete("gpt-4o", USER)
            assert secret not in str(info.value)
        assert server.requests[0]["headers"]["authorization"] == f"Bearer {secret}"
        assert secret not in repr(reg.resolve("gpt-4o").endpoint)
    finally:
        await reg.aclose()


async def test_embeddings_deterministic_batched_and_similar(server: ScriptedModelServer) -> None:
    reg = ModelRegistry(
        [Endpoint(base_url=server.base_url, api_key="k", embedding_batch_size=2)], default_model="gpt-4o"
    )
    texts = ["the cat sat on the mat", "a cat sat on a mat", "stock market report", "cats on mats"]
    try:
        first = await reg.embed("text-embedding-3-small", texts, dimensions=64)
        again = await reg.embed("text-embedding-3-small", texts, dimensions=64)
        default_dims = await reg.embed("text-embedding-3-small", ["x"])
        assert await reg.embed("text-embedding-3-small", []) == []
    finally:
        await reg.aclose()
    assert first == again
    assert len(server.embedding_requests) == 5  # 2 batches twice + 1
    assert [len(v) for v in first] == [64] * 4 and len(default_dims[0]) == 1536
    for vec in first:
        assert math.isclose(sum(x * x for x in vec), 1.0, rel_tol=1e-5)

    def cos(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cos(first[0], first[1]) > cos(first[0], first[2])


def test_from_config_routing_and_windows() -> None:
    config = {
        "models": {
            "default": "gpt-4o-mini",
            "retry": {"max_attempts": 2},
            "endpoints": [
                {
                    "match": "gpt-*",
                    "base_url": "https://api.openai.com/v1/",
                    "api_key_env": "OPENAI_API_KEY",
                    "context_window": 100000,
                },
                {
                    "match": ["llama*", "qwen*"],
                    "base_url": "http://127.0.0.1:11434/v1",
                    "model": "llama3.2",
                    "headers": {"x-team": "a"},
                    "default_settings": {"temperature": 0.1},
                },
            ],
        }
    }
    reg = ModelRegistry.from_config(config, env={})
    resolved = reg.resolve(None)
    assert resolved.name == "gpt-4o-mini" and resolved.context_window == 100000
    assert (
        resolved.endpoint.base_url == "https://api.openai.com/v1"
        and resolved.endpoint.retry.max_attempts == 2
    )
    local = reg.resolve("qwen2")
    assert local.upstream == "llama3.2" and local.endpoint.default_settings == {"temperature": 0.1}
    assert local.context_window == 8192
    assert not reg.has_credentials("gpt-4o")
    assert ModelRegistry.from_config(config, env={"OPENAI_API_KEY": "k"}).has_credentials("gpt-4o")
    with pytest.raises(ModelNotFound):
        reg.resolve("claude-3")
    assert not reg.is_known("claude-3")
    # The section itself is accepted too; no endpoints means OpenAI through env.
    bare = ModelRegistry.from_config({}, env={"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"})
    assert bare.resolve("claude-3-opus").endpoint.base_url == "http://127.0.0.1:1/v1"
    assert bare.context_window("claude-3-opus") == 200000


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"match": "*"}, "models.endpoints[0].base_url"),
        ({"base_url": "ftp://x"}, "models.endpoints[0].base_url"),
        ({"base_url": "http://x", "colour": 1}, "unknown keys colour"),
        ({"base_url": "http://x", "context_window": -1}, "context_window"),
        ({"base_url": "http://x", "match": []}, "match"),
    ],
)
def test_from_config_errors_name_the_field(entry: dict[str, object], field: str) -> None:
    with pytest.raises(ModelConfigError, match=field.replace("[", r"\[").replace("]", r"\]")):
        ModelRegistry.from_config({"models": {"endpoints": [entry]}})


async def test_missing_key_env_is_a_config_error(server: ScriptedModelServer) -> None:
    reg = ModelRegistry.from_config(
        {"endpoints": [{"base_url": server.base_url, "api_key_env": "NOPE_KEY"}]}, env={}
    )
    with pytest.raises(ModelConfigError, match="NOPE_KEY is not set"):
        await reg.complete("gpt-4o", USER)
    assert server.requests == []
