"""A tiny HTTP/1.1 server on 127.0.0.1 for provider fakes: asyncio streams + h11.

`FakeHttpServer(handler)`: `handler(request) -> Response` (sync or async). Every request is
recorded in `requests`. A Response may stream its body in chunks with a delay between them."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import h11


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.target).query).items()}

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    chunks: Iterable[bytes] | None = None  # streamed (chunked) instead of `body`
    chunk_delay: float = 0.0
    delay: float = 0.0  # before the status line

    @classmethod
    def json(cls, value: Any, status: int = 200, **kw: Any) -> Response:
        return cls(
            status,
            json.dumps(value).encode(),
            {"Content-Type": "application/json", **kw.pop("headers", {})},
            **kw,
        )


Handler = Callable[[Request], "Response | Awaitable[Response]"]


class FakeHttpServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> FakeHttpServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._read(conn, reader)
                if request is None:
                    return
                self.requests.append(request)
                result = self.handler(request)
                response = await result if inspect.isawaitable(result) else result
                await self._write(conn, writer, response)
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def _read(self, conn: h11.Connection, reader: asyncio.StreamReader) -> Request | None:
        head: h11.Request | None = None
        body = b""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                if not data and head is None:
                    return None
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                headers = {k.decode().lower(): v.decode() for k, v in head.headers}
                return Request(head.method.decode(), head.target.decode(), headers, body)
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _write(self, conn: h11.Connection, writer: asyncio.StreamWriter, response: Response) -> None:
        if response.delay:
            await asyncio.sleep(response.delay)
        headers = [(k, v) for k, v in response.headers.items()]
        if response.chunks is None:
            headers.append(("Content-Length", str(len(response.body))))
        else:
            headers.append(("Transfer-Encoding", "chunked"))
        writer.write(conn.send(h11.Response(status_code=response.status, headers=headers)) or b"")
        if response.chunks is None:
            writer.write(conn.send(h11.Data(data=response.body)) or b"")
        else:
            for chunk in response.chunks:
                writer.write(conn.send(h11.Data(data=chunk)) or b"")
                await writer.drain()
                if response.chunk_delay:
                    await asyncio.sleep(response.chunk_delay)
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()
