"""SecretService through the generated Python SDK against a real server: values go in and never
come out, names are identifiers unique per developer."""

from __future__ import annotations

import uuid

import grpc
import psycopg
import pytest

from mintleaf import FieldMask, Struct, v1
from support.errors import expect_error

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXISTS = grpc.StatusCode.ALREADY_EXISTS

VALUE = "sk-very-secret-0123456789"


def create_secret(client, request_id="", **kw):
    kw.setdefault("value", VALUE)
    return client.secrets.create_secret(v1.CreateSecretRequest(secret=v1.Secret(**kw), request_id=request_id))


def stored_value(pg_url, secret_id):
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT value FROM secrets WHERE id = %s", (secret_id,)).fetchone()
    return row[0] if row else None


def raw_bytes(client, method, request):
    """The response exactly as it crossed the wire, to look for the value in it."""
    call = client.channel.unary_unary(f"/mintleaf.v1.SecretService/{method}")
    return call(bytes(request))


def test_value_is_never_returned(client, pg_url):
    s = create_secret(
        client, name="OPENAI_KEY", description="for dalle", metadata=Struct.from_dict({"env": "prod"})
    )
    assert uuid.UUID(s.id)
    assert (s.name, s.description, s.value) == ("OPENAI_KEY", "for dalle", "")
    assert s.metadata.to_dict() == {"env": "prod"}
    got = client.secrets.get_secret(v1.GetSecretRequest(id=s.id))
    assert got == s and got.value == ""
    listed = client.secrets.list_secrets(v1.ListSecretsRequest())
    assert [x.id for x in listed.secrets] == [s.id] and listed.secrets[0].value == ""
    for method, request in (
        ("GetSecret", v1.GetSecretRequest(id=s.id)),
        ("ListSecrets", v1.ListSecretsRequest()),
        ("CreateSecret", v1.CreateSecretRequest(secret=v1.Secret(name="OTHER", value=VALUE))),
        (
            "UpdateSecret",
            v1.UpdateSecretRequest(
                secret=v1.Secret(id=s.id, description="d", value=VALUE),
                update_mask=FieldMask(paths=["description", "value"]),
            ),
        ),
    ):
        assert VALUE.encode() not in raw_bytes(client, method, request), method
    assert stored_value(pg_url, s.id) == VALUE  # kept for the tools that reference it


def test_update_value(client, pg_url):
    s = create_secret(client, name="TOKEN", description="keep me")
    updated = client.secrets.update_secret(
        v1.UpdateSecretRequest(
            secret=v1.Secret(id=s.id, value="rotated", description="ignored"),
            update_mask=FieldMask(paths=["value"]),
        )
    )
    assert updated.value == "" and updated.description == "keep me" and updated.name == "TOKEN"
    assert updated.updated_at >= s.updated_at
    assert stored_value(pg_url, s.id) == "rotated"
    # A description-only update leaves the value alone.
    client.secrets.update_secret(
        v1.UpdateSecretRequest(
            secret=v1.Secret(id=s.id, description="new"), update_mask=FieldMask(paths=["description"])
        )
    )
    assert stored_value(pg_url, s.id) == "rotated"
    # An empty value is not a value.
    expect_error(
        lambda: client.secrets.update_secret(
            v1.UpdateSecretRequest(secret=v1.Secret(id=s.id), update_mask=FieldMask(paths=["value"]))
        ),
        INVALID,
        field="secret.value",
    )
    # Without a mask every writable field is replaced, so the value must be given again.
    expect_error(
        lambda: client.secrets.update_secret(v1.UpdateSecretRequest(secret=v1.Secret(id=s.id, name="TOKEN"))),
        INVALID,
        field="secret.value",
    )
    replaced = client.secrets.update_secret(
        v1.UpdateSecretRequest(secret=v1.Secret(id=s.id, name="TOKEN2", value="v3"))
    )
    assert (replaced.name, replaced.description) == ("TOKEN2", "")
    assert stored_value(pg_url, s.id) == "v3"


