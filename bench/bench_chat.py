"""Chat benchmark: the server's overhead per chat turn over the model's own latency.

The model is the scripted model server (`python -m mintleaf_server.llm.scripted`, 0 ms latency) in
its own process; Mintleaf runs in-process (embedded PostgreSQL and Redis) and is called through the
generated SDK. Round by round, interleaved:
- `chat`: a Chat turn (save=true, default system template, a session rotated every --turns turns
  so the history it loads holds 0 to 2 x turns entries);
- `model`: a 2-message prompt sent straight to the scripted server through the server's own model
  client (ModelRegistry.complete) — the model's own latency as the server sees it;
- `stream ttft`: time to the first streamed delta of a StreamChat turn, and `model ttft`: time to
  the first delta of ModelRegistry.stream;
- `model, 22-message prompt`: the median turn's prompt length sent straight to the model, which
  shows the model client's own per-message cost (the `openai` package's request transform).
Overhead = chat p50 - model p50 (and the same at p99). The machine is shared: same-run figures only.

Usage: python bench/bench_chat.py [--rounds 1000] [--turns 20]
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
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from mintleaf import v1  # noqa: E402
from mintleaf_server.llm.client import ModelRegistry, StreamDelta  # noqa: E402
from support.harness import ServerThread, private_runtime_dir, start_test_postgres, start_test_redis  # noqa: E402

T = TypeVar("T")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Loop:
    """An event loop in a thread, for the direct model calls."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=1000)
    parser.add_argument("--turns", type=int, default=20)
    args = parser.parse_args()

    private_runtime_dir()
    base = Path(tempfile.mkdtemp(prefix="mintleaf-bench-chat-"))
    port_file = base / "model-port"
    model_proc = subprocess.Popen(
        [sys.executable, "-m", "mintleaf_server.llm.scripted", "--port-file", str(port_file)],
        stdout=subprocess.DEVNULL,
    )
    pg_url, pg = start_test_postgres(base)
    redis_url, redis = start_test_redis(base)
    while not port_file.exists() or not port_file.read_text().strip():
        time.sleep(0.01)
    model_url = f"http://127.0.0.1:{port_file.read_text().strip()}/v1"
    models = {"default": "gpt-4o-mini", "default_endpoint": {"base_url": model_url, "api_key": "scripted"}}
    server = ServerThread(pg_url, redis_url, base / "app", models=models, worker_enabled=False).start()
    direct = Loop()
    registry = ModelRegistry.from_config(models)
    try:
        client = server.client()
        agent = client.agents.create_agent(
            v1.CreateAgentRequest(agent=v1.Agent(name="Ada", about="a librarian", instructions=["be brief"]))
        )
        user = client.users.create_user(v1.CreateUserRequest(user=v1.User(name="Bob")))

        def new_session() -> str:
            s = client.sessions.create_session(
                v1.CreateSessionRequest(
                    session=v1.Session(agent=agent.id, user=user.id, situation="a library")
                )
            )
            return s.id

        def request(session_id: str, i: int) -> v1.ChatRequest:
            return v1.ChatRequest(
                session_id=session_id, messages=[v1.ChatMessage(role="user", content=f"question number {i}")]
            )

        prompt = [
            {"role": "system", "content": "You are Ada. About you: a librarian."},
            {"role": "user", "content": "question number 1"},
        ]

        # The median turn's prompt: system + 20 history messages + the new one.
        long_prompt = prompt[:1] + [
            {"role": "user" if j % 2 == 0 else "assistant", "content": f"question number {j}"}
            for j in range(21)
        ]

        async def model_call(messages: list[dict[str, Any]] = prompt) -> None:
            await registry.complete("gpt-4o-mini", messages)

        async def model_ttft() -> float:
            t0 = time.perf_counter()
            first = None
            async for event in registry.stream("gpt-4o-mini", prompt):
                if first is None and isinstance(event, StreamDelta):
                    first = time.perf_counter() - t0
            assert first is not None
            return first

        session_id = new_session()
        for i in range(50):  # warm up: connections, tokenizer, template cache
            client.chat.chat(request(session_id, i))
            direct.run(model_call())
        chat_ms: list[float] = []
        model_ms: list[float] = []
        model_long_ms: list[float] = []
        ttft_ms: list[float] = []
        model_ttft_ms: list[float] = []
        for i in range(args.rounds):
            if i % args.turns == 0:
                session_id = new_session()
            t0 = time.perf_counter()
            client.chat.chat(request(session_id, i))
            chat_ms.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            direct.run(model_call())
            model_ms.append((time.perf_counter() - t0) * 1000)
            t0 = time.perf_counter()
            direct.run(model_call(long_prompt))
            model_long_ms.append((time.perf_counter() - t0) * 1000)
            if i % 4 == 0:
                t0 = time.perf_counter()
                first = None
                for event in client.chat.stream_chat(request(session_id, i)):
                    if first is None and event.delta is not None:
                        first = time.perf_counter() - t0
                assert first is not None
                ttft_ms.append(first * 1000)
                model_ttft_ms.append(direct.run(model_ttft()) * 1000)
        client.close()

        def line(name: str, values: list[float]) -> str:
            return f"{name:<34} p50 {pct(values, 0.5):7.2f} ms   p99 {pct(values, 0.99):7.2f} ms   (n={len(values)})"

        print(f"rounds {args.rounds}, session rotated every {args.turns} turns, model latency 0 ms")
        print(line("chat turn (Chat, save=true)", chat_ms))
        print(line("model alone (ModelRegistry.complete)", model_ms))
        print(line("model alone, 22-message prompt", model_long_ms))
        print(
            f"{'server overhead per turn':<34} p50 {pct(chat_ms, 0.5) - pct(model_ms, 0.5):7.2f} ms"
            f"   p99 {pct(chat_ms, 0.99) - pct(model_ms, 0.99):7.2f} ms"
        )
        print(line("StreamChat time to first delta", ttft_ms))
        print(line("model alone time to first delta", model_ttft_ms))
        print(
            f"{'streaming overhead to first delta':<34} p50 {pct(ttft_ms, 0.5) - pct(model_ttft_ms, 0.5):7.2f} ms"
        )
        print(f"mean chat turn {statistics.fmean(chat_ms):.2f} ms")
    finally:
        direct.run(registry.aclose()) if hasattr(registry, "aclose") else None
        direct.stop()
        server.stop()
        model_proc.terminate()
        model_proc.wait(10)
        redis.stop()
        pg.stop()


if __name__ == "__main__":
    main()
