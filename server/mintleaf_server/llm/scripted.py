"""A scripted OpenAI-compatible model server: a real HTTP/1.1 server on loopback for tests, benchmarks
and running the demo without a key.

Design note. It speaks the wire protocol the `openai` package speaks (chat completions, streamed as
server-sent events, embeddings, model list), so the client layer is exercised end to end, connection
pooling and retry headers included. Rejected alternatives: an httpx mock transport (never tests the
real wire format or retries over real connections); aiohttp or starlette+uvicorn (a larger dependency
and slower start for four routes); `http.server` (blocking, no keep-alive streaming). It is plain
asyncio streams with `h11` doing the HTTP/1.1 framing (keep-alive, chunked streaming).

Tests script the replies: `script(Reply(...), ErrorReply(429, retry_after=1), ...)` queues replies
that the next chat-completion requests receive in order. When the queue is empty a deterministic
default answer is built from the request (see `default_reply`), so the demo works without a key.
Every request received is recorded in `requests` (method, path, headers, JSON body), before any delay.
The server only ever binds loopback addresses.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import json
import math
import re
import signal
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Self, TypeAlias

import h11

# A valid 1x1 transparent PNG: what scripted image URLs serve.
_PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)

__all__ = [
    "Disconnect",
    "ErrorReply",
    "Reply",
    "ScriptedModelServer",
    "ScriptedReply",
    "ToolCall",
    "default_reply",
    "example_for_schema",
    "hash_embedding",
    "main",
]

_EMBEDDING_DIMENSIONS = {
    "text-embedding-3-large": 3072,
    "text-embedding-3-small": 1536,
    "text-embedding-ada-002": 1536,
}
_DEFAULT_MODELS = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "scripted")
_MAX_BODY = 64 * 1024 * 1024


@dataclass(frozen=True)
class ToolCall:
    """A tool call the scripted model makes. `arguments` is a JSON object (or an already-encoded
    string, sent verbatim so tests can script malformed arguments)."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True)
class Reply:
    """One scripted chat completion.

    `finish_reason` defaults to "tool_calls" when there are tool calls, else "stop". `delay` (seconds)
    is added to the server's latency before answering. `usage` overrides the estimated token counts.
    When streamed, the text is cut into words (or `chunk_size` characters) with `chunk_delay`
    seconds between chunks; `break_after` drops the connection after that many content chunks."""

    text: str | None = None
    tool_calls: Sequence[ToolCall] = ()
    finish_reason: str | None = None
    delay: float = 0.0
    usage: Mapping[str, int] | None = None
    chunk_size: int | None = None
    chunk_delay: float = 0.0
    break_after: int | None = None

    @classmethod
    def json(cls, value: Any, **kwargs: Any) -> Reply:
        """A reply whose content is `value` encoded as JSON (for JSON mode / JSON schema)."""
        return cls(text=json.dumps(value), **kwargs)


@dataclass(frozen=True)
class ErrorReply:
    """An HTTP error in OpenAI's error shape, e.g. `ErrorReply(429, retry_after=0.1)`.

    `retry_after` is sent as the `retry-after` header (seconds), `retry_after_ms` as
    `retry-after-ms`."""

    status: int = 500
    message: str = "scripted error"
    type: str | None = None
    code: str | None = None
    retry_after: float | None = None
    retry_after_ms: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Disconnect:
    """Close the connection without answering (after `delay` seconds): a connection error."""

    delay: float = 0.0


_Outcome: TypeAlias = Reply | ErrorReply | Disconnect | str
ScriptedReply: TypeAlias = _Outcome | Callable[[dict[str, Any]], _Outcome]
"""A queued reply: a Reply, an ErrorReply, a Disconnect, a plain string (a text reply), or a
callable that receives the request body and returns one of those."""


# --------------------------------------------------------------------------------------------------
# Deterministic content


