"""Crash harness: SIGKILL a loaded `sidecar serve` K times and prove no acknowledged write is lost.

Usage::

    python tools/crash_test.py [--kills 20] [--home DIR] [--seed N] [--workers 6]

It starts ``python -m sidecar serve --port 0`` on a file database with the task types of
``tools/crash_handlers.py``, drives a mixed load over HTTP (one-shot tasks with caller ids,
slow idempotent and non-idempotent tasks, ``* * * * *`` schedules, re-submits, deletes) and
SIGKILLs the process at random moments — during load, and now and then again during the
next start-up's recovery. The client keeps a ledger of every acknowledged answer (201/202
for a submit, 204 for a delete) and of every request that got no answer. After each kill:

* ``PRAGMA integrity_check`` on the dead process's file (opened read-only) must be ``ok``;
* after the restart (``/v0/livez`` 200), every acknowledged submit must exist unless it was
  acknowledged-deleted, and an acknowledged-deleted one must not come back;
* no record may be ``running`` unless it really runs: idempotent re-runs and schedule
  firings are awaited (``GET ?wait=``) and must complete; a non-idempotent task is either
  ``completed`` or ``failed`` with "interrupted" in its error;
* no duplicates: an id appears once, a one-shot task's ``run`` never exceeds the submits
  that could have started a run, a schedule never fires more often than its minutes;
* every schedule is still there with a ``nextRunAt`` in the future.

Prints the kills, acknowledged operations, ``lost`` and ``duplicates``; exits 1 on any
violation. ``tests/test_crash.py`` runs a short version through :func:`run_harness`.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import trio

from sidecar.testing import serve_argv

TOOLS = Path(__file__).resolve().parent
REPO = TOOLS.parent
HANDLERS_SPEC = "crash_handlers:HANDLERS"
QUICK, SLOW, IDEMPOTENT, SCHEDULE = "crash-quick", "crash-slow", "crash-slow-idempotent", "sched"
START_TIMEOUT = 30.0
# The cron loop fires a missed instant right after start-up; a read may precede it.
SCHEDULE_SETTLE = 5.0


@dataclass(frozen=True)
class Settings:
    """How hard to push. The defaults are the tool's; the test suite uses shorter ones."""

    kills: int = 20
    workers: int = 6
    load_seconds: tuple[float, float] = (0.3, 2.5)
    slow_seconds: tuple[float, float] = (0.2, 2.0)
    startup_kill_chance: float = 0.2
    grace: float = 1.0
    seed: int | None = None


@dataclass
class Entry:
    """What the client knows about one caller id."""

    id: str
    kind: str
    params: dict[str, Any]
    first_sent: float  # wall-clock seconds of the first submit sent
    created: int = 0  # submits acknowledged 201
    deduplicated: int = 0  # submits acknowledged 202
    unanswered: int = 0  # submits sent without an answer (the process died)
    delete: str | None = None  # None, "pending" (sent, no answer) or "done" (204/404)
    busy: bool = False

    @property
    def acknowledged(self) -> bool:
        return self.created + self.deduplicated > 0


@dataclass
class Report:
    kills: int = 0
    startup_kills: int = 0
    acknowledged: int = 0
    created: int = 0
    deduplicated: int = 0
    deleted: int = 0
    unanswered: int = 0
    lost: int = 0
    duplicates: int = 0
    integrity_checks: int = 0
    interrupted: set[str] = field(default_factory=set)
    reruns_completed: int = 0
    schedules_checked: int = 0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations and self.lost == 0 and self.duplicates == 0

    def violation(self, message: str) -> None:
        self.violations.append(message)

    def summary(self) -> str:
        lines = [
            f"kills:                    {self.kills} ({self.startup_kills} during start-up)",
            f"acknowledged operations:  {self.acknowledged} "
            f"({self.created} submits 201, {self.deduplicated} dedups 202, "
            f"{self.deleted} deletes 204)",
            f"unanswered requests:      {self.unanswered} (in flight at a kill; either outcome ok)",
            f"interrupted (failed):     {len(self.interrupted)} non-idempotent tasks",
            f"idempotent re-runs:       {self.reruns_completed} completed after a restart",
            f"schedule checks:          {self.schedules_checked}",
            f"integrity_check ok:       {self.integrity_checks}",
            f"lost = {self.lost}",
            f"duplicates = {self.duplicates}",
        ]
        if self.violations:
            lines.append(f"VIOLATIONS ({len(self.violations)}):")
            lines.extend(f"  - {v}" for v in self.violations[:50])
        return "\n".join(lines)


