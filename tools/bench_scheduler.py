"""Scheduler benchmark (issue 3): 10,000 cron schedules on the real clock.

Runs the same phases for sidecar's scheduler actor and for a 10-second polling loop (the
reimplemented Go sidecar's design: every 10 s, query the due schedules, advance them, fire
them), each on its own copy of one DB of registered schedules, with the same schema, index,
query and handler:

spread
    10,000 schedules due at instants spread evenly over one minute; the lateness of each
    firing. Cron has minute granularity, so the spread is made by writing each schedule's
    ``next_run_at`` directly into the closed DB. The schedules are ``@yearly``: each fires
    exactly once in the window and then is idle until next January.
idle
    Process CPU seconds (``time.process_time``: every thread) over 30 s while the 10,000
    schedules are registered and none is due.
burst
    All 10,000 due at the same instant (what 10,000 ``* * * * *`` schedules do at every
    minute boundary); the lateness of each firing. This measures firing throughput more
    than waking on time, so it has no target; sidecar only (the baseline's burst lateness
    is the phase of its next poll, 0-10 s).

Lateness is the wall-clock time the handler starts minus the schedule's due instant.
Targets (issue 3): spread lateness p99 < 50 ms; idle CPU < 1 % of one core.

    python tools/bench_scheduler.py [--schedules 10000] [--spread 60] [--idle 30] [--quick]
"""

from __future__ import annotations

import argparse
import math
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import trio

import sidecar
from sidecar.clock import format_ts
from sidecar.cron import next_fire
from sidecar.models import Schedule
from sidecar.runtime import DB_FILENAME
from sidecar.store import db as dbq

POLL_PERIOD = 10.0
# Time from writing the due instants to the first of them: covers opening the runtime.
LEAD_IN = 3.0


@dataclass(frozen=True)
class Plan:
    schedules: int
    spread: float
    idle: float
    burst: bool = True


@dataclass
class Figures:
    spread: list[float]
    idle_cpu: float
    burst: list[float]


class Probe:
    """The benchmark's handler: records when each schedule's firing starts."""

    def __init__(self, expected: int) -> None:
        self.started: dict[str, datetime] = {}
        self.expected = expected
        self.all_fired = trio.Event()

        @sidecar.handler("bench")
        async def bench(ctx: sidecar.TaskContext, params: dict[str, Any]) -> None:
            self.record(ctx.task_id)

        self.handler = bench

    def record(self, task_id: str) -> None:
        self.started.setdefault(task_id, datetime.now(UTC))
        if len(self.started) >= self.expected:
            self.all_fired.set()

    def lateness(self, due: dict[str, datetime]) -> list[float]:
        missing = len(due) - len(self.started)
        if missing:
            raise SystemExit(f"{missing} of {len(due)} schedules never fired")
        return sorted((self.started[i] - due[i]).total_seconds() for i in due)


def seed(db: Path, ids: list[str], first: datetime, spread: float) -> dict[str, datetime]:
    """Write due instants ``first + k * spread / n`` into the (closed) DB; return them."""
    step = spread / len(ids)
    due = {task_id: first + timedelta(seconds=k * step) for k, task_id in enumerate(ids)}
    with closing(sqlite3.connect(db)) as conn, conn:
        conn.executemany(
            "UPDATE tasks SET next_run_at = ? WHERE id = ?",
            [(format_ts(at), task_id) for task_id, at in due.items()],
        )
    return due


async def register(home: Path, n: int) -> list[str]:
    """Create ``n`` @yearly schedules in a fresh DB and close it."""
    async with sidecar.open_runtime(home, handlers=[Probe(0).handler], builtins=False) as rt:
        out = await rt.submit_many(
            [sidecar.TaskRequest("bench", schedule=Schedule("@yearly")) for _ in range(n)]
        )
    ids = [o.id for o in out if isinstance(o, sidecar.SubmitOutcome) and o.created]
    if len(ids) != n:
        raise SystemExit(f"registered {len(ids)} of {n} schedules")
    return ids


@asynccontextmanager
async def sidecar_scheduler(home: Path, probe: Probe) -> AsyncIterator[None]:
    async with sidecar.open_runtime(home, handlers=[probe.handler], builtins=False):
        yield


class PollingScheduler:
    """The baseline: a ticker that every ``period`` s fires whatever is due.

    It does strictly less work per firing than sidecar (no run history, no completion
    write), so the comparison favours it on everything but waking on time.
    """

    def __init__(self, db: Path, fire: Callable[[str], None], period: float) -> None:
        self._conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout = 5000")
        self._fire = fire
        self._period = period

    def _poll(self, now: datetime) -> list[str]:
        conn = self._conn
        due = dbq.read_due(conn, format_ts(now), 1_000_000)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "UPDATE tasks SET next_run_at = ?, run = run + 1, status = 'running', "
                "started_at = ? WHERE id = ? AND next_run_at = ?",
                [
                    (format_ts(next_fire(d.schedule, now)), format_ts(now), d.id, d.next_run_at)
                    for d in due
                ],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return [d.id for d in due]

    async def run(self) -> None:
        tick = trio.current_time()
        async with trio.open_nursery() as firings:
            while True:
                fired = await trio.to_thread.run_sync(self._poll, datetime.now(UTC))
                for task_id in fired:
                    firings.start_soon(self._handler, task_id)
                tick += self._period
                await trio.sleep_until(tick)

    async def _handler(self, task_id: str) -> None:
        self._fire(task_id)

    def close(self) -> None:
        self._conn.close()