def hash_embedding(text: str, dimensions: int) -> list[float]:
    """A deterministic, L2-normalised embedding: words and their character trigrams hashed (with a
    sign bit) into `dimensions` buckets. Texts sharing words or word pieces get a high cosine
    similarity; unrelated texts are near-orthogonal. Not a semantic model."""
    if dimensions < 1:
        raise ValueError("dimensions must be >= 1")
    vec = [0.0] * dimensions
    for word in re.findall(r"\w+", text.lower()):
        features = [(word, 1.0)]
        padded = f"#{word}#"
        features += [(padded[i : i + 3], 0.5) for i in range(len(padded) - 2)]
        for feature, weight in features:
            digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
            index = int.from_bytes(digest[:4], "little") % dimensions
            vec[index] += weight if digest[4] & 1 else -weight
    norm = math.sqrt(sum(v * v for v in vec))
    if norm == 0.0:
        vec[0] = 1.0  # empty text: a fixed unit vector, so cosine similarity stays defined
        return vec
    return [v / norm for v in vec]


def example_for_schema(schema: Any, root: Any = None, depth: int = 0) -> Any:
    """A small value that satisfies a (simple) JSON schema: required and listed properties filled,
    one array item, first enum/const/anyOf choice, local `$ref`s followed."""
    root = schema if root is None else root
    if not isinstance(schema, Mapping) or depth > 8:
        return None
    if "$ref" in schema and isinstance(schema["$ref"], str) and schema["$ref"].startswith("#/"):
        target: Any = root
        for part in schema["$ref"][2:].split("/"):
            target = target.get(part, {}) if isinstance(target, Mapping) else {}
        return example_for_schema(target, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return example_for_schema(schema[key][0], root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        return {name: example_for_schema(sub, root, depth + 1) for name, sub in props.items()}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1)))
        return [example_for_schema(schema.get("items", {}), root, depth + 1) for _ in range(count)]
    if kind == "string":
        return "example"
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "number":
        return float(schema.get("minimum", 0))
    if kind == "boolean":
        return True
    return None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", "")) for p in content if isinstance(p, Mapping) and p.get("type") == "text"
        )
    return ""


def default_reply(body: Mapping[str, Any]) -> Reply:
    """The answer when no reply is scripted; deterministic in the request.

    - `tool_choice` naming a function (and the last message is not a tool result): a call to it,
      with arguments built from its parameter schema;
    - `response_format` json_schema: an instance of the schema; json_object: `{"answer": ...}`;
    - otherwise the text `Scripted reply to: <last user message>` (cut to 500 characters)."""
    messages = body.get("messages") or []
    last_user = next(
        (
            _text_of(m.get("content"))
            for m in reversed(messages)
            if isinstance(m, Mapping) and m.get("role") == "user"
        ),
        "",
    )
    last_role = messages[-1].get("role") if messages and isinstance(messages[-1], Mapping) else None
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping) and last_role != "tool":
        name = (choice.get("function") or {}).get("name")
        for tool in body.get("tools") or []:
            function = tool.get("function") or {} if isinstance(tool, Mapping) else {}
            if isinstance(name, str) and function.get("name") == name:
                args = example_for_schema(function.get("parameters") or {"type": "object"})
                return Reply(tool_calls=[ToolCall(name=name, arguments=args or {})])
    text = f"Scripted reply to: {last_user[:500]}"
    response_format = body.get("response_format") or {}
    if isinstance(response_format, Mapping):
        if response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema") or {"type": "object"}
            return Reply.json(example_for_schema(schema))
        if response_format.get("type") == "json_object":
            return Reply.json({"answer": text})
    return Reply(text=text)


def _estimate_tokens(text: str) -> int:
    # The scripted server reports usage as an estimate (4 characters a token) so that it starts fast
    # and needs no tokenizer; tests that care about exact counts use llm.tokens themselves.
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _prompt_tokens(messages: Any) -> int:
    if not isinstance(messages, list):
        return 0
    return 3 + sum(
        3 + _estimate_tokens(_text_of(m.get("content"))) for m in messages if isinstance(m, Mapping)
    )


def _pieces(text: str, size: int | None) -> list[str]:
    if size:
        return [text[i : i + size] for i in range(0, len(text), size)]
    return re.findall(r"\S+\s*|\s+", text)


# --------------------------------------------------------------------------------------------------
# The server


class _Closed(Exception):
    """The connection must be closed (scripted disconnect or a broken stream)."""