class Server:
    """One ``python -m sidecar serve`` process on ``home``; its URL comes from --port-file."""

    def __init__(self, home: Path, grace: float) -> None:
        self.home = home
        self.grace = grace
        self.port_file = home / "crash-harness.url"
        self.log_path = home / "crash-harness.log"
        self.proc: trio.Process | None = None
        self.url = ""

    async def spawn(self) -> None:
        self.port_file.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TOOLS), str(REPO)])}
        with self.log_path.open("ab") as log:
            self.proc = await trio.lowlevel.open_process(
                serve_argv(
                    self.home,
                    self.port_file,
                    handlers=[HANDLERS_SPEC],
                    args=["--grace", str(self.grace)],
                ),
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_live(self) -> None:
        """Wait for the port file, then for ``/v0/livez`` 200 (recovery has finished)."""
        assert self.proc is not None
        with trio.fail_after(START_TIMEOUT):
            while not self.port_file.exists():
                if self.proc.poll() is not None:
                    raise RuntimeError(f"serve exited {self.proc.returncode}; see {self.log_path}")
                await trio.sleep(0.02)
            self.url = self.port_file.read_text().strip()
            async with httpx.AsyncClient(base_url=self.url, timeout=2) as client:
                while True:
                    try:
                        if (await client.get("/v0/livez")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                    await trio.sleep(0.02)

    async def kill(self) -> None:
        """SIGKILL, then reap."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    async def stop(self) -> int:
        """SIGTERM and wait for the drain; returns the exit code."""
        assert self.proc is not None
        self.proc.terminate()
        with trio.fail_after(self.grace + 30):
            return await self.proc.wait()


def integrity_check(db_path: Path) -> str:
    """``PRAGMA integrity_check`` on a read-only connection (blocking: call it in a thread)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()
    return "; ".join(str(r[0]) for r in rows)


class Load:
    """Workers that drive the mixed load and keep the ledger."""

    def __init__(self, settings: Settings, rng: random.Random, report: Report) -> None:
        self.settings = settings
        self.rng = rng
        self.report = report
        self.entries: dict[str, Entry] = {}
        self._ids: list[str] = []

    def _pick(self, want: Callable[[Entry], bool]) -> Entry | None:
        for _ in range(8):
            if not self._ids:
                return None
            entry = self.entries[self.rng.choice(self._ids)]
            if not entry.busy and want(entry):
                return entry
        return None

    def _new(self, kind: str) -> Entry:
        lo, hi = self.settings.slow_seconds
        params: dict[str, Any] = {}
        if kind in (SLOW, IDEMPOTENT):
            params = {"seconds": round(self.rng.uniform(lo, hi), 3)}
        entry = Entry(str(uuid.uuid4()), kind, params, first_sent=time.time())
        self.entries[entry.id] = entry
        self._ids.append(entry.id)
        return entry

    async def worker(self, client: httpx.AsyncClient) -> None:
        try:
            while True:
                await self.one_op(client)
                await trio.sleep(self.rng.uniform(0, 0.01))
        except httpx.TransportError:
            return  # the process was killed under us

    async def one_op(self, client: httpx.AsyncClient) -> None:
        roll = self.rng.random()
        if roll < 0.35:
            await self.submit(client, self._new(QUICK))
        elif roll < 0.55:
            await self.submit(client, self._new(SLOW))
        elif roll < 0.75:
            await self.submit(client, self._new(IDEMPOTENT))
        elif roll < 0.80:
            await self.submit(client, self._new(SCHEDULE))
        elif roll < 0.90:
            entry = self._pick(lambda e: e.delete is None)
            if entry is not None:
                await self.submit(client, entry)
        else:
            entry = self._pick(lambda e: e.delete != "done")
            if entry is not None:
                await self.remove(client, entry)

    async def submit(self, client: httpx.AsyncClient, entry: Entry) -> None:
        body: dict[str, Any] = {"id": entry.id, "params": entry.params}
        if entry.kind == SCHEDULE:
            body["type"] = QUICK
            body["schedule"] = {"cron": "* * * * *"}
        else:
            body["type"] = entry.kind
        entry.busy = True
        entry.unanswered += 1  # until an answer arrives, the outcome is unknown
        try:
            resp = await client.post("/v0/tasks", json=body)
        finally:
            entry.busy = False
        entry.unanswered -= 1
        if resp.status_code == 201:
            entry.created += 1
            self.report.created += 1
        elif resp.status_code == 202:
            entry.deduplicated += 1
            self.report.deduplicated += 1
        else:
            self.report.violation(f"submit {entry.id}: HTTP {resp.status_code} {resp.text}")
            return
        self.report.acknowledged += 1

    async def remove(self, client: httpx.AsyncClient, entry: Entry) -> None:
        was = entry.delete
        entry.busy = True
        entry.delete = "pending"
        try:
            resp = await client.delete(f"/v0/tasks/{entry.id}")
        finally:
            entry.busy = False
        if resp.status_code == 204:
            entry.delete = "done"
            self.report.deleted += 1
            self.report.acknowledged += 1
        elif resp.status_code == 404:
            entry.delete = "done"
            if entry.acknowledged and was is None:
                self.report.lost += 1
                self.report.violation(f"delete {entry.id}: acknowledged submit answered 404")
        else:
            self.report.violation(f"delete {entry.id}: HTTP {resp.status_code} {resp.text}")


async def fetch_all(client: httpx.AsyncClient, report: Report) -> dict[str, dict[str, Any]]:
    """Every record, newest first, paged with ``before``; flags an id listed twice."""
    seen: Counter[str] = Counter()
    records: dict[str, dict[str, Any]] = {}
    before: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if before is not None:
            params["before"] = before
        resp = await client.get("/v0/tasks", params=params)
        resp.raise_for_status()
        page = resp.json()
        for rec in page:
            seen[rec["id"]] += 1
            records[rec["id"]] = rec
        if len(page) < 1000:
            break
        before = page[-1]["id"]
    for task_id, n in seen.items():
        if n > 1:
            report.duplicates += 1
            report.violation(f"{task_id} listed {n} times")
    return records


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


async def verify(client: httpx.AsyncClient, load: Load, report: Report) -> None:
    """Check every ledger entry against the restarted server (see the module docstring)."""
    records = await fetch_all(client, report)
    for task_id in records.keys() - load.entries.keys():
        report.violation(f"{task_id}: a record nobody submitted")

    waits: list[Entry] = []
    for entry in load.entries.values():
        rec = records.get(entry.id)
        if entry.delete == "done":
            if rec is not None:
                report.duplicates += 1
                report.violation(f"{entry.id}: came back after an acknowledged delete")
            continue
        if rec is None:
            if entry.acknowledged and entry.delete is None:
                report.lost += 1
                report.violation(f"{entry.id} ({entry.kind}): acknowledged submit is missing")
            continue
        if rec["status"] in ("running", "queued"):
            if entry.kind in (IDEMPOTENT, SCHEDULE):
                waits.append(entry)
            else:
                report.violation(f"{entry.id} ({entry.kind}): stuck {rec['status']} after recovery")
            continue
        check_record(entry, rec, report, rerun=False)

    async def settle(entry: Entry) -> None:
        resp = await client.get(f"/v0/tasks/{entry.id}", params={"wait": 30}, timeout=40)
        if resp.status_code == 404 and entry.delete == "pending":
            return
        resp.raise_for_status()
        check_record(entry, resp.json(), report, rerun=True)

    async with trio.open_nursery() as nursery:
        for entry in waits:
            nursery.start_soon(settle, entry)

    schedules = [
        e
        for e in load.entries.values()
        if e.kind == SCHEDULE and e.delete is None and e.id in records
    ]
    await check_schedules(client, schedules, report)


def check_record(entry: Entry, rec: dict[str, Any], report: Report, *, rerun: bool) -> None:
    status, run = rec["status"], rec["run"]
    if entry.kind == SCHEDULE:
        # Firings happen at distinct minute instants after the first submit.
        bound = math.floor(time.time() / 60) - math.floor(entry.first_sent / 60)
        if run > bound:
            report.duplicates += 1
            report.violation(f"{entry.id}: schedule fired {run} times in {bound} minute(s)")
        if status == "failed" and "interrupted" not in rec.get("error", ""):
            report.violation(f"{entry.id}: schedule firing failed: {rec.get('error')}")
        return
    # Each acknowledged 201 started a run; an unanswered submit may have started one too.
    if run > entry.created + entry.unanswered:
        report.duplicates += 1
        report.violation(
            f"{entry.id} ({entry.kind}): run {run} > {entry.created} acknowledged + "
            f"{entry.unanswered} unanswered submits"
        )
    if run < entry.created:
        report.lost += 1
        report.violation(f"{entry.id}: run {run} < {entry.created} acknowledged runs")
    if status == "completed":
        if rec.get("result", {}).get("run") != run:
            report.violation(f"{entry.id}: result {rec.get('result')} is not from run {run}")
        if rerun and entry.kind == IDEMPOTENT:
            report.reruns_completed += 1
    elif status == "failed" and entry.kind != IDEMPOTENT and "interrupted" in rec.get("error", ""):
        report.interrupted.add(entry.id)
    else:
        report.violation(f"{entry.id} ({entry.kind}): unexpected {status}: {rec.get('error')}")


async def check_schedules(client: httpx.AsyncClient, entries: list[Entry], report: Report) -> None:
    """Every live schedule has a future ``nextRunAt`` (allowing the cron loop to catch up)."""
    pending = list(entries)
    with trio.move_on_after(SCHEDULE_SETTLE):
        while pending:
            late: list[Entry] = []
            for entry in pending:
                resp = await client.get(f"/v0/tasks/{entry.id}")
                if resp.status_code == 404 and entry.delete == "pending":
                    continue
                resp.raise_for_status()
                rec = resp.json()
                nxt = rec.get("nextRunAt")
                if nxt is None or _ts(nxt) <= time.time():
                    late.append(entry)
            pending = late
            if pending:
                await trio.sleep(0.2)
    for entry in pending:
        report.violation(f"{entry.id}: schedule has no future nextRunAt")
    report.schedules_checked += len(entries)


async def kill_and_check(server: Server, report: Report, *, startup: bool) -> None:
    await server.kill()
    report.kills += 1
    report.startup_kills += startup
    result = await trio.to_thread.run_sync(integrity_check, server.home / "sidecar.db")
    report.integrity_checks += result == "ok"
    if result != "ok":
        report.violation(f"integrity_check after kill {report.kills}: {result}")


async def run_harness(
    home: Path, settings: Settings = Settings(), *, echo: Callable[[str], None] = print
) -> Report:
    """Run the whole harness on ``home``; return the report (``report.ok`` is the verdict)."""
    await trio.Path(home).mkdir(parents=True, exist_ok=True)
    rng = random.Random(settings.seed)
    report = Report()
    load = Load(settings, rng, report)
    server = Server(home, settings.grace)
    try:
        await server.spawn()
        await server.wait_live()
        while report.kills < settings.kills:
            async with (
                httpx.AsyncClient(base_url=server.url, timeout=10) as client,
                trio.open_nursery() as nursery,
            ):
                for _ in range(settings.workers):
                    nursery.start_soon(load.worker, client)
                await trio.sleep(rng.uniform(*settings.load_seconds))
                await kill_and_check(server, report, startup=False)
                nursery.cancel_scope.cancel()
            await server.spawn()
            if report.kills < settings.kills and rng.random() < settings.startup_kill_chance:
                # Again while it recovers: recovery itself must be crash-safe.
                await trio.sleep(rng.uniform(0.05, 0.8))
                await kill_and_check(server, report, startup=True)
                await server.spawn()
            await server.wait_live()
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
                await verify(client, load, report)
            echo(
                f"kill {report.kills}: {report.acknowledged} acknowledged, lost={report.lost}, "
                f"duplicates={report.duplicates}, violations={len(report.violations)}"
            )
        code = await server.stop()
        if code != 0:
            report.violation(f"final SIGTERM: exit code {code}")
        result = await trio.to_thread.run_sync(integrity_check, home / "sidecar.db")
        if result != "ok":
            report.violation(f"integrity_check after the final stop: {result}")
    finally:
        with trio.CancelScope(shield=True):
            await server.kill()
    report.unanswered = sum(e.unanswered for e in load.entries.values())
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs to survive (default 20)")
    parser.add_argument("--home", type=Path, help="sidecar home (default: a temporary dir)")
    parser.add_argument("--seed", type=int, help="random seed (default: random)")
    parser.add_argument("--workers", type=int, default=6, help="concurrent clients (default 6)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    settings = Settings(kills=args.kills, workers=args.workers, seed=seed)
    with tempfile.TemporaryDirectory(prefix="sidecar-crash-") as tmp:
        home = args.home if args.home is not None else Path(tmp) / "home"
        print(f"crash harness: home {home}, seed {seed}, {args.kills} kills", flush=True)
        report = trio.run(run_harness, home, settings)
        print(report.summary())
        if not report.ok:
            log = (home / "crash-harness.log").read_text(errors="replace")
            print(f"server log (tail):\n{log[-4000:]}", file=sys.stderr)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
