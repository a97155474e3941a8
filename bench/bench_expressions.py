"""Expression evaluations per second: the sandbox (compiled once, evaluated many times) against
plain `eval` of the same source compiled once, in the same run; plus the round trip to a worker
process, the alternative the sandbox was measured against. Runs in well under a minute:

    python bench/bench_expressions.py
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from mintleaf_server.dsl.reading import TASK_SCOPE_NAMES, Expression, Slot, Template, read_string

CASES = [
    "_.x + 1",
    "[q.strip() for q in _.text.split('\\n') if q.strip()]",
    "outputs[1].story.upper()",
    "{'n': len(_.nums), 'first': _.nums[0], 'ok': _.x > 0}",
    "sum(i * 2 for i in _.nums)",
]
TEMPLATE = "Hello {{ _.name }}, {{ outputs[1].story }}!"


class AttrDict(dict[Any, Any]):
    """What plain eval needs to read `_.x` (Julep's Box, roughly)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def boxed(value: Any) -> Any:
    if isinstance(value, dict):
        return AttrDict({k: boxed(v) for k, v in value.items()})
    if isinstance(value, list):
        return [boxed(v) for v in value]
    return value


SCOPE: dict[str, Any] = {
    "_": {"x": 41, "text": "alpha\n beta \n\ngamma\n", "nums": list(range(20)), "name": "Ada"},
    "outputs": {1: {"story": "once upon a time"}},
}


def rate(fn: Callable[[], Any], seconds: float = 0.5) -> float:
    n, start = 0, time.perf_counter()
    while True:
        for _ in range(200):
            fn()
        n += 200
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return n / elapsed


def worker(conn: Connection) -> None:
    compiled: dict[str, Expression] = {}
    while True:
        message = conn.recv()
        if message is None:
            return
        source, scope = message
        if source not in compiled:
            r = read_string("$ " + source, Slot.VALUE, TASK_SCOPE_NAMES)
            assert isinstance(r, Expression)
            compiled[source] = r
        conn.send(compiled[source].evaluate(scope))


def main() -> None:
    print(f"{'expression':58} {'sandbox/s':>11} {'eval/s':>11} {'ratio':>6}")
    boxed_scope = {k: boxed(v) for k, v in SCOPE.items()}
    for source in CASES:
        expression = read_string("$ " + source, Slot.VALUE, TASK_SCOPE_NAMES)
        assert isinstance(expression, Expression)
        code = compile(source, "<bench>", "eval")
        assert expression.evaluate(SCOPE) == eval(code, dict(boxed_scope))
        sandbox = rate(lambda e=expression: e.evaluate(SCOPE))  # type: ignore[misc]
        plain = rate(lambda c=code: eval(c, dict(boxed_scope)))  # type: ignore[misc]
        print(f"{source:58} {sandbox:11,.0f} {plain:11,.0f} {plain / sandbox:5.1f}x")

    template = read_string(TEMPLATE, Slot.TEXT, TASK_SCOPE_NAMES)
    assert isinstance(template, Template)
    print(f"{'template ' + TEMPLATE:58} {rate(lambda: template.render(SCOPE)):11,.0f}")

    parent, child = mp.Pipe()
    process = mp.get_context("fork").Process(target=worker, args=(child,), daemon=True)
    process.start()
    source = CASES[0]

    def round_trip() -> Any:
        parent.send((source, SCOPE))
        return parent.recv()

    round_trip()
    in_process = rate(lambda: read_and_eval(source))
    remote = rate(round_trip, 1.0)
    parent.send(None)
    process.join()
    print(
        f"\nworker process round trip for {source!r}: {remote:,.0f}/s ({1e6 / remote:.1f} µs each) "
        f"vs in-process sandbox {in_process:,.0f}/s ({1e6 / in_process:.1f} µs each): "
        f"{in_process / remote:.0f}x"
    )


_CACHE: dict[str, Expression] = {}


def read_and_eval(source: str) -> Any:
    expression = _CACHE.get(source)
    if expression is None:
        r = read_string("$ " + source, Slot.VALUE, TASK_SCOPE_NAMES)
        assert isinstance(r, Expression)
        expression = _CACHE[source] = r
    return expression.evaluate(SCOPE)


if __name__ == "__main__":
    main()
