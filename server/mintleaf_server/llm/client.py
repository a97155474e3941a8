"""One client layer over the `openai` package: any OpenAI-compatible endpoint works.

Design note. `ModelRegistry` maps model names (exact or glob patterns, first match wins, in
configuration order) to endpoints, each with its own base URL, key, headers, context window and
default settings, and keeps one `AsyncOpenAI` client per endpoint (so connections are pooled; one
registry per event loop, closed with `aclose()`).
Retries are ours, not the SDK's (`max_retries=0` on the client): one bounded loop with exponential
backoff that honours `retry-after-ms`/`retry-after`, the same for chat, streaming (only before the
first chunk arrives: a stream that already yielded cannot be replayed) and embeddings, and that
reports how many attempts were made. Rejected: the SDK's own retries (its cap and jitter are not
configurable per endpoint and it hides the attempt count); LiteLLM (a large dependency, and every
provider we target speaks the OpenAI protocol).
Results are plain dicts in the OpenAI response shape, so the engine can store them as a step output
(Julep's `unwrap: false` output) without conversions.
"""

from __future__ import annotations

import asyncio
import fnmatch
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, TypeAlias, TypeVar

import httpx
import openai
from openai.types.chat import ChatCompletionChunk

from .errors import (
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
    display_endpoint,
    redact,
)

__all__ = [
    "Completion",
    "Endpoint",
    "ModelRegistry",
    "ResolvedModel",
    "RetryPolicy",
    "StreamDelta",
    "StreamDone",
    "merge_settings",
]

Completion: TypeAlias = dict[str, Any]
"""`{id, object, created, model, choices: [{index, finish_reason, message: {role, content,
tool_calls}}], usage: {prompt_tokens, completion_tokens, total_tokens} | None}`."""

T = TypeVar("T")

# Parameters the OpenAI chat API takes at the top level; anything else in settings goes in the
# request body as an extra field (vLLM's repetition_penalty, min_p, ...), which OpenAI-compatible
# servers either use or reject with a 400 that names it.
_CHAT_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "n",
        "user",
        "response_format",
        "parallel_tool_calls",
        "reasoning_effort",
        "service_tier",
        "metadata",
        "store",
        "modalities",
        "prediction",
        "verbosity",
        "tools",
        "tool_choice",
    }
)
# Owned by the call itself; a settings entry with these names is ignored.
_RESERVED = frozenset({"model", "messages", "stream", "stream_options", "timeout"})

# Context windows of well-known models, used when the endpoint configuration gives none.
_KNOWN_WINDOWS: tuple[tuple[str, int], ...] = (
    ("gpt-4.1*", 1_047_576),
    ("gpt-4o*", 128_000),
    ("chatgpt-4o*", 128_000),
    ("gpt-4-turbo*", 128_000),
    ("gpt-5*", 400_000),
    ("o1*", 200_000),
    ("o3*", 200_000),
    ("o4*", 200_000),
    ("gpt-4-32k*", 32_768),
    ("gpt-4*", 8_192),
    ("gpt-3.5-turbo*", 16_385),
    ("claude-*", 200_000),
    ("gemini-*", 1_000_000),
)
DEFAULT_CONTEXT_WINDOW = 8_192
DEFAULT_MODEL = "gpt-4o-mini"


