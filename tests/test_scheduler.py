"""Cron schedules in the scheduler actor (issue 3), on a mock clock: days run in seconds.

Every test drives wall-clock time with ``WallClock`` (epoch + trio time) and trio time with
``autojump_clock``, so the instants asserted are exact: no real sleeps. (The store's worker
threads hold autojump off while they run, see ``sidecar.threads``, so time never leaps past
an instant while SQLite answers.)
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trio

import sidecar
from sidecar import threads
from sidecar.runtime import DB_FILENAME
from sidecar.testing import WallClock

NY = "America/New_York"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


class Recorder:
    """A handler of ``type`` that records each firing as ``(run, wall-clock instant)``.

    It then sleeps ``seconds`` of trio time, or forever when ``forever``; ``started`` is set
    by the first firing, ``cancelled`` counts firings cancelled mid-run.
    """

    def __init__(
        self, clock: WallClock, type: str = "tick", *, seconds: float = 0.0, forever: bool = False
    ) -> None:
        self.fired: list[tuple[int, datetime]] = []
        self.cancelled = 0
        self.started = trio.Event()

        @sidecar.handler(type)
        async def record(ctx: sidecar.TaskContext, params: dict[str, Any]) -> dict[str, int]:
            self.fired.append((ctx.run, clock.now()))
            self.started.set()
            try:
                if forever:
                    await trio.sleep_forever()
                await trio.sleep(seconds)
            except trio.Cancelled:
                self.cancelled += 1
                raise
            return {"run": ctx.run}

        self.handler = record

    @property
    def instants(self) -> list[datetime]:
        return [t for _, t in self.fired]


@asynccontextmanager
async def runtime(
    clock: WallClock, *recorders: Recorder, home: Path | None = None, **options: Any
) -> AsyncIterator[sidecar.Runtime]:
    async with sidecar.open_runtime(
        home, handlers=[r.handler for r in recorders], clock=clock, builtins=False, **options
    ) as rt:
        yield rt


async def sleep_until(clock: WallClock, when: datetime) -> None:
    await trio.sleep((when - clock.now()).total_seconds())


def every(start: datetime, step: timedelta, count: int) -> list[datetime]:
    return [start + step * k for k in range(count)]


def sample(rt: sidecar.Runtime, name: str, **labels: str) -> float:
    value = rt.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def query(db: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the file DB directly (a separate connection; WAL lets it read alongside)."""
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute(sql, args).fetchall()


async def test_a_schedule_is_recorded_as_scheduled_with_its_next_instant(autojump_clock) -> None:
    clock = WallClock(utc(2026, 1, 1, 0, 3))
    tick = Recorder(clock)
    async with runtime(clock, tick) as rt:
        sid = await rt.submit("tick", schedule=sidecar.Schedule("*/5 * * * *"))
        rec = await rt.get(sid)
        assert rec is not None
        assert rec.status is sidecar.TaskStatus.SCHEDULED
        assert rec.run == 0
        assert rec.schedule == sidecar.Schedule("*/5 * * * *", "UTC", "run-once")
        assert rec.next_run_at == utc(2026, 1, 1, 0, 5)
        assert rec.started_at is None
        assert not rec.terminal
        assert await rt.runs(sid) == []


