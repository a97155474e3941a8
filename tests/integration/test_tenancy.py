"""Tenant isolation for every RPC of the resource services: another developer's resource is
NOT_FOUND (never revealed), Lists never include it, Creates never return it, and nothing the
other developer does changes it.

The RPCs are read from the service descriptors, so a new RPC without a case here fails the suite."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg
import pytest

from mintleaf import FieldMask, Struct, v1
from mintleaf_server._proto.mintleaf.v1 import (
    agents_pb2,
    secrets_pb2,
    sessions_pb2,
    tasks_pb2,
    tools_pb2,
    users_pb2,
)
from support.errors import expect_error

NOT_FOUND = grpc.StatusCode.NOT_FOUND

SERVICES = [
    agents_pb2.DESCRIPTOR.services_by_name["AgentService"],
    users_pb2.DESCRIPTOR.services_by_name["UserService"],
    tools_pb2.DESCRIPTOR.services_by_name["ToolService"],
    sessions_pb2.DESCRIPTOR.services_by_name["SessionService"],
    tasks_pb2.DESCRIPTOR.services_by_name["TaskService"],
    secrets_pb2.DESCRIPTOR.services_by_name["SecretService"],
]
METHODS = sorted(f"{service.name}.{method.name}" for service in SERVICES for method in service.methods)

HELLO = "name: Hello\nmain:\n  - return: {x: '1 + 1'}\n"
REQUEST_ID = "victim-request"


@dataclass
class Victim:
    """One developer's resources, one of each kind."""

    agent: Any
    tool: Any
    user: Any
    session: Any
    task: Any
    secret: Any


def _victim(client: Any, pg_url: str) -> Victim:
    agent = client.agents.create_agent(
        v1.CreateAgentRequest(
            agent=v1.Agent(name="victim", canonical_name="victim_agent"), request_id=REQUEST_ID
        )
    )
    tool = client.tools.create_tool(
        v1.CreateToolRequest(
            agent_id=agent.id,
            tool=v1.Tool(name="victim_tool", function=v1.FunctionDef()),
            request_id=REQUEST_ID,
        )
    )
    user = client.users.create_user(v1.CreateUserRequest(user=v1.User(name="victim"), request_id=REQUEST_ID))
    session = client.sessions.create_session(
        v1.CreateSessionRequest(
            session=v1.Session(agent=agent.id, user=user.id, situation="private"), request_id=REQUEST_ID
        )
    )
    task = client.tasks.create_task(
        v1.CreateTaskRequest(
            agent_id=agent.id, task=v1.Task(yaml=HELLO, canonical_name="victim_task"), request_id=REQUEST_ID
        )
    )
    task = client.tasks.update_task(
        v1.UpdateTaskRequest(
            task=v1.Task(id=task.id, yaml=HELLO.replace("Hello", "Hello 2")),
            update_mask=FieldMask(paths=["yaml"]),
        )
    )
    secret = client.secrets.create_secret(
        v1.CreateSecretRequest(secret=v1.Secret(name="VICTIM", value="victim-value"), request_id=REQUEST_ID)
    )
    with psycopg.connect(pg_url) as conn:
        (dev,) = conn.execute("SELECT developer_id FROM sessions WHERE id = %s", (session.id,)).fetchone()
        conn.execute(
            "INSERT INTO entries (developer_id, id, session_id, seq, role, name, content, tool_calls, tool_call_id,"
            " source, token_count, tokenizer, model, timestamp, created_at)"
            " VALUES (%s, %s, %s, 0, 'user', '', to_jsonb('private words'::text), NULL, '', 'api_request', 2, '', '', now(), now())",
            (dev, uuid.uuid4(), session.id),
        )
    return Victim(agent, tool, user, session, task, secret)


def _snapshot(client: Any, r: Victim, pg_url: str) -> dict[str, Any]:
    """Everything the victim can read about its resources (and its secret's stored value)."""
    with psycopg.connect(pg_url) as conn:
        value = conn.execute(
            "SELECT s.value FROM secrets s JOIN sessions x ON x.developer_id = s.developer_id WHERE s.id = %s AND x.id = %s",
            (r.secret.id, r.session.id),
        ).fetchall()
    return {
        "secret_value": value,
        "agent": client.agents.get_agent(v1.GetAgentRequest(id=r.agent.id)),
        "tool": client.tools.get_tool(v1.GetToolRequest(agent_id=r.agent.id, id=r.tool.id)),
        "user": client.users.get_user(v1.GetUserRequest(id=r.user.id)),
        "session": client.sessions.get_session(v1.GetSessionRequest(id=r.session.id)),
        "entries": client.sessions.list_entries(v1.ListEntriesRequest(session_id=r.session.id)),
        "task": client.tasks.get_task(v1.GetTaskRequest(id=r.task.id)),
        "versions": client.tasks.list_task_versions(v1.ListTaskVersionsRequest(id=r.task.id)),
        "secret": client.secrets.get_secret(v1.GetSecretRequest(id=r.secret.id)),
    }


