"""Mintleaf Python SDK.

The messages and service stubs are generated from proto/ with betterproto2 (`mintleaf.v1`); this
module adds what every caller needs: a channel that sends the API key with every call.

    import mintleaf
    client = mintleaf.Client("127.0.0.1:50051", api_key="ml_...")
    agent = client.agents.create_agent(mintleaf.v1.CreateAgentRequest(agent=mintleaf.v1.Agent(name="Ada")))
"""

from __future__ import annotations

from typing import Any

import grpc

from ._gen.google.protobuf import FieldMask, ListValue, Struct, Value
from ._gen.mintleaf import v1

__all__ = ["Client", "FieldMask", "ListValue", "Struct", "Value", "v1"]


class _AuthInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
):
    def __init__(self, api_key: str) -> None:
        self._metadata = (("authorization", f"Bearer {api_key}"),)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_with_metadata(details, self._metadata), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_with_metadata(details, self._metadata), request)


class _Details(grpc.ClientCallDetails):  # type: ignore[misc]
    def __init__(self, base: Any, metadata: tuple[tuple[str, str], ...]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = tuple(base.metadata or ()) + metadata
        self.credentials = base.credentials
        self.wait_for_ready = base.wait_for_ready
        self.compression = getattr(base, "compression", None)


def _with_metadata(details: Any, metadata: tuple[tuple[str, str], ...]) -> Any:
    return _Details(details, metadata)


class Client:
    """A synchronous client: one stub per service, all sharing one authenticated channel.

    `target` is host:port; `api_key` is sent as `authorization: Bearer <key>` on every call."""

    def __init__(self, target: str, api_key: str, *, channel: grpc.Channel | None = None) -> None:
        self._raw = channel or grpc.insecure_channel(target)
        self.channel = grpc.intercept_channel(self._raw, _AuthInterceptor(api_key))
        self.agents = v1.AgentServiceStub(self.channel)
        self.tools = v1.ToolServiceStub(self.channel)
        self.users = v1.UserServiceStub(self.channel)
        self.sessions = v1.SessionServiceStub(self.channel)
        self.chat = v1.ChatServiceStub(self.channel)
        self.tasks = v1.TaskServiceStub(self.channel)
        self.executions = v1.ExecutionServiceStub(self.channel)
        self.docs = v1.DocServiceStub(self.channel)
        self.secrets = v1.SecretServiceStub(self.channel)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
