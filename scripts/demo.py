"""The README's main command: start the embedded Mintleaf server and use it through the generated
Python client — create an agent, a user and a task, and print them.

Everything runs locally: the server starts a private PostgreSQL (with pgvector) and Redis in
./.data, listens on a free loopback port, and is stopped (gracefully) at the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import mintleaf
from mintleaf import Struct, v1

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("MINTLEAF_DEMO_DATA_DIR", ROOT / ".data"))

TASK_YAML = """
name: Greeter
description: Greets someone, then counts the letters of their name
input_schema:
  type: object
  properties:
    name: {type: string}
  required: [name]
main:
  - evaluate:
      greeting: "$ 'Hello, ' + inputs[0].name + '!'"
      letters: "$ len(inputs[0].name)"
  - log: "Greeted {{ inputs[0].name }}"
  - return:
      message: "$ _.greeting"
      letters: "$ _.letters"
"""


def start_server() -> tuple[subprocess.Popen[bytes], str]:
    port_file = Path(tempfile.mkdtemp()) / "port"
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
    )
    deadline = time.monotonic() + 60
    while not port_file.exists():
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            proc.terminate()
            raise SystemExit("the server did not start within 60 s")
        time.sleep(0.05)
    target = f"127.0.0.1:{port_file.read_text().strip()}"
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        health.Check(health_pb2.HealthCheckRequest(), timeout=30, wait_for_ready=True)
    return proc, target


def show(title: str, message: object) -> None:
    data = message.to_dict() if hasattr(message, "to_dict") else message
    print(f"\n== {title}\n{json.dumps(data, indent=2, default=str)}")


def main() -> int:
    proc, target = start_server()
    try:
        key = (DATA / "api_key").read_text().strip()
        with mintleaf.Client(target, api_key=key) as client:
            agent = client.agents.create_agent(
                v1.CreateAgentRequest(
                    agent=v1.Agent(
                        name="Demo Agent",
                        about="An agent created by the Mintleaf demo",
                        model="gpt-4o-mini",
                        instructions=["Be concise."],
                        metadata=Struct.from_dict({"created_by": "demo"}),
                    )
                )
            )
            show("agent", agent)
            user = client.users.create_user(
                v1.CreateUserRequest(user=v1.User(name="Ada", about="A curious user"))
            )
            show("user", user)
            task = client.tasks.create_task(
                v1.CreateTaskRequest(agent_id=agent.id, task=v1.Task(yaml=TASK_YAML))
            )
            show(
                "task (how each string was read is under 'explain')",
                {
                    "id": task.id,
                    "name": task.name,
                    "version": task.version,
                    "definition": task.definition.to_dict(),
                    "explain": task.explain.to_dict(),
                },
            )
            print(f"\nserver: {target}   data: {DATA}   API key file: {DATA / 'api_key'}")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
