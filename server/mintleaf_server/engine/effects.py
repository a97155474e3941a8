"""Shapes of effect requests and responses: the contract between the step machine and the code
that calls the outside world (the models-and-tools issue implements the executors).

The machine emits `RunEffect(effect_id, request, deadline_ms)`; `request` is plain JSON (it is kept
in the state while the effect runs, so a worker that takes over can run it again):

    common:    {"kind", "effect_id", "attempt" (1-based), "step": {"workflow", "loc", "index",
                "path", "label"}, "execution_id", "developer_id"}
    prompt:    + {"messages": [{"role", "content" (str | parts), "name"?, "tool_call_id"?,
                   "continue"?, "tool_calls"?}], "tools": "all" | [name | {"inline": i, "name"}],
                   "tool_choice", "settings" (dict | None), "unwrap", "auto_run_tools",
                   "disable_cache", "resume"?: {"continuation", "results"}}
               The executor returns the whole completion as a dict (OpenAI shape); the machine
               applies `unwrap`. Function tool calls chosen by the model → EffectSuspended with
               resume="effect"; the executor gets the results back in `resume`.
    tool_call: + {"tool": name, "arguments": {...}, "call_id": "call_<24 chars>"}
               A function tool → EffectSuspended(tool_calls=[call], resume="output").
    embed:     + {"text": [str, ...], "embed_instruction": str | None} → output {"vectors": [...]}
    search:    + {"mode", "text", "vector", "limit", "lang", "confidence", "alpha", "mmr_strength",
                  "k_multiplier", "trigram_similarity_threshold", "metadata_filter"}
               → output {"docs": [...], "time": float}

Inline tool definitions of a prompt step (`{"inline": i}`) and the step itself are found with
`Machine.step_at(request["step"])`.

Answers: EffectDone(output, metadata), EffectFailed(error={"kind", "message", "retryable"}),
EffectSuspended(tool_calls=[{"id", "type": "function", "name", "arguments"}], resume,
continuation). Retryable kinds by convention: "timeout", "connection", "rate_limit",
"unavailable"; anything with retryable=False is final.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

__all__ = ["EFFECT_KINDS", "EffectError", "tool_call_id", "unwrap_completion"]

EFFECT_KINDS = frozenset({"prompt", "tool_call", "embed", "search"})


class EffectError(ValueError):
    """A response cannot become the step's output (bad unwrap, ...): a non-retryable failure."""


def tool_call_id(execution_id: str, effect_id: str) -> str:
    """A stable `call_<24 url-safe base64 chars>` id: a re-run after a crash reuses it."""
    digest = hashlib.sha256(f"{execution_id}:{effect_id}".encode()).digest()
    return "call_" + base64.urlsafe_b64encode(digest).decode()[:24]


def unwrap_completion(response: Any) -> Any:
    """`unwrap: true`: the text of the only choice (JULEP-SPEC 2.3)."""
    if not isinstance(response, dict):
        raise EffectError("the model response is not an object")
    choices = response.get("choices")
    if not isinstance(choices, list) or len(choices) != 1:
        raise EffectError("unwrap needs exactly one choice in the model response")
    choice: dict[str, Any] = choices[0] if isinstance(choices[0], dict) else {}
    raw = choice.get("message")
    message: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if choice.get("finish_reason") == "tool_calls" or message.get("tool_calls"):
        raise EffectError("tool calls cannot be unwrapped")
    return message.get("content")
