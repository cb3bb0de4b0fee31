"""Handlers that the end-to-end tests load into a real `sidecar serve` with --handlers.

Imported as ``e2e_plugin`` with this directory on PYTHONPATH.
"""

from __future__ import annotations

from typing import Any

import trio

import sidecar


@sidecar.handler("e2e-noop")
async def e2e_noop(ctx: sidecar.TaskContext, params: dict[str, Any]) -> None:
    return None


@sidecar.handler("e2e-sleep")
async def e2e_sleep(ctx: sidecar.TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    await trio.sleep(float(params.get("seconds", 1)))
    return {"slept": params.get("seconds", 1), "run": ctx.run}


@sidecar.handler("e2e-sleep-idempotent", idempotent=True)
async def e2e_sleep_idempotent(ctx: sidecar.TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    await trio.sleep(float(params.get("seconds", 1)))
    return {"slept": params.get("seconds", 1), "run": ctx.run}


HANDLERS = [e2e_noop, e2e_sleep, e2e_sleep_idempotent]
