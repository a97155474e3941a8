"""The seed's Research Agent and Story and Comic Creator tasks, as written (their YOUR_... placeholders
replaced by this test's values, as a user would), run to success through the gRPC API against the
scripted model server and local fakes of brave, a Discord webhook and the OpenAI images API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from fakes import brave
from fakes.httpserver import FakeHttpServer, Response
from mintleaf import Struct, v1
from mintleaf_server.llm.scripted import Reply, ScriptedModelServer
from support.harness import ServerThread

SEED = Path(__file__).resolve().parents[2].parent / "shared" / "seed-tasks"
if not SEED.exists():  # CI clones the repository beside shared/
    SEED = Path("/work/shared/seed-tasks")

DONE = {v1.ExecutionStatus.SUCCEEDED, v1.ExecutionStatus.FAILED, v1.ExecutionStatus.CANCELLED}


class World:
    def __init__(
        self,
        server: ServerThread,
        model: ScriptedModelServer,
        brave_fake: FakeHttpServer,
        webhook: FakeHttpServer,
    ):
        self.server, self.model, self.brave, self.webhook = server, model, brave_fake, webhook


@pytest.fixture(scope="module")
def world(pg_url: str, redis_url: str, data_root: Path) -> Iterator[World]:
    model = ScriptedModelServer()
    brave_fake = FakeHttpServer(brave.handler)
    webhook = FakeHttpServer(lambda request: Response(status=204))
    # The fakes run on a loop of their own thread (the server thread's loop runs the app).
    import asyncio
    import threading

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def call(coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, loop).result(30)

    call(model.start())
    call(brave_fake.__aenter__())
    call(webhook.__aenter__())
    srv = ServerThread(
        pg_url,
        redis_url,
        data_root / "seed",
        models={
            "default": "gpt-4o",
            "endpoints": [{"match": "*", "base_url": model.base_url, "api_key": "test"}],
        },
        integrations={
            "brave": {"base_url": brave_fake.url},
            "dalle": {"base_url": model.base_url},
        },
        api_call_allow_networks=("127.0.0.0/8",),
    ).start()
    yield World(srv, model, brave_fake, webhook)
    srv.stop()
    call(webhook.__aexit__(None, None, None))
    call(brave_fake.__aexit__(None, None, None))
    call(model.stop())
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def wait_done(client, execution_id: str, timeout: float = 60) -> v1.Execution:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ex = client.executions.get_execution(v1.GetExecutionRequest(id=execution_id))
        if ex.status in DONE:
            return ex
        time.sleep(0.05)
    raise AssertionError(f"execution {execution_id} did not finish: {ex.status} {ex.error}")


def test_story_and_comic_creator(world: World) -> None:
    seed_agent = yaml.safe_load((SEED / "story-and-comic-creator.agent.yaml").read_text())
    task_yaml = (SEED / "story-and-comic-creator.yaml").read_text()
    world.model.script(
        # One line: the seed's regex (no MULTILINE/DOTALL) finds numbered panels within a line.
        Reply(
            text="Whiskers dreamed of the sky. 1. A cat watches birds 2. The cat builds wings 3. The cat jumps 4. The cat flies over the town"
        ),
        Reply(text="The Flying Feline"),
    )
    with world.server.client() as c:
        a = seed_agent["agent"]
        agent = c.agents.create_agent(
            v1.CreateAgentRequest(agent=v1.Agent(name=a["name"], model=a["model"], about=a["about"]))
        )
        tool = seed_agent["tools"][0]
        tool["integration"]["setup"]["api_key"] = "sk-test"  # the user's key in place of the placeholder
        c.tools.create_tool(
            v1.CreateToolRequest(
                agent_id=agent.id,
                tool=v1.Tool(
                    name=tool["name"],
                    description=tool["description"],
                    integration=v1.IntegrationDef(
                        provider="dalle",
                        method="generate_image",
                        setup=Struct.from_dict(tool["integration"]["setup"]),
                    ),
                ),
            )
        )
        task = c.tasks.create_task(v1.CreateTaskRequest(agent_id=agent.id, task=v1.Task(yaml=task_yaml)))
        ex = c.executions.create_execution(
            v1.CreateExecutionRequest(
                task_id=task.id, execution=v1.Execution(input=Struct.from_dict(seed_agent["execution_input"]))
            )
        )
        done = wait_done(c, ex.id)
        assert done.status == v1.ExecutionStatus.SUCCEEDED, done.error
        out = done.output.to_dict()
        assert out["title"] == "The Flying Feline"
        assert out["story"] == "Whiskers dreamed of the sky."
        assert len(out["comic_panels"]) == 4 and all(
            u.startswith("http://127.0.0.1:") for u in out["comic_panels"]
        )
        # The first prompt was rendered with the agent and the input.
        first = world.model.chat_requests[-2]["messages"]
        assert first[0]["content"].startswith("You are Storytelling Agent.")
        assert "A cat who learns to fly" in first[1]["content"]


def test_research_agent(world: World) -> None:
    task_yaml = (SEED / "research-agent.yaml").read_text()
    task_yaml = task_yaml.replace("YOUR_BRAVE_API_KEY", brave.KEY).replace(
        "YOUR_DISCORD_WEBHOOK_URL", world.webhook.url + "/api/webhooks/1/abc"
    )
    queries = "\n".join(f"query {i}" for i in range(5))
    world.model.script(Reply(text=queries), Reply(text="A fine summary of the findings."))
    before = len(world.webhook.requests)
    with world.server.client() as c:
        agent = c.agents.create_agent(
            v1.CreateAgentRequest(agent=v1.Agent(name="Research Assistant", model="gpt-4o"))
        )
        task = c.tasks.create_task(v1.CreateTaskRequest(agent_id=agent.id, task=v1.Task(yaml=task_yaml)))
        ex = c.executions.create_execution(
            v1.CreateExecutionRequest(
                task_id=task.id,
                execution=v1.Execution(input=Struct.from_dict({"topic": "quantum computing"})),
            )
        )
        done = wait_done(c, ex.id)
        assert done.status == v1.ExecutionStatus.SUCCEEDED, done.error
    searches = [r for r in world.brave.requests if r.path == "/web/search"]
    assert {r.query["q"] for r in searches} >= {f"query {i}" for i in range(5)}
    posted = world.webhook.requests[before:]
    assert len(posted) == 1
    body = posted[0].json()
    assert body["content"].startswith("**Research Summary for quantum computing**")
    assert "A fine summary of the findings." in body["content"]
    summary_prompt = world.model.chat_requests[-1]["messages"][0]["content"]
    assert "About <strong>query 3</strong>" in summary_prompt or "query 3" in summary_prompt
