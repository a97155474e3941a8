"""TLS on the gRPC port (tls_cert_file / tls_key_file): a client trusting the certificate is
served, a plaintext client is not, and the settings are validated."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

import mintleaf
from mintleaf import v1
from mintleaf_server.config import ConfigError, load_settings
from support.harness import ServerThread
from support.tls import self_signed


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl, valid one day)."""
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(
    pg_url: str, redis_url: str, data_root: Path, certificate: tuple[Path, Path]
) -> Iterator[ServerThread]:
    cert, key = certificate
    srv = ServerThread(
        pg_url,
        redis_url,
        data_root / "tls",
        worker_enabled=False,
        tls_cert_file=str(cert),
        tls_key_file=str(key),
    )
    srv.start()
    yield srv
    srv.stop()


def test_a_client_trusting_the_certificate_is_served(
    tls_server: ServerThread, certificate: tuple[Path, Path]
) -> None:
    with mintleaf.Client(
        tls_server.target, tls_server.new_key(), root_certificates=certificate[0].read_bytes()
    ) as c:
        agent = c.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="over tls")))
        assert c.agents.get_agent(v1.GetAgentRequest(id=agent.id)).name == "over tls"


def test_plaintext_and_untrusting_clients_are_not(tls_server: ServerThread) -> None:
    key = tls_server.new_key()
    with mintleaf.Client(tls_server.target, key) as plain, pytest.raises(grpc.RpcError) as info:
        plain.agents.list_agents(v1.ListAgentsRequest())
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with (
        mintleaf.Client(tls_server.target, key, tls=True) as system_roots,
        pytest.raises(grpc.RpcError) as info,
    ):
        system_roots.agents.list_agents(v1.ListAgentsRequest())  # self-signed: not trusted
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_tls_settings_are_validated(certificate: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = certificate
    with pytest.raises(ConfigError, match="go together"):
        load_settings(env={"MINTLEAF_TLS_CERT_FILE": str(cert)})
    with pytest.raises(ConfigError, match="not a readable file"):
        load_settings(
            env={"MINTLEAF_TLS_CERT_FILE": str(cert), "MINTLEAF_TLS_KEY_FILE": str(tmp_path / "nope.pem")}
        )
    ok = load_settings(env={"MINTLEAF_TLS_CERT_FILE": str(cert), "MINTLEAF_TLS_KEY_FILE": str(key)})
    assert ok.tls_cert_file == str(cert)


def test_the_command_line_speaks_tls_with_a_ca_file(
    tls_server: ServerThread, certificate: tuple[Path, Path]
) -> None:
    base = [
        sys.executable,
        "-m",
        "mintleaf.cli",
        "--target",
        tls_server.target,
        "--api-key",
        tls_server.new_key(),
    ]
    ok = subprocess.run(
        [*base, "--ca-file", str(certificate[0]), "agents", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    plain = subprocess.run([*base, "agents", "list"], capture_output=True, text=True, timeout=60)
    assert plain.returncode == 1 and "cannot reach" in plain.stderr, plain.stderr
    missing = subprocess.run(
        [*base, "--ca-file", "/nonexistent/ca.pem", "agents", "list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and "CA file" in missing.stderr, missing.stderr
