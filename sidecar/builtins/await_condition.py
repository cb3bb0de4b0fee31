"""``await-condition``: poll until a file exists under home or an HTTP endpoint is healthy.

Progress (``{"attempts": n, "last": observation}``) is published after every attempt, so
a long wait is never a black box; on timeout the task fails with the last observation.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pydantic
import trio
from pydantic_core import PydanticCustomError

from .. import threads
from ..errors import TaskError
from ..handlers import TaskContext, handler
from ._common import OutsideHome, Params, check_home_path, resolve_inside_home
from ._http import MISSING, check_url, json_at, json_equal, read_bounded

__all__ = ["AwaitConditionParams", "await_condition"]

# A health endpoint's JSON body is small; reading more than this is a misconfiguration.
_BODY_LIMIT = 1024 * 1024
# One probe may not hang past this; the overall ``timeout`` still bounds the whole wait.
_PROBE_TIMEOUT = 10.0


class AwaitConditionParams(Params):
    """Params of ``await-condition``: exactly one of ``file`` or ``url``.

    Attributes:
        file: wait until this path (relative to home, confined to it) exists.
        url: wait until a GET answers ``status`` (any 2xx when unset) and, when
            ``jsonPath`` is set, the JSON body has a value there (equal to ``equals``
            when that is given; ``null`` is a value).
        status: the expected HTTP status (``url`` only).
        jsonPath: a dotted path into the JSON body, digits index arrays (``url`` only).
        equals: the JSON value expected at ``jsonPath``.
        interval: seconds between attempts (default 1).
        timeout: seconds before giving up (required: a wait must end).
    """

    file: str | None = None
    url: str | None = None
    status: int | None = pydantic.Field(None, ge=100, le=599)
    json_path: str | None = pydantic.Field(None, alias="jsonPath")
    equals: Any = None
    interval: float = pydantic.Field(1.0, gt=0, allow_inf_nan=False)
    timeout: float = pydantic.Field(gt=0, allow_inf_nan=False)

    @pydantic.field_validator("file")
    @classmethod
    def _file_inside_home(cls, value: str | None, info: pydantic.ValidationInfo) -> str | None:
        return None if value is None else check_home_path(value, info)

    @pydantic.field_validator("url")
    @classmethod
    def _url_is_http(cls, value: str | None) -> str | None:
        return None if value is None else check_url(value)

    @pydantic.field_validator("json_path")
    @classmethod
    def _path_is_dotted(cls, value: str | None) -> str | None:
        if value is not None and (not value or "" in value.split(".")):
            raise PydanticCustomError(
                "json_path", "must be dot-separated keys such as 'result.sync.catching_up'"
            )
        return value

    @pydantic.model_validator(mode="after")
    def _one_target(self) -> AwaitConditionParams:
        if (self.file is None) == (self.url is None):
            raise PydanticCustomError("target", "exactly one of 'file' or 'url' is required")
        if self.file is not None:
            for name, given in (
                ("status", self.status is not None),
                ("jsonPath", self.json_path is not None),
                ("equals", "equals" in self.model_fields_set),
            ):
                if given:
                    raise PydanticCustomError(
                        "url_only", "{name} applies to 'url' only", {"name": repr(name)}
                    )
        if "equals" in self.model_fields_set and self.json_path is None:
            raise PydanticCustomError("equals", "'equals' needs 'jsonPath'")
        return self


@handler("await-condition", params=AwaitConditionParams, idempotent=True)
async def await_condition(ctx: TaskContext, params: AwaitConditionParams) -> dict[str, Any]:
    """Poll every ``interval`` seconds until the condition holds.

    Result: ``{"attempts", "elapsed", "last"}``.

    Raises:
        TaskError: on timeout (retryable; ``result`` holds attempts and the last
            observation), or when ``file`` now resolves outside home.
    """
    started = trio.current_time()
    attempts = 0
    last: Any = None
    async with _open_probe(ctx, params) as probe:
        with trio.move_on_after(params.timeout):
            while True:
                attempts += 1
                met, last = await probe()
                ctx.report_progress({"attempts": attempts, "last": last})
                if met:
                    return {
                        "attempts": attempts,
                        "elapsed": round(trio.current_time() - started, 3),
                        "last": last,
                    }
                await trio.sleep(params.interval)
    raise TaskError(
        f"condition not met within {params.timeout:g}s after {attempts} attempt(s); "
        f"last observation: {json.dumps(last)}",
        retryable=True,
        result={"attempts": attempts, "last": last},
    )


Probe = Callable[[], Awaitable[tuple[bool, Any]]]


@contextlib.asynccontextmanager
async def _open_probe(ctx: TaskContext, params: AwaitConditionParams) -> AsyncIterator[Probe]:
    """Yield the check for the params' target: ``() -> (met, observation)``."""
    if params.file is not None:
        if ctx.home is None:
            raise TaskError("await-condition on a file needs a runtime with a home directory")
        yield functools.partial(_check_file, ctx.home, params.file)
        return
    # Building a client loads CA certificates from disk: do it off the trio thread.
    client = await threads.run_sync(lambda: httpx.AsyncClient(timeout=_PROBE_TIMEOUT))
    try:
        yield functools.partial(_check_url, client, params)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await client.aclose()


async def _check_file(home: Path, rel: str) -> tuple[bool, Any]:
    exists = await threads.run_sync(_exists_inside, home, rel)
    return exists, {"exists": exists}


async def _check_url(client: httpx.AsyncClient, params: AwaitConditionParams) -> tuple[bool, Any]:
    assert params.url is not None
    try:
        async with client.stream("GET", params.url) as response:
            status = response.status_code
            body, truncated = (
                await read_bounded(response, _BODY_LIMIT)
                if params.json_path is not None
                else (b"", False)
            )
    except httpx.HTTPError as exc:
        return False, {"error": _describe(exc)}
    seen: dict[str, Any] = {"status": status}
    ok = status == params.status if params.status is not None else 200 <= status < 300
    if params.json_path is None:
        return ok, seen
    if truncated:
        seen["error"] = f"body exceeds {_BODY_LIMIT} bytes"
        return False, seen
    try:
        value = json_at(json.loads(body), params.json_path)
    except ValueError:
        seen["error"] = "body is not JSON"
        return False, seen
    if value is MISSING:
        seen["missing"] = params.json_path
        return False, seen
    seen["value"] = value
    if "equals" in params.model_fields_set:
        ok = ok and json_equal(value, params.equals)
    return ok, seen


def _exists_inside(home: Path, rel: str) -> bool:
    try:
        return os.path.exists(resolve_inside_home(home, rel))
    except OutsideHome as exc:
        raise TaskError(f"file {rel!r} {exc}") from None


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
