"""``http-request``: make one HTTP call (e.g. notify a controller) and record the answer."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pydantic
import trio
from pydantic_core import PydanticCustomError

from .. import threads
from ..errors import TaskError
from ..handlers import TaskContext, handler
from ._common import Params
from ._http import check_url, read_bounded

__all__ = ["BODY_EXCERPT_BYTES", "HttpRequestParams", "http_request"]

BODY_EXCERPT_BYTES = 4096
"""How much of the response body the result keeps."""

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class HttpRequestParams(Params):
    """Params of ``http-request``.

    Attributes:
        method: ``GET``, ``HEAD``, ``POST``, ``PUT``, ``PATCH``, ``DELETE`` or ``OPTIONS``
            (any case).
        url: an absolute ``http://`` or ``https://`` URL. Redirects are not followed.
        headers: request headers (names are HTTP tokens; values have no line breaks).
        json: a JSON body (sent as ``application/json``); absent means no body.
        expectStatus: the status, or list of statuses, that counts as success
            (default: any 2xx).
    """

    method: str
    url: str
    headers: dict[str, str] = pydantic.Field(default_factory=dict)
    body: Any = pydantic.Field(None, alias="json")
    expect_status: int | list[int] | None = pydantic.Field(None, alias="expectStatus")

    @pydantic.field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        method = value.upper()
        if method not in _METHODS:
            raise PydanticCustomError(
                "method", "must be one of {methods}", {"methods": ", ".join(sorted(_METHODS))}
            )
        return method

    @pydantic.field_validator("url")
    @classmethod
    def _url_is_http(cls, value: str) -> str:
        return check_url(value)

    @pydantic.field_validator("headers")
    @classmethod
    def _headers_are_valid(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _TOKEN.match(name):
                raise PydanticCustomError(
                    "header", "{name} is not a valid header name", {"name": repr(name)}
                )
            if "\r" in text or "\n" in text:
                raise PydanticCustomError(
                    "header", "the value of {name} contains a line break", {"name": repr(name)}
                )
        return value

    @pydantic.field_validator("expect_status")
    @classmethod
    def _statuses_in_range(cls, value: int | list[int] | None) -> int | list[int] | None:
        statuses = [value] if isinstance(value, int) else value
        if statuses is not None:
            if not statuses:
                raise PydanticCustomError("status", "must list at least one status")
            for status in statuses:
                if not 100 <= status <= 599:
                    raise PydanticCustomError(
                        "status", "{status} is not an HTTP status (100-599)", {"status": status}
                    )
        return value

    def expects(self, status: int) -> bool:
        """Whether ``status`` counts as success."""
        if self.expect_status is None:
            return 200 <= status < 300
        if isinstance(self.expect_status, int):
            return status == self.expect_status
        return status in self.expect_status


@handler("http-request", params=HttpRequestParams, timeout=60.0)
async def http_request(ctx: TaskContext, params: HttpRequestParams) -> dict[str, Any]:
    """Send the request once. The task's timeout (default 60 s) bounds the whole call.

    Result: ``{"status", "headers", "body", "truncated"}``; ``body`` is the first
    4 KiB of the response, decoded as UTF-8 with replacement characters.

    Raises:
        TaskError: the request could not be made (retryable), or the status was not
            expected (the result above is stored on the failed record; retryable for 5xx).
    """
    request_headers = dict(params.headers)
    content: bytes | None = None
    if "body" in params.model_fields_set:
        content = json.dumps(params.body).encode()
        if not any(name.lower() == "content-type" for name in request_headers):
            request_headers["Content-Type"] = "application/json"
    # Building a client loads CA certificates from disk: do it off the trio thread.
    client = await threads.run_sync(lambda: httpx.AsyncClient(timeout=None))
    try:
        async with client.stream(
            params.method, params.url, headers=request_headers, content=content
        ) as response:
            body, truncated = await read_bounded(response, BODY_EXCERPT_BYTES)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        detail = str(exc) or type(exc).__name__
        raise TaskError(f"{params.method} {params.url} failed: {detail}", retryable=True) from None
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await client.aclose()
    result = {
        "status": response.status_code,
        "headers": {name: ", ".join(response.headers.get_list(name)) for name in response.headers},
        "body": body.decode("utf-8", errors="replace"),
        "truncated": truncated,
    }
    if not params.expects(response.status_code):
        raise TaskError(
            f"{params.method} {params.url} answered {response.status_code}",
            retryable=response.status_code >= 500,
            result=result,
        )
    return result
