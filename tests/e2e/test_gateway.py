"""The REST bridge end to end: the real gateway binary (gateway/cmd/gateway, built by
scripts/build_gateway.sh) in front of a real server (gRPC on loopback, real PostgreSQL and Redis),
driven with plain HTTP: CRUD with update masks and paging, Julep's routes, errors as
google.rpc.Status JSON with their details, tenancy, a task from YAML run and streamed as
newline-delimited JSON, wait_for_input resumed, chat (whole and streamed), health, the OpenAPI
document, an unreachable backend and the body limit; TLS to a TLS-serving backend (trusted CA,
server-name override, untrusted), HTTPS on the gateway's side, CORS, and start-up errors."""

from __future__ import annotations

import contextlib
import json
import queue
import re
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from mintleaf_server.llm.scripted import Reply
from support.harness import ServerThread
from support.tls import self_signed
from support.world import World

ROOT = Path(__file__).resolve().parents[2]
BINARY = ROOT / "gateway" / "bin" / "mintleaf-gateway"
LISTENING = re.compile(r"listening on (127\.0\.0\.1:\d+)")

# One worker runs the whole module (one build, one gateway); a cold build of the binary on a
# 2-core machine takes about a minute, more than the default per-test timeout allows.
pytestmark = [pytest.mark.xdist_group("gateway"), pytest.mark.timeout(600)]

ASK_YAML = """\
name: ask
description: asks for a name, then greets
main:
  - wait_for_input:
      info:
        question: $ _.q
  - evaluate:
      greeting: $ 'hello ' + _.name
"""

COUNT_YAML = """\
name: count
input_schema:
  type: object
  required: [n]
main:
  - evaluate:
      doubled: $ inputs[0].n * 2
  - sleep:
      seconds: 0.3
  - evaluate:
      result: $ _.doubled + 1
"""


