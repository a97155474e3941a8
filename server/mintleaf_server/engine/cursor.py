"""Where a run is: locators of step sequences inside a task, and their display paths.

A locator is a JSON list of `[step_index, slot]` pairs from a workflow's step list down to a
nested sequence: `[[2, "do"], [0, "then"]]` is the `then` body of step 0 of the `do` body of step
2. Slots: `do` (foreach), `map` (map_reduce), `then` / `else` (if_else), `case:<i>` (switch),
`par:<i>` (parallel). Locators are stored in the state (JSON); display paths
(`main[2].foreach[5].do[0].if_else.then[1]`) are rendered for transitions and errors only.
"""

from __future__ import annotations

from typing import Any

from mintleaf_server.dsl.steps import (
    ForeachStep,
    IfElseStep,
    MapReduceStep,
    ParallelStep,
    Sequence,
    Step,
    SwitchStep,
)
from mintleaf_server.dsl.task import Task

__all__ = ["SequenceIndex", "body_base", "slot_sequence"]


def slot_sequence(step: Step, slot: str) -> Sequence:
    """The sequence held by `step` in `slot`; KeyError when the step has no such slot."""
    if slot == "do" and isinstance(step, ForeachStep):
        return step.do
    if slot == "map" and isinstance(step, MapReduceStep):
        return step.map
    if isinstance(step, IfElseStep):
        if slot == "then":
            return step.then
        if slot == "else" and step.else_ is not None:
            return step.else_
    if slot.startswith("case:") and isinstance(step, SwitchStep):
        return step.cases[int(slot[5:])].then
    if slot.startswith("par:") and isinstance(step, ParallelStep):
        return step.branches[int(slot[4:])]
    raise KeyError(f"step {step.kind} has no slot {slot}")


def body_base(step_path: str, kind: str, slot: str, item: int) -> str:
    """Display path of a body entered from the step at `step_path`."""
    if kind == "foreach":
        return f"{step_path}.foreach[{item}].do"
    if kind == "map_reduce":
        return f"{step_path}.map_reduce[{item}].map"
    if kind == "if_else":
        return f"{step_path}.if_else.{slot}"
    if kind == "switch":
        return f"{step_path}.switch[{slot[5:]}].then"
    if kind == "parallel":
        return f"{step_path}.parallel[{slot[4:]}]"
    return f"{step_path}.{slot}"


class SequenceIndex:
    """Resolves (workflow, locator) to the step sequence, with a cache (tasks are immutable)."""

    __slots__ = ("_cache", "_task")

    def __init__(self, task: Task) -> None:
        self._task = task
        self._cache: dict[tuple[Any, ...], Sequence] = {}

    def get(self, workflow: str, loc: list[list[Any]]) -> Sequence:
        key = (workflow, *(tuple(p) for p in loc))
        seq = self._cache.get(key)
        if seq is None:
            seq = self._task.workflows[workflow]
            for index, slot in loc:
                seq = slot_sequence(seq[index], slot)
            self._cache[key] = seq
        return seq
