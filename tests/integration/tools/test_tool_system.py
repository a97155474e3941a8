"""System tools against the real server, in-process, under the calling developer's identity."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from fakes.toolkit import context, tool
from mintleaf_server.tools import SystemOperationFailed, ToolArgumentsInvalid, ToolNotImplemented, run_tool


def _sys(name: str, resource: str, operation: str, **extra: Any) -> Any:
    return tool(
        {"name": name, "type": "system", "system": {"resource": resource, "operation": operation, **extra}}
    )


def _developer(server: Any) -> uuid.UUID:
    return server.call(server.app.runtime.auth.create_key()).developer_id  # type: ignore[no-any-return]


def _run(server: Any, dev: uuid.UUID, t: Any, args: dict[str, Any]) -> Any:
    ctx = context(runtime=server.app.runtime)
    ctx.developer_id = dev
    return server.call(run_tool(t, args, ctx))


def test_agent_and_user_operations(server: Any) -> None:
    dev = _developer(server)
    created = _run(
        server,
        dev,
        _sys("new_agent", "agent", "create"),
        {"name": "Helper", "instructions": "be brief", "metadata": {"team": "a"}},
    )
    assert created["name"] == "Helper" and created["instructions"] == ["be brief"]
    aid = created["id"]
    # the seed's list_agents with limit
    listed = _run(server, dev, _sys("list_agents", "agent", "list"), {"limit": 10})
    assert [a["id"] for a in listed["items"]] == [aid] and listed["next_page_token"] == ""
    updated = _run(server, dev, _sys("rename", "agent", "update"), {"agent_id": aid, "about": "helps"})
    assert updated["about"] == "helps" and updated["name"] == "Helper"
    # the definition's resource_id and arguments are honoured (under the call's arguments)
    got = _run(server, dev, _sys("this_agent", "agent", "get", resource_id=aid), {})
    assert got["id"] == aid
    patched = _run(server, dev, _sys("p", "agent", "patch", arguments={"about": "default"}), {"id": aid})
    assert patched["about"] == "default"

    user = _run(server, dev, _sys("u", "user", "create"), {"data": {"name": "Grace", "about": "admiral"}})
    assert _run(server, dev, _sys("u", "user", "get"), {"user_id": user["id"]})["name"] == "Grace"
    upserted = _run(
        server, dev, _sys("u", "user", "create_or_update"), {"id": user["id"], "about": "rear admiral"}
    )
    assert upserted["about"] == "rear admiral"
    fresh = str(uuid.uuid4())
    made = _run(server, dev, _sys("u", "user", "create_or_update"), {"id": fresh, "name": "New"})
    assert made["id"] == fresh

    assert _run(server, dev, _sys("del", "user", "delete"), {"id": fresh}) == {"success": True, "id": fresh}
    with pytest.raises(SystemOperationFailed) as info:
        _run(server, dev, _sys("u", "user", "get"), {"id": fresh})
    assert info.value.reason == "USER_NOT_FOUND"


def test_sessions_and_tasks(server: Any) -> None:
    dev = _developer(server)
    agent = _run(server, dev, _sys("a", "agent", "create"), {"name": "Tasker"})
    session = _run(
        server, dev, _sys("s", "session", "create"), {"agent": agent["id"], "situation": "testing"}
    )
    assert session["agents"] == [agent["id"]]
    history = _run(server, dev, _sys("h", "session", "history"), {"session_id": session["id"]})
    assert history == {"items": [], "next_page_token": ""}
    assert len(_run(server, dev, _sys("s", "session", "list"), {})["items"]) == 1

    task = _run(
        server,
        dev,
        _sys("t", "task", "create"),
        {"agent_id": agent["id"], "name": "Echo", "main": [{"evaluate": {"x": "1 + 1"}}]},
    )
    assert task["name"] == "Echo" and task["version"] == 1
    listed = _run(server, dev, _sys("t", "task", "list"), {"agent_id": agent["id"]})
    assert [t["id"] for t in listed["items"]] == [task["id"]]
    updated = _run(
        server,
        dev,
        _sys("t", "task", "update"),
        {"task_id": task["id"], "definition": {"name": "Echo2", "main": [{"return": {"y": "2"}}]}},
    )
    assert updated["name"] == "Echo2" and updated["version"] == 2
    with pytest.raises(SystemOperationFailed) as bad:
        _run(
            server,
            dev,
            _sys("t", "task", "create"),
            {"agent_id": agent["id"], "name": "Bad", "main": [{"nosuchstep": 1}]},
        )
    assert bad.value.reason == "TASK_INVALID"
    assert _run(server, dev, _sys("t", "task", "delete"), {"id": task["id"]})["success"] is True


def test_never_another_developers_resources(server: Any) -> None:
    owner, intruder = _developer(server), _developer(server)
    agent = _run(server, owner, _sys("a", "agent", "create"), {"name": "Private"})
    with pytest.raises(SystemOperationFailed) as info:
        _run(server, intruder, _sys("g", "agent", "get"), {"id": agent["id"], "developer_id": str(owner)})
    assert info.value.reason == "AGENT_NOT_FOUND"
    assert _run(server, intruder, _sys("l", "agent", "list"), {})["items"] == []


def test_bad_arguments_and_missing_operations(server: Any) -> None:
    dev = _developer(server)
    with pytest.raises(ToolArgumentsInvalid, match="agent_id"):
        _run(server, dev, _sys("g", "agent", "get"), {})
    with pytest.raises(ToolArgumentsInvalid):
        _run(server, dev, _sys("c", "agent", "create"), {"name": "x", "colour": "red"})
    with pytest.raises(SystemOperationFailed) as info:
        _run(server, dev, _sys("g", "agent", "get"), {"id": "not-a-uuid"})
    assert info.value.reason == "INVALID_ARGUMENT"
    with pytest.raises(ToolNotImplemented):
        _run(server, dev, _sys("j", "job", "get"), {"id": "x"})