class Gateway:
    """A gateway subprocess on 127.0.0.1:<free port>."""

    def __init__(self, grpc_target: str, log_path: Path, *extra: str) -> None:
        self.log = log_path.open("w")
        self.proc = subprocess.Popen(
            [str(BINARY), "--grpc", grpc_target, "--listen", "127.0.0.1:0", *extra],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        stdout = self.proc.stdout
        assert stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        # readline() blocks; a thread lets the wait for the first line have a deadline.
        threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
        try:
            line = lines.get(timeout=30)
        except queue.Empty:
            line = ""
        match = LISTENING.search(line)
        if not match:
            self.stop()
            raise AssertionError(
                f"the gateway printed {line!r}, not its address; log: {log_path.read_text()}"
            )
        self.address = match.group(1)
        scheme = "https" if "--tls-cert" in extra else "http"
        self.url = f"{scheme}://{self.address}"

    def stop(self) -> int:
        """SIGTERM, then the exit code of the graceful shutdown."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.log.close()


@dataclass
class Bridge:
    world: World
    gateway: Gateway

    @property
    def server(self) -> ServerThread:
        return self.world.server

    def client(self, *, header: str = "authorization") -> httpx.Client:
        """An HTTP client with a fresh developer's key, sent as Bearer or as X-Auth-Key."""
        key = self.server.new_key()
        headers = {"Authorization": f"Bearer {key}"} if header == "authorization" else {"X-Auth-Key": key}
        return httpx.Client(base_url=self.gateway.url, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def binary() -> Path:
    build = subprocess.run(
        ["bash", "scripts/build_gateway.sh"], cwd=ROOT, capture_output=True, text=True, timeout=540
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return BINARY


@pytest.fixture(scope="module")
def bridge(binary: Path, pg_url: str, redis_url: str, data_root: Path) -> Iterator[Bridge]:
    # The server (a ServerThread) with every model routed to the scripted model server, for chat.
    world = World(pg_url, redis_url, data_root / "gw")
    try:
        gateway = Gateway(world.server.target, data_root / "gw-gateway.log")
        try:
            yield Bridge(world, gateway)
        finally:
            code = gateway.stop()
        assert code == 0, f"graceful shutdown exited {code}: {(data_root / 'gw-gateway.log').read_text()}"
    finally:
        world.close()


@pytest.fixture
def api(bridge: Bridge) -> Iterator[httpx.Client]:
    with bridge.client() as client:
        yield client


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, f"{response.request.method} {response.request.url}: {response.text}"
    assert response.headers["content-type"] == "application/json"
    return response.json()


def details(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A google.rpc.Status JSON's details by type name (ErrorInfo, BadRequest)."""
    return {d["@type"].rsplit(".", 1)[-1]: d for d in body["details"]}


def error(response: httpx.Response, http_status: int, grpc_code: int) -> dict[str, Any]:
    assert response.status_code == http_status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == grpc_code, body
    assert "ErrorInfo" in details(body), body
    return body


def stream(client: httpx.Client, path: str, **params: Any) -> list[dict[str, Any]]:
    """Reads a server stream to its end: one JSON object per line."""
    with client.stream("GET", path, params=params) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"] == "application/x-ndjson"
        return [json.loads(line) for line in response.iter_lines() if line]


def poll(client: httpx.Client, execution_id: str, status: str, timeout: float = 30) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while True:
        ex: dict[str, Any] = ok(client.get(f"/v1/executions/{execution_id}"))
        if ex["status"] == status:
            return ex
        assert time.monotonic() < end, ex
        time.sleep(0.05)


def test_agents_crud_with_update_mask_and_paging(api: httpx.Client) -> None:
    created = ok(
        api.post(
            "/v1/agents",
            json={"name": "Ada", "about": "first", "metadata": {"team": "x"}, "default_settings": {"t": 0.5}},
        )
    )
    aid = created["id"]
    assert created["name"] == "Ada" and created["about"] == "first"
    # Proto names (snake_case), every field present, timestamps as RFC 3339.
    assert created["default_settings"] == {"t": 0.5} and created["canonical_name"] == ""
    assert created["created_at"].endswith("Z")
    assert ok(api.get(f"/v1/agents/{aid}")) == created

    # An explicit mask updates only the fields it names.
    updated = ok(
        api.patch(
            f"/v1/agents/{aid}", params={"update_mask": "about"}, json={"about": "second", "name": "Bob"}
        )
    )
    assert (updated["about"], updated["name"]) == ("second", "Ada")
    # Without one, the mask is the body's top-level fields: metadata is replaced as a whole, the
    # rest is kept; echoing the id and timestamps back is harmless.
    updated = ok(
        api.patch(
            f"/v1/agents/{aid}",
            json={"metadata": {"team": "y", "n": 1}, "id": aid, "created_at": created["created_at"]},
        )
    )
    assert updated["metadata"] == {"team": "y", "n": 1}
    assert (updated["about"], updated["default_settings"]) == ("second", {"t": 0.5})
    assert ok(api.get(f"/v1/agents/{aid}"))["metadata"] == {"team": "y", "n": 1}

    more = [ok(api.post("/v1/agents", json={"name": f"P{i}"}))["id"] for i in range(3)]
    page1 = ok(api.get("/v1/agents", params={"page_size": 2}))
    assert len(page1["agents"]) == 2 and page1["next_page_token"]
    page2 = ok(api.get("/v1/agents", params={"page_size": 2, "page_token": page1["next_page_token"]}))
    assert page2["next_page_token"] == ""
    assert [a["id"] for a in page1["agents"] + page2["agents"]] == [aid, *more]

    assert ok(api.delete(f"/v1/agents/{aid}")) == {}
    gone = error(api.get(f"/v1/agents/{aid}"), 404, 5)
    assert details(gone)["ErrorInfo"]["reason"] == "AGENT_NOT_FOUND"
    assert [a["id"] for a in ok(api.get("/v1/agents"))["agents"]] == more


def test_julep_routes_with_x_auth_key(bridge: Bridge) -> None:
    with bridge.client(header="x-auth-key") as julep:
        # Input may use protojson's lowerCamelCase names too; output is always snake_case.
        agent = ok(julep.post("/agents", json={"name": "Julep", "canonicalName": "julep_agent"}))
        assert agent["canonical_name"] == "julep_agent"
        assert ok(julep.get(f"/agents/{agent['id']}"))["name"] == "Julep"
        assert ok(julep.patch(f"/agents/{agent['id']}", json={"about": "via julep"}))["about"] == "via julep"
        assert [a["id"] for a in ok(julep.get("/agents"))["agents"]] == [agent["id"]]
        assert "models" in ok(julep.get("/agents/models"))
        assert ok(julep.delete(f"/agents/{agent['id']}")) == {}
        assert ok(julep.get("/v1/agents"))["agents"] == []


def test_bad_input_is_400_naming_the_field(api: httpx.Client) -> None:
    body = error(api.post("/v1/agents", json={"name": ""}), 400, 3)
    assert "agent.name" in body["message"]
    violations = details(body)["BadRequest"]["field_violations"]
    assert [v["field"] for v in violations] == ["agent.name"]
    assert details(body)["ErrorInfo"]["domain"] == "mintleaf.dev"

    body = error(api.get("/v1/agents", params={"page_size": 5000}), 400, 3)
    assert [v["field"] for v in details(body)["BadRequest"]["field_violations"]] == ["page_size"]

    # Errors of the gateway itself (JSON it cannot decode) carry an ErrorInfo of its own domain.
    for bad in ('{"name": ', '{"name": "x", "nmae": "typo"}', '{"name": 3}'):
        body = error(api.post("/v1/agents", content=bad), 400, 3)
        info = details(body)["ErrorInfo"]
        assert (info["reason"], info["domain"]) == ("INVALID_ARGUMENT", "gateway.mintleaf.dev"), body
    assert "nmae" in error(api.post("/v1/agents", content='{"nmae": 1}'), 400, 3)["message"]
    assert ok(api.get("/v1/agents"))["agents"] == []

    unknown = error(api.get("/v1/nothing-here"), 404, 5)
    assert details(unknown)["ErrorInfo"]["domain"] == "gateway.mintleaf.dev"


def test_missing_or_malformed_key_is_401(bridge: Bridge) -> None:
    with httpx.Client(base_url=bridge.gateway.url) as anonymous:
        body = error(anonymous.get("/v1/agents"), 401, 16)
        assert details(body)["ErrorInfo"]["reason"] == "API_KEY_MISSING"
        body = error(anonymous.get("/v1/agents", headers={"Authorization": "Basic abc"}), 401, 16)
        assert details(body)["ErrorInfo"]["reason"] == "API_KEY_MALFORMED"
        error(anonymous.post("/agents", json={"name": "x"}, headers={"X-Auth-Key": "not-a-key"}), 401, 16)


def test_another_developer_gets_404(bridge: Bridge) -> None:
    with bridge.client() as owner, bridge.client() as other:
        aid = ok(owner.post("/v1/agents", json={"name": "Mine"}))["id"]
        error(other.get(f"/v1/agents/{aid}"), 404, 5)
        error(other.patch(f"/v1/agents/{aid}", json={"name": "Stolen"}), 404, 5)
        error(other.delete(f"/v1/agents/{aid}"), 404, 5)
        assert ok(other.get("/v1/agents"))["agents"] == []
        assert ok(owner.get(f"/v1/agents/{aid}"))["name"] == "Mine"


def test_task_from_yaml_executed_and_streamed(api: httpx.Client) -> None:
    aid = ok(api.post("/v1/agents", json={"name": "Runner"}))["id"]
    task = ok(api.post(f"/v1/agents/{aid}/tasks", json={"yaml": COUNT_YAML}))
    assert (task["name"], task["version"], task["agent_id"]) == ("count", 1, aid)
    assert task["definition"]["main"][0] == {"evaluate": {"doubled": "$ inputs[0].n * 2"}}

    # The input is validated against input_schema.
    error(api.post(f"/v1/tasks/{task['id']}/executions", json={"input": {}}), 400, 3)
    ex = ok(api.post(f"/v1/tasks/{task['id']}/executions", json={"input": {"n": 20}}))
    assert ex["status"] in {
        "EXECUTION_STATUS_QUEUED",
        "EXECUTION_STATUS_STARTING",
        "EXECUTION_STATUS_RUNNING",
    }

    # Follows the live execution (it sleeps between steps) until the server ends the stream.
    chunks = stream(api, f"/v1/executions/{ex['id']}/transitions:stream")
    transitions = [c["result"] for c in chunks]
    assert [int(t["sequence"]) for t in transitions] == list(range(1, len(transitions) + 1))
    assert transitions[0]["type"] == "TRANSITION_TYPE_INIT"
    assert transitions[-1]["type"] == "TRANSITION_TYPE_FINISH"
    assert transitions[-1]["output"] == {"result": 41}

    done = ok(api.get(f"/v1/executions/{ex['id']}"))
    assert (done["status"], done["output"]) == ("EXECUTION_STATUS_SUCCEEDED", {"result": 41})
    assert done["transition_count"] == str(len(transitions))  # int64 is a JSON string
    listed = ok(api.get(f"/v1/executions/{ex['id']}/transitions"))["transitions"]
    assert [t["id"] for t in listed] == [t["id"] for t in transitions]

    # Julep's routes: create, then replay only what follows a sequence number.
    ex2 = ok(api.post(f"/tasks/{task['id']}/executions", json={"input": {"n": 1}}))
    tail = stream(api, f"/executions/{ex2['id']}/transitions.stream", after_sequence=2)
    assert int(tail[0]["result"]["sequence"]) == 3
    assert tail[-1]["result"]["output"] == {"result": 3}
    listed_executions = ok(api.get(f"/tasks/{task['id']}/executions"))["executions"]
    assert sorted(e["id"] for e in listed_executions) == sorted([ex["id"], ex2["id"]])


def test_stream_of_unknown_execution_is_404(api: httpx.Client) -> None:
    missing = "00000000-0000-4000-8000-000000000000"
    with api.stream("GET", f"/v1/executions/{missing}/transitions:stream") as response:
        assert response.status_code == 404
        # A stream's error is one {"error": Status} line.
        body = json.loads(response.read())
    assert body["error"]["code"] == 5
    assert details(body["error"])["ErrorInfo"]["reason"] == "EXECUTION_NOT_FOUND"


def test_wait_for_input_resumed_over_rest(api: httpx.Client) -> None:
    aid = ok(api.post("/v1/agents", json={"name": "Asker"}))["id"]
    task = ok(api.post(f"/agents/{aid}/tasks", json={"yaml": ASK_YAML}))
    ex = ok(api.post(f"/v1/tasks/{task['id']}/executions", json={"input": {"q": "your name?"}}))
    waiting = poll(api, ex["id"], "EXECUTION_STATUS_AWAITING_INPUT")
    [wait] = waiting["waits"]
    assert (wait["kind"], wait["info"]) == ("wait_for_input", {"question": "your name?"})

    # Resuming a wait that does not exist is refused; the right one goes through.
    body = error(api.post(f"/v1/executions/{ex['id']}:resume", json={"wait_id": "nope", "input": 1}), 400, 9)
    assert details(body)["ErrorInfo"]["reason"] == "WAIT_NOT_OPEN"
    ok(api.post(f"/v1/executions/{ex['id']}:resume", json={"wait_id": wait["id"], "input": {"name": "Ada"}}))
    transitions = [c["result"] for c in stream(api, f"/v1/executions/{ex['id']}/transitions:stream")]
    types = [t["type"] for t in transitions]
    assert "TRANSITION_TYPE_WAIT" in types and "TRANSITION_TYPE_RESUME" in types
    assert transitions[-1]["output"] == {"greeting": "hello Ada"}
    done = poll(api, ex["id"], "EXECUTION_STATUS_SUCCEEDED")
    assert done["output"] == {"greeting": "hello Ada"} and done["waits"] == []
    # A finished execution cannot be resumed (FAILED_PRECONDITION maps to 400).
    error(api.post(f"/v1/executions/{ex['id']}:resume", json={"input": 1}), 400, 9)


def test_chat_and_streamed_chat(bridge: Bridge, api: httpx.Client) -> None:
    aid = ok(api.post("/v1/agents", json={"name": "Talker", "model": "gpt-4o-mini"}))["id"]
    sid = ok(api.post("/v1/sessions", json={"agent": aid}))["id"]
    bridge.world.model.script(Reply(text="first answer"), Reply(text="streamed answer here"))
    answer = ok(api.post(f"/sessions/{sid}/chat", json={"messages": [{"role": "user", "content": "hi"}]}))
    assert answer["session_id"] == sid
    assert answer["choices"][0]["message"]["content"] == "first answer"

    # A server-streaming POST: deltas, then the final response, one JSON object per line.
    with api.stream(
        "POST", f"/v1/sessions/{sid}:streamChat", json={"messages": [{"role": "user", "content": "again"}]}
    ) as response:
        assert response.status_code == 200 and response.headers["content-type"] == "application/x-ndjson"
        events = [json.loads(line)["result"] for line in response.iter_lines() if line]
    deltas = "".join(e["delta"]["content"] for e in events if "delta" in e)
    assert deltas == "streamed answer here"
    assert "response" in events[-1] and events[-1]["response"]["choices"][0]["message"]["content"] == deltas
    history = ok(api.get(f"/sessions/{sid}/history"))["entries"]
    assert [e["message"]["content"] for e in history] == ["hi", "first answer", "again", deltas]


def test_healthz_and_openapi(bridge: Bridge) -> None:
    with httpx.Client(base_url=bridge.gateway.url) as anonymous:
        health = ok(anonymous.get("/healthz"))
        assert health["status"] == "SERVING" and health["backend"] == bridge.server.target
        assert (
            ok(anonymous.get("/healthz", params={"service": "mintleaf.v1.AgentService"}))["status"]
            == "SERVING"
        )
        unknown = anonymous.get("/healthz", params={"service": "no.such.Service"})
        assert unknown.status_code == 404 and unknown.json()["status"] == "SERVICE_UNKNOWN", unknown.text

        doc = ok(anonymous.get("/openapi.json"))
    assert doc["swagger"] == "2.0"
    assert {"get", "post"} <= set(doc["paths"]["/v1/agents"])
    assert "get" in doc["paths"]["/v1/executions/{execution_id}/transitions:stream"]
    assert "canonical_name" in doc["definitions"]["v1Agent"]["properties"]


def test_unreachable_backend_and_body_limit(binary: Path, tmp_path: Path) -> None:
    # Port 1 on loopback: nothing listens there, so every call fails fast.
    gateway = Gateway("127.0.0.1:1", tmp_path / "gateway.log", "--max-body-bytes", "1024")
    try:
        with httpx.Client(base_url=gateway.url, headers={"Authorization": "Bearer k"}) as client:
            health = client.get("/healthz")
            assert health.status_code == 503 and health.json()["status"] == "UNREACHABLE"
            body = error(client.get("/v1/agents"), 503, 14)
            assert details(body)["ErrorInfo"]["reason"] == "UNAVAILABLE"
            too_big = client.post("/v1/agents", json={"name": "x" * 2000})
            assert details(error(too_big, 413, 8))["ErrorInfo"]["reason"] == "RESOURCE_EXHAUSTED"
    finally:
        assert gateway.stop() == 0


# --- TLS, CORS and start-up errors ------------------------------------------------------------

BACKEND_NAME = "backend.mintleaf.test"  # a second name in the certificate, for --grpc-server-name


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and BACKEND_NAME (openssl, valid one day); it
    serves both the backend's gRPC port and the gateway's HTTPS port."""
    return self_signed(tmp_path_factory.mktemp("gw-tls"), BACKEND_NAME)


@pytest.fixture(scope="module")
def tls_backend(
    binary: Path, pg_url: str, redis_url: str, data_root: Path, certificate: tuple[Path, Path]
) -> Iterator[ServerThread]:
    """A server whose gRPC port speaks only TLS."""
    cert, key = certificate
    srv = ServerThread(
        pg_url,
        redis_url,
        data_root / "gw-tls-backend",
        worker_enabled=False,
        tls_cert_file=str(cert),
        tls_key_file=str(key),
    )
    srv.start()
    yield srv
    srv.stop()


@contextlib.contextmanager
def running(target: str, log_path: Path, *extra: str) -> Iterator[Gateway]:
    gateway = Gateway(target, log_path, *extra)
    try:
        yield gateway
    finally:
        assert gateway.stop() == 0, log_path.read_text()


def test_gateway_trusting_the_backend_ca_is_served(
    tls_backend: ServerThread, certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    cert = str(certificate[0])
    headers = {"Authorization": f"Bearer {tls_backend.new_key()}"}
    with (
        running(tls_backend.target, tmp_path / "ca.log", "--grpc-ca", cert) as gateway,
        httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as client,
    ):
        agent = ok(client.post("/v1/agents", json={"name": "over tls"}))
        assert ok(client.get(f"/v1/agents/{agent['id']}"))["name"] == "over tls"
        assert ok(client.get("/healthz"))["status"] == "SERVING"  # the same TLS connection

    # --grpc-server-name: the name checked is the one given, not the target's host.
    with (
        running(
            tls_backend.target, tmp_path / "name.log", "--grpc-ca", cert, "--grpc-server-name", BACKEND_NAME
        ) as gateway,
        httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as client,
    ):
        assert [a["name"] for a in ok(client.get("/v1/agents"))["agents"]] == ["over tls"]
    with (
        running(
            tls_backend.target,
            tmp_path / "wrong.log",
            "--grpc-ca",
            cert,
            "--grpc-server-name",
            "other.example",
        ) as gateway,
        httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as client,
    ):
        error(client.get("/v1/agents"), 503, 14)


def test_gateway_not_trusting_the_backend_gets_503(tls_backend: ServerThread, tmp_path: Path) -> None:
    headers = {"Authorization": f"Bearer {tls_backend.new_key()}"}
    # Plaintext (the default) against a TLS port, then TLS with the system roots against a
    # self-signed certificate: both are UNAVAILABLE, as a google.rpc.Status.
    for name, extra in (("plain", ()), ("system-roots", ("--grpc-tls",))):
        with (
            running(tls_backend.target, tmp_path / f"{name}.log", *extra) as gateway,
            httpx.Client(base_url=gateway.url, headers=headers, timeout=30) as client,
        ):
            body = error(client.get("/v1/agents"), 503, 14)
            assert details(body)["ErrorInfo"]["reason"] == "UNAVAILABLE", (name, body)
            health = client.get("/healthz")
            assert health.status_code == 503 and health.json()["status"] == "UNREACHABLE", (name, health.text)


def test_gateway_serves_https(
    tls_backend: ServerThread, certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, key = (str(p) for p in certificate)
    headers = {"Authorization": f"Bearer {tls_backend.new_key()}"}
    trusting = ssl.create_default_context(cafile=cert)
    with running(
        tls_backend.target, tmp_path / "https.log", "--grpc-ca", cert, "--tls-cert", cert, "--tls-key", key
    ) as gateway:
        assert gateway.url.startswith("https://127.0.0.1:")
        with httpx.Client(base_url=gateway.url, headers=headers, verify=trusting, timeout=30) as client:
            agent = ok(client.post("/v1/agents", json={"name": "https"}))
            assert ok(client.get(f"/v1/agents/{agent['id']}"))["name"] == "https"
            assert ok(client.get("/healthz"))["status"] == "SERVING"
        # A client that does not trust the certificate fails the handshake; plain HTTP is refused.
        with httpx.Client(base_url=gateway.url, timeout=30) as untrusting, pytest.raises(httpx.ConnectError):
            untrusting.get("/healthz")
        plain = httpx.get(f"http://{gateway.address}/healthz", timeout=30)
        assert plain.status_code == 400, plain.text


PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type",
}


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


def test_cors_for_listed_origins(bridge: Bridge, tmp_path: Path) -> None:
    allowed, other = "https://b.example", "https://evil.example"
    key = bridge.server.new_key()
    with (
        running(
            bridge.server.target,
            tmp_path / "cors.log",
            "--cors-origins",
            "https://a.example, https://b.example",
        ) as gateway,
        httpx.Client(base_url=gateway.url, timeout=30) as client,
    ):
        pre = client.options("/v1/agents", headers={"Origin": allowed, **PREFLIGHT})
        assert pre.status_code == 204, pre.text
        headers = cors_headers(pre)
        assert headers["access-control-allow-origin"] == allowed
        assert {m.strip() for m in headers["access-control-allow-methods"].split(",")} >= {
            "GET", "POST", "PATCH", "DELETE",
        }  # fmt: skip
        assert {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")} == {
            "authorization", "x-auth-key", "content-type", "grpc-timeout",
        }  # fmt: skip
        assert "access-control-allow-credentials" not in headers
        assert "Origin" in pre.headers.get_list("vary")

        refused = client.options("/v1/agents", headers={"Origin": other, **PREFLIGHT})
        assert refused.status_code == 403 and cors_headers(refused) == {}

        # Real requests: the allowed origin may read the answer, nothing is exposed beyond it.
        auth = {"Authorization": f"Bearer {key}"}
        got = client.get("/v1/agents", headers={"Origin": allowed, **auth})
        assert ok(got)["agents"] == []
        assert cors_headers(got) == {"access-control-allow-origin": allowed}
        got = client.get("/v1/agents", headers={"Origin": other, **auth})
        assert ok(got)["agents"] == [] and cors_headers(got) == {}
        assert cors_headers(client.get("/healthz")) == {}  # no Origin: not a CORS request


def test_cors_any_origin_and_off_by_default(bridge: Bridge, tmp_path: Path) -> None:
    origin = "http://localhost:3000"
    with (
        running(bridge.server.target, tmp_path / "any.log", "--cors-origins", "*") as gateway,
        httpx.Client(base_url=gateway.url, timeout=30) as client,
    ):
        pre = client.options("/v1/agents", headers={"Origin": origin, **PREFLIGHT})
        assert pre.status_code == 204 and cors_headers(pre)["access-control-allow-origin"] == "*"
        assert cors_headers(client.get("/healthz", headers={"Origin": origin})) == {
            "access-control-allow-origin": "*"
        }
    # The module's gateway runs without --cors-origins: no CORS headers, preflight or not.
    with httpx.Client(base_url=bridge.gateway.url, timeout=30) as client:
        pre = client.options("/v1/agents", headers={"Origin": origin, **PREFLIGHT})
        assert pre.status_code != 204 and cors_headers(pre) == {}, pre.headers
        got = client.get("/healthz", headers={"Origin": origin})
        assert ok(got)["status"] == "SERVING" and cors_headers(got) == {}


def test_bad_settings_exit_2_with_one_line(
    binary: Path, certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    cert, key = (str(p) for p in certificate)
    missing = tmp_path / "missing-ca.pem"
    empty = tmp_path / "empty-ca.pem"
    empty.write_text("not a certificate\n")
    cases = [
        (["--grpc-ca", str(missing)], f"--grpc-ca: open {missing}: no such file or directory"),
        (["--grpc-ca", str(empty)], f"--grpc-ca {empty}: no PEM certificate in the file"),
        (["--tls-cert", cert], "--tls-cert needs --tls-key (both or neither)"),
        (["--tls-key", key], "--tls-key needs --tls-cert (both or neither)"),
        (["--grpc-server-name", BACKEND_NAME], "--grpc-server-name needs --grpc-tls or --grpc-ca"),
        (["--cors-origins", "https://a.example/app"], "is not an origin"),
    ]
    for args, message in cases:
        done = subprocess.run(
            [str(binary), "--listen", "127.0.0.1:0", *args], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 2, (args, done)
        assert done.stdout == "", (args, done.stdout)  # it never listened
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("mintleaf-gateway: ") and message in lines[0], (
            args,
            lines,
        )
