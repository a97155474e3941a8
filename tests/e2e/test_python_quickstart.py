"""The seed README's Python quick start (Storytelling Agent, Story and Comic Creator task, chat),
written as a user writes it with the Mintleaf SDK, sync and async, against a real server whose
model and image API are the scripted model server. The comments name the seed's steps and the
Julep calls they replace; test_seed_quickstart.py covers the task's semantics, this file the SDK."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import mintleaf
from mintleaf import Struct, v1
from mintleaf_server.llm.scripted import Reply, ScriptedModelServer
from support.harness import ServerThread

# The seed's task, exactly as its Python quick start writes it (a plain, non-raw Python string).
task_yaml = """
name: Story and Comic Creator
description: Create a story based on an idea and generate a 4-panel comic strip illustrating the story.

main:
  # Step 1: Generate a story and outline into 4 panels
  - prompt:
      - role: system
        content: You are {{agent.name}}. {{agent.about}}
      - role: user
        content: >
          Based on the idea '{{_.idea}}', write a short story suitable for a 4-panel comic strip.
          Provide the story and a numbered list of 4 brief descriptions for each panel illustrating key moments in the story.
    unwrap: true

  # Step 2: Extract the panel descriptions and story
  - evaluate:
      story: _.split('1. ')[0].strip()
      panels: re.findall(r'\\d+\\.\\s*(.*?)(?=\\d+\\.\\s*|$)', _)

  # Step 3: Generate images for each panel using the image generator tool
  - foreach:
      in: _.panels
      do:
        tool: image_generator
        arguments:
          description: _

  # Step 4: Generate a catchy title for the story
  - prompt:
      - role: system
        content: You are {{agent.name}}. {{agent.about}}
      - role: user
        content: >
          Based on the story below, generate a catchy title.

          Story: {{outputs[1].story}}
    unwrap: true

  # Step 5: Return the story, the generated images, and the title
  - return:
      title: outputs[3]
      story: outputs[1].story
      comic_panels: "[output.image.url for output in outputs[2]]"
