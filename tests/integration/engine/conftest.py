"""A dedicated server for the engine tests that need effects: its own database (cloned from
nothing: migrated at start) and Redis database number, so no other worker takes its runs, and a
scripted effect runner plugged in through runtime.extras["effect_runner"]."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from mintleaf_server.engine import EffectDone, EffectFailed, EffectSuspended
from support.harness import ServerThread


class ScriptedEffects:
    """Answers tool_call effects by tool name:
    - `flaky`: fails (retryable) until attempt `arguments.ok_at`, then returns {"attempt": n};
    - `slow`: sleeps `arguments.seconds`, then returns them;
    - `ask`: suspends with one function call (the client answers with SubmitToolResults);
    - anything else: echoes the arguments."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, request: dict[str, Any], machine: Any) -> Any:
        self.calls.append(request)
        eid = request["effect_id"]
        tool = request.get("tool")
        args = request.get("arguments") or {}
        attempt = int(request.get("attempt", 1))
        if tool == "flaky":
            if attempt < int(args.get("ok_at", 2)):
                return EffectFailed(
                    effect_id=eid,
                    error={"kind": "connection", "message": f"try {attempt} failed", "retryable": True},
                )
            return EffectDone(effect_id=eid, output={"attempt": attempt})
        if tool == "slow":
            await asyncio.sleep(float(args.get("seconds", 1)))
            return EffectDone(effect_id=eid, output=args)
        if tool == "ask":
            call = {"id": request["call_id"], "type": "function", "name": "ask", "arguments": args}
            return EffectSuspended(effect_id=eid, tool_calls=[call], resume="output")
        return EffectDone(effect_id=eid, output=args)


def _fresh_database(pg_url: str) -> str:
    name = f"engine_fx_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(pg_url)
    url = urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return url


@pytest.fixture(scope="module")
def fx(pg_url: str, redis_url: str, data_root: Path) -> Iterator[tuple[ServerThread, ScriptedEffects]]:
    runner = ScriptedEffects()
    url = _fresh_database(pg_url)
    sep = "&" if "?" in redis_url else "?"
    saved = {k: os.environ.get(k) for k in ("MINTLEAF_ENGINE_SWEEP_SECONDS", "MINTLEAF_ENGINE_LEASE_TTL_MS")}
    os.environ["MINTLEAF_ENGINE_SWEEP_SECONDS"] = "0.3"
    os.environ["MINTLEAF_ENGINE_LEASE_TTL_MS"] = "1500"
    try:
        srv = ServerThread(url, f"{redis_url}{sep}db=3", data_root / f"fx-{uuid.uuid4().hex[:6]}")
        srv.app.runtime.extras["effect_runner"] = runner
        srv.start()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    yield srv, runner
    srv.stop()


@pytest.fixture
def fx_client(fx: tuple[ServerThread, ScriptedEffects]) -> Iterator[Any]:
    c = fx[0].client()
    yield c
    c.close()
