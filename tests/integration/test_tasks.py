"""TaskService through the generated Python SDK against a real server: tasks from YAML and from a
JSON definition, the seed's tasks as written, every violation at once, versions, idempotent
create and validation without storing."""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import pytest
import yaml

from mintleaf import FieldMask, Struct, v1
from support.errors import expect_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS

SEEDS = Path(__file__).resolve().parents[3] / "shared" / "seed-tasks"
if not SEEDS.is_dir():  # the repository checked out on its own: the lead's copy of the shared docs
    SEEDS = Path("/work/shared/seed-tasks")

HELLO = """\
name: Hello
description: Says hello
input_schema:
  type: object
  properties: {who: {type: string}}
main:
  - evaluate:
      greeting: "'hello ' + inputs[0].who"
  - return:
      greeting: _.greeting
"""


def seed(name: str) -> str:
    return (SEEDS / name).read_text()


def make_agent(client, name="Tasker"):
    return client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name=name)))


def create_task(client, agent_id, request_id="", **kw):
    return client.tasks.create_task(
        v1.CreateTaskRequest(agent_id=agent_id, task=v1.Task(**kw), request_id=request_id)
    )


def definition(doc: dict) -> Struct:
    return Struct.from_dict(doc)


def doc_of(text: str) -> dict:
    return yaml.safe_load(text)


def test_create_from_yaml(client):
    agent = make_agent(client)
    task = create_task(client, agent.id, yaml=HELLO, metadata=Struct.from_dict({"team": "greeters"}))
    assert uuid.UUID(task.id)
    assert (task.agent_id, task.name, task.description, task.version) == (agent.id, "Hello", "Says hello", 1)
    assert task.yaml == ""  # input only
    assert task.definition.to_dict() == doc_of(HELLO)
    assert task.metadata.to_dict() == {"team": "greeters"}
    assert task.explain is not None and task.explain.to_dict()  # how each string was read
    assert task.created_at is not None
    assert client.tasks.get_task(v1.GetTaskRequest(id=task.id)) == task


def test_create_from_definition(client):
    agent = make_agent(client)
    task = create_task(client, agent.id, definition=definition(doc_of(HELLO)))
    assert (task.name, task.version) == ("Hello", 1)
    assert task.definition.to_dict() == doc_of(HELLO)


def test_json_text_is_accepted_as_yaml(client):
    agent = make_agent(client)
    task = create_task(client, agent.id, yaml='{"name": "J", "main": [{"return": {"x": "1 + 1"}}]}')
    assert task.name == "J"


def _create_agent_from_seed(client, name):
    spec = yaml.safe_load(seed(name))
    agent = client.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(**spec["agent"])))
    for raw in spec.get("tools", []):
        kind = next(k for k in ("function", "integration", "system", "api_call") if k in raw)
        body = raw[kind]
        fields = {
            "function": lambda b: v1.FunctionDef(
                **{**b, **({"parameters": Struct.from_dict(b["parameters"])} if "parameters" in b else {})}
            ),
            "integration": lambda b: v1.IntegrationDef(
                provider=b["provider"], method=b.get("method", ""), setup=Struct.from_dict(b.get("setup", {}))
            ),
            "system": lambda b: v1.SystemDef(**b),
            "api_call": lambda b: v1.ApiCallDef(**b),
        }[kind](body)
        client.tools.create_tool(
            v1.CreateToolRequest(
                agent_id=agent.id,
                tool=v1.Tool(name=raw["name"], description=raw.get("description", ""), **{kind: fields}),
            )
        )
    return agent


@pytest.mark.parametrize("as_definition", [False, True], ids=["yaml", "definition"])
def test_story_and_comic_creator_as_written(client, as_definition):
    agent = _create_agent_from_seed(client, "story-and-comic-creator.agent.yaml")
    text = seed("story-and-comic-creator.yaml")
    given = {"definition": definition(doc_of(text))} if as_definition else {"yaml": text}
    task = create_task(client, agent.id, **given)
    assert task.name == "Story and Comic Creator"
    assert task.version == 1
    # Without the agent's image_generator the same task is rejected, naming the step.
    bare = make_agent(client, "no tools")
    err = expect_error(
        lambda: create_task(client, bare.id, **given),
        INVALID,
        field="task.definition.main[2].foreach.do.tool",
    )
    assert err.reason == "TASK_INVALID"


@pytest.mark.parametrize(
    "name", ["research-agent.yaml", "api-call.yaml", "function-tool.yaml", "system-tool.yaml"]
)
@pytest.mark.parametrize("as_definition", [False, True], ids=["yaml", "definition"])
def test_seed_tasks_with_their_own_tools_as_written(client, name, as_definition):
    agent = make_agent(client)
    text = seed(name)
    given = {"definition": definition(doc_of(text))} if as_definition else {"yaml": text}
    task = create_task(client, agent.id, **given)
    assert task.name == doc_of(text)["name"]
    got = client.tasks.validate_task(v1.ValidateTaskRequest(task=v1.Task(**given)))
    assert got.valid and got.issues == []


