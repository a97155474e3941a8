"""How api_call requests are built from definitions and arguments, how integration setup and
arguments merge, and the schemas offered to models. No network: MockTransport only."""

from __future__ import annotations

import json

import httpx
import pytest

from fakes.toolkit import StubResolver, context, tool
from mintleaf_server.tools import (
    FunctionToolNotRunnable,
    ToolArgumentsInvalid,
    ToolHttpError,
    ToolNotImplemented,
    ToolSetupInvalid,
    run_tool,
    tool_schema,
)

PUBLIC = StubResolver({"api.example.com": ["93.184.216.34"], "discord.com": ["162.159.135.232"]})


def _recorder(status: int = 200, body: object = None) -> tuple[list[httpx.Request], httpx.MockTransport]:
    seen: list[httpx.Request] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body if body is not None else {"ok": True})

    return seen, httpx.MockTransport(respond)


async def test_definition_and_arguments_merge_with_secret_templates() -> None:
    seen, transport = _recorder()
    t = tool(
        {
            "name": "create_item",
            "type": "api_call",
            "api_call": {
                "method": "POST",
                "url": "https://api.example.com/items",
                "headers": {"Authorization": "Bearer {{ secrets.API_TOKEN }}", "X-Fixed": "definition"},
                "params": {"version": "2"},
                "json": {"source": "mintleaf"},
                "timeout": 5,
            },
        }
    )
    ctx = context(transport=transport, resolver=PUBLIC, secrets={"API_TOKEN": "tok-123456"})
    out = await run_tool(
        t,
        {"params": {"q": "cats"}, "json_": {"title": "hi"}, "headers": {"X-Fixed": "model", "X-Extra": "1"}},
        ctx,
    )
    request = seen[0]
    assert request.method == "POST"
    assert request.headers["authorization"] == "Bearer tok-123456"
    assert request.headers["x-fixed"] == "definition"  # the definition wins on headers
    assert request.headers["x-extra"] == "1"
    assert dict(request.url.params) == {"version": "2", "q": "cats"}
    assert json.loads(request.content) == {"source": "mintleaf", "title": "hi"}
    assert out["status_code"] == 200 and out["json"] == {"ok": True}
    assert json.loads(__import__("base64").b64decode(out["content"])) == {"ok": True}


async def test_seed_discord_webhook_text_content_is_wrapped() -> None:
    seen, transport = _recorder(204)
    t = tool(
        {
            "name": "discord_webhook",
            "type": "api_call",
            "api_call": {
                "url": "https://discord.com/api/webhooks/1/abc",
                "method": "POST",
                "headers": {"Content-Type": "application/json"},
            },
        }
    )
    out = await run_tool(
        t, {"content": "**Research Summary for AI**\n\nText\n"}, context(transport=transport, resolver=PUBLIC)
    )
    assert json.loads(seen[0].content) == {"content": "**Research Summary for AI**\n\nText\n"}
    assert seen[0].headers["content-type"] == "application/json"
    assert out["status_code"] == 204


async def test_json_text_content_is_sent_as_is() -> None:
    seen, transport = _recorder()
    t = tool(
        {
            "name": "raw",
            "api_call": {
                "url": "https://api.example.com/",
                "method": "POST",
                "headers": {"Content-Type": "application/json"},
            },
        }
    )
    await run_tool(
        t,
        {"content": '{"a": 1}', "include_response_content": False},
        context(transport=transport, resolver=PUBLIC),
    )
    assert seen[0].content == b'{"a": 1}'


async def test_unknown_argument_is_named() -> None:
    t = tool({"name": "raw", "api_call": {"url": "https://api.example.com/", "method": "GET"}})
    with pytest.raises(ToolArgumentsInvalid, match="'bogus'"):
        await run_tool(t, {"bogus": 1}, context(resolver=PUBLIC))


async def test_http_error_is_redacted_and_classified() -> None:
    _, transport = _recorder(503, {"error": "backend down for token tok-123456"})
    t = tool(
        {
            "name": "svc",
            "api_call": {
                "url": "https://api.example.com/x?key=qs-secret",
                "method": "GET",
                "headers": {"Authorization": "Bearer {{ secrets.API_TOKEN }}"},
            },
        }
    )
    ctx = context(transport=transport, resolver=PUBLIC, secrets={"API_TOKEN": "tok-123456"})
    with pytest.raises(ToolHttpError) as info:
        await run_tool(t, {}, ctx)
    assert info.value.status == 503 and info.value.retryable
    assert "tok-123456" not in info.value.message and "qs-secret" not in info.value.message
    assert "api.example.com/x" in info.value.message


async def test_secret_aliases_resolve_and_missing_ones_are_named() -> None:
    seen, transport = _recorder()
    raw = {
        "name": "svc",
        "api_call": {
            "url": "https://api.example.com/",
            "method": "GET",
            "secrets": {"key": {"name": "SERVICE_KEY"}},
            "headers": {"X-Key": "{{ secrets.key }}"},
        },
    }
    await run_tool(
        tool(raw), {}, context(transport=transport, resolver=PUBLIC, secrets={"SERVICE_KEY": "abcdef"})
    )
    assert seen[0].headers["x-key"] == "abcdef"
    with pytest.raises(ToolSetupInvalid, match="SERVICE_KEY"):
        await run_tool(tool(raw), {}, context(transport=transport, resolver=PUBLIC))


