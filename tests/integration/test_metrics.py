"""The Prometheus endpoint (docs/operations.md): off by default (no listener at all), on with
`metrics_listen`; RPCs counted by method and status code, the engine's runs, commits, transitions,
effects and finished executions counted as they happen, gauges read at scrape time, process
metrics, no execution or developer id in any label. Scraped over loopback HTTP like Prometheus.

The metrics server gets its own database and Redis database number, so no other test's worker
takes its runs and no other server's runs move its counters: the engine figures are exact."""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import httpx
import psycopg
import pytest
from integration.engine.engine_flows import finished, start, transitions, value, wait_status, wait_until
from prometheus_client.parser import text_string_to_metric_families

import mintleaf
from mintleaf import v1
from mintleaf_server.config import ConfigError, load_settings
from mintleaf_server.engine import EffectDone, EffectFailed, EffectSuspended
from mintleaf_server.engine.queue import member
from support.errors import expect_error
from support.harness import ServerThread

S = v1.ExecutionStatus
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
TOOLS = [
    {"name": n, "type": "function", "function": {"parameters": {"type": "object"}}}
    for n in ("echo", "boom", "slow", "ask")
]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Effects:
    """tool_call effects by tool name: echo → done, boom → failed (final), slow → sleeps (the
    step's timeout ends it), ask → suspended (the client answers)."""

    async def __call__(self, request: dict[str, Any], machine: Any) -> Any:
        eid, tool = request["effect_id"], request.get("tool")
        if tool == "boom":
            return EffectFailed(effect_id=eid, error={"kind": "boom", "message": "no", "retryable": False})
        if tool == "slow":
            await asyncio.sleep(30)
        if tool == "ask":
            call = {"id": request["call_id"], "type": "function", "name": "ask", "arguments": {}}
            return EffectSuspended(effect_id=eid, tool_calls=[call], resume="output")
        return EffectDone(effect_id=eid, output=request.get("arguments") or {})


def _listening_ports() -> set[int]:
    """TCP ports this process listens on (its socket inodes matched against /proc/net/tcp*)."""
    inodes = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _fresh_database(pg_url: str) -> str:
    name = f"metrics_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(pg_url)._replace(path=f"/{name}"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return url


@pytest.fixture(scope="module")
def msrv(pg_url: str, redis_url: str, data_root: Path) -> Iterator[tuple[ServerThread, set[int]]]:
    """A server with metrics on a free loopback port; also the ports its start opened."""
    sep = "&" if "?" in redis_url else "?"
    srv = ServerThread(
        _fresh_database(pg_url),
        f"{redis_url}{sep}db=5",
        data_root / "metrics",
        metrics_listen="127.0.0.1:0",
    )
    srv.app.runtime.extras["effect_runner"] = Effects()
    before = _listening_ports()
    srv.start()
    opened = _listening_ports() - before
    yield srv, opened
    srv.stop()


def scrape(srv: ServerThread, accept: str | None = None) -> httpx.Response:
    headers = {"Accept": accept} if accept else {}
    with httpx.Client(trust_env=False, timeout=10) as http:
        return http.get(f"http://127.0.0.1:{srv.app.metrics_port}/metrics", headers=headers)


def samples(srv: ServerThread) -> Samples:
    resp = scrape(srv)
    assert resp.status_code == 200, resp.text
    out: Samples = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def get(m: Samples, name: str, **labels: str) -> float:
    return m.get((name, frozenset(labels.items())), 0.0)


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return get(after, name, **labels) - get(before, name, **labels)


def test_off_by_default_nothing_listens(pg_url: str, redis_url: str, data_root: Path) -> None:
    assert load_settings(env={}).metrics_listen == ""
    before = _listening_ports()
    srv = ServerThread(pg_url, redis_url, data_root / "metrics-off", worker_enabled=False).start()
    try:
        assert _listening_ports() - before == {srv.port}  # the gRPC port and nothing else
        assert srv.app.metrics is None and srv.app.metrics_port == 0
        assert "metrics" not in srv.app.runtime.extras
        with srv.client() as c:  # calls go through the decorators without recording anything
            c.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="off")))
    finally:
        srv.stop()


