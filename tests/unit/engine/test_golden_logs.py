"""Golden transition logs: fixed tasks run through the simulator; their logs (types, targets,
outputs, metadata) are compared with JSON files. `MINTLEAF_UPDATE_GOLDEN=1` rewrites them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from .simulator import run_task

GOLDEN = Path(__file__).parent / "golden"

CASES: dict[str, tuple[dict[str, Any], Any]] = {
    "control_flow": (
        {
            "name": "control",
            "main": [
                {"set": {"who": "$ _.name"}},
                {
                    "if": "len(_.who) > 2",
                    "then": [{"log": "long {{ _.who }}"}],
                    "else": {"evaluate": {"short": "$ True"}},
                },
                {"foreach": {"in": "$ [1, 2]", "do": {"evaluate": {"sq": "$ _ * _"}}}},
                {"yield": {"workflow": "sum", "arguments": {"xs": "$ [o.sq for o in _]"}}},
                {
                    "switch": [
                        {"case": "_.total > 100", "then": {"error": "too big"}},
                        {"case": "_", "then": {"return": {"total": "$ _.total", "who": "$ state.who"}}},
                    ]
                },
            ],
            "sum": [{"evaluate": {"total": "$ sum(_.xs)"}}],
        },
        {"name": "Ada"},
    ),
    "fanout": (
        {
            "name": "fan",
            "main": [
                {
                    "over": "$ [3, 1, 2]",
                    "parallelism": 2,
                    "map": {"evaluate": {"v": "$ _ * 10"}},
                    "reduce": "results + [_.v]",
                },
                {"parallel": [{"evaluate": {"first": "$ _[0]"}}, {"evaluate": {"n": "$ len(_)"}}]},
            ],
        },
        {},
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_log(name: str) -> None:
    doc, value = CASES[name]
    sim = run_task(doc, value)
    log = (
        sorted(
            (
                {
                    k: t[k]
                    for k in ("run", "type", "current", "next", "output", "error", "step_type", "metadata")
                }
                for t in sim.log
            ),
            key=lambda t: (t["run"], json.dumps(t["current"], sort_keys=True)),
        )
        if name == "fanout"
        else [
            {
                k: t[k]
                for k in (
                    "sequence",
                    "run",
                    "type",
                    "current",
                    "next",
                    "output",
                    "error",
                    "step_type",
                    "metadata",
                )
            }
            for t in sim.log
        ]
    )
    path = GOLDEN / f"{name}.json"
    if os.environ.get("MINTLEAF_UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(log, indent=1, sort_keys=True) + "\n")
    assert json.loads(path.read_text()) == json.loads(json.dumps(log))