@asynccontextmanager
async def polling_scheduler(home: Path, probe: Probe) -> AsyncIterator[None]:
    poller = PollingScheduler(home / DB_FILENAME, probe.record, POLL_PERIOD)
    try:
        async with trio.open_nursery() as n:
            n.start_soon(poller.run)
            yield
            n.cancel_scope.cancel()
    finally:
        poller.close()


Scheduler = Callable[[Path, Probe], Any]


async def fire_all(
    scheduler: Scheduler, home: Path, ids: list[str], spread: float, *, idle: float = 0.0
) -> tuple[list[float], float]:
    """Seed due instants over ``spread`` s, run until all fired; then measure idle CPU."""
    first = datetime.now(UTC) + timedelta(seconds=LEAD_IN)
    due = await trio.to_thread.run_sync(seed, home / DB_FILENAME, ids, first, spread)
    probe = Probe(len(ids))
    cpu = 0.0
    async with scheduler(home, probe):
        with trio.move_on_after(LEAD_IN + spread + POLL_PERIOD + 30):
            await probe.all_fired.wait()
        if idle:
            # Every schedule is now due next January: nothing is due for the whole window.
            t0 = time.process_time()
            await trio.sleep(idle)
            cpu = time.process_time() - t0
    return probe.lateness(due), cpu


async def measure(scheduler: Scheduler, template: Path, ids: list[str], plan: Plan) -> Figures:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        shutil.copyfile(template / DB_FILENAME, home / DB_FILENAME)
        spread, idle_cpu = await fire_all(scheduler, home, ids, plan.spread, idle=plan.idle)
        burst: list[float] = []
        if plan.burst:
            burst, _ = await fire_all(scheduler, home, ids, 0.0)
    return Figures(spread, idle_cpu, burst)


def quantiles(values: list[float]) -> tuple[float, float, float]:
    """p50, p99 and max of sorted ``values``, in milliseconds."""
    n = len(values)
    if not n:
        return math.nan, math.nan, math.nan
    return (
        values[n // 2] * 1000,
        values[min(n - 1, int(n * 0.99))] * 1000,
        values[-1] * 1000,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--spread", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds (default 30)")
    parser.add_argument(
        "--quick", action="store_true", help="1,000 schedules over 5 s, 5 s idle (smoke test)"
    )
    args = parser.parse_args()
    plan = Plan(args.schedules, args.spread, args.idle)
    if args.quick:
        plan = Plan(1000, 5.0, 5.0)
    print(
        f"# {platform.python_implementation()} {platform.python_version()}, "
        f"sqlite {sqlite3.sqlite_version}, {platform.machine()}, trio {trio.__version__}"
    )
    print(f"# {plan.schedules} schedules due over {plan.spread:g} s; idle CPU over {plan.idle:g} s")
    results: dict[str, Figures] = {}
    with tempfile.TemporaryDirectory() as template:
        ids = trio.run(register, Path(template), plan.schedules)
        for label, scheduler, burst in (
            ("sidecar", sidecar_scheduler, True),
            # Its burst lateness is just the phase of its next poll (0-10 s): not run.
            (f"polling {POLL_PERIOD:g}s", polling_scheduler, False),
        ):
            started = time.perf_counter()
            fig = results[label] = trio.run(
                measure, scheduler, Path(template), ids, replace(plan, burst=burst)
            )
            s50, s99, smax = quantiles(fig.spread)
            line = (
                f"{label:>12}: spread lateness p50 {s50:8.1f} ms  p99 {s99:8.1f} ms  "
                f"max {smax:8.1f} ms | idle CPU {fig.idle_cpu:.3f} s "
                f"({100 * fig.idle_cpu / plan.idle:.2f} % of a core)"
            )
            if fig.burst:
                b50, b99, bmax = quantiles(fig.burst)
                line += f" | burst lateness p50 {b50:.0f} ms  p99 {b99:.0f} ms  max {bmax:.0f} ms"
            print(f"{line} [{time.perf_counter() - started:.0f} s]", flush=True)
    ours, base = results["sidecar"], results[f"polling {POLL_PERIOD:g}s"]
    p99_ratio = quantiles(base.spread)[1] / max(quantiles(ours.spread)[1], 1e-9)
    cpu_ratio = base.idle_cpu / ours.idle_cpu if ours.idle_cpu else float("inf")
    print(
        f"spread lateness p99: polling / sidecar = {p99_ratio:.0f}x; "
        f"idle CPU: polling / sidecar = {cpu_ratio:.2f}x"
    )
    ok = quantiles(ours.spread)[1] < 50 and ours.idle_cpu / plan.idle < 0.01
    print(f"targets (spread p99 < 50 ms, idle CPU < 1 % of a core): {'met' if ok else 'MISSED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
