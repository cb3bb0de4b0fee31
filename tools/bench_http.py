"""HTTP benchmark: single submits against `sidecar serve` vs a bare QuartTrio endpoint, and
batch throughput through ``/v0/tasks/batch``.

In one run, on the same Hypercorn configuration (``sidecar.http.serve`` builds it for both):

1. a bare QuartTrio app whose ``POST /v0/tasks`` parses the JSON body and answers 201 — the
   ceiling the server stack allows;
2. a real ``sidecar serve`` subprocess on a file DB, with ``concurrency`` httpx connections
   POSTing no-op tasks for ``--seconds``; then batches of ``--batch-size`` for ``--seconds``.

It prints req/s, p50/p99 latency and the ratio, then stops the sidecar with SIGTERM (exit 0
expected) and checks in the DB that every accepted task is ``completed``: nothing lost.

    python tools/bench_http.py [--seconds 10] [--concurrency 64] [--batch-size 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import httpx
import trio

import sidecar

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@sidecar.handler("bench-noop")
async def bench_noop(ctx: sidecar.TaskContext, params: dict) -> None:
    return None


HANDLERS = [bench_noop]


def bare_app():
    """The baseline: parse the body, answer 201 with an id. Nothing else."""
    from quart import request
    from quart_trio import QuartTrio

    app = QuartTrio("bare")

    @app.post("/v0/tasks")
    async def submit():
        data = await request.get_json(force=True)
        return {"id": sidecar.models.new_task_id(), "type": data["type"]}, 201

    return app


async def serve_bare(port_file: Path) -> None:
    from hypercorn.trio import serve

    from sidecar.http.serve import ServeOptions, _hypercorn_config, _write_port_file

    config = _hypercorn_config(ServeOptions(port=0))
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(partial(serve, bare_app(), config, mode="asgi"))
        _write_port_file(port_file, urls[0])


async def start(argv: list[str], port_file: Path, log: Path) -> tuple[trio.Process, str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}
    with log.open("ab") as out:
        proc = await trio.lowlevel.open_process(
            argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url_file = trio.Path(port_file)
    with trio.fail_after(20):
        while not await url_file.exists():
            if proc.poll() is not None:
                raise SystemExit(f"server exited {proc.returncode}; see {log}")
            await trio.sleep(0.05)
    return proc, (await url_file.read_text()).strip()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all threads), from /proc (Linux)."""
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load_single(url: str, seconds: float, concurrency: int, pid: int = 0) -> dict:
    """``concurrency`` httpx clients, one keep-alive connection each, POSTing in a loop.

    One client per connection: a single pooled AsyncClient shared by 64 tasks spends more
    CPU in its pool than the server spends per request, and measures the client instead.
    The clients (and their connections) are set up before the clock starts.
    """
    latencies: list[float] = []
    ids: list[str] = []
    errors = 0
    tls = ssl.create_default_context()  # built once: each client would load the CA bundle
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=30, verify=tls))
            for _ in range(concurrency)
        ]
        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(client.get, "/v0/status")  # open the connection
        deadline = time.perf_counter() + seconds

        async def worker(client: httpx.AsyncClient) -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                resp = await client.post("/v0/tasks", json={"type": "bench-noop"})
                if resp.status_code == 201:
                    latencies.append(time.perf_counter() - t0)
                    ids.append(resp.json()["id"])
                else:
                    errors += 1

        cpu_before = cpu_seconds(pid)
        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for client in clients:
                nursery.start_soon(worker, client)
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(pid) - cpu_before
    latencies.sort()
    return {
        "req_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
        "ok": len(latencies),
        "errors": errors,
        "ids": ids,
        "cpu_ms": cpu * 1000 / max(1, len(latencies)),
    }


async def load_batch(url: str, seconds: float, clients: int, size: int) -> dict:
    ids: list[str] = []
    latencies: list[float] = []
    body = {"tasks": [{"type": "bench-noop"}] * size}
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                resp = await client.post("/v0/tasks/batch", json=body)
                resp.raise_for_status()
                latencies.append(time.perf_counter() - t0)
                entries = resp.json()
                bad = [e for e in entries if e["status"] != 201]
                if bad:
                    raise SystemExit(f"batch entries rejected: {bad[:3]}")
                ids.extend(e["id"] for e in entries)

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(clients):
                nursery.start_soon(worker)
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "tasks_s": len(ids) / elapsed,
        "ok": len(ids),
        "requests": len(latencies),
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
        "ids": ids,
    }