async def test_metadata_api_call_setup_and_args() -> None:
    seen, transport = _recorder()
    t = tool({"name": "svc", "api_call": {"url": "https://api.example.com/", "method": "GET"}})
    sources = [
        {"x-api_call-setup": {"svc": {"headers": {"X-Tenant": "agent"}}}},
        {
            "x-api_call-args": {"svc": {"params": {"page": "1"}}},
            "x-api_call-setup": {"svc": {"headers": {"X-Tenant": "task"}}},
        },
    ]
    await run_tool(t, {}, context(transport=transport, resolver=PUBLIC, setup_sources=sources))
    assert seen[0].headers["x-tenant"] == "task"
    assert dict(seen[0].url.params) == {"page": "1"}


async def test_function_tools_are_not_run_here() -> None:
    t = tool(
        {"name": "send_notification", "type": "function", "function": {"parameters": {"type": "object"}}}
    )
    with pytest.raises(FunctionToolNotRunnable, match="client"):
        await run_tool(t, {}, context())


async def test_integration_setup_merges_config_metadata_and_definition() -> None:
    seen: list[httpx.Request] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200, json={"web": {"results": [{"title": "T", "url": "https://u", "description": "<b>S</b>"}]}}
        )

    t = tool({"name": "web_search", "integration": {"provider": "brave", "arguments": {"count": 3}}})
    ctx = context(
        integrations={"brave": {"base_url": "https://brave.test/res/v1", "api_key": "from-config"}},
        setup_sources=[{"x-integrations-setup": {"web_search": {"brave_api_key": "from-metadata"}}}],
        transport=httpx.MockTransport(respond),
    )
    out = await run_tool(t, {"query": "cats"}, ctx)
    assert out == {"result": "Title: T\nURL: https://u\nSnippet: S"}
    assert seen[0].headers["x-subscription-token"] == "from-metadata"
    assert dict(seen[0].url.params) == {"q": "cats", "count": "3"}
    # the singular key (Julep's lookup) is read too, and the definition's setup wins over both
    t2 = tool(
        {"name": "web_search", "integration": {"provider": "brave", "setup": {"api_key": "from-definition"}}}
    )
    ctx.setup_sources = [{"x-integration-setup": {"brave": {"api_key": "from-singular"}}}]
    await run_tool(t2, {"query": "dogs"}, ctx)
    assert seen[1].headers["x-subscription-token"] == "from-definition"


async def test_integration_arguments_are_validated_by_name() -> None:
    t = tool({"name": "web_search", "integration": {"provider": "brave", "setup": {"api_key": "k"}}})
    with pytest.raises(ToolArgumentsInvalid, match=r"'query'.*required"):
        await run_tool(t, {}, context())
    with pytest.raises(ToolArgumentsInvalid, match="'colour'"):
        await run_tool(t, {"query": "x", "colour": "red"}, context())
    wiki = tool({"name": "wiki", "integration": {"provider": "wikipedia"}})
    with pytest.raises(ToolArgumentsInvalid, match="'load_max_docs'"):
        await run_tool(wiki, {"query": "x", "load_max_docs": 50}, context())


async def test_missing_api_key_names_the_setup_key() -> None:
    t = tool({"name": "web_search", "integration": {"provider": "brave"}})
    with pytest.raises(ToolSetupInvalid, match="'api_key'"):
        await run_tool(t, {"query": "x"}, context())


async def test_unknown_provider_and_method() -> None:
    with pytest.raises(ToolNotImplemented, match="'nosuch'"):
        await run_tool(tool({"name": "x", "integration": {"provider": "nosuch"}}), {}, context())
    with pytest.raises(ToolNotImplemented, match="'fly'"):
        await run_tool(
            tool({"name": "x", "integration": {"provider": "brave", "method": "fly"}}), {}, context()
        )


async def test_dummy_returns_its_arguments() -> None:
    t = tool({"name": "echo", "integration": {"provider": "dummy", "arguments": {"a": 1}}})
    assert await run_tool(t, {"b": 2}, context()) == {"a": 1, "b": 2}


def test_schemas_for_every_kind() -> None:
    fn = tool_schema(
        tool(
            {
                "name": "notify",
                "description": "Notify",
                "function": {"parameters": {"type": "object", "properties": {"text": {"type": "string"}}}},
            }
        )
    )
    assert fn == {
        "type": "function",
        "function": {
            "name": "notify",
            "description": "Notify",
            "parameters": {"type": "object", "properties": {"text": {"type": "string"}}},
        },
    }
    dalle = tool_schema(
        tool(
            {
                "name": "image_generator",
                "integration": {"provider": "dalle", "method": "generate_image", "setup": {"api_key": "k"}},
            }
        )
    )
    assert dalle["function"]["parameters"]["required"] == ["description"]
    assert dalle["function"]["description"]
    agents = tool_schema(tool({"name": "list_agents", "system": {"resource": "agent", "operation": "list"}}))
    assert "limit" in agents["function"]["parameters"]["properties"]
    create = tool_schema(tool({"name": "new_agent", "system": {"resource": "agent", "operation": "create"}}))
    props = create["function"]["parameters"]["properties"]
    assert (
        props["instructions"] == {"type": "array", "items": {"type": "string"}} and "created_at" not in props
    )
    get = tool_schema(
        tool({"name": "get_agent", "system": {"resource": "agent", "operation": "get", "resource_id": "abc"}})
    )
    assert "id" not in get["function"]["parameters"]["properties"]
    api = tool_schema(tool({"name": "hook", "api_call": {"method": "POST", "url": "https://x.example/"}}))
    assert {"params", "json", "content"} <= set(api["function"]["parameters"]["properties"])
    for schema in (fn, dalle, agents, create, get, api):
        json.dumps(schema)
