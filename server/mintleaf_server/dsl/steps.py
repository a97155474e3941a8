"""Typed, frozen steps: what a task document becomes once parsed (see parse.py).

Design note. One frozen dataclass per step type, each with a `kind` class attribute holding
Julep's `kind_` name, so the engine keeps one handler per kind in one registry. Alternatives
rejected: a single `Step(kind, fields: dict)` record (every handler would re-validate its fields
and typos would surface at run time), and pydantic models (mutable by default, slower, and the
parser must collect *all* violations with field paths, which pydantic's error model fights).

Conventions the engine can rely on:
- A slot that holds steps (`do`, `map`, `then`, `else`, `parallel` items, switch `then`) holds a
  `Sequence`: a tuple of steps, never empty. A single step in the document becomes a 1-tuple; the
  output of a sequence is the output of its last step.
- Strings are already read (reading.py): an `Expression`, `Template` or `Text`, whichever the
  slot's rules made of them. Dict- and list-shaped values (`evaluate`, `set`, `return`,
  `arguments`, `info`, `initial`, settings) are *read trees*: the document's value with every
  string replaced by its read object, mappings frozen into `FrozenMap` and lists into tuples, so
  every step is hashable. `evaluate_value(tree, ...)` turns a read tree into plain JSON values.
- Defaults are resolved at parse time (`arguments` omitted = the expression `_`, foreach
  `parallelism` omitted = 1, ...), so handlers never see "missing".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn, TypeAlias, TypeVar

if TYPE_CHECKING:
    from mintleaf_server.dsl.reading import Readable
    from mintleaf_server.dsl.tools import ToolDef

__all__ = [
    "STEP_TYPES",
    "ContentPart",
    "EmbedStep",
    "ErrorStep",
    "EvaluateStep",
    "ForeachStep",
    "FrozenMap",
    "GetStep",
    "IfElseStep",
    "LogStep",
    "MapReduceStep",
    "ParallelStep",
    "PromptMessage",
    "PromptStep",
    "ReadTree",
    "RetryPolicy",
    "ReturnStep",
    "SearchStep",
    "Sequence",
    "SetStep",
    "SleepStep",
    "Step",
    "StepBase",
    "SwitchCase",
    "SwitchStep",
    "ToolCallStep",
    "WaitForInputStep",
    "YieldStep",
    "freeze",
    "nested_sequences",
    "thaw",
]

_K = TypeVar("_K")
_V = TypeVar("_V")


class FrozenMap(dict[_K, _V]):
    """An immutable, hashable dict that keeps the document's key order.

    A dict subclass rather than a bare Mapping so that everything taking JSON-like data
    (`json.dumps`, the evaluator, `describe`) accepts it as it is."""

    __slots__ = ("_hash",)

    def __init__(self, items: Mapping[_K, _V] | Iterable[tuple[_K, _V]] = ()) -> None:
        super().__init__(items)
        self._hash: int | None = None

    def __hash__(self) -> int:  # type: ignore[override]
        if self._hash is None:
            self._hash = hash(tuple(self.items()))
        return self._hash

    def _immutable(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("FrozenMap is immutable")

    __setitem__ = _immutable
    __delitem__ = _immutable
    __ior__ = _immutable
    clear = _immutable
    pop = _immutable
    popitem = _immutable
    setdefault = _immutable
    update = _immutable

    def __repr__(self) -> str:
        return f"FrozenMap({dict(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenMap, (dict(self),))


def freeze(value: Any) -> Any:
    """Mappings become `FrozenMap`s and lists tuples, recursively; other values are kept."""
    if isinstance(value, Mapping):
        return FrozenMap({k: freeze(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of `freeze`: plain dicts and lists again (for JSON, jsonschema, the API)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(v) for v in value]
    return value


# A read tree: Readable leaves (strings as read), int/float/bool/None, FrozenMap and tuple nodes.
ReadTree: TypeAlias = Any


@dataclass(frozen=True)
class RetryPolicy:
    """Per-step or per-task retry (Mintleaf's addition; the engine enforces it).

    `max_attempts` counts the first try; `non_retryable` names error types never retried."""

    max_attempts: int = 3
    initial_interval_s: float = 1.0
    backoff_coefficient: float = 2.0
    max_interval_s: float = 100.0
    non_retryable: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class StepBase:
    """Fields every step may carry. `kind` is Julep's `kind_` name of the step type."""

    kind: ClassVar[str]
    label: str | None = None
    retry: RetryPolicy | None = None
    timeout_s: float | None = None


@dataclass(frozen=True)
class ContentPart:
    """One part of a multi-part message content: `{type: text, text}` or `{type: image_url, image_url}`."""

    type: str
    text: Readable | None = None
    image_url: Readable | None = None
    detail: str | None = None


@dataclass(frozen=True)
class PromptMessage:
    role: str  # system | user | assistant | tool
    content: Readable | tuple[ContentPart, ...]
    name: str | None = None
    tool_call_id: str | None = None
    continue_: bool | None = None  # the document's `continue`
    tool_calls: ReadTree = None  # a tuple of read tool-call objects (assistant messages)


@dataclass(frozen=True)
class PromptStep(StepBase):
    """`prompt:` a string (becomes one user message) or a message list."""

    kind: ClassVar[str] = "prompt"
    prompt: Readable | tuple[PromptMessage, ...]
    # "all" = the step's visible tools (task tools ∪ agent tools when inherited); else inline
    # definitions or names of visible tools.
    tools: str | tuple[ToolDef | str, ...] = "all"
    tool_choice: ReadTree = None  # None | "auto" | "none" | FrozenMap {function: {name}}
    settings: ReadTree = None  # FrozenMap of model settings as written (not read), or None
    unwrap: bool = False
    auto_run_tools: bool = True
    disable_cache: bool = False


@dataclass(frozen=True)
class ToolCallStep(StepBase):
    kind: ClassVar[str] = "tool_call"
    tool: str
    arguments: ReadTree  # FrozenMap of read values, or the Expression `_` (the default)


@dataclass(frozen=True)
class EvaluateStep(StepBase):
    kind: ClassVar[str] = "evaluate"
    values: ReadTree  # FrozenMap


@dataclass(frozen=True)
class WaitForInputStep(StepBase):
    kind: ClassVar[str] = "wait_for_input"
    info: ReadTree  # FrozenMap


@dataclass(frozen=True)
class LogStep(StepBase):
    """Output is the input `_` unchanged; `message` is rendered and recorded."""

    kind: ClassVar[str] = "log"
    message: Readable


@dataclass(frozen=True)
class GetStep(StepBase):
    kind: ClassVar[str] = "get"
    key: str


@dataclass(frozen=True)
class SetStep(StepBase):
    kind: ClassVar[str] = "set"
    values: ReadTree  # FrozenMap


@dataclass(frozen=True)
class ForeachStep(StepBase):
    kind: ClassVar[str] = "foreach"
    in_: Readable  # read in Slot.EXPRESSION (an Expression, or a Template if written as one)
    do: Sequence
    parallelism: int = 1  # 1 = sequential (Julep's only mode)


@dataclass(frozen=True)
class MapReduceStep(StepBase):
    kind: ClassVar[str] = "map_reduce"
    over: Readable  # Slot.EXPRESSION
    map: Sequence
    reduce: Readable | None = None  # None = `results + [_]`; scope is ONLY `results` and `_`
    initial: ReadTree = ()  # the starting `results` (a read tree; default the empty list)
    parallelism: int = 1  # resolved at parse time (omitted = DslLimits.default_parallelism)


@dataclass(frozen=True)
class ParallelStep(StepBase):
    """Every branch runs with the same `_`; output = the branch outputs in declaration order."""

    kind: ClassVar[str] = "parallel"
    branches: tuple[Sequence, ...]


@dataclass(frozen=True)
class IfElseStep(StepBase):
    """A false condition without `else` passes `_` through unchanged (Julep wrapped it)."""

    kind: ClassVar[str] = "if_else"
    condition: Readable  # Slot.EXPRESSION
    then: Sequence
    else_: Sequence | None = None


@dataclass(frozen=True)
class SwitchCase:
    case: Readable | None  # Slot.EXPRESSION; None = the literal `_` default: always matches
    then: Sequence


@dataclass(frozen=True)
class SwitchStep(StepBase):
    """The first matching case runs; no match fails the step with an error naming it."""

    kind: ClassVar[str] = "switch"
    cases: tuple[SwitchCase, ...]


@dataclass(frozen=True)
class SleepStep(StepBase):
    kind: ClassVar[str] = "sleep"
    seconds: float  # total: seconds + 60·minutes + 3600·hours + 86400·days, > 0


@dataclass(frozen=True)
class ReturnStep(StepBase):
    kind: ClassVar[str] = "return"
    value: ReadTree  # usually a FrozenMap; any read value is accepted


@dataclass(frozen=True)
class YieldStep(StepBase):
    kind: ClassVar[str] = "yield"
    workflow: str
    arguments: ReadTree  # FrozenMap, or the Expression `_` (the default)


@dataclass(frozen=True)
class ErrorStep(StepBase):
    kind: ClassVar[str] = "error"
    message: Readable


@dataclass(frozen=True)
class EmbedStep(StepBase):
    """Sugar for `/embed`: output `{vectors}`."""

    kind: ClassVar[str] = "embed"
    text: Readable | tuple[Readable, ...]
    embed_instruction: Readable | None = None


@dataclass(frozen=True)
class SearchStep(StepBase):
    """Sugar for an agent-doc search (JULEP-SPEC 6.2): output `{docs, time}`.

    `mode` is text | vector | hybrid, chosen by which of `text` / `vector` are present."""

    kind: ClassVar[str] = "search"
    mode: str
    text: Readable | None = None
    vector: ReadTree = None  # a tuple of numbers, or a Readable producing one
    limit: int = 10
    lang: str = "en-US"
    trigram_similarity_threshold: float | None = None
    confidence: float = 0.5
    mmr_strength: float = 0.5
    alpha: float = 0.5
    k_multiplier: int = 5
    metadata_filter: ReadTree = field(default_factory=FrozenMap)


Step: TypeAlias = (
    PromptStep
    | ToolCallStep
    | EvaluateStep
    | WaitForInputStep
    | LogStep
    | GetStep
    | SetStep
    | ForeachStep
    | MapReduceStep
    | ParallelStep
    | IfElseStep
    | SwitchStep
    | SleepStep
    | ReturnStep
    | YieldStep
    | ErrorStep
    | EmbedStep
    | SearchStep
)

# A non-empty tuple of steps; its output is its last step's output.
Sequence: TypeAlias = tuple[Step, ...]

STEP_TYPES: tuple[type[StepBase], ...] = (
    PromptStep,
    ToolCallStep,
    EvaluateStep,
    WaitForInputStep,
    LogStep,
    GetStep,
    SetStep,
    ForeachStep,
    MapReduceStep,
    ParallelStep,
    IfElseStep,
    SwitchStep,
    SleepStep,
    ReturnStep,
    YieldStep,
    ErrorStep,
    EmbedStep,
    SearchStep,
)


def nested_sequences(step: Step) -> tuple[tuple[str, Sequence], ...]:
    """The step sequences a step holds, each with its canonical slot name.

    Slot names: `foreach.do`, `map_reduce.map`, `if_else.then`, `if_else.else`, `parallel[i]`,
    `switch[i].then`. Leaf steps hold none."""
    if isinstance(step, ForeachStep):
        return (("foreach.do", step.do),)
    if isinstance(step, MapReduceStep):
        return (("map_reduce.map", step.map),)
    if isinstance(step, IfElseStep):
        pairs: tuple[tuple[str, Sequence], ...] = (("if_else.then", step.then),)
        if step.else_ is not None:
            pairs += (("if_else.else", step.else_),)
        return pairs
    if isinstance(step, ParallelStep):
        return tuple((f"parallel[{i}]", seq) for i, seq in enumerate(step.branches))
    if isinstance(step, SwitchStep):
        return tuple((f"switch[{i}].then", c.then) for i, c in enumerate(step.cases))
    return ()
