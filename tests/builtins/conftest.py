"""Fixtures for the built-in handler tests: a home directory, task contexts, a tiny HTTP
server on 127.0.0.1 (real sockets, so tests using it run on real time)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

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


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: bytes | str | Any = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeServer:
    """Answers each request with ``respond(request)``; records what it received."""

    url: str = ""
    respond: Callable[[Request], Reply] = lambda request: Reply()
    requests: list[Request] = field(default_factory=list)

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            while len(body) < length:
                body += await stream.receive_some(65536)
            request = Request(method, path, headers, body)
            self.requests.append(request)
            reply = self.respond(request)
            payload = reply.body
            if not isinstance(payload, bytes | str):
                payload = json.dumps(payload)
            if isinstance(payload, str):
                payload = payload.encode()
            extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
            response = (
                f"HTTP/1.1 {reply.status} X\r\nContent-Length: {len(payload)}\r\n"
                f"Connection: close\r\n{extra}\r\n"
            ).encode() + (b"" if method == "HEAD" else payload)
            try:
                await stream.send_all(response)
            except trio.BrokenResourceError:
                pass


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
