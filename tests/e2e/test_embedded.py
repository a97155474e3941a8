"""The real `mintleaf-server` CLI as a subprocess in embedded mode (no DATABASE_URL or REDIS_URL):
first start creates a key and says where it is, data survives a restart, SIGTERM drains and exits
0, `keys create|list|revoke` manage keys, and a bad setting exits 2 naming it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

import mintleaf
from mintleaf import v1
from support.errors import expect_error

pytestmark = pytest.mark.slow

START_TIMEOUT = 30.0


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def cli_env(**extra: str) -> dict[str, str]:
    """The test's environment without anything that would point the server elsewhere."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MINTLEAF_") and k not in ("DATABASE_URL", "REDIS_URL")
    }
    env["MINTLEAF_SHUTDOWN_GRACE_SECONDS"] = "2"
    env.update(extra)
    return env


def cli(
    data_dir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mintleaf_server.cli", "--data-dir", str(data_dir), *args],
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class ServerProcess:
    """`mintleaf-server serve` on a free loopback port, its output in a file."""

    def __init__(self, data_dir: Path, work: Path, name: str) -> None:
        self.out_path = work / f"{name}.out"
        self.port_file = work / f"{name}.port"
        self.out = self.out_path.open("w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mintleaf_server.cli",
                "--data-dir",
                str(data_dir),
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--port-file",
                str(self.port_file),
            ],
            env=cli_env(),
            stdout=self.out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.port = int(wait_until(self._port, START_TIMEOUT, f"the port file of {name}"))

    def _port(self) -> str | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.output()}")
        text = self.port_file.read_text().strip() if self.port_file.exists() else ""
        return text if text.isdigit() else None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        if not self.out.closed:
            self.out.flush()
        return self.out_path.read_text()

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=20)
        self.out.close()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.out.close()


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[[Path, str], ServerProcess]]:
    started: list[ServerProcess] = []

    def start(data_dir: Path, name: str) -> ServerProcess:
        started.append(ServerProcess(data_dir, tmp_path, name))
        return started[-1]

    yield start
    for p in started:  # only the processes this test started, and only if still running
        p.kill()


def test_first_start_key_and_restart(tmp_path, spawn):
    data = tmp_path / "data"
    first = spawn(data, "first")
    match = re.search(r"its API key is in (\S+)", first.output())
    assert match, first.output()
    key_file = Path(match.group(1))
    assert key_file == data / "api_key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    with mintleaf.Client(first.target, api_key=key) as client:
        agent = client.agents.create_agent(
            v1.CreateAgentRequest(agent=v1.Agent(name="Persistent", about="survives"))
        )
        user = client.users.create_user(v1.CreateUserRequest(user=v1.User(name="Also persistent")))
    assert first.terminate() == 0, first.output()
    assert "draining" in first.output()

    second = spawn(data, "second")
    assert "API key is in" not in second.output()  # the key exists already: none is made
    with mintleaf.Client(second.target, api_key=key) as client:
        got = client.agents.get_agent(v1.GetAgentRequest(id=agent.id))
        assert (got.name, got.about, got.created_at) == ("Persistent", "survives", agent.created_at)
        assert client.users.get_user(v1.GetUserRequest(id=user.id)).name == "Also persistent"
    assert second.terminate() == 0, second.output()


def _keys(data: Path, *args: str) -> str:
    done = cli(data, "keys", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _key_states(listing: str) -> dict[str, str]:
    states = {}
    for line in listing.splitlines():
        parts = line.split()
        if parts:
            states[parts[0]] = "revoked" if "revoked" in parts else "active" if "active" in parts else "?"
    return states


def test_keys_create_and_list_beside_a_running_server(tmp_path, spawn):
    data = tmp_path / "data"
    server = spawn(data, "server")
    local_key = (data / "api_key").read_text().strip()
    # The CLI and the server share the data directory's PostgreSQL and Redis.
    out = _keys(data, "create", "--name", "ci")
    key_id = re.search(r"key id:\s+(\S+)", out).group(1)
    key = re.search(r"api key:\s+(\S+)", out).group(1)
    listing = _keys(data, "list")
    assert key not in listing  # only a prefix is ever shown again
    states = _key_states(listing)
    assert states[key_id] == "active" and len(states) == 2  # the local key and the new one
    with mintleaf.Client(server.target, api_key=key) as client:
        agent = client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="ci's")))
    with mintleaf.Client(server.target, api_key=local_key) as client:  # another developer
        expect_error(
            lambda: client.agents.get_agent(v1.GetAgentRequest(id=agent.id)), grpc.StatusCode.NOT_FOUND
        )
    assert server.terminate() == 0, server.output()


def test_revoked_key_is_refused_by_a_fresh_server(tmp_path, spawn):
    data = tmp_path / "data"
    out = _keys(data, "create")  # on a data directory no server has used yet
    key_id = re.search(r"key id:\s+(\S+)", out).group(1)
    key = re.search(r"api key:\s+(\S+)", out).group(1)
    assert f"revoked {key_id}" in _keys(data, "revoke", key_id)
    again = cli(data, "keys", "revoke", key_id)
    assert again.returncode == 1 and "no active key" in again.stderr
    fresh = spawn(data, "fresh")
    with mintleaf.Client(fresh.target, api_key=key) as client:
        expect_error(
            lambda: client.agents.list_agents(v1.ListAgentsRequest()),
            grpc.StatusCode.UNAUTHENTICATED,
            reason="API_KEY_INVALID",
        )
    assert fresh.terminate() == 0, fresh.output()


@pytest.mark.parametrize(
    ("env", "config", "named"),
    [
        ({"MINTLEAF_WORKER": "maybe"}, None, "MINTLEAF_WORKER"),
        ({"MINTLEAF_LISTEN": "nowhere"}, None, "listen"),
        ({}, "[server]\nlisten = '127.0.0.1:0'\nworkers = 3\n", "server.workers"),
        ({}, "[limits]\nmax_page_size = 0\n", "limits.max_page_size"),
        ({}, "[serve]\nlisten = '127.0.0.1:0'\n", "serve"),
    ],
)
def test_bad_setting_exits_2_naming_it(tmp_path, env, config, named):
    args: list[str] = []
    if config is not None:
        path = tmp_path / "bad.toml"
        path.write_text(config)
        args = ["--config", str(path)]
    done = subprocess.run(
        [sys.executable, "-m", "mintleaf_server.cli", *args, "--data-dir", str(tmp_path / "data"), "serve"],
        env=cli_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "configuration error" in done.stderr and f"'{named}'" in done.stderr, done.stderr
    assert not (tmp_path / "data" / "pg").exists()  # it stopped before starting anything
