"""The Python SDK's facade against a real server: MintleafError (sync and async), AsyncClient, and
waiting for executions (`wait_for`) over sleeps, waits for input and broken streams."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

import mintleaf
from mintleaf import FieldMask, MintleafError, Struct, Value, v1
from mintleaf_server.llm.scripted import Reply
from support.errors import expect_error
from support.world import World

SLEEPY = """
name: Sleepy
main:
  - evaluate:
      doubled: $ inputs[0].n * 2
  - sleep:
      seconds: 0.3
  - evaluate:
      result: $ _.doubled + 1
  - sleep:
      seconds: 0.2
  - return:
      result: $ _.result
"""

ASK = """
name: Ask
main:
  - wait_for_input:
      info: {question: "$ 'Name for ' + _.thing + '?'"}
  - return:
      answer: $ _.name
"""

LONG = """
name: Long
main:
  - sleep:
      seconds: 30
"""


@pytest.fixture(scope="module")
def world(pg_url: str, redis_url: str, data_root: Path) -> Iterator[World]:
    w = World(pg_url, redis_url, data_root / "pysdk")
    yield w
    w.close()


@pytest.fixture
def client(world: World) -> Iterator[mintleaf.Client]:
    with world.server.client() as c:
        yield c


def start(client: mintleaf.Client, task_yaml: str, input: dict[str, Any]) -> v1.Execution:
    agent = client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="Runner")))
    task = client.tasks.create_task(v1.CreateTaskRequest(agent_id=agent.id, task=v1.Task(yaml=task_yaml)))
    return client.executions.create_execution(
        v1.CreateExecutionRequest(task_id=task.id, execution=v1.Execution(input=Struct.from_dict(input)))
    )


# -- sync client ----------------------------------------------------------------------------------


def test_sync_crud(client: mintleaf.Client) -> None:
    agent = client.agents.create_agent(
        v1.CreateAgentRequest(agent=v1.Agent(name="Ada", about="old", metadata=Struct.from_dict({"n": 1})))
    )
    updated = client.agents.update_agent(
        v1.UpdateAgentRequest(
            agent=v1.Agent(id=agent.id, about="new"), update_mask=FieldMask(paths=["about"])
        )
    )
    assert (updated.name, updated.about, updated.metadata.to_dict()) == ("Ada", "new", {"n": 1})
    listed = client.agents.list_agents(v1.ListAgentsRequest())
    assert [a.id for a in listed.agents] == [agent.id]
    client.agents.delete_agent(v1.DeleteAgentRequest(id=agent.id))
    with pytest.raises(MintleafError) as info:
        client.agents.get_agent(v1.GetAgentRequest(id=agent.id))
    err = info.value
    assert err.code() == grpc.StatusCode.NOT_FOUND and err.code_name == "NOT_FOUND"
    assert err.reason == "AGENT_NOT_FOUND", err
    assert (err.domain, err.metadata) == ("mintleaf.dev", {"id": agent.id, "resource": "agent"})
    assert agent.id in err.message


def test_bad_input_is_a_mintleaf_error_with_violations(client: mintleaf.Client) -> None:
    request = v1.CreateAgentRequest(agent=v1.Agent(name="ok", canonical_name="9bad"))
    with pytest.raises(MintleafError) as info:
        client.agents.create_agent(request)
    err = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.reason, "every error carries an ErrorInfo reason"
    assert err.violation("agent.canonical_name"), err.violations
    assert [v.field for v in err.violations] == ["agent.canonical_name"]
    assert err.violation("agent.name") is None
    assert str(err).startswith("INVALID_ARGUMENT: ") and err.reason in str(err)
    # Still a grpc.RpcError with the grpc.Call methods: code written against grpcio keeps working.
    assert isinstance(err, grpc.RpcError)
    assert err.details() == err.message
    assert any(k == "grpc-status-details-bin" for k, _ in err.trailing_metadata())
    found = expect_error(lambda: client.agents.create_agent(request), grpc.StatusCode.INVALID_ARGUMENT)
    assert found.reason == err.reason and set(found.violations) == {"agent.canonical_name"}


def test_bad_key_is_unauthenticated(world: World) -> None:
    with mintleaf.Client(world.server.target, api_key="ml_not-a-real-key") as c:
        with pytest.raises(MintleafError) as info:
            c.agents.list_agents(v1.ListAgentsRequest())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert info.value.reason == "API_KEY_INVALID"
        # Errors of a stream surface while iterating it, as MintleafError too.
        with pytest.raises(MintleafError) as streamed:
            list(c.executions.stream_transitions(v1.StreamTransitionsRequest(execution_id=_uuid())))
        assert streamed.value.reason == "API_KEY_INVALID"


def test_stream_error_is_a_mintleaf_error(client: mintleaf.Client) -> None:
    with pytest.raises(MintleafError) as info:
        for _ in client.executions.stream_transitions(v1.StreamTransitionsRequest(execution_id=_uuid())):
            pass
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and info.value.reason


def test_raw_channel_calls_keep_grpcio_errors(client: mintleaf.Client) -> None:
    call = client.channel.unary_unary("/mintleaf.v1.AgentService/GetAgent")
    with pytest.raises(grpc.RpcError) as info:
        call(bytes(v1.GetAgentRequest(id="xyz")))
    assert not isinstance(info.value, MintleafError)
    assert MintleafError.from_rpc_error(info.value).violation("id")


def test_wait_for_follows_sleeps_to_the_end(client: mintleaf.Client) -> None:
    ex = start(client, SLEEPY, {"n": 20})
    seen: list[v1.Transition] = []
    began = time.monotonic()
    done = client.wait_for(ex.id, on_transition=seen.append, timeout=30)
    assert time.monotonic() - began >= 0.5  # both sleeps happened while we waited
    assert done.status == v1.ExecutionStatus.SUCCEEDED, done.error
    assert done.output.to_dict() == {"result": 41}
    assert [t.sequence for t in seen] == list(range(1, len(seen) + 1))
    assert seen[0].type == v1.TransitionType.INIT and seen[-1].type == v1.TransitionType.FINISH
    assert done.transition_count == len(seen)
    # On an ended execution it replays and returns at once.
    again: list[int] = []
    assert client.wait_for(ex.id, on_transition=lambda t: again.append(t.sequence)) == done
    assert again == [t.sequence for t in seen]


def test_wait_for_until_awaiting_input_then_resume(client: mintleaf.Client) -> None:
    ex = start(client, ASK, {"thing": "cat"})
    waiting = client.wait_for(ex.id, until_awaiting_input=True, timeout=30)
    assert waiting.status == v1.ExecutionStatus.AWAITING_INPUT, waiting.error
    [wait] = waiting.waits
    assert wait.kind == "wait_for_input"
    assert wait.info.to_dict() == {"question": "Name for cat?"}
    client.executions.resume_execution(
        v1.ResumeExecutionRequest(id=ex.id, wait_id=wait.id, input=Value.from_dict({"name": "Tom"}))
    )
    types: list[v1.TransitionType] = []
    done = client.wait_for(ex.id, on_transition=lambda t: types.append(t.type), timeout=30)
    assert done.status == v1.ExecutionStatus.SUCCEEDED, done.error
    assert done.output.to_dict() == {"answer": "Tom"}
    assert v1.TransitionType.WAIT in types and v1.TransitionType.RESUME in types
    assert types[-1] == v1.TransitionType.FINISH


def test_wait_for_timeout(client: mintleaf.Client) -> None:
    ex = start(client, LONG, {})
    began = time.monotonic()
    with pytest.raises(MintleafError) as info:
        client.wait_for(ex.id, timeout=0.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - began < 5
    cancelled = client.executions.cancel_execution(v1.CancelExecutionRequest(id=ex.id))
    assert cancelled.id == ex.id
    assert client.wait_for(ex.id, timeout=30).status == v1.ExecutionStatus.CANCELLED


class BreakingStream:
    """The real ExecutionService stub, whose first stream stops after two transitions: cleanly
    (`error=None`) or with an error."""

    def __init__(self, real: Any, error: MintleafError | None) -> None:
        self.real, self.error, self.afters = real, error, []  # type: list[int]

    def stream_transitions(self, request: v1.StreamTransitionsRequest) -> Iterator[v1.Transition]:
        self.afters.append(request.after_sequence)
        for i, transition in enumerate(self.real.stream_transitions(request), 1):
            yield transition
            if len(self.afters) == 1 and i == 2:
                if self.error is not None:
                    raise self.error
                return

    def get_execution(self, request: v1.GetExecutionRequest) -> v1.Execution:
        return self.real.get_execution(request)


@pytest.mark.parametrize(
    "error",
    [None, MintleafError(grpc.StatusCode.UNAVAILABLE, "connection reset")],
    ids=["ends-early", "unavailable"],
)
def test_wait_for_resumes_after_the_last_sequence(
    client: mintleaf.Client, error: MintleafError | None
) -> None:
    ex = start(client, SLEEPY, {"n": 1})
    breaking = BreakingStream(client.executions, error)
    client.executions = breaking  # type: ignore[assignment]
    seen: list[int] = []
    done = client.wait_for(ex.id, on_transition=lambda t: seen.append(t.sequence))
    assert done.status == v1.ExecutionStatus.SUCCEEDED, done.error
    assert breaking.afters[:2] == [0, 2]
    assert seen == list(range(1, done.transition_count + 1))  # none lost, none twice


def test_wait_for_gives_up_on_other_errors(client: mintleaf.Client) -> None:
    ex = start(client, SLEEPY, {"n": 1})
    client.executions = BreakingStream(  # type: ignore[assignment]
        client.executions, MintleafError(grpc.StatusCode.PERMISSION_DENIED, "no")
    )
    with pytest.raises(MintleafError) as info:
        client.wait_for(ex.id)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED


# -- async client ---------------------------------------------------------------------------------


async def test_async_crud_errors_and_streaming(world: World) -> None:
    async with mintleaf.AsyncClient(world.server.target, api_key=world.server.new_key()) as c:
        agent = await c.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="Async Ada")))
        # Per-call metadata adds to the API key, never replaces it.
        got = await c.agents.get_agent(v1.GetAgentRequest(id=agent.id), metadata={"x-request-id": "r1"})
        assert got == agent
        assert isinstance(c.agents, v1.AgentServiceAsyncStub)

        with pytest.raises(MintleafError) as info:
            await c.agents.create_agent(
                v1.CreateAgentRequest(agent=v1.Agent(name="ok", canonical_name="9bad"))
            )
        err = info.value
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and err.reason
        assert err.violation("agent.canonical_name")
        assert any(k == "grpc-status-details-bin" for k, _ in err.trailing_metadata())

        task = await c.tasks.create_task(v1.CreateTaskRequest(agent_id=agent.id, task=v1.Task(yaml=SLEEPY)))
        ex = await c.executions.create_execution(
            v1.CreateExecutionRequest(
                task_id=task.id, execution=v1.Execution(input=Struct.from_dict({"n": 2}))
            )
        )
        streamed = [
            t.sequence
            async for t in c.executions.stream_transitions(v1.StreamTransitionsRequest(execution_id=ex.id))
        ]
        assert streamed == list(range(1, len(streamed) + 1)) and len(streamed) >= 5

        seen: list[int] = []

        async def record(t: v1.Transition) -> None:
            seen.append(t.sequence)

        done = await c.wait_for(ex.id, on_transition=record, timeout=30)
        assert done.status == v1.ExecutionStatus.SUCCEEDED and done.output.to_dict() == {"result": 5}
        assert seen == streamed

        with pytest.raises(MintleafError) as missing:
            async for _ in c.executions.stream_transitions(v1.StreamTransitionsRequest(execution_id=_uuid())):
                pass
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND and missing.value.reason


async def test_async_wait_for_input_resume_and_timeout(world: World) -> None:
    key = world.server.new_key()
    with world.server.client(key) as sync:
        ex = start(sync, ASK, {"thing": "dog"})
        long = start(sync, LONG, {})
    async with mintleaf.AsyncClient(world.server.target, api_key=world.server.new_key()) as other:
        with pytest.raises(MintleafError) as info:  # another developer does not see it
            await other.wait_for(ex.id, timeout=10)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
    c = mintleaf.AsyncClient(world.server.target, api_key=key)
    try:
        waiting = await c.wait_for(ex.id, until_awaiting_input=True, timeout=30)
        assert waiting.status == v1.ExecutionStatus.AWAITING_INPUT, waiting.error
        await c.executions.resume_execution(
            v1.ResumeExecutionRequest(
                id=ex.id, wait_id=waiting.waits[0].id, input=Value.from_dict({"name": "Rex"})
            )
        )
        done = await c.wait_for(ex.id, timeout=30)
        assert done.output.to_dict() == {"answer": "Rex"}

        with pytest.raises(MintleafError) as slow:
            await c.wait_for(long.id, timeout=0.5)
        assert slow.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await c.executions.cancel_execution(v1.CancelExecutionRequest(id=long.id))
    finally:
        await c.close()


async def test_async_bad_key_and_unreachable_server(world: World) -> None:
    async with mintleaf.AsyncClient(world.server.target, api_key="ml_not-a-real-key") as c:
        with pytest.raises(MintleafError) as info:
            await c.agents.list_agents(v1.ListAgentsRequest())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert info.value.reason == "API_KEY_INVALID"
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with mintleaf.AsyncClient(f"127.0.0.1:{port}", api_key="k") as c:
        with pytest.raises(MintleafError) as down:
            await c.agents.list_agents(v1.ListAgentsRequest())
        assert down.value.code() == grpc.StatusCode.UNAVAILABLE


def test_async_client_rejects_a_target_without_port() -> None:
    with pytest.raises(ValueError, match="host:port"):
        mintleaf.AsyncClient("localhost", api_key="k")


def test_model_replies_reach_the_sdk(client: mintleaf.Client, world: World) -> None:
    """Chat through the SDK, the seed's Step 4, with a scripted model reply."""
    world.model.script(Reply(text="Hello from the model"))
    agent = client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="Talker")))
    session = client.sessions.create_session(v1.CreateSessionRequest(session=v1.Session(agent=agent.id)))
    answer = client.chat.chat(
        v1.ChatRequest(session_id=session.id, messages=[v1.ChatMessage(role="user", content="hi")])
    )
    assert answer.choices[0].message.content == "Hello from the model"


def _uuid() -> str:
    return str(uuid.uuid4())
