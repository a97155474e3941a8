"""Building a chat turn's prompt: the system template, the history, the token budget.

Design note. The history is read from `entries` (sources api_request, api_response,
tool_response, summarizer) in `seq` order. An adaptive summary is an entry with source
`summarizer` whose single text part also records `summarizes_through` (the last `seq` it
replaces): the active history is the latest summary followed by every entry after that `seq`.
Summarised entries stay in the table (ListEntries still shows them) but are never sent again.
Rejected: deleting summarised entries (history is the user's record, Julep keeps it), a
`replaced` column (a migration for one flag, and the summary already knows its range), and
re-numbering `seq` to put the summary in place (ListEntries pages by `seq`).

Tokens are counted with the model's tokenizer (`llm.tokens`), per message, so a message's cost
is stored with its entry (`token_count`, `tokenizer` = the encoding name) and reused by later
turns that use the same encoding; only the new messages and the system prompt are counted per
turn. The budget is the session's `token_budget`, or the model's context window minus the
request's `max_tokens`.

Overflow policies (JULEP-SPEC 5.4): `none` fails with a clear error; `truncate` drops the oldest
history messages (never the system prompt, never the new messages); `adaptive` chooses the same
cut but replaces the dropped messages by one summary written by the model (service.py makes the
call). A cut never leaves a `tool` message without the assistant message that called it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..dsl.errors import DslError
from ..dsl.templates import CompiledTemplate, compile_template
from ..llm.tokens import REPLY_PRIMING, count_message_tokens, encoding_name_for_model
from .errors import ContextOverflow, TemplateFailed

__all__ = [
    "DEFAULT_SYSTEM_TEMPLATE",
    "HISTORY_SOURCES",
    "SCOPE_NAMES",
    "Fit",
    "HistoryItem",
    "active_history",
    "budget_for",
    "fit_context",
    "message_tokens",
    "render_template",
    "summary_content",
    "summary_through",
    "to_model_message",
]

HISTORY_SOURCES = ("api_request", "api_response", "tool_response", "summarizer")

# Variables of session templates (JULEP-SPEC 3.5), besides the expression library's globals.
SCOPE_NAMES = frozenset(
    {"session", "agents", "agent", "current_agent", "user", "users", "settings", "tools", "docs", "metadata"}
)

# JULEP-SPEC 5.3, Julep's default template: each part only when its value is non-empty.
DEFAULT_SYSTEM_TEMPLATE = """\
{%- if agent.name %}You are {{ agent.name }}.{% endif %}
{%- if agent.about %}{% if agent.name %} {% endif %}About you: {{ agent.about }}.{% endif %}
{%- if user %}
{%- if agent.name or agent.about %}{{ "\\n\\n" }}{% endif %}You are talking to a user
{%- if user.name %} and their name is {{ user.name }}{% endif %}
{%- if user.about %}. About the user: {{ user.about }}{% endif %}.
{%- endif %}
{%- if session.situation %}{{ "\\n\\n" }}Situation: {{ session.situation }}{% endif %}
{%- if agent.instructions %}{{ "\\n\\n" }}Instructions:{{ "\\n" }}
{%- if agent.instructions is string %}{{ agent.instructions }}
{%- else %}{% for line in agent.instructions %}- {{ line }}{% if not loop.last %}{{ "\\n" }}{% endif %}{% endfor %}
{%- endif %}
{%- endif %}
{%- if docs %}{{ "\\n\\n" }}Relevant documents:
{%- for doc in docs %}{{ "\\n" }}{{ doc.title }}
{%- for snippet in doc.content %}{{ "\\n" }}{{ snippet }}{% endfor %}{{ "\\n" }}---
{%- endfor %}
{%- endif %}"""


@functools.lru_cache(maxsize=512)
def _compiled(source: str) -> CompiledTemplate:
    # Templates repeat across turns (a session's, an agent's, the default): compile each once.
    template, _ = compile_template(source, SCOPE_NAMES)
    return template


def render_template(source: str, scope: Mapping[str, Any], field: str, *, stored: bool) -> str:
    """Render a session template (sandboxed, with the expression library); TemplateFailed
    names `field` on a syntax error, an unknown name or a failure while rendering."""
    try:
        return _compiled(source).render(scope)
    except DslError as exc:
        raise TemplateFailed(field, str(exc), stored=stored) from exc


# -- messages ------------------------------------------------------------------------------------


def _model_content(content: Any) -> Any:
    """Stored content (a string, or parts in the API's shape) as the OpenAI API wants it; a single
    text part collapses to a plain string (JULEP-SPEC 5.2)."""
    if not isinstance(content, list):
        return content
    parts: list[dict[str, Any]] = []
    for part in content:
        if not isinstance(part, Mapping):
            continue
        if part.get("type") == "image_url":
            image: dict[str, Any] = {"url": part.get("image_url", "")}
            if part.get("detail"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            parts.append({"type": "text", "text": str(part.get("text", ""))})
    if len(parts) == 1 and parts[0]["type"] == "text":
        return parts[0]["text"]
    return parts


def to_model_message(message: Mapping[str, Any]) -> dict[str, Any]:
    """A stored message (`{role, content, name, tool_call_id, tool_calls}`, tool calls as
    `{id, type, name, arguments: object}`) as an OpenAI chat message."""
    out: dict[str, Any] = {"role": message["role"], "content": _model_content(message.get("content"))}
    if message.get("name"):
        out["name"] = message["name"]
    if message.get("tool_call_id"):
        out["tool_call_id"] = message["tool_call_id"]
    calls = message.get("tool_calls")
    if calls:
        out["tool_calls"] = [
            {
                "id": call.get("id") or "",
                "type": "function",
                "function": {
                    "name": call.get("name") or "",
                    "arguments": json.dumps(call.get("arguments") or {}, separators=(",", ":")),
                },
            }
            for call in calls
        ]
    if out["content"] is None and not calls:
        out["content"] = ""
    return out


def message_tokens(model: str, message: Mapping[str, Any]) -> int:
    """Tokens one OpenAI message adds to a prompt (its framing included, the reply priming not)."""
    return count_message_tokens(model, [message]) - REPLY_PRIMING


# -- history -------------------------------------------------------------------------------------


def summary_content(text: str, through_seq: int, count: int) -> list[dict[str, Any]]:
    """A summarizer entry's content: one text part that also records what it replaces."""
    return [{"type": "text", "text": text, "summarizes_through": through_seq, "summarized_entries": count}]


def summary_through(content: Any) -> int:
    """The last seq a summarizer entry's content replaces (0 if it records none)."""
    if isinstance(content, list) and content and isinstance(content[0], Mapping):
        value = content[0].get("summarizes_through")
        if isinstance(value, int):
            return value
    return 0


@dataclass
class HistoryItem:
    """One message of the context with its cost. `seq` is the entry's (None for new messages)."""

    message: dict[str, Any]
    tokens: int
    seq: int | None = None
    source: str = ""


def active_history(rows: Sequence[Mapping[str, Any]], model: str) -> list[HistoryItem]:
    """The history a turn sends: the latest summary, then every chat entry after the seq it
    replaces, in order. A stored token count is reused when its tokenizer is the model's."""
    latest: Mapping[str, Any] | None = None
    for row in rows:
        if row["source"] == "summarizer":
            latest = row
    through = summary_through(latest["content"]) if latest is not None else 0
    encoding = encoding_name_for_model(model)
    # The summary is stored when it is made, after entries that it does not replace (those after
    # `through`); it stands for what came before them, so it goes first.
    ordered = ([latest] if latest is not None else []) + [
        row for row in rows if row["source"] in HISTORY_SOURCES and row["source"] != "summarizer"
    ]
    items: list[HistoryItem] = []
    for row in ordered:
        if row is not latest and row["seq"] <= through:
            continue
        message = to_model_message(row)
        tokens = row["token_count"] if row["tokenizer"] == encoding and row["token_count"] > 0 else 0
        items.append(
            HistoryItem(
                message=message,
                tokens=tokens or message_tokens(model, message),
                seq=row["seq"],
                source=row["source"],
            )
        )
    return items


# -- budget and overflow -------------------------------------------------------------------------


def budget_for(token_budget: int, context_window: int, settings: Mapping[str, Any]) -> int:
    """The session's token_budget, else the context window minus the reply's max_tokens."""
    if token_budget > 0:
        return token_budget
    reserve = settings.get("max_tokens") or settings.get("max_completion_tokens") or 0
    reserve = reserve if isinstance(reserve, int) and not isinstance(reserve, bool) else 0
    return max(1, context_window - max(0, reserve))


@dataclass
class Fit:
    """The outcome of fitting: the history kept, the oldest messages cut (to drop or summarise),
    and the total prompt tokens of system + kept + new (the summary, if any, not included)."""

    kept: list[HistoryItem]
    cut: list[HistoryItem] = field(default_factory=list)
    tokens: int = 0


def _total(items: Iterable[HistoryItem]) -> int:
    return sum(i.tokens for i in items)


def fit_context(
    system: HistoryItem | None,
    history: list[HistoryItem],
    new: list[HistoryItem],
    budget: int,
    policy: str,
    *,
    reserve: int = 0,
) -> Fit:
    """Fit system + history + new into `budget` tokens under `policy` (none/truncate/adaptive).

    `reserve` is room kept for a summary when cutting (adaptive). Raises ContextOverflow when the
    policy is `none` and the context is too large, or when the new messages and the system prompt
    alone do not fit."""
    fixed = REPLY_PRIMING + (system.tokens if system else 0) + _total(new)
    total = fixed + _total(history)
    if total <= budget:
        return Fit(kept=history, tokens=total)
    if fixed > budget:
        raise ContextOverflow(
            f"the new messages and the system prompt alone take {fixed} tokens, more than the budget of"
            f" {budget}; send shorter messages or raise the session's token_budget",
            tokens=fixed,
            budget=budget,
            policy=policy,
            new_only=True,
        )
    if policy not in ("truncate", "adaptive"):
        raise ContextOverflow(
            f"the context takes {total} tokens, more than the budget of {budget} (context_overflow is"
            " none); set the session's context_overflow to truncate or adaptive, raise its"
            " token_budget, or delete its history",
            tokens=total,
            budget=budget,
            policy="none",
            new_only=False,
        )
    room = budget - fixed - (reserve if policy == "adaptive" else 0)
    # Keep the longest suffix of the history that fits `room`.
    start = len(history)
    used = 0
    while start > 0 and used + history[start - 1].tokens <= room:
        start -= 1
        used += history[start].tokens
    # A tool result must follow the assistant message that called it: never start on one.
    while start < len(history) and history[start].message["role"] == "tool":
        used -= history[start].tokens
        start += 1
    kept = history[start:]
    return Fit(kept=kept, cut=history[:start], tokens=fixed + used)