async def test_every_five_minutes_fires_288_times_over_a_day(autojump_clock) -> None:
    clock = WallClock(utc(2025, 12, 31, 23, 59, 30))
    tick = Recorder(clock)
    holder: dict[str, sidecar.Runtime] = {}
    seen_next: list[datetime | None] = []

    @sidecar.handler("peek")
    async def peek(ctx: sidecar.TaskContext, params: dict[str, Any]) -> None:
        # Advance-before-fire: while a firing runs, its row already names the next instant.
        rec = await holder["rt"].get(ctx.task_id)
        assert rec is not None
        seen_next.append(rec.next_run_at)

    async with sidecar.open_runtime(
        None, handlers=[tick.handler, peek], clock=clock, builtins=False
    ) as rt:
        holder["rt"] = rt
        sid = await rt.submit("tick", schedule=sidecar.Schedule("*/5 * * * *"))
        peek_id = await rt.submit("peek", schedule=sidecar.Schedule("0 */6 * * *"))
        await sleep_until(clock, utc(2026, 1, 1, 23, 59, 30))

        day = every(utc(2026, 1, 1), timedelta(minutes=5), 288)
        assert tick.fired == list(zip(range(1, 289), day, strict=True))
        runs = await rt.runs(sid)
        assert [r.run for r in runs] == list(range(1, 289))
        assert all(r.status is sidecar.TaskStatus.COMPLETED for r in runs)
        assert [r.started_at for r in runs] == day
        assert [r.completed_at for r in runs] == day
        assert [r.result for r in runs] == [{"run": n} for n in range(1, 289)]

        rec = await rt.get(sid)
        assert rec is not None
        assert rec.run == 288
        assert rec.status is sidecar.TaskStatus.COMPLETED
        assert rec.started_at == utc(2026, 1, 1, 23, 55)
        assert rec.result == {"run": 288}
        assert rec.next_run_at == utc(2026, 1, 2)
        assert [r.run for r in await rt.runs(peek_id)] == [1, 2, 3, 4]
        assert seen_next == every(utc(2026, 1, 1, 6), timedelta(hours=6), 4)

        # On the mock clock every firing starts at its instant exactly.
        assert sample(rt, "sidecar_scheduler_lateness_seconds_count") == 288 + 4
        assert sample(rt, "sidecar_scheduler_lateness_seconds_sum") == 0
        assert sample(rt, "sidecar_scheduler_misfires_total", policy="run-once") == 0


async def test_adding_a_schedule_wakes_the_sleeping_scheduler(autojump_clock) -> None:
    clock = WallClock(utc(2026, 1, 1, 0, 0, 30))
    tick = Recorder(clock)
    async with runtime(clock, tick) as rt:
        # The loop now sleeps towards noon (re-reading at most every minute).
        await rt.submit("tick", schedule=sidecar.Schedule("0 12 * * *"))
        await sleep_until(clock, utc(2026, 1, 1, 0, 0, 40))
        await rt.submit("tick", schedule=sidecar.Schedule("* * * * *"))
        await sleep_until(clock, utc(2026, 1, 1, 0, 2, 30))
    assert tick.instants == [utc(2026, 1, 1, 0, 1), utc(2026, 1, 1, 0, 2)]


async def test_a_firing_interrupted_by_a_crash_fails_and_its_instant_never_fires_again(
    autojump_clock, home: Path
) -> None:
    clock = WallClock(utc(2026, 1, 1, 0, 3))
    stuck = Recorder(clock, forever=True)
    async with runtime(clock, stuck, home=home, grace=0) as rt:
        sid = await rt.submit("tick", schedule=sidecar.Schedule("*/5 * * * *"))
        await stuck.started.wait()
        rec = await rt.get(sid)
        assert rec is not None
        assert (rec.status, rec.run) == (sidecar.TaskStatus.RUNNING, 1)
        assert rec.next_run_at == utc(2026, 1, 1, 0, 10)
        # Leaving with grace=0 cancels the firing without writing: a crash, as the DB sees it.
    assert stuck.fired == [(1, utc(2026, 1, 1, 0, 5))]
    db = home / DB_FILENAME
    assert await threads.run_sync(
        query, db, "SELECT status, run, next_run_at FROM tasks WHERE id = ?", sid
    ) == [("running", 1, "2026-01-01T00:10:00.000000Z")]
    assert await threads.run_sync(
        query, db, "SELECT run, status FROM task_runs WHERE task_id = ?", sid
    ) == [(1, "running")]

    tick = Recorder(clock)
    async with runtime(clock, tick, home=home) as rt:
        rec = await rt.get(sid)
        assert rec is not None
        assert (rec.status, rec.run) == (sidecar.TaskStatus.FAILED, 1)
        assert rec.error is not None
        assert rec.error.message == "interrupted by restart"
        assert rec.schedule is not None  # recovery never stops a schedule
        assert rec.next_run_at == utc(2026, 1, 1, 0, 10)
        (first,) = await rt.runs(sid)
        assert (first.run, first.status) == (1, sidecar.TaskStatus.FAILED)
        assert first.error is not None
        assert first.error.message == "interrupted by restart"

        await sleep_until(clock, utc(2026, 1, 1, 0, 12))
        # 00:05 was committed as fired before the crash: the next firing is 00:10, run 2.
        assert tick.fired == [(2, utc(2026, 1, 1, 0, 10))]
        runs = await rt.runs(sid)
        assert [(r.run, r.status) for r in runs] == [
            (1, sidecar.TaskStatus.FAILED),
            (2, sidecar.TaskStatus.COMPLETED),
        ]
        rec = await rt.get(sid)
        assert rec is not None
        assert (rec.status, rec.run, rec.error) == (sidecar.TaskStatus.COMPLETED, 2, None)
        assert rec.next_run_at == utc(2026, 1, 1, 0, 15)


