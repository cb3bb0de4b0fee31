"""Task types the crash harness loads into `sidecar serve` with ``--handlers``.

Imported as ``crash_handlers`` with ``tools/`` on ``PYTHONPATH``. Every handler succeeds,
so any ``failed`` record the harness sees was made by the runtime (interrupted by a kill),
never by the handler itself.
"""

from __future__ import annotations

from typing import Any

import trio

import sidecar


@sidecar.handler("crash-quick")
async def crash_quick(ctx: sidecar.TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    return {"run": ctx.run}


@sidecar.handler("crash-slow")
async def crash_slow(ctx: sidecar.TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    """Not idempotent: a kill while it sleeps must leave it ``failed`` "interrupted"."""
    await trio.sleep(float(params.get("seconds", 1)))
    return {"run": ctx.run}


@sidecar.handler("crash-slow-idempotent", idempotent=True)
async def crash_slow_idempotent(ctx: sidecar.TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    """Idempotent: a kill while it sleeps must make the next start-up run it again."""
    await trio.sleep(float(params.get("seconds", 1)))
    return {"run": ctx.run}


HANDLERS = [crash_quick, crash_slow, crash_slow_idempotent]
