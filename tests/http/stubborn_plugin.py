"""Handlers that break the cancellation contract, for the shutdown-deadline tests.

Imported as ``stubborn_plugin`` with this directory on PYTHONPATH (``--handlers``).
"""

from __future__ import annotations

import time
from typing import Any

import trio

import sidecar


@sidecar.handler("ignores-cancel")
async def ignores_cancel(ctx: sidecar.TaskContext, params: dict[str, Any]) -> None:
    with trio.CancelScope(shield=True):
        await trio.sleep(600)


@sidecar.handler("blocks-loop")
async def blocks_loop(ctx: sidecar.TaskContext, params: dict[str, Any]) -> None:
    await trio.sleep(0.1)  # let the submit's 201 go out first
    time.sleep(600)  # noqa: ASYNC251 - the point: a handler that blocks the event loop


@sidecar.handler("slow")
async def slow(ctx: sidecar.TaskContext, params: dict[str, Any]) -> None:
    await trio.sleep(600)  # well behaved, just long: cancellable at any time


HANDLERS = [ignores_cancel, blocks_loop, slow]