async def test_a_firing_whose_previous_run_still_runs_is_skipped_and_counted(
    autojump_clock,
) -> None:
    clock = WallClock(utc(2026, 1, 1, 0, 0, 30))
    slow = Recorder(clock, "slow", seconds=150)  # every minute, for 2.5 minutes
    async with runtime(clock, slow) as rt:
        sid = await rt.submit("slow", schedule=sidecar.Schedule("* * * * *"))
        await sleep_until(clock, utc(2026, 1, 1, 0, 2, 30))
        rec = await rt.get(sid)
        assert rec is not None
        assert (rec.status, rec.run) == (sidecar.TaskStatus.RUNNING, 1)
        assert rec.next_run_at == utc(2026, 1, 1, 0, 3)  # 00:02 skipped, still advanced
        assert sample(rt, "sidecar_scheduler_overlap_skips_total", type="slow") == 1

        await sleep_until(clock, utc(2026, 1, 1, 0, 7, 10))
        # Fired 00:01 (busy until 00:03:30), skipped 00:02 and 00:03, fired 00:04 (busy until
        # 00:06:30), skipped 00:05 and 00:06, fired 00:07.
        assert slow.fired == [
            (1, utc(2026, 1, 1, 0, 1)),
            (2, utc(2026, 1, 1, 0, 4)),
            (3, utc(2026, 1, 1, 0, 7)),
        ]
        assert sample(rt, "sidecar_scheduler_overlap_skips_total", type="slow") == 4
        runs = await rt.runs(sid)
        assert [(r.run, r.status, r.completed_at) for r in runs] == [
            (1, sidecar.TaskStatus.COMPLETED, utc(2026, 1, 1, 0, 3, 30)),
            (2, sidecar.TaskStatus.COMPLETED, utc(2026, 1, 1, 0, 6, 30)),
            (3, sidecar.TaskStatus.RUNNING, None),
        ]
        rec = await rt.get(sid)
        assert rec is not None
        assert rec.next_run_at == utc(2026, 1, 1, 0, 8)


async def test_after_a_three_hour_outage_run_once_fires_once_and_skip_fires_none(
    autojump_clock, home: Path
) -> None:
    clock = WallClock(utc(2026, 1, 1, 0, 2))
    once, skip = Recorder(clock, "once"), Recorder(clock, "skip")
    async with runtime(clock, once, skip, home=home) as rt:
        once_id = await rt.submit("once", schedule=sidecar.Schedule("*/5 * * * *"))
        skip_id = await rt.submit("skip", schedule=sidecar.Schedule("*/5 * * * *", misfire="skip"))
        await sleep_until(clock, utc(2026, 1, 1, 0, 6))
    assert once.instants == skip.instants == [utc(2026, 1, 1, 0, 5)]

    clock.jump(3 * 3600)  # down from 00:06 to 03:06: 36 instants of each schedule missed
    once, skip = Recorder(clock, "once"), Recorder(clock, "skip")
    async with runtime(clock, once, skip, home=home) as rt:
        await sleep_until(clock, utc(2026, 1, 1, 3, 11))
        # run-once: the 36 missed instants coalesce into one firing at start-up, then the
        # cadence resumes; skip: nothing until the next instant.
        assert once.fired == [(2, utc(2026, 1, 1, 3, 6)), (3, utc(2026, 1, 1, 3, 10))]
        assert skip.fired == [(2, utc(2026, 1, 1, 3, 10))]
        assert [r.run for r in await rt.runs(once_id)] == [1, 2, 3]
        assert [r.run for r in await rt.runs(skip_id)] == [1, 2]
        for sid in (once_id, skip_id):
            rec = await rt.get(sid)
            assert rec is not None
            assert rec.next_run_at == utc(2026, 1, 1, 3, 15)
        assert sample(rt, "sidecar_scheduler_misfires_total", policy="run-once") == 1
        assert sample(rt, "sidecar_scheduler_misfires_total", policy="skip") == 1


