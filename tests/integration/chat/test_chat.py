"""ChatService end to end: the generated SDK against a real server whose models are a scripted
model server. Each test checks what the model was sent (the scripted server records every
request) and what was stored (ListEntries)."""

from __future__ import annotations

import uuid

import grpc
import pytest

from mintleaf import Struct, v1
from mintleaf_server.llm.scripted import Reply, ToolCall
from support.errors import expect_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
FAILED = grpc.StatusCode.FAILED_PRECONDITION


def make_agent(client, name="Ada", **kw):
    return client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name=name, **kw)))


def make_user(client, name="Bob", **kw):
    return client.users.create_user(v1.CreateUserRequest(user=v1.User(name=name, **kw)))


def make_session(client, **kw):
    if "agent" not in kw and "agents" not in kw:
        kw["agent"] = make_agent(client).id
    return client.sessions.create_session(v1.CreateSessionRequest(session=v1.Session(**kw)))


def say(client, session_id, *texts, role="user", **kw):
    messages = [v1.ChatMessage(role=role, content=t) for t in texts]
    return client.chat.chat(v1.ChatRequest(session_id=session_id, messages=messages, **kw))


def history(client, session_id):
    return client.sessions.list_entries(v1.ListEntriesRequest(session_id=session_id, page_size=1000)).entries


def sent(model, index=-1):
    """The messages of a recorded chat-completion request."""
    return model.chat_requests[index]["messages"]


def contents(messages):
    return [m["content"] for m in messages]


def test_five_turns_later_prompts_contain_earlier_turns(chat_client, model):
    user = make_user(chat_client, "Bob", about="a student")
    agent = make_agent(chat_client, "Ada", about="a librarian", instructions=["be brief", "cite sources"])
    s = make_session(chat_client, agent=agent.id, user=user.id, situation="a quiet library")
    answers = [f"answer {i}" for i in range(5)]
    model.script(*answers)
    for i in range(5):
        r = say(chat_client, s.id, f"question {i}")
        assert r.choices[0].message.content == answers[i]
        assert r.choices[0].message.role == "assistant"
        assert r.choices[0].finish_reason == "stop"
        assert r.session_id == s.id
        assert r.usage.prompt_tokens > 0 and r.usage.total_tokens >= r.usage.prompt_tokens
    assert len(model.chat_requests) == 5
    last = sent(model)
    system = last[0]
    assert system["role"] == "system"
    assert system["content"].startswith("You are Ada. About you: a librarian.")
    assert "their name is Bob. About the user: a student." in system["content"]
    assert "Situation: a quiet library" in system["content"]
    assert "Instructions:\n- be brief\n- cite sources" in system["content"]
    expected = []
    for i in range(4):
        expected += [f"question {i}", answers[i]]
    assert contents(last[1:]) == [*expected, "question 4"]
    assert [m["role"] for m in last[1:]] == ["user", "assistant"] * 4 + ["user"]
    # The second prompt already held the first turn.
    assert contents(sent(model, 1)[1:]) == ["question 0", "answer 0", "question 1"]

    entries = history(chat_client, s.id)
    assert [e.message.content for e in entries] == [*expected, "question 4", "answer 4"]
    assert [e.source for e in entries] == ["api_request", "api_response"] * 5
    assert all(e.token_count > 0 and e.tokenizer == "o200k_base" for e in entries)
    assert entries[-1].id == r.id  # the response id is the stored answer's
    assert entries[-1].model == "gpt-4o-mini"


def test_templates_settings_and_multi_agent(chat_client, model):
    a = make_agent(chat_client, "First")
    b = make_agent(
        chat_client, "Second", model="gpt-4o", default_settings=Struct.from_dict({"temperature": 0.25})
    )
    s = make_session(
        chat_client,
        agents=[a.id, b.id],
        system_template="Agent {{ agent.name }} of {{ agents | length }}; mood {{ metadata.mood }}; t={{ settings.temperature }}",
    )
    say(chat_client, s.id, "hi {{ agent.name }}", agent=b.id, metadata=Struct.from_dict({"mood": "calm"}))
    body = model.chat_requests[-1]
    assert body["model"] == "gpt-4o"
    assert body["temperature"] == 0.25
    assert body["messages"][0]["content"] == "Agent Second of 2; mood calm; t=0.25"
    assert body["messages"][1]["content"] == "hi Second"  # render_templates defaults to true
    # Default agent: the first; the request's settings and model override the agent's.
    say(
        chat_client,
        s.id,
        "again",
        model="gpt-4o-mini",
        settings=Struct.from_dict({"temperature": 0.5, "max_tokens": 20}),
        metadata=Struct.from_dict({"mood": "busy"}),
    )
    body = model.chat_requests[-1]
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("gpt-4o-mini", 0.5, 20)
    assert body["messages"][0]["content"] == "Agent First of 2; mood busy; t=0.5"


