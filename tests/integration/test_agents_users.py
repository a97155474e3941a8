"""AgentService and UserService through the generated Python SDK against a real server."""

from __future__ import annotations

import uuid

import grpc
import pytest

from mintleaf import FieldMask, Struct, v1
from support.errors import expect_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def make_agent(client, **kw):
    kw.setdefault("name", "Ada")
    return client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(**kw)))


def test_agent_round_trip(client):
    created = make_agent(
        client,
        name="Story Teller",
        about="tells stories",
        model="gpt-4o-mini",
        instructions=["be brief", "be kind"],
        default_settings=Struct.from_dict({"temperature": 0.5}),
        metadata=Struct.from_dict({"team": "docs", "tier": 2}),
    )
    assert uuid.UUID(created.id)
    assert created.created_at is not None
    got = client.agents.get_agent(v1.GetAgentRequest(id=created.id))
    assert got.name == "Story Teller"
    assert got.instructions == ["be brief", "be kind"]
    assert got.default_settings.to_dict() == {"temperature": 0.5}
    assert got.metadata.to_dict() == {"team": "docs", "tier": 2}


def test_agent_update_mask_changes_only_masked_fields(client):
    a = make_agent(client, name="A", about="old about", model="m1")
    updated = client.agents.update_agent(
        v1.UpdateAgentRequest(
            agent=v1.Agent(id=a.id, about="new about", model="ignored"),
            update_mask=FieldMask(paths=["about"]),
        )
    )
    assert updated.about == "new about"
    assert updated.model == "m1"
    assert updated.name == "A"
    assert updated.updated_at >= a.updated_at


def test_agent_update_without_mask_replaces(client):
    a = make_agent(client, name="A", about="x", model="m1")
    updated = client.agents.update_agent(v1.UpdateAgentRequest(agent=v1.Agent(id=a.id, name="B")))
    assert (updated.name, updated.about, updated.model) == ("B", "", "")


def test_agent_update_mask_unknown_field(client):
    a = make_agent(client)
    expect_error(
        lambda: client.agents.update_agent(
            v1.UpdateAgentRequest(agent=v1.Agent(id=a.id), update_mask=FieldMask(paths=["nope"]))
        ),
        INVALID,
        field="update_mask",
    )


def test_agent_delete(client):
    a = make_agent(client)
    client.agents.delete_agent(v1.DeleteAgentRequest(id=a.id))
    expect_error(
        lambda: client.agents.get_agent(v1.GetAgentRequest(id=a.id)), NOT_FOUND, reason="AGENT_NOT_FOUND"
    )
    expect_error(lambda: client.agents.delete_agent(v1.DeleteAgentRequest(id=a.id)), NOT_FOUND)


def test_agent_list_pages_and_filters(client):
    ids = [
        make_agent(client, name=f"a{i}", metadata=Struct.from_dict({"i": i, "even": i % 2 == 0})).id
        for i in range(7)
    ]
    seen, token = [], ""
    while True:
        page = client.agents.list_agents(v1.ListAgentsRequest(page_size=3, page_token=token))
        assert len(page.agents) <= 3
        seen += [a.id for a in page.agents]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids
    evens = client.agents.list_agents(v1.ListAgentsRequest(metadata_filter=Struct.from_dict({"even": True})))
    assert [a.id for a in evens.agents] == ids[0::2]


@pytest.mark.parametrize(
    ("agent", "field"),
    [
        (v1.Agent(name=""), "agent.name"),
        (v1.Agent(name="x" * 256), "agent.name"),
        (v1.Agent(name="ok", canonical_name="9bad"), "agent.canonical_name"),
        (v1.Agent(name="ok", id="not-a-uuid"), "agent.id"),
        (v1.Agent(name="ok", project="has space"), "agent.project"),
    ],
)
def test_agent_bad_input(client, agent, field):
    before = len(client.agents.list_agents(v1.ListAgentsRequest()).agents)
    expect_error(lambda: client.agents.create_agent(v1.CreateAgentRequest(agent=agent)), INVALID, field=field)
    assert len(client.agents.list_agents(v1.ListAgentsRequest()).agents) == before


