"""Authentication: missing, malformed, wrong and revoked keys; Julep's X-Auth-Key header."""

from __future__ import annotations

import grpc

import mintleaf
from mintleaf import v1
from support.errors import expect_error

UNAUTH = grpc.StatusCode.UNAUTHENTICATED


def _raw_call(server, metadata):
    """A call with exactly the given metadata (no SDK interceptor adding a key)."""
    channel = grpc.insecure_channel(server.target)
    call = channel.unary_unary("/mintleaf.v1.AgentService/ListAgents")
    try:
        return v1.ListAgentsResponse.parse(call(bytes(v1.ListAgentsRequest()), metadata=metadata))
    finally:
        channel.close()


def test_missing_key(server):
    expect_error(lambda: _raw_call(server, None), UNAUTH, reason="API_KEY_MISSING")


def test_malformed_header(server):
    expect_error(
        lambda: _raw_call(server, [("authorization", "Basic abc")]), UNAUTH, reason="API_KEY_MALFORMED"
    )


def test_wrong_key(server):
    with mintleaf.Client(server.target, api_key="ml_not-a-real-key") as c:
        expect_error(lambda: c.agents.list_agents(v1.ListAgentsRequest()), UNAUTH, reason="API_KEY_INVALID")


def test_x_auth_key_header(server):
    key = server.new_key()
    assert _raw_call(server, [("x-auth-key", key)]).agents == []


def test_revoked_key(server):
    new = server.call(server.app.runtime.auth.create_key())
    with mintleaf.Client(server.target, api_key=new.key) as c:
        c.agents.list_agents(v1.ListAgentsRequest())
        assert server.call(server.app.runtime.auth.revoke(new.id))
        expect_error(lambda: c.agents.list_agents(v1.ListAgentsRequest()), UNAUTH)


def test_key_is_stored_hashed(server, pg_url):
    import psycopg

    new = server.call(server.app.runtime.auth.create_key())
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT key_hash, prefix FROM api_keys WHERE id = %s", (new.id,)).fetchall()
    assert rows and new.key.encode() not in bytes(rows[0][0]) and len(bytes(rows[0][0])) == 32
