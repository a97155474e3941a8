"""The Node SDK's own tests (sdk_node/test/*.test.ts, node:test) against a real server with the
scripted model: they run as a subprocess with MINTLEAF_TARGET and MINTLEAF_API_KEY set.

Needs `npm ci` in sdk_node (`make setup`); without it the test fails saying so."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mintleaf_server.llm.scripted import Reply
from support.harness import ServerThread
from support.tls import self_signed
from support.world import World

SDK = Path(__file__).resolve().parents[2] / "sdk_node"

# The answers sdk_node/test/model.test.ts expects, in the order it asks (its tests run in order).
MODEL_REPLIES = (
    Reply(text="Hello from the scripted model"),
    Reply(text="Whiskers flapped twice and soared over the rooftops."),
)


@pytest.fixture(scope="module")
def world(pg_url: str, redis_url: str, data_root: Path) -> Iterator[World]:
    w = World(pg_url, redis_url, data_root / "node-sdk")
    yield w
    w.close()


@pytest.fixture(scope="module")
def tls_server(
    pg_url: str, redis_url: str, data_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerThread]:
    """A second server (API only, same database) whose gRPC port speaks only TLS, for tls.test.ts."""
    cert, key = self_signed(tmp_path_factory.mktemp("node-tls"))
    srv = ServerThread(
        pg_url,
        redis_url,
        data_root / "node-sdk-tls",
        worker_enabled=False,
        tls_cert_file=str(cert),
        tls_key_file=str(key),
    )
    srv.start()
    yield srv
    srv.stop()


def test_node_sdk_against_a_real_server(world: World, tls_server: ServerThread) -> None:
    node = shutil.which("node")
    assert node, "node is not on PATH"
    assert (SDK / "node_modules" / "tsx").is_dir(), "run `npm ci` in sdk_node (make setup) first"
    files = sorted(str(p.relative_to(SDK)) for p in (SDK / "test").glob("*.test.ts"))
    assert files, "no Node tests found"
    world.model.script(*MODEL_REPLIES)
    env = {
        **os.environ,
        "MINTLEAF_TARGET": world.server.target,
        "MINTLEAF_API_KEY": world.server.new_key(),
        "NO_COLOR": "1",
        "MINTLEAF_TLS_TARGET": tls_server.target,
        "MINTLEAF_CA_FILE": tls_server.settings.tls_cert_file,
        "MINTLEAF_TLS_API_KEY": tls_server.new_key(),
    }
    # Its own process group, so a timeout ends the test runner's file processes as well.
    proc = subprocess.Popen(
        [node, "--import", "tsx", "--test", "--test-reporter=spec", *files],
        cwd=SDK,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=100)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the Node tests did not finish in 100 s:\n{output}")
    assert proc.returncode == 0, f"the Node tests failed (exit {proc.returncode}):\n{output}"
    assert "fail 0" in output, output
    assert world.model.pending == 0, f"scripted replies left unused: {world.model.pending}\n{output}"
