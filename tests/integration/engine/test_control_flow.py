"""Every control-flow step through the gRPC API, on real PostgreSQL and Redis, to the right output;
every log gap-free with one terminal transition (run_to_end checks)."""

from __future__ import annotations

from typing import Any

from engine_flows import output, run_to_end

from mintleaf import v1


def ok(client: Any, main: list[Any], value: dict[str, Any] | None = None, **workflows: Any) -> Any:
    ex, ts = run_to_end(client, {"name": "t", "main": main, **workflows}, value)
    assert ex.status == v1.ExecutionStatus.SUCCEEDED, ex.error
    return output(ex), ts


def test_evaluate(client: Any) -> None:
    out, _ = ok(client, [{"evaluate": {"sum": "$ _.a + _.b", "s": "hi {{ _.a }}"}}], {"a": 2, "b": 3})
    assert out == {"sum": 5, "s": "hi 2"}


def test_if_else(client: Any) -> None:
    doc = [{"if": "_.x > 1", "then": {"evaluate": {"r": "big"}}, "else": {"evaluate": {"r": "small"}}}]
    assert ok(client, doc, {"x": 5})[0] == {"r": "big"}
    assert ok(client, doc, {"x": 0})[0] == {"r": "small"}
    assert ok(client, [{"if": "False", "then": {"evaluate": {"r": "1"}}}], {"keep": 1})[0] == {"keep": 1}


def test_switch(client: Any) -> None:
    doc = [
        {
            "switch": [
                {"case": "_.c == 'A'", "then": {"evaluate": {"r": "a"}}},
                {"case": "_.c == 'B'", "then": [{"log": "b"}, {"evaluate": {"r": "b"}}]},
                {"case": "_", "then": {"evaluate": {"r": "other"}}},
            ]
        }
    ]
    assert ok(client, doc, {"c": "B"})[0] == {"r": "b"}
    assert ok(client, doc, {"c": "Z"})[0] == {"r": "other"}


def test_foreach_sequential_and_parallel(client: Any) -> None:
    seq = [{"foreach": {"in": "_.xs", "do": {"evaluate": {"sq": "$ _ * _"}}}}]
    assert ok(client, seq, {"xs": [1, 2, 3]})[0] == [{"sq": 1}, {"sq": 4}, {"sq": 9}]
    par = [{"foreach": {"in": "_.xs", "parallelism": 3, "do": [{"evaluate": {"sq": "$ _ * _"}}]}}]
    out, ts = ok(client, par, {"xs": list(range(7))})
    assert out == [{"sq": i * i} for i in range(7)]
    assert len({t.current.branch_id for t in ts if t.current.branch_id}) == 7


def test_map_reduce(client: Any) -> None:
    doc = [
        {
            "over": "_.xs",
            "map": {"evaluate": {"v": "$ _ * 10"}},
            "reduce": "results + _.v",
            "initial": 5,
            "parallelism": 2,
        }
    ]
    assert ok(client, doc, {"xs": [1, 2, 3, 4]})[0] == 105
    plain = [{"map_reduce": {"over": "_.xs", "map": [{"evaluate": {"v": "$ _"}}], "parallelism": 4}}]
    assert ok(client, plain, {"xs": ["a", "b", "c"]})[0] == [{"v": "a"}, {"v": "b"}, {"v": "c"}]
    folded = [{"over": "_.xs", "map": {"evaluate": {"v": "$ _"}}, "reduce": "results + [_.v]"}]
    assert ok(client, folded, {"xs": [3, 1, 2]})[0] == [3, 1, 2]


def test_parallel(client: Any) -> None:
    doc = [
        {
            "parallel": [
                {"evaluate": {"n": "$ _.x + 1"}},
                [{"set": {"k": "$ _.x"}}, {"get": "k"}],
                {"log": "third"},
            ]
        }
    ]
    assert ok(client, doc, {"x": 1})[0] == [{"n": 2}, 1, {"x": 1}]


