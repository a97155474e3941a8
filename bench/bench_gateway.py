"""REST bridge benchmark: what the grpc-gateway adds to a call, against the same call over gRPC.

Prints, in one run (interleaved round by round: the machine is shared and noisy, so only same-run
ratios mean much):
- p50/p99 of GetAgent over gRPC through the Python SDK (the baseline) and of GET /v1/agents/{id}
  through the gateway with a keep-alive HTTP/1.1 client, and the gateway's overhead (the
  difference) and ratio;
- the same for CreateAgent / POST /v1/agents;
- the time to stream a finished execution's transitions (StreamTransitions vs the NDJSON route).

Usage: python bench/bench_gateway.py [--calls 2000]   (builds gateway/bin/mintleaf-gateway if needed)
"""

from __future__ import annotations

import argparse
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from mintleaf import Struct, v1  # noqa: E402
from support.harness import ServerThread, private_runtime_dir, start_test_postgres, start_test_redis  # noqa: E402

BINARY = ROOT / "gateway" / "bin" / "mintleaf-gateway"
LISTENING = re.compile(r"listening on (127\.0\.0\.1:\d+)")


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def start_gateway(target: str, log: Path) -> tuple[subprocess.Popen[str], str]:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "build_gateway.sh")], check=True, stdout=subprocess.DEVNULL
    )
    with log.open("w") as err:
        proc = subprocess.Popen(
            [str(BINARY), "--grpc", target, "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    out = proc.stdout
    threading.Thread(target=lambda: lines.put(out.readline()), daemon=True).start()
    match = LISTENING.search(lines.get(timeout=30))
    if not match:
        proc.kill()
        raise RuntimeError(f"the gateway did not start: {log.read_text()}")
    return proc, f"http://{match.group(1)}"


def timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def report(name: str, grpc_times: list[float], rest_times: list[float]) -> None:
    g50, r50 = statistics.median(grpc_times), statistics.median(rest_times)
    print(
        f"{name}: gRPC p50 {g50 * 1e3:.2f} ms p99 {pct(grpc_times, 0.99) * 1e3:.2f} ms | "
        f"REST p50 {r50 * 1e3:.2f} ms p99 {pct(rest_times, 0.99) * 1e3:.2f} ms | "
        f"gateway adds {(r50 - g50) * 1e3:.2f} ms p50 = {r50 / g50:.2f}x (n={len(grpc_times)})"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()
    private_runtime_dir()
    base = Path(tempfile.mkdtemp(prefix="mintleaf-bench-gateway-"))
    pg_url, pg = start_test_postgres(base)
    redis_url, rd = start_test_redis(base)
    srv = ServerThread(pg_url, redis_url, base / "app").start()
    key = srv.new_key()
    client = srv.client(key)
    proc, url = start_gateway(srv.target, base / "gateway.log")
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
    try:
        agent = client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="bench")))
        get_grpc = lambda: client.agents.get_agent(v1.GetAgentRequest(id=agent.id))  # noqa: E731
        get_rest = lambda: http.get(f"/v1/agents/{agent.id}").raise_for_status()  # noqa: E731
        create_grpc = lambda: client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="b")))  # noqa: E731
        create_rest = lambda: http.post("/v1/agents", json={"name": "b"}).raise_for_status()  # noqa: E731
        for _ in range(200):  # warm-up: connections, caches
            get_grpc()
            get_rest()
        gg, gr, cg, cr = [], [], [], []
        for _ in range(args.calls):
            gg.append(timed(get_grpc))
            gr.append(timed(get_rest))
        for _ in range(args.calls // 4):
            cg.append(timed(create_grpc))
            cr.append(timed(create_rest))
        report("GetAgent", gg, gr)
        report("CreateAgent", cg, cr)

        doc = {"name": "steps", "main": [{"evaluate": {"i": f"$ {i}"}} for i in range(300)]}
        task = client.tasks.create_task(
            v1.CreateTaskRequest(agent_id=agent.id, task=v1.Task(definition=Struct.from_dict(doc)))
        )
        ex = client.executions.create_execution(
            v1.CreateExecutionRequest(task_id=task.id, execution=v1.Execution())
        )
        while (
            client.executions.get_execution(v1.GetExecutionRequest(id=ex.id)).status
            != v1.ExecutionStatus.SUCCEEDED
        ):
            time.sleep(0.02)
        sg, sr = [], []
        for _ in range(20):
            sg.append(
                timed(
                    lambda: list(
                        client.executions.stream_transitions(v1.StreamTransitionsRequest(execution_id=ex.id))
                    )
                )
            )

            def rest_stream() -> None:
                with http.stream("GET", f"/v1/executions/{ex.id}/transitions:stream") as resp:
                    resp.raise_for_status()
                    assert sum(1 for line in resp.iter_lines() if line) >= 300

            sr.append(timed(rest_stream))
        report("stream 302 transitions of a finished execution", sg, sr)
    finally:
        http.close()
        client.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        srv.stop()
        rd.stop()
        pg.stop()


if __name__ == "__main__":
    main()