def merge_settings(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Overlay settings layers left to right (e.g. endpoint defaults, agent `default_settings`,
    step or request settings); a later layer's value wins, and keys whose final value is None are
    dropped (so `null` in a step unsets an agent default)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer:
            merged.update(layer)
    return {k: v for k, v in merged.items() if v is not None}


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff. `max_attempts` counts the first call. A
    `retry-after` hint is honoured when it is at most `max_retry_after` seconds; a longer one ends
    the retries at once (ModelRateLimited carries the hint)."""

    max_attempts: int = 4
    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    multiplier: float = 2.0
    jitter: float = 0.1
    max_retry_after: float = 60.0
    retry_timeouts: bool = True

    def backoff(self, attempt: int, hint: float | None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        if hint is not None:
            return hint
        base = min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))
        return base * (1 + random.uniform(-self.jitter, self.jitter)) if self.jitter else base


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI-compatible endpoint. `match` holds glob patterns on the requested model name;
    `model` (if set) is the name sent upstream instead of the requested one. The key is `api_key`
    or the value of the environment variable `api_key_env` (read when first used); it is never
    printed (repr excludes it)."""

    base_url: str
    match: tuple[str, ...] = ("*",)
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    context_window: int | None = None
    default_settings: Mapping[str, Any] = field(default_factory=dict)
    model: str | None = None
    timeout: float = 120.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    stream_usage: bool = True
    embedding_batch_size: int = 256

    @property
    def display(self) -> str:
        return display_endpoint(self.base_url)

    def matches(self, model: str) -> bool:
        return any(fnmatch.fnmatchcase(model, pattern) for pattern in self.match)


@dataclass(frozen=True)
class ResolvedModel:
    """A requested model name with the endpoint that serves it."""

    name: str
    upstream: str
    endpoint: Endpoint
    context_window: int


@dataclass(frozen=True)
class StreamDelta:
    """A piece of a streamed reply: `text` to append, and raw OpenAI tool-call deltas (each with
    `index`, and `id`/`function.name` on its first piece, `function.arguments` fragments)."""

    text: str = ""
    tool_calls: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class StreamDone:
    """The end of a stream: the whole completion, assembled from the deltas."""

    completion: Completion


_ENDPOINT_KEYS = frozenset(
    {
        "match",
        "base_url",
        "api_key",
        "api_key_env",
        "headers",
        "context_window",
        "default_settings",
        "model",
        "timeout",
        "retry",
        "stream_usage",
        "embedding_batch_size",
    }
)


def _endpoint_from(entry: Any, path: str, retry: RetryPolicy) -> Endpoint:
    if not isinstance(entry, Mapping):
        raise ModelConfigError(f"{path}: must be a table")
    unknown = sorted(set(entry) - _ENDPOINT_KEYS)
    if unknown:
        raise ModelConfigError(f"{path}: unknown keys {', '.join(unknown)}")
    base_url = entry.get("base_url")
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        raise ModelConfigError(f"{path}.base_url: must be an http(s) URL")
    match = entry.get("match", "*")
    patterns = (match,) if isinstance(match, str) else tuple(match) if isinstance(match, list) else None
    if not patterns or not all(isinstance(p, str) and p for p in patterns):
        raise ModelConfigError(f"{path}.match: must be a glob or a list of globs")
    headers = entry.get("headers") or {}
    if not isinstance(headers, Mapping) or not all(isinstance(v, str) for v in headers.values()):
        raise ModelConfigError(f"{path}.headers: must be a table of strings")
    settings = entry.get("default_settings") or {}
    if not isinstance(settings, Mapping):
        raise ModelConfigError(f"{path}.default_settings: must be a table")
    window = entry.get("context_window")
    if window is not None and (not isinstance(window, int) or window < 1):
        raise ModelConfigError(f"{path}.context_window: must be a positive integer")
    for key in ("api_key", "api_key_env", "model"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            raise ModelConfigError(f"{path}.{key}: must be a string")
    try:
        endpoint_retry = RetryPolicy(**{**retry.__dict__, **(entry.get("retry") or {})})
        return Endpoint(
            base_url=base_url.rstrip("/"),
            match=patterns,
            api_key=entry.get("api_key"),
            api_key_env=entry.get("api_key_env"),
            headers=dict(headers),
            context_window=window,
            default_settings=dict(settings),
            model=entry.get("model"),
            timeout=float(entry.get("timeout", 120.0)),
            retry=endpoint_retry,
            stream_usage=bool(entry.get("stream_usage", True)),
            embedding_batch_size=int(entry.get("embedding_batch_size", 256)),
        )
    except (TypeError, ValueError) as exc:
        raise ModelConfigError(f"{path}: {exc}") from exc


class ModelRegistry:
    """Routes model names to endpoints and calls them. Build it with `from_config`, `scripted`,
    or directly from a list of `Endpoint`s (first match wins; `fallback` serves unmatched names)."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        default_model: str = DEFAULT_MODEL,
        fallback: Endpoint | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.endpoints = list(endpoints)
        self.default_model = default_model
        self.fallback = fallback
        self._env = env if env is not None else os.environ
        self._clients: dict[int, openai.AsyncOpenAI] = {}

    # -- construction --------------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, env: Mapping[str, str] | None = None) -> ModelRegistry:
        """Build from the `[models]` table (or a whole config holding one):

        ```toml
        [models]
        default = "gpt-4o-mini"          # model used when an agent names none
        retry = { max_attempts = 4 }     # RetryPolicy fields, for every endpoint
        [[models.endpoints]]
        match = "gpt-*"                  # glob or list of globs on the model name
        base_url = "https://api.openai.com/v1"
        api_key_env = "OPENAI_API_KEY"
        context_window = 128000
        [models.default_endpoint]        # optional: serves names no entry matches
        base_url = "http://127.0.0.1:11434/v1"
        ```
        With no endpoints at all, every model goes to `$OPENAI_BASE_URL` (default OpenAI) with the
        key in `$OPENAI_API_KEY`. Raises ModelConfigError naming the bad field."""
        section: Any = config.get("models", config) if isinstance(config.get("models"), Mapping) else config
        environ = env if env is not None else os.environ
        default_model = section.get("default", DEFAULT_MODEL)
        if not isinstance(default_model, str) or not default_model:
            raise ModelConfigError("models.default: must be a model name")
        try:
            retry = RetryPolicy(**(section.get("retry") or {}))
        except TypeError as exc:
            raise ModelConfigError(f"models.retry: {exc}") from exc
        entries = section.get("endpoints") or []
        if not isinstance(entries, list):
            raise ModelConfigError("models.endpoints: must be an array of tables")
        endpoints = [_endpoint_from(e, f"models.endpoints[{i}]", retry) for i, e in enumerate(entries)]
        fallback = None
        if section.get("default_endpoint") is not None:
            fallback = _endpoint_from(section["default_endpoint"], "models.default_endpoint", retry)
        elif not endpoints:
            fallback = Endpoint(
                base_url=environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1").rstrip("/"),
                api_key_env="OPENAI_API_KEY",
                retry=retry,
            )
        return cls(endpoints, default_model=default_model, fallback=fallback, env=environ)

    @classmethod
    def scripted(
        cls,
        base_url: str,
        *,
        default_model: str = DEFAULT_MODEL,
        context_window: int = 128_000,
        retry: RetryPolicy | None = None,
        timeout: float = 30.0,
    ) -> ModelRegistry:
        """Every model routes to the scripted server at `base_url` (see llm.scripted)."""
        endpoint = Endpoint(
            base_url=base_url.rstrip("/"),
            api_key="scripted",
            context_window=context_window,
            timeout=timeout,
            retry=retry or RetryPolicy(initial_backoff=0.05, max_backoff=0.5, max_retry_after=5.0),
        )
        return cls([endpoint], default_model=default_model)

    # -- routing -------------------------------------------------------------------------------

    def resolve(self, model: str | None) -> ResolvedModel:
        """The endpoint serving `model` (the default model if empty); ModelNotFound if none."""
        name = model or self.default_model
        endpoint = next((e for e in self.endpoints if e.matches(name)), self.fallback)
        if endpoint is None:
            raise ModelNotFound("no endpoint is configured for this model", model=name)
        window = endpoint.context_window or next(
            (
                size
                for pattern, size in _KNOWN_WINDOWS
                if fnmatch.fnmatchcase(name.rsplit("/", 1)[-1], pattern)
            ),
            DEFAULT_CONTEXT_WINDOW,
        )
        return ResolvedModel(
            name=name, upstream=endpoint.model or name, endpoint=endpoint, context_window=window
        )

    def context_window(self, model: str | None) -> int:
        """The model's context window in tokens (configured, else well-known, else 8192)."""
        return self.resolve(model).context_window

    def is_known(self, model: str) -> bool:
        """Whether some endpoint serves `model`."""
        return any(e.matches(model) for e in self.endpoints) or self.fallback is not None

    def has_credentials(self, model: str | None = None) -> bool:
        """Whether the endpoint for `model` has a key (the demo uses this to choose the scripted
        server when none is configured)."""
        try:
            endpoint = self.resolve(model).endpoint
        except ModelNotFound:
            return False
        return bool(endpoint.api_key or (endpoint.api_key_env and self._env.get(endpoint.api_key_env)))

    def _client(self, resolved: ResolvedModel) -> openai.AsyncOpenAI:
        endpoint = resolved.endpoint
        client = self._clients.get(id(endpoint))
        if client is not None:
            return client
        key = endpoint.api_key
        if key is None and endpoint.api_key_env:
            key = self._env.get(endpoint.api_key_env)
            if not key:
                raise ModelConfigError(
                    f"environment variable {endpoint.api_key_env} is not set",
                    model=resolved.name,
                    endpoint=endpoint.display,
                )
        # A keyless endpoint (a local server) gets a placeholder: the SDK would otherwise pick up
        # OPENAI_API_KEY from the environment and send it to a server it was not meant for.
        client = openai.AsyncOpenAI(
            api_key=key or "none",
            base_url=endpoint.base_url,
            default_headers=dict(endpoint.headers),
            max_retries=0,
            timeout=endpoint.timeout,
        )
        self._clients[id(endpoint)] = client
        return client

    async def aclose(self) -> None:
        """Close the HTTP connections of every endpoint client."""
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()

    # -- calls ---------------------------------------------------------------------------------

    def _chat_params(
        self,
        resolved: ResolvedModel,
        settings: Mapping[str, Any] | None,
        tools: Sequence[Mapping[str, Any]] | None,
        tool_choice: Any,
        response_format: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        merged = merge_settings(
            resolved.endpoint.default_settings,
            settings,
            {
                "tools": list(tools) if tools else None,
                "tool_choice": tool_choice,
                "response_format": response_format,
            },
        )
        if not merged.get("tools"):
            merged.pop("tools", None)
            merged.pop("tool_choice", None)  # the API rejects tool_choice without tools
        params: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in merged.items():
            if key in _RESERVED:
                continue
            (params if key in _CHAT_PARAMS else extra)[key] = value
        if extra:
            params["extra_body"] = extra
        return params

    async def complete(
        self,
        model: str | None,
        messages: Sequence[Mapping[str, Any]],
        *,
        settings: Mapping[str, Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        response_format: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Completion:
        """One chat completion, retried per the endpoint's RetryPolicy. `settings` is the already
        merged agent/step settings (see `merge_settings`); the endpoint's `default_settings` lie
        under them. `timeout` (seconds) applies to each attempt. Raises a ModelError subclass."""
        resolved = self.resolve(model)
        client = self._client(resolved)
        params = self._chat_params(resolved, settings, tools, tool_choice, response_format)

        # The request body is sent as built: the SDK's typed `create()` transforms every message
        # through its TypedDict machinery (~0.2 ms a message), which dominated a chat turn's
        # overhead. `post` keeps the SDK's auth, headers, error mapping and timeouts.
        body: dict[str, Any] = {
            **params.pop("extra_body", {}),
            **params,
            "model": resolved.upstream,
            "messages": list(messages),
        }

        async def call() -> Completion:
            response = await client.post(
                "/chat/completions",
                body=body,
                cast_to=httpx.Response,
                options={"timeout": timeout or resolved.endpoint.timeout},
            )
            try:
                raw = response.json()
            except ValueError:
                raise ModelResponseError("the endpoint's response is not JSON", model=resolved.name) from None
            if not isinstance(raw, dict):
                raise ModelResponseError("the endpoint's response is not OpenAI-shaped", model=resolved.name)
            return _normalise(raw, resolved.name)

        return await self._with_retries(resolved, call)

    async def stream(
        self,
        model: str | None,
        messages: Sequence[Mapping[str, Any]],
        *,
        settings: Mapping[str, Any] | None = None,
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: Any = None,
        response_format: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[StreamDelta | StreamDone]:
        """Stream a chat completion: `StreamDelta`s as they arrive, then one `StreamDone` with the
        assembled completion (usage included when the endpoint reports it). Opening the stream is
        retried like `complete`; an error after the first delta is raised as is (not retried)."""
        resolved = self.resolve(model)
        client = self._client(resolved)
        params = self._chat_params(resolved, settings, tools, tool_choice, response_format)
        if resolved.endpoint.stream_usage:
            params["stream_options"] = {"include_usage": True}
        per_attempt = timeout or resolved.endpoint.timeout

        # As in `complete`: the body goes as built, skipping the SDK's per-message transform;
        # the SDK still parses the server-sent events into chunks.
        body: dict[str, Any] = {
            **params.pop("extra_body", {}),
            **params,
            "model": resolved.upstream,
            "messages": list(messages),
            "stream": True,
        }

        async def open_stream() -> Any:
            stream: Any = await client.post(
                "/chat/completions",
                body=body,
                cast_to=ChatCompletionChunk,
                stream=True,
                stream_cls=openai.AsyncStream[ChatCompletionChunk],
                options={"timeout": per_attempt},
            )
            iterator = stream.__aiter__()
            try:
                first = await iterator.__anext__()
            except StopAsyncIteration:
                first = None
            except BaseException:
                await stream.close()
                raise
            return stream, iterator, first

        stream, iterator, first = await self._with_retries(resolved, open_stream)
        assembler = _Assembler(resolved.name)
        try:
            chunk = first
            while chunk is not None:
                delta = assembler.add(chunk.model_dump(mode="json"))
                if delta is not None:
                    yield delta
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    chunk = None
        except openai.OpenAIError as exc:
            raise self._translate(exc, resolved, attempts=1) from exc
        finally:
            await stream.close()
        yield StreamDone(assembler.completion())

    async def embed(
        self, model: str, texts: Sequence[str], dimensions: int | None = None, *, timeout: float | None = None
    ) -> list[list[float]]:
        """Embed `texts` (in batches of the endpoint's `embedding_batch_size`), in input order."""
        if not texts:
            return []
        resolved = self.resolve(model)
        client = self._client(resolved)
        size = max(1, resolved.endpoint.embedding_batch_size)
        vectors: list[list[float]] = []
        for start in range(0, len(texts), size):
            batch = list(texts[start : start + size])

            async def call(batch: list[str] = batch) -> list[list[float]]:
                extra: dict[str, Any] = {} if dimensions is None else {"dimensions": dimensions}
                response = await client.embeddings.create(
                    model=resolved.upstream,
                    input=batch,
                    encoding_format="float",
                    timeout=timeout or resolved.endpoint.timeout,
                    **extra,
                )
                data = sorted(response.data, key=lambda d: d.index)
                if len(data) != len(batch):
                    raise ModelResponseError(
                        f"asked for {len(batch)} embeddings, got {len(data)}",
                        model=resolved.name,
                        endpoint=resolved.endpoint.display,
                    )
                return [list(d.embedding) for d in data]

            vectors.extend(await self._with_retries(resolved, call))
        return vectors

    # -- retries and errors --------------------------------------------------------------------

    async def _with_retries(self, resolved: ResolvedModel, call: Callable[[], Awaitable[T]]) -> T:
        policy = resolved.endpoint.retry
        attempt = 0
        while True:
            attempt += 1
            try:
                return await call()
            except ModelError:
                raise
            except openai.OpenAIError as exc:
                error = self._translate(exc, resolved, attempts=attempt)
                hint = _retry_after(exc)
                retryable = isinstance(error, ModelUnavailable) and (
                    policy.retry_timeouts or not isinstance(error, ModelTimeout)
                )
                if not retryable or attempt >= policy.max_attempts:
                    raise error from exc
                if hint is not None and hint > policy.max_retry_after:
                    raise error from exc
                await asyncio.sleep(policy.backoff(attempt, hint))

    def _translate(self, exc: openai.OpenAIError, resolved: ResolvedModel, *, attempts: int) -> ModelError:
        endpoint = resolved.endpoint
        secrets = (endpoint.api_key, self._env.get(endpoint.api_key_env) if endpoint.api_key_env else None)
        kwargs: dict[str, Any] = {"model": resolved.name, "endpoint": endpoint.display, "attempts": attempts}
        if isinstance(exc, openai.APITimeoutError):
            return ModelTimeout("the endpoint did not answer in time", **kwargs)
        if isinstance(exc, openai.APIConnectionError):
            return ModelUnavailable("could not connect to the endpoint", **kwargs)
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            message = redact(str(getattr(exc, "message", "") or exc), *secrets)
            code = getattr(exc, "code", None)
            if status == 429:
                return ModelRateLimited(
                    f"rate limited: {message}", retry_after=_retry_after(exc), status=status, **kwargs
                )
            if status in (401, 403):
                return ModelAuthError(f"credentials rejected (HTTP {status})", status=status, **kwargs)
            if status == 404:
                return ModelNotFound(f"not found (HTTP 404): {message}", status=status, **kwargs)
            if status in (408, 409) or status >= 500:
                return ModelUnavailable(f"endpoint error (HTTP {status}): {message}", status=status, **kwargs)
            if code == "context_length_exceeded" or "context length" in message.lower():
                return ModelContextOverflow(f"prompt too long: {message}", status=status, **kwargs)
            return ModelBadRequest(f"request rejected (HTTP {status}): {message}", status=status, **kwargs)
        if isinstance(exc, openai.APIResponseValidationError):
            return ModelResponseError("the endpoint's response is not OpenAI-shaped", **kwargs)
        return ModelError(redact(str(exc), *secrets), **kwargs)


def _retry_after(exc: openai.OpenAIError) -> float | None:
    """The server's retry hint in seconds (`retry-after-ms`, then `retry-after` seconds or date)."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        import datetime as _dt

        when = parsedate_to_datetime(raw)
        return max(0.0, (when - _dt.datetime.now(when.tzinfo)).total_seconds())
    except (TypeError, ValueError):
        return None


def _normalise(raw: Mapping[str, Any], model: str) -> Completion:
    """Keep the stable part of an OpenAI response, as plain JSON values."""
    choices = []
    for choice in raw.get("choices") or []:
        message = choice.get("message") or {}
        out: dict[str, Any] = {
            "role": message.get("role") or "assistant",
            "content": message.get("content"),
            "tool_calls": _tool_calls(message.get("tool_calls")),
        }
        if message.get("refusal"):
            out["refusal"] = message["refusal"]
        choices.append(
            {"index": choice.get("index", 0), "finish_reason": choice.get("finish_reason"), "message": out}
        )
    if not choices:
        raise ModelResponseError("the response has no choices", model=model)
    return {
        "id": raw.get("id"),
        "object": "chat.completion",
        "created": raw.get("created"),
        "model": raw.get("model") or model,
        "choices": choices,
        "usage": _usage(raw.get("usage")),
    }


def _tool_calls(calls: Iterable[Mapping[str, Any]] | None) -> list[dict[str, Any]] | None:
    if not calls:
        return None
    return [
        {
            "id": call.get("id"),
            "type": call.get("type") or "function",
            "function": {
                "name": (call.get("function") or {}).get("name"),
                "arguments": (call.get("function") or {}).get("arguments") or "",
            },
        }
        for call in calls
    ]


def _usage(usage: Mapping[str, Any] | None) -> dict[str, int] | None:
    if not usage:
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


class _Assembler:
    """Folds streamed chunks into a completion (choice 0; tool calls joined by index)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id: str | None = None
        self.created: int | None = None
        self.upstream_model: str | None = None
        self.text: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.usage: dict[str, int] | None = None
        self.role = "assistant"

    def add(self, chunk: Mapping[str, Any]) -> StreamDelta | None:
        self.id = self.id or chunk.get("id")
        self.created = self.created or chunk.get("created")
        self.upstream_model = self.upstream_model or chunk.get("model")
        if chunk.get("usage"):
            self.usage = _usage(chunk["usage"])
        choice = next((c for c in chunk.get("choices") or [] if c.get("index", 0) == 0), None)
        if choice is None:
            return None
        if choice.get("finish_reason"):
            self.finish_reason = choice["finish_reason"]
        delta = choice.get("delta") or {}
        self.role = delta.get("role") or self.role
        text = delta.get("content") or ""
        raw_calls = []
        for call in delta.get("tool_calls") or []:
            index = int(call.get("index", 0))
            slot = self.calls.setdefault(index, {"id": None, "type": "function", "name": "", "arguments": ""})
            function = call.get("function") or {}
            slot["id"] = slot["id"] or call.get("id")
            slot["name"] += function.get("name") or ""
            slot["arguments"] += function.get("arguments") or ""
            raw_calls.append({k: v for k, v in call.items() if v is not None})
        if text:
            self.text.append(text)
        if not text and not raw_calls:
            return None
        return StreamDelta(text=text, tool_calls=tuple(raw_calls))

    def completion(self) -> Completion:
        calls = [
            {"id": c["id"], "type": c["type"], "function": {"name": c["name"], "arguments": c["arguments"]}}
            for _, c in sorted(self.calls.items())
        ]
        content = "".join(self.text)
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.upstream_model or self.model,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": self.finish_reason or ("tool_calls" if calls else "stop"),
                    "message": {
                        "role": self.role,
                        "content": content if content or not calls else None,
                        "tool_calls": calls or None,
                    },
                }
            ],
            "usage": self.usage,
        }
