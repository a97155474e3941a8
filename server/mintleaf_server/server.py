"""The gRPC server: servicers, health checking, reflection, message limits, graceful drain.

`App` is used by the CLI (`mintleaf-server serve`), by tests (in-process, port 0) and by benchmarks.
Background work (the execution worker) registers start/stop hooks on the app, so an API-only
replica simply does not start it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ._proto.mintleaf.v1 import (
    agents_pb2,
    agents_pb2_grpc,
    chat_pb2,
    chat_pb2_grpc,
    docs_pb2,
    docs_pb2_grpc,
    executions_pb2,
    executions_pb2_grpc,
    secrets_pb2,
    secrets_pb2_grpc,
    sessions_pb2,
    sessions_pb2_grpc,
    tasks_pb2,
    tasks_pb2_grpc,
    tools_pb2,
    tools_pb2_grpc,
    users_pb2,
    users_pb2_grpc,
)
from .config import Settings
from .runtime import Runtime

if TYPE_CHECKING:
    from .metrics import Metrics

__all__ = ["SERVICE_NAMES", "App"]

log = logging.getLogger("mintleaf")

SERVICE_NAMES = tuple(
    m.DESCRIPTOR.services_by_name[name].full_name
    for m, name in (
        (agents_pb2, "AgentService"),
        (tools_pb2, "ToolService"),
        (users_pb2, "UserService"),
        (sessions_pb2, "SessionService"),
        (chat_pb2, "ChatService"),
        (tasks_pb2, "TaskService"),
        (executions_pb2, "ExecutionService"),
        (docs_pb2, "DocService"),
        (secrets_pb2, "SecretService"),
    )
)

Hook = Callable[[], Awaitable[None]]


class App:
    """One server process: runtime + gRPC server + background hooks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runtime = Runtime(settings)
        self.server: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer()
        self.port = 0
        self._stop_hooks: list[Hook] = []
        self.metrics: Metrics | None = None  # metrics: set when metrics_listen is set
        self.metrics_port = 0  # metrics: the port the /metrics endpoint bound (0: off)

    def on_stop(self, hook: Hook) -> None:
        self._stop_hooks.append(hook)

    async def start(self) -> int:
        await self._start_metrics()  # metrics: first, so a busy port fails before the stores start
        await self.runtime.start()
        limit = self.settings.limits.max_message_bytes
        self.server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),
            ],
            maximum_concurrent_rpcs=None,
        )
        self._add_servicers(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, reflection.SERVICE_NAME, health.SERVICE_NAME), self.server
        )
        if self.settings.tls_cert_file:
            credentials = grpc.ssl_server_credentials(
                [
                    (
                        Path(self.settings.tls_key_file).read_bytes(),
                        Path(self.settings.tls_cert_file).read_bytes(),
                    )
                ]
            )
            self.port = self.server.add_secure_port(self.settings.listen, credentials)
        else:
            self.port = self.server.add_insecure_port(self.settings.listen)
        if self.port == 0:
            raise RuntimeError(f"could not listen on {self.settings.listen}")
        await self.server.start()
        await self._start_background()
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    def _add_servicers(self, server: grpc.aio.Server) -> None:
        from .api.agents import AgentServicer, UserServicer
        from .api.requests import register_safely
        from .api.secrets import SecretServicer
        from .api.sessions import SessionServicer
        from .api.tasks import TaskServicer
        from .api.tools import ToolServicer

        rt = self.runtime  # every service's requests decoded safely (api/requests.py)
        register_safely(agents_pb2_grpc.add_AgentServiceServicer_to_server, AgentServicer(rt), server)
        register_safely(users_pb2_grpc.add_UserServiceServicer_to_server, UserServicer(rt), server)
        register_safely(tools_pb2_grpc.add_ToolServiceServicer_to_server, ToolServicer(rt), server)
        register_safely(sessions_pb2_grpc.add_SessionServiceServicer_to_server, SessionServicer(rt), server)
        register_safely(tasks_pb2_grpc.add_TaskServiceServicer_to_server, TaskServicer(rt), server)
        register_safely(secrets_pb2_grpc.add_SecretServiceServicer_to_server, SecretServicer(rt), server)
        register_safely(
            executions_pb2_grpc.add_ExecutionServiceServicer_to_server,
            _optional_servicer(
                "mintleaf_server.api.executions",
                "ExecutionServicer",
                rt,
                executions_pb2_grpc.ExecutionServiceServicer,
            ),
            server,
        )
        register_safely(
            docs_pb2_grpc.add_DocServiceServicer_to_server,
            _optional_servicer(
                "mintleaf_server.api.docs", "DocServicer", rt, docs_pb2_grpc.DocServiceServicer
            ),
            server,
        )
        register_safely(
            chat_pb2_grpc.add_ChatServiceServicer_to_server,
            _optional_servicer(
                "mintleaf_server.api.chat", "ChatServicer", rt, chat_pb2_grpc.ChatServiceServicer
            ),
            server,
        )

    async def _start_metrics(self) -> None:
        """Metrics: the Prometheus endpoint (docs/operations.md), on the app's own event loop; off
        unless `metrics_listen` is set. Stopped last of the stop hooks (registered first). Until
        the runtime has started a scrape shows the process metrics only."""
        if not self.settings.metrics_listen:
            return
        from .metrics import Metrics, MetricsEndpoint

        self.metrics = Metrics(self.runtime)
        self.runtime.extras["metrics"] = self.metrics
        endpoint = MetricsEndpoint(self.metrics, self.settings.metrics_listen)
        self.metrics_port = await endpoint.start()
        self.on_stop(endpoint.stop)
        log.info("metrics on http://%s:%d/metrics", endpoint.host, self.metrics_port)

    async def _start_background(self) -> None:
        if not self.settings.worker_enabled:
            return
        from .engine.effect_runner import EffectRunner
        from .engine.service import start_worker

        self.runtime.extras.setdefault("effect_runner", EffectRunner(self.runtime))
        stop = await start_worker(self.runtime)
        self.on_stop(stop)

    async def stop(self, grace: float | None = None) -> None:
        """Drains: refuse new calls, let in-flight ones finish within `grace`, stop background work."""
        grace = self.settings.shutdown_grace_seconds if grace is None else grace
        await self.health.enter_graceful_shutdown()
        if self.server is not None:
            await self.server.stop(grace)
        for hook in reversed(self._stop_hooks):
            try:
                await asyncio.wait_for(hook(), timeout=max(grace, 1.0))
            except Exception:
                log.exception("error while stopping background work")
        await self.runtime.close()


def _optional_servicer(module: str, name: str, rt: Runtime, fallback: Any) -> Any:
    """The servicer of a service whose issue has landed; the generated base (UNIMPLEMENTED) otherwise."""
    import importlib

    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return fallback()
    return cls(rt)