def test_a_busy_port_fails_the_start(pg_url: str, redis_url: str, data_root: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = ServerThread(pg_url, redis_url, data_root / "metrics-busy", metrics_listen=f"127.0.0.1:{port}")
        srv.thread.start()
        try:
            with pytest.raises(RuntimeError, match=f"could not listen on 127.0.0.1:{port} for metrics"):
                srv.call(srv.app.start())
            assert "metrics" in srv.app.runtime.extras and not hasattr(
                srv.app.runtime, "db"
            )  # before the stores
        finally:
            srv.loop.call_soon_threadsafe(srv.loop.stop)
            srv.thread.join(timeout=10)
            srv.loop.close()


def test_setting_is_read_and_validated() -> None:
    s = load_settings(env={"MINTLEAF_METRICS_LISTEN": "0.0.0.0:9464"})
    assert s.metrics_listen == "0.0.0.0:9464"
    assert load_settings(env={"MINTLEAF_METRICS_LISTEN": ""}).metrics_listen == ""
    for bad in ("9464", "localhost", ":9464", "host:port", "127.0.0.1:70000"):
        with pytest.raises(ConfigError, match="metrics_listen"):
            load_settings(env={"MINTLEAF_METRICS_LISTEN": bad})


def test_endpoint_listens_where_asked_and_speaks_http(msrv: tuple[ServerThread, set[int]]) -> None:
    srv, opened = msrv
    assert srv.app.metrics_port > 0
    assert opened == {srv.port, srv.app.metrics_port}
    base = f"http://127.0.0.1:{srv.app.metrics_port}"
    with httpx.Client(trust_env=False, timeout=10) as http:
        assert http.get(f"{base}/").status_code == 404
        assert http.get(f"{base}/metrics/x").status_code == 404
        assert http.post(f"{base}/metrics").status_code == 405
        head = http.head(f"{base}/metrics")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-type"].startswith("text/plain")
    om = scrape(srv, accept="application/openmetrics-text;version=1.0.0,text/plain;q=0.5")
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")
    names = {f.name for f in text_string_to_metric_families(scrape(srv).text)}
    # prometheus_client's process, platform and GC collectors on the private registry
    assert {"process_cpu_seconds", "process_resident_memory_bytes", "python_info"} <= names
    assert "python_gc_objects_collected" in names


def test_rpcs_and_engine_are_counted(msrv: tuple[ServerThread, set[int]]) -> None:
    srv, _ = msrv
    key = srv.new_key()
    c = srv.client(key)
    bad = mintleaf.Client(srv.target, api_key="ml_not_a_key")
    try:
        before = samples(srv)
        for i in range(3):
            c.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name=f"a{i}")))
        expect_error(
            lambda: c.agents.get_agent(v1.GetAgentRequest(id="nope")), grpc.StatusCode.INVALID_ARGUMENT
        )
        expect_error(
            lambda: c.agents.get_agent(v1.GetAgentRequest(id=str(uuid.uuid4()))), grpc.StatusCode.NOT_FOUND
        )
        expect_error(lambda: bad.agents.list_agents(v1.ListAgentsRequest()), grpc.StatusCode.UNAUTHENTICATED)

        fan = {"foreach": {"in": "list(range(6))", "parallelism": 6, "do": {"evaluate": {"i": "$ _"}}}}
        docs = {
            "done": [{"tool": "echo", "arguments": {"x": 1}}, fan],
            "failed": [{"tool": "boom", "arguments": {}, "retry": {"max_attempts": 1}}],
            "timeout": [{"tool": "slow", "arguments": {}, "timeout": 0.2, "retry": {"max_attempts": 1}}],
            "suspended": [{"tool": "ask", "arguments": {}}],
        }
        ids = {name: start(c, {"name": name, "tools": TOOLS, "main": main}).id for name, main in docs.items()}
        ex = wait_status(c, ids["suspended"], S.AWAITING_INPUT)
        c.executions.submit_tool_results(
            v1.SubmitToolResultsRequest(
                id=ex.id, results=[v1.ToolResult(tool_call_id=ex.waits[0].tool_calls[0].id, output=value(1))]
            )
        )
        ends = {name: finished(c, eid) for name, eid in ids.items()}
        assert ends["done"].status == S.SUCCEEDED and ends["suspended"].status == S.SUCCEEDED
        assert ends["failed"].status == S.FAILED and ends["timeout"].status == S.FAILED
        assert "timed out" in ends["timeout"].error
        logs = {name: transitions(c, eid) for name, eid in ids.items()}
        assert len(
            list(c.executions.stream_transitions(v1.StreamTransitionsRequest(execution_id=ids["done"])))
        ) == len(logs["done"])
        expect_error(
            lambda: list(
                c.executions.stream_transitions(v1.StreamTransitionsRequest(execution_id=str(uuid.uuid4())))
            ),
            grpc.StatusCode.NOT_FOUND,
        )

        def settled() -> Samples | None:  # the worker has let go of every run
            m = samples(srv)
            idle = get(m, "mintleaf_engine_runs_in_progress") == 0
            return m if idle and get(m, "mintleaf_engine_ready_queue_depth") == 0 else None

        after = wait_until(settled, 10, "the worker to let go of its runs")
    finally:
        bad.close()
        c.close()

    rpc = "mintleaf_rpc_requests_total"
    # 3 + one per started execution (start() creates an agent and a task)
    assert delta(after, before, rpc, method="AgentService/CreateAgent", code="OK") == 3 + len(docs)
    assert delta(after, before, rpc, method="TaskService/CreateTask", code="OK") == len(docs)
    assert delta(after, before, rpc, method="ExecutionService/CreateExecution", code="OK") == len(docs)
    assert delta(after, before, rpc, method="ExecutionService/SubmitToolResults", code="OK") == 1
    assert delta(after, before, rpc, method="AgentService/GetAgent", code="INVALID_ARGUMENT") == 1
    assert delta(after, before, rpc, method="AgentService/GetAgent", code="NOT_FOUND") == 1
    assert delta(after, before, rpc, method="AgentService/ListAgents", code="UNAUTHENTICATED") == 1
    assert delta(after, before, rpc, method="ExecutionService/GetExecution", code="OK") >= len(docs)
    assert delta(after, before, rpc, method="ExecutionService/StreamTransitions", code="OK") == 1
    assert delta(after, before, rpc, method="ExecutionService/StreamTransitions", code="NOT_FOUND") == 1
    # unary calls are timed, whatever their outcome; streams are not
    hist = "mintleaf_rpc_duration_seconds"
    assert delta(after, before, f"{hist}_count", method="AgentService/CreateAgent") == 3 + len(docs)
    assert delta(after, before, f"{hist}_count", method="AgentService/GetAgent") == 2
    assert delta(after, before, f"{hist}_bucket", method="AgentService/GetAgent", le="+Inf") == 2
    assert delta(after, before, f"{hist}_sum", method="AgentService/CreateAgent") > 0
    assert not any(
        n.startswith(hist) and ("method", "ExecutionService/StreamTransitions") in ls for n, ls in after
    )

    fin = "mintleaf_executions_finished_total"
    assert delta(after, before, fin, status="succeeded") == 2
    assert delta(after, before, fin, status="failed") == 2
    eff = "mintleaf_engine_effects_total"
    for outcome in ("done", "failed", "timeout", "suspended"):
        assert delta(after, before, eff, kind="tool_call", outcome=outcome) == 1, outcome
    dur = "mintleaf_engine_effect_duration_seconds"
    assert delta(after, before, f"{dur}_count", kind="tool_call") == 4
    assert (
        delta(after, before, f"{dur}_sum", kind="tool_call") >= 0.1
    )  # the step that timed out (0.2 s from its start)
    # every transition of the log was written by this server's worker, and counted once
    assert delta(after, before, "mintleaf_engine_transitions_total") == sum(len(log) for log in logs.values())
    assert delta(after, before, "mintleaf_engine_runs_total", kind="branch") >= 6
    assert delta(after, before, "mintleaf_engine_runs_total", kind="main") >= len(docs)
    assert delta(after, before, "mintleaf_engine_commits_total", mode="single") >= len(docs)
    assert delta(after, before, "mintleaf_engine_commits_total", mode="batch") >= 1  # the 6 branches' ends
    assert delta(after, before, "mintleaf_engine_lease_lost_total") == 0

    size = get(after, "mintleaf_db_pool_size")
    assert 1 <= size <= get(after, "mintleaf_db_pool_max_size") == srv.settings.pool_max_size
    assert 0 <= get(after, "mintleaf_db_pool_available") <= size
    assert ("mintleaf_db_pool_requests_waiting", frozenset()) in after
    assert get(after, "mintleaf_engine_concurrency") == srv.settings.worker_concurrency

    # low cardinality: no id of any kind in a label (the executions' ids are UUIDs, as are keys' developers)
    for name, labels in after:
        for label, text in labels:
            assert label not in ("execution_id", "developer_id", "id"), (name, label)
            assert not UUID_RE.search(text), (name, label, text)
    body = scrape(srv).text
    assert not any(eid in body for eid in ids.values())


def test_ready_queue_depth_is_read_at_scrape_time(msrv: tuple[ServerThread, set[int]]) -> None:
    """With every worker slot held, queued runs stay queued: the gauge shows exactly them."""
    srv, _ = msrv
    worker = srv.app.runtime.extras["worker"]

    async def hold_every_slot() -> None:
        # the consumer holds one slot while it waits on the queue (up to 1 s); it gives it back,
        # and asks again, after us
        for _ in range(worker.concurrency):
            await worker.sem.acquire()

    async def release_every_slot() -> None:
        for _ in range(worker.concurrency):
            worker.sem.release()

    srv.call(hold_every_slot(), timeout=10)
    try:
        ghosts = [member(str(uuid.uuid4()), "main", str(uuid.uuid4())) for _ in range(3)]
        srv.call(worker.queue.push(*ghosts))
        assert get(samples(srv), "mintleaf_engine_ready_queue_depth") == 3
    finally:
        srv.call(release_every_slot())
    # the worker takes them (no such execution: nothing to do) and the gauge follows
    wait_until(lambda: get(samples(srv), "mintleaf_engine_ready_queue_depth") == 0, 10, "an empty queue")
