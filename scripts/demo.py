"""The README's main command: the seed's Python quick start, end to end, on a local Mintleaf.

1. Starts `mintleaf-server serve` with an embedded PostgreSQL (pgvector) and Redis in ./.data.
2. Creates the Storytelling Agent and its `image_generator` tool (dalle), the Story and Comic
   Creator task, and an execution for the idea "A cat who learns to fly".
3. Streams the execution's transitions to the terminal as they happen, then prints the result.

With OPENAI_API_KEY set, the agent talks to OpenAI (gpt-4o and the images API). Without it, the
demo starts Mintleaf's scripted model server on loopback and says so: its replies are canned, not
a real model's — the point is to watch the whole machinery run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import mintleaf
from mintleaf import Struct, v1

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("MINTLEAF_DEMO_DATA_DIR", ROOT / ".data"))

# The seed's task, as written in its Python quick start.
TASK_YAML = r"""
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
      panels: re.findall(r'\d+\.\s*(.*?)(?=\d+\.\s*|$)', _)

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

# One line: the seed's panel regex (no MULTILINE/DOTALL) finds numbered items within a line.
SCRIPTED_STORY = (
    "Whiskers the cat spent every evening on the rooftop, watching swallows dive through the sunset. "
    "1. Whiskers stares up at a flock of birds from the rooftop "
    "2. Whiskers builds a pair of wings from paper and feathers "
    "3. A gust of wind lifts Whiskers off the roof "
    "4. Whiskers glides over the town as the birds cheer"
)


_KEEP: list[object] = []


def start_scripted_model() -> object:
    from mintleaf_server.llm.scripted import Reply, ScriptedModelServer

    server = ScriptedModelServer()
    runner = server.run_in_thread()
    runner.__enter__()
    _KEEP.append(runner)  # the context manager stops the server when it is collected
    server.script(Reply(text=SCRIPTED_STORY), Reply(text="The Cat Who Touched the Sky"))
    return server


def write_config(model_base_url: str | None, api_key: str | None) -> Path:
    path = Path(tempfile.mkdtemp()) / "mintleaf.toml"
    if model_base_url:
        models = f'[models]\ndefault = "gpt-4o"\n[[models.endpoints]]\nmatch = "*"\nbase_url = "{model_base_url}"\napi_key = "scripted"\n'
        integrations = f'[integrations.dalle]\nbase_url = "{model_base_url}"\n'
    else:
        models = '[models]\ndefault = "gpt-4o"\n[[models.endpoints]]\nmatch = "*"\nbase_url = "https://api.openai.com/v1"\napi_key_env = "OPENAI_API_KEY"\n'
        integrations = ""
    path.write_text(models + integrations)
    return path


def start_server(config: Path) -> tuple[subprocess.Popen[bytes], str]:
    port_file = Path(tempfile.mkdtemp()) / "port"
    env = {**os.environ, "MINTLEAF_CONFIG": str(config)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mintleaf_server.cli",
            "--data-dir",
            str(DATA),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--port-file",
            str(port_file),
        ],
        env=env,
    )
    deadline = time.monotonic() + 90
    while not port_file.exists():
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            proc.terminate()
            raise SystemExit("the server did not start within 90 s")
        time.sleep(0.05)
    target = f"127.0.0.1:{port_file.read_text().strip()}"
    with grpc.insecure_channel(target) as channel:
        health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=30, wait_for_ready=True
        )
    return proc, target


def short(value: object, width: int = 100) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return textwrap.shorten(text.replace("\n", " "), width=width, placeholder=" …")


def main() -> int:
    api_key = os.environ.get("OPENAI_API_KEY")
    scripted = None
    if api_key:
        print("Using OpenAI (OPENAI_API_KEY is set): gpt-4o for text, the images API for panels.")
    else:
        scripted = start_scripted_model()
        print("No OPENAI_API_KEY set: using Mintleaf's SCRIPTED model server on loopback.")
        print("Its replies are canned (not a real model); set OPENAI_API_KEY to use a real one.\n")
    config = write_config(getattr(scripted, "base_url", None), api_key)
    proc, target = start_server(config)
    try:
        key = (DATA / "api_key").read_text().strip()
        with mintleaf.Client(target, api_key=key) as client:
            # Step 1 of the quick start: the agent and its image tool.
            agent = client.agents.create_agent(
                v1.CreateAgentRequest(
                    agent=v1.Agent(
                        name="Storytelling Agent",
                        model="gpt-4o",
                        about="You are a creative storytelling agent that can craft engaging stories and generate comic panels based on ideas.",
                    )
                )
            )
            client.tools.create_tool(
                v1.CreateToolRequest(
                    agent_id=agent.id,
                    tool=v1.Tool(
                        name="image_generator",
                        description="Use this tool to generate images based on descriptions.",
                        integration=v1.IntegrationDef(
                            provider="dalle",
                            method="generate_image",
                            setup=Struct.from_dict({"api_key": api_key or "scripted"}),
                        ),
                    ),
                )
            )
            print(f"agent  {agent.id}  {agent.name}")
            # Step 2: the task.
            task = client.tasks.create_task(
                v1.CreateTaskRequest(agent_id=agent.id, task=v1.Task(yaml=TASK_YAML))
            )
            print(f"task   {task.id}  {task.name} (version {task.version})")
            # Step 3: execute it and watch the transitions stream in.
            execution = client.executions.create_execution(
                v1.CreateExecutionRequest(
                    task_id=task.id,
                    execution=v1.Execution(input=Struct.from_dict({"idea": "A cat who learns to fly"})),
                )
            )
            print(f"execution {execution.id}\n")
            for t in client.executions.stream_transitions(
                v1.StreamTransitionsRequest(execution_id=execution.id)
            ):
                where = t.current.path if t.current else ""
                output = t.output.to_dict() if t.output is not None else None
                print(
                    f"  #{t.sequence:<3} {t.type.name.lower():<14} {t.step_type:<10} {where:<28} {short(output, 70)}"
                )
            final = client.executions.get_execution(v1.GetExecutionRequest(id=execution.id))
            print(f"\nstatus: {final.status.name.lower()}")
            if final.status == v1.ExecutionStatus.SUCCEEDED:
                print(json.dumps(final.output.to_dict(), indent=2, ensure_ascii=False))
            else:
                print(f"error: {final.error}")
                return 1
            print(f"\nserver {target}  data {DATA}  API key in {DATA / 'api_key'}")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        for runner in _KEEP:
            runner.__exit__(None, None, None)  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
