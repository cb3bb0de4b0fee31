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

import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from os import PathLike

import trio

__all__ = ["WallClock", "serve_argv"]


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


def serve_argv(
    home: str | PathLike[str],
    port_file: str | PathLike[str],
    *,
    handlers: Sequence[str] = (),
    args: Sequence[str] = (),
) -> list[str]:
    """The command line of a real ``sidecar serve`` for end-to-end tests.

    It listens on a free 127.0.0.1 port and writes its URL to ``port_file`` once it accepts
    connections; entry-point plugins are not loaded, so only ``handlers`` (``MODULE:ATTR``
    specs, importable by the child) and the built-ins exist. Start it with
    ``trio.run_process``/``trio.lowlevel.open_process`` or ``subprocess.Popen``, poll for
    ``port_file``, and stop it with SIGTERM (graceful) or SIGKILL (a crash).
    """
    argv = [sys.executable, "-m", "sidecar", "serve", "--home", str(home), "--port", "0"]
    argv += ["--port-file", str(port_file), "--no-entry-points"]
    for spec in handlers:
        argv += ["--handlers", spec]
    return [*argv, *args]
