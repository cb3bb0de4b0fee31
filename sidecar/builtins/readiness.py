"""``mark-ready`` / ``mark-not-ready``: the readiness gate behind ``/v0/healthz``."""

from __future__ import annotations

from typing import Any

from ..handlers import TaskContext, handler

__all__ = ["mark_not_ready", "mark_ready"]


@handler("mark-ready", idempotent=True)
async def mark_ready(ctx: TaskContext, params: dict[str, Any]) -> dict[str, bool]:
    """Report the node ready. The flag flips before the record shows ``completed``."""
    ctx.services.set_ready(True)
    return {"ready": True}


@handler("mark-not-ready", idempotent=True)
async def mark_not_ready(ctx: TaskContext, params: dict[str, Any]) -> dict[str, bool]:
    """Withdraw readiness (``/v0/healthz`` answers 503 again)."""
    ctx.services.set_ready(False)
    return {"ready": False}
