"""Foundation benchmark: embedded cold start, and Get/Create latency against a bare gRPC echo.

Prints, in one run (the machine is shared and noisy, so only same-run ratios mean much):
- cold start: `mintleaf-server serve` process start -> health SERVING, with a fresh data directory and
  with an existing one (median of --starts runs each);
- p50/p99 of GetAgent and CreateAgent over gRPC through the generated SDK, and of a bare grpc.aio
  echo server answering the same bytes on the same loop type, interleaved round by round.

Usage: python bench/bench_api.py [--starts 3] [--calls 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from mintleaf import v1  # noqa: E402


def cold_start(data_dir: Path) -> float:
    port_file = Path(tempfile.mkdtemp()) / "port"
    t0 = time.perf_counter()
    proc = subprocess.Popen(
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
            str(port_file),
            "--no-worker",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        while not port_file.exists():
            if proc.poll() is not None:
                raise RuntimeError("server exited")
            time.sleep(0.005)
        with grpc.insecure_channel(f"127.0.0.1:{port_file.read_text()}") as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=30
            )
            assert resp.status == health_pb2.HealthCheckResponse.SERVING
        return time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(30)


class EchoServer:
    """A bare grpc.aio server whose one method returns the request bytes unchanged."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0

    def start(self) -> None:
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result()

    async def _start(self) -> int:
        async def echo(request: bytes, context: object) -> bytes:
            return request

        handler = grpc.method_handlers_generic_handler(
            "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
        )
        self.server = grpc.aio.server()
        self.server.add_generic_rpc_handlers((handler,))
        port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return port


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--starts", type=int, default=3)
    ap.add_argument("--calls", type=int, default=2000)
    args = ap.parse_args()

    fresh, existing = [], []
    for _ in range(args.starts):
        d = Path(tempfile.mkdtemp()) / "data"
        fresh.append(cold_start(d))
        existing.append(cold_start(d))
    print(
        f"cold start, fresh data dir:    median {statistics.median(fresh):.2f} s  (runs: {', '.join(f'{x:.2f}' for x in fresh)})"
    )
    print(
        f"cold start, existing data dir: median {statistics.median(existing):.2f} s  (runs: {', '.join(f'{x:.2f}' for x in existing)})"
    )

    from support.harness import ServerThread, start_test_postgres, start_test_redis

    base = Path(tempfile.mkdtemp())
    pg_url, pg = start_test_postgres(base)
    redis_url, rds = start_test_redis(base)
    srv = ServerThread(pg_url, redis_url, base / "app", worker_enabled=False).start()
    echo = EchoServer()
    echo.start()
    client = srv.client()
    agent = client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="bench", about="x" * 200)))
    get_req = v1.GetAgentRequest(id=agent.id)
    create_req = v1.CreateAgentRequest(agent=v1.Agent(name="bench", about="x" * 200))
    echo_channel = grpc.insecure_channel(f"127.0.0.1:{echo.port}")
    echo_call = echo_channel.unary_unary("/bench.Echo/Echo")
    get_bytes, create_bytes = bytes(get_req), bytes(agent)
    for _ in range(200):  # warm-up
        client.agents.get_agent(get_req)
        echo_call(get_bytes)
    t_get, t_create, t_echo_get, t_echo_create = [], [], [], []
    for _ in range(args.calls):
        t0 = time.perf_counter()
        echo_call(get_bytes)
        t_echo_get.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        client.agents.get_agent(get_req)
        t_get.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        echo_call(create_bytes)
        t_echo_create.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        client.agents.create_agent(create_req)
        t_create.append(time.perf_counter() - t0)

    def row(name: str, xs: list[float], base: list[float]) -> None:
        p50, p99, b50, b99 = (
            pct(xs, 0.5) * 1e3,
            pct(xs, 0.99) * 1e3,
            pct(base, 0.5) * 1e3,
            pct(base, 0.99) * 1e3,
        )
        print(
            f"{name:<12} p50 {p50:6.3f} ms  p99 {p99:6.3f} ms | echo p50 {b50:6.3f} ms p99 {b99:6.3f} ms"
            f" | overhead p50 {p50 - b50:6.3f} ms  ratio {p50 / b50:5.2f}x"
        )

    print(f"\n{args.calls} calls each, interleaved, one client thread:")
    row("GetAgent", t_get, t_echo_get)
    row("CreateAgent", t_create, t_echo_create)
    client.close()
    srv.stop()
    pg.stop()
    rds.stop()


if __name__ == "__main__":
    main()