# Each case is (kind, call(other_client, victim)):
#   "hidden":  every call raises NOT_FOUND
#   "list":    returns the ids listed, none of which may be the victim's
#   "create":  succeeds, but with the other developer's own resource (never the victim's)
#   "global":  not tenant data at all (the same answer for everyone)
Call = Callable[[Any, Victim], Any]


class _All:
    """Several calls making up one case; each is checked on its own."""

    def __init__(self, *parts: Call) -> None:
        self.parts = list(parts)

    def __call__(self, c: Any, r: Victim) -> list[Any]:
        return [part(c, r) for part in self.parts]


def _parts(call: Call) -> list[Call]:
    return call.parts if isinstance(call, _All) else [call]


def _own_agent(c: Any) -> Any:
    return c.agents.create_agent(v1.CreateAgentRequest(agent=v1.Agent(name="mine")))


CASES: dict[str, tuple[str, Call]] = {
    # -- agents --------------------------------------------------------------------------------
    "AgentService.CreateAgent": (
        "create",
        lambda c, r: c.agents.create_agent(
            v1.CreateAgentRequest(
                agent=v1.Agent(id=r.agent.id, name="intruder", canonical_name="victim_agent"),
                request_id=REQUEST_ID,
            )
        ),
    ),
    "AgentService.GetAgent": ("hidden", lambda c, r: c.agents.get_agent(v1.GetAgentRequest(id=r.agent.id))),
    "AgentService.ListAgents": (
        "list",
        _All(
            lambda c, r: [a.id for a in c.agents.list_agents(v1.ListAgentsRequest()).agents],
            lambda c, r: [
                a.id
                for a in c.agents.list_agents(
                    v1.ListAgentsRequest(metadata_filter=Struct.from_dict({}))
                ).agents
            ],
        ),
    ),
    "AgentService.UpdateAgent": (
        "hidden",
        _All(
            lambda c, r: c.agents.update_agent(
                v1.UpdateAgentRequest(agent=v1.Agent(id=r.agent.id, name="hijack"))
            ),
            lambda c, r: c.agents.update_agent(
                v1.UpdateAgentRequest(
                    agent=v1.Agent(id=r.agent.id, about="x"), update_mask=FieldMask(paths=["about"])
                )
            ),
        ),
    ),
    "AgentService.DeleteAgent": (
        "hidden",
        lambda c, r: c.agents.delete_agent(v1.DeleteAgentRequest(id=r.agent.id)),
    ),
    "AgentService.ListModels": ("global", lambda c, r: c.agents.list_models(v1.ListModelsRequest())),
    # -- users ---------------------------------------------------------------------------------
    "UserService.CreateUser": (
        "create",
        lambda c, r: c.users.create_user(
            v1.CreateUserRequest(user=v1.User(id=r.user.id, name="intruder"), request_id=REQUEST_ID)
        ),
    ),
    "UserService.GetUser": ("hidden", lambda c, r: c.users.get_user(v1.GetUserRequest(id=r.user.id))),
    "UserService.ListUsers": (
        "list",
        lambda c, r: [u.id for u in c.users.list_users(v1.ListUsersRequest()).users],
    ),
    "UserService.UpdateUser": (
        "hidden",
        lambda c, r: c.users.update_user(
            v1.UpdateUserRequest(user=v1.User(id=r.user.id, name="x"), update_mask=FieldMask(paths=["name"]))
        ),
    ),
    "UserService.DeleteUser": (
        "hidden",
        lambda c, r: c.users.delete_user(v1.DeleteUserRequest(id=r.user.id)),
    ),
    # -- tools ---------------------------------------------------------------------------------
    "ToolService.CreateTool": (
        "hidden",
        lambda c, r: c.tools.create_tool(
            v1.CreateToolRequest(
                agent_id=r.agent.id,
                tool=v1.Tool(name="planted", function=v1.FunctionDef()),
                request_id=REQUEST_ID,
            )
        ),
    ),
    "ToolService.GetTool": (
        "hidden",
        _All(
            lambda c, r: c.tools.get_tool(v1.GetToolRequest(agent_id=r.agent.id, id=r.tool.id)),
            lambda c, r: c.tools.get_tool(v1.GetToolRequest(agent_id=_own_agent(c).id, id=r.tool.id)),
        ),
    ),
    "ToolService.ListTools": (
        "hidden",
        lambda c, r: c.tools.list_tools(v1.ListToolsRequest(agent_id=r.agent.id)),
    ),
    "ToolService.UpdateTool": (
        "hidden",
        _All(
            lambda c, r: c.tools.update_tool(
                v1.UpdateToolRequest(
                    tool=v1.Tool(agent_id=r.agent.id, id=r.tool.id, name="hijack"),
                    update_mask=FieldMask(paths=["name"]),
                )
            ),
            lambda c, r: c.tools.update_tool(
                v1.UpdateToolRequest(
                    tool=v1.Tool(agent_id=_own_agent(c).id, id=r.tool.id, name="hijack"),
                    update_mask=FieldMask(paths=["name"]),
                )
            ),
        ),
    ),
    "ToolService.DeleteTool": (
        "hidden",
        _All(
            lambda c, r: c.tools.delete_tool(v1.DeleteToolRequest(agent_id=r.agent.id, id=r.tool.id)),
            lambda c, r: c.tools.delete_tool(v1.DeleteToolRequest(agent_id=_own_agent(c).id, id=r.tool.id)),
        ),
    ),
    # -- sessions ------------------------------------------------------------------------------
    "SessionService.CreateSession": (
        "hidden",
        _All(
            lambda c, r: c.sessions.create_session(
                v1.CreateSessionRequest(session=v1.Session(agent=r.agent.id))
            ),
            lambda c, r: c.sessions.create_session(
                v1.CreateSessionRequest(session=v1.Session(agent=_own_agent(c).id, user=r.user.id))
            ),
            lambda c, r: c.sessions.create_session(
                v1.CreateSessionRequest(session=v1.Session(agents=[_own_agent(c).id, r.agent.id]))
            ),
        ),
    ),
    "SessionService.GetSession": (
        "hidden",
        lambda c, r: c.sessions.get_session(v1.GetSessionRequest(id=r.session.id)),
    ),
    "SessionService.ListSessions": (
        "list",
        lambda c, r: [s.id for s in c.sessions.list_sessions(v1.ListSessionsRequest()).sessions],
    ),
    "SessionService.UpdateSession": (
        "hidden",
        lambda c, r: c.sessions.update_session(
            v1.UpdateSessionRequest(
                session=v1.Session(id=r.session.id, situation="hijack"),
                update_mask=FieldMask(paths=["situation"]),
            )
        ),
    ),
    "SessionService.DeleteSession": (
        "hidden",
        lambda c, r: c.sessions.delete_session(v1.DeleteSessionRequest(id=r.session.id)),
    ),
    "SessionService.ListEntries": (
        "hidden",
        lambda c, r: c.sessions.list_entries(v1.ListEntriesRequest(session_id=r.session.id)),
    ),
    "SessionService.DeleteEntries": (
        "hidden",
        lambda c, r: c.sessions.delete_entries(v1.DeleteEntriesRequest(session_id=r.session.id)),
    ),
    # -- tasks ---------------------------------------------------------------------------------
    "TaskService.CreateTask": (
        "hidden",
        lambda c, r: c.tasks.create_task(
            v1.CreateTaskRequest(agent_id=r.agent.id, task=v1.Task(yaml=HELLO), request_id=REQUEST_ID)
        ),
    ),
    "TaskService.GetTask": (
        "hidden",
        _All(
            lambda c, r: c.tasks.get_task(v1.GetTaskRequest(id=r.task.id)),
            lambda c, r: c.tasks.get_task(v1.GetTaskRequest(id=r.task.id, version=1)),
        ),
    ),
    "TaskService.ListTasks": (
        "list",
        _All(
            lambda c, r: [t.id for t in c.tasks.list_tasks(v1.ListTasksRequest()).tasks],
            lambda c, r: [t.id for t in c.tasks.list_tasks(v1.ListTasksRequest(agent_id=r.agent.id)).tasks],
        ),
    ),
    "TaskService.UpdateTask": (
        "hidden",
        _All(
            lambda c, r: c.tasks.update_task(
                v1.UpdateTaskRequest(
                    task=v1.Task(id=r.task.id, metadata=Struct.from_dict({"x": 1})),
                    update_mask=FieldMask(paths=["metadata"]),
                )
            ),
            lambda c, r: c.tasks.update_task(
                v1.UpdateTaskRequest(
                    task=v1.Task(id=r.task.id, yaml=HELLO), update_mask=FieldMask(paths=["yaml"])
                )
            ),
        ),
    ),
    "TaskService.DeleteTask": (
        "hidden",
        lambda c, r: c.tasks.delete_task(v1.DeleteTaskRequest(id=r.task.id)),
    ),
    "TaskService.ListTaskVersions": (
        "hidden",
        lambda c, r: c.tasks.list_task_versions(v1.ListTaskVersionsRequest(id=r.task.id)),
    ),
    "TaskService.ValidateTask": (
        "hidden",
        lambda c, r: c.tasks.validate_task(
            v1.ValidateTaskRequest(agent_id=r.agent.id, task=v1.Task(yaml=HELLO))
        ),
    ),
    # -- secrets -------------------------------------------------------------------------------
    "SecretService.CreateSecret": (
        "create",
        lambda c, r: c.secrets.create_secret(
            v1.CreateSecretRequest(
                secret=v1.Secret(
                    id=r.secret.id, name="VICTIM", description="intruder", value="intruder-value"
                ),
                request_id=REQUEST_ID,
            )
        ),
    ),
    "SecretService.GetSecret": (
        "hidden",
        lambda c, r: c.secrets.get_secret(v1.GetSecretRequest(id=r.secret.id)),
    ),
    "SecretService.ListSecrets": (
        "list",
        lambda c, r: [s.id for s in c.secrets.list_secrets(v1.ListSecretsRequest()).secrets],
    ),
    "SecretService.UpdateSecret": (
        "hidden",
        lambda c, r: c.secrets.update_secret(
            v1.UpdateSecretRequest(
                secret=v1.Secret(id=r.secret.id, value="stolen"), update_mask=FieldMask(paths=["value"])
            )
        ),
    ),
    "SecretService.DeleteSecret": (
        "hidden",
        lambda c, r: c.secrets.delete_secret(v1.DeleteSecretRequest(id=r.secret.id)),
    ),
}


