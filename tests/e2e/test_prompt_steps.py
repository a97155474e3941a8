"""Prompt, tool, embed and search steps through the gRPC API against the scripted model server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from mintleaf import FieldMask, Struct, Value, v1
from mintleaf_server.llm.scripted import ErrorReply, Reply, ToolCall
from support.errors import expect_error
from support.world import World, wait_done

AWAITING = {v1.ExecutionStatus.AWAITING_INPUT}


@pytest.fixture(scope="module")
def world(pg_url: str, redis_url: str, data_root: Path) -> Iterator[World]:
    w = World(pg_url, redis_url, data_root / "prompts", embeddings={"backend": "local", "dimensions": 256})
    yield w
    w.close()


# A system tool: the API itself, run in the server under the caller's identity.
FIND_AGENTS = v1.Tool(
    name="find_agents", description="lists agents", system=v1.SystemDef(resource="agent", operation="list")
)


def run(world: World, task_yaml: str, input: dict | None = None, tools: list[v1.Tool] | None = None):  # type: ignore[no-untyped-def]
    c = world.server.client()
    agent = c.agents.create_agent(
        v1.CreateAgentRequest(agent=v1.Agent(name="Helper", model="gpt-4o-mini", about="helps"))
    )
    for tool in tools or []:
        c.tools.create_tool(v1.CreateToolRequest(agent_id=agent.id, tool=tool))
    task = c.tasks.create_task(v1.CreateTaskRequest(agent_id=agent.id, task=v1.Task(yaml=task_yaml)))
    ex = c.executions.create_execution(
        v1.CreateExecutionRequest(
            task_id=task.id, execution=v1.Execution(input=Struct.from_dict(input or {}))
        )
    )
    return c, agent, ex


def test_prompt_unwrap_true_and_false(world: World) -> None:
    world.model.script(Reply(text="first answer"), Reply(text="second answer"))
    c, _, ex = run(
        world,
        """
name: two prompts
main:
  - prompt: "Say something about {{ inputs[0].topic }}"
    unwrap: true
  - prompt: "Again: {{ _ }}"
  - return: {a: "$ outputs[0]", b: "$ _.choices[0].message.content", finish: "$ _.choices[0].finish_reason"}
""",
        {"topic": "owls"},
    )
    done = wait_done(c, ex.id)
    assert done.status == v1.ExecutionStatus.SUCCEEDED, done.error
    assert done.output.to_dict() == {"a": "first answer", "b": "second answer", "finish": "stop"}
    first = world.model.chat_requests[-2]["messages"]
    assert first == [{"role": "user", "content": "Say something about owls"}]
    c.close()


def test_prompt_with_a_server_side_tool_then_an_answer(world: World) -> None:
    world.model.script(
        Reply(tool_calls=[ToolCall("find_agents", {})]),
        Reply(text="I looked it up."),
    )
    c, agent, ex = run(
        world,
        """
name: tool use
main:
  - prompt: "Which agents exist?"
    unwrap: true
""",
        tools=[FIND_AGENTS],
    )
    done = wait_done(c, ex.id)
    assert done.status == v1.ExecutionStatus.SUCCEEDED, done.error
    assert done.output.to_dict() == "I looked it up."
    second = world.model.chat_requests[-1]
    tool_messages = [m for m in second["messages"] if m["role"] == "tool"]
    assert len(tool_messages) == 1 and agent.id in tool_messages[0]["content"]
    assert any(t["function"]["name"] == "find_agents" for t in world.model.chat_requests[-2]["tools"])
    c.close()


def test_prompt_with_a_function_tool_pauses_for_the_client(world: World) -> None:
    world.model.script(
        Reply(
            tool_calls=[ToolCall("get_weather", {"city": "Oslo"}), ToolCall("get_weather", {"city": "Rome"})]
        ),
        Reply(text="Oslo is cold, Rome is warm."),
    )
    c, _, ex = run(
        world,
        """
name: function tool
tools:
  - name: get_weather
    type: function
    function:
      description: weather by city
      parameters: {type: object, properties: {city: {type: string}}, required: [city]}
main:
  - prompt: "Weather in Oslo and Rome?"
    unwrap: true
