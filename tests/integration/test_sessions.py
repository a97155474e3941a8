"""SessionService through the generated Python SDK against a real server: participants and the
derived kind, update_mask, recall options, paging and filters, and a session's history."""

from __future__ import annotations

import uuid

import grpc
import psycopg
import pytest

from mintleaf import FieldMask, Struct, v1
from support.errors import expect_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def make_agent(client, name="Host"):
    return client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name=name)))


def make_user(client, name="Guest"):
    return client.users.create_user(v1.CreateUserRequest(user=v1.User(name=name)))


def create_session(client, request_id="", **kw):
    return client.sessions.create_session(
        v1.CreateSessionRequest(session=v1.Session(**kw), request_id=request_id)
    )


def test_create_with_single_agent_and_user(client):
    agent, user = make_agent(client), make_user(client)
    s = create_session(
        client,
        agent=agent.id,
        user=user.id,
        situation="a quiet library",
        token_budget=4000,
        context_overflow=v1.ContextOverflow.TRUNCATE,
        metadata=Struct.from_dict({"topic": "books"}),
    )
    assert uuid.UUID(s.id)
    assert (s.agents, s.users) == ([agent.id], [user.id])
    assert s.agent == "" and s.user == ""  # input only: merged into agents/users
    assert s.kind == "single_agent_single_user"
    assert s.render_templates is True  # the default when unset
    got = client.sessions.get_session(v1.GetSessionRequest(id=s.id))
    assert got == s
    assert got.situation == "a quiet library"
    assert got.context_overflow == v1.ContextOverflow.TRUNCATE
    assert got.metadata.to_dict() == {"topic": "books"}
    assert got.recall_options is None


@pytest.mark.parametrize(
    ("n_agents", "n_users", "kind"),
    [
        (1, 0, "single_agent_no_user"),
        (1, 1, "single_agent_single_user"),
        (1, 2, "single_agent_multi_user"),
        (2, 0, "multi_agent_no_user"),
        (3, 1, "multi_agent_single_user"),
        (2, 2, "multi_agent_multi_user"),
    ],
)
def test_kind_is_derived(client, n_agents, n_users, kind):
    agents = [make_agent(client, f"a{i}").id for i in range(n_agents)]
    users = [make_user(client, f"u{i}").id for i in range(n_users)]
    s = create_session(client, agents=agents, users=users)
    assert (s.agents, s.users, s.kind) == (agents, users, kind)


def test_agent_and_agents_merge_without_duplicates(client):
    a, b = make_agent(client, "a"), make_agent(client, "b")
    u = make_user(client)
    s = create_session(client, agent=a.id, agents=[a.id, b.id], user=u.id, users=[u.id])
    assert s.agents == [a.id, b.id]
    assert s.users == [u.id]
    assert s.kind == "multi_agent_single_user"


def test_unknown_participants_are_not_found(client):
    agent, user = make_agent(client), make_user(client)
    missing = str(uuid.uuid4())
    err = expect_error(
        lambda: create_session(client, agents=[agent.id, missing]), NOT_FOUND, reason="AGENT_NOT_FOUND"
    )
    assert err.metadata == {"id": missing, "field": "session.agents[1]"}
    expect_error(lambda: create_session(client, agent=missing), NOT_FOUND, reason="AGENT_NOT_FOUND")
    err = expect_error(
        lambda: create_session(client, agent=agent.id, user=missing), NOT_FOUND, reason="USER_NOT_FOUND"
    )
    assert err.metadata["field"] == "session.users[0]"
    expect_error(
        lambda: create_session(client, agent=agent.id, users=[user.id, missing]),
        NOT_FOUND,
        reason="USER_NOT_FOUND",
    )
    # A user id given as an agent is not an agent.
    expect_error(lambda: create_session(client, agent=user.id), NOT_FOUND, reason="AGENT_NOT_FOUND")
    assert client.sessions.list_sessions(v1.ListSessionsRequest()).sessions == []