"""

ABOUT = (
    "You are a creative storytelling agent that can craft engaging stories"
    " and generate comic panels based on ideas."
)
STORY = (
    "Whiskers dreamed of the sky. 1. A cat watches birds 2. The cat builds wings"
    " 3. The cat jumps 4. The cat flies over the town"
)


class Stack:
    def __init__(self, server: ServerThread, model: ScriptedModelServer) -> None:
        self.server, self.model = server, model

    def script_story(self) -> None:
        # One line: the seed's regex (no MULTILINE/DOTALL) finds numbered panels within a line.
        self.model.script(Reply(text=STORY), Reply(text="The Flying Feline"))


@pytest.fixture(scope="module")
def stack(pg_url: str, redis_url: str, data_root: Path) -> Iterator[Stack]:
    model = ScriptedModelServer()
    with model.run_in_thread():
        server = ServerThread(
            pg_url,
            redis_url,
            data_root / "pyquickstart",
            models={
                "default": "gpt-4o",
                "endpoints": [{"match": "*", "base_url": model.base_url, "api_key": "t"}],
            },
            integrations={"dalle": {"base_url": model.base_url}},
        ).start()
        try:
            yield Stack(server, model)
        finally:
            server.stop()


def check_result(result: v1.Execution) -> None:
    assert result.status == v1.ExecutionStatus.SUCCEEDED, result.error
    out = result.output.to_dict()
    assert out["title"] == "The Flying Feline"
    assert out["story"] == "Whiskers dreamed of the sky."
    assert len(out["comic_panels"]) == 4
    assert all(url.startswith("http://127.0.0.1:") for url in out["comic_panels"])


def test_python_quick_start(stack: Stack) -> None:
    stack.script_story()
    api_key = stack.server.new_key()

    # Step 1: Create an Agent (Julep: client.agents.create(name=..., model=..., about=...)).
    client = mintleaf.Client(stack.server.target, api_key=api_key)
    agent = client.agents.create_agent(
        v1.CreateAgentRequest(agent=v1.Agent(name="Storytelling Agent", model="gpt-4o", about=ABOUT))
    )

    # 🛠️ Add an image generation tool (DALL·E) to the agent (Julep: client.agents.tools.create).
    client.tools.create_tool(
        v1.CreateToolRequest(
            agent_id=agent.id,
            tool=v1.Tool(
                name="image_generator",
                description="Use this tool to generate images based on descriptions.",
                integration=v1.IntegrationDef(
                    provider="dalle",
                    method="generate_image",
                    setup=Struct.from_dict({"api_key": "your_openai_api_key"}),
                ),
            ),
        )
    )

    # Step 2: Create a Task (Julep: client.tasks.create(agent_id=..., **yaml.safe_load(task_yaml))).
    # The YAML goes as is: the server parses it and reports errors by line.
    task = client.tasks.create_task(v1.CreateTaskRequest(agent_id=agent.id, task=v1.Task(yaml=task_yaml)))
    assert task.name == "Story and Comic Creator"

    # Step 3: Execute the Task (Julep: client.executions.create(task_id=..., input={...})).
    execution = client.executions.create_execution(
        v1.CreateExecutionRequest(
            task_id=task.id,
            execution=v1.Execution(input=Struct.from_dict({"idea": "A cat who learns to fly"})),
        )
    )

    # 🎉 Watch the transitions, then get the result: one call (Julep: transitions.stream + get).
    watched: list[str] = []
    result = client.wait_for(execution.id, on_transition=lambda t: watched.append(t.type.name), timeout=60)
    check_result(result)
    assert watched[0] == "INIT" and watched[-1] == "FINISH"
    assert watched.count("INIT_BRANCH") >= 4  # one branch per comic panel

    # Step 4: Chat with the Agent (Julep: client.sessions.create / client.sessions.chat).
    session = client.sessions.create_session(v1.CreateSessionRequest(session=v1.Session(agent=agent.id)))
    stack.model.script(Reply(text="Whiskers says hi!"), Reply(text="Meow."))
    replies = []
    for message in ["Tell me about Whiskers", "And then?"]:  # the seed reads these with input()
        response = client.chat.chat(
            v1.ChatRequest(session_id=session.id, messages=[v1.ChatMessage(role="user", content=message)])
        )
        replies.append(response.choices[0].message.content)
    assert replies == ["Whiskers says hi!", "Meow."]
    # The session kept the conversation: the second turn sent the first one to the model.
    sent = [m["content"] for m in stack.model.chat_requests[-1]["messages"]]
    assert "Tell me about Whiskers" in sent and "Whiskers says hi!" in sent
    client.close()


async def test_python_quick_start_async(stack: Stack) -> None:
    """The same flow with AsyncClient (the seed's `AsyncJulep`)."""
    stack.script_story()
    async with mintleaf.AsyncClient(stack.server.target, api_key=stack.server.new_key()) as client:
        agent = await client.agents.create_agent(
            v1.CreateAgentRequest(agent=v1.Agent(name="Storytelling Agent", model="gpt-4o", about=ABOUT))
        )
        await client.tools.create_tool(
            v1.CreateToolRequest(
                agent_id=agent.id,
                tool=v1.Tool(
                    name="image_generator",
                    description="Use this tool to generate images based on descriptions.",
                    integration=v1.IntegrationDef(
                        provider="dalle", method="generate_image", setup=Struct.from_dict({"api_key": "sk-x"})
                    ),
                ),
            )
        )
        task = await client.tasks.create_task(
            v1.CreateTaskRequest(agent_id=agent.id, task=v1.Task(yaml=task_yaml))
        )
        execution = await client.executions.create_execution(
            v1.CreateExecutionRequest(
                task_id=task.id,
                execution=v1.Execution(input=Struct.from_dict({"idea": "A cat who learns to fly"})),
            )
        )
        # The seed's loop over streamed transitions, as is; it ends when the execution ends.
        transitions = [
            t
            async for t in client.executions.stream_transitions(
                v1.StreamTransitionsRequest(execution_id=execution.id)
            )
        ]
        assert transitions[-1].type == v1.TransitionType.FINISH
        result = await client.executions.get_execution(v1.GetExecutionRequest(id=execution.id))
        check_result(result)

        session = await client.sessions.create_session(
            v1.CreateSessionRequest(session=v1.Session(agent=agent.id))
        )
        stack.model.script(Reply(text="Purr."))
        response = await client.chat.chat(
            v1.ChatRequest(session_id=session.id, messages=[v1.ChatMessage(role="user", content="Hello")])
        )
        assert response.choices[0].message.content == "Purr."
