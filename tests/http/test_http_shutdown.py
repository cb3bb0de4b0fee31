"""Shutdown cannot be held up forever: the hard deadline and the second signal (issues 4, 6).

trio cannot abandon a task, so a handler that shields itself from cancellation or blocks the
event loop would keep `sidecar serve` from exiting after SIGTERM. The process must still exit
by its deadline, say so on stderr, and leave the task for start-up recovery to settle.
"""

from __future__ import annotations

import importlib
import signal
import threading
import time

import httpx
import pytest
import trio
from conftest import Server

from sidecar.http import ServeOptions
from sidecar.http.serve import (
    EXIT_SHUTDOWN_TIMEOUT,
    FORCED_EXIT_AFTER,
    SHUTDOWN_MARGIN,
    _HardDeadline,
)

# The module, not the function that `sidecar.http.serve` names.
serve_module = importlib.import_module("sidecar.http.serve")

DEADLINE = 2.0  # --shutdown-timeout in these tests: short, to keep the suite fast
SLACK = 2.0  # process start-up noise on a loaded machine


async def start(servers, home=None, *args: str) -> Server:
    return await servers(home, *args, handlers="stubborn_plugin:HANDLERS")


async def submit(server: Server, task_type: str) -> str:
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as client:
        resp = await client.post("/v0/tasks", json={"type": task_type})
        assert resp.status_code == 201, resp.text
        task_id = resp.json()["id"]
        # Running (and, for blocks-loop, about to block) before the signal arrives.
        assert (await client.get(f"/v0/tasks/{task_id}")).json()["status"] == "running"
    return task_id


async def assert_recovered_as_interrupted(servers, server: Server, task_id: str) -> None:
    again = await start(servers, server.home)
    async with httpx.AsyncClient(base_url=again.url, timeout=5) as client:
        rec = (await client.get(f"/v0/tasks/{task_id}")).json()
    assert rec["status"] == "failed", rec
    assert "interrupted" in rec["error"]
    code, _ = await again.stop()
    assert code == 0, again.log()


@pytest.mark.e2e
@pytest.mark.parametrize("task_type", ["ignores-cancel", "blocks-loop"])
async def test_a_handler_that_ignores_cancellation_is_abandoned_at_the_deadline(servers, task_type):
    server = await start(
        servers, None, "--grace", "0.5", "--graceful-timeout", "0.5",
        "--shutdown-timeout", str(DEADLINE),
    )  # fmt: skip
    task_id = await submit(server, task_type)
    if task_type == "blocks-loop":
        # The signal must arrive while the loop is blocked: nothing answers any more.
        await trio.sleep(0.2)
        async with httpx.AsyncClient(base_url=server.url, timeout=0.3) as client:
            with pytest.raises(httpx.TimeoutException):
                await client.get("/v0/status")

    code, elapsed = await server.stop(signal.SIGTERM, within=DEADLINE + 10)

    assert code == EXIT_SHUTDOWN_TIMEOUT, server.log()
    assert DEADLINE - 0.2 < elapsed < DEADLINE + SLACK, server.log()
    log = server.log()
    assert f"shutdown did not finish within {DEADLINE:g}s; abandon" in log
    assert "sidecar stopped" not in log
    await assert_recovered_as_interrupted(servers, server, task_id)


@pytest.mark.e2e
async def test_a_second_signal_stops_waiting_for_running_tasks(servers):
    server = await start(servers, None, "--grace", "60")
    task_id = await submit(server, "slow")

    server.proc.send_signal(signal.SIGTERM)
    # The kernel merges a signal into one still pending: send the second once the first
    # has been handled and the drain is waiting for the task.
    with trio.fail_after(10):
        while "draining tasks" not in server.log():
            await trio.sleep(0.02)
    code, elapsed = await server.stop(signal.SIGTERM, within=10)

    # The grace period is cut short: the task is cancelled, the DB closes cleanly, exit 0.
    assert code == 0, server.log()
    assert elapsed < FORCED_EXIT_AFTER + SLACK, server.log()
    log = server.log()
    assert "second SIGTERM during shutdown: cancelling running tasks now" in log
    assert "sidecar stopped" in log
    await assert_recovered_as_interrupted(servers, server, task_id)


class Exits:
    """Stands in for os._exit/os.write in _HardDeadline's timer thread."""

    def __init__(self, monkeypatch) -> None:
        self.codes: list[int] = []
        self.lines: list[bytes] = []
        self.fired = threading.Event()
        monkeypatch.setattr(serve_module.os, "_exit", self._exit)
        monkeypatch.setattr(serve_module.os, "write", lambda fd, data: self.lines.append(data))

    def _exit(self, code: int) -> None:
        self.codes.append(code)
        self.fired.set()


def test_the_deadline_fires_once_with_status_70(monkeypatch):
    exits = Exits(monkeypatch)
    deadline = _HardDeadline(0.05)
    deadline.arm()
    deadline.arm()  # a later arm keeps the first deadline
    assert exits.fired.wait(5)
    time.sleep(0.1)
    assert exits.codes == [EXIT_SHUTDOWN_TIMEOUT]
    assert b"within 0.05s; abandoning" in exits.lines[0]


def test_a_disarmed_deadline_never_fires(monkeypatch):
    exits = Exits(monkeypatch)
    deadline = _HardDeadline(0.05)
    deadline.arm()
    deadline.disarm()
    deadline.force(signal.SIGINT)
    assert not exits.fired.wait(0.2)


def test_a_forced_exit_shortens_the_deadline(monkeypatch):
    exits = Exits(monkeypatch)
    monkeypatch.setattr(serve_module, "FORCED_EXIT_AFTER", 0.05)
    deadline = _HardDeadline(60)
    deadline.arm()
    assert deadline.armed
    deadline.force(signal.SIGINT)
    assert exits.fired.wait(5)
    deadline.disarm()
    assert exits.codes == [128 + signal.SIGINT]
    assert b"second SIGINT during shutdown" in exits.lines[0]


def test_the_default_deadline_covers_requests_grace_and_a_margin():
    options = ServeOptions(grace=7, graceful_timeout=3)
    assert options.hard_deadline == 3 + 7 + SHUTDOWN_MARGIN
    assert ServeOptions(shutdown_timeout=42).hard_deadline == 42
    for bad in (
        ServeOptions(shutdown_timeout=0),
        ServeOptions(synchronous="OFF"),
        ServeOptions(retention_days=-1),
        ServeOptions(grace=float("inf")),
    ):
        with pytest.raises(ValueError):
            bad.check()
