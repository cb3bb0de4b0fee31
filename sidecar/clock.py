"""Wall-clock time, injected.

Durations and deadlines in sidecar use trio time (``trio.sleep``, ``trio.fail_after``), so a
MockClock drives them. Timestamps written to records and cron evaluation use a *wall clock*
that is passed in, so tests can derive it from trio time (see :mod:`sidecar.testing`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Clock", "SystemClock", "format_ts", "parse_ts"]


class Clock(Protocol):
    """A source of wall-clock time. ``now()`` returns an aware UTC datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    """The system's UTC clock."""

    def now(self) -> datetime:
        return datetime.now(UTC)


def format_ts(dt: datetime) -> str:
    """Fixed-width UTC text (``2026-01-02T03:04:05.000006Z``): string order is time order."""
    if dt.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    if dt.tzinfo is not UTC:
        dt = dt.astimezone(UTC)
    # isoformat() drops the fraction when it is zero; fixed width needs it always.
    return f"{dt.isoformat(timespec='microseconds')[:26]}Z"


def parse_ts(text: str) -> datetime:
    """Inverse of :func:`format_ts`."""
    # fromisoformat is ~100x faster than strptime, and listing parses 3 stamps per row.
    return datetime.fromisoformat(text)