def test_no_agent_is_invalid(client):
    user = make_user(client)
    expect_error(lambda: create_session(client), INVALID, field="session.agents")
    expect_error(lambda: create_session(client, user=user.id), INVALID, field="session.agents")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"agent": "nope"}, "session.agent"),
        ({"agents": ["AGENT"]}, "session.agents[0]"),
        ({"user": "x"}, "session.user"),
        ({"users": ["x"]}, "session.users[0]"),
        ({"id": "nope"}, "session.id"),
        ({"token_budget": -1}, "session.token_budget"),
        ({"situation": "s" * 100_001}, "session.situation"),
        ({"system_template": "t" * 100_001}, "session.system_template"),
        ({"context_overflow": 17}, "session.context_overflow"),
    ],
)
def test_bad_input(client, fields, field):
    agent = make_agent(client)
    fields = {"agents": [agent.id], **fields}
    expect_error(lambda: create_session(client, **fields), INVALID, field=field)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (v1.RecallOptions(limit=101), "session.recall_options.limit"),
        (v1.RecallOptions(limit=-1), "session.recall_options.limit"),
        (v1.RecallOptions(confidence=1.5), "session.recall_options.confidence"),
        (v1.RecallOptions(alpha=-0.1), "session.recall_options.alpha"),
        (v1.RecallOptions(mmr_strength=2), "session.recall_options.mmr_strength"),
        (v1.RecallOptions(num_search_messages=-1), "session.recall_options.num_search_messages"),
        (v1.RecallOptions(max_query_length=-5), "session.recall_options.max_query_length"),
        (v1.RecallOptions(mode=42), "session.recall_options.mode"),
    ],
)
def test_recall_options_validation(client, options, field):
    agent = make_agent(client)
    expect_error(lambda: create_session(client, agent=agent.id, recall_options=options), INVALID, field=field)
    s = create_session(client, agent=agent.id)
    expect_error(
        lambda: client.sessions.update_session(
            v1.UpdateSessionRequest(
                session=v1.Session(id=s.id, recall_options=options),
                update_mask=FieldMask(paths=["recall_options"]),
            )
        ),
        INVALID,
        field=field,
    )


def test_recall_options_round_trip(client):
    agent = make_agent(client)
    options = v1.RecallOptions(
        mode=v1.DocSearchMode.HYBRID,
        limit=5,
        confidence=0.4,
        alpha=0.7,
        mmr_strength=0.5,
        num_search_messages=3,
        max_query_length=500,
        lang="english",
        metadata_filter=Struct.from_dict({"source": "wiki"}),
    )
    s = create_session(client, agent=agent.id, recall_options=options)
    assert s.recall_options == options
    assert client.sessions.get_session(v1.GetSessionRequest(id=s.id)).recall_options == options
    cleared = client.sessions.update_session(
        v1.UpdateSessionRequest(session=v1.Session(id=s.id), update_mask=FieldMask(paths=["recall_options"]))
    )
    assert cleared.recall_options is None  # unset turns recall off


def test_update_mask(client):
    agent, user = make_agent(client), make_user(client)
    s = create_session(
        client,
        agent=agent.id,
        user=user.id,
        situation="old",
        token_budget=100,
        metadata=Struct.from_dict({"a": 1}),
    )
    updated = client.sessions.update_session(
        v1.UpdateSessionRequest(
            session=v1.Session(id=s.id, situation="new", token_budget=999, auto_run_tools=True),
            update_mask=FieldMask(paths=["situation", "auto_run_tools"]),
        )
    )
    assert (updated.situation, updated.token_budget, updated.auto_run_tools) == ("new", 100, True)
    assert updated.metadata.to_dict() == {"a": 1}
    assert (updated.agents, updated.users) == (s.agents, s.users)
    assert updated.updated_at >= s.updated_at
    assert client.sessions.get_session(v1.GetSessionRequest(id=s.id)) == updated