BROKEN = {
    "name": "Broken",
    "main": [
        {"tool": "nope"},
        {"evaluate": {"a": "$ 1 +"}},
        {"bogus": 1},
        {"yield": {"workflow": "missing"}},
    ],
}
BROKEN_PATHS = {
    "task.definition.main[0].tool",
    "task.definition.main[1].evaluate.a",
    "task.definition.main[2]",
    "task.definition.main[3].yield.workflow",
}


@pytest.mark.parametrize("as_definition", [False, True], ids=["yaml", "definition"])
def test_invalid_task_lists_every_violation(client, as_definition):
    agent = make_agent(client)
    given = {"definition": definition(BROKEN)} if as_definition else {"yaml": yaml.safe_dump(BROKEN)}
    err = expect_error(lambda: create_task(client, agent.id, **given), INVALID, reason="TASK_INVALID")
    assert set(err.violations) == BROKEN_PATHS, err.violations
    assert "unknown tool 'nope'" in err.violations["task.definition.main[0].tool"]
    for path in BROKEN_PATHS:
        assert path in err.message
    assert client.tasks.list_tasks(v1.ListTasksRequest(agent_id=agent.id)).tasks == []


@pytest.mark.parametrize(
    ("task", "field"),
    [
        ({}, "task.definition"),
        ({"yaml": HELLO, "definition": definition(doc_of(HELLO))}, "task.yaml"),
        ({"yaml": "name: [unclosed"}, "task.yaml"),
        ({"yaml": "- just a list"}, "task.yaml"),
        ({"definition": definition({"main": [{"return": {"x": "1"}}]})}, "task.definition.name"),
        ({"definition": definition({"name": "no main"})}, "task.definition.main"),
        ({"yaml": HELLO, "canonical_name": "9bad"}, "task.canonical_name"),
        ({"yaml": HELLO, "id": "nope"}, "task.id"),
    ],
)
def test_bad_requests(client, task, field):
    agent = make_agent(client)
    expect_error(lambda: create_task(client, agent.id, **task), INVALID, field=field)


def test_unknown_agent(client):
    expect_error(
        lambda: create_task(client, str(uuid.uuid4()), yaml=HELLO), NOT_FOUND, reason="AGENT_NOT_FOUND"
    )
    expect_error(lambda: create_task(client, "x", yaml=HELLO), INVALID, field="agent_id")
    expect_error(
        lambda: client.tasks.validate_task(
            v1.ValidateTaskRequest(agent_id=str(uuid.uuid4()), task=v1.Task(yaml=HELLO))
        ),
        NOT_FOUND,
    )


def test_new_definition_makes_a_new_version(client):
    agent = make_agent(client)
    v1_task = create_task(client, agent.id, yaml=HELLO)
    changed = HELLO.replace("Says hello", "Says hello twice")
    v2_task = client.tasks.update_task(
        v1.UpdateTaskRequest(task=v1.Task(id=v1_task.id, yaml=changed), update_mask=FieldMask(paths=["yaml"]))
    )
    assert (v2_task.version, v2_task.description) == (2, "Says hello twice")
    assert v2_task.created_at == v1_task.created_at
    assert client.tasks.get_task(v1.GetTaskRequest(id=v1_task.id)) == v2_task  # latest by default
    old = client.tasks.get_task(v1.GetTaskRequest(id=v1_task.id, version=1))
    assert (old.version, old.description) == (1, "Says hello")
    assert old.definition == v1_task.definition
    v3_task = client.tasks.update_task(
        v1.UpdateTaskRequest(
            task=v1.Task(
                id=v1_task.id, definition=definition({"name": "Hello 3", "main": [{"return": {"x": "1"}}]})
            ),
            update_mask=FieldMask(paths=["definition"]),
        )
    )
    assert (v3_task.version, v3_task.name) == (3, "Hello 3")
    versions = client.tasks.list_task_versions(v1.ListTaskVersionsRequest(id=v1_task.id))
    assert [t.version for t in versions.versions] == [1, 2, 3]
    assert [t.name for t in versions.versions] == ["Hello", "Hello", "Hello 3"]
    assert versions.next_page_token == ""
    seen, token = [], ""
    while True:
        page = client.tasks.list_task_versions(
            v1.ListTaskVersionsRequest(id=v1_task.id, page_size=2, page_token=token)
        )
        assert len(page.versions) <= 2
        seen += [t.version for t in page.versions]
        token = page.next_page_token
        if not token:
            break
    assert seen == [1, 2, 3]
    expect_error(lambda: client.tasks.get_task(v1.GetTaskRequest(id=v1_task.id, version=4)), NOT_FOUND)
    expect_error(
        lambda: client.tasks.get_task(v1.GetTaskRequest(id=v1_task.id, version=-1)), INVALID, field="version"
    )
    expect_error(
        lambda: client.tasks.list_task_versions(v1.ListTaskVersionsRequest(id=v1_task.id, page_token="x")),
        INVALID,
        field="page_token",
    )


