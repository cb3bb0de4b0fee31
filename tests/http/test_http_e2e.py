"""End to end: a real `sidecar serve` subprocess on 127.0.0.1 and an ephemeral port.

The Go sidecar's manual test plan, automated: POST, SIGKILL, restart on the same home, GET.
Real time is unavoidable here; every wait polls with a short step under a hard deadline.
"""

from __future__ import annotations

import os
import signal
import sys

import httpx
import pytest
import trio
from conftest import HERE, REPO

pytestmark = pytest.mark.e2e

TOKEN = "s3cret-token-value"


async def post_task(client: httpx.AsyncClient, body: dict, expect: int = 201) -> str:
    resp = await client.post("/v0/tasks", json=body)
    assert resp.status_code == expect, resp.text
    return resp.json()["id"]


async def long_poll(client: httpx.AsyncClient, task_id: str, seconds: float) -> dict:
    resp = await client.get(f"/v0/tasks/{task_id}", params={"wait": seconds}, timeout=seconds + 5)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_records_survive_sigkill_and_running_tasks_are_recovered(servers, tmp_path):
    server = await servers()
    async with httpx.AsyncClient(base_url=server.url) as client:
        done = await post_task(client, {"type": "e2e-noop"})
        assert (await long_poll(client, done, 5))["status"] == "completed"
        interrupted = await post_task(client, {"type": "e2e-sleep", "params": {"seconds": 60}})
        rerun = await post_task(
            client, {"type": "e2e-sleep-idempotent", "params": {"seconds": 0.2}}
        )
        assert (await client.get(f"/v0/tasks/{rerun}")).json()["status"] == "running"
    await server.kill()

    server = await servers(server.home)
    async with httpx.AsyncClient(base_url=server.url) as client:
        rec = (await client.get(f"/v0/tasks/{done}")).json()
        assert rec["status"] == "completed"
        rec = (await client.get(f"/v0/tasks/{interrupted}")).json()
        assert rec["status"] == "failed"
        assert "interrupted" in rec["error"]
        assert rec["errorDetail"]["retryable"] is True
        rec = await long_poll(client, rerun, 10)
        assert rec["status"] == "completed"
        assert rec["result"]["run"] == 1
        listed = (await client.get("/v0/tasks")).json()
        assert {r["id"] for r in listed} == {done, interrupted, rerun}


async def test_sigterm_finishes_the_running_task_and_exits_zero(servers):
    server = await servers(None, "--grace", "10")
    async with (
        httpx.AsyncClient(base_url=server.url) as client,
        httpx.AsyncClient(base_url=server.url) as idle,
    ):
        task_id = await post_task(client, {"type": "e2e-sleep", "params": {"seconds": 1.0}})
        # An idle keep-alive connection must not hold shutdown up.
        assert (await idle.get("/v0/status")).status_code == 200
        waiter: dict = {}

        async def poll() -> None:
            waiter["rec"] = await long_poll(client, task_id, 30)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(poll)
            await trio.sleep(0.1)
            code, elapsed = await server.stop(signal.SIGTERM)
        assert code == 0, server.log()
        # The drain waited for the 1 s task, not for Hypercorn's graceful timeout too.
        assert elapsed < 3.0, server.log()
        # The long-poll was answered (early, at shutdown) rather than cut off.
        assert waiter["rec"]["id"] == task_id
    assert "sidecar stopped" in server.log()

    server = await servers(server.home)
    async with httpx.AsyncClient(base_url=server.url) as client:
        rec = (await client.get(f"/v0/tasks/{task_id}")).json()
        assert rec["status"] == "completed", rec
        assert rec["result"] == {"slept": 1.0, "run": 1}
        code, elapsed = await server.stop(signal.SIGINT)
        assert code == 0
        assert elapsed < 2.0, "an idle server stops at once"


async def test_token_auth_body_limit_and_long_poll(servers):
    server = await servers(
        None, "--auth", "token", "--max-body", "2048", env={"SIDECAR_TOKEN": TOKEN}
    )
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=server.url) as anon:
        resp = await anon.post("/v0/tasks", json={"type": "e2e-noop"})
        assert resp.status_code == 401
        assert "error" in resp.json()
        resp = await anon.get("/v0/tasks", headers={"Authorization": "Bearer wrong"})
        assert resp.status_code == 401
        # Probes and metrics bypass auth.
        assert (await anon.get("/v0/healthz")).status_code == 503
        assert (await anon.get("/v0/livez")).status_code == 200
        assert (await anon.get("/v0/status")).status_code == 200
        assert (await anon.get("/v0/metrics")).status_code == 200

    async with httpx.AsyncClient(base_url=server.url, headers=auth) as client:
        resp = await client.post(
            "/v0/tasks", json={"type": "e2e-noop", "params": {"x": "y" * 4000}}
        )
        assert resp.status_code == 413
        assert resp.headers["connection"] == "close"
        assert "too large" in resp.json()["error"]
        # The next request goes out on a new connection and is served.
        task_id = await post_task(client, {"type": "e2e-sleep", "params": {"seconds": 0.3}})
        started = trio.current_time()
        rec = await long_poll(client, task_id, 10)
        assert rec["status"] == "completed"
        assert trio.current_time() - started < 5

    code, _ = await server.stop()
    assert code == 0
    assert TOKEN not in server.log()


async def test_start_up_errors_are_one_line_and_exit_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}
    taken = trio.socket.socket()
    await taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = str(taken.getsockname()[1])
    base = [sys.executable, "-m", "sidecar", "serve", "--home", str(tmp_path / "h")]
    with taken:
        for extra, expected in (
            (["--port", "0", "--handlers", "no_such_module:X"], "no_such_module"),
            (["--port", port, "--no-entry-points"], "Address already in use"),
        ):
            result = await trio.run_process(
                [*base, *extra],
                cwd=REPO,
                env=env,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            err = result.stderr.decode()
            assert result.returncode == 2, err
            assert expected in err
            assert "Traceback" not in err