def test_update_without_mask_replaces_writable_fields(client):
    agent = make_agent(client)
    s = create_session(
        client, agent=agent.id, situation="old", forward_tool_calls=True, metadata=Struct.from_dict({"a": 1})
    )
    updated = client.sessions.update_session(
        v1.UpdateSessionRequest(session=v1.Session(id=s.id, situation="only this"))
    )
    assert updated.situation == "only this"
    assert updated.forward_tool_calls is False
    assert updated.metadata.to_dict() == {}
    assert updated.agents == [agent.id]  # participants are fixed at creation


@pytest.mark.parametrize("path", ["agents", "users", "agent", "kind", "summary", "id", "nope"])
def test_update_mask_rejects_fixed_and_unknown_fields(client, path):
    agent = make_agent(client)
    s = create_session(client, agent=agent.id)
    expect_error(
        lambda: client.sessions.update_session(
            v1.UpdateSessionRequest(session=v1.Session(id=s.id), update_mask=FieldMask(paths=[path]))
        ),
        INVALID,
        field="update_mask",
    )


def test_update_and_get_unknown(client):
    missing = str(uuid.uuid4())
    expect_error(
        lambda: client.sessions.get_session(v1.GetSessionRequest(id=missing)),
        NOT_FOUND,
        reason="SESSION_NOT_FOUND",
    )
    expect_error(
        lambda: client.sessions.update_session(
            v1.UpdateSessionRequest(session=v1.Session(id=missing, situation="x"))
        ),
        NOT_FOUND,
    )
    expect_error(
        lambda: client.sessions.update_session(v1.UpdateSessionRequest(session=v1.Session())),
        INVALID,
        field="session.id",
    )
    expect_error(lambda: client.sessions.get_session(v1.GetSessionRequest(id="x")), INVALID, field="id")


def test_list_pages_and_filters(client):
    agent = make_agent(client)
    ids = [
        create_session(client, agent=agent.id, metadata=Struct.from_dict({"i": i, "odd": i % 2 == 1})).id
        for i in range(5)
    ]
    seen, token = [], ""
    while True:
        page = client.sessions.list_sessions(v1.ListSessionsRequest(page_size=2, page_token=token))
        assert len(page.sessions) <= 2
        seen += [s.id for s in page.sessions]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids
    odd = client.sessions.list_sessions(
        v1.ListSessionsRequest(metadata_filter=Struct.from_dict({"odd": True}))
    )
    assert [s.id for s in odd.sessions] == ids[1::2]
    exact = client.sessions.list_sessions(v1.ListSessionsRequest(metadata_filter=Struct.from_dict({"i": 3})))
    assert [s.id for s in exact.sessions] == [ids[3]]
    none = client.sessions.list_sessions(v1.ListSessionsRequest(metadata_filter=Struct.from_dict({"i": 99})))
    assert none.sessions == [] and none.next_page_token == ""
    expect_error(
        lambda: client.sessions.list_sessions(v1.ListSessionsRequest(page_size=-3)),
        INVALID,
        field="page_size",
    )
    expect_error(
        lambda: client.sessions.list_sessions(v1.ListSessionsRequest(page_token="%%")),
        INVALID,
        field="page_token",
    )


def test_idempotent_create(client):
    agent = make_agent(client)
    first = create_session(client, request_id="sess-1", agent=agent.id, situation="once")
    assert create_session(client, request_id="sess-1", agent=agent.id, situation="once") == first
    chosen = str(uuid.uuid4())
    s = create_session(client, id=chosen, agent=agent.id, situation="chosen")
    assert s.id == chosen
    assert create_session(client, id=chosen, agent=agent.id, situation="chosen") == s
    expect_error(
        lambda: create_session(client, id=chosen, agent=agent.id, situation="other"),
        grpc.StatusCode.ALREADY_EXISTS,
    )
    assert len(client.sessions.list_sessions(v1.ListSessionsRequest()).sessions) == 2


