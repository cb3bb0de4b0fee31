"""Cron expressions: validation and the next firing instant, correct across DST.

Evaluation is delegated to cronsim, which follows Debian cron: on a fall-back night a daily
01:30 job fires once, and on a spring-forward night a job in the gap fires right after it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from .errors import InvalidTask
from .models import MISFIRE_POLICIES, Schedule

__all__ = ["next_fire", "validate_schedule"]

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def _expression(cron: str) -> str:
    text = " ".join(cron.split())
    if text.startswith("@"):
        try:
            return ALIASES[text.lower()]
        except KeyError:
            raise InvalidTask(
                f"schedule.cron: unsupported alias {text!r} "
                f"(supported: {', '.join(sorted(ALIASES))})"
            ) from None
    if len(text.split()) != 5:
        raise InvalidTask(
            f"schedule.cron: expected 5 fields (minute hour day month weekday), got {cron!r}"
        )
    return text


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidTask(f"schedule.timezone: unknown IANA time zone {name!r}") from None


def validate_schedule(schedule: Schedule) -> Schedule:
    """Check a schedule; return it as given.

    The record keeps the caller's text (``@hourly`` stays ``@hourly``); whitespace and
    aliases are resolved each time the expression is evaluated.

    Raises:
        InvalidTask: naming the bad expression, zone or misfire policy.
    """
    if not isinstance(schedule.cron, str) or not schedule.cron.strip():
        raise InvalidTask("schedule.cron: must be a non-empty string")
    if not isinstance(schedule.timezone, str):
        raise InvalidTask("schedule.timezone: must be a string")
    if schedule.misfire not in MISFIRE_POLICIES:
        raise InvalidTask(
            f"schedule.misfire: must be one of {', '.join(MISFIRE_POLICIES)}, "
            f"got {schedule.misfire!r}"
        )
    expr = _expression(schedule.cron)
    zone = _zone(schedule.timezone)
    try:
        next(CronSim(expr, datetime.now(zone)))
    except CronSimError as exc:
        raise InvalidTask(f"schedule.cron: {exc} in {schedule.cron!r}") from None
    except StopIteration:
        raise InvalidTask(f"schedule.cron: {schedule.cron!r} never fires") from None
    return schedule


def next_fire(schedule: Schedule, after: datetime) -> datetime:
    """The first instant strictly after ``after`` at which ``schedule`` fires (aware UTC)."""
    zone = _zone(schedule.timezone)
    local = after.astimezone(zone)
    it = CronSim(_expression(schedule.cron), local)
    candidate = next(it)
    # CronSim works in whole seconds from `after`; guard the equal instant explicitly.
    while candidate.astimezone(UTC) <= after:
        candidate = next(it)
    return candidate.astimezone(UTC)
