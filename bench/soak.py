"""Soak test: a `mintleaf-server serve` process under a steady mixed workload for a while, watched
for growth that should not be there (memory, file descriptors, threads) and for slowing down.

The server runs as its own process (embedded PostgreSQL and Redis, its own data directory) so its
resources can be read from /proc; the model is the scripted model server in another process. Each
round of the workload: CRUD on an agent, a task run 4 times at once (a fan-out of 40 branches with
parallelism 8, sleeps, evaluates), one run followed with StreamTransitions, one wait_for_input
resumed, 4 chat turns in a session, a document created and searched, the agent deleted. Every
`--sample` seconds: the server's RSS, open file descriptors and threads, rounds completed, and the
p50 of a GetAgent probe. The baseline is the run's own first quarter: the last quarter's figures
are printed as ratios to it (a leak shows as a ratio that keeps growing with --minutes).

Usage: python bench/soak.py [--minutes 3] [--sample 5] [--clients 4]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import mintleaf  # noqa: E402
from mintleaf import Struct, Value, v1  # noqa: E402

TASK = {
    "name": "soak",
    "main": [
        {"foreach": {"in": "list(range(40))", "parallelism": 8, "do": [{"evaluate": {"x": "$ _ * 2"}}]}},
        {"sleep": 0.01},
        {"evaluate": {"n": "$ len(_)"}},
    ],
}
ASK = {"name": "ask", "main": [{"wait_for_input": {"info": {"q": "go?"}}}, {"evaluate": {"a": "$ _"}}]}


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().strip():
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {path}")
        time.sleep(0.05)
    return path.read_text().strip()


def proc_stats(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(fields["Threads"]),
    }


def wait_done(client: Any, eid: str) -> Any:
    while True:
        ex = client.executions.get_execution(v1.GetExecutionRequest(id=eid))
        if ex.status in (
            v1.ExecutionStatus.SUCCEEDED,
            v1.ExecutionStatus.FAILED,
            v1.ExecutionStatus.CANCELLED,
        ):
            return ex
        time.sleep(0.02)


def one_round(client: Any) -> None:
    agent = client.agents.create_agent(
        v1.CreateAgentRequest(agent=v1.Agent(name="soak", model="gpt-4o-mini"))
    )
    client.agents.update_agent(
        v1.UpdateAgentRequest(
            agent=v1.Agent(id=agent.id, about="soaking"), update_mask=mintleaf.FieldMask(paths=["about"])
        )
    )
    task = client.tasks.create_task(
        v1.CreateTaskRequest(agent_id=agent.id, task=v1.Task(definition=Struct.from_dict(TASK)))
    )
    ids = [
        client.executions.create_execution(
            v1.CreateExecutionRequest(task_id=task.id, execution=v1.Execution())
        ).id
        for _ in range(4)
    ]
    streamed = list(client.executions.stream_transitions(v1.StreamTransitionsRequest(execution_id=ids[0])))
    assert streamed and streamed[-1].type == v1.TransitionType.FINISH, streamed[-1:]
    for eid in ids:
        ex = wait_done(client, eid)
        assert ex.status == v1.ExecutionStatus.SUCCEEDED, ex.error
    ask = client.tasks.create_task(
        v1.CreateTaskRequest(agent_id=agent.id, task=v1.Task(definition=Struct.from_dict(ASK)))
    )
    ex = client.executions.create_execution(
        v1.CreateExecutionRequest(task_id=ask.id, execution=v1.Execution())
    )
    while not (ex := client.executions.get_execution(v1.GetExecutionRequest(id=ex.id))).waits:
        time.sleep(0.02)
    client.executions.resume_execution(
        v1.ResumeExecutionRequest(id=ex.id, wait_id=ex.waits[0].id, input=Value.from_dict({"ok": True}))
    )
    assert wait_done(client, ex.id).status == v1.ExecutionStatus.SUCCEEDED
    session = client.sessions.create_session(v1.CreateSessionRequest(session=v1.Session(agent=agent.id)))
    for i in range(4):
        client.chat.chat(
            v1.ChatRequest(
                session_id=session.id, messages=[v1.ChatMessage(role="user", content=f"hello {i}")], save=True
            )
        )
    client.docs.create_doc(
        v1.CreateDocRequest(
            agent_id=agent.id, doc=v1.Doc(title="notes", content=["soak tests watch for leaks in long runs"])
        )
    )
    client.docs.search_docs(v1.SearchDocsRequest(agent_id=agent.id, text="leaks", limit=3))
    client.agents.delete_agent(v1.DeleteAgentRequest(id=agent.id))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--sample", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mintleaf-soak-"))
    model_port = work / "model.port"
    model = subprocess.Popen(
        [sys.executable, "-m", "mintleaf_server.llm.scripted", "--port-file", str(model_port)],
        stdout=subprocess.DEVNULL,
    )
    server: subprocess.Popen[bytes] | None = None
    try:
        url = f"http://127.0.0.1:{wait_for_file(model_port, model)}/v1"
        config = work / "mintleaf.toml"
        config.write_text(
            '[models]\ndefault = "gpt-4o-mini"\n[models.default_endpoint]\n'
            f'base_url = "{url}"\napi_key = "scripted"\n'
            '[embeddings]\nbackend = "local"\ndimensions = 256\n'
        )
        port_file = work / "server.port"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("MINTLEAF_") and k not in ("DATABASE_URL", "REDIS_URL")
        }
        env["MINTLEAF_CONFIG"] = str(config)
        server = subprocess.Popen(
            [sys.executable, "-m", "mintleaf_server.cli", "--data-dir", str(work / "data"), "serve",
             "--listen", "127.0.0.1:0", "--port-file", str(port_file)],
            stdout=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        target = f"127.0.0.1:{wait_for_file(port_file, server)}"
        key = wait_for_file(work / "data" / "api_key", server)
        stop = threading.Event()
        rounds = [0]
        errors: list[str] = []
        lock = threading.Lock()

        def worker() -> None:
            with mintleaf.Client(target, api_key=key) as client:
                while not stop.is_set():
                    try:
                        one_round(client)
                        with lock:
                            rounds[0] += 1
                    except Exception as exc:  # a soak reports failures, it does not stop at the first
                        with lock:
                            errors.append(f"{type(exc).__name__}: {exc}"[:300])

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(args.clients)]
        for t in threads:
            t.start()
        probe = mintleaf.Client(target, api_key=key)
        agent = probe.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="probe")))
        samples: list[dict[str, float]] = []
        end = time.monotonic() + args.minutes * 60
        last_rounds, last_t = 0, time.monotonic()
        print(f"soak: {args.minutes} min, {args.clients} clients, server pid {server.pid}")
        print("   t s   rss MB   fds  threads  rounds/s  GetAgent p50 ms  errors")
        started = time.monotonic()
        while time.monotonic() < end:
            lat = []
            window_end = time.monotonic() + args.sample
            while time.monotonic() < window_end:
                t0 = time.perf_counter()
                probe.agents.get_agent(v1.GetAgentRequest(id=agent.id))
                lat.append(time.perf_counter() - t0)
                time.sleep(0.05)
            now = time.monotonic()
            with lock:
                done, errs = rounds[0], len(errors)
            sample = {
                **proc_stats(server.pid),
                "t": now - started,
                "rounds_per_s": (done - last_rounds) / (now - last_t),
                "get_ms": statistics.median(lat) * 1e3,
                "errors": errs,
            }
            last_rounds, last_t = done, now
            samples.append(sample)
            print(
                f"{sample['t']:6.0f} {sample['rss_mb']:8.1f} {sample['fds']:5.0f} {sample['threads']:8.0f}"
                f" {sample['rounds_per_s']:9.2f} {sample['get_ms']:16.2f} {errs:7d}",
                flush=True,
            )
        stop.set()
        for t in threads:
            t.join(60)
        probe.close()
        quarter = max(1, len(samples) // 4)
        first, last = samples[1 : quarter + 1] or samples[:1], samples[-quarter:]

        def avg(rows: list[dict[str, float]], key: str) -> float:
            return statistics.mean(r[key] for r in rows)

        print(f"\nrounds completed {rounds[0]}, errors {len(errors)}")
        for key in ("rss_mb", "fds", "threads", "rounds_per_s", "get_ms"):
            a, b = avg(first, key), avg(last, key)
            print(
                f"{key:13s} first quarter {a:9.2f}  last quarter {b:9.2f}  ratio {b / a if a else float('nan'):.2f}"
            )
        for e in errors[:10]:
            print("error:", e)
        print(json.dumps({"samples": len(samples), "rounds": rounds[0], "errors": len(errors)}))
    finally:
        if server is not None:
            server.terminate()
            server.wait(60)
        model.terminate()
        model.wait(10)


if __name__ == "__main__":
    main()