def verify(db: Path, ids: list[str]) -> tuple[int, int]:
    conn = sqlite3.connect(db)
    try:
        status = dict(conn.execute("SELECT id, status FROM tasks"))
    finally:
        conn.close()
    completed = sum(1 for i in ids if status.get(i) == "completed")
    return completed, len(ids)


async def main(args: argparse.Namespace) -> None:
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    print(
        f"{args.concurrency} connections, {args.seconds:g} s per phase, {args.rounds} round(s)"
        " alternating bare and sidecar (the machine may be shared: alternation spreads noise)\n"
    )
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        tmp_path = Path(tmp)
        bare_proc, bare_url = await start(
            [sys.executable, __file__, "_bare", str(tmp_path / "bare.url")],
            tmp_path / "bare.url",
            tmp_path / "bare.log",
        )
        home = tmp_path / "home"
        proc, url = await start(
            [
                sys.executable,
                "-m",
                "sidecar",
                "serve",
                "--home",
                str(home),
                "--port",
                "0",
                "--port-file",
                str(tmp_path / "sidecar.url"),
                "--handlers",
                "bench_http:HANDLERS",
                "--no-entry-points",
                "--log-level",
                "WARNING",
            ],
            tmp_path / "sidecar.url",
            tmp_path / "sidecar.log",
        )
        ids: list[str] = []
        await load_single(bare_url, 1.0, args.concurrency)  # warm-up
        ids += (await load_single(url, 1.0, args.concurrency))["ids"]
        bares, singles = [], []
        for _ in range(args.rounds):
            bares.append(await load_single(bare_url, args.seconds, args.concurrency, bare_proc.pid))
            singles.append(await load_single(url, args.seconds, args.concurrency, proc.pid))
            ids += singles[-1]["ids"]
        bare_proc.kill()
        await bare_proc.wait()
        for name, runs in (
            ("bare QuartTrio endpoint", bares),
            ("sidecar POST /v0/tasks ", singles),
        ):
            for r in runs:
                print(
                    f"{name} : {r['req_s']:7.0f} req/s  p50 {r['p50_ms']:6.1f} ms"
                    f"  p99 {r['p99_ms']:6.1f} ms  server CPU {r['cpu_ms']:.2f} ms/req"
                    f"  ({r['errors']} errors)"
                )
        bare_rate = statistics.mean(r["req_s"] for r in bares)
        single_rate = statistics.mean(r["req_s"] for r in singles)
        bare_cpu = statistics.mean(r["cpu_ms"] for r in bares)
        single_cpu = statistics.mean(r["cpu_ms"] for r in singles)
        print(f"ratio sidecar / bare    : {single_rate / bare_rate:7.1%} of req/s  (target >= 90%)")
        print(
            f"                          {bare_cpu / single_cpu:7.1%} by server CPU per request "
            f"({single_cpu:.2f} vs {bare_cpu:.2f} ms)"
        )

        cpu_before = cpu_seconds(proc.pid)
        batch = await load_batch(url, args.seconds, args.batch_clients, args.batch_size)
        batch["cpu_ms"] = (cpu_seconds(proc.pid) - cpu_before) * 1000 / max(1, batch["ok"])
        ids += batch["ids"]
        print(
            f"sidecar /v0/tasks/batch : {batch['tasks_s']:7.0f} tasks/s ({batch['requests']} "
            f"batches of {args.batch_size}, {args.batch_clients} clients; p50 "
            f"{batch['p50_ms']:.0f} ms, p99 {batch['p99_ms']:.0f} ms; server CPU "
            f"{batch['cpu_ms'] * 1000:.0f} us/task)  (target >= 5000)"
        )

        t0 = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        code = await proc.wait()
        print(f"SIGTERM -> exit {code} after {time.perf_counter() - t0:.2f} s")
        completed, total = await trio.to_thread.run_sync(verify, home / "sidecar.db", ids)
        print(f"durable and completed   : {completed} of {total} accepted tasks")
        if code != 0 or completed != total:
            raise SystemExit("FAILED: lost or unfinished tasks, or unclean exit")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "_bare":
        # The same interpreter tuning `sidecar serve` applies, so the baseline is fair.
        from sidecar.tuning import tune_gc

        tune_gc()
        trio.run(serve_bare, Path(sys.argv[2]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--batch-clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    trio.run(main, parser.parse_args())
