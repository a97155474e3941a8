from __future__ import annotations

import base64
import json
import math
import struct
import subprocess
import sys
import urllib.request

import httpx
import pytest

from mintleaf_server.llm import ErrorReply, Reply, ScriptedModelServer, ToolCall, hash_embedding
from mintleaf_server.llm.scripted import default_reply, example_for_schema


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_plain_reply_and_recording(server: ScriptedModelServer) -> None:
    server.script("Hello there")
    async with httpx.AsyncClient() as http:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.2}
        resp = await http.post(f"{server.base_url}/chat/completions", json=body)
    assert resp.status_code == 200
    data = resp.json()
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "Hello there", "refusal": None}
    assert data["choices"][0]["finish_reason"] == "stop"
    assert data["model"] == "gpt-4o"
    assert (
        data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"]
    )
    assert server.chat_requests == [body]
    assert server.requests[0]["method"] == "POST"
    assert server.pending == 0


async def test_error_reply_carries_status_and_retry_after(server: ScriptedModelServer) -> None:
    server.script(
        ErrorReply(429, "slow down", retry_after=2, retry_after_ms=1500, code="rate_limit_exceeded")
    )
    async with httpx.AsyncClient() as http:
        resp = await http.post(
            f"{server.base_url}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        )
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "2"
    assert resp.headers["retry-after-ms"] == "1500"
    assert resp.json()["error"]["message"] == "slow down"
    assert resp.json()["error"]["code"] == "rate_limit_exceeded"


async def test_stream_sse_framing(server: ScriptedModelServer) -> None:
    server.script(Reply(text="one two three", tool_calls=[ToolCall("f", {"a": 1}, id="call_1")]))
    body = {
        "model": "m",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "x"}],
    }
    async with httpx.AsyncClient() as http:
        resp = await http.post(f"{server.base_url}/chat/completions", json=body)
    assert resp.headers["content-type"] == "text/event-stream"
    events = [line[len("data: ") :] for line in resp.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "one two three"
    args = "".join(
        tc["function"].get("arguments", "")
        for c in chunks
        if c["choices"]
        for tc in c["choices"][0]["delta"].get("tool_calls") or []
    )
    assert json.loads(args) == {"a": 1}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


async def test_models_embeddings_and_unknown_route(server: ScriptedModelServer) -> None:
    async with httpx.AsyncClient() as http:
        models = (await http.get(f"{server.base_url}/models")).json()
        emb = (
            await http.post(
                f"{server.base_url}/embeddings",
                json={
                    "model": "text-embedding-3-small",
                    "input": ["a", "b"],
                    "encoding_format": "base64",
                    "dimensions": 4,
                },
            )
        ).json()
        missing = await http.get(f"{server.base_url}/nope")
    assert "gpt-4o-mini" in [m["id"] for m in models["data"]]
    vec = list(struct.unpack("<4f", base64.b64decode(emb["data"][1]["embedding"])))
    assert vec == pytest.approx(hash_embedding("b", 4), abs=1e-6)
    assert missing.status_code == 404


def test_hash_embedding_is_deterministic_normalised_and_similar() -> None:
    a = hash_embedding("The cat sat on the mat", 256)
    assert a == hash_embedding("The cat sat on the mat", 256)
    assert math.isclose(math.sqrt(_cos(a, a)), 1.0)
    close = hash_embedding("A cat sat on a mat", 256)
    far = hash_embedding("Quarterly stock market earnings report", 256)
    assert _cos(a, close) > 0.4
    assert _cos(a, far) < 0.15
    assert hash_embedding("", 8) == [1.0, 0, 0, 0, 0, 0, 0, 0]


def test_default_reply_modes() -> None:
    msgs = [{"role": "user", "content": "tell me a story"}]
    assert default_reply({"messages": msgs}).text == "Scripted reply to: tell me a story"
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "panels": {"type": "array", "items": {"$ref": "#/$defs/p"}},
        },
        "$defs": {"p": {"type": "object", "properties": {"n": {"type": "integer"}}}},
    }
    reply = default_reply(
        {"messages": msgs, "response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}
    )
    assert json.loads(reply.text or "") == {"title": "example", "panels": [{"n": 0}]}
    assert json.loads(
        default_reply({"messages": msgs, "response_format": {"type": "json_object"}}).text or ""
    ) == {"answer": "Scripted reply to: tell me a story"}
    tool = {
        "type": "function",
        "function": {"name": "f", "parameters": {"type": "object", "properties": {"q": {"enum": ["x"]}}}},
    }
    call = default_reply(
        {"messages": msgs, "tools": [tool], "tool_choice": {"type": "function", "function": {"name": "f"}}}
    )
    assert call.tool_calls == [ToolCall("f", {"q": "x"})]
    after = [*msgs, {"role": "tool", "tool_call_id": "c", "content": "done"}]
    assert default_reply(
        {"messages": after, "tools": [tool], "tool_choice": {"function": {"name": "f"}}}
    ).text
    assert example_for_schema({"type": ["null", "boolean"]}) is True


def test_run_in_thread_from_sync_code() -> None:
    srv = ScriptedModelServer()
    with srv.run_in_thread() as running:
        running.script(Reply(text="from a thread"))
        req = urllib.request.Request(
            f"{running.base_url}/chat/completions",
            data=json.dumps({"model": "m", "messages": [{"role": "user", "content": "q"}]}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read())["choices"][0]["message"]["content"] == "from a thread"
    with pytest.raises(RuntimeError):
        _ = srv.base_url


async def test_refuses_non_loopback_host() -> None:
    with pytest.raises(ValueError, match="loopback"):
        await ScriptedModelServer().start("0.0.0.0")


def test_cli_serves_until_terminated(tmp_path: object) -> None:
    import pathlib

    port_file = pathlib.Path(str(tmp_path)) / "port"
    proc = subprocess.Popen(
        [sys.executable, "-m", "mintleaf_server.llm.scripted", "--port", "0", "--port-file", str(port_file)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "Scripted model server" in line and "no real model" in line
        port = int(port_file.read_text())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=10) as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        if proc.stdout is not None:
            proc.stdout.close()


async def test_images_api_returns_urls_it_serves() -> None:
    import httpx

    from mintleaf_server.llm.scripted import ScriptedModelServer

    async with ScriptedModelServer() as srv, httpx.AsyncClient() as http:
        r = await http.post(f"{srv.base_url}/images/generations", json={"prompt": "a cat", "n": 2})
        assert r.status_code == 200
        urls = [d["url"] for d in r.json()["data"]]
        assert len(urls) == 2 and urls[0] != urls[1]
        png = await http.get(urls[0])
        assert png.headers["content-type"] == "image/png" and png.content.startswith(b"\x89PNG")
        bad = await http.post(f"{srv.base_url}/images/generations", json={})
        assert bad.status_code == 400
