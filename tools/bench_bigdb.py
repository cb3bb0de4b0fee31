"""Scale benchmark: a DB of 1,000,000 task records behind a real ``sidecar serve``.

1. Builds the DB fast: ``open_database`` creates and migrates a fresh file, then rows go in
   with one ``executemany`` in one transaction: time-ordered ids (UUIDv7, one per
   millisecond of a 1M-ms history), ~90 % completed, ~5 % failed with an error, some
   scheduled, JSON params and results the size a controller would send.
2. Starts ``sidecar serve`` on it and times spawn → ``/v0/livez`` 200 (start-up to serving,
   including interpreter start, migrations check and recovery).
3. Measures p50/p99 of ``GET /v0/tasks`` (first page, a filtered page and a deep page via
   the ``before`` cursor) and ``GET /v0/tasks/{id}`` (random existing ids) while other
   clients keep submitting tasks.

    python tools/bench_bigdb.py [--rows 1000000] [--requests 500] [--submitters 4]

Targets (issue 6): start-up <= 2 s; list/get p99 <= 20 ms. Latencies are client-side,
measured in this process while it also generates the submit load.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import trio

from sidecar.clock import format_ts
from sidecar.models import new_task_id
from sidecar.store import open_database

REPO = Path(__file__).resolve().parents[1]
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


def build_db(path: Path, rows: int) -> list[str]:
    open_database(path).close()  # fresh file, current schema, WAL
    conn = sqlite3.connect(path, isolation_level=None)
    rnd = random.Random(6)
    error = json.dumps(
        {"message": "exit status 1", "type": "TaskError", "hint": "see logs", "retryable": True}
    )
    schedule = json.dumps({"cron": "*/5 * * * *", "timezone": "UTC", "misfire": "run-once"})
    ids: list[str] = []

    def gen():
        for i in range(rows):
            at = EPOCH + timedelta(milliseconds=i)
            task_id = new_task_id(at)
            ids.append(task_id)
            ts = format_ts(at)
            done = format_ts(at + timedelta(seconds=2))
            params = json.dumps({"path": f"/data/snap-{i}", "w": i % 640, "retries": 3})
            roll = rnd.random()
            if roll < 0.001:
                # A schedule: next firing in the future, so start-up fires nothing.
                yield (
                    task_id,
                    "snapshot",
                    "scheduled",
                    10,
                    params,
                    None,
                    None,
                    schedule,
                    ts,
                    None,
                    None,
                    "2099-01-01T00:00:00.000000Z",
                )
            elif roll < 0.05:
                yield (
                    task_id,
                    "resize",
                    "failed",
                    1,
                    params,
                    None,
                    error,
                    None,
                    ts,
                    ts,
                    done,
                    None,
                )
            else:
                result = json.dumps({"ok": True, "bytes": i * 17})
                yield (
                    task_id,
                    "resize",
                    "completed",
                    1,
                    params,
                    result,
                    None,
                    None,
                    ts,
                    ts,
                    done,
                    None,
                )

    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO tasks (id, type, status, run, params, result, error, schedule, "
        "submitted_at, started_at, completed_at, next_run_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        gen(),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return ids


def start_server(home: Path) -> tuple[subprocess.Popen[bytes], str, float]:
    port_file = home.parent / "url"
    port_file.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "http"), str(REPO)])}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "serve", "--home", str(home), "--port", "0",
         "--port-file", str(port_file), "--handlers", "e2e_plugin:HANDLERS",
         "--no-entry-points", "--grace", "2"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(home.parent / "server.log").open("ab"),
    )  # fmt: skip
    while True:
        if proc.poll() is not None:
            raise SystemExit((home.parent / "server.log").read_text())
        if port_file.exists():
            url = port_file.read_text().strip()
            try:
                if httpx.get(f"{url}/v0/livez", timeout=1).status_code == 200:
                    return proc, url, time.perf_counter() - t0
            except httpx.HTTPError:
                pass
        time.sleep(0.005)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] * 1000


async def submit_forever(url: str, submitters: int) -> None:
    """The concurrent load, run in its own process so its client-side work (httpx is not
    free) never delays the measured requests in the measuring process."""
    limits = httpx.Limits(max_connections=submitters)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:

        async def one() -> None:
            while True:
                r = await client.post("/v0/tasks", json={"type": "e2e-noop"})
                assert r.status_code == 201, r.text

        async with trio.open_nursery() as n:
            for _ in range(submitters):
                n.start_soon(one)


async def submitted_total(client: httpx.AsyncClient) -> float:
    text = (await client.get("/v0/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("sidecar_tasks_submitted_total{")
    )


async def measure(url: str, ids: list[str], requests: int, submitters: int) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def timed(path: str, params: dict | None = None) -> float:
            t = time.perf_counter()
            r = await client.get(path, params=params)
            elapsed = time.perf_counter() - t
            assert r.status_code == 200, r.text
            return elapsed

        load = None
        if submitters:
            load = await trio.lowlevel.open_process(
                [sys.executable, __file__, "_submit", url, str(submitters)]
            )
            await trio.sleep(1.0)
        try:
            t0, s0 = time.perf_counter(), await submitted_total(client)
            deep = ids[len(ids) // 2]
            series: dict[str, list[float]] = {
                "GET /v0/tasks (limit 100)": [],
                "GET /v0/tasks?status=failed": [],
                "GET /v0/tasks?before=<mid id>": [],
                "GET /v0/tasks/{id}": [],
            }
            for _ in range(requests):
                series["GET /v0/tasks (limit 100)"].append(await timed("/v0/tasks"))
                series["GET /v0/tasks?status=failed"].append(
                    await timed("/v0/tasks", {"status": "failed"})
                )
                series["GET /v0/tasks?before=<mid id>"].append(
                    await timed("/v0/tasks", {"before": deep})
                )
                series["GET /v0/tasks/{id}"].append(await timed(f"/v0/tasks/{random.choice(ids)}"))
            rate = (await submitted_total(client) - s0) / (time.perf_counter() - t0)
        finally:
            if load is not None:
                load.kill()
                await load.wait()
    print(
        f"concurrent submits: {submitters} clients (own process), {rate:.0f} submits/s "
        "during measurement"
    )
    for name, values in series.items():
        print(
            f"{name:<32} p50 {statistics.median(values) * 1000:6.2f} ms  "
            f"p99 {pct(values, 0.99):6.2f} ms  ({len(values)} requests)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=500, help="per measured endpoint")
    parser.add_argument("--submitters", type=int, default=4)
    parser.add_argument("--starts", type=int, default=3, help="start-up measurements")
    args = parser.parse_args()
    print(
        f"# Python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory(prefix="sidecar-bigdb-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        t = time.perf_counter()
        ids = build_db(home / "sidecar.db", args.rows)
        size = (home / "sidecar.db").stat().st_size / 2**20
        print(f"built {args.rows} rows in {time.perf_counter() - t:.1f} s ({size:.0f} MiB)")
        for i in range(args.starts):
            proc, url, startup = start_server(home)
            print(f"start-up to serving (spawn -> /v0/livez 200): {startup:.2f} s")
            if i < args.starts - 1:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
        try:
            trio.run(measure, url, ids, args.requests, args.submitters)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
        print(f"server exited {code}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "_submit":
        trio.run(submit_forever, sys.argv[2], int(sys.argv[3]))
    else:
        main()
