"""Browserbase: remote browser sessions through its REST API ({base_url}, key in `X-BB-API-Key`),
and page loading through the Chrome DevTools Protocol on the session's `connectUrl`.

Methods: `load` (the default; the seed's `{urls}` → `{documents}`), and Julep's session operations
list_sessions, create_session, get_session, complete_session, get_live_urls, get_connect_url,
install_extension_from_github.

Design note (CDP). A few CDP commands over one browser-level websocket (the `websockets`
package), with flattened target sessions: Target.createTarget → Target.attachToTarget →
Page.enable → Page.navigate → wait for Page.loadEventFired → Runtime.evaluate (title and
innerText) → Target.closeTarget. Rejected: Playwright (a large dependency with its own browser
download, for five commands) and HTTP fetches of the URLs (not what a browser renders). A
`connect_url`/`api_url` given in setup is the user's choice and passes the address policy; the
`connectUrl` the configured API returns is trusted like the API itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection

from ..errors import ToolArgumentsInvalid, ToolTimeout
from ..network import resolve_checked
from .base import IntegrationCall, Method, Provider

__all__ = ["PROVIDER", "CdpClient"]

_MAX_DOCUMENT = 200_000  # characters of page text kept per URL


def _api(call: IntegrationCall) -> tuple[str, bool]:
    """The API base URL and whether it must be guarded (setup's api_url is the user's)."""
    chosen = call.user_setup.get("api_url")
    if chosen:
        return str(chosen).rstrip("/"), True
    return call.base_url, False


def _headers(call: IntegrationCall) -> dict[str, str]:
    return {"X-BB-API-Key": str(call.setting("api_key", required=True)), "Accept": "application/json"}


async def _rest(call: IntegrationCall, method: str, path: str, **kwargs: Any) -> Any:
    base, guarded = _api(call)
    headers = {**_headers(call), **kwargs.pop("headers", {})}
    return await call.request_json(method, f"{base}{path}", guarded=guarded, headers=headers, **kwargs)


def _session_id(call: IntegrationCall) -> str:
    sid = call.arguments.get("id") or call.setting("session_id")
    if not sid:
        raise ToolArgumentsInvalid("id", "is required (or setup session_id)")
    return str(sid)


async def list_sessions(call: IntegrationCall) -> Any:
    params = {"status": call.arguments["status"]} if call.arguments.get("status") else None
    return await _rest(call, "GET", "/sessions", params=params)


async def create_session(call: IntegrationCall) -> Any:
    body: dict[str, Any] = {
        "projectId": call.arguments.get("projectId") or call.setting("project_id", required=True)
    }
    for key in ("extensionId", "browserSettings", "timeout", "keepAlive", "proxies", "region"):
        if key in call.arguments:
            body[key] = call.arguments[key]
    return await _rest(call, "POST", "/sessions", json=body)


async def get_session(call: IntegrationCall) -> Any:
    return await _rest(call, "GET", f"/sessions/{_session_id(call)}")


async def complete_session(call: IntegrationCall) -> dict[str, Any]:
    body = {"projectId": call.setting("project_id", required=True), "status": "REQUEST_RELEASE"}
    await _rest(call, "POST", f"/sessions/{_session_id(call)}", json=body)
    return {"success": True}


async def get_live_urls(call: IntegrationCall) -> Any:
    return await _rest(call, "GET", f"/sessions/{_session_id(call)}/debug")


async def get_connect_url(call: IntegrationCall) -> dict[str, Any]:
    session = await _rest(call, "GET", f"/sessions/{_session_id(call)}")
    url = (session or {}).get("connectUrl") if isinstance(session, Mapping) else None
    if not url:
        raise call.error(200, "the session has no connectUrl")
    return {"url": url}


async def install_extension_from_github(call: IntegrationCall) -> dict[str, Any]:
    repo = str(call.arguments["repositoryName"]).strip("/")
    ref = str(call.arguments.get("ref") or "main")
    github = str(call.config.get("github_base_url") or "https://github.com").rstrip("/")
    _, archive = await call.request(
        "GET", f"{github}/{repo}/archive/refs/heads/{ref}.zip", follow_redirects=True
    )
    result = await _rest(
        call,
        "POST",
        "/extensions",
        files={"file": (f"{repo.split('/')[-1]}.zip", archive, "application/zip")},
    )
    return {"id": (result or {}).get("id")}


class CdpClient:
    """Just enough of the Chrome DevTools Protocol: numbered commands, buffered events."""

    def __init__(self, ws: ClientConnection, timeout: float) -> None:
        self.ws = ws
        self.timeout = timeout
        self._next = 0
        self._events: list[dict[str, Any]] = []

    async def _receive(self) -> dict[str, Any]:
        raw = await self.ws.recv()
        message = json.loads(raw)
        if not isinstance(message, dict):
            raise ValueError("CDP message is not an object")
        return message

    async def send(
        self, method: str, params: Mapping[str, Any] | None = None, session_id: str | None = None
    ) -> Any:
        self._next += 1
        mid = self._next
        message: dict[str, Any] = {"id": mid, "method": method, "params": dict(params or {})}
        if session_id:
            message["sessionId"] = session_id
        await self.ws.send(json.dumps(message))
        async with asyncio.timeout(self.timeout):
            while True:
                reply = await self._receive()
                if reply.get("id") == mid:
                    if "error" in reply:
                        err = reply["error"]
                        text = err.get("message") if isinstance(err, Mapping) else str(err)
                        raise RuntimeError(f"{method}: {text}")
                    return reply.get("result") or {}
                if "method" in reply:
                    self._events.append(reply)

    async def wait_event(self, method: str, session_id: str | None, timeout: float) -> dict[str, Any]:
        def match(e: dict[str, Any]) -> bool:
            return e.get("method") == method and (session_id is None or e.get("sessionId") == session_id)

        for i, event in enumerate(self._events):
            if match(event):
                return self._events.pop(i)
        async with asyncio.timeout(timeout):
            while True:
                message = await self._receive()
                if match(message):
                    return message
                if "method" in message:
                    self._events.append(message)


async def _open_ws(url: str, call: IntegrationCall, guarded: bool) -> ClientConnection:
    kwargs: dict[str, Any] = {}
    if guarded:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ToolArgumentsInvalid("connect_url", "must be a ws:// or wss:// URL")
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        ip = await resolve_checked(parts.hostname, port, call.ctx.allow_networks(), call.ctx.resolver)
        sock = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (ip, port)), call.timeout)
        except BaseException:
            sock.close()
            raise
        kwargs["sock"] = sock
        if parts.scheme == "wss":
            kwargs["server_hostname"] = parts.hostname
    return await websockets.connect(
        url,
        proxy=None,
        open_timeout=call.timeout,
        max_size=call.max_response_bytes,
        compression=None,
        **kwargs,
    )


async def _load_page(cdp: CdpClient, url: str, timeout: float) -> dict[str, Any]:
    target = await cdp.send("Target.createTarget", {"url": "about:blank"})
    target_id = target["targetId"]
    attached = await cdp.send("Target.attachToTarget", {"targetId": target_id, "flatten": True})
    sid = attached["sessionId"]
    try:
        await cdp.send("Page.enable", session_id=sid)
        nav = await cdp.send("Page.navigate", {"url": url}, session_id=sid)
        if nav.get("errorText"):
            return {"page_content": "", "metadata": {"url": url, "error": nav["errorText"]}}
        await cdp.wait_event("Page.loadEventFired", sid, timeout)
        evaluated = await cdp.send(
            "Runtime.evaluate",
            {
                "expression": "JSON.stringify({title: document.title, text: document.body ? document.body.innerText : ''})",
                "returnByValue": True,
            },
            session_id=sid,
        )
        value = json.loads(((evaluated.get("result") or {}).get("value")) or "{}")
        return {
            "page_content": str(value.get("text") or "")[:_MAX_DOCUMENT],
            "metadata": {"url": url, "title": value.get("title") or ""},
        }
    finally:
        with contextlib.suppress(Exception):  # closing is best effort; the page's result stands
            await cdp.send("Target.closeTarget", {"targetId": target_id})


async def load(call: IntegrationCall) -> dict[str, Any]:
    urls = call.arguments["urls"]
    created: str | None = None
    session_id = call.setting("session_id")
    connect_url = call.user_setup.get("connect_url")
    guarded_ws = bool(connect_url)
    if not connect_url:
        if session_id:
            session = await _rest(call, "GET", f"/sessions/{session_id}")
        else:
            session = await _rest(
                call, "POST", "/sessions", json={"projectId": call.setting("project_id", required=True)}
            )
            created = str((session or {}).get("id") or "") or None
        connect_url = (session or {}).get("connectUrl") if isinstance(session, Mapping) else None
        guarded_ws = _api(call)[1]
        if not connect_url:
            raise call.error(200, "the session has no connectUrl")
    documents: list[dict[str, Any]] = []
    try:
        try:
            ws = await _open_ws(str(connect_url), call, guarded_ws)
        except (OSError, websockets.exceptions.WebSocketException) as exc:
            raise call.error(
                0, f"could not open the browser connection ({exc.__class__.__name__})", retryable=True
            ) from None
        async with ws:
            cdp = CdpClient(ws, call.timeout)
            for url in urls:
                try:
                    documents.append(await _load_page(cdp, str(url), call.timeout))
                except TimeoutError:
                    raise ToolTimeout(
                        f"browserbase: loading a page timed out after {call.timeout:g}s"
                    ) from None
                except RuntimeError as exc:
                    documents.append({"page_content": "", "metadata": {"url": url, "error": str(exc)[:300]}})
                except websockets.exceptions.WebSocketException as exc:
                    raise call.error(
                        0, f"the browser connection failed ({exc.__class__.__name__})", retryable=True
                    ) from None
    finally:
        if created:
            try:
                body = {"projectId": call.setting("project_id"), "status": "REQUEST_RELEASE"}
                await _rest(call, "POST", f"/sessions/{created}", json=body)
            except Exception:  # the session times out on its own; releasing is a courtesy
                pass
    return {"documents": documents}


def _m(
    name: str, description: str, run: Any, properties: dict[str, Any], required: list[str] | None = None
) -> Method:
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return Method(name=name, description=description, arguments=schema, run=run)


_ID = {"id": {"type": "string", "description": "The session id (default: setup session_id)."}}

PROVIDER = Provider(
    name="browserbase",
    description="Load web pages in a remote browser (Browserbase) and manage its sessions.",
    default_base_url="https://api.browserbase.com/v1",
    setup_keys={
        "api_key": ("api_key",),
        "project_id": ("project_id", "projectId"),
        "session_id": ("session_id",),
    },
    methods={
        "load": _m(
            "load",
            "Load pages in a browser; returns their text as documents.",
            load,
            {
                "urls": {
                    "type": "array",
                    "items": {"type": "string", "minLength": 1},
                    "minItems": 1,
                    "maxItems": 50,
                }
            },
            ["urls"],
        ),
        "list_sessions": _m(
            "list_sessions",
            "List sessions.",
            list_sessions,
            {"status": {"type": "string", "enum": ["RUNNING", "ERROR", "TIMED_OUT", "COMPLETED"]}},
        ),
        "create_session": _m(
            "create_session",
            "Create a session.",
            create_session,
            {
                "projectId": {"type": "string"},
                "extensionId": {"type": "string"},
                "browserSettings": {"type": "object"},
                "timeout": {"type": "integer", "minimum": 60, "maximum": 21600},
                "keepAlive": {"type": "boolean"},
                "proxies": {"type": ["boolean", "array"]},
                "region": {"type": "string"},
            },
        ),
        "get_session": _m("get_session", "Get a session.", get_session, _ID),
        "complete_session": _m("complete_session", "Release a session.", complete_session, _ID),
        "get_live_urls": _m("get_live_urls", "Debugger URLs of a session.", get_live_urls, _ID),
        "get_connect_url": _m("get_connect_url", "The CDP connect URL of a session.", get_connect_url, _ID),
        "install_extension_from_github": _m(
            "install_extension_from_github",
            "Upload a browser extension from a GitHub repository.",
            install_extension_from_github,
            {"repositoryName": {"type": "string", "minLength": 3}, "ref": {"type": "string"}},
            ["repositoryName"],
        ),
    },
)