def test_rename(client):
    s = create_secret(client, name="OLD")
    renamed = client.secrets.update_secret(
        v1.UpdateSecretRequest(secret=v1.Secret(id=s.id, name="NEW"), update_mask=FieldMask(paths=["name"]))
    )
    assert renamed.name == "NEW"
    create_secret(client, name="OLD")  # the old name is free


def test_name_unique_per_developer(client, other_client):
    create_secret(client, name="SHARED")
    err = expect_error(
        lambda: create_secret(client, name="SHARED", value="other"), EXISTS, reason="SECRET_ALREADY_EXISTS"
    )
    assert err.metadata == {"field": "name", "value": "SHARED"}
    assert VALUE not in err.message and "other" not in str(err.metadata)
    second = create_secret(client, name="SECOND")
    expect_error(
        lambda: client.secrets.update_secret(
            v1.UpdateSecretRequest(
                secret=v1.Secret(id=second.id, name="SHARED"), update_mask=FieldMask(paths=["name"])
            )
        ),
        EXISTS,
    )
    create_secret(other_client, name="SHARED")  # another developer may use the name


@pytest.mark.parametrize(
    ("secret", "field"),
    [
        ({"name": ""}, "secret.name"),
        ({"name": "has space"}, "secret.name"),
        ({"name": "1st"}, "secret.name"),
        ({"name": "dash-ed"}, "secret.name"),
        ({"name": "x" * 121}, "secret.name"),
        ({"name": "OK", "value": ""}, "secret.value"),
        ({"name": "OK", "value": "v" * (64 * 1024 + 1)}, "secret.value"),
        ({"name": "OK", "description": "d" * 10_001}, "secret.description"),
        ({"name": "OK", "id": "nope"}, "secret.id"),
    ],
)
def test_bad_input(client, secret, field):
    expect_error(lambda: create_secret(client, **secret), INVALID, field=field)
    assert client.secrets.list_secrets(v1.ListSecretsRequest()).secrets == []


def test_list_pages_and_filters(client):
    ids = [
        create_secret(client, name=f"S{i}", metadata=Struct.from_dict({"group": i % 2})).id for i in range(5)
    ]
    seen, token = [], ""
    while True:
        page = client.secrets.list_secrets(v1.ListSecretsRequest(page_size=2, page_token=token))
        seen += [s.id for s in page.secrets]
        token = page.next_page_token
        if not token:
            break
    assert seen == ids
    assert [
        s.id
        for s in client.secrets.list_secrets(
            v1.ListSecretsRequest(metadata_filter=Struct.from_dict({"group": 1}))
        ).secrets
    ] == ids[1::2]
    expect_error(
        lambda: client.secrets.list_secrets(v1.ListSecretsRequest(page_size=-1)), INVALID, field="page_size"
    )


def test_delete(client, pg_url):
    s = create_secret(client, name="GONE")
    client.secrets.delete_secret(v1.DeleteSecretRequest(id=s.id))
    expect_error(
        lambda: client.secrets.get_secret(v1.GetSecretRequest(id=s.id)), NOT_FOUND, reason="SECRET_NOT_FOUND"
    )
    expect_error(lambda: client.secrets.delete_secret(v1.DeleteSecretRequest(id=s.id)), NOT_FOUND)
    assert stored_value(pg_url, s.id) is None
    create_secret(client, name="GONE")


def test_idempotent_create(client):
    first = create_secret(client, request_id="sec-1", name="ONCE")
    assert create_secret(client, request_id="sec-1", name="ONCE") == first
    chosen = str(uuid.uuid4())
    s = create_secret(client, id=chosen, name="CHOSEN")
    assert s.id == chosen
    assert create_secret(client, id=chosen, name="CHOSEN") == s
    expect_error(lambda: create_secret(client, id=chosen, name="CHOSEN", value="different"), EXISTS)
    assert len(client.secrets.list_secrets(v1.ListSecretsRequest()).secrets) == 2
