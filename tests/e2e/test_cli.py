"""The `mintleaf` command-line client, run as a subprocess against a real server and the scripted model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mintleaf
from mintleaf import v1
from mintleaf_server.llm.scripted import Reply
from support.world import World

TIMEOUT = 60

COUNT = """\
name: count
input_schema:
  type: object
  required: [n]
main:
  - evaluate:
      doubled: $ inputs[0].n * 2
  - sleep:
      seconds: 1.5
  - evaluate:
      result: $ _.doubled + 1
  - return:
      result: $ _.result
"""

FAILING = """\
name: failing
main:
  - evaluate: {reason: too late}
  - error: "Cannot go on: {{ _.reason }}"
"""

ASK = """\
name: ask
main:
  - wait_for_input:
      info: {question: "your name?"}
  - return:
      greeting: $ 'hello ' + _.name
"""


@pytest.fixture(scope="module")
def world(pg_url: str, redis_url: str, data_root: Path) -> Iterator[World]:
    w = World(pg_url, redis_url, data_root / "cli")
    yield w
    w.close()


@pytest.fixture
def key(world: World) -> str:
    """A fresh developer per test (tests are isolated by tenancy)."""
    return world.server.new_key()


@pytest.fixture
def client(world: World, key: str) -> Iterator[mintleaf.Client]:
    with world.server.client(key) as c:
        yield c


def cli_env(world: World, key: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MINTLEAF_")}
    env["MINTLEAF_TARGET"] = world.server.target
    if key is not None:
        env["MINTLEAF_API_KEY"] = key
    env.setdefault("MINTLEAF_DATA_DIR", "/nonexistent-mintleaf-data")  # never a real user's key file
    env.update(extra)
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mintleaf.cli", *args]


def cli(
    world: World, key: str | None, *args: str, stdin: str = "", **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(*args),
        env=cli_env(world, key, **env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def create_task(world: World, key: str, tmp_path: Path, task_yaml: str) -> tuple[str, str]:
    agent = ok_json(cli(world, key, "--json", "agents", "create", "--name", "Runner"))
    path = tmp_path / "task.yaml"
    path.write_text(task_yaml)
    task = ok_json(cli(world, key, "tasks", "create", "--agent", agent["id"], "--file", str(path), "--json"))
    return agent["id"], task["id"]


def test_agents_create_list_get_delete(world: World, key: str, client: mintleaf.Client) -> None:
    made = cli(world, key, "agents", "create", "--name", "Ada", "--about", "a mathematician",
               "--instructions", "be brief", "be exact", "--model", "gpt-4o-mini")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("created agent ") and "(Ada)" in made.stdout
    ada_id = made.stdout.split()[2]
    agent = client.agents.get_agent(v1.GetAgentRequest(id=ada_id))
    assert (agent.about, agent.instructions, agent.model) == (
        "a mathematician",
        ["be brief", "be exact"],
        "gpt-4o-mini",
    )
    bob = ok_json(cli(world, key, "--json", "agents", "create", "--name", "Bob"))
    assert bob["name"] == "Bob" and "createdAt" in bob  # canonical JSON: camelCase

    listed = cli(world, key, "agents", "list")
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "MODEL", "CREATED"]
    assert [r.split()[:2] for r in rows] == [[ada_id, "Ada"], [bob["id"], "Bob"]]
    as_json = ok_json(cli(world, key, "agents", "list", "--json"))  # global option after the command
    assert [a["name"] for a in as_json["agents"]] == ["Ada", "Bob"]

    shown = cli(world, key, "agents", "get", ada_id)
    assert shown.returncode == 0, shown.stderr
    assert f"id: {ada_id}" in shown.stdout.splitlines()
    assert "about: a mathematician" in shown.stdout.splitlines()
    assert 'instructions: ["be brief", "be exact"]' in shown.stdout.splitlines()
    assert ok_json(cli(world, key, "--json", "agents", "get", bob["id"]))["id"] == bob["id"]

    gone = cli(world, key, "agents", "delete", bob["id"])
    assert (gone.returncode, gone.stdout.strip()) == (0, f"deleted agent {bob['id']}")
    missing = cli(world, key, "agents", "get", bob["id"])
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.startswith("error: NOT_FOUND ") and "[AGENT_NOT_FOUND]" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_run_follows_the_execution_live_to_its_output(
    world: World, key: str, client: mintleaf.Client, tmp_path: Path
) -> None:
    agent_id, task_id = create_task(world, key, tmp_path, COUNT)
    listed = cli(world, key, "tasks", "list", "--agent", agent_id)
    assert listed.returncode == 0 and task_id in listed.stdout and "count" in listed.stdout
    assert "name: count" in cli(world, key, "tasks", "get", task_id).stdout.splitlines()

    proc = subprocess.Popen(
        command("run", task_id, "--input", '{"n": 20}'),
        env=cli_env(world, key),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert first.startswith("following execution ")
        execution_id = first.split()[2]
        lines: list[str] = []
        while not any("evaluate" in line for line in lines):
            lines.append(proc.stderr.readline())
            assert lines[-1], "stream closed before the first step"
        # Live: the first step's line is out while the execution still sleeps in its second step.
        now = client.executions.get_execution(v1.GetExecutionRequest(id=execution_id))
        assert now.status not in mintleaf.TERMINAL
        assert lines[0].split() == ["1", "INIT", "main[0]", '{"n":', "20}"], lines
        assert lines[-1].split()[:4] == ["2", "STEP", "main[0]", "evaluate"], lines
        assert '{"doubled": 40}' in "".join(lines)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
    assert proc.returncode == 0, err
    assert json.loads(out) == {"result": 41}
    types = [line.split()[1] for line in [*lines, *err.splitlines()] if line.strip()[:1].isdigit()]
    assert types[0] == "INIT" and types[-1] == "FINISH" and types.count("STEP") >= 3
    assert '{"result": 41}' in err

    # --json: one transition per line, the execution last.
    result = cli(world, key, "--json", "run", task_id, "--input", '{"n": 1}')
    assert result.returncode == 0, result.stderr
    *transitions, last = [json.loads(line) for line in result.stdout.splitlines()]
    assert (
        transitions[0]["type"] == "TRANSITION_TYPE_INIT"
        and transitions[-1]["type"] == "TRANSITION_TYPE_FINISH"
    )
    assert [t["sequence"] for t in transitions] == [str(i) for i in range(1, len(transitions) + 1)]
    assert (last["status"], last["output"]) == ("EXECUTION_STATUS_SUCCEEDED", {"result": 3})

    executions = cli(world, key, "executions", "list", "--task", task_id, "--status", "succeeded")
    assert executions.returncode == 0 and len(executions.stdout.splitlines()) == 3  # header + 2
    assert cli(world, key, "executions", "list", "--status", "failed").stdout.splitlines()[1:] == []


def test_a_failing_task_exits_1_with_the_error(world: World, key: str, tmp_path: Path) -> None:
    _, task_id = create_task(world, key, tmp_path, FAILING)
    result = cli(world, key, "run", task_id)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "error: Cannot go on: too late" in result.stderr  # on the ERROR transition line
    assert "FAILED: Cannot go on: too late" in result.stderr.splitlines()[-1]
    error_lines = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(error_lines) == 1 and "main[1]" in error_lines[0]


def test_wait_for_input_detach_resume_and_logs(world: World, key: str, tmp_path: Path) -> None:
    _, task_id = create_task(world, key, tmp_path, ASK)
    started = ok_json(cli(world, key, "run", task_id, "--detach", "--json"))
    execution_id = started["id"]
    deadline = time.monotonic() + TIMEOUT
    while (shown := ok_json(cli(world, key, "--json", "executions", "get", execution_id)))["status"] != (
        "EXECUTION_STATUS_AWAITING_INPUT"
    ):
        assert time.monotonic() < deadline, shown
    assert shown["waits"][0]["info"] == {"question": "your name?"}

    human = cli(world, key, "executions", "get", execution_id)
    assert "status: AWAITING_INPUT" in human.stdout.splitlines()

    # Following a waiting execution says so, with the command that resumes it (exit 3).
    waiting = cli(world, key, "run", task_id)
    assert waiting.returncode == 3, waiting.stderr
    assert "is waiting for input" in waiting.stderr and '{"question": "your name?"}' in waiting.stderr
    assert "mintleaf executions resume " in waiting.stderr

    resumed = cli(world, key, "executions", "resume", execution_id, "--input", '{"name": "Tom"}')
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith(f"resumed execution {execution_id}")

    logs = cli(world, key, "executions", "logs", execution_id, "--follow")  # until it ends
    assert logs.returncode == 0, logs.stderr
    assert [line.split()[1] for line in logs.stdout.splitlines()] == [
        "INIT",
        "WAIT",
        "RESUME",
        "STEP",
        "FINISH",
    ]
    assert '{"greeting": "hello Tom"}' in logs.stdout
    assert logs.stderr.strip() == f"execution {execution_id} SUCCEEDED"
    again = cli(world, key, "--json", "executions", "logs", execution_id)
    assert [json.loads(line)["sequence"] for line in again.stdout.splitlines()] == ["1", "2", "3", "4", "5"]

    # --interactive answers from stdin and follows on to the output (no answer: exit 3 as above).
    unanswered = cli(world, key, "run", task_id, "--interactive", stdin="")
    assert unanswered.returncode == 3 and "no answer read; resume it with" in unanswered.stderr
    answered = cli(world, key, "run", task_id, "--interactive", stdin='{"name": "Ann"}\n')
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout) == {"greeting": "hello Ann"}


def test_chat_turn_with_the_scripted_model(world: World, key: str) -> None:
    agent = ok_json(cli(world, key, "--json", "agents", "create", "--name", "Chatty"))
    session = cli(world, key, "sessions", "create", "--agent", agent["id"])
    assert session.returncode == 0, session.stderr
    session_id = session.stdout.split()[-1]
    world.model.script(Reply(text="Owls are nocturnal birds of prey."))
    reply = cli(world, key, "chat", session_id, "Tell me about owls")
    assert (reply.returncode, reply.stdout) == (0, "Owls are nocturnal birds of prey.\n"), reply.stderr
    assert world.model.chat_requests[-1]["messages"][-1] == {"role": "user", "content": "Tell me about owls"}
    world.model.script(Reply(text="Yes."))
    as_json = ok_json(cli(world, key, "--json", "chat", session_id, "Really?"))
    assert as_json["choices"][0]["message"]["content"] == "Yes."


def test_bad_input_shows_the_field_violation(world: World, key: str, tmp_path: Path) -> None:
    agent_id, task_id = create_task(world, key, tmp_path, COUNT)
    result = cli(world, key, "run", task_id, "--input", '{"m": 1}')
    assert result.returncode == 1
    first, *violations = result.stderr.splitlines()
    assert first.startswith("error: INVALID_ARGUMENT ")
    assert violations and violations[0].startswith("  execution.input"), result.stderr
    assert "Traceback" not in result.stderr

    bad_task = tmp_path / "bad.yaml"
    bad_task.write_text("name: bad\nmain:\n  - evaluate: 3\n")
    made = cli(world, key, "tasks", "create", "--agent", agent_id, "--file", str(bad_task))
    assert made.returncode == 1 and "  task.definition.main[0].evaluate: must be an object" in made.stderr

    usage = cli(world, key, "run", task_id, "--input", "{not json")
    assert usage.returncode == 2 and "the input is not valid JSON" in usage.stderr
    assert cli(world, key, "executions", "list", "--status", "sleeping").returncode == 2


def test_a_wrong_api_key_and_the_key_file(world: World, key: str, tmp_path: Path) -> None:
    wrong = cli(world, "ml_wrong", "agents", "list")
    assert wrong.returncode == 1 and wrong.stdout == ""
    assert wrong.stderr.startswith("error: UNAUTHENTICATED ") and "[API_KEY_INVALID]" in wrong.stderr

    # No --api-key nor MINTLEAF_API_KEY: the key file in the server's data dir.
    data = tmp_path / "data"
    missing = cli(world, None, "agents", "list", MINTLEAF_DATA_DIR=str(data))
    assert missing.returncode == 2 and str(data / "api_key") in missing.stderr
    data.mkdir()
    (data / "api_key").write_text(key + "\n")
    made = cli(world, None, "--json", "agents", "create", "--name", "FromFile", MINTLEAF_DATA_DIR=str(data))
    assert ok_json(made)["name"] == "FromFile"
    listed = ok_json(cli(world, key, "--json", "agents", "list"))  # the same developer
    assert [a["name"] for a in listed["agents"]] == ["FromFile"]


def test_an_unreachable_server(world: World, key: str) -> None:
    with socket.socket() as s:  # a loopback port that nothing listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    target = f"127.0.0.1:{port}"
    result = cli(world, key, "--target", target, "agents", "list")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"error: cannot reach the server at {target}")
    assert "Traceback" not in result.stderr


def test_ctrl_c_stops_following_without_cancelling(
    world: World, key: str, client: mintleaf.Client, tmp_path: Path
) -> None:
    _, task_id = create_task(world, key, tmp_path, "name: long\nmain:\n  - sleep: {seconds: 30}\n")
    proc = subprocess.Popen(
        command("run", task_id),
        env=cli_env(world, key),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        execution_id = proc.stderr.readline().split()[2]
        assert proc.stderr.readline().split()[1] == "INIT"  # following, blocked on the stream
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        proc.kill()
        proc.wait(TIMEOUT)
    assert proc.returncode == 130 and out == ""
    assert "was NOT cancelled" in err and f"mintleaf executions cancel {execution_id}" in err
    assert "Traceback" not in err
    still = client.executions.get_execution(v1.GetExecutionRequest(id=execution_id))
    assert still.status not in mintleaf.TERMINAL

    cancelled = cli(world, key, "executions", "cancel", execution_id, "--reason", "enough")
    assert cancelled.returncode == 0, cancelled.stderr
    assert execution_id in cancelled.stdout and "CANCEL" in cancelled.stdout.upper()
    followed = cli(world, key, "executions", "logs", execution_id, "--follow")  # until it has ended
    assert followed.stdout.splitlines()[-1].split()[1] == "CANCELLED"
    assert followed.stderr.strip() == f"execution {execution_id} CANCELLED: enough"
