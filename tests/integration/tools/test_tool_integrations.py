"""Each integration against a local server speaking the provider's HTTP API (SMTP for email),
success and error paths."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from fakes import brave, openai_images, spider, weather, wikipedia
from fakes.browserbase import KEY as BB_KEY
from fakes.browserbase import PROJECT, FakeBrowserbase, FakeCdp
from fakes.httpserver import FakeHttpServer
from fakes.toolkit import LoopbackOnlyTransport, context, tool
from mintleaf_server.tools import (
    IntegrationError,
    ToolAddressRefused,
    ToolArgumentsInvalid,
    ToolSetupInvalid,
    run_tool,
)


def _integration(
    name: str, provider: str, method: str | None = None, setup: dict[str, Any] | None = None
) -> Any:
    body: dict[str, Any] = {"provider": provider}
    if method:
        body["method"] = method
    if setup is not None:
        body["setup"] = setup
    return tool({"name": name, "type": "integration", "integration": body})


def _ctx(provider: str, base_url: str, **extra: Any) -> Any:
    return context(
        integrations={provider: {"base_url": base_url, **extra}}, transport=LoopbackOnlyTransport()
    )


async def test_brave_search_returns_text() -> None:
    async with FakeHttpServer(brave.handler) as srv:
        t = _integration("web_search", "brave", setup={"api_key": brave.KEY})
        out = await run_tool(t, {"query": "turing"}, _ctx("brave", srv.url))
        assert out["result"].startswith(
            "Title: About turing\nURL: https://example.org/1\nSnippet: All on turing."
        )
        assert srv.requests[0].query == {"q": "turing", "count": "10"}
        bad = _integration("web_search", "brave", setup={"api_key": "wrong-key-123"})
        with pytest.raises(IntegrationError) as info:
            await run_tool(bad, {"query": "turing"}, _ctx("brave", srv.url))
    assert info.value.provider == "brave" and info.value.status == 422 and not info.value.retryable
    assert "invalid" in info.value.message and "wrong-key-123" not in info.value.message


async def test_weather() -> None:
    async with FakeHttpServer(weather.handler) as srv:
        t = _integration("weather_check", "weather", setup={"openweathermap_api_key": weather.KEY})
        out = await run_tool(t, {"location": "New York"}, _ctx("weather", srv.url))
        assert "In New York, the current weather" in out["result"] and "light rain" in out["result"]
        assert "Current: 12.5°C" in out["result"]
        with pytest.raises(IntegrationError, match="city not found") as nf:
            await run_tool(t, {"location": "Nowhere"}, _ctx("weather", srv.url))
        assert nf.value.status == 404
        with pytest.raises(IntegrationError) as info:
            await run_tool(
                _integration("w", "weather", setup={"openweathermap_api_key": "nope-nope"}),
                {"location": "Paris"},
                _ctx("weather", srv.url),
            )
    assert (
        info.value.status == 401
        and "credentials" in info.value.message
        and "nope-nope" not in info.value.message
    )


async def test_wikipedia() -> None:
    async with FakeHttpServer(wikipedia.handler) as srv:
        t = _integration("wiki", "wikipedia")
        out = await run_tool(t, {"query": "turing"}, _ctx("wikipedia", f"{srv.url}/w/api.php"))
        docs = out["documents"]
        assert [d["metadata"]["title"] for d in docs] == ["Alan Turing", "Turing machine"]  # load_max_docs 2
        assert docs[0]["metadata"]["summary"] == "Alan Turing was an English mathematician."
        assert docs[0]["metadata"]["source"] == "https://en.wikipedia.org/wiki/Alan_Turing"
        out = await run_tool(
            t, {"query": "zebra", "load_max_docs": 5}, _ctx("wikipedia", f"{srv.url}/w/api.php")
        )
        assert out == {"documents": []}
        with pytest.raises(IntegrationError, match="Unrecognized"):
            await run_tool(t, {"query": "x"}, _ctx("wikipedia", f"{srv.url}/wrong.php"))


async def test_spider() -> None:
    async with FakeHttpServer(spider.handler) as srv:
        t = _integration("crawler", "spider", setup={"spider_api_key": spider.KEY})
        out = await run_tool(t, {"url": "https://example.org"}, _ctx("spider", srv.url))
        assert srv.requests[-1].path == "/scrape"
        assert out["documents"] == [
            {
                "page_content": "# Page 0 of https://example.org",
                "metadata": {
                    "url": "https://example.org/0",
                    "status": 200,
                    "error": None,
                    "costs": {"total_cost": 0.0001},
                },
            }
        ]
        out = await run_tool(
            t,
            {"url": "https://example.org", "mode": "crawl", "params": {"limit": 3}},
            _ctx("spider", srv.url),
        )
        assert len(out["documents"]) == 3 and srv.requests[-1].json()["limit"] == 3
        with pytest.raises(IntegrationError) as info:
            await run_tool(
                _integration("c", "spider", setup={"api_key": "bad-key-xyz"}),
                {"url": "https://e"},
                _ctx("spider", srv.url),
            )
    assert info.value.status == 401 and "bad-key-xyz" not in info.value.message


async def test_dalle_generates_image_url() -> None:
    async with FakeHttpServer(openai_images.handler) as srv:
        t = _integration("image_generator", "dalle", "generate_image", {"api_key": openai_images.KEY})
        out = await run_tool(t, {"description": "A cat who learns to fly"}, _ctx("dalle", f"{srv.url}/v1"))
        assert out["image"]["url"].startswith("https://images.example/")
        body = srv.requests[-1].json()
        assert body["prompt"] == "A cat who learns to fly" and body["model"] == "dall-e-3" and body["n"] == 1
        out = await run_tool(t, {"prompt": "alias"}, _ctx("dalle", f"{srv.url}/v1"))
        assert srv.requests[-1].json()["prompt"] == "alias"
        bad = _integration("image_generator", "dalle", "generate_image", {"api_key": "sk-wrong-key"})
        with pytest.raises(IntegrationError) as info:
            await run_tool(bad, {"description": "x"}, _ctx("dalle", f"{srv.url}/v1"))
    assert info.value.status == 401 and "sk-wrong-key" not in info.value.message


async def test_browserbase_loads_pages_over_cdp() -> None:
    async with FakeCdp() as cdp:
        fake = FakeBrowserbase(cdp)
        async with FakeHttpServer(fake.handler) as srv:
            t = _integration("browser", "browserbase", setup={"api_key": BB_KEY, "project_id": PROJECT})
            ctx = _ctx("browserbase", f"{srv.url}/v1")
            out = await run_tool(t, {"urls": ["https://example.org/", "https://nowhere.example/"]}, ctx)
            docs = out["documents"]
            assert docs[0] == {
                "page_content": "Example Domain\nThis domain is for use in examples.",
                "metadata": {"url": "https://example.org/", "title": "Example Domain"},
            }
            assert docs[1]["metadata"]["error"] == "net::ERR_NAME_NOT_RESOLVED"
            assert "Page.loadEventFired" not in cdp.methods and "Runtime.evaluate" in cdp.methods
            assert [s["status"] for s in fake.sessions.values()] == ["COMPLETED"]  # released

            ops = {
                m: _integration("bb", "browserbase", m, {"api_key": BB_KEY, "project_id": PROJECT})
                for m in (
                    "create_session",
                    "list_sessions",
                    "get_session",
                    "get_live_urls",
                    "complete_session",
                    "get_connect_url",
                )
            }
            session = await run_tool(ops["create_session"], {}, ctx)
            assert session["status"] == "RUNNING"
            listed = await run_tool(ops["list_sessions"], {"status": "RUNNING"}, ctx)
            assert [s["id"] for s in listed] == [session["id"]]
            assert (await run_tool(ops["get_session"], {"id": session["id"]}, ctx))["id"] == session["id"]
            assert (await run_tool(ops["get_live_urls"], {"id": session["id"]}, ctx))[
                "debuggerUrl"
            ] == "https://debug/1"
            assert (await run_tool(ops["get_connect_url"], {"id": session["id"]}, ctx)) == {"url": cdp.url}
            assert await run_tool(ops["complete_session"], {"id": session["id"]}, ctx) == {"success": True}
            with pytest.raises(IntegrationError, match="Session not found") as nf:
                await run_tool(ops["get_session"], {"id": "missing"}, ctx)
            assert nf.value.status == 404
            with pytest.raises(ToolArgumentsInvalid, match="'urls'"):
                await run_tool(t, {"urls": []}, ctx)
            bad = _integration("browser", "browserbase", setup={"api_key": "bb-wrong", "project_id": PROJECT})
            with pytest.raises(IntegrationError) as info:
                await run_tool(bad, {"urls": ["https://example.org/"]}, ctx)
            assert info.value.status == 401 and "bb-wrong" not in info.value.message
            # a connect_url named in setup is the user's choice: the address policy applies
            chosen = _integration("browser", "browserbase", setup={"api_key": BB_KEY, "connect_url": cdp.url})
            with pytest.raises(ToolAddressRefused):
                await run_tool(chosen, {"urls": ["https://example.org/"]}, ctx)
            allowed = context(
                integrations={"browserbase": {"base_url": f"{srv.url}/v1"}},
                allow=["127.0.0.0/8"],
                transport=LoopbackOnlyTransport(),
            )
            out = await run_tool(chosen, {"urls": ["https://example.org/about"]}, allowed)
            assert out["documents"][0]["metadata"]["title"] == "About"


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    ok = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == b"mailer"
        and auth_data.password == b"pw-correct"
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def smtp_server() -> Any:
    inbox = _Inbox()
    controller = Controller(
        inbox, hostname="127.0.0.1", port=_free_port(), authenticator=_authenticator, auth_require_tls=False
    )
    controller.start()
    yield controller, inbox
    controller.stop()


async def test_email_over_smtp(smtp_server: Any) -> None:
    controller, inbox = smtp_server
    args = {"to": "ada@example.org", "from": "bot@example.org", "subject": "Hello", "body": "Hi Ada"}
    server_table = {"email": {"host": "127.0.0.1", "port": controller.port}}
    t = _integration("mail", "email", setup={"user": "mailer", "password": "pw-correct"})
    out = await run_tool(t, args, context(integrations=server_table))
    assert out == {"success": True}
    envelope = inbox.messages[0]
    assert envelope.mail_from == "bot@example.org" and envelope.rcpt_tos == ["ada@example.org"]
    assert b"Subject: Hello" in envelope.content and b"Hi Ada" in envelope.content

    bad = _integration("mail", "email", setup={"user": "mailer", "password": "pw-wrong"})
    with pytest.raises(IntegrationError) as info:
        await run_tool(bad, args, context(integrations=server_table))
    assert info.value.status == 535 and "pw-wrong" not in info.value.message

    # a host from the tool's setup is the user's: loopback is refused unless allowed
    chosen = _integration(
        "mail",
        "email",
        setup={"host": "127.0.0.1", "port": controller.port, "user": "mailer", "password": "pw-correct"},
    )
    with pytest.raises(ToolAddressRefused):
        await run_tool(chosen, args, context())
    assert await run_tool(chosen, {**args, "to": ["a@x.org", "b@x.org"]}, context(allow=["127.0.0.0/8"])) == {
        "success": True
    }
    assert inbox.messages[-1].rcpt_tos == ["a@x.org", "b@x.org"]

    with pytest.raises(ToolSetupInvalid, match="'host'"):
        await run_tool(_integration("mail", "email"), args, context())
    with pytest.raises(IntegrationError) as refused:
        await run_tool(
            _integration("mail", "email"),
            args,
            context(integrations={"email": {"host": "127.0.0.1", "port": _free_port()}}),
        )
    assert refused.value.retryable
