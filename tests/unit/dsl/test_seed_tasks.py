"""Every task of the seed README parses and validates as written, each string read as the seed's
comments mean it; the step-type table's fragments parse, and validation names what they leave
undefined (../shared/seed-tasks/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mintleaf_server.dsl import (
    Expression,
    ForeachStep,
    MapReduceStep,
    PromptStep,
    ReturnStep,
    Task,
    TaskInvalid,
    Template,
    Text,
    ToolCallStep,
    ToolDef,
    explain,
    parse_task,
    parse_tool,
    validate_input,
)

SEEDS = Path(__file__).resolve().parents[4] / "shared" / "seed-tasks"
if not SEEDS.is_dir():  # the repository checked out on its own: the lead's copy of the shared docs
    SEEDS = Path("/work/shared/seed-tasks")


def seed(name: str) -> str:
    return (SEEDS / name).read_text()


def story_agent() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(seed("story-and-comic-creator.agent.yaml"))
    return loaded


def agent_tools() -> list[ToolDef]:
    tools = []
    for i, raw in enumerate(story_agent()["tools"]):
        tool, problems = parse_tool(raw, f"tools[{i}]")
        assert problems == [] and tool is not None
        tools.append(tool)
    return tools


def story_task() -> Task:
    return parse_task(seed("story-and-comic-creator.yaml"), agent_tools=[t.name for t in agent_tools()])


# -- Research Agent --------------------------------------------------------------------------------


def test_research_agent() -> None:
    task = parse_task(seed("research-agent.yaml"))
    assert task.name == "Research Agent"
    search, discord = task.tools
    assert (search.name, search.type, search.spec["provider"]) == ("web_search", "integration", "brave")
    assert isinstance(search.spec["setup"]["api_key"], Text)
    assert discord.type == "api_call" and discord.spec["method"] == "POST"
    assert isinstance(discord.spec["headers"]["Content-Type"], Text)  # `Content-Type: application/json`

    main: Any = task.main
    prompt, split, over, join, summary, send = main
    assert isinstance(prompt, PromptStep) and prompt.unwrap
    assert isinstance(prompt.prompt, tuple) and isinstance(prompt.prompt[0].content, Template)
    # "_.split('\n')": YAML made the \n a real newline inside the string literal; still an expression
    assert isinstance(split.values["search_queries"], Expression)
    assert isinstance(over, MapReduceStep)
    assert isinstance(over.over, Expression) and over.parallelism == 100 and over.reduce is None
    (mapped,) = over.map
    assert isinstance(mapped, ToolCallStep) and mapped.tool == "web_search"
    assert isinstance(mapped.arguments["query"], Expression)  # "_" is the item
    assert isinstance(join.values["results"], Expression)  # "'\n'.join([item.result for item in _])"
    assert isinstance(summary, PromptStep) and isinstance(summary.prompt, tuple)
    assert isinstance(summary.prompt[0].content, Template)
    assert isinstance(send, ToolCallStep) and send.tool == "discord_webhook"
    assert isinstance(send.arguments["content"], Template)


def test_research_agent_input_schema() -> None:
    task = parse_task(seed("research-agent.yaml"))
    assert validate_input(task, {"topic": "quantum computing"}) == []
    assert [v.path for v in validate_input(task, {"topic": 7})] == ["input.topic"]


# -- Story and Comic Creator -----------------------------------------------------------------------


def test_story_agent_tool_type_is_inferred() -> None:
    (tool,) = agent_tools()
    assert (tool.name, tool.type, tool.spec["provider"], tool.spec["method"]) == (
        "image_generator",
        "integration",
        "dalle",
        "generate_image",
    )


def test_story_and_comic_creator() -> None:
    task = story_task()
    assert task.inherit_tools is True and task.tools == ()
    main: Any = task.main
    story, extract, images, title, result = main
    assert isinstance(story, PromptStep)
    messages: Any = story.prompt
    assert [m.role for m in messages] == ["system", "user"]
    assert all(isinstance(m.content, Template) for m in messages)
    assert isinstance(extract.values["story"], Expression)  # _.split('1. ')[0].strip()
    assert isinstance(extract.values["panels"], Expression)  # re.findall(r'\d+\.\s*(.*?)(?=...)', _)
    assert isinstance(images, ForeachStep) and isinstance(images.in_, Expression)
    (call,) = images.do  # `do:` written as a single step
    assert isinstance(call, ToolCallStep) and call.tool == "image_generator"
    assert isinstance(call.arguments["description"], Expression)  # `_`
    assert isinstance(title, PromptStep)
    assert isinstance(result, ReturnStep)
    for key in ("title", "story", "comic_panels"):  # outputs[3], outputs[1].story, [... for ...]
        assert isinstance(result.value[key], Expression), key


def test_story_needs_the_agent_tool() -> None:
    with pytest.raises(TaskInvalid) as info:
        parse_task(seed("story-and-comic-creator.yaml"))
    assert [v.path for v in info.value.violations] == ["main[2].foreach.do.tool"]
    doc = yaml.safe_load(seed("story-and-comic-creator.yaml")) | {"inherit_tools": False}
    with pytest.raises(TaskInvalid):
        parse_task(doc, agent_tools=["image_generator"])


def test_story_input() -> None:
    assert validate_input(story_task(), story_agent()["execution_input"]) == []


# -- tool examples ---------------------------------------------------------------------------------


def test_function_tool_example_warns_about_its_argument() -> None:
    task = parse_task(seed("function-tool.yaml"))
    (step,) = task.main
    assert isinstance(step, ToolCallStep) and step.tool == "send_notification"
    assert isinstance(step.arguments["content"], Text)  # "hi"
    warnings = explain(task)["warnings"]
    assert [w["path"] for w in warnings] == ["main[0].arguments.content"]
    assert "text" in warnings[0]["message"]


def test_system_tool_example() -> None:
    task = parse_task(seed("system-tool.yaml"))
    (tool,) = task.tools
    assert (tool.type, tool.spec["resource"], tool.spec["operation"]) == ("system", "agent", "list")
    step: Any = task.main[0]
    assert step.arguments == {"limit": 10}


def test_api_call_example() -> None:
    task = parse_task(seed("api-call.yaml"))
    (tool,) = task.tools
    assert tool.type == "api_call" and isinstance(tool.spec["url"], Text)
    step: Any = task.main[0]
    assert isinstance(step.arguments["params"]["test"], Expression)  # _.input


# -- the step-type table ---------------------------------------------------------------------------

SNIPPETS: dict[str, Any] = yaml.safe_load(seed("step-table-snippets.yaml"))

# fragment -> {path: the undefined name or tool or workflow the violation must name}
UNDEFINED: dict[str, dict[str, str]] = {
    "prompt": {"main[0].prompt": "data"},
    "tool_call": {"main[0].tool": "web_search"},
    "evaluate": {"main[0].evaluate.average_score": "scores"},
    "wait_for_input": {},
    "log": {"main[0].log": "item_id"},
    "get": {},
    "set": {},
    "foreach": {"main[0].foreach.in": "data_list"},
    "map_reduce": {"main[0].map_reduce.over": "numbers"},
    "parallel": {"main[0].parallel[0].tool": "web_search", "main[0].parallel[1].tool": "weather_check"},
    "if_else": {"main[0].if": "score"},
    "switch": {"main[0].switch[0].case": "category", "main[0].switch[1].case": "category"},
    "sleep": {},
    "return": {},
    "yield": {
        "main[0].yield.workflow": "data_processing_subflow",
        "main[0].yield.arguments.input_data": "raw_data",
    },
    "error": {},
}


def test_every_fragment_is_covered() -> None:
    assert set(SNIPPETS) == set(UNDEFINED)


@pytest.mark.parametrize("name", sorted(UNDEFINED))
def test_fragment_validation_names_what_is_undefined(name: str) -> None:
    doc = {"name": name, "main": [SNIPPETS[name]]}
    expected = UNDEFINED[name]
    if not expected:
        assert parse_task(doc).main[0].kind == name
        return
    with pytest.raises(TaskInvalid) as info:
        parse_task(doc)
    found = {v.path: v.message for v in info.value.violations}
    assert set(found) == set(expected), found
    for path, undefined in expected.items():
        assert undefined in found[path], (path, found[path])


@pytest.mark.parametrize("name", sorted(UNDEFINED))
def test_fragment_parses_once_its_names_exist(name: str) -> None:
    """With the tools and workflow defined, only the unknown expression names remain, so the
    fragment's shape itself is valid."""
    doc = {
        "name": name,
        "tools": [{"name": n, "function": {}} for n in ("web_search", "weather_check")],
        "main": [SNIPPETS[name]],
        "data_processing_subflow": [{"log": "x"}],
    }
    try:
        parse_task(doc)
    except TaskInvalid as exc:
        names = {"data", "scores", "score", "category", "item_id", "data_list", "numbers", "raw_data"}
        for v in exc.violations:
            assert any(n in v.message for n in names), v


