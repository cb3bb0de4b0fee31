"""Interpreter tuning for a process that owns its interpreter (``sidecar serve``).

The cyclic garbage collector runs a young-generation pass every 700 net container
allocations, and each running task holds dozens of containers, so with thousands of tasks
in flight the collector rescans live task state over and over: in tools/bench_engine.py it
took ~30 % of the CPU per task. Raising the gen-0 threshold and freezing what start-up
allocated (imports, handler registry) keeps cycles collected, just far less often.

A library must not change this for the program that embeds it; ``sidecar serve`` calls
:func:`tune_gc`, and an embedding application may choose to.
"""

from __future__ import annotations

import gc

__all__ = ["GEN0_THRESHOLD", "tune_gc"]

GEN0_THRESHOLD = 50_000


def tune_gc(gen0: int = GEN0_THRESHOLD) -> None:
    """Collect once, freeze the survivors, and collect the young generation less often.

    Args:
        gen0: allocations between young-generation collections (CPython's default: 700).
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)
