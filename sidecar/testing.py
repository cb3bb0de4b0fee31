"""Helpers for deterministic tests of handlers and schedules on trio's MockClock.

Example::

    from datetime import datetime, UTC
    import sidecar, sidecar.testing

    async def test_every_five_minutes(autojump_clock):
        clock = sidecar.testing.WallClock(datetime(2026, 1, 1, tzinfo=UTC))
        async with sidecar.open_runtime(None, handlers=[tick], clock=clock) as rt:
            await rt.submit("tick", schedule=sidecar.Schedule("*/5 * * * *"))
            await trio.sleep(24 * 3600)   # a simulated day, in milliseconds
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import trio

__all__ = ["WallClock"]


class WallClock:
    """A wall clock that advances with trio time: ``epoch`` plus ``trio.current_time()``.

    Under ``autojump_clock`` (or any ``trio.testing.MockClock``) every ``trio.sleep`` moves
    this clock too, so cron schedules and timestamps run days ahead in milliseconds.
    Call ``now()`` only from inside ``trio.run``.

    Args:
        epoch: the wall-clock time at trio time zero (aware; defaults to 2026-01-01 UTC).
    """

    def __init__(self, epoch: datetime | None = None) -> None:
        epoch = epoch if epoch is not None else datetime(2026, 1, 1, tzinfo=UTC)
        if epoch.tzinfo is None:
            raise ValueError("epoch must be timezone-aware")
        self.epoch = epoch.astimezone(UTC)
        self._offset = 0.0

    def now(self) -> datetime:
        return self.epoch + timedelta(seconds=trio.current_time() + self._offset)

    def jump(self, seconds: float) -> None:
        """Step the wall clock without moving trio time (simulates downtime or NTP steps)."""
        self._offset += seconds