async def test_daily_0130_new_york_fires_once_on_the_fall_back_night(autojump_clock) -> None:
    clock = WallClock(utc(2026, 11, 1, 2))  # 2026-10-31 22:00 EDT
    daily = Recorder(clock)
    async with runtime(clock, daily) as rt:
        sid = await rt.submit("tick", schedule=sidecar.Schedule("30 1 * * *", NY))
        await sleep_until(clock, utc(2026, 11, 1, 16))  # 11:00 EST, after both 01:30s
        assert daily.fired == [(1, utc(2026, 11, 1, 5, 30))]  # 01:30 EDT only
        rec = await rt.get(sid)
        assert rec is not None
        assert rec.next_run_at == utc(2026, 11, 2, 6, 30)  # 01:30 EST tomorrow


async def test_new_york_jobs_fire_once_on_the_spring_forward_night(autojump_clock) -> None:
    clock = WallClock(utc(2026, 3, 8, 3))  # 2026-03-07 22:00 EST
    in_gap, before_gap = Recorder(clock, "in-gap"), Recorder(clock, "before-gap")
    async with runtime(clock, in_gap, before_gap) as rt:
        gap_id = await rt.submit("in-gap", schedule=sidecar.Schedule("30 2 * * *", NY))
        await rt.submit("before-gap", schedule=sidecar.Schedule("30 1 * * *", NY))
        await sleep_until(clock, utc(2026, 3, 8, 16))  # 12:00 EDT
        assert in_gap.fired == [(1, utc(2026, 3, 8, 7))]  # 03:00 EDT, right after the gap
        assert before_gap.fired == [(1, utc(2026, 3, 8, 6, 30))]  # 01:30 EST
        rec = await rt.get(gap_id)
        assert rec is not None
        assert rec.next_run_at == utc(2026, 3, 9, 6, 30)  # 02:30 EDT tomorrow


async def test_remove_cancels_the_running_firing_and_deletes_schedule_and_history(
    autojump_clock, home: Path
) -> None:
    clock = WallClock(utc(2026, 1, 1, 0, 4))
    stuck = Recorder(clock, forever=True)
    async with runtime(clock, stuck, home=home) as rt:
        sid = await rt.submit("tick", schedule=sidecar.Schedule("*/5 * * * *"))
        await stuck.started.wait()
        assert [r.status for r in await rt.runs(sid)] == [sidecar.TaskStatus.RUNNING]

        assert await rt.remove(sid) is True
        assert stuck.cancelled == 1
        assert await rt.get(sid) is None
        with pytest.raises(sidecar.TaskNotFound):
            await rt.runs(sid)
        db = home / DB_FILENAME
        for table, column in (("tasks", "id"), ("task_runs", "task_id")):
            rows = await threads.run_sync(
                query, db, f"SELECT count(*) FROM {table} WHERE {column} = ?", sid
            )
            assert rows == [(0,)]

        await sleep_until(clock, utc(2026, 1, 1, 2))
        assert stuck.fired == [(1, utc(2026, 1, 1, 0, 5))]
        assert await rt.get(sid) is None
        assert await rt.remove(sid) is False
        # The cancelled firing wrote no outcome.
        assert sample(rt, "sidecar_tasks_completed_total", type="tick") == 0
        assert sample(rt, "sidecar_tasks_failed_total", type="tick") == 0