def test_fragments_read_as_the_table_means() -> None:
    tools: list[dict[str, Any]] = [{"name": n, "function": {}} for n in ("web_search", "weather_check")]

    def step(name: str, fragment: Any = None) -> Any:
        doc = {"name": name, "tools": tools, "main": [fragment or SNIPPETS[name]]}
        return parse_task(doc).main[0]

    assert isinstance(step("tool_call").arguments["query"], Text)  # "Latest AI developments"
    assert isinstance(step("set").values["user_preference"], Text)  # "dark_mode"
    assert isinstance(step("return").value["result"], Text)  # "Task completed successfully"
    assert isinstance(step("wait_for_input").info["message"], Text)
    assert isinstance(step("error").message, Text)
    assert step("get").key == "user_preference"
    assert step("sleep").seconds == 30
    parallel = step("parallel")
    assert [branch[0].tool for branch in parallel.branches] == ["web_search", "weather_check"]
    assert isinstance(parallel.branches[1][0].arguments["location"], Text)  # "New York"
    # the fragments' bodies, with their undefined inputs replaced by `_`
    mr = step("map_reduce", {"map_reduce": {**SNIPPETS["map_reduce"]["map_reduce"], "over": "_"}})
    assert isinstance(mr, MapReduceStep)
    squares: Any = mr.map[0]
    assert isinstance(squares.values["squared"], Expression)  # "_ ** 2"
    assert isinstance(mr.reduce, Expression)  # "sum(results)"
    sw = step(
        "switch",
        {
            "switch": [
                {**c, "case": "_" if c["case"] == "_" else "_ == 'A'"} for c in SNIPPETS["switch"]["switch"]
            ]
        },
    )
    assert [c.case is None for c in sw.cases] == [False, False, True]  # `case: _` is the default
    fe = step("foreach", {"foreach": {**SNIPPETS["foreach"]["foreach"], "in": "_"}})
    assert isinstance(fe.do[0].message, Template)  # "Processing item {{_}}"