def test_metadata_only_update_makes_no_new_version(client):
    agent = make_agent(client)
    task = create_task(client, agent.id, yaml=HELLO, metadata=Struct.from_dict({"stage": "draft"}))
    updated = client.tasks.update_task(
        v1.UpdateTaskRequest(
            task=v1.Task(id=task.id, metadata=Struct.from_dict({"stage": "live"})),
            update_mask=FieldMask(paths=["metadata"]),
        )
    )
    assert updated.version == 1
    assert updated.metadata.to_dict() == {"stage": "live"}
    assert updated.definition == task.definition
    assert updated.updated_at >= task.updated_at
    # The same definition again is no change either.
    same = client.tasks.update_task(
        v1.UpdateTaskRequest(task=v1.Task(id=task.id, yaml=HELLO), update_mask=FieldMask(paths=["yaml"]))
    )
    assert same.version == 1
    listed = client.tasks.list_task_versions(v1.ListTaskVersionsRequest(id=task.id))
    assert [t.version for t in listed.versions] == [1]


def test_invalid_update_keeps_the_current_version(client):
    agent = make_agent(client)
    task = create_task(client, agent.id, yaml=HELLO)
    err = expect_error(
        lambda: client.tasks.update_task(
            v1.UpdateTaskRequest(
                task=v1.Task(id=task.id, definition=definition(BROKEN)),
                update_mask=FieldMask(paths=["definition"]),
            )
        ),
        INVALID,
        reason="TASK_INVALID",
    )
    assert set(err.violations) == BROKEN_PATHS
    expect_error(
        lambda: client.tasks.update_task(
            v1.UpdateTaskRequest(task=v1.Task(id=task.id), update_mask=FieldMask(paths=["version"]))
        ),
        INVALID,
        field="update_mask",
    )
    expect_error(
        lambda: client.tasks.update_task(
            v1.UpdateTaskRequest(
                task=v1.Task(id=task.id, canonical_name="bad name"),
                update_mask=FieldMask(paths=["canonical_name"]),
            )
        ),
        INVALID,
        field="task.canonical_name",
    )
    expect_error(
        lambda: client.tasks.update_task(
            v1.UpdateTaskRequest(task=v1.Task(id=str(uuid.uuid4()), yaml=HELLO))
        ),
        NOT_FOUND,
    )
    assert client.tasks.get_task(v1.GetTaskRequest(id=task.id)) == task


def test_canonical_name_unique_per_developer(client, other_client):
    agent = make_agent(client)
    first = create_task(client, agent.id, yaml=HELLO, canonical_name="greeter")
    assert first.canonical_name == "greeter"
    err = expect_error(
        lambda: create_task(client, agent.id, yaml=HELLO, canonical_name="greeter"),
        EXISTS,
        reason="TASK_ALREADY_EXISTS",
    )
    assert err.metadata["field"] == "canonical_name"
    # From the document too.
    expect_error(lambda: create_task(client, agent.id, yaml="canonical_name: greeter\n" + HELLO), EXISTS)
    second = create_task(client, agent.id, yaml=HELLO, canonical_name="other_greeter")
    expect_error(
        lambda: client.tasks.update_task(
            v1.UpdateTaskRequest(
                task=v1.Task(id=second.id, canonical_name="greeter"),
                update_mask=FieldMask(paths=["canonical_name"]),
            )
        ),
        EXISTS,
    )
    other_agent = make_agent(other_client)
    assert (
        create_task(other_client, other_agent.id, yaml=HELLO, canonical_name="greeter").canonical_name
        == "greeter"
    )
    # Freed by renaming.
    client.tasks.update_task(
        v1.UpdateTaskRequest(task=v1.Task(id=first.id), update_mask=FieldMask(paths=["canonical_name"]))
    )
    create_task(client, agent.id, yaml=HELLO, canonical_name="greeter")