async def test_the_same_schedule_id_registers_one_schedule(autojump_clock) -> None:
    clock = WallClock(utc(2026, 1, 1, 0, 3))
    tick = Recorder(clock)
    sid = "0b5e7d5c-3c1a-4f8e-9a57-6f0d3f7f1a11"
    async with runtime(clock, tick) as rt:
        first = await rt.submit_ex("tick", id=sid, schedule=sidecar.Schedule("*/5 * * * *"))
        again = await rt.submit_ex("tick", id=sid, schedule=sidecar.Schedule("*/5 * * * *"))
        other = await rt.submit_ex("tick", id=sid, schedule=sidecar.Schedule("@daily"))
        assert (first.id, first.created, first.run) == (sid, True, 0)
        assert (again.id, again.created, again.run) == (sid, False, 0)
        assert (other.id, other.created) == (sid, False)

        await sleep_until(clock, utc(2026, 1, 1, 0, 7))
        after_firing = await rt.submit_ex("tick", id=sid, schedule=sidecar.Schedule("*/5 * * * *"))
        assert (after_firing.created, after_firing.run) == (False, 1)

        (rec,) = await rt.list(type="tick")
        assert rec.id == sid
        assert rec.schedule == sidecar.Schedule("*/5 * * * *")
        assert rec.next_run_at == utc(2026, 1, 1, 0, 10)
        assert sample(rt, "sidecar_tasks_deduplicated_total", type="tick") == 3

        await sleep_until(clock, utc(2026, 1, 1, 0, 12))
        assert tick.instants == [utc(2026, 1, 1, 0, 5), utc(2026, 1, 1, 0, 10)]


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        (sidecar.Schedule("61 * * * *"), r"schedule\.cron: Bad minute in '61 \* \* \* \*'"),
        (sidecar.Schedule("* * *"), r"schedule\.cron: expected 5 fields"),
        (sidecar.Schedule("@reboot"), r"schedule\.cron: unsupported alias '@reboot'"),
        (sidecar.Schedule("0 0 30 2 *"), r"schedule\.cron: Bad day-of-month"),
        (
            sidecar.Schedule("*/5 * * * *", timezone="Mars/Olympus"),
            r"schedule\.timezone: unknown IANA time zone 'Mars/Olympus'",
        ),
        (
            sidecar.Schedule("*/5 * * * *", misfire="always"),
            r"schedule\.misfire: must be one of run-once, skip, got 'always'",
        ),
        ({"cron": "*/5 * * * *"}, r"schedule must be a sidecar\.Schedule"),
    ],
)
async def test_an_invalid_schedule_is_rejected_at_submit(
    autojump_clock, schedule: Any, problem: str
) -> None:
    clock = WallClock(utc(2026, 1, 1))
    async with runtime(clock, Recorder(clock)) as rt:
        with pytest.raises(sidecar.InvalidTask, match=problem):
            await rt.submit("tick", schedule=schedule)
        out = await rt.submit_many(
            [
                sidecar.TaskRequest("tick", schedule=schedule),
                sidecar.TaskRequest("tick", schedule=sidecar.Schedule("@hourly")),
            ]
        )
        assert isinstance(out[0], sidecar.InvalidTask)
        assert isinstance(out[1], sidecar.SubmitOutcome)
        assert out[1].created
        assert [r.id for r in await rt.list()] == [out[1].id]


async def test_aliases_schedule_like_their_expressions(autojump_clock) -> None:
    clock = WallClock(utc(2026, 1, 1, 0, 10))
    hourly, daily = Recorder(clock, "hourly"), Recorder(clock, "daily")
    async with runtime(clock, hourly, daily) as rt:
        hid = await rt.submit("hourly", schedule=sidecar.Schedule("@hourly"))
        did = await rt.submit("daily", schedule=sidecar.Schedule("@DAILY"))
        for sid, expected in ((hid, utc(2026, 1, 1, 1)), (did, utc(2026, 1, 2))):
            rec = await rt.get(sid)
            assert rec is not None
            assert rec.next_run_at == expected
        await sleep_until(clock, utc(2026, 1, 2, 0, 30))
    assert hourly.instants == every(utc(2026, 1, 1, 1), timedelta(hours=1), 24)
    assert daily.instants == [utc(2026, 1, 2)]


async def test_with_10000_schedules_registered_the_next_one_fires_on_time(
    autojump_clock,
) -> None:
    clock = WallClock(utc(2026, 1, 1, 0, 0, 30))
    bulk, first = Recorder(clock, "bulk"), Recorder(clock, "first")
    # 9,999 daily schedules spread over 01:00-23:59, and one at 00:05: the earliest due.
    requests = [
        sidecar.TaskRequest(
            "bulk", schedule=sidecar.Schedule(f"{i % 60} {1 + (i // 60) % 23} * * *")
        )
        for i in range(9_999)
    ]
    requests.append(sidecar.TaskRequest("first", schedule=sidecar.Schedule("5 0 * * *")))
    async with runtime(clock, bulk, first) as rt:
        out = await rt.submit_many(requests)
        assert all(isinstance(o, sidecar.SubmitOutcome) and o.created for o in out)
        assert len(await rt.list(1000, status="scheduled")) == 1000

        await sleep_until(clock, utc(2026, 1, 1, 0, 59, 30))
        assert first.instants == [utc(2026, 1, 1, 0, 5)]
        assert bulk.fired == []
        assert sample(rt, "sidecar_scheduler_lateness_seconds_count") == 1
        assert sample(rt, "sidecar_scheduler_lateness_seconds_sum") == 0
