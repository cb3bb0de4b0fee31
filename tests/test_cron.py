"""Cron evaluation (issue 3): next firing instants, DST in America/New_York, validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from sidecar import InvalidTask, Schedule
from sidecar.cron import ALIASES, next_fire, validate_schedule

NY = "America/New_York"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def firings(schedule: Schedule, start: datetime, end: datetime) -> list[datetime]:
    """Every instant in (start, end], walking ``next_fire`` as the scheduler does."""
    out: list[datetime] = []
    t = next_fire(schedule, start)
    while t <= end:
        out.append(t)
        t = next_fire(schedule, t)
    return out


def test_next_fire_is_strictly_after_the_given_instant() -> None:
    every5 = Schedule("*/5 * * * *")
    assert next_fire(every5, utc(2026, 1, 1, 0, 4, 0)) == utc(2026, 1, 1, 0, 5)
    assert next_fire(every5, utc(2026, 1, 1, 0, 4, 59, 999999)) == utc(2026, 1, 1, 0, 5)
    # The instant just fired is never returned again: the scheduler advances from it.
    assert next_fire(every5, utc(2026, 1, 1, 0, 5)) == utc(2026, 1, 1, 0, 10)
    assert next_fire(every5, utc(2026, 1, 1, 0, 5, 0, 1)) == utc(2026, 1, 1, 0, 10)


def test_next_fire_returns_aware_utc() -> None:
    t = next_fire(Schedule("0 9 * * *", "Europe/Berlin"), utc(2026, 1, 1))
    assert t.tzinfo is UTC
    assert t == utc(2026, 1, 1, 8)  # 09:00 CET


def test_every_five_minutes_fires_288_times_a_day() -> None:
    day = firings(Schedule("*/5 * * * *"), utc(2025, 12, 31, 23, 59, 30), utc(2026, 1, 1, 23, 59))
    assert day == [utc(2026, 1, 1) + timedelta(minutes=5 * k) for k in range(288)]


@pytest.mark.parametrize(
    ("alias", "after", "expected"),
    [
        ("@hourly", utc(2026, 1, 1, 0, 10), utc(2026, 1, 1, 1)),
        ("@daily", utc(2026, 1, 1, 0, 10), utc(2026, 1, 2)),
        ("@midnight", utc(2026, 1, 1, 0, 10), utc(2026, 1, 2)),
        ("@weekly", utc(2026, 1, 1, 0, 10), utc(2026, 1, 4)),  # the next Sunday
        ("@monthly", utc(2026, 1, 1, 0, 10), utc(2026, 2, 1)),
        ("@yearly", utc(2026, 1, 1, 0, 10), utc(2027, 1, 1)),
        ("@annually", utc(2026, 1, 1, 0, 10), utc(2027, 1, 1)),
        ("@HOURLY", utc(2026, 1, 1, 0, 10), utc(2026, 1, 1, 1)),
    ],
)
def test_aliases(alias: str, after: datetime, expected: datetime) -> None:
    assert validate_schedule(Schedule(alias)).cron == alias
    assert next_fire(Schedule(alias), after) == expected


def test_every_alias_is_a_valid_expression() -> None:
    for alias in ALIASES:
        validate_schedule(Schedule(alias))


def test_daily_0130_fires_once_on_the_fall_back_night() -> None:
    # 2026-11-01 02:00 EDT becomes 01:00 EST: 01:30 happens twice on the wall clock.
    got = firings(Schedule("30 1 * * *", NY), utc(2026, 10, 31, 12), utc(2026, 11, 2, 12))
    assert got == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]  # 01:30 EDT, 01:30 EST


def test_fall_back_second_pass_does_not_fire_the_instant_again() -> None:
    # Evaluated from inside the repeated hour (01:00-01:59 EST), after 01:30 EDT fired:
    # what a restart or a re-evaluation in the second pass sees.
    daily = Schedule("30 1 * * *", NY)
    for after in (utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6), utc(2026, 11, 1, 6, 29)):
        assert next_fire(daily, after) == utc(2026, 11, 2, 6, 30)


def test_job_in_the_spring_forward_gap_fires_once_right_after_it() -> None:
    # 2026-03-08 02:00 EST jumps to 03:00 EDT: 02:30 does not exist that night.
    got = firings(Schedule("30 2 * * *", NY), utc(2026, 3, 7, 12), utc(2026, 3, 9, 12))
    assert got == [utc(2026, 3, 8, 7), utc(2026, 3, 9, 6, 30)]  # 03:00 EDT, 02:30 EDT


def test_daily_0130_fires_once_on_the_spring_forward_night() -> None:
    got = firings(Schedule("30 1 * * *", NY), utc(2026, 3, 7, 12), utc(2026, 3, 9, 12))
    assert got == [utc(2026, 3, 8, 6, 30), utc(2026, 3, 9, 5, 30)]  # 01:30 EST, 01:30 EDT


@pytest.mark.parametrize(
    ("day", "hours"),
    [((2026, 11, 1), 25), ((2026, 3, 8), 23), ((2026, 1, 15), 24)],
)
def test_hourly_fires_every_real_hour_of_a_dst_day(day: tuple[int, int, int], hours: int) -> None:
    zone = ZoneInfo(NY)
    start = datetime(*day, tzinfo=zone).astimezone(UTC) - timedelta(seconds=1)
    end = (datetime(*day, tzinfo=zone) + timedelta(days=1)).astimezone(UTC) - timedelta(seconds=1)
    got = firings(Schedule("0 * * * *", NY), start, end)
    assert len(got) == hours
    assert len(set(got)) == hours
    assert all(b - a == timedelta(hours=1) for a, b in pairwise(got))


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [
        (Schedule("61 * * * *"), r"schedule\.cron: Bad minute"),
        (Schedule("* * *"), r"schedule\.cron: expected 5 fields"),
        (Schedule("* * * * * *"), r"schedule\.cron: expected 5 fields"),
        (Schedule("a b c d e"), r"schedule\.cron: Bad minute"),
        (Schedule("0 0 30 2 *"), r"schedule\.cron: Bad day-of-month"),
        (Schedule(""), r"schedule\.cron: must be a non-empty string"),
        (Schedule("   "), r"schedule\.cron: must be a non-empty string"),
        (Schedule("@reboot"), r"schedule\.cron: unsupported alias '@reboot'"),
        (Schedule("*/5 * * * *", timezone="Mars/Olympus"), r"timezone.*'Mars/Olympus'"),
        (Schedule("*/5 * * * *", timezone=""), r"schedule\.timezone"),
        (Schedule("*/5 * * * *", timezone="../etc/passwd"), r"schedule\.timezone"),
        (Schedule("*/5 * * * *", misfire="twice"), r"schedule\.misfire.*'twice'"),
    ],
)
def test_invalid_schedule_is_rejected_naming_the_problem(schedule: Schedule, problem: str) -> None:
    with pytest.raises(InvalidTask, match=problem):
        validate_schedule(schedule)


def test_invalid_schedule_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        validate_schedule(Schedule("nope"))
