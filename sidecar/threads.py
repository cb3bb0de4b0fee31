"""Worker-thread calls that keep trio's MockClock deterministic.

Under ``trio.testing.MockClock`` with autojump, a trio task waiting for a worker thread
counts as blocked, so the clock may jump to the next deadline while SQLite is still working
(a task's 100 s sleep "finishes" during a 1 ms commit). While any call made here is in
flight, autojump is held off; it is restored when the last one returns. With a real clock
this is one ``isinstance`` check per call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import trio
import trio.testing

__all__ = ["run_sync"]

T = TypeVar("T")

_in_flight = 0
_saved_threshold = math.inf


async def run_sync(fn: Callable[..., T], *args: Any) -> T:
    """``trio.to_thread.run_sync(fn, *args)`` (never abandoned), MockClock-safe."""
    global _in_flight, _saved_threshold
    clock = trio.lowlevel.current_clock()
    if not isinstance(clock, trio.testing.MockClock):
        return await trio.to_thread.run_sync(fn, *args)
    if _in_flight == 0:
        _saved_threshold = clock.autojump_threshold
        clock.autojump_threshold = math.inf
    _in_flight += 1
    try:
        return await trio.to_thread.run_sync(fn, *args)
    finally:
        _in_flight -= 1
        if _in_flight == 0:
            clock.autojump_threshold = _saved_threshold