""",
    )
    waiting = wait_done(c, ex.id, statuses=AWAITING)
    calls = [call for wait in waiting.waits for call in wait.tool_calls]
    assert sorted(call.arguments.to_dict()["city"] for call in calls) == ["Oslo", "Rome"]
    # Results may come one by one: the model is called again only when all are in.
    before = len(world.model.chat_requests)
    c.executions.submit_tool_results(
        v1.SubmitToolResultsRequest(
            id=ex.id, results=[v1.ToolResult(tool_call_id=calls[0].id, output=Value(string_value="cold"))]
        )
    )
    assert (
        c.executions.get_execution(v1.GetExecutionRequest(id=ex.id)).status
        == v1.ExecutionStatus.AWAITING_INPUT
    )
    c.executions.submit_tool_results(
        v1.SubmitToolResultsRequest(
            id=ex.id, results=[v1.ToolResult(tool_call_id=calls[1].id, output=Value(string_value="warm"))]
        )
    )
    done = wait_done(c, ex.id)
    assert done.status == v1.ExecutionStatus.SUCCEEDED, done.error
    assert done.output.to_dict() == "Oslo is cold, Rome is warm."
    assert len(world.model.chat_requests) == before + 1
    answered = {
        m["tool_call_id"]: m["content"]
        for m in world.model.chat_requests[-1]["messages"]
        if m["role"] == "tool"
    }
    assert set(answered) == {calls[0].id, calls[1].id}
    c.close()


def test_response_format_json_and_a_429_then_success(world: World) -> None:
    world.model.script(ErrorReply(status=429, retry_after=0.05), Reply.json({"score": 7}))
    c, _, ex = run(
        world,
        """
name: json
main:
  - prompt: "Score it"
    unwrap: true
    settings:
      response_format: {type: json_object}
  - evaluate: {score: "$ load_json(_)['score']"}
""",
    )
    done = wait_done(c, ex.id)
    assert done.status == v1.ExecutionStatus.SUCCEEDED, done.error
    assert done.output.to_dict() == {"score": 7}
    assert world.model.chat_requests[-1]["response_format"] == {"type": "json_object"}
    c.close()


def test_function_tool_step_and_usage_recorded(world: World) -> None:
    c, _, ex = run(
        world,
        """
name: tool step
tools:
  - name: ask_user
    type: function
    function: {description: asks the user}
main:
  - tool: ask_user
    arguments: {question: "$ 'Name? ' + inputs[0].who"}
  - return: {answer: "$ _"}
""",
        {"who": "you"},
    )
    waiting = wait_done(c, ex.id, statuses=AWAITING)
    call = waiting.waits[0].tool_calls[0]
    assert call.name == "ask_user" and call.arguments.to_dict() == {"question": "Name? you"}
    c.executions.submit_tool_results(
        v1.SubmitToolResultsRequest(
            id=ex.id, results=[v1.ToolResult(tool_call_id=call.id, output=Value(string_value="Ada"))]
        )
    )
    done = wait_done(c, ex.id)
    assert done.status == v1.ExecutionStatus.SUCCEEDED, done.error
    assert done.output.to_dict() == {"answer": "Ada"}
    c.close()


def test_embed_and_search_steps(world: World) -> None:
    c = world.server.client()
    agent = c.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="Librarian")))
    c.docs.create_doc(
        v1.CreateDocRequest(
            agent_id=agent.id, doc=v1.Doc(title="Pets", content=["My kitten chases yarn all day."])
        )
    )
    c.docs.create_doc(
        v1.CreateDocRequest(
            agent_id=agent.id, doc=v1.Doc(title="Money", content=["Stock prices fell sharply today."])
        )
    )
    task = c.tasks.create_task(
        v1.CreateTaskRequest(
            agent_id=agent.id,
            task=v1.Task(
                yaml="""
name: rag
main:
  - embed: {text: "$ inputs[0].q"}
  - evaluate: {dims: "$ len(_.vectors[0])"}
  - search: {text: "kitten yarn", limit: 1}
  - return: {dims: "$ outputs[1].dims", title: "$ _.docs[0].title"}
"""
            ),
        )
    )
    ex = c.executions.create_execution(
        v1.CreateExecutionRequest(
            task_id=task.id, execution=v1.Execution(input=Struct.from_dict({"q": "a playful young cat"}))
        )
    )
    done = wait_done(c, ex.id)
    assert done.status == v1.ExecutionStatus.SUCCEEDED, done.error
    assert done.output.to_dict() == {"dims": 256, "title": "Pets"}
    transitions = c.executions.list_transitions(v1.ListTransitionsRequest(execution_id=ex.id)).transitions
    assert [t.sequence for t in transitions] == list(range(1, len(transitions) + 1))
    json.dumps([t.to_dict() for t in transitions])  # every transition is plain JSON
    c.close()


def test_an_execution_keeps_the_agent_and_tools_it_started_with(world: World) -> None:
    """Resolved at CreateExecution: edits to the agent and its tools while the execution waits
    (before any tool or prompt step ran) do not reach it; an execution started after them sees them."""
    task_yaml = """
