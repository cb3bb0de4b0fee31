"""Fixtures for the built-in handler tests: a home directory, task contexts, a tiny HTTP
server on 127.0.0.1 (real sockets, so tests using it run on real time)."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from fake_http import FakeServer

from sidecar.errors import InvalidParams
from sidecar.handlers import Handler, RuntimeServices, TaskContext


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def make_ctx(home: Path) -> Callable[..., TaskContext]:
    def make(
        task_type: str = "test", *, allow_exec: bool = True, home: Path | None = home
    ) -> TaskContext:
        return TaskContext(
            task_id="t-1",
            task_type=task_type,
            run=1,
            home=home,
            services=RuntimeServices(set_ready=lambda ready: None, allow_exec=allow_exec),
        )

    return make


@pytest.fixture
def run_handler(make_ctx, home: Path):
    """Validate like the runtime does at submit, then call the handler like a task actor."""

    async def run(h: Handler, params: dict[str, Any], *, ctx: TaskContext | None = None) -> Any:
        ctx = ctx or make_ctx(h.type)
        typed = h.validate(params, {"home": ctx.home, "allow_exec": ctx.services.allow_exec})
        return await h(ctx, typed)

    return run


def _invalid(h: Handler, params: Any, context: dict[str, Any] | None) -> InvalidParams:
    with pytest.raises(InvalidParams) as info:
        h.validate(params, context)
    return info.value


@pytest.fixture
def invalid() -> Callable[[Handler, Any, dict[str, Any] | None], InvalidParams]:
    """``invalid(handler, params, context)``: the InvalidParams validation raises."""
    return _invalid


@pytest.fixture
async def http_server(nursery, monkeypatch) -> FakeServer:
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(var, raising=False)
    server = FakeServer()
    listeners = await nursery.start(partial(trio.serve_tcp, server.handle, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    server.url = f"http://127.0.0.1:{port}"
    return server


@pytest.fixture
async def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/"
