"""input_schema: validated as a JSON Schema at creation; execution input checked against it."""

from __future__ import annotations

from typing import Any

import pytest

from mintleaf_server.dsl import TaskInvalid, parse_task, thaw, validate_input

SCHEMA = {
    "type": "object",
    "properties": {
        "topic": {"type": "string", "minLength": 1},
        "tags": {"type": "array", "items": {"type": "string"}},
        "options": {"type": "object", "properties": {"depth": {"type": "integer", "maximum": 3}}},
    },
    "required": ["topic"],
    "additionalProperties": False,
}


def with_schema(schema: Any) -> Any:
    return parse_task({"name": "t", "input_schema": schema, "main": [{"log": "x"}]})


def test_valid_input_has_no_violations() -> None:
    task = with_schema(SCHEMA)
    assert validate_input(task, {"topic": "AI", "tags": ["a"], "options": {"depth": 2}}) == []


def test_no_schema_accepts_anything() -> None:
    task = parse_task({"name": "t", "main": [{"log": "x"}]})
    assert validate_input(task, 42) == []
    assert validate_input(with_schema(None), "anything") == []


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({}, "input.topic"),
        ({"topic": 3}, "input.topic"),
        ({"topic": ""}, "input.topic"),
        ({"topic": "x", "tags": ["a", 2]}, "input.tags[1]"),
        ({"topic": "x", "options": {"depth": 9}}, "input.options.depth"),
        ({"topic": "x", "extra": 1}, "input"),
        ("not an object", "input"),
    ],
)
def test_invalid_input_names_the_path(value: Any, path: str) -> None:
    found = {v.path: v.message for v in validate_input(with_schema(SCHEMA), value)}
    assert path in found, found


def test_missing_required_says_so() -> None:
    (violation,) = validate_input(with_schema(SCHEMA), {})
    assert violation.path == "input.topic" and violation.message == "is required"


def test_every_input_violation_at_once() -> None:
    found = {v.path for v in validate_input(with_schema(SCHEMA), {"tags": [1, 2]})}
    assert found == {"input.topic", "input.tags[0]", "input.tags[1]"}


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ({"type": "objekt"}, "input_schema.type"),
        ({"type": "object", "required": "topic"}, "input_schema.required"),
        ({"properties": {"x": {"minLength": -1}}}, "input_schema.properties.x.minLength"),
        ([{"type": "object"}], "input_schema"),
        ("object", "input_schema"),
    ],
)
def test_invalid_schema_is_rejected_at_creation(schema: Any, path: str) -> None:
    with pytest.raises(TaskInvalid) as info:
        with_schema(schema)
    paths = [v.path for v in info.value.violations]
    assert path in paths, paths


def test_schema_is_frozen_on_the_task() -> None:
    task = with_schema(SCHEMA)
    assert thaw(task.input_schema) == SCHEMA
    assert hash(task.input_schema)
