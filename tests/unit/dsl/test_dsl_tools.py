"""Tool definitions: each kind, type inference, names, required fields, how strings are read."""

from __future__ import annotations

from typing import Any

import pytest

from mintleaf_server.dsl import Expression, Template, Text, ToolDef, is_identifier, parse_tool


def ok(raw: dict[str, Any]) -> ToolDef:
    tool, problems = parse_tool(raw, "tools[0]")
    assert problems == [] and tool is not None
    return tool


def bad(raw: Any) -> dict[str, str]:
    tool, problems = parse_tool(raw, "tools[0]")
    assert tool is None and problems
    return {v.path: v.message for v in problems}


def test_function_tool() -> None:
    tool = ok(
        {
            "name": "send_notification",
            "description": "Send a notification to the user",
            "type": "function",
            "function": {"parameters": {"type": "object", "properties": {"text": {"type": "string"}}}},
        }
    )
    assert tool.type == "function" and tool.description == "Send a notification to the user"
    # a JSON Schema is data: its strings are not read
    assert tool.spec["parameters"]["properties"]["text"]["type"] == "string"
    assert hash(tool)


def test_function_tool_without_parameters_and_description_inside() -> None:
    tool = ok({"name": "ping", "function": {"description": "Ping the user"}})
    assert tool.type == "function" and tool.description == "Ping the user"
    assert ok({"name": "ping", "type": "function"}).spec == {}


def test_integration_tool_strings_are_read_as_tool_definitions() -> None:
    tool = ok(
        {
            "name": "web_search",
            "type": "integration",
            "integration": {
                "provider": "brave",
                "method": "search",
                "setup": {"api_key": "$ secrets.BRAVE_KEY", "plain": "YOUR_BRAVE_API_KEY"},
                "arguments": {"count": 5, "lang": "{{ 'en' }}"},
            },
        }
    )
    assert tool.spec["provider"] == "brave" and tool.spec["method"] == "search"
    assert isinstance(tool.spec["setup"]["api_key"], Expression)
    assert isinstance(tool.spec["setup"]["plain"], Text)
    assert tool.spec["arguments"]["count"] == 5
    assert isinstance(tool.spec["arguments"]["lang"], Template)


def test_type_is_inferred_from_the_one_kind_key() -> None:
    tool = ok({"name": "image_generator", "integration": {"provider": "dalle", "setup": {"api_key": "k"}}})
    assert tool.type == "integration"


def test_system_tool() -> None:
    tool = ok(
        {
            "name": "search_docs",
            "system": {
                "resource": "agent",
                "subresource": "doc",
                "operation": "search",
                "resource_id": "$ secrets.AGENT_ID",
                "arguments": {"limit": 3},
            },
        }
    )
    assert tool.type == "system" and tool.spec["operation"] == "search"
    assert isinstance(tool.spec["resource_id"], Expression)


def test_api_call_tool_headers_stay_text() -> None:
    tool = ok(
        {
            "name": "discord_webhook",
            "type": "api_call",
            "api_call": {
                "url": "YOUR_DISCORD_WEBHOOK_URL",
                "method": "POST",
                "headers": {
                    "Content-Type": "application/json",
                    "Authorization": "$ 'Bearer ' + secrets.TOKEN",
                },
                "params": {"a": "1"},
                "json": {"x": [1, 2]},
                "follow_redirects": True,
                "timeout": 30,
                "include_response_content": False,
                "secrets": {"token": {"name": "TOKEN"}},
                "schema": {"type": "object"},
            },
        }
    )
    assert isinstance(tool.spec["headers"]["Content-Type"], Text)
    assert isinstance(tool.spec["headers"]["Authorization"], Expression)
    assert isinstance(tool.spec["url"], Text)
    assert tool.spec["timeout"] == 30 and tool.spec["follow_redirects"] is True
    assert tool.spec["secrets"] == {"token": {"name": "TOKEN"}}


def test_read_only_api_fields_are_accepted() -> None:
    assert ok({"name": "f", "function": {}, "id": "x", "created_at": "t", "inherited": True}).name == "f"