def test_context_overflow_truncate_drops_oldest_turns(chat_client, model):
    s = make_session(chat_client, token_budget=120, context_overflow=v1.ContextOverflow.TRUNCATE)
    words = "lorem ipsum dolor sit amet " * 3
    for i in range(6):
        model.script(f"reply {i} {words}")
        say(chat_client, s.id, f"turn {i} {words}")
    last = sent(model)
    assert last[0]["role"] == "system"
    assert last[-1]["content"] == f"turn 5 {words}"
    assert f"turn 0 {words}" not in contents(last)  # the oldest turns were dropped
    assert len(last) < 12
    assert last[1]["role"] != "tool"
    render = chat_client.chat.render_chat(
        v1.ChatRequest(session_id=s.id, messages=[v1.ChatMessage(role="user", content="x")])
    )
    assert render.token_count <= 120
    # Nothing is lost from history: truncation only shapes the prompt.
    assert len(history(chat_client, s.id)) == 12


def test_context_overflow_none_is_a_clear_error(chat_client, model):
    s = make_session(chat_client, token_budget=60)
    model.script("ipsum " * 20)
    say(chat_client, s.id, "lorem " * 20)
    err = expect_error(lambda: say(chat_client, s.id, "dolor " * 20), FAILED, reason="CONTEXT_OVERFLOW")
    assert "budget of 60" in err.message and "context_overflow" in err.message
    assert len(model.chat_requests) == 1  # the model was not called
    # The new messages alone too large: no policy can help.
    t = make_session(chat_client, token_budget=30, context_overflow=v1.ContextOverflow.TRUNCATE)
    err = expect_error(
        lambda: say(chat_client, t.id, "word " * 100), INVALID, field="messages", reason="CONTEXT_OVERFLOW"
    )
    assert "alone" in err.message


def test_context_overflow_adaptive_summary_replaces_old_turns(chat_client, model):
    s = make_session(chat_client, token_budget=160, context_overflow=v1.ContextOverflow.ADAPTIVE)
    words = "alpha beta gamma delta epsilon " * 3
    summaries = 0

    def answer(body):
        nonlocal summaries
        if body["messages"][0]["content"].startswith("You summarise"):
            summaries += 1
            return Reply(text=f"SUMMARY-{summaries}")
        return Reply(text=f"reply to {body['messages'][-1]['content']}")

    requests = []
    for i in range(6):
        model.reset()
        model.script(answer, answer)  # at most a summary then the answer
        say(chat_client, s.id, f"turn {i} {words}")
        requests += model.chat_requests
    assert summaries >= 1
    entries = history(chat_client, s.id)
    summary_entries = [e for e in entries if e.source == "summarizer"]
    assert len(summary_entries) == summaries
    latest = summary_entries[-1]
    assert latest.message.role == "system"
    text = latest.message.content_parts[0].text
    assert text.startswith("Summary of the earlier conversation: SUMMARY-")
    last = requests[-1]["messages"]
    assert last[0]["role"] == "system" and last[0]["content"].startswith("You are Ada")
    assert last[1] == {"role": "system", "content": text}  # the summary, in place of the old turns
    assert f"turn 0 {words}" not in contents(last)
    assert last[-1]["content"] == f"turn 5 {words}"
    assert [m["role"] for m in last].count("system") == 2  # one summary only, the latest
    if summaries > 1:  # a later summary was made from the earlier one
        assert any(
            "SUMMARY-1" in b["messages"][1]["content"]
            for b in requests
            if b["messages"][0]["content"].startswith("You summarise")
        )
    # The summariser was asked about the dropped turns.
    summary_request = next(b for b in requests if b["messages"][0]["content"].startswith("You summarise"))
    assert f"user: turn 0 {words}".strip() in summary_request["messages"][1]["content"]
    got = chat_client.sessions.get_session(v1.GetSessionRequest(id=s.id))
    assert got.summary == text.removeprefix("Summary of the earlier conversation: ")
    # Summarised entries stay in history.
    assert entries[0].message.content == f"turn 0 {words}"


def test_streamed_reply_deltas_join_into_the_stored_answer(chat_client, model):
    s = make_session(chat_client)
    model.script(Reply(text="The quick brown fox jumps over the lazy dog."))
    events = list(
        chat_client.chat.stream_chat(
            v1.ChatRequest(session_id=s.id, messages=[v1.ChatMessage(role="user", content="tell me")])
        )
    )
    deltas = [e.delta for e in events if e.delta is not None]
    final = events[-1].response
    assert final is not None and all(e.response is None for e in events[:-1])
    assert len(deltas) > 3
    joined = "".join(d.content for d in deltas)
    assert joined == "The quick brown fox jumps over the lazy dog."
    assert final.choices[0].message.content == joined
    entries = history(chat_client, s.id)
    assert entries[-1].id == final.id and entries[-1].message.content == joined
    assert model.chat_requests[-1]["stream"] is True


