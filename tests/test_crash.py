"""The crash harness (tools/crash_test.py), short: three SIGKILLs of a loaded `sidecar serve`.

The harness is the tool; these tests run its functions. The first one is the real thing on a
smaller budget; the others show that its checks catch what they claim to (a harness that
cannot fail proves nothing), against an in-process app so they take milliseconds.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest

import sidecar
from sidecar.http import create_app

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


crash_test = _load("crash_test")
crash_handlers = _load("crash_handlers")


@pytest.mark.e2e
async def test_three_sigkills_under_load_lose_and_duplicate_nothing(tmp_path):
    settings = crash_test.Settings(
        kills=3,
        workers=4,
        load_seconds=(0.3, 1.0),
        slow_seconds=(0.1, 0.8),
        startup_kill_chance=0.3,
        seed=6,
    )
    report = await crash_test.run_harness(tmp_path / "home", settings, echo=lambda _: None)
    assert report.ok, report.summary()
    assert report.kills == 3
    assert report.integrity_checks == 3
    assert report.acknowledged > 50, report.summary()


async def test_verify_passes_a_clean_ledger_and_catches_a_lost_task(tmp_path):
    async with sidecar.open_runtime(tmp_path, handlers=crash_handlers.HANDLERS, grace=0.1) as rt:
        transport = httpx.ASGITransport(app=create_app(rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as client:
            report = crash_test.Report()
            load = crash_test.Load(crash_test.Settings(), crash_test.random.Random(1), report)
            kept = load._new(crash_test.QUICK)
            gone = load._new(crash_test.QUICK)
            for entry in (kept, gone):
                await load.submit(client, entry)
                await client.get(f"/v0/tasks/{entry.id}", params={"wait": 5})
            await load.submit(client, kept)  # a dedup: 202, run stays 1
            assert (report.created, report.deduplicated) == (2, 1)

            await crash_test.verify(client, load, report)
            assert report.ok, report.summary()

            assert await rt.remove(gone.id)  # behind the ledger's back: a lost write
            await crash_test.verify(client, load, report)
            assert report.lost == 1
            assert any("acknowledged submit is missing" in v for v in report.violations)


async def test_verify_counts_an_extra_run_as_a_duplicate(tmp_path):
    async with sidecar.open_runtime(tmp_path, handlers=crash_handlers.HANDLERS, grace=0.1) as rt:
        transport = httpx.ASGITransport(app=create_app(rt))
        async with httpx.AsyncClient(transport=transport, base_url="http://sidecar") as client:
            report = crash_test.Report()
            load = crash_test.Load(crash_test.Settings(), crash_test.random.Random(1), report)
            entry = load._new(crash_test.QUICK)
            await load.submit(client, entry)
            await client.get(f"/v0/tasks/{entry.id}", params={"wait": 5})
            # A run the client never asked for: pretend the 201 never happened.
            entry.created = 0
            await crash_test.verify(client, load, report)
            assert report.duplicates == 1, report.summary()
