"""Parse a task document (YAML, JSON or a mapping) into a validated, frozen `Task`.

Design note. One recursive pass builds the typed steps *and* collects every violation with its
field path (`main[3].map_reduce.map.tool`), so a user sees all problems of a task at once and a
bad task never reaches an execution. Alternatives rejected: validating with a JSON Schema of the
DSL first (its errors name schema keywords, not the user's intent, and it cannot check
expressions, tools or workflow names), and stopping at the first error (one round trip per typo).

Paths follow the document as written: a single step in a slot has no index
(`main[2].foreach.do.tool`), a list does (`main[2].foreach.do[0].tool`); the step-level and block
forms of map_reduce and yield keep their own keys (`main[3].map.tool` vs
`main[3].map_reduce.map.tool`).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from jsonschema import validators

from mintleaf_server.dsl.errors import ReadError, TaskInvalid, Violation
from mintleaf_server.dsl.reading import (
    BUILTIN_NAMES,
    TASK_SCOPE_NAMES,
    Readable,
    Slot,
    describe,
    read_string,
    read_tree,
)
from mintleaf_server.dsl.steps import (
    ContentPart,
    EmbedStep,
    ErrorStep,
    EvaluateStep,
    ForeachStep,
    FrozenMap,
    GetStep,
    IfElseStep,
    LogStep,
    MapReduceStep,
    ParallelStep,
    PromptMessage,
    PromptStep,
    ReadTree,
    RetryPolicy,
    ReturnStep,
    SearchStep,
    Sequence,
    SetStep,
    SleepStep,
    Step,
    StepBase,
    SwitchCase,
    SwitchStep,
    ToolCallStep,
    WaitForInputStep,
    YieldStep,
    freeze,
    nested_sequences,
    thaw,
)
from mintleaf_server.dsl.task import RESERVED_KEYS, Task
from mintleaf_server.dsl.tools import ToolDef, check_schema, is_identifier, parse_tool

__all__ = [
    "REDUCE_NAMES",
    "STEP_KEYS",
    "TASK_NAMES",
    "DslLimits",
    "explain",
    "load_document",
    "parse_task",
    "validate_input",
]

# Names in scope for every expression and template of a step...
TASK_NAMES: frozenset[str] = frozenset(TASK_SCOPE_NAMES) | frozenset(BUILTIN_NAMES)
# ...except `reduce`, which sees only the accumulator and the item (JULEP-SPEC 2.3).
REDUCE_NAMES: frozenset[str] = frozenset({"results", "_"}) | frozenset(BUILTIN_NAMES)


@dataclass(frozen=True)
class DslLimits:
    """Limits checked when a task is created (the `max_items` one is the engine's, at run time)."""

    max_depth: int = 16  # a workflow's own steps are at depth 1
    max_steps: int = 1_000  # every step of every workflow, nested ones included
    max_parallelism: int = 1_000  # foreach / map_reduce `parallelism` is 1..this
    default_parallelism: int = 100  # map_reduce without `parallelism` (Julep's server default)
    max_parallel_branches: int = 100  # items of a `parallel` step
    max_items: int = 1_000  # items a foreach / map_reduce may iterate over (run time)
    max_sleep_s: float = 31 * 86_400.0
    max_label_length: int = 120
    max_name_length: int = 255
    # Values in the document, counted as expanded: YAML aliases can make a small text huge.
    max_document_nodes: int = 200_000


# Which key makes a mapping which step (the block and step-level forms share a kind).
_DISCRIMINATORS: dict[str, str] = {
    "prompt": "prompt",
    "tool": "tool_call",
    "evaluate": "evaluate",
    "wait_for_input": "wait_for_input",
    "log": "log",
    "get": "get",
    "set": "set",
    "foreach": "foreach",
    "map_reduce": "map_reduce",
    "over": "map_reduce",
    "parallel": "parallel",
    "if": "if_else",
    "switch": "switch",
    "sleep": "sleep",
    "return": "return",
    "yield": "yield",
    "workflow": "yield",
    "error": "error",
    "embed": "embed",
    "search": "search",
}
_COMMON_KEYS = frozenset({"label", "retry", "timeout"})
# Keys a step of each kind may have, besides the common ones.
STEP_KEYS: dict[str, frozenset[str]] = {
    "prompt": frozenset(
        {"prompt", "tools", "tool_choice", "settings", "unwrap", "auto_run_tools", "disable_cache"}
    ),
    "tool_call": frozenset({"tool", "arguments"}),
    "evaluate": frozenset({"evaluate"}),
    "wait_for_input": frozenset({"wait_for_input"}),
    "log": frozenset({"log"}),
    "get": frozenset({"get"}),
    "set": frozenset({"set"}),
    "foreach": frozenset({"foreach"}),
    "map_reduce": frozenset({"map_reduce", "over", "map", "reduce", "initial", "parallelism"}),
    "parallel": frozenset({"parallel"}),
    "if_else": frozenset({"if", "then", "else"}),
    "switch": frozenset({"switch"}),
    "sleep": frozenset({"sleep"}),
    "return": frozenset({"return"}),
    "yield": frozenset({"yield", "workflow", "arguments"}),
    "error": frozenset({"error"}),
    "embed": frozenset({"embed"}),
    "search": frozenset({"search"}),
}
_MAP_REDUCE_FIELDS = frozenset({"over", "map", "reduce", "initial", "parallelism"})
_RETRY_KEYS = frozenset(
    {"max_attempts", "initial_interval", "backoff_coefficient", "max_interval", "non_retryable"}
)
_ROLES = frozenset({"system", "user", "assistant", "tool"})
_SLEEP_UNITS = {"seconds": 1.0, "minutes": 60.0, "hours": 3_600.0, "days": 86_400.0}
# JULEP-SPEC 1.1 stepLabel: not all digits, so it cannot clash with a step index.
_LABEL = re.compile(r"^[^0-9]|^[0-9]+[^0-9].*$", re.DOTALL)
_CANONICAL_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")


class _Loader(yaml.SafeLoader):
    """safe_load without timestamps: `2024-01-01` stays the string the user wrote."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _too_many_nodes(value: Any, budget: int) -> bool:
    """Whether the document, aliases expanded, holds more than `budget` values (stops early)."""
    stack = [value]
    while stack:
        budget -= 1
        if budget < 0:
            return True
        item = stack.pop()
        if isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def load_document(doc: str | bytes | Mapping[str, Any]) -> Mapping[str, Any]:
    """YAML or JSON text (or an already-loaded mapping) as a mapping; TaskInvalid otherwise."""
    if isinstance(doc, Mapping):
        return doc
    text = doc.decode("utf-8") if isinstance(doc, bytes) else doc
    loaded: Any
    try:
        loaded = json.loads(text) if text.lstrip().startswith("{") else None
    except ValueError:
        loaded = None
    if loaded is None:
        try:
            loaded = yaml.load(text, Loader=_Loader)
        except yaml.YAMLError as exc:
            raise TaskInvalid([Violation("", f"not valid YAML or JSON: {exc}")]) from exc
    if not isinstance(loaded, Mapping):
        raise TaskInvalid([Violation("", f"a task must be an object, not {_type_name(loaded)}")])
    return loaded


class _Parser:
    """One parse of one task: the violations found so far and what the steps may refer to."""

    def __init__(self, limits: DslLimits, tool_names: Mapping[str, str], workflows: Collection[str]) -> None:
        self.limits = limits
        self.tool_names = tool_names  # visible tool name -> "task" | "agent" | "hidden-agent"
        self.workflows = workflows
        self.violations: list[Violation] = []
        self.step_count = 0
        self.labels: dict[str, str] = {}

    # -- helpers -------------------------------------------------------------------------------

    def bad(self, path: str, message: str) -> None:
        self.violations.append(Violation(path, message))

    def read(self, value: Any, slot: Slot, path: str, names: frozenset[str] = TASK_NAMES) -> ReadTree:
        tree, problems = read_tree(value, slot, names, path)
        self.violations.extend(Violation(p, m) for p, m in problems)
        return freeze(tree)

    def string(
        self, value: Any, slot: Slot, path: str, names: frozenset[str] = TASK_NAMES
    ) -> Readable | None:
        if isinstance(value, bool | int | float) and slot is Slot.EXPRESSION:
            value = repr(value)  # `if: true` is the expression True
        if not isinstance(value, str):
            self.bad(path, f"must be a string, not {_type_name(value)}")
            return None
        try:
            return read_string(value, slot, names)
        except ReadError as exc:
            self.bad(path, str(exc))
            return None

    def mapping(self, value: Any, path: str, what: str = "an object") -> Mapping[str, Any] | None:
        if not isinstance(value, Mapping):
            self.bad(path, f"must be {what}, not {_type_name(value)}")
            return None
        return value

    def fields(self, body: Mapping[str, Any], path: str, allowed: Collection[str], what: str) -> None:
        for key in body:
            if key not in allowed:
                self.bad(f"{path}.{key}", f"unknown field {key!r} of {what}")

    def boolean(self, body: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = body.get(key, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.bad(f"{path}.{key}", f"must be true or false, not {_type_name(value)}")
            return default
        return value

    def parallelism(self, value: Any, path: str, default: int) -> int:
        if value is None:
            return default
        if not isinstance(value, int) or isinstance(value, bool):
            self.bad(path, f"must be an integer, not {_type_name(value)}")
            return default
        if not 1 <= value <= self.limits.max_parallelism:
            self.bad(path, f"must be between 1 and {self.limits.max_parallelism}, not {value}")
        return value

    def tool_ref(self, name: Any, path: str) -> str | None:
        if not is_identifier(name):
            self.bad(path, "must be a tool name (a valid Python identifier of at most 40 characters)")
            return None
        origin = self.tool_names.get(name)
        if origin is None or origin == "hidden-agent":
            hint = (
                " (the agent has it, but the task sets inherit_tools: false)"
                if origin == "hidden-agent"
                else ""
            )
            known = sorted(k for k, v in self.tool_names.items() if v != "hidden-agent")
            self.bad(path, f"unknown tool {name!r}{hint}; known tools: {', '.join(known) or 'none'}")
        return str(name)

    # -- structure -----------------------------------------------------------------------------

    def sequence(self, value: Any, path: str, depth: int) -> Sequence:
        """A slot's steps: a list of steps, or one step (a 1-tuple)."""
        if isinstance(value, list):
            if not value:
                self.bad(path, "must hold at least one step")
            items = [(f"{path}[{i}]", item) for i, item in enumerate(value)]
        elif isinstance(value, Mapping):
            items = [(path, value)]
        else:
            self.bad(path, f"must be a step or a list of steps, not {_type_name(value)}")
            return ()
        steps = (self.step(item, item_path, depth) for item_path, item in items)
        return tuple(s for s in steps if s is not None)

    def step(self, raw: Any, path: str, depth: int) -> Step | None:
        if depth > self.limits.max_depth:
            self.bad(path, f"steps are nested too deep (more than {self.limits.max_depth} levels)")
            return None
        self.step_count += 1
        if self.step_count > self.limits.max_steps:
            if self.step_count == self.limits.max_steps + 1:  # said once; the rest is not parsed
                self.bad(path, f"too many steps: a task may hold at most {self.limits.max_steps}")
            return None
        if not isinstance(raw, Mapping):
            self.bad(path, f"a step must be an object, not {_type_name(raw)}")
            return None

        kinds = {_DISCRIMINATORS[k] for k in raw if k in _DISCRIMINATORS}
        if len(kinds) != 1:
            keys = [k for k in raw if k in _DISCRIMINATORS]
            if keys:
                self.bad(path, f"a step has one type, but this one has {', '.join(keys)}")
            elif {"map", "reduce"} & raw.keys():
                self.bad(
                    f"{path}.over", "is required: a map_reduce step needs `over` (or a `map_reduce:` block)"
                )
            elif {"then", "else"} & raw.keys():
                self.bad(f"{path}.if", "is required: an if/then/else step needs `if`")
            else:
                self.bad(
                    path,
                    "not a step: expected one of the keys "
                    + ", ".join(sorted(_DISCRIMINATORS))
                    + (f" (found {', '.join(map(str, raw))})" if raw else ""),
                )
            return None
        kind = kinds.pop()
        self.fields(raw, path, STEP_KEYS[kind] | _COMMON_KEYS, f"a {kind} step")
        common = self.common(raw, path)
        handler: Callable[[Mapping[str, Any], str, int], dict[str, Any] | None] = getattr(self, f"k_{kind}")
        built = handler(raw, path, depth)
        if built is None:
            return None
        cls = _STEP_CLASSES[kind]
        step: Step = cls(**built, **common)
        return step

    def common(self, raw: Mapping[str, Any], path: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        label = raw.get("label")
        if label is not None:
            if (
                not isinstance(label, str)
                or len(label) > self.limits.max_label_length
                or not _LABEL.match(label)
            ):
                self.bad(
                    f"{path}.label",
                    f"must be a string of 1 to {self.limits.max_label_length} characters that is not all digits",
                )
            elif label in self.labels:
                self.bad(f"{path}.label", f"duplicate label {label!r} (also at {self.labels[label]})")
            else:
                self.labels[label] = path
                out["label"] = label
        if raw.get("retry") is not None:
            out["retry"] = retry_policy(raw["retry"], f"{path}.retry", self.violations)
        if raw.get("timeout") is not None:
            out["timeout_s"] = timeout_seconds(raw["timeout"], f"{path}.timeout", self.violations)
        return out

    # -- one handler per step kind: returns the step's fields (besides the common ones) ---------

    def k_prompt(self, raw: Mapping[str, Any], path: str, depth: int) -> dict[str, Any] | None:
        prompt = raw["prompt"]
        ppath = f"{path}.prompt"
        read: Readable | tuple[PromptMessage, ...] | None
        if isinstance(prompt, str):
            read = self.string(prompt, Slot.TEXT, ppath)
        elif isinstance(prompt, list):
            if not prompt:
                self.bad(ppath, "must hold at least one message")
            read = tuple(m for i, item in enumerate(prompt) if (m := self.message(item, f"{ppath}[{i}]")))
        else:
            self.bad(ppath, f"must be a string or a list of messages, not {_type_name(prompt)}")
            read = None
        tools: str | tuple[ToolDef | str, ...] = "all"
        raw_tools = raw.get("tools", "all")
        if isinstance(raw_tools, list):
            items: list[ToolDef | str] = []
            for i, item in enumerate(raw_tools):
                tpath = f"{path}.tools[{i}]"
                if isinstance(item, str):
                    name = self.tool_ref(item, tpath)
                    if name:
                        items.append(name)
                elif isinstance(item, Mapping) and set(item) == {"ref"}:
                    ref = item["ref"]
                    name = self.tool_ref(
                        ref.get("name") if isinstance(ref, Mapping) else None, f"{tpath}.ref.name"
                    )
                    if name:
                        items.append(name)
                else:
                    tool, problems = parse_tool(item, tpath)
                    self.violations.extend(problems)
                    if tool is not None:
                        items.append(tool)
            tools = tuple(items)
        elif raw_tools is not None and raw_tools != "all":
            self.bad(f"{path}.tools", 'must be "all" or a list of tool names and tool definitions')
        choice = raw.get("tool_choice")
        if choice is not None and choice not in ("auto", "none"):
            fn = choice.get("function") if isinstance(choice, Mapping) else None
            if not (isinstance(fn, Mapping) and isinstance(fn.get("name"), str)):
                self.bad(f"{path}.tool_choice", 'must be "auto", "none" or {function: {name: <tool>}}')
        settings = raw.get("settings")
        if settings is not None:
            self.mapping(settings, f"{path}.settings")
        return {
            "prompt": read,
            "tools": tools,
            "tool_choice": freeze(choice),
            "settings": freeze(settings),
            "unwrap": self.boolean(raw, "unwrap", path, False),
            "auto_run_tools": self.boolean(raw, "auto_run_tools", path, True),
            "disable_cache": self.boolean(raw, "disable_cache", path, False),
        }

    def message(self, raw: Any, path: str) -> PromptMessage | None:
        body = self.mapping(raw, path, "a message {role, content}")
        if body is None:
            return None
        self.fields(
            body, path, {"role", "content", "name", "tool_call_id", "continue", "tool_calls"}, "a message"
        )
        role = body.get("role")
        if role not in _ROLES:
            self.bad(f"{path}.role", f"must be one of {', '.join(sorted(_ROLES))}")
        if "content" not in body:
            self.bad(f"{path}.content", "is required")
        content = body.get("content")
        read: Readable | tuple[ContentPart, ...] | None = None
        if isinstance(content, list):
            parts = []
            for i, part in enumerate(content):
                cp = self.content_part(part, f"{path}.content[{i}]")
                if cp is not None:
                    parts.append(cp)
            read = tuple(parts)
        elif content is not None:
            read = self.string(content, Slot.TEXT, f"{path}.content")
        for key in ("name", "tool_call_id"):
            if body.get(key) is not None and not isinstance(body[key], str):
                self.bad(f"{path}.{key}", "must be a string")
        tool_calls = body.get("tool_calls")
        if tool_calls is not None and not isinstance(tool_calls, list):
            self.bad(f"{path}.tool_calls", "must be a list")
        cont = body.get("continue")
        if cont is not None and not isinstance(cont, bool):
            self.bad(f"{path}.continue", "must be true or false")
        return PromptMessage(
            role=str(role),
            content=read if read is not None else (),
            name=body.get("name"),
            tool_call_id=body.get("tool_call_id"),
            continue_=cont,
            tool_calls=None if tool_calls is None else self.read(tool_calls, Slot.TEXT, f"{path}.tool_calls"),
        )

    def content_part(self, raw: Any, path: str) -> ContentPart | None:
        body = self.mapping(raw, path, "a content part {type, text | image_url}")
        if body is None:
            return None
        kind = body.get("type")
        if kind == "text":
            self.fields(body, path, {"type", "text"}, "a text part")
            return ContentPart(type="text", text=self.string(body.get("text"), Slot.TEXT, f"{path}.text"))
        if kind == "image_url":
            self.fields(body, path, {"type", "image_url"}, "an image_url part")
            image = body.get("image_url")
            url: Any = image.get("url") if isinstance(image, Mapping) else image
            detail = image.get("detail") if isinstance(image, Mapping) else None
            if detail is not None and detail not in ("auto", "low", "high"):
                self.bad(f"{path}.image_url.detail", "must be auto, low or high")
            return ContentPart(
                type="image_url",
                image_url=self.string(url, Slot.TEXT, f"{path}.image_url.url"),
                detail=detail,
            )
        self.bad(f"{path}.type", "must be text or image_url")
        return None

    def k_tool_call(self, raw: Mapping[str, Any], path: str, depth: int) -> dict[str, Any] | None:
        return {
            "tool": self.tool_ref(raw["tool"], f"{path}.tool"),
            "arguments": self.arguments(raw.get("arguments", "_"), f"{path}.arguments"),
        }

    def arguments(self, value: Any, path: str) -> ReadTree:
        if isinstance(value, Mapping):
            return self.read(value, Slot.VALUE, path)
        if isinstance(value, str):
            return self.string(value, Slot.VALUE, path)
        self.bad(path, f'must be an object or an expression such as "_", not {_type_name(value)}')
        return None

    def value_map(self, raw: Mapping[str, Any], key: str, path: str) -> ReadTree:
        value = raw[key]
        if self.mapping(value, f"{path}.{key}", "an object of names to values") is None:
            return None
        return self.read(value, Slot.VALUE, f"{path}.{key}")

    def k_evaluate(self, raw: Mapping[str, Any], path: str, depth: int) -> dict[str, Any] | None:
        return {"values": self.value_map(raw, "evaluate", path)}

    def k_set(self, raw: Mapping[str, Any], path: str, depth: int) -> dict[str, Any] | None:
        return {"values": self.value_map(raw, "set", path)}

    def k_wait_for_input(self, raw: Mapping[str, Any], path: str, depth: int) -> dict[str, Any] | None:
        wpath = f"{path}.wait_for_input"
        body = self.mapping(raw["wait_for_input"], wpath, "an object {info: {...}}")
        if body is None:
            return None
        self.fields(body, wpath, {"info"}, "wait_for_input")
        if "info" not in body:
            self.bad(f"{wpath}.info", "is required")
            return None
        return {"info": self.value_map(body, "info", wpath)}

    def k_log(self, raw: Mapping[str, Any], path: str, depth: int) -> dict[str, Any] | None:
        return {"message": self.string(raw["log"], Slot.TEXT, f"{path}.log")}

    def k_error(self, raw: Mapping[str, Any], path: str, depth: int) -> dict[str, Any] | None:
        return {"message": self.string(raw["error"], Slot.TEXT, f"{path}.error")}

    def k_get(self, raw: Mapping[str, Any], path: str, depth: int) -> dict[str, Any] | None:
        key = raw["get"]
        if not isinstance(key, str) or not key:
            self.bad(f"{path}.get", "must be a non-empty key string")
        return {"key": key}

    def k_return(self, raw: Mapping[str, Any], path: str, depth: int) -> dict[str, Any] | None:
        return {"value": self.read(raw["return"], Slot.VALUE, f"{path}.return")}

    def k_foreach(self, raw: Mapping[str, Any], path: str, depth: int) -> dict[str, Any] | None:
        fpath = f"{path}.foreach"
        body = self.mapping(raw["foreach"], fpath, "an object {in, do}")
        if body is None:
            return None
        self.fields(body, fpath, {"in", "do", "parallelism"}, "foreach")
        for key in ("in", "do"):
            if key not in body:
                self.bad(f"{fpath}.{key}", "is required")
        return {
            "in_": self.string(body["in"], Slot.EXPRESSION, f"{fpath}.in") if "in" in body else None,
            "do": self.sequence(body["do"], f"{fpath}.do", depth + 1) if "do" in body else (),
            "parallelism": self.parallelism(body.get("parallelism"), f"{fpath}.parallelism", 1),
        }

    def k_map_reduce(self, raw: Mapping[str, Any], path: str, depth: int) -> dict[str, Any] | None:
        if "map_reduce" in raw:
            bpath = f"{path}.map_reduce"
            for key in _MAP_REDUCE_FIELDS & raw.keys():
                self.bad(f"{path}.{key}", "belongs inside the map_reduce block (or drop the block)")
            body = self.mapping(raw["map_reduce"], bpath, "an object {over, map, reduce?}")
            if body is None:
                return None
            self.fields(body, bpath, _MAP_REDUCE_FIELDS, "map_reduce")
        else:
            bpath, body = path, raw
        for key in ("over", "map"):
            if key not in body:
                self.bad(f"{bpath}.{key}", "is required")
        reduce = body.get("reduce")
        return {
            "over": self.string(body["over"], Slot.EXPRESSION, f"{bpath}.over") if "over" in body else None,
            "map": self.sequence(body["map"], f"{bpath}.map", depth + 1) if "map" in body else (),
            "reduce": None
            if reduce is None
            else self.string(reduce, Slot.EXPRESSION, f"{bpath}.reduce", REDUCE_NAMES),
            "initial": self.read(body.get("initial", []), Slot.VALUE, f"{bpath}.initial"),
            "parallelism": self.parallelism(
                body.get("parallelism"),
                f"{bpath}.parallelism",
                min(self.limits.default_parallelism, self.limits.max_parallelism),
            ),
        }

    def k_parallel(self, raw: Mapping[str, Any], path: str, depth: int) -> dict[str, Any] | None:
        ppath = f"{path}.parallel"
        items = raw["parallel"]
        if not isinstance(items, list) or not items:
            self.bad(ppath, "must be a non-empty list of steps")
            return None
        if len(items) > self.limits.max_parallel_branches:
            self.bad(
                ppath, f"has {len(items)} branches; at most {self.limits.max_parallel_branches} are allowed"
            )
        return {
            "branches": tuple(self.sequence(item, f"{ppath}[{i}]", depth + 1) for i, item in enumerate(items))
        }

    def k_if_else(self, raw: Mapping[str, Any], path: str, depth: int) -> dict[str, Any] | None:
        if "then" not in raw:
            self.bad(f"{path}.then", "is required")
        orelse = raw.get("else")
        return {
            "condition": self.string(raw["if"], Slot.EXPRESSION, f"{path}.if"),
            "then": self.sequence(raw["then"], f"{path}.then", depth + 1) if "then" in raw else (),
            "else_": None if orelse is None else self.sequence(orelse, f"{path}.else", depth + 1),
        }

    def k_switch(self, raw: Mapping[str, Any], path: str, depth: int) -> dict[str, Any] | None:
        spath = f"{path}.switch"
        items = raw["switch"]
        if not isinstance(items, list) or not items:
            self.bad(spath, "must be a non-empty list of {case, then}")
            return None
        cases = []
        for i, item in enumerate(items):
            cpath = f"{spath}[{i}]"
            body = self.mapping(item, cpath, "an object {case, then}")
            if body is None:
                continue
            self.fields(body, cpath, {"case", "then"}, "a switch case")
            for key in ("case", "then"):
                if key not in body:
                    self.bad(f"{cpath}.{key}", "is required")
            case = body.get("case")
            # The literal `_` is the default case: it always matches (Julep evaluated it as `_`).
            default = isinstance(case, str) and case.strip() == "_"
            cases.append(
                SwitchCase(
                    case=None
                    if default or case is None
                    else self.string(case, Slot.EXPRESSION, f"{cpath}.case"),
                    then=self.sequence(body["then"], f"{cpath}.then", depth + 1) if "then" in body else (),
                )
            )
        return {"cases": tuple(cases)}

    def k_sleep(self, raw: Mapping[str, Any], path: str, depth: int) -> dict[str, Any] | None:
        spath = f"{path}.sleep"
        value = raw["sleep"]
        total = 0.0
        if _is_number(value):
            total = float(value)  # `sleep: 30` means seconds
        elif isinstance(value, Mapping):
            self.fields(value, spath, _SLEEP_UNITS, "sleep")
            for unit, factor in _SLEEP_UNITS.items():
                amount = value.get(unit, 0)
                if amount is None:
                    continue
                if not _is_number(amount) or amount < 0:
                    self.bad(f"{spath}.{unit}", "must be a number >= 0")
                    return None
                total += float(amount) * factor
        else:
            self.bad(spath, "must be an object {seconds, minutes, hours, days} or a number of seconds")
            return None
        if not 0 < total <= self.limits.max_sleep_s:
            self.bad(
                spath,
                f"must last more than 0 and at most {self.limits.max_sleep_s:g} seconds, not {total:g}",
            )
        return {"seconds": total}

    def k_yield(self, raw: Mapping[str, Any], path: str, depth: int) -> dict[str, Any] | None:
        if "yield" in raw:
            bpath = f"{path}.yield"
            for key in ("workflow", "arguments"):
                if key in raw:
                    self.bad(f"{path}.{key}", "belongs inside the yield block (or drop the block)")
            body = self.mapping(raw["yield"], bpath, "an object {workflow, arguments}")
            if body is None:
                return None
            self.fields(body, bpath, {"workflow", "arguments"}, "yield")
        else:
            bpath, body = path, raw
        workflow = body.get("workflow")
        if workflow is None:
            self.bad(f"{bpath}.workflow", "is required")
        elif not is_identifier(workflow):
            self.bad(f"{bpath}.workflow", "must be a workflow name (a valid Python identifier)")
        elif workflow not in self.workflows:
            self.bad(
                f"{bpath}.workflow",
                f"unknown workflow {workflow!r}; this task has {', '.join(sorted(self.workflows))}",
            )
        return {
            "workflow": workflow,
            "arguments": self.arguments(body.get("arguments", "_"), f"{bpath}.arguments"),
        }

    def k_embed(self, raw: Mapping[str, Any], path: str, depth: int) -> dict[str, Any] | None:
        epath = f"{path}.embed"
        body = self.mapping(raw["embed"], epath, "an object {text, embed_instruction?}")
        if body is None:
            return None
        self.fields(body, epath, {"text", "embed_instruction"}, "embed")
        text = body.get("text")
        read: Readable | tuple[Readable, ...] | None = None
        if isinstance(text, list) and text:
            read = tuple(
                r for i, t in enumerate(text) if (r := self.string(t, Slot.TEXT, f"{epath}.text[{i}]"))
            )
        elif isinstance(text, str):
            read = self.string(text, Slot.TEXT, f"{epath}.text")
        else:
            self.bad(f"{epath}.text", "is required: a string or a non-empty list of strings")
        instruction = body.get("embed_instruction")
        return {
            "text": read,
            "embed_instruction": None
            if instruction is None
            else self.string(instruction, Slot.TEXT, f"{epath}.embed_instruction"),
        }

    def k_search(self, raw: Mapping[str, Any], path: str, depth: int) -> dict[str, Any] | None:
        spath = f"{path}.search"
        body = self.mapping(raw["search"], spath, "a doc search request {text | vector, ...}")
        if body is None:
            return None
        self.fields(
            body, spath, _SEARCH_RANGES.keys() | {"text", "vector", "lang", "metadata_filter"}, "search"
        )
        has_text, has_vector = body.get("text") is not None, body.get("vector") is not None
        if not has_text and not has_vector:
            self.bad(spath, "needs `text`, `vector` or both (hybrid)")
        out: dict[str, Any] = {
            "mode": "hybrid" if has_text and has_vector else "text" if has_text else "vector"
        }
        if has_text:
            out["text"] = self.string(body["text"], Slot.TEXT, f"{spath}.text")
        if has_vector:
            vector = body["vector"]
            if isinstance(vector, str):
                out["vector"] = self.string(vector, Slot.VALUE, f"{spath}.vector")
            elif isinstance(vector, list) and vector and all(_is_number(x) for x in vector):
                out["vector"] = tuple(float(x) for x in vector)
            else:
                self.bad(f"{spath}.vector", "must be a non-empty list of numbers or an expression")
        if body.get("lang") is not None:
            if not isinstance(body["lang"], str):
                self.bad(f"{spath}.lang", "must be a language code such as en-US")
            out["lang"] = body["lang"]
        for key, (low, high, integer, open_high) in _SEARCH_RANGES.items():
            value = body.get(key)
            if value is None:
                continue
            ok = _is_number(value) and (not integer or isinstance(value, int))
            ok = ok and low <= value and (value < high if open_high else value <= high)
            if not ok:
                bound = f"[{low:g}, {high:g})" if open_high else f"{low:g}..{high:g}"
                self.bad(f"{spath}.{key}", f"must be {'an integer' if integer else 'a number'} in {bound}")
            out[key] = value
        mfilter = body.get("metadata_filter")
        if mfilter is not None and self.mapping(mfilter, f"{spath}.metadata_filter") is not None:
            out["metadata_filter"] = self.read(mfilter, Slot.VALUE, f"{spath}.metadata_filter")
        return out


# search field -> (low, high, integer, high bound excluded); JULEP-SPEC 6.2.
_SEARCH_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "limit": (1, 50, True, False),
    "trigram_similarity_threshold": (0, 1, False, False),
    "confidence": (-1, 1, False, False),
    "mmr_strength": (0, 1, False, True),
    "alpha": (0, 1, False, False),
    "k_multiplier": (1, 10, True, False),
}

_STEP_CLASSES: dict[str, type[Any]] = {
    "prompt": PromptStep,
    "tool_call": ToolCallStep,
    "evaluate": EvaluateStep,
    "wait_for_input": WaitForInputStep,
    "log": LogStep,
    "get": GetStep,
    "set": SetStep,
    "foreach": ForeachStep,
    "map_reduce": MapReduceStep,
    "parallel": ParallelStep,
    "if_else": IfElseStep,
    "switch": SwitchStep,
    "sleep": SleepStep,
    "return": ReturnStep,
    "yield": YieldStep,
    "error": ErrorStep,
    "embed": EmbedStep,
    "search": SearchStep,
}


def retry_policy(raw: Any, path: str, violations: list[Violation]) -> RetryPolicy | None:
    """`retry: {max_attempts, initial_interval, backoff_coefficient, max_interval, non_retryable}`
    (intervals in seconds)."""
    if not isinstance(raw, Mapping):
        violations.append(Violation(path, f"must be an object, not {_type_name(raw)}"))
        return None
    for key in raw:
        if key not in _RETRY_KEYS:
            violations.append(Violation(f"{path}.{key}", f"unknown retry field {key!r}"))
    defaults = RetryPolicy()
    attempts = raw.get("max_attempts", defaults.max_attempts)
    if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
        violations.append(Violation(f"{path}.max_attempts", "must be an integer >= 1"))
    initial = raw.get("initial_interval", defaults.initial_interval_s)
    if not _is_number(initial) or initial <= 0:
        violations.append(Violation(f"{path}.initial_interval", "must be a number of seconds > 0"))
    backoff = raw.get("backoff_coefficient", defaults.backoff_coefficient)
    if not _is_number(backoff) or backoff < 1:
        violations.append(Violation(f"{path}.backoff_coefficient", "must be a number >= 1"))
    maximum = raw.get("max_interval", max(defaults.max_interval_s, initial if _is_number(initial) else 0))
    if not _is_number(maximum) or (_is_number(initial) and maximum < initial):
        violations.append(
            Violation(f"{path}.max_interval", "must be a number of seconds >= initial_interval")
        )
    never = raw.get("non_retryable", [])
    if not isinstance(never, list) or not all(isinstance(n, str) for n in never):
        violations.append(Violation(f"{path}.non_retryable", "must be a list of error type names"))
        never = []
    return RetryPolicy(
        max_attempts=attempts,
        initial_interval_s=initial,
        backoff_coefficient=backoff,
        max_interval_s=maximum,
        non_retryable=tuple(never),
    )


def timeout_seconds(raw: Any, path: str, violations: list[Violation]) -> float | None:
    """`timeout`: a number of seconds > 0."""
    if not _is_number(raw) or raw <= 0:
        violations.append(Violation(path, "must be a number of seconds > 0"))
        return None
    return float(raw)


def parse_task(
    doc: str | bytes | Mapping[str, Any],
    *,
    agent_tools: Collection[str] = (),
    limits: DslLimits = DslLimits(),
) -> Task:
    """Parse and validate a task document; raise TaskInvalid carrying every violation found.

    `agent_tools` names the tools of the task's agent: a step may call them unless the task sets
    `inherit_tools: false`."""
    raw = load_document(doc)
    if _too_many_nodes(raw, limits.max_document_nodes):
        raise TaskInvalid([Violation("", f"the document holds more than {limits.max_document_nodes} values")])
    violations: list[Violation] = []

    def bad(path: str, message: str) -> None:
        violations.append(Violation(path, message))

    name = raw.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= limits.max_name_length:
        bad("name", f"is required: a string of 1 to {limits.max_name_length} characters")
    canonical = raw.get("canonical_name")
    if canonical is not None and (
        not isinstance(canonical, str)
        or len(canonical) > limits.max_name_length
        or not _CANONICAL_NAME.match(canonical)
    ):
        bad("canonical_name", "must start with a letter and hold only letters, digits and _")
    description = raw.get("description") or ""
    if not isinstance(description, str):
        bad("description", "must be a string")
        description = ""
    input_schema = raw.get("input_schema")
    if input_schema is not None:
        check_schema(input_schema, "input_schema", violations)
    inherit = raw.get("inherit_tools", True)
    if inherit is None:
        inherit = True
    if not isinstance(inherit, bool):
        bad("inherit_tools", "must be true or false")
        inherit = True
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        bad("metadata", "must be an object")
        metadata = {}
    retry = None if raw.get("retry") is None else retry_policy(raw["retry"], "retry", violations)
    timeout = None if raw.get("timeout") is None else timeout_seconds(raw["timeout"], "timeout", violations)
    if raw.get("workflows") is not None:
        bad("workflows", "is reserved; write each workflow as a top-level key (main, and any others)")

    tools: list[ToolDef] = []
    raw_tools = raw.get("tools") or []
    if not isinstance(raw_tools, list):
        bad("tools", "must be a list of tool definitions")
        raw_tools = []
    seen: dict[str, int] = {}
    for i, item in enumerate(raw_tools):
        tool, problems = parse_tool(item, f"tools[{i}]")
        violations.extend(problems)
        if tool is None:
            continue
        if tool.name in seen:
            bad(f"tools[{i}].name", f"duplicate tool name {tool.name!r} (also tools[{seen[tool.name]}])")
            continue
        seen[tool.name] = i
        tools.append(tool)

    # Task tools shadow agent tools of the same name (JULEP-SPEC 7.6).
    visible: dict[str, str] = {n: ("agent" if inherit else "hidden-agent") for n in agent_tools}
    visible.update({n: "task" for n in seen})
    # A tool definition that failed validation still names a tool: do not also call it unknown.
    for item in raw_tools:
        if isinstance(item, Mapping) and is_identifier(item.get("name")):
            visible.setdefault(item["name"], "task")

    workflow_keys: list[str] = []
    for key in raw:
        if key in RESERVED_KEYS:
            continue
        if not isinstance(key, str) or not is_identifier(key):
            bad(
                str(key),
                "is not a task field, and a workflow name must be a valid Python identifier of at most 40 characters",
            )
            continue
        workflow_keys.append(key)
    if "main" not in raw:
        bad("main", "is required: the task's entry workflow (a list of steps)")

    workflow_keys.sort(key=lambda k: k != "main")  # main first, then document order
    parser = _Parser(limits, visible, frozenset(workflow_keys))
    workflows: dict[str, Sequence] = {}
    for key in workflow_keys:
        parser.labels = {}  # labels are unique per workflow
        workflows[key] = parser.sequence(raw[key], key, 1)
    violations.extend(parser.violations)

    if violations:
        raise TaskInvalid(violations)
    assert isinstance(name, str)
    return Task(
        name=name,
        description=description,
        canonical_name=canonical,
        input_schema=None if input_schema is None else freeze(input_schema),
        tools=tuple(tools),
        inherit_tools=inherit,
        workflows=FrozenMap(workflows),
        metadata=freeze(metadata),
        retry=retry,
        timeout_s=timeout,
        agent_tools=tuple(sorted(agent_tools)) if inherit else (),
    )


def _json_path(base: str, parts: Collection[Any]) -> str:
    return base + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)