def test_list_pages_and_filters(client):
    a, b = make_agent(client, "a"), make_agent(client, "b")
    ids = [create_task(client, a.id, yaml=HELLO, metadata=Struct.from_dict({"i": i})).id for i in range(4)]
    other = create_task(client, b.id, yaml=HELLO).id
    seen, token = [], ""
    while True:
        page = client.tasks.list_tasks(v1.ListTasksRequest(page_size=2, page_token=token))
        seen += [t.id for t in page.tasks]
        token = page.next_page_token
        if not token:
            break
    assert seen == [*ids, other]
    assert [t.id for t in client.tasks.list_tasks(v1.ListTasksRequest(agent_id=a.id)).tasks] == ids
    assert [t.id for t in client.tasks.list_tasks(v1.ListTasksRequest(agent_id=b.id)).tasks] == [other]
    filtered = client.tasks.list_tasks(v1.ListTasksRequest(metadata_filter=Struct.from_dict({"i": 2})))
    assert [t.id for t in filtered.tasks] == [ids[2]]
    # Each task at its latest version.
    client.tasks.update_task(
        v1.UpdateTaskRequest(
            task=v1.Task(id=ids[0], yaml=HELLO.replace("Hello", "Hi")), update_mask=FieldMask(paths=["yaml"])
        )
    )
    first = client.tasks.list_tasks(v1.ListTasksRequest(agent_id=a.id, page_size=1)).tasks[0]
    assert (first.id, first.version, first.name) == (ids[0], 2, "Hi")
    expect_error(
        lambda: client.tasks.list_tasks(v1.ListTasksRequest(agent_id="x")), INVALID, field="agent_id"
    )
    expect_error(
        lambda: client.tasks.list_tasks(v1.ListTasksRequest(page_size=1001)), INVALID, field="page_size"
    )


def test_validate(client):
    ok = client.tasks.validate_task(v1.ValidateTaskRequest(task=v1.Task(yaml=HELLO)))
    assert ok.valid and ok.issues == [] and ok.explain.to_dict()
    bad = client.tasks.validate_task(v1.ValidateTaskRequest(task=v1.Task(definition=definition(BROKEN))))
    assert not bad.valid
    assert {i.path for i in bad.issues} == {p.removeprefix("task.definition.") for p in BROKEN_PATHS}
    assert all(i.message for i in bad.issues)
    # An agent's tools count when the agent is named.
    agent = _create_agent_from_seed(client, "story-and-comic-creator.agent.yaml")
    story = v1.Task(yaml=seed("story-and-comic-creator.yaml"))
    assert not client.tasks.validate_task(v1.ValidateTaskRequest(task=story)).valid
    assert client.tasks.validate_task(v1.ValidateTaskRequest(agent_id=agent.id, task=story)).valid
    # Nothing was stored.
    assert client.tasks.list_tasks(v1.ListTasksRequest()).tasks == []
    expect_error(
        lambda: client.tasks.validate_task(v1.ValidateTaskRequest(task=v1.Task())),
        INVALID,
        field="task.definition",
    )


def test_delete(client):
    agent = make_agent(client)
    task = create_task(client, agent.id, yaml=HELLO, canonical_name="doomed")
    v2 = client.tasks.update_task(
        v1.UpdateTaskRequest(
            task=v1.Task(id=task.id, yaml=HELLO.replace("Says", "Said")),
            update_mask=FieldMask(paths=["yaml"]),
        )
    )
    assert v2.version == 2
    client.tasks.delete_task(v1.DeleteTaskRequest(id=task.id))
    expect_error(
        lambda: client.tasks.get_task(v1.GetTaskRequest(id=task.id)), NOT_FOUND, reason="TASK_NOT_FOUND"
    )
    expect_error(lambda: client.tasks.get_task(v1.GetTaskRequest(id=task.id, version=1)), NOT_FOUND)
    expect_error(lambda: client.tasks.list_task_versions(v1.ListTaskVersionsRequest(id=task.id)), NOT_FOUND)
    expect_error(lambda: client.tasks.delete_task(v1.DeleteTaskRequest(id=task.id)), NOT_FOUND)
    create_task(client, agent.id, yaml=HELLO, canonical_name="doomed")  # the canonical name is free again


def test_deleting_the_agent_deletes_its_tasks(client):
    agent = make_agent(client)
    task = create_task(client, agent.id, yaml=HELLO)
    client.agents.delete_agent(v1.DeleteAgentRequest(id=agent.id))
    expect_error(lambda: client.tasks.get_task(v1.GetTaskRequest(id=task.id)), NOT_FOUND)


def test_idempotent_create(client):
    agent = make_agent(client)
    first = create_task(client, agent.id, request_id="task-req", yaml=HELLO)
    assert create_task(client, agent.id, request_id="task-req", yaml=HELLO) == first
    chosen = str(uuid.uuid4())
    task = create_task(client, agent.id, id=chosen, yaml=HELLO)
    assert task.id == chosen
    assert create_task(client, agent.id, id=chosen, yaml=HELLO) == task  # a retry with the same document
    err = expect_error(
        lambda: create_task(client, agent.id, id=chosen, yaml=HELLO.replace("Hello", "Other")), EXISTS
    )
    assert err.reason == "TASK_ALREADY_EXISTS"
    assert len(client.tasks.list_tasks(v1.ListTasksRequest()).tasks) == 2