def test_every_rpc_has_a_case():
    assert set(METHODS) - set(CASES) == set(), "add a tenancy case for each new RPC"
    assert set(CASES) - set(METHODS) == set(), "a case names an RPC that no longer exists"


def _own_resources(c: Any) -> set[str]:
    """One resource of each listable kind for the other developer; their ids."""
    agent = _own_agent(c)
    user = c.users.create_user(v1.CreateUserRequest(user=v1.User(name="mine")))
    session = c.sessions.create_session(v1.CreateSessionRequest(session=v1.Session(agent=agent.id)))
    task = c.tasks.create_task(v1.CreateTaskRequest(agent_id=agent.id, task=v1.Task(yaml=HELLO)))
    secret = c.secrets.create_secret(v1.CreateSecretRequest(secret=v1.Secret(name="MINE", value="v")))
    return {agent.id, user.id, session.id, task.id, secret.id}


def _victim_ids(r: Victim) -> set[str]:
    return {r.agent.id, r.tool.id, r.user.id, r.session.id, r.task.id, r.secret.id}


@pytest.mark.parametrize("method", METHODS)
def test_other_developers_resources_are_invisible(client, other_client, pg_url, method):
    assert method in CASES, f"no tenancy case for {method}"
    victim = _victim(client, pg_url)
    before = _snapshot(client, victim, pg_url)
    kind, call = CASES[method]
    if kind == "hidden":
        for part in _parts(call):
            err = expect_error(lambda part=part: part(other_client, victim), NOT_FOUND)
            assert "victim" not in err.message and "private" not in err.message
    elif kind == "list":
        # The other developer has resources of its own, so an empty list proves nothing.
        own = _own_resources(other_client)
        listed = [set(part(other_client, victim)) for part in _parts(call)]
        for ids in listed:
            assert not ids & _victim_ids(victim)
            assert ids <= own
        assert any(listed), "the list should show the other developer's own resources"
    elif kind == "create":
        # The same client-chosen id, request_id and unique names: the other developer gets a
        # resource of its own, as if the victim's did not exist.
        made = call(other_client, victim)
        assert "intruder" in (made.name, getattr(made, "description", ""))
        assert call(other_client, victim) == made  # and its own retry returns its own
    else:
        assert call(other_client, victim) == call(client, victim)
    assert _snapshot(client, victim, pg_url) == before, (
        "the other developer's call changed the victim's resources"
    )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        (None, "API_KEY_MISSING"),
        ((("authorization", "Bearer ml_wrong"),), "API_KEY_INVALID"),
        ((("x-auth-key", "ml_wrong"),), "API_KEY_INVALID"),
    ],
    ids=["missing", "wrong", "wrong-x-auth-key"],
)
def test_every_rpc_needs_a_valid_key(server, method, metadata, reason):
    service, name = method.split(".")
    with grpc.insecure_channel(server.target) as channel:
        call = channel.unary_unary(f"/mintleaf.v1.{service}/{name}")
        expect_error(
            lambda: call(b"", metadata=metadata, timeout=10), grpc.StatusCode.UNAUTHENTICATED, reason=reason
        )
