"""JSON normalisation of step outputs.

The state is stored as JSONB and reloaded after a crash, so every value the machine keeps must
round-trip through JSON unchanged; otherwise a replayed step could see a different `_` than the
first run did. `jsonify` turns what expressions return (tuples, FrozenMaps, sets, int keys) into
plain JSON values once, at the step boundary, and rejects what JSON cannot hold."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["NotJson", "jsonify", "payload_size"]


class NotJson(ValueError):
    """A value cannot be represented in JSON."""


_MAX_DEPTH = 200


def jsonify(value: Any, _depth: int = 0) -> Any:
    """A plain-JSON copy of `value` (dict with str keys, list, str, int, float, bool, None)."""
    if _depth > _MAX_DEPTH:
        raise NotJson("value nested too deeply")
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise NotJson(f"{value!r} is not a JSON number")
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if isinstance(k, bool) or k is None:
                key = json.dumps(k)
            elif isinstance(k, str | int | float):
                key = str(k)
            else:
                raise NotJson(f"mapping key {k!r} is not a string")
            out[key] = jsonify(v, _depth + 1)
        return out
    if isinstance(value, list | tuple):
        return [jsonify(v, _depth + 1) for v in value]
    if isinstance(value, set | frozenset):
        items = [jsonify(v, _depth + 1) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    to_dict = getattr(value, "to_dict", None)  # Box-like wrappers the sandbox may return
    if callable(to_dict):
        return jsonify(to_dict(), _depth + 1)
    raise NotJson(f"a value of type {type(value).__name__} is not JSON")


def payload_size(value: Any) -> int:
    """Bytes of the compact JSON encoding (what a transition row stores)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
