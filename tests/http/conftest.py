"""Fixtures for the HTTP tests: a runtime on a file DB in tmp_path, the app's test client, and
real `sidecar serve` subprocesses (:class:`Server`, the ``servers`` fixture)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
import trio

import sidecar
from sidecar.http import create_app
from sidecar.testing import serve_argv

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


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


class Server:
    """One `python -m sidecar serve` process; the bound URL comes from --port-file."""

    def __init__(
        self,
        home: Path,
        *args: str,
        env: dict[str, str] | None = None,
        handlers: str = "e2e_plugin:HANDLERS",
    ) -> None:
        self.home = home
        self.args = args
        self.env = env or {}
        self.handlers = handlers
        self.url = ""
        self.log_path = home.parent / f"{home.name}-server.log"
        self.proc: trio.Process | None = None

    async def start(self) -> Server:
        port_file = self.home.parent / f"{self.home.name}.url"
        port_file.unlink(missing_ok=True)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)]),
            **self.env,
        }
        with self.log_path.open("ab") as log:
            self.proc = await trio.lowlevel.open_process(
                serve_argv(self.home, port_file, handlers=[self.handlers], args=self.args),
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        with trio.fail_after(15):
            while not port_file.exists():
                if self.proc.poll() is not None:
                    raise AssertionError(f"serve exited {self.proc.returncode}:\n{self.log()}")
                await trio.sleep(0.02)
        self.url = port_file.read_text().strip()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def stop(self, sig: int = signal.SIGTERM, within: float = 15) -> tuple[int, float]:
        """Send ``sig``; return (exit code, seconds until exit)."""
        assert self.proc is not None
        started = trio.current_time()
        self.proc.send_signal(sig)
        with trio.fail_after(within):
            code = await self.proc.wait()
        return code, trio.current_time() - started

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def servers(tmp_path):
    started: list[Server] = []

    async def start(home: Path | None = None, *args: str, **kw) -> Server:
        server = Server(home or tmp_path / "home", *args, **kw)
        started.append(server)
        return await server.start()

    yield start
    for server in started:
        with trio.CancelScope(shield=True):
            await server.kill()