class ScriptedModelServer:
    """An OpenAI-compatible HTTP server on loopback whose replies tests script.

    Routes: POST /v1/chat/completions (plain and `stream: true`), POST /v1/embeddings,
    POST /v1/images/generations (URLs of a 1x1 PNG served here),
    GET /v1/models. `latency` (seconds) delays every reply, for benchmarks. Use it with
    `await start()` / `await stop()` inside an event loop, or `with server.run_in_thread():` from
    synchronous code. `script()` is safe to call from any thread."""

    def __init__(
        self,
        *,
        latency: float = 0.0,
        models: Sequence[str] = _DEFAULT_MODELS,
        embedding_dimensions: int = 1536,
    ) -> None:
        self.latency = latency
        self.models = list(models)
        self.embedding_dimensions = embedding_dimensions
        self.requests: list[dict[str, Any]] = []
        self._image_counter = 0
        self._queue: deque[ScriptedReply] = deque()
        self._lock = threading.Lock()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._counter = 0
        self._host = "127.0.0.1"
        self._port = 0

    # -- scripting -----------------------------------------------------------------------------

    def script(self, *replies: ScriptedReply) -> None:
        """Queue replies for the next chat-completion requests, in order."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def pending(self) -> int:
        """How many scripted replies have not been used yet."""
        with self._lock:
            return len(self._queue)

    def reset(self) -> None:
        """Forget queued replies and recorded requests."""
        with self._lock:
            self._queue.clear()
            self.requests.clear()

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of the chat-completion requests received, in order."""
        return [r["body"] for r in self.requests if r["path"] == "/v1/chat/completions"]

    @property
    def embedding_requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of the embedding requests received, in order."""
        return [r["body"] for r in self.requests if r["path"] == "/v1/embeddings"]

    def _next_reply(self, body: dict[str, Any]) -> _Outcome:
        with self._lock:
            item = self._queue.popleft() if self._queue else None
        if item is None:
            return default_reply(body)
        if callable(item):
            return item(body)
        return item

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>/v1`; valid once started."""
        if self._server is None:
            raise RuntimeError("the scripted model server is not running")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}/v1"

    @property
    def port(self) -> int:
        return self._port

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on `host:port` (port 0 picks a free port). Only loopback hosts are accepted."""
        if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the scripted model server binds loopback addresses only, not {host!r}")
        if self._server is not None:
            raise RuntimeError("already started")
        self._server = await asyncio.start_server(self._serve, host, port)
        sockname = self._server.sockets[0].getsockname()
        self._host, self._port = sockname[0], sockname[1]

    async def stop(self) -> None:
        """Stop listening and drop open connections (pending delayed replies are cancelled)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.wait_closed()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def run_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[Self]:
        """Run the server on its own event loop in a daemon thread for the `with` block."""
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start(host, port))
            except BaseException as exc:
                failure.append(exc)
                started.set()
                loop.close()
                return
            started.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        thread = threading.Thread(target=run, name="scripted-model-server", daemon=True)
        thread.start()
        started.wait(30)
        if failure:
            thread.join(5)
            raise failure[0]
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(30)

    # -- HTTP plumbing -------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
        try:
            while True:
                request = await self._read_request(conn, reader)
                if request is None:
                    break
                await self._dispatch(conn, writer, *request)
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (_Closed, ConnectionError, h11.ProtocolError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    @staticmethod
    async def _read_request(
        conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request, bytes] | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > _MAX_BODY:
                    raise _Closed
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None

    @staticmethod
    async def _send_json(
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        status: int,
        payload: Any,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        data = json.dumps(payload).encode()
        all_headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(data))),
            *((k, v) for k, v in (headers or {}).items()),
        ]
        writer.write(conn.send(h11.Response(status_code=status, headers=all_headers)) or b"")
        writer.write(conn.send(h11.Data(data=data)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()

    async def _dispatch(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request, raw: bytes
    ) -> None:
        method = request.method.decode()
        path = request.target.decode().split("?", 1)[0].rstrip("/")
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in request.headers}
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                self.requests.append({"method": method, "path": path, "headers": headers, "body": None})
                await self._send_json(conn, writer, 400, _error_body("request body is not JSON"))
                return
        self.requests.append({"method": method, "path": path, "headers": headers, "body": body})
        if method == "GET" and path == "/v1/models":
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "mintleaf-scripted"}
                for m in self.models
            ]
            await self._send_json(conn, writer, 200, {"object": "list", "data": data})
        elif method == "POST" and path == "/v1/chat/completions" and isinstance(body, dict):
            await self._chat(conn, writer, body)
        elif method == "POST" and path == "/v1/embeddings" and isinstance(body, dict):
            await self._embeddings(conn, writer, body)
        elif method == "POST" and path == "/v1/images/generations" and isinstance(body, dict):
            await self._images(conn, writer, body)
        elif method == "GET" and path.startswith("/v1/images/scripted/"):
            await self._send_bytes(conn, writer, 200, _PIXEL_PNG, "image/png")
        elif path in ("/v1/models", "/v1/chat/completions", "/v1/embeddings"):
            await self._send_json(conn, writer, 400, _error_body(f"bad {method} request for {path}"))
        else:
            await self._send_json(
                conn, writer, 404, _error_body(f"no route {method} {path}", code="not_found")
            )

    # -- routes --------------------------------------------------------------------------------

    async def _images(self, conn: h11.Connection, writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
        """OpenAI images API: each image is a URL on this server serving a 1x1 PNG."""
        if not isinstance(body.get("prompt"), str) or not body["prompt"]:
            await self._send_json(conn, writer, 400, _error_body("'prompt' must be a non-empty string"))
            return
        n = body.get("n", 1)
        count = n if isinstance(n, int) and 1 <= n <= 10 else 1
        self._image_counter += count
        base = self.base_url.removesuffix("/v1")
        data = [
            {
                "url": f"{base}/v1/images/scripted/{self._image_counter - count + i + 1}.png",
                "revised_prompt": body["prompt"],
            }
            for i in range(count)
        ]
        await self._send_json(conn, writer, 200, {"created": int(time.time()), "data": data})

    @staticmethod
    async def _send_bytes(
        conn: h11.Connection, writer: asyncio.StreamWriter, status: int, data: bytes, content_type: str
    ) -> None:
        headers = [("content-type", content_type), ("content-length", str(len(data)))]
        writer.write(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
        writer.write(conn.send(h11.Data(data=data)) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()

    async def _chat(self, conn: h11.Connection, writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
        if not isinstance(body.get("messages"), list) or not body["messages"]:
            await self._send_json(conn, writer, 400, _error_body("'messages' must be a non-empty list"))
            return
        outcome = self._next_reply(body)
        if isinstance(outcome, str):
            outcome = Reply(text=outcome)
        delay = self.latency + outcome.delay
        if delay > 0:
            await asyncio.sleep(delay)
        if isinstance(outcome, Disconnect):
            raise _Closed
        if isinstance(outcome, ErrorReply):
            headers = dict(outcome.headers)
            if outcome.retry_after is not None:
                ra = outcome.retry_after
                headers["retry-after"] = str(int(ra)) if float(ra).is_integer() else str(ra)
            if outcome.retry_after_ms is not None:
                headers["retry-after-ms"] = str(outcome.retry_after_ms)
            payload = _error_body(outcome.message, type=outcome.type, code=outcome.code)
            await self._send_json(conn, writer, outcome.status, payload, headers)
            return
        self._counter += 1
        completion = self._completion(body, outcome)
        if body.get("stream"):
            options = body.get("stream_options") or {}
            await self._stream(conn, writer, completion, outcome, bool(options.get("include_usage")))
        else:
            await self._send_json(conn, writer, 200, completion)

    def _completion(self, body: dict[str, Any], reply: Reply) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
        completion_text = reply.text or ""
        if reply.tool_calls:
            calls = []
            for i, call in enumerate(reply.tool_calls):
                arguments = call.arguments if isinstance(call.arguments, str) else json.dumps(call.arguments)
                completion_text += call.name + arguments
                call_id = (
                    call.id
                    or "call_"
                    + base64.urlsafe_b64encode(
                        hashlib.sha256(f"{self._counter}:{i}:{call.name}".encode()).digest()
                    ).decode()[:24]
                )
                calls.append(
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": call.name, "arguments": arguments},
                    }
                )
            message["tool_calls"] = calls
        finish = reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")
        if reply.usage is not None:
            usage = dict(reply.usage)
        else:
            prompt = _prompt_tokens(body.get("messages"))
            completion = _estimate_tokens(completion_text)
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        return {
            "id": f"chatcmpl-scripted-{self._counter}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body.get("model") or "scripted"),
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage,
        }

    async def _stream(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        completion: dict[str, Any],
        reply: Reply,
        include_usage: bool,
    ) -> None:
        head = {k: completion[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
        message = completion["choices"][0]["message"]

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return head | {
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
            }

        events: list[dict[str, Any]] = [chunk({"role": "assistant", "content": ""})]
        content_events = [chunk({"content": p}) for p in _pieces(reply.text or "", reply.chunk_size)]
        events += content_events
        for index, call in enumerate(message.get("tool_calls") or []):
            first = {"index": index, "id": call["id"], "type": "function"}
            events.append(
                chunk(
                    {
                        "tool_calls": [
                            first | {"function": {"name": call["function"]["name"], "arguments": ""}}
                        ]
                    }
                )
            )
            for piece in _pieces(call["function"]["arguments"], reply.chunk_size or 16):
                events.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
        events.append(chunk({}, completion["choices"][0]["finish_reason"]))
        if include_usage:
            events.append(head | {"choices": [], "usage": completion["usage"]})

        response = h11.Response(
            status_code=200, headers=[("content-type", "text/event-stream"), ("cache-control", "no-cache")]
        )
        writer.write(conn.send(response) or b"")
        for number, event in enumerate(events):
            if reply.break_after is not None and number > reply.break_after:
                await writer.drain()
                raise _Closed  # drop the connection mid-stream
            if reply.chunk_delay > 0 and number > 0:
                await asyncio.sleep(reply.chunk_delay)
            writer.write(conn.send(h11.Data(data=b"data: " + json.dumps(event).encode() + b"\n\n")) or b"")
            await writer.drain()
        writer.write(conn.send(h11.Data(data=b"data: [DONE]\n\n")) or b"")
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()

    async def _embeddings(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, body: dict[str, Any]
    ) -> None:
        raw_input = body.get("input")
        texts: list[str]
        if isinstance(raw_input, str):
            texts = [raw_input]
        elif isinstance(raw_input, list) and raw_input and all(isinstance(x, int) for x in raw_input):
            texts = [" ".join(f"t{x}" for x in raw_input)]  # one pre-tokenised input
        elif isinstance(raw_input, list) and raw_input:
            texts = [x if isinstance(x, str) else " ".join(f"t{t}" for t in x) for x in raw_input]
        else:
            await self._send_json(
                conn, writer, 400, _error_body("'input' must be a string or a non-empty list")
            )
            return
        model = str(body.get("model") or "text-embedding-3-small")
        dimensions = body.get("dimensions") or _EMBEDDING_DIMENSIONS.get(model, self.embedding_dimensions)
        if not isinstance(dimensions, int) or dimensions < 1:
            await self._send_json(conn, writer, 400, _error_body("'dimensions' must be a positive integer"))
            return
        if self.latency > 0:
            await asyncio.sleep(self.latency)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = hash_embedding(text, dimensions)
            embedding: Any = (
                base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode() if as_base64 else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        tokens = sum(_estimate_tokens(t) for t in texts)
        payload = {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        await self._send_json(conn, writer, 200, payload)


def _error_body(message: str, *, type: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": type or "invalid_request_error", "param": None, "code": code}
    }


# --------------------------------------------------------------------------------------------------
# CLI: python -m mintleaf_server.llm.scripted --port N


async def _run_cli(args: argparse.Namespace) -> None:
    server = ScriptedModelServer(latency=args.latency_ms / 1000.0)
    await server.start(args.host, args.port)
    if args.port_file:
        with open(args.port_file, "w", encoding="utf-8") as fh:
            fh.write(f"{server.port}\n")
    print(
        f"Scripted model server (no real model: deterministic scripted replies) at {server.base_url}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scripted server until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m mintleaf_server.llm.scripted",
        description="A scripted OpenAI-compatible model server on loopback (no real model).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: pick a free one)")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="delay added to every reply")
    parser.add_argument("--port-file", default=None, help="write the chosen port to this file")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_run_cli(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
