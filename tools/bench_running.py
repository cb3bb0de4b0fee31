"""Scale benchmark: N concurrently running tasks (each sleeping) in one embedded runtime.

Opens a runtime on a fresh file DB, submits N sleeping tasks (in batches through
``submit_many``) and waits until all N run. Reports the RSS delta per running task, peak
RSS, and how responsive the runtime stays while loaded: p50/p99 of ``rt.get`` on a random
running task and of a ``submit`` + ``remove`` round trip (a cancellation). At exit the
runtime cancels the sleepers (grace 0): their rows stay ``running``, as after a crash.

    python tools/bench_running.py [--tasks 100000] [--probes 500] [--handler sleeper|parked]
                                  [--tracemalloc]

``--tracemalloc`` prints the allocation sites that dominate the per-task memory.
"""

from __future__ import annotations

import argparse
import gc
import platform
import random
import sqlite3
import tempfile
import time
import tracemalloc
from pathlib import Path

import trio
import trio.testing

import sidecar

BATCH = 1000


@sidecar.handler("sleeper")
async def sleeper(ctx: sidecar.TaskContext, params: dict) -> None:
    await trio.sleep(24 * 3600)  # a timed sleep: its own cancel scope and deadline


@sidecar.handler("parked")
async def parked(ctx: sidecar.TaskContext, params: dict) -> None:
    await trio.sleep_forever()  # no timer: the runtime's own per-task floor


def rss_kib(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] * 1000


async def run(home: Path, n: int, probes: int, trace: bool, kind: str) -> None:
    async with sidecar.open_runtime(home, handlers=[sleeper, parked], grace=0) as rt:
        # Warm up every path once so lazily built state is not charged to the tasks.
        warm = await rt.submit("sleeper")
        await rt.get(warm)
        await rt.remove(warm)
        gc.collect()
        base = rss_kib()
        if trace:
            tracemalloc.start(3)
            snap0 = tracemalloc.take_snapshot()
        ids: list[str] = []
        t0 = time.perf_counter()
        for start in range(0, n, BATCH):
            size = min(BATCH, n - start)
            out = await rt.submit_many([sidecar.TaskRequest(kind)] * size)
            ids.extend(o.id for o in out)  # type: ignore[union-attr]
        # Every actor has started its handler once nothing else can run.
        await trio.testing.wait_all_tasks_blocked(0.01)
        submit_s = time.perf_counter() - t0
        running = rt.metrics.registry.get_sample_value("sidecar_tasks_running")
        gc.collect()
        loaded = rss_kib()
        per_task = (loaded - base) * 1024 / n
        print(
            f"{n} tasks submitted in {submit_s:.1f} s ({n / submit_s:.0f}/s); "
            f"running gauge {running:.0f}"
        )
        print(
            f"RSS before {base / 1024:.0f} MiB, loaded {loaded / 1024:.0f} MiB, "
            f"peak {rss_kib('VmHWM') / 1024:.0f} MiB -> {per_task:.0f} B per running task "
            f"({per_task / 1024:.2f} KiB; target <= 5 KiB)"
        )
        if trace:
            snap1 = tracemalloc.take_snapshot()
            tracemalloc.stop()
            print("top allocation sites per task (tracemalloc, traceback depth 3):")
            diffs = snap1.compare_to(snap0, "lineno")
            total = sum(d.size_diff for d in diffs)
            print(f"  {total / n:8.0f} B/task traced in total (Python objects)")
            for stat in diffs[:15]:
                print(f"  {stat.size_diff / n:8.0f} B/task  {stat.traceback[0]}")
            print("by file:")
            for stat in snap1.compare_to(snap0, "filename")[:8]:
                print(f"  {stat.size_diff / n:8.0f} B/task  {stat.traceback[0].filename}")

        gets: list[float] = []
        cycles: list[float] = []
        for _ in range(probes):
            t = time.perf_counter()
            rec = await rt.get(random.choice(ids))
            gets.append(time.perf_counter() - t)
            assert rec is not None and rec.status is sidecar.TaskStatus.RUNNING
            t = time.perf_counter()
            task_id = await rt.submit("sleeper")
            assert await rt.remove(task_id)
            cycles.append(time.perf_counter() - t)
        print(
            f"loaded: rt.get p50 {pct(gets, 0.5):.2f} ms p99 {pct(gets, 0.99):.2f} ms; "
            f"submit+remove p50 {pct(cycles, 0.5):.2f} ms p99 {pct(cycles, 0.99):.2f} ms "
            f"({probes} probes)"
        )
        t = time.perf_counter()
    print(f"shutdown (cancel {n} sleepers, close DB) {time.perf_counter() - t:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--probes", type=int, default=500)
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument(
        "--handler",
        choices=("sleeper", "parked"),
        default="sleeper",
        help="sleeper: trio.sleep(1 day) (default); parked: trio.sleep_forever()",
    )
    args = parser.parse_args()
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, "
        f"sqlite {sqlite3.sqlite_version}, {platform.machine()}, trio {trio.__version__}"
    )
    with tempfile.TemporaryDirectory(prefix="sidecar-bench-") as tmp:
        trio.run(run, Path(tmp), args.tasks, args.probes, args.tracemalloc, args.handler)


if __name__ == "__main__":
    main()