def test_entries_of_an_empty_session(client):
    agent = make_agent(client)
    s = create_session(client, agent=agent.id)
    page = client.sessions.list_entries(v1.ListEntriesRequest(session_id=s.id))
    assert page.entries == [] and page.next_page_token == ""
    client.sessions.delete_entries(v1.DeleteEntriesRequest(session_id=s.id))  # nothing to delete is fine
    missing = str(uuid.uuid4())
    expect_error(
        lambda: client.sessions.list_entries(v1.ListEntriesRequest(session_id=missing)),
        NOT_FOUND,
        reason="SESSION_NOT_FOUND",
    )
    expect_error(
        lambda: client.sessions.delete_entries(v1.DeleteEntriesRequest(session_id=missing)), NOT_FOUND
    )
    expect_error(
        lambda: client.sessions.list_entries(v1.ListEntriesRequest(session_id="x")),
        INVALID,
        field="session_id",
    )
    expect_error(
        lambda: client.sessions.list_entries(v1.ListEntriesRequest(session_id=s.id, page_token="abc")),
        INVALID,
        field="page_token",
    )
    expect_error(
        lambda: client.sessions.list_entries(v1.ListEntriesRequest(session_id=s.id, page_size=1001)),
        INVALID,
        field="page_size",
    )


def _add_entries(pg_url, session_id, texts):
    """Entries are written by chat (its own issue); here they are put in place directly."""
    with psycopg.connect(pg_url) as conn:
        (dev,) = conn.execute("SELECT developer_id FROM sessions WHERE id = %s", (session_id,)).fetchone()
        for seq, text in enumerate(texts):
            conn.execute(
                "INSERT INTO entries (developer_id, id, session_id, seq, role, name, content, tool_calls, tool_call_id,"
                " source, token_count, tokenizer, model, timestamp, created_at)"
                " VALUES (%s, %s, %s, %s, %s, '', to_jsonb(%s::text), NULL, '', 'api_request', %s, 'o200k', '', now(), now())",
                (
                    dev,
                    uuid.uuid4(),
                    session_id,
                    seq,
                    "user" if seq % 2 == 0 else "assistant",
                    text,
                    len(text),
                ),
            )


def test_entries_page_in_order_and_delete(client, pg_url):
    agent = make_agent(client)
    s = create_session(client, agent=agent.id)
    keep = create_session(client, agent=agent.id)
    texts = [f"message {i}" for i in range(5)]
    _add_entries(pg_url, s.id, texts)
    _add_entries(pg_url, keep.id, ["untouched"])
    seen, token = [], ""
    while True:
        page = client.sessions.list_entries(
            v1.ListEntriesRequest(session_id=s.id, page_size=2, page_token=token)
        )
        assert len(page.entries) <= 2
        seen += page.entries
        token = page.next_page_token
        if not token:
            break
    assert [e.message.content for e in seen] == texts  # oldest first
    assert [e.message.role for e in seen] == ["user", "assistant", "user", "assistant", "user"]
    assert all(e.session_id == s.id and e.source == "api_request" for e in seen)
    client.sessions.delete_entries(v1.DeleteEntriesRequest(session_id=s.id))
    assert client.sessions.list_entries(v1.ListEntriesRequest(session_id=s.id)).entries == []
    assert client.sessions.get_session(v1.GetSessionRequest(id=s.id)).id == s.id  # the session stays
    assert len(client.sessions.list_entries(v1.ListEntriesRequest(session_id=keep.id)).entries) == 1


def test_delete(client, pg_url):
    agent = make_agent(client)
    s = create_session(client, agent=agent.id)
    _add_entries(pg_url, s.id, ["hello"])
    client.sessions.delete_session(v1.DeleteSessionRequest(id=s.id))
    expect_error(lambda: client.sessions.get_session(v1.GetSessionRequest(id=s.id)), NOT_FOUND)
    expect_error(lambda: client.sessions.delete_session(v1.DeleteSessionRequest(id=s.id)), NOT_FOUND)
    expect_error(lambda: client.sessions.list_entries(v1.ListEntriesRequest(session_id=s.id)), NOT_FOUND)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM entries WHERE session_id = %s", (s.id,)).fetchone() == (0,)
