"""``sleep`` ``{seconds}``: wait, then complete. For diagnostics and benchmarks."""

from __future__ import annotations

import pydantic
import trio

from ..handlers import TaskContext, handler
from ._common import Params

__all__ = ["SleepParams", "sleep"]


class SleepParams(Params):
    """Params of ``sleep``.

    Attributes:
        seconds: how long to wait; a finite number, at least 0.
    """

    seconds: float = pydantic.Field(ge=0, allow_inf_nan=False)


@handler("sleep", params=SleepParams, idempotent=True)
async def sleep(ctx: TaskContext, params: SleepParams) -> dict[str, float]:
    """Sleep on trio's clock (a MockClock drives it in tests). Result: ``{"slept": s}``."""
    await trio.sleep(params.seconds)
    return {"slept": params.seconds}