@pytest.mark.parametrize(
    "name",
    ["send_notification", "_private", "x" * 40, "données"],
)
def test_valid_names(name: str) -> None:
    assert is_identifier(name)
    assert ok({"name": name, "function": {}}).name == name


@pytest.mark.parametrize("name", [None, "", "1tool", "web-search", "with space", "x" * 41, 7])
def test_invalid_names(name: Any) -> None:
    assert "tools[0].name" in bad({"name": name, "function": {}})


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ("web_search", "tools[0]"),
        ({"name": "t"}, "tools[0].type"),
        (
            {"name": "t", "function": {}, "system": {"resource": "agent", "operation": "list"}},
            "tools[0].type",
        ),
        ({"name": "t", "type": "computer_20241022"}, "tools[0].type"),
        ({"name": "t", "type": "system", "function": {}}, "tools[0].system"),
        ({"name": "t", "type": "function", "function": {}, "system": {}}, "tools[0].system"),
        ({"name": "t", "function": {}, "colour": 1}, "tools[0].colour"),
        ({"name": "t", "function": {}, "description": 5}, "tools[0].description"),
        ({"name": "t", "function": {"parameters": {"type": "objekt"}}}, "tools[0].function.parameters.type"),
        ({"name": "t", "function": {"parameters": "object"}}, "tools[0].function.parameters"),
        ({"name": "t", "function": {"returns": {}}}, "tools[0].function.returns"),
        ({"name": "t", "integration": {}}, "tools[0].integration.provider"),
        ({"name": "t", "integration": {"provider": "brave", "setup": "key"}}, "tools[0].integration.setup"),
        (
            {"name": "t", "integration": {"provider": "brave", "setup": {"k": "$ inputs[0]"}}},
            "tools[0].integration.setup.k",
        ),
        ({"name": "t", "system": {"operation": "list"}}, "tools[0].system.resource"),
        ({"name": "t", "system": {"resource": "agent"}}, "tools[0].system.operation"),
        ({"name": "t", "system": {"resource": "planet", "operation": "list"}}, "tools[0].system.resource"),
        ({"name": "t", "system": {"resource": "agent", "operation": "fly"}}, "tools[0].system.operation"),
        (
            {"name": "t", "system": {"resource": "agent", "operation": "list", "subresource": "x"}},
            "tools[0].system.subresource",
        ),
        ({"name": "t", "api_call": {"method": "GET"}}, "tools[0].api_call.url"),
        ({"name": "t", "api_call": {"url": "http://x"}}, "tools[0].api_call.method"),
        ({"name": "t", "api_call": {"url": "http://x", "method": "FETCH"}}, "tools[0].api_call.method"),
        (
            {"name": "t", "api_call": {"url": "http://x", "method": "GET", "headers": {"a": 1}}},
            "tools[0].api_call.headers",
        ),
        (
            {"name": "t", "api_call": {"url": "http://x", "method": "GET", "timeout": 0}},
            "tools[0].api_call.timeout",
        ),
        (
            {"name": "t", "api_call": {"url": "http://x", "method": "GET", "follow_redirects": "no"}},
            "tools[0].api_call.follow_redirects",
        ),
        (
            {"name": "t", "api_call": {"url": "http://x", "method": "GET", "json": [1]}},
            "tools[0].api_call.json",
        ),
        (
            {"name": "t", "api_call": {"url": "http://x", "method": "GET", "secrets": {"a": "TOKEN"}}},
            "tools[0].api_call.secrets",
        ),
        (
            {"name": "t", "api_call": {"url": "http://x", "method": "GET", "verb": "x"}},
            "tools[0].api_call.verb",
        ),
    ],
)
def test_invalid_definitions(raw: Any, path: str) -> None:
    found = bad(raw)
    assert path in found, found


def test_all_problems_of_a_tool_at_once() -> None:
    found = bad({"name": "bad name", "api_call": {"method": "FETCH", "extra": 1}})
    assert {
        "tools[0].name",
        "tools[0].api_call.method",
        "tools[0].api_call.url",
        "tools[0].api_call.extra",
    } <= set(found)
