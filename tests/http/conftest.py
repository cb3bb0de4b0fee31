"""Fixtures for the HTTP tests: a runtime on a file DB in tmp_path and the app's test client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pydantic
import pytest
import trio

import sidecar
from sidecar.http import create_app


class Gate:
    """Lets a test hold ``gate`` tasks running and release them when it chooses."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.started = 0


class CountParams(pydantic.BaseModel):
    count: int
    label: str = "x"


def make_handlers(gate: Gate) -> list[sidecar.Handler]:
    @sidecar.handler("noop")
    async def noop(ctx: sidecar.TaskContext, params: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "params": params}

    @sidecar.handler("gate")
    async def gated(ctx: sidecar.TaskContext, params: dict[str, Any]) -> str:
        gate.started += 1
        await gate.release.wait()
        return "released"

    @sidecar.handler("boom")
    async def boom(ctx: sidecar.TaskContext, params: dict[str, Any]) -> None:
        raise sidecar.TaskError("it broke", hint="try again later", retryable=True)

    @sidecar.handler("typed", params=CountParams)
    async def typed(ctx: sidecar.TaskContext, params: CountParams) -> int:
        return params.count * 2

    return [noop, gated, boom, typed]


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
async def rt(tmp_path, gate: Gate) -> AsyncIterator[sidecar.Runtime]:
    async with sidecar.open_runtime(tmp_path, handlers=make_handlers(gate), grace=1.0) as runtime:
        yield runtime
        gate.release.set()


@pytest.fixture
def app(rt: sidecar.Runtime):
    return create_app(rt)


@pytest.fixture
def client(app):
    return app.test_client()