def test_function_tool_call_is_returned_to_the_client(chat_client, model):
    agent = make_agent(chat_client)
    params = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    chat_client.tools.create_tool(
        v1.CreateToolRequest(
            agent_id=agent.id,
            tool=v1.Tool(
                name="get_weather",
                description="Weather in a city",
                function=v1.FunctionDef(parameters=Struct.from_dict(params)),
            ),
        )
    )
    s = make_session(chat_client, agent=agent.id)
    model.script(Reply(tool_calls=[ToolCall("get_weather", {"city": "Paris"}, id="call_1")]))
    r = say(chat_client, s.id, "weather in Paris?", auto_run_tools=True)  # function tools never run here
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert (call.id, call.name, call.arguments.to_dict()) == ("call_1", "get_weather", {"city": "Paris"})
    offered = model.chat_requests[-1]["tools"]
    assert offered == [
        {
            "type": "function",
            "function": {"name": "get_weather", "parameters": params, "description": "Weather in a city"},
        }
    ]
    # The client answers the call in its next turn; the model sees the call and the result.
    model.script("It is sunny in Paris.")
    r2 = chat_client.chat.chat(
        v1.ChatRequest(
            session_id=s.id,
            messages=[v1.ChatMessage(role="tool", tool_call_id="call_1", content='{"sky": "sunny"}')],
        )
    )
    assert r2.choices[0].message.content == "It is sunny in Paris."
    last = sent(model)
    assert last[-2]["role"] == "assistant"
    assert last[-2]["tool_calls"][0]["id"] == "call_1"
    assert last[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert last[-1] == {"role": "tool", "content": '{"sky": "sunny"}', "tool_call_id": "call_1"}
    entries = history(chat_client, s.id)
    assert [e.source for e in entries] == ["api_request", "api_response", "api_request", "api_response"]
    assert entries[1].message.tool_calls[0].name == "get_weather"


def test_request_tools_and_tool_choice(chat_client, model):
    s = make_session(chat_client)
    model.script(Reply(tool_calls=[ToolCall("lookup", {"q": "x"})]))
    r = say(
        chat_client,
        s.id,
        "look it up",
        tools=[v1.Tool(name="lookup", function=v1.FunctionDef())],
        tool_choice="lookup",
    )
    assert r.choices[0].message.tool_calls[0].name == "lookup"
    body = model.chat_requests[-1]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert [t["function"]["name"] for t in body["tools"]] == ["lookup"]
    expect_error(lambda: say(chat_client, s.id, "x", tool_choice="nope"), INVALID, field="tool_choice")


def test_save_false_stores_nothing(chat_client, model):
    s = make_session(chat_client)
    r = say(chat_client, s.id, "off the record", save=False)
    assert r.choices[0].message.content
    assert history(chat_client, s.id) == []
    list(
        chat_client.chat.stream_chat(
            v1.ChatRequest(session_id=s.id, messages=[v1.ChatMessage(role="user", content="x")], save=False)
        )
    )
    assert history(chat_client, s.id) == []


def test_render_chat_does_not_call_the_model(chat_client, model):
    s = make_session(chat_client, situation="testing")
    say(chat_client, s.id, "first")
    calls = len(model.chat_requests)
    r = chat_client.chat.render_chat(
        v1.ChatRequest(
            session_id=s.id,
            messages=[v1.ChatMessage(role="user", content="second")],
            tools=[v1.Tool(name="f", function=v1.FunctionDef())],
        )
    )
    assert len(model.chat_requests) == calls
    assert [m.role for m in r.messages] == ["system", "user", "assistant", "user"]
    assert "Situation: testing" in r.messages[0].content
    assert r.messages[-1].content == "second"
    assert r.token_count > 0
    assert [t.name for t in r.tools] == ["f"]
    assert len(history(chat_client, s.id)) == 2  # rendering stores nothing


def test_tenant_isolation(chat_client, other_chat_client, model):
    s = make_session(chat_client)
    expect_error(lambda: say(other_chat_client, s.id, "hello"), NOT_FOUND, reason="SESSION_NOT_FOUND")
    expect_error(
        lambda: other_chat_client.chat.render_chat(
            v1.ChatRequest(session_id=s.id, messages=[v1.ChatMessage(role="user", content="x")])
        ),
        NOT_FOUND,
    )
    assert model.chat_requests == []


def test_bad_inputs(chat_client, model):
    s = make_session(chat_client)
    expect_error(lambda: say(chat_client, str(uuid.uuid4()), "hi"), NOT_FOUND, reason="SESSION_NOT_FOUND")
    expect_error(lambda: say(chat_client, "not-a-uuid", "hi"), INVALID, field="session_id")
    expect_error(lambda: chat_client.chat.chat(v1.ChatRequest(session_id=s.id)), INVALID, field="messages")
    expect_error(lambda: say(chat_client, s.id, "hi", role="robot"), INVALID, field="messages[0].role")
    expect_error(lambda: say(chat_client, s.id, ""), INVALID, field="messages[0].content")
    expect_error(lambda: say(chat_client, s.id, "x", role="tool"), INVALID, field="messages[0].tool_call_id")
    other = make_agent(chat_client, "Stranger")
    expect_error(lambda: say(chat_client, s.id, "hi", agent=other.id), INVALID, field="agent")
    expect_error(lambda: say(chat_client, s.id, "hi", agent="nope"), INVALID, field="agent")
    err = expect_error(lambda: say(chat_client, s.id, "{{ nope }}"), INVALID, field="messages[0].content")
    assert "nope" in err.message
    bad = make_session(chat_client, system_template="{{ missing_name }}")
    err = expect_error(lambda: say(chat_client, bad.id, "hi"), FAILED, reason="TEMPLATE_FAILED")
    assert "session.system_template" in err.message
    assert model.chat_requests == []
    assert history(chat_client, s.id) == []


@pytest.mark.parametrize("stream", [False, True])
def test_model_errors_map_to_statuses(chat_client, model, stream):
    from mintleaf_server.llm.scripted import ErrorReply

    s = make_session(chat_client)
    model.script(ErrorReply(429, "slow down"))
    request = v1.ChatRequest(session_id=s.id, messages=[v1.ChatMessage(role="user", content="x")])
    call = (
        (lambda: list(chat_client.chat.stream_chat(request)))
        if stream
        else (lambda: chat_client.chat.chat(request))
    )
    expect_error(call, grpc.StatusCode.RESOURCE_EXHAUSTED, reason="MODEL_RATE_LIMITED")
    assert history(chat_client, s.id) == []  # a failed turn stores nothing


def test_server_side_tools_run_when_auto_run_tools_allows(chat_client, model):
    agent = make_agent(chat_client)
    user = make_user(chat_client, "Bob", about="a student")
    chat_client.tools.create_tool(
        v1.CreateToolRequest(
            agent_id=agent.id,
            tool=v1.Tool(name="get_user", system=v1.SystemDef(resource="user", operation="get")),
        )
    )
    s = make_session(chat_client, agent=agent.id, auto_run_tools=True)
    model.script(Reply(tool_calls=[ToolCall("get_user", {"id": user.id}, id="call_u")]), "Bob is a student.")
    r = say(chat_client, s.id, "who is that user?")
    assert r.choices[0].message.content == "Bob is a student."
    assert r.choices[0].finish_reason == "stop"
    assert len(model.chat_requests) == 2
    second = sent(model)
    assert second[-2]["tool_calls"][0]["id"] == "call_u"
    assert second[-1]["role"] == "tool" and second[-1]["tool_call_id"] == "call_u"
    assert "a student" in second[-1]["content"]
    entries = history(chat_client, s.id)
    assert [e.source for e in entries] == ["api_request", "api_response", "tool_response", "api_response"]
    assert entries[-1].id == r.id
    # The request can turn it off: the call goes back to the client.
    model.script(Reply(tool_calls=[ToolCall("get_user", {"id": user.id})]))
    r = say(chat_client, s.id, "again?", auto_run_tools=False)
    assert r.choices[0].finish_reason == "tool_calls"
    assert r.choices[0].message.tool_calls[0].name == "get_user"


def test_concurrent_turns_never_share_a_seq(chat_server, chat_client, model):
    from concurrent.futures import ThreadPoolExecutor

    s = make_session(chat_client)
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: say(chat_client, s.id, f"m{i}"), range(16)))
    entries = history(chat_client, s.id)
    assert len(entries) == 32
    assert sorted(e.message.content for e in entries if e.source == "api_request") == sorted(
        f"m{i}" for i in range(16)
    )
    seqs = chat_server.call(_seqs(chat_server, s.id))
    assert seqs == list(range(1, 33))


async def _seqs(chat_server, session_id):
    async with chat_server.app.runtime.db.connection() as conn:
        rows = await (
            await conn.execute(
                "SELECT seq FROM entries WHERE session_id = %s ORDER BY seq", (uuid.UUID(session_id),)
            )
        ).fetchall()
    return [r["seq"] for r in rows]
