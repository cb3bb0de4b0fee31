"""Authentication modes, in process: probes and metrics bypass, the rest needs credentials."""

from __future__ import annotations

import logging

import pytest

from sidecar.http import Authenticator, create_app

TOKEN = "tök3n-with-ünïcode"
PROTECTED = [
    ("POST", "/v0/tasks"),
    ("POST", "/v0/tasks/batch"),
    ("GET", "/v0/tasks"),
    ("GET", "/v0/tasks/0191e7f0-0000-7000-8000-000000000000"),
    ("DELETE", "/v0/tasks/0191e7f0-0000-7000-8000-000000000000"),
    ("GET", "/v0/openapi.json"),
]
PUBLIC = ["/v0/healthz", "/v0/startupz", "/v0/livez", "/v0/status", "/v0/metrics"]


async def test_token_mode_requires_the_bearer_token(rt, caplog):
    caplog.set_level(logging.DEBUG)
    client = create_app(rt, auth="token", token=TOKEN).test_client()
    for method, path in PROTECTED:
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
            resp = await client.open(path, method=method, headers=headers, json={})
            assert resp.status_code == 401, (method, path, headers)
            assert (await resp.get_json())["error"].startswith("unauthorized")
            assert resp.headers["WWW-Authenticate"] == "Bearer"
    # The test client sends header values UTF-8 encoded, as a real client sends raw bytes.
    good = {"Authorization": f"Bearer {TOKEN}"}
    resp = await client.post("/v0/tasks", json={"type": "noop"}, headers=good)
    assert resp.status_code == 201
    for path in PUBLIC:
        assert (await client.get(path)).status_code in (200, 503), path
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


async def test_trusted_header_mode_requires_x_remote_user(rt):
    client = create_app(rt, auth="trusted-header").test_client()
    resp = await client.post("/v0/tasks", json={"type": "noop"})
    assert resp.status_code == 401
    assert "X-Remote-User" in (await resp.get_json())["error"]
    resp = await client.post("/v0/tasks", json={"type": "noop"}, headers={"X-Remote-User": " "})
    assert resp.status_code == 401
    resp = await client.post("/v0/tasks", json={"type": "noop"}, headers={"X-Remote-User": "alice"})
    assert resp.status_code == 201
    for path in PUBLIC:
        assert (await client.get(path)).status_code in (200, 503), path


async def test_none_mode_lets_everything_through(client):
    assert (await client.get("/v0/tasks")).status_code == 200


def test_token_mode_without_a_token_is_refused():
    with pytest.raises(ValueError, match="SIDECAR_TOKEN"):
        Authenticator("token", None)
    with pytest.raises(ValueError):
        Authenticator("basic")
    assert TOKEN not in repr(Authenticator("token", TOKEN))


async def test_openapi_documents_the_security_scheme(rt):
    client = create_app(rt, auth="token", token=TOKEN).test_client()
    doc = await (
        await client.get("/v0/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"})
    ).get_json()
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