def validate_input(task: Task, value: Any) -> list[Violation]:
    """Check an execution input against the task's input_schema; paths like `input.topic`."""
    if task.input_schema is None:
        return []
    schema = thaw(task.input_schema)
    validator = validators.validator_for(schema)(schema)
    out: list[Violation] = []
    for error in sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path]):
        path = _json_path("input", error.absolute_path)
        if error.validator == "required" and isinstance(error.instance, Mapping):
            required = error.validator_value if isinstance(error.validator_value, list) else []
            missing = [p for p in required if p not in error.instance and repr(p) in error.message]
            if missing:
                out.append(Violation(f"{path}.{missing[0]}", "is required"))
                continue
        out.append(Violation(path, error.message))
    return out


# -- explain ---------------------------------------------------------------------------------------


def _describe(value: Any) -> Any:
    return describe(thaw(value))


def _field_name(name: str) -> str:
    return name[:-1] if name.endswith("_") else name


def _view(value: Any) -> Any:
    if isinstance(value, StepBase):
        return _step_view(value)
    if isinstance(value, ToolDef):
        return _tool_view(value)
    if isinstance(value, RetryPolicy):
        out = dataclasses.asdict(value)
        out["non_retryable"] = list(value.non_retryable)
        return out
    if isinstance(value, SwitchCase):
        return {
            "case": "_ (default)" if value.case is None else _describe(value.case),
            "then": _view(value.then),
        }
    if isinstance(value, PromptMessage | ContentPart):
        return {
            _field_name(f.name): _view(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if getattr(value, f.name) is not None
        }
    if (
        isinstance(value, tuple)
        and value
        and all(
            isinstance(v, StepBase | ToolDef | SwitchCase | PromptMessage | ContentPart | tuple)
            for v in value
        )
    ):
        return [_view(v) for v in value]
    return _describe(value)


def _step_view(step: StepBase) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": step.kind}
    for f in dataclasses.fields(step):
        value = getattr(step, f.name)
        name = _field_name(f.name)
        if value is None:
            continue
        if f.name in ("tool_choice", "settings"):  # plain data, never read
            out[name] = thaw(value)
        elif isinstance(value, bool | int | float | str):
            out[name] = value
        elif f.name == "tools":  # names of visible tools and inline definitions
            out[name] = [v if isinstance(v, str) else _tool_view(v) for v in value]
        else:
            out[name] = _view(value)
    return out


def _tool_view(tool: ToolDef) -> dict[str, Any]:
    return {
        "name": tool.name,
        "type": tool.type,
        "description": tool.description,
        "spec": _describe(tool.spec),
    }


def _walk(seq: Sequence, path: str) -> list[tuple[str, StepBase]]:
    out: list[tuple[str, StepBase]] = []
    for i, step in enumerate(seq):
        here = f"{path}[{i}]"
        out.append((here, step))
        for slot, inner in nested_sequences(step):
            out.extend(_walk(inner, f"{here}.{slot}"))
    return out


def _warnings(task: Task, agent_tools: Collection[ToolDef]) -> list[dict[str, str]]:
    """Non-fatal findings: tool-step arguments that do not match a function tool's parameters
    (the seed's own example passes `content` where its schema names `text`), and switch cases
    after an always-matching `_`."""
    tools = {t.name: t for t in agent_tools} if task.inherit_tools else {}
    tools.update({t.name: t for t in task.tools})
    out: list[dict[str, str]] = []
    for wf, seq in task.workflows.items():
        for path, step in _walk(seq, wf):
            if isinstance(step, ToolCallStep) and isinstance(step.arguments, Mapping):
                tool = tools.get(step.tool)
                params = tool.spec.get("parameters") if tool is not None and tool.type == "function" else None
                props = params.get("properties") if isinstance(params, Mapping) else None
                if isinstance(props, Mapping):
                    for key in step.arguments:
                        if key not in props:
                            out.append(
                                {
                                    "path": f"{path}.arguments.{key}",
                                    "message": f"tool {step.tool!r} declares no parameter {key!r} "
                                    f"(it declares: {', '.join(props) or 'none'})",
                                }
                            )
                    for key in params.get("required", ()) if isinstance(params, Mapping) else ():
                        if key not in step.arguments:
                            out.append(
                                {
                                    "path": f"{path}.arguments",
                                    "message": f"tool {step.tool!r} requires parameter {key!r}",
                                }
                            )
            if isinstance(step, SwitchStep):
                for i, case in enumerate(step.cases[:-1]):
                    if case.case is None:
                        out.append(
                            {
                                "path": f"{path}.switch[{i + 1}]",
                                "message": "unreachable: an earlier case `_` always matches",
                            }
                        )
                        break
    return out


def explain(task: Task, agent_tools: Collection[ToolDef] = ()) -> dict[str, Any]:
    """A JSON view of a parsed task showing how each string was read, plus warnings.

    Step paths in warnings are canonical (`main[2].foreach.do[0]`), whatever form was written."""
    return {
        "name": task.name,
        "description": task.description,
        "input_schema": thaw(task.input_schema),
        "inherit_tools": task.inherit_tools,
        "tools": [_tool_view(t) for t in task.tools],
        "workflows": {name: _view(seq) for name, seq in task.workflows.items()},
        "metadata": thaw(task.metadata),
        "retry": None if task.retry is None else _view(task.retry),
        "timeout_s": task.timeout_s,
        "warnings": _warnings(task, agent_tools),
    }