name: keeps its tools
main:
  - wait_for_input: {info: {message: "go?"}}
  - evaluate: {name: "$ agent.name"}
  - tool: ask
    arguments: {q: "$ _.name"}
  - return: {name: "$ outputs[1].name", answer: "$ _"}
"""
    ask = v1.Tool(name="ask", function=v1.FunctionDef(description="asks the user"))
    c, agent, ex = run(world, task_yaml, tools=[ask])
    waiting = wait_done(c, ex.id, statuses=AWAITING)
    c.agents.update_agent(
        v1.UpdateAgentRequest(
            agent=v1.Agent(id=agent.id, name="Renamed"), update_mask=FieldMask(paths=["name"])
        )
    )
    for tool in c.tools.list_tools(v1.ListToolsRequest(agent_id=agent.id)).tools:
        c.tools.delete_tool(v1.DeleteToolRequest(agent_id=agent.id, id=tool.id))
    c.executions.resume_execution(
        v1.ResumeExecutionRequest(id=ex.id, wait_id=waiting.waits[0].id, input=Value(string_value="yes"))
    )
    deadline = time.monotonic() + 30
    while not [w for w in waiting.waits if w.kind == "tool_calls"]:  # the resume is taken, then the tool
        assert time.monotonic() < deadline, waiting
        time.sleep(0.03)
        waiting = c.executions.get_execution(v1.GetExecutionRequest(id=ex.id))
    assert waiting.status == v1.ExecutionStatus.AWAITING_INPUT, waiting.error
    call = waiting.waits[0].tool_calls[0]
    assert call.name == "ask" and call.arguments.to_dict() == {"q": "Helper"}
    c.executions.submit_tool_results(
        v1.SubmitToolResultsRequest(
            id=ex.id, results=[v1.ToolResult(tool_call_id=call.id, output=Value(string_value="ok"))]
        )
    )
    done = wait_done(c, ex.id)
    assert done.status == v1.ExecutionStatus.SUCCEEDED, done.error
    assert done.output.to_dict() == {"name": "Helper", "answer": "ok"}

    # A new execution of the same task resolves the agent as it is now: renamed, and without `ask`,
    # which the task calls: refused with the step named, nothing created.
    before = c.executions.list_executions(v1.ListExecutionsRequest(task_id=ex.task_id)).executions
    err = expect_error(
        lambda: c.executions.create_execution(
            v1.CreateExecutionRequest(task_id=ex.task_id, execution=v1.Execution())
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "main[2].tool: unknown tool 'ask'" in err.message and err.reason == "TASK_INVALID"
    after = c.executions.list_executions(v1.ListExecutionsRequest(task_id=ex.task_id)).executions
    assert len(after) == len(before)
    c.close()


def test_a_retried_prompt_does_not_run_its_server_side_tools_again(world: World) -> None:
    world.model.script(
        Reply(tool_calls=[ToolCall("find_agents", {})]),
        *[ErrorReply(status=503, retry_after=0.01)]
        * 4,  # the client's own retries run out: the attempt fails
        Reply(text="Found them."),
    )
    before = len(world.model.chat_requests)
    c, agent, ex = run(
        world,
        """
name: retried tool use
main:
  - prompt: "Which agents exist?"
    unwrap: true
    retry: {max_attempts: 2, initial_interval: 0.05}
""",
        tools=[FIND_AGENTS],
    )
    done = wait_done(c, ex.id)
    assert done.status == v1.ExecutionStatus.SUCCEEDED, done.error
    assert done.output.to_dict() == "Found them."
    requests = world.model.chat_requests[before:]
    assert len(requests) == 6
    # Only the first request lacks the tool's answer: the step's retry (the 6th request) carried on
    # from the conversation as it was, the tool's result included, instead of starting over.
    with_answer = [r for r in requests if any(m["role"] == "tool" for m in r["messages"])]
    assert len(with_answer) == 5
    assert requests[-1]["messages"] == requests[1]["messages"]
    tool_messages = [m for m in requests[-1]["messages"] if m["role"] == "tool"]
    assert len(tool_messages) == 1 and agent.id in tool_messages[0]["content"]
    c.close()
