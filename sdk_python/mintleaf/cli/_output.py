"""How the CLI prints: messages as canonical JSON (`--json`) or as short human text, and errors."""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

import betterproto2

from .._gen.mintleaf import v1
from ..errors import MintleafError

__all__ = [
    "Printer",
    "compact",
    "describe_error",
    "preview",
    "table",
    "tidy",
    "transition_line",
]

_PREVIEW = 80  # characters of a step output shown on a transition line


def tidy(value: Any) -> Any:
    """The value with whole floats as ints: protobuf's Value has one number type, so an input of
    20 comes back as 20.0; a reader expects 20."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: tidy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [tidy(v) for v in value]
    return value


def compact(value: Any) -> str:
    """One-line JSON of a plain value (for people: whole numbers without `.0`)."""
    return json.dumps(tidy(value), ensure_ascii=False, separators=(", ", ": "))


def preview(value: Any, limit: int = _PREVIEW) -> str:
    text = compact(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain(msg: betterproto2.Message) -> dict[str, Any]:
    """A message as snake_case fields with enum values by their short name (SUCCEEDED, not
    EXECUTION_STATUS_SUCCEEDED); unset fields left out."""
    data = msg.to_dict(casing=betterproto2.Casing.SNAKE)
    for key in data:
        raw = getattr(msg, key, None)
        if isinstance(raw, enum.Enum):
            data[key] = raw.name
    return data


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]
    ]
    return "\n".join(lines)


def transition_line(t: v1.Transition) -> str:
    """`  3 STEP     main[1] evaluate  {"doubled": 4}`: sequence, type, where, and a preview of the
    output (the error in full for error transitions)."""
    where = t.current.path if t.current is not None else ""
    if t.step_label:
        where += f" ({t.step_label})"
    if t.step_type:
        where += f" {t.step_type}"
    parts = [f"{t.sequence:>4}", f"{t.type.name:<13}", where.strip()]
    if t.error:
        parts.append(f"error: {t.error}")
    elif t.output is not None:
        parts.append(preview(t.output.to_dict()))
    return "  ".join(p for p in parts if p).rstrip()


def describe_error(err: MintleafError, target: str) -> list[str]:
    """`error: CODE message [REASON]` and one line per field violation (with a hint for the two
    errors every new user meets: an unreachable server and a wrong key)."""
    if err.code_name == "UNAVAILABLE" and not err.reason:
        lines = [f"error: cannot reach the server at {target} (UNAVAILABLE {err.message})"]
        lines.append("  is it running? set the address with --target or MINTLEAF_TARGET")
        return lines
    head = f"error: {err.code_name} {err.message}"
    lines = [f"{head} [{err.reason}]" if err.reason else head]
    lines += [f"  {v.field}: {v.description}" for v in err.violations]
    if err.code_name == "UNAUTHENTICATED":
        lines.append("  check the API key (--api-key, MINTLEAF_API_KEY or <data dir>/api_key)")
    return lines


class Printer:
    """Writes results: `--json` gives canonical protobuf JSON (camelCase, enum full names, like the
    REST gateway) — one indented document per message, or one line per message for streams; the
    default is short human text."""

    def __init__(self, as_json: bool, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.json = as_json
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def note(self, text: str) -> None:
        """Progress and hints: on stderr, so stdout stays the result."""
        print(text, file=self.err, flush=True)

    def message(self, msg: betterproto2.Message, human: str | None = None) -> None:
        """One message: its JSON with --json; else `human` when given, else its fields."""
        if self.json:
            self.say(msg.to_json(indent=2))
        elif human is not None:
            self.say(human)
        else:
            self.fields(msg)

    def line(self, msg: betterproto2.Message) -> None:
        """One message of a stream, as a single JSON line."""
        self.say(msg.to_json())

    def fields(self, msg: betterproto2.Message) -> None:
        for key, value in _plain(msg).items():
            shown = value if isinstance(value, str) else compact(value)
            self.say(f"{key}: {shown}")
