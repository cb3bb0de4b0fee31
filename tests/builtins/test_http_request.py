import json

import pytest
from fake_http import Reply

from sidecar.builtins.http_request import http_request
from sidecar.errors import TaskError

CONTEXT = {"home": None, "allow_exec": False}


async def test_post_json_with_headers_and_record_the_answer(http_server, run_handler):
    http_server.respond = lambda request: Reply(201, {"ok": True}, {"X-Id": "7"})
    result = await run_handler(
        http_request,
        {
            "method": "post",
            "url": http_server.url + "/notify",
            "headers": {"Authorization": "Bearer t"},
            "json": {"node": "n0", "ready": True},
        },
    )
    [request] = http_server.requests
    assert (request.method, request.path) == ("POST", "/notify")
    assert request.headers["authorization"] == "Bearer t"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {"node": "n0", "ready": True}
    assert result["status"] == 201
    assert result["headers"]["x-id"] == "7"
    assert result["body"] == '{"ok": true}'
    assert result["truncated"] is False


async def test_no_json_means_no_body_and_null_means_a_null_body(http_server, run_handler):
    await run_handler(http_request, {"method": "GET", "url": http_server.url})
    await run_handler(http_request, {"method": "PUT", "url": http_server.url, "json": None})
    assert [r.body for r in http_server.requests] == [b"", b"null"]


async def test_the_body_excerpt_is_bounded_to_4_kib(http_server, run_handler):
    http_server.respond = lambda request: Reply(200, "x" * 100_000)
    result = await run_handler(http_request, {"method": "GET", "url": http_server.url})
    assert result["body"] == "x" * 4096
    assert result["truncated"] is True


async def test_an_unexpected_status_fails_and_keeps_the_result(http_server, run_handler):
    http_server.respond = lambda request: Reply(409, "conflict")
    with pytest.raises(TaskError, match="answered 409") as info:
        await run_handler(http_request, {"method": "POST", "url": http_server.url})
    assert info.value.result["status"] == 409
    assert info.value.result["body"] == "conflict"
    assert not info.value.retryable


async def test_a_5xx_answer_is_retryable(http_server, run_handler):
    http_server.respond = lambda request: Reply(503)
    with pytest.raises(TaskError) as info:
        await run_handler(http_request, {"method": "GET", "url": http_server.url})
    assert info.value.retryable


@pytest.mark.parametrize(("expect", "status"), [(404, 404), ([200, 404], 404), ([301], 301)])
async def test_expect_status_decides_success(http_server, run_handler, expect, status):
    http_server.respond = lambda request: Reply(status, headers={"Location": "/elsewhere"})
    result = await run_handler(
        http_request, {"method": "GET", "url": http_server.url, "expectStatus": expect}
    )
    assert result["status"] == status
    assert len(http_server.requests) == 1  # redirects are not followed


async def test_connection_refused_fails_retryably(closed_port_url, run_handler):
    with pytest.raises(TaskError, match=r"^GET http://127\.0\.0\.1:\d+/ failed: ") as info:
        await run_handler(http_request, {"method": "GET", "url": closed_port_url})
    assert info.value.retryable
    assert info.value.result is None


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"url": "http://x/"}, "method", "Field required"),
        ({"method": "GET"}, "url", "Field required"),
        ({"method": "BREW", "url": "http://x/"}, "method", "must be one of"),
        ({"method": "GET", "url": "file:///etc/passwd"}, "url", "http:// or https://"),
        ({"method": "GET", "url": "http:///x"}, "url", "http:// or https://"),
        ({"method": "GET", "url": "http://x/", "headers": {"a b": "1"}}, "headers", "header name"),
        ({"method": "GET", "url": "http://x/", "headers": {"A": "1\r\nB: 2"}}, "headers", "line"),
        ({"method": "GET", "url": "http://x/", "headers": {"A": 1}}, "headers.A", "valid string"),
        ({"method": "GET", "url": "http://x/", "expectStatus": 600}, "expectStatus", "100-599"),
        ({"method": "GET", "url": "http://x/", "expectStatus": []}, "expectStatus", "at least"),
        ({"method": "GET", "url": "http://x/", "body": 1, "json": 2}, "body", "Extra inputs"),
    ],
)
def test_bad_params_are_rejected_at_submit(invalid, params, field, words):
    err = invalid(http_request, params, CONTEXT)
    assert err.field == field, str(err)
    assert words in str(err)


def test_http_request_has_a_default_timeout_and_is_not_idempotent():
    assert http_request.timeout == 60.0
    assert not http_request.idempotent