def test_yield_and_return(client: Any) -> None:
    out, _ = ok(
        client,
        [{"yield": {"workflow": "double", "arguments": {"v": "$ _.v"}}}, {"evaluate": {"r": "$ _ + 1"}}],
        {"v": 20},
        double=[{"return": "$ _.v * 2"}, {"log": "never"}],
    )
    assert out == {"r": 41}


def test_recursion_stops_at_the_configured_depth(client: Any) -> None:
    doc = {
        "name": "loop",
        "main": [{"yield": {"workflow": "again"}}],
        "again": [{"yield": {"workflow": "again"}}],
    }
    ex, ts = run_to_end(client, doc)
    assert ex.status == v1.ExecutionStatus.FAILED
    assert "yield went deeper than" in ex.error, ex.error
    assert ts[-1].type == v1.TransitionType.ERROR


def test_recursion_with_a_base_case(client: Any) -> None:
    doc = {
        "name": "count",
        "main": [{"yield": {"workflow": "down", "arguments": {"n": "$ _.n", "acc": "$ []"}}}],
        "down": [
            {
                "if": "_.n == 0",
                "then": {"return": "$ _.acc"},
                "else": {
                    "yield": {"workflow": "down", "arguments": {"n": "$ _.n - 1", "acc": "$ _.acc + [_.n]"}}
                },
            }
        ],
    }
    ex, _ = run_to_end(client, doc, {"n": 4})
    assert ex.status == v1.ExecutionStatus.SUCCEEDED, ex.error
    assert output(ex) == [4, 3, 2, 1]


def test_return_inside_foreach(client: Any) -> None:
    doc = [
        {"foreach": {"in": "_.xs", "do": {"if": "_ == 3", "then": {"return": {"found": "$ _"}}}}},
        {"log": "not reached"},
    ]
    assert ok(client, doc, {"xs": [1, 2, 3, 4]})[0] == {"found": 3}
    par = [{"foreach": {"in": "_.xs", "parallelism": 4, "do": {"if": "_ == 3", "then": {"return": "$ _"}}}}]
    assert ok(client, par, {"xs": [1, 2, 3, 4]})[0] == 3


def test_error_step(client: Any) -> None:
    ex, ts = run_to_end(
        client, {"name": "e", "main": [{"log": "x"}, {"error": "bad {{ _.why }}"}]}, {"why": "input"}
    )
    assert ex.status == v1.ExecutionStatus.FAILED and ex.error == "bad input"
    assert ts[-1].type == v1.TransitionType.ERROR and ts[-1].error == "bad input"


def test_log_get_set(client: Any) -> None:
    out, ts = ok(client, [{"set": {"a": "$ _.a"}}, {"log": "a is {{ _.a }}"}, {"get": "a"}], {"a": 7})
    assert out == 7
    logs = [t for t in ts if t.step_type == "log"]
    assert logs and logs[0].output.to_dict() == {"a": 7}


def test_sleep_is_durable_and_short(client: Any) -> None:
    import time

    began = time.monotonic()
    out, _ = ok(client, [{"sleep": {"seconds": 0.4}}, {"evaluate": {"done": "$ True"}}])
    assert time.monotonic() - began >= 0.4
    assert out == {"done": True}


def test_a_thousand_branches_fold_in_item_order(client: Any) -> None:
    doc = [{"foreach": {"in": "list(range(1000))", "parallelism": 100, "do": {"evaluate": {"i": "$ _"}}}}]
    out, ts = ok(client, doc)
    assert out == [{"i": i} for i in range(1000)]
    assert sum(1 for t in ts if t.type == v1.TransitionType.INIT_BRANCH) >= 1000


def test_nesting(client: Any) -> None:
    doc = [
        {
            "over": "_.groups",
            "parallelism": 2,
            "map": {
                "if": "len(_) > 1",
                "then": {"foreach": {"in": "_", "do": {"evaluate": {"v": "$ _ * 2"}}}},
                "else": {"parallel": [{"evaluate": {"one": "$ _[0]"}}, {"yield": {"workflow": "w"}}]},
            },
        }
    ]
    out, _ = ok(client, doc, {"groups": [[1, 2], [5]]}, w=[{"return": "w"}])
    assert out == [[{"v": 2}, {"v": 4}], [{"one": 5}, "w"]]
