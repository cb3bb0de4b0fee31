"""A one-shot reply slot: how an actor answers a request without waiting on the caller.

It plays the role of a fresh buffer-1 reply channel per request (the actor answers with
``send_nowait`` and ignores a caller that has gone) at a fraction of the cost: a channel
pair costs ~40 µs to build, this costs one object, and the caller parks with
``wait_task_rescheduled``. Measured in tools/bench_engine.py, it is what lets one store
round trip per write stay well under the per-task budget.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import outcome
import trio

__all__ = ["Reply"]

T = TypeVar("T")


class Reply(Generic[T]):
    """Answered once by the actor (``send_nowait``), awaited once by the caller."""

    __slots__ = ("_done", "_task", "_value")

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None
        self._value: outcome.Outcome[T] | None = None
        self._done = False

    def send_nowait(self, value: outcome.Outcome[T]) -> None:
        """Deliver the answer; a caller that was cancelled meanwhile is ignored."""
        if self._done:
            return
        self._done = True
        task, self._task = self._task, None
        if task is not None:
            trio.lowlevel.reschedule(task, value)
        else:
            self._value = value

    async def receive(self) -> T:
        """Wait for the answer and unwrap it (an ``outcome.Error`` re-raises here)."""
        if self._done:
            await trio.lowlevel.checkpoint()
            if self._value is None:
                raise trio.ClosedResourceError("reply already received or abandoned")
            value, self._value = self._value, None
            return value.unwrap()
        self._task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            # The caller is cancelled: forget it, so a late answer is simply dropped.
            self._task = None
            self._done = True
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)