def test_bad_ids_and_paging_arguments(client):
    expect_error(lambda: client.agents.get_agent(v1.GetAgentRequest(id="xyz")), INVALID, field="id")
    expect_error(lambda: client.agents.get_agent(v1.GetAgentRequest()), INVALID, field="id")
    expect_error(
        lambda: client.agents.list_agents(v1.ListAgentsRequest(page_size=5000)), INVALID, field="page_size"
    )
    expect_error(
        lambda: client.agents.list_agents(v1.ListAgentsRequest(page_size=-1)), INVALID, field="page_size"
    )
    expect_error(
        lambda: client.agents.list_agents(v1.ListAgentsRequest(page_token="garbage!")),
        INVALID,
        field="page_token",
    )


def test_create_is_idempotent_with_request_id(client):
    first = make_agent(client, name="once")
    req = v1.CreateAgentRequest(agent=v1.Agent(name="once"), request_id="req-1")
    a = client.agents.create_agent(req)
    b = client.agents.create_agent(req)
    assert a.id == b.id != first.id


def test_create_with_client_chosen_id(client):
    chosen = str(uuid.uuid4())
    a = make_agent(client, id=chosen, name="chosen")
    assert a.id == chosen
    again = make_agent(client, id=chosen, name="chosen")  # a retry with the same content
    assert again.id == chosen and again.created_at == a.created_at
    err = expect_error(
        lambda: make_agent(client, id=chosen, name="different"), grpc.StatusCode.ALREADY_EXISTS
    )
    assert err.reason == "AGENT_ALREADY_EXISTS"


def test_canonical_name_unique_per_developer(client, other_client):
    make_agent(client, name="x", canonical_name="shared_name")
    expect_error(
        lambda: make_agent(client, name="y", canonical_name="shared_name"), grpc.StatusCode.ALREADY_EXISTS
    )
    make_agent(other_client, name="z", canonical_name="shared_name")  # another developer may use it


def test_tenant_isolation(client, other_client):
    a = make_agent(client, name="mine")
    u = client.users.create_user(v1.CreateUserRequest(user=v1.User(name="me")))
    for call in (
        lambda: other_client.agents.get_agent(v1.GetAgentRequest(id=a.id)),
        lambda: other_client.agents.update_agent(
            v1.UpdateAgentRequest(agent=v1.Agent(id=a.id, name="hijack"))
        ),
        lambda: other_client.agents.delete_agent(v1.DeleteAgentRequest(id=a.id)),
        lambda: other_client.users.get_user(v1.GetUserRequest(id=u.id)),
        lambda: other_client.users.update_user(v1.UpdateUserRequest(user=v1.User(id=u.id, name="x"))),
        lambda: other_client.users.delete_user(v1.DeleteUserRequest(id=u.id)),
    ):
        expect_error(call, NOT_FOUND)
    assert a.id not in [x.id for x in other_client.agents.list_agents(v1.ListAgentsRequest()).agents]
    assert u.id not in [x.id for x in other_client.users.list_users(v1.ListUsersRequest()).users]
    assert client.agents.get_agent(v1.GetAgentRequest(id=a.id)).name == "mine"


def test_user_crud(client):
    u = client.users.create_user(
        v1.CreateUserRequest(
            user=v1.User(name="Grace", about="admiral", metadata=Struct.from_dict({"k": "v"}))
        )
    )
    assert client.users.get_user(v1.GetUserRequest(id=u.id)).about == "admiral"
    u2 = client.users.update_user(
        v1.UpdateUserRequest(
            user=v1.User(id=u.id, about="rear admiral"), update_mask=FieldMask(paths=["about"])
        )
    )
    assert (u2.name, u2.about) == ("Grace", "rear admiral")
    listed = client.users.list_users(v1.ListUsersRequest(metadata_filter=Struct.from_dict({"k": "v"})))
    assert [x.id for x in listed.users] == [u.id]
    client.users.delete_user(v1.DeleteUserRequest(id=u.id))
    expect_error(lambda: client.users.get_user(v1.GetUserRequest(id=u.id)), NOT_FOUND)
    expect_error(
        lambda: client.users.create_user(v1.CreateUserRequest(user=v1.User(name="n" * 121))),
        INVALID,
        field="user.name",
    )


def test_list_models(client):
    client.agents.list_models(v1.ListModelsRequest())
