"""The built-ins' submit-time errors as an HTTP client sees them: 400 naming the field."""

import pytest

import sidecar
from sidecar.http import create_app


@pytest.fixture
async def client(home):
    async with sidecar.open_runtime(home, grace=1.0) as rt:
        yield create_app(rt).test_client()


@pytest.mark.parametrize(
    ("task", "words"),
    [
        ({"type": "sleep", "params": {"seconds": "5"}}, "params.seconds: "),
        ({"type": "config-patch", "params": {"file": "../x.toml", "patch": {}}}, "params.file: "),
        (
            {"type": "await-condition", "params": {"url": "http://x/", "jsonPath": "a..b"}},
            "params.jsonPath: ",
        ),
        ({"type": "http-request", "params": {"method": "GET", "url": "x"}}, "params.url: "),
        ({"type": "exec", "params": {"argv": ["true"]}}, "exec is disabled"),
    ],
)
async def test_bad_builtin_params_are_a_400_naming_the_field(client, task, words):
    resp = await client.post("/v0/tasks", json=task)
    assert resp.status_code == 400
    assert words in (await resp.get_json())["error"]


async def test_a_good_submission_is_accepted(client):
    resp = await client.post("/v0/tasks", json={"type": "sleep", "params": {"seconds": 0}})
    assert resp.status_code in (200, 201, 202)
