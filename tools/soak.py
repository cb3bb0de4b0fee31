"""Soak test: sustained mixed load with retention on; RSS and DB size must stay flat.

One embedded runtime on a fresh file DB with a short retention (default 30 s) runs for
``--minutes`` under a mixed, rate-limited load: one-shot tasks (instant, short sleeps,
failing), resubmits of caller ids (dedup and re-runs of failed ones), deletes of running
tasks, reads (get/list/runs) and a schedule firing every minute. Every ``--sample``
seconds it prints RSS, DB size (main file + WAL) and the row counts.

Retention runs in the scheduler's prune loop, every quarter of the retention window
(hourly at most), so a short window reaches a steady state within the run.

Growth is measured from the end of the warm-up (the retention window must fill first) to
the end: the target is RSS growth <= 10 %.

    python tools/soak.py [--minutes 10] [--rate 200] [--retention-seconds 30]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path

import trio

import sidecar
from sidecar.store import db as dbq


@sidecar.handler("instant")
async def instant(ctx: sidecar.TaskContext, params: dict) -> dict:
    return {"echo": params}


@sidecar.handler("nap")
async def nap(ctx: sidecar.TaskContext, params: dict) -> None:
    await trio.sleep(params.get("seconds", 0.1))


@sidecar.handler("flaky")
async def flaky(ctx: sidecar.TaskContext, params: dict) -> None:
    raise sidecar.TaskError("simulated failure", retryable=True)


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("VmRSS not in /proc/self/status")


def db_stats(path: Path) -> tuple[float, int, int]:
    size = sum(p.stat().st_size for p in path.parent.glob("sidecar.db*"))
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tasks = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
        runs = conn.execute("SELECT count(*) FROM task_runs").fetchone()[0]
    finally:
        conn.close()
    return size / 2**20, tasks, runs


async def soak(home: Path, args: argparse.Namespace) -> int:
    rnd = random.Random(6)
    counts = {"submitted": 0, "deduplicated": 0, "removed": 0, "reads": 0}
    caller_ids = [str(uuid.UUID(int=rnd.getrandbits(128))) for _ in range(200)]
    duration = args.minutes * 60
    warmup = max(60.0, args.retention_seconds * 2, duration * 0.2)
    retention_days = args.retention_seconds / 86400
    samples: list[tuple[float, int, float, int, int]] = []
    async with sidecar.open_runtime(
        home, handlers=[instant, nap, flaky], retention_days=retention_days, grace=2
    ) as rt:
        await rt.submit("instant", schedule=sidecar.Schedule("* * * * *"))

        async def one_op() -> None:
            roll = rnd.random()
            if roll < 0.45:
                await rt.submit("instant", {"n": rnd.randrange(1000)})
            elif roll < 0.60:
                await rt.submit("nap", {"seconds": rnd.uniform(0.05, 0.5)})
            elif roll < 0.70:
                await rt.submit("flaky")
            elif roll < 0.80:
                # Caller ids: a live/completed one deduplicates; a failed one runs again.
                kind = rnd.choice(["instant", "flaky"])
                out = await rt.submit_ex(kind, id=rnd.choice(caller_ids))
                counts["deduplicated" if not out.created else "submitted"] += 1
                return
            elif roll < 0.85:
                task_id = await rt.submit("nap", {"seconds": 5})
                await rt.remove(task_id)
                counts["removed"] += 1
            else:
                page = await rt.list(limit=50)
                if page:
                    await rt.get(rnd.choice(page).id)
                    try:
                        await rt.runs(page[0].id)
                    except sidecar.TaskNotFound:
                        pass  # removed or pruned since the list: fine
                counts["reads"] += 1
                return
            counts["submitted"] += 1

        async def load() -> None:
            async with trio.open_nursery() as n:
                interval = 1 / args.rate
                next_at = trio.current_time()
                while True:
                    n.start_soon(one_op)
                    next_at += interval
                    await trio.sleep_until(next_at)

        start = time.monotonic()
        async with trio.open_nursery() as n:
            n.start_soon(load)
            while (elapsed := time.monotonic() - start) < duration:
                await trio.sleep(args.sample)
                elapsed = time.monotonic() - start
                rss = rss_kib()
                size, tasks, runs = await trio.to_thread.run_sync(db_stats, home / "sidecar.db")
                samples.append((elapsed, rss, size, tasks, runs))
                print(
                    f"t={elapsed:6.0f} s  RSS {rss / 1024:6.1f} MiB  DB {size:6.2f} MiB  "
                    f"tasks {tasks:6d}  runs {runs:4d}  submitted {counts['submitted']:7d}  "
                    f"dedup {counts['deduplicated']:5d}  removed {counts['removed']:5d}  "
                    f"reads {counts['reads']:5d}",
                    flush=True,
                )
            n.cancel_scope.cancel()
        # One read through the runtime's own reader, as a sanity check of the store.
        assert await rt._store.read(dbq.read_integrity) == "ok"
    steady = [s for s in samples if s[0] >= warmup]
    if len(steady) < 2:
        print(f"run longer than the warm-up ({warmup:.0f} s) to measure growth")
        return 1
    first, last = steady[0], steady[-1]
    rss_growth = (last[1] - first[1]) / first[1] * 100
    db_growth = (last[2] - first[2]) / first[2] * 100 if first[2] else 0.0
    peak = max(s[1] for s in steady)
    print(
        f"\nsteady state from t={first[0]:.0f} s to t={last[0]:.0f} s: "
        f"RSS {first[1] / 1024:.1f} -> {last[1] / 1024:.1f} MiB ({rss_growth:+.1f} %, "
        f"peak {peak / 1024:.1f} MiB); DB {first[2]:.2f} -> {last[2]:.2f} MiB "
        f"({db_growth:+.1f} %); tasks {first[3]} -> {last[3]}; target RSS growth <= 10 %"
    )
    print(f"ops: {counts}")
    return 0 if rss_growth <= 10 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=200, help="operations per second")
    parser.add_argument("--retention-seconds", type=float, default=30)
    parser.add_argument("--sample", type=float, default=10, help="seconds between samples")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sidecar-soak-") as tmp:
        raise SystemExit(trio.run(soak, Path(tmp), args))


if __name__ == "__main__":
    main()
