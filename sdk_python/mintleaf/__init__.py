"""Mintleaf Python SDK.

The messages and service stubs are generated from proto/ with betterproto2 (`mintleaf.v1`); this
package adds what every caller needs: the API key on every call, errors with the server's details
decoded (MintleafError), and waiting for an execution (`wait_for`). Requests are the generated
messages; there is deliberately no hand-written method per RPC (it would duplicate the contract).

    import mintleaf
    from mintleaf import v1

    client = mintleaf.Client("127.0.0.1:50051", api_key="ml_...")
    agent = client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="Ada")))

`mintleaf.AsyncClient` is the asyncio twin (grpclib). Plain Python values convert with
`Struct.from_dict({...})`, `Value.from_dict(...)` and back with `.to_dict()`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc

from ._gen.google.protobuf import FieldMask, ListValue, Struct, Value
from ._gen.mintleaf import v1
from ._grpc import AuthInterceptor, ErrorChannel
from .aio import AsyncClient
from .errors import FieldViolation, MintleafError
from .waiting import TERMINAL, wait_for_execution, wait_for_execution_async

__all__ = [
    "TERMINAL",
    "AsyncClient",
    "Client",
    "FieldMask",
    "FieldViolation",
    "ListValue",
    "MintleafError",
    "Struct",
    "Value",
    "v1",
    "wait_for_execution",
    "wait_for_execution_async",
]


class Client:
    """A synchronous client: one stub per service, all sharing one authenticated channel.

    `target` is host:port; `api_key` is sent as `authorization: Bearer <key>` on every call. Every
    failed call of the service attributes raises MintleafError (a grpc.RpcError). `channel` is the
    plain authenticated grpcio channel (raw calls on it raise grpcio's own errors)."""

    def __init__(
        self,
        target: str,
        api_key: str,
        *,
        channel: grpc.Channel | None = None,
        tls: bool = False,
        root_certificates: bytes | None = None,
    ) -> None:
        """`tls=True` (or `root_certificates`, PEM bytes of the CA to trust instead of the system's)
        speaks TLS to a server started with `tls_cert_file`/`tls_key_file`."""
        if channel is None and (tls or root_certificates is not None):
            channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates))
        self._raw = channel or grpc.insecure_channel(target)
        self.channel = grpc.intercept_channel(self._raw, AuthInterceptor(api_key))
        calls = ErrorChannel(self.channel)
        self.agents = v1.AgentServiceStub(calls)
        self.tools = v1.ToolServiceStub(calls)
        self.users = v1.UserServiceStub(calls)
        self.sessions = v1.SessionServiceStub(calls)
        self.chat = v1.ChatServiceStub(calls)
        self.tasks = v1.TaskServiceStub(calls)
        self.executions = v1.ExecutionServiceStub(calls)
        self.docs = v1.DocServiceStub(calls)
        self.secrets = v1.SecretServiceStub(calls)

    def wait_for(
        self,
        execution_id: str,
        *,
        until_awaiting_input: bool = False,
        on_transition: Callable[[v1.Transition], object] | None = None,
        timeout: float | None = None,
    ) -> v1.Execution:
        """Streams the execution's transitions (calling `on_transition` with each, in order) until it
        has ended, or paused for input with `until_awaiting_input`, and returns it then (its `output`
        or `error` set). Raises MintleafError DEADLINE_EXCEEDED after `timeout` seconds."""
        executions = self.executions
        deadline = None
        if timeout is not None:
            deadline = time.monotonic() + timeout
            executions = v1.ExecutionServiceStub(ErrorChannel(self.channel, deadline=deadline))
        return wait_for_execution(
            executions,
            execution_id,
            until_awaiting_input=until_awaiting_input,
            on_transition=on_transition,
            deadline=deadline,
        )

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
