"""Browserbase fake: its REST API (sessions, debug URLs) and a CDP endpoint (websocket) that
speaks the few Chrome DevTools Protocol messages a page load needs."""

from __future__ import annotations

import itertools
import json
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve

from .httpserver import Request, Response

KEY = "bb-test-key"
PROJECT = "proj-1"

PAGES = {
    "https://example.org/": ("Example Domain", "Example Domain\nThis domain is for use in examples."),
    "https://example.org/about": ("About", "About us."),
}


class FakeCdp:
    """A browser-level CDP websocket: targets, flattened sessions, Page and Runtime basics."""

    def __init__(self) -> None:
        self.server: Server | None = None
        self.methods: list[str] = []
        self._ids = itertools.count(1)

    @property
    def url(self) -> str:
        assert self.server is not None
        port = next(iter(self.server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}/devtools/browser/fake"

    async def __aenter__(self) -> FakeCdp:
        self.server = await serve(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, ws: ServerConnection) -> None:
        sessions: dict[str, str] = {}  # sessionId -> current URL
        async for raw in ws:
            msg = json.loads(raw)
            method, params, sid = msg["method"], msg.get("params", {}), msg.get("sessionId")
            self.methods.append(method)
            result: dict[str, Any] = {}
            event: dict[str, Any] | None = None
            if method == "Target.createTarget":
                result = {"targetId": f"T{next(self._ids)}"}
            elif method == "Target.attachToTarget":
                new = f"S{next(self._ids)}"
                sessions[new] = "about:blank"
                result = {"sessionId": new}
            elif method == "Page.enable" and sid in sessions:
                result = {}
            elif method == "Page.navigate" and sid in sessions:
                url = params["url"]
                if url not in PAGES:
                    result = {"frameId": "F", "errorText": "net::ERR_NAME_NOT_RESOLVED"}
                else:
                    sessions[sid] = url
                    result = {"frameId": "F", "loaderId": "L"}
                    event = {"method": "Page.loadEventFired", "params": {"timestamp": 1.0}, "sessionId": sid}
            elif method == "Runtime.evaluate" and sid in sessions:
                title, text = PAGES.get(sessions[sid], ("", ""))
                result = {"result": {"type": "string", "value": json.dumps({"title": title, "text": text})}}
            elif method == "Target.closeTarget":
                result = {"success": True}
            else:
                await ws.send(
                    json.dumps(
                        {"id": msg["id"], "error": {"code": -32601, "message": f"'{method}' wasn't found"}}
                    )
                )
                continue
            # an unrelated event first, as browsers interleave them
            await ws.send(json.dumps({"method": "Target.targetInfoChanged", "params": {}}))
            await ws.send(
                json.dumps({"id": msg["id"], "result": result, **({"sessionId": sid} if sid else {})})
            )
            if event is not None:
                await ws.send(json.dumps(event))


class FakeBrowserbase:
    """REST: POST/GET /v1/sessions, GET/POST /v1/sessions/{id}, GET /v1/sessions/{id}/debug."""

    def __init__(self, cdp: FakeCdp) -> None:
        self.cdp = cdp
        self.sessions: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)

    def handler(self, request: Request) -> Response:
        if request.headers.get("x-bb-api-key") != KEY:
            return Response.json(
                {"statusCode": 401, "error": "Unauthorized", "message": "Invalid API key"}, 401
            )
        parts = request.path.strip("/").split("/")
        if parts[:2] != ["v1", "sessions"]:
            return Response.json({"message": "not found"}, 404)
        if len(parts) == 2 and request.method == "POST":
            body = request.json()
            if body.get("projectId") != PROJECT:
                return Response.json({"statusCode": 400, "message": "Invalid projectId"}, 400)
            sid = f"sess-{next(self._ids)}"
            session: dict[str, Any] = {
                "id": sid,
                "projectId": PROJECT,
                "status": "RUNNING",
                "connectUrl": self.cdp.url,
            }
            self.sessions[sid] = session
            return Response.json(session, 201)
        if len(parts) == 2:
            status = request.query.get("status")
            return Response.json([s for s in self.sessions.values() if status in (None, s["status"])])
        found = self.sessions.get(parts[2])
        if found is None:
            return Response.json({"statusCode": 404, "message": "Session not found"}, 404)
        if len(parts) == 4 and parts[3] == "debug":
            return Response.json(
                {
                    "debuggerUrl": "https://debug/1",
                    "debuggerFullscreenUrl": "https://debug/1?f",
                    "wsUrl": "wss://debug/1",
                    "pages": [],
                }
            )
        if request.method == "POST" and request.json().get("status") == "REQUEST_RELEASE":
            found["status"] = "COMPLETED"
        return Response.json(found)
