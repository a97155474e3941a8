"""ToolService through the generated Python SDK against a real server: every kind, inferred types,
paging, update_mask, and the errors a bad definition earns (each naming its field)."""

from __future__ import annotations

import uuid

import grpc
import pytest

from mintleaf import FieldMask, Struct, v1
from support.errors import expect_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS

PARAMS = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}


def make_agent(client, name="Tooled"):
    return client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name=name)))


def create_tool(client, agent_id, request_id="", **kw):
    return client.tools.create_tool(
        v1.CreateToolRequest(agent_id=agent_id, tool=v1.Tool(**kw), request_id=request_id)
    )


def function_tool(name="notify", **kw):
    return {
        "name": name,
        "function": v1.FunctionDef(description="sends it", parameters=Struct.from_dict(PARAMS)),
        **kw,
    }


KINDS = {
    "function": (function_tool(), v1.ToolType.FUNCTION),
    "integration": (
        {
            "name": "image_generator",
            "description": "draws",
            "integration": v1.IntegrationDef(
                provider="dalle",
                method="generate_image",
                setup=Struct.from_dict({"api_key": "$ secrets.OPENAI"}),
            ),
        },
        v1.ToolType.INTEGRATION,
    ),
    "system": (
        {"name": "list_agents", "system": v1.SystemDef(resource="agent", operation="list")},
        v1.ToolType.SYSTEM,
    ),
    "api_call": (
        {
            "name": "hello",
            "api_call": v1.ApiCallDef(
                method="GET",
                url="https://example.invalid/get",
                headers={"Accept": "application/json"},
                parameters=Struct.from_dict(PARAMS),
                secrets={"token": "DISCORD_TOKEN"},
            ),
        },
        v1.ToolType.API_CALL,
    ),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("explicit_type", [False, True], ids=["inferred", "explicit"])
def test_create_each_kind(client, kind, explicit_type):
    fields, expected_type = KINDS[kind]
    agent = make_agent(client)
    extra = {"type": expected_type} if explicit_type else {}
    tool = create_tool(client, agent.id, **fields, **extra)
    assert uuid.UUID(tool.id)
    assert tool.agent_id == agent.id
    assert tool.type == expected_type  # inferred from the one kind field when omitted
    got = client.tools.get_tool(v1.GetToolRequest(agent_id=agent.id, id=tool.id))
    assert got == tool
    assert getattr(got, kind) == fields[kind]  # the definition round-trips exactly
    assert got.created_at is not None and got.updated_at is not None


def test_function_without_body_is_a_function_with_no_parameters(client):
    agent = make_agent(client)
    tool = create_tool(client, agent.id, name="ping", type=v1.ToolType.FUNCTION)
    assert tool.type == v1.ToolType.FUNCTION


def test_list_pages(client):
    agent = make_agent(client)
    other_agent = make_agent(client, name="other")
    create_tool(client, other_agent.id, **function_tool("elsewhere"))
    ids = [create_tool(client, agent.id, **function_tool(f"tool_{i}")).id for i in range(5)]
    seen, token = [], ""
    while True:
        page = client.tools.list_tools(v1.ListToolsRequest(agent_id=agent.id, page_size=2, page_token=token))
        assert len(page.tools) <= 2
        seen += [t.id for t in page.tools]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids  # oldest first, only this agent's tools
    expect_error(
        lambda: client.tools.list_tools(v1.ListToolsRequest(agent_id=agent.id, page_size=1001)),
        INVALID,
        field="page_size",
    )
    expect_error(
        lambda: client.tools.list_tools(v1.ListToolsRequest(agent_id=agent.id, page_token="nope")),
        INVALID,
        field="page_token",
    )


def test_update_mask_name_and_description(client):
    agent = make_agent(client)
    tool = create_tool(client, agent.id, **function_tool(description="old"))
    updated = client.tools.update_tool(
        v1.UpdateToolRequest(
            tool=v1.Tool(agent_id=agent.id, id=tool.id, name="renamed", description="ignored"),
            update_mask=FieldMask(paths=["name"]),
        )
    )
    assert (updated.name, updated.description) == ("renamed", "old")
    assert updated.function == tool.function
    assert updated.updated_at >= tool.updated_at
    updated = client.tools.update_tool(
        v1.UpdateToolRequest(
            tool=v1.Tool(agent_id=agent.id, id=tool.id, description="new"),
            update_mask=FieldMask(paths=["description"]),
        )
    )
    assert (updated.name, updated.description) == ("renamed", "new")
    assert client.tools.get_tool(v1.GetToolRequest(agent_id=agent.id, id=tool.id)) == updated


def test_update_definition_can_change_the_kind(client):
    agent = make_agent(client)
    tool = create_tool(client, agent.id, **function_tool())
    updated = client.tools.update_tool(
        v1.UpdateToolRequest(
            tool=v1.Tool(
                agent_id=agent.id, id=tool.id, system=v1.SystemDef(resource="user", operation="get")
            ),
            update_mask=FieldMask(paths=["definition"]),
        )
    )
    assert updated.type == v1.ToolType.SYSTEM
    assert updated.system == v1.SystemDef(resource="user", operation="get")
    assert updated.name == tool.name


def test_update_rejects_bad_definition_and_keeps_the_old_one(client):
    agent = make_agent(client)
    tool = create_tool(client, agent.id, **function_tool())
    expect_error(
        lambda: client.tools.update_tool(
            v1.UpdateToolRequest(
                tool=v1.Tool(
                    agent_id=agent.id, id=tool.id, system=v1.SystemDef(resource="planet", operation="get")
                ),
                update_mask=FieldMask(paths=["definition"]),
            )
        ),
        INVALID,
        field="tool.system.resource",
    )
    expect_error(
        lambda: client.tools.update_tool(
            v1.UpdateToolRequest(
                tool=v1.Tool(agent_id=agent.id, id=tool.id), update_mask=FieldMask(paths=["definition"])
            )
        ),
        INVALID,
        field="tool",
    )
    expect_error(
        lambda: client.tools.update_tool(
            v1.UpdateToolRequest(
                tool=v1.Tool(agent_id=agent.id, id=tool.id, name="9lives"),
                update_mask=FieldMask(paths=["name"]),
            )
        ),
        INVALID,
        field="tool.name",
    )
    expect_error(
        lambda: client.tools.update_tool(
            v1.UpdateToolRequest(
                tool=v1.Tool(agent_id=agent.id, id=tool.id), update_mask=FieldMask(paths=["agent_id"])
            )
        ),
        INVALID,
        field="update_mask",
    )
    assert client.tools.get_tool(v1.GetToolRequest(agent_id=agent.id, id=tool.id)) == tool


def test_update_to_a_taken_name(client):
    agent = make_agent(client)
    create_tool(client, agent.id, **function_tool("first"))
    second = create_tool(client, agent.id, **function_tool("second"))
    expect_error(
        lambda: client.tools.update_tool(
            v1.UpdateToolRequest(
                tool=v1.Tool(agent_id=agent.id, id=second.id, name="first"),
                update_mask=FieldMask(paths=["name"]),
            )
        ),
        EXISTS,
        reason="TOOL_ALREADY_EXISTS",
    )


def test_delete(client):
    agent = make_agent(client)
    tool = create_tool(client, agent.id, **function_tool())
    client.tools.delete_tool(v1.DeleteToolRequest(agent_id=agent.id, id=tool.id))
    expect_error(
        lambda: client.tools.get_tool(v1.GetToolRequest(agent_id=agent.id, id=tool.id)),
        NOT_FOUND,
        reason="TOOL_NOT_FOUND",
    )
    expect_error(
        lambda: client.tools.delete_tool(v1.DeleteToolRequest(agent_id=agent.id, id=tool.id)), NOT_FOUND
    )
    assert client.tools.list_tools(v1.ListToolsRequest(agent_id=agent.id)).tools == []
    create_tool(client, agent.id, **function_tool())  # the name is free again


def test_tool_of_another_agent_is_not_found(client):
    a, b = make_agent(client, "a"), make_agent(client, "b")
    tool = create_tool(client, a.id, **function_tool())
    expect_error(lambda: client.tools.get_tool(v1.GetToolRequest(agent_id=b.id, id=tool.id)), NOT_FOUND)
    expect_error(lambda: client.tools.delete_tool(v1.DeleteToolRequest(agent_id=b.id, id=tool.id)), NOT_FOUND)
    expect_error(
        lambda: client.tools.update_tool(
            v1.UpdateToolRequest(
                tool=v1.Tool(agent_id=b.id, id=tool.id, name="x"), update_mask=FieldMask(paths=["name"])
            )
        ),
        NOT_FOUND,
    )


def test_deleting_the_agent_deletes_its_tools(client):
    agent = make_agent(client)
    tool = create_tool(client, agent.id, **function_tool())
    client.agents.delete_agent(v1.DeleteAgentRequest(id=agent.id))
    expect_error(lambda: client.tools.get_tool(v1.GetToolRequest(agent_id=agent.id, id=tool.id)), NOT_FOUND)


def test_unknown_agent(client):
    missing = str(uuid.uuid4())
    expect_error(lambda: create_tool(client, missing, **function_tool()), NOT_FOUND, reason="AGENT_NOT_FOUND")
    expect_error(
        lambda: client.tools.list_tools(v1.ListToolsRequest(agent_id=missing)),
        NOT_FOUND,
        reason="AGENT_NOT_FOUND",
    )
    expect_error(
        lambda: client.tools.get_tool(v1.GetToolRequest(agent_id=missing, id=str(uuid.uuid4()))), NOT_FOUND
    )


def test_duplicate_name_per_agent(client):
    a, b = make_agent(client, "a"), make_agent(client, "b")
    create_tool(client, a.id, **function_tool("dup"))
    err = expect_error(
        lambda: create_tool(client, a.id, **function_tool("dup")), EXISTS, reason="TOOL_ALREADY_EXISTS"
    )
    assert err.metadata["field"] == "name"
    create_tool(client, b.id, **function_tool("dup"))  # another agent may use the name


def test_idempotent_create(client):
    agent = make_agent(client)
    first = create_tool(client, agent.id, request_id="tool-req-1", **function_tool("once"))
    again = create_tool(client, agent.id, request_id="tool-req-1", **function_tool("once"))
    assert again == first
    chosen = str(uuid.uuid4())
    a = create_tool(client, agent.id, id=chosen, **function_tool("chosen"))
    assert a.id == chosen
    assert create_tool(client, agent.id, id=chosen, **function_tool("chosen")) == a
    expect_error(lambda: create_tool(client, agent.id, id=chosen, **function_tool("changed")), EXISTS)
    assert len(client.tools.list_tools(v1.ListToolsRequest(agent_id=agent.id)).tools) == 2


@pytest.mark.parametrize(
    ("tool", "field"),
    [
        (function_tool(""), "tool.name"),
        (function_tool("has space"), "tool.name"),
        (function_tool("9lives"), "tool.name"),
        (function_tool("x" * 41), "tool.name"),
        ({"name": "nothing"}, "tool.type"),  # no kind and no type
        # A type that disagrees with the kind given: two kinds named at once.
        ({**function_tool(), "type": v1.ToolType.SYSTEM}, "tool.function"),
        ({"name": "s", "system": v1.SystemDef(resource="planet", operation="list")}, "tool.system.resource"),
        (
            {"name": "s", "system": v1.SystemDef(resource="agent", operation="explode")},
            "tool.system.operation",
        ),
        ({"name": "s", "system": v1.SystemDef(operation="list")}, "tool.system.resource"),
        (
            {"name": "s", "system": v1.SystemDef(resource="agent", operation="get", subresource="moon")},
            "tool.system.subresource",
        ),
        ({"name": "a", "api_call": v1.ApiCallDef(method="GET")}, "tool.api_call.url"),
        (
            {"name": "a", "api_call": v1.ApiCallDef(method="FETCH", url="https://example.invalid")},
            "tool.api_call.method",
        ),
        (
            {"name": "a", "api_call": v1.ApiCallDef(method="GET", url="https://example.invalid", timeout=-1)},
            "tool.api_call.timeout",
        ),
        ({"name": "i", "integration": v1.IntegrationDef(method="search")}, "tool.integration.provider"),
        (
            {"name": "f", "function": v1.FunctionDef(parameters=Struct.from_dict({"type": "no-such-type"}))},
            "tool.function.parameters.type",
        ),
        (
            {
                "name": "f",
                "function": v1.FunctionDef(
                    parameters=Struct.from_dict({"type": "object", "required": "text"})
                ),
            },
            "tool.function.parameters.required",
        ),
        (
            {
                "name": "a",
                "api_call": v1.ApiCallDef(
                    method="GET", url="https://x.invalid", parameters=Struct.from_dict({"type": 5})
                ),
            },
            "tool.api_call.parameters.type",
        ),
        ({"name": "a", "api_call": v1.ApiCallDef(method="GET", url="$ 1 +")}, "tool.api_call.url"),
    ],
)
def test_bad_definitions(client, tool, field):
    agent = make_agent(client)
    err = expect_error(lambda: create_tool(client, agent.id, **tool), INVALID, field=field)
    assert err.reason == "TOOL_INVALID"
    assert client.tools.list_tools(v1.ListToolsRequest(agent_id=agent.id)).tools == []


def test_bad_ids(client):
    agent = make_agent(client)
    expect_error(lambda: create_tool(client, "not-a-uuid", **function_tool()), INVALID, field="agent_id")
    expect_error(lambda: create_tool(client, "", **function_tool()), INVALID, field="agent_id")
    expect_error(
        lambda: create_tool(client, agent.id, id="nope", **function_tool()), INVALID, field="tool.id"
    )
    expect_error(
        lambda: client.tools.get_tool(v1.GetToolRequest(agent_id=agent.id, id="nope")), INVALID, field="id"
    )
    expect_error(
        lambda: client.tools.delete_tool(v1.DeleteToolRequest(agent_id=agent.id)), INVALID, field="id"
    )
    expect_error(
        lambda: client.tools.update_tool(v1.UpdateToolRequest(tool=v1.Tool(id=str(uuid.uuid4())))),
        INVALID,
        field="tool.agent_id",
    )
